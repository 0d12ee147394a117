//! A fixed, data-independent feature map for images: the 2-D wavelet scattering transform
//! (Mallat 2012; Bruna & Mallat 2013), as Tramèr & Boneh 2021 ("Differentially Private Learning
//! Needs Better Features") use in front of DP-SGD.
//!
//! With J = 2 scales and L = 8 angles, a 28x28 image becomes 81 channels of 7x7 coefficients:
//!
//! - order 0: the image averaged by a Gaussian low-pass phi at scale 2^J (1 channel);
//! - order 1: |x * psi_{j,theta}| * phi for each Morlet wavelet psi (J L = 16 channels);
//! - order 2: ||x * psi_{j1,t1}| * psi_{j2,t2}| * phi for j1 < j2 (L^2 J (J - 1) / 2 = 64 channels),
//!
//! each subsampled by 2^J. The filters follow Kymatio's `Scattering2D` (Andreux et al. 2020): the
//! same Morlet and Gaussian definitions, reflection padding to 36x36, convolutions as products in
//! the Fourier domain, subsampling by folding the spectrum. `tests/scattering.rs` checks the
//! output against Kymatio's on fixture images.
//!
//! Privacy: the map uses no data to build its filters and transforms each example on its own, so
//! training on the features of a dataset is DP-SGD on a dataset that differs in one record exactly
//! when the images do. It adds nothing to the ledger (see `proofs/train/scattering.md`).
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Number of scales.
pub const J: usize = 2;
/// Number of angles.
pub const L: usize = 8;
/// Output channels for J = 2, L = 8: 1 + J L + L^2 J (J - 1) / 2.
pub const CHANNELS: i64 = 81;
/// Side of the output maps for 28x28 inputs: 28 / 2^J.
pub const OUTPUT_SIDE: i64 = 7;
/// Side of the input images.
pub const INPUT_SIDE: i64 = 28;
/// Side after reflection padding (Kymatio: ((M + 2^J) / 2^J + 1) 2^J).
const PADDED: usize = 36;
/// Reflection padding on each side.
const PAD: i64 = 4;
/// Images transformed at once (bounds the memory of the second order to about 330 MB).
const CHUNK: i64 = 256;

/// The filter bank: real Fourier transforms at 36x36 and their periodised (folded) versions.
#[derive(Debug)]
pub struct Scattering {
    /// psi_{j, theta} in the Fourier domain at full resolution, (J L, 36, 36), ordered j-major.
    psi: Tensor,
    /// phi at resolution 0 (36x36) and 1 (18x18).
    phi: [Tensor; J],
}

/// A Gabor filter on an M x M grid, periodised over 5x5 copies (Kymatio's `gabor_2d`).
fn gabor_2d(m: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<(f64, f64)> {
    let (c, s) = (theta.cos(), theta.sin());
    // curv = R D R^-1 / (2 sigma^2) with D = diag(1, slant^2)
    let d2 = slant * slant;
    let c00 = (c * c + s * s * d2) / (2.0 * sigma * sigma);
    let c01 = (c * s - s * c * d2) / (2.0 * sigma * sigma);
    let c11 = (s * s + c * c * d2) / (2.0 * sigma * sigma);
    let mut out = vec![(0.0, 0.0); m * m];
    let mi = m as i64;
    for ex in -2i64..=2 {
        for ey in -2i64..=2 {
            for i in 0..mi {
                for k in 0..mi {
                    let x = (i + ex * mi) as f64;
                    let y = (k + ey * mi) as f64;
                    let re = -(c00 * x * x + 2.0 * c01 * x * y + c11 * y * y);
                    let im = x * c * xi + y * s * xi;
                    let mag = re.exp();
                    let cell = &mut out[(i * mi + k) as usize];
                    cell.0 += mag * im.cos();
                    cell.1 += mag * im.sin();
                }
            }
        }
    }
    // Kymatio divides by 2 * 3.1415 (not pi) sigma^2 / slant; kept so the coefficients agree.
    #[allow(clippy::approx_constant)]
    let norm = 2.0 * 3.1415 * sigma * sigma / slant;
    out.iter_mut().for_each(|v| {
        v.0 /= norm;
        v.1 /= norm;
    });
    out
}

/// A Morlet wavelet: a Gabor filter minus the Gaussian that makes its mean zero.
fn morlet_2d(m: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<(f64, f64)> {
    let wv = gabor_2d(m, sigma, theta, xi, slant);
    let env = gabor_2d(m, sigma, theta, 0.0, slant);
    let (sw, se) = wv
        .iter()
        .zip(&env)
        .fold(((0.0, 0.0), (0.0, 0.0)), |(a, b), (w, e)| ((a.0 + w.0, a.1 + w.1), (b.0 + e.0, b.1 + e.1)));
    // K = sum(wv) / sum(env), a complex ratio
    let den = se.0 * se.0 + se.1 * se.1;
    let k = ((sw.0 * se.0 + sw.1 * se.1) / den, (sw.1 * se.0 - sw.0 * se.1) / den);
    wv.iter().zip(&env).map(|(w, e)| (w.0 - (k.0 * e.0 - k.1 * e.1), w.1 - (k.0 * e.1 + k.1 * e.0))).collect()
}

/// The real part of the 2-D FFT of an M x M complex signal (in double precision).
fn dft_real(m: usize, x: &[(f64, f64)]) -> Result<Vec<f64>> {
    let side = m as i64;
    let re = Tensor::f_from_slice(&x.iter().map(|v| v.0).collect::<Vec<_>>())?.f_view([side, side])?;
    let im = Tensor::f_from_slice(&x.iter().map(|v| v.1).collect::<Vec<_>>())?.f_view([side, side])?;
    let f = Tensor::f_complex(&re, &im)?.f_fft_fft2(None::<&[i64]>, &[-2, -1][..], "backward")?.f_real()?;
    Ok(Vec::<f64>::try_from(f.f_contiguous()?.f_view([-1])?)?)
}

/// Kymatio's `periodize_filter_fft`: zero the frequencies that would alias, then fold the M x M
/// spectrum onto M/2^res x M/2^res.
fn periodize(m: usize, x: &[f64], res: u32) -> Vec<f64> {
    let k = 1usize << res;
    let n = m / k;
    let len = (m as f64 * (1.0 - 0.5f64.powi(res as i32))) as usize;
    let start = (m as f64 * 0.5f64.powi(res as i32 + 1)) as usize;
    let masked = |i: usize, l: usize| (start..start + len).contains(&i) || (start..start + len).contains(&l);
    let mut out = vec![0.0; n * n];
    for a in 0..n {
        for b in 0..n {
            for i in 0..k {
                for l in 0..k {
                    let (r, c) = (a + i * n, b + l * n);
                    if !masked(r, c) {
                        out[a * n + b] += x[r * m + c];
                    }
                }
            }
        }
    }
    out
}

/// Spatial subsampling by `k` done in the Fourier domain: the mean of the k x k aliased blocks.
fn subsample_fourier(x: &Tensor, k: i64) -> Result<Tensor> {
    if k == 1 {
        return Ok(x.shallow_clone());
    }
    let s = x.size();
    let (m, n) = (s[s.len() - 2], s[s.len() - 1]);
    let mut shape: Vec<i64> = s[..s.len() - 2].to_vec();
    let lead = shape.len() as i64;
    shape.extend([k, m / k, k, n / k]);
    Ok(x.f_reshape(shape.as_slice())?.f_mean_dim(&[lead, lead + 2][..], false, None)?)
}

impl Scattering {
    /// Builds the J = 2, L = 8 filter bank for 28x28 images on `device`.
    pub fn new(device: Device) -> Result<Self> {
        let m = PADDED;
        let mut psi = Vec::with_capacity(J * L * m * m);
        for j in 0..J {
            for theta in 0..L {
                let angle = ((L - L / 2 - 1) as f64 - theta as f64) * std::f64::consts::PI / L as f64;
                let sigma = 0.8 * 2f64.powi(j as i32);
                let xi = 3.0 / 4.0 * std::f64::consts::PI / 2f64.powi(j as i32);
                let f = dft_real(m, &morlet_2d(m, sigma, angle, xi, 4.0 / L as f64))?;
                psi.extend(f.iter().map(|&v| v as f32));
            }
        }
        let phi_full = dft_real(m, &gabor_2d(m, 0.8 * 2f64.powi(J as i32 - 1), 0.0, 0.0, 1.0))?;
        let level = |res: u32| -> Result<Tensor> {
            let p: Vec<f32> = periodize(m, &phi_full, res).iter().map(|&v| v as f32).collect();
            let side = (m >> res) as i64;
            Ok(Tensor::f_from_slice(&p)?.f_view([side, side])?.f_to(device)?)
        };
        Ok(Scattering {
            psi: Tensor::f_from_slice(&psi)?.f_view([(J * L) as i64, m as i64, m as i64])?.f_to(device)?,
            phi: [level(0)?, level(1)?],
        })
    }

    /// The scattering coefficients of (B, 1, 28, 28) (or (B, 28, 28)) images: (B, 81, 7, 7),
    /// order 0, then order 1 (j-major), then order 2 (for each first-order filter at j1 = 0, its
    /// eight second-order filters at j2 = 1).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for another image shape or non-finite pixels.
    pub fn transform(&self, images: &Tensor) -> Result<Tensor> {
        let s = images.size();
        let b = s[0];
        let ok = match s.len() {
            3 => s[1] == INPUT_SIDE && s[2] == INPUT_SIDE,
            4 => s[1] == 1 && s[2] == INPUT_SIDE && s[3] == INPUT_SIDE,
            _ => false,
        };
        if !ok {
            return Err(Error::invalid("scattering input", format!("{s:?}"), "expected (B, 1, 28, 28) images"));
        }
        let _guard = tch::no_grad_guard();
        let x = images.f_reshape([b, 1, INPUT_SIDE, INPUT_SIDE])?.f_to_kind(Kind::Float)?;
        if !bool::try_from(x.f_isfinite()?.f_all()?)? {
            return Err(Error::invalid("scattering input", "non-finite pixel", "images must be finite"));
        }
        let mut parts = Vec::new();
        let mut from = 0;
        while from < b {
            let len = CHUNK.min(b - from);
            parts.push(self.transform_chunk(&x.f_narrow(0, from, len)?)?);
            from += len;
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    fn transform_chunk(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.size()[0];
        let two_j = 1i64 << J;
        let padded = x.f_reflection_pad2d([PAD, PAD, PAD, PAD])?.f_squeeze_dim(1)?; // (B, 36, 36)
        let u0 = padded.f_fft_fft2(None::<&[i64]>, &[-2, -1][..], "backward")?;
        let low = |u: &Tensor, phi: &Tensor, k: i64| -> Result<Tensor> {
            let s = subsample_fourier(&u.f_mul(phi)?, k)?;
            Ok(s.f_fft_ifft2(None::<&[i64]>, &[-2, -1][..], "backward")?.f_real()?)
        };
        let modulus_spectrum = |u: &Tensor| -> Result<Tensor> {
            let a = u.f_fft_ifft2(None::<&[i64]>, &[-2, -1][..], "backward")?.f_abs()?;
            Ok(a.f_fft_fft2(None::<&[i64]>, &[-2, -1][..], "backward")?)
        };
        let unpad = |s: &Tensor| -> Result<Tensor> {
            let n = s.size();
            let side = n[n.len() - 1];
            Ok(s.f_narrow(-2, 1, side - 2)?.f_narrow(-1, 1, side - 2)?)
        };
        let l = L as i64;
        // order 0
        let s0 = unpad(&low(&u0, &self.phi[0], two_j)?)?.f_reshape([b, 1, OUTPUT_SIDE, OUTPUT_SIDE])?;
        // order 1 at j1 = 0 (full resolution) and j1 = 1 (subsampled by 2)
        let u0b = u0.f_unsqueeze(1)?; // (B, 1, 36, 36)
        let psi0 = self.psi.f_narrow(0, 0, l)?; // j = 0
        let psi1 = self.psi.f_narrow(0, l, l)?; // j = 1
        let u1_j0 = modulus_spectrum(&u0b.f_mul(&psi0)?)?; // (B, L, 36, 36)
        let u1_j1 = modulus_spectrum(&subsample_fourier(&u0b.f_mul(&psi1)?, 2)?)?; // (B, L, 18, 18)
        let s1_j0 = unpad(&low(&u1_j0, &self.phi[0], two_j)?)?;
        let s1_j1 = unpad(&low(&u1_j1, &self.phi[1], two_j / 2)?)?;
        // order 2: j1 = 0, j2 = 1 (psi at resolution 0, as Kymatio's level j1 = 0)
        let u2 = u1_j0.f_unsqueeze(2)?.f_mul(&psi1)?; // (B, L, L, 36, 36)
        let u2 = modulus_spectrum(&subsample_fourier(&u2, 2)?)?; // (B, L, L, 18, 18)
        let s2 = unpad(&low(&u2, &self.phi[1], two_j / 2)?)?.f_reshape([b, l * l, OUTPUT_SIDE, OUTPUT_SIDE])?;
        Ok(Tensor::f_cat(&[s0, s1_j0, s1_j1, s2], 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_translation_behaviour() {
        let sc = Scattering::new(Device::Cpu).unwrap();
        let x = crate::torch_rng::seeded(3, || Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu)));
        let s = sc.transform(&x).unwrap();
        assert_eq!(s.size(), [3, CHANNELS, OUTPUT_SIDE, OUTPUT_SIDE]);
        assert!(bool::try_from(s.isfinite().all()).unwrap());
        // Modulus coefficients (orders 1 and 2) of a non-zero image are not all zero; a zero image
        // maps to zero everywhere.
        let z = sc.transform(&Tensor::zeros([1, 1, 28, 28], (Kind::Float, Device::Cpu))).unwrap();
        assert!(f64::try_from(z.abs().max()).unwrap() < 1e-6);
        assert!(f64::try_from(s.narrow(1, 1, 80).abs().sum(Kind::Double)).unwrap() > 1.0);
        // Linear in the image at order 0, and the same for each image of a batch as alone.
        let alone = sc.transform(&x.narrow(0, 1, 1)).unwrap();
        assert!(f64::try_from((alone - s.narrow(0, 1, 1)).abs().max()).unwrap() < 1e-5);
        assert!(sc.transform(&Tensor::zeros([2, 1, 27, 28], (Kind::Float, Device::Cpu))).is_err());
        assert!(sc.transform(&Tensor::full([1, 1, 28, 28], f64::NAN, (Kind::Float, Device::Cpu))).is_err());
    }
}
