//! DP-PCA as in Abadi et al. 2016 (section 4): a differentially private projection of the inputs.
//!
//! 1. Normalise each row (example) to unit L2 norm (zero rows stay zero).
//! 2. Release the noisy second-moment matrix A^T A + E, with E_ij ~ N(0, sigma_p^2) on every one of
//!    the d^2 entries, then symmetrise ((M + M^T)/2, post-processing).
//! 3. Keep the top-k eigenvectors.
//!
//! Adding or removing one row `a` (with |a| <= 1) changes A^T A by `a a^T`, whose Frobenius norm is
//! |a|^2 <= 1: step 2 is the Gaussian mechanism with L2 sensitivity 1 and noise multiplier sigma_p,
//! so its cost is one more phase (q = 1, sigma_p, 1 step), recorded in the ledger before the
//! release. Derivation: `proofs/train/dp_pca.md`.
use crate::accounting::ledger::Ledger;
use crate::accounting::SamplingScheme;
use crate::error::{Error, Result};
use crate::train::noise;
use rand_chacha::ChaCha20Rng;
use tch::{Kind, Tensor};

/// The label of DP-PCA's ledger entry.
pub const LEDGER_LABEL: &str = crate::run_folder::manifest::DP_PCA_LEDGER_LABEL;

/// A private projection: `components` is (d, k), columns ordered by decreasing noisy eigenvalue.
#[derive(Debug)]
pub struct DpPca {
    /// The (d, k) projection matrix (f32, on the data's device); after [`DpPca::whiten`], the
    /// eigenvectors times `whitening`.
    pub components: Tensor,
    /// The k largest eigenvalues of the noisy, symmetrised second-moment matrix.
    pub eigenvalues: Vec<f64>,
    /// The per-component scale applied by [`DpPca::whiten`]; `None`: plain eigenvectors.
    pub whitening: Option<Vec<f64>>,
}

/// [`DpPca::whiten`] floors each noisy eigenvalue at this fraction of the largest, so that a
/// component whose noisy eigenvalue is tiny (or negative) is not blown up.
pub const WHITENING_FLOOR: f64 = 1e-3;

impl DpPca {
    /// Rescales component j by `c / sqrt(max(lambda_j, WHITENING_FLOOR * lambda_1))`, with c
    /// chosen so that the total is unchanged: `c^2 = mean_j max(lambda_j, floor)`. On the unit-norm
    /// rows the noisy eigenvalues describe, every component then carries the same energy `c^2`
    /// instead of the first (the mean direction) dominating, which conditions the model's first
    /// layer better. It uses only the released eigenvalues: post-processing, no privacy cost
    /// (`proofs/train/dp_pca.md`, "Whitening").
    ///
    /// # Errors
    /// [`Error::Numerical`] if the largest noisy eigenvalue is not a positive number (nothing to
    /// scale against) or the projection is already whitened; [`Error::Torch`] from libtorch.
    pub fn whiten(&mut self) -> Result<()> {
        if self.whitening.is_some() {
            return Err(Error::numerical("dp-pca whitening", "the projection is already whitened"));
        }
        let top = self.eigenvalues.first().copied().unwrap_or(f64::NAN);
        if !(top > 0.0 && top.is_finite()) {
            return Err(Error::numerical(
                "dp-pca whitening",
                format!("the largest noisy eigenvalue is {top}, not a positive number"),
            ));
        }
        let floored: Vec<f64> = self.eigenvalues.iter().map(|&l| l.max(WHITENING_FLOOR * top)).collect();
        let c2 = floored.iter().sum::<f64>() / floored.len() as f64;
        let scale: Vec<f64> = floored.iter().map(|&l| (c2 / l).sqrt()).collect();
        let s = Tensor::f_from_slice(&scale)?.f_to_kind(self.components.kind())?.f_to(self.components.device())?;
        self.components = self.components.f_mul(&s)?;
        self.whitening = Some(scale);
        Ok(())
    }

    /// Projects (n, d) inputs to (n, k).
    ///
    /// # Errors
    /// [`Error::Torch`] on a shape mismatch.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_flatten(1, -1)?.f_to_kind(self.components.kind())?.f_matmul(&self.components)?)
    }
}

/// Computes DP-PCA of `data` ((n, d) or (n, ...) flattened to (n, d)), records its privacy cost in
/// `ledger` first (q = 1, sigma = `noise_multiplier`, sensitivity 1), then releases the projection.
///
/// # Proof definition
/// The released matrix (and so the projection) is the Gaussian mechanism with L2 sensitivity 1
/// and noise multiplier `noise_multiplier` under add/remove-one adjacency; see
/// `proofs/train/dp_pca.md`.
///
/// # Errors
/// [`Error::InvalidParameter`] for k = 0, k > d or a non-positive noise multiplier;
/// [`Error::Numerical`] for NaN or infinite inputs; ledger I/O errors (then nothing is released).
pub fn dp_pca(
    data: &Tensor,
    k: usize,
    noise_multiplier: f64,
    rng: &mut ChaCha20Rng,
    ledger: &mut Ledger,
) -> Result<DpPca> {
    let a = data.f_flatten(1, -1)?.f_to_kind(Kind::Double)?;
    let d = a.size()[1] as usize;
    if k == 0 || k > d {
        return Err(Error::invalid("PCA dimension k", k, format!("must be in 1..={d}")));
    }
    if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
        return Err(Error::invalid("PCA noise multiplier", noise_multiplier, "must be a finite number > 0"));
    }
    if !bool::try_from(a.f_isfinite()?.f_all()?)? {
        return Err(Error::numerical("dp-pca", "the data contain NaN or infinite values"));
    }
    let norms = a.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?;
    // Rows of norm 0 stay 0 (dividing by 1); every row ends with norm <= 1.
    let a = a.f_div(&norms.f_clamp_min(1e-300)?)?;
    let gram = a.f_transpose(0, 1)?.f_matmul(&a)?;
    let mut e = vec![0f32; d * d];
    noise::gaussian(rng, noise_multiplier, &mut e)?;
    ledger.record(SamplingScheme::Poisson, 1.0, noise_multiplier, 1.0, LEDGER_LABEL)?;
    let e = Tensor::f_from_slice(&e)?.f_to_kind(Kind::Double)?.f_view([d as i64, d as i64])?.f_to(a.device())?;
    let noisy = gram.f_add(&e)?;
    let sym = noisy.f_add(&noisy.f_transpose(0, 1)?)?.f_mul_scalar(0.5)?;
    let (values, vectors) = sym.f_linalg_eigh("L")?; // ascending eigenvalues
    let idx = Tensor::f_arange_start_step((d - 1) as i64, (d - 1 - k) as i64, -1, (Kind::Int64, a.device()))?;
    let components = vectors.f_index_select(1, &idx)?.f_to_kind(Kind::Float)?;
    let eigenvalues = Vec::<f64>::try_from(values.f_index_select(0, &idx)?.f_to_device(tch::Device::Cpu)?)?;
    Ok(DpPca { components, eigenvalues, whitening: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn recovers_the_dominant_direction_and_records_one_phase() {
        let _rng = crate::torch_rng::lock();
        tch::manual_seed(0);
        // 2,000 points along (1, 1, 0, 0)/sqrt 2 plus small isotropic noise.
        let n = 2000;
        let t = Tensor::randn([n, 1], (Kind::Float, tch::Device::Cpu));
        let dir = Tensor::from_slice(&[1f32, 1.0, 0.0, 0.0]).view([1, 4]) / 2f64.sqrt();
        let x = t.matmul(&dir) + Tensor::randn([n, 4], (Kind::Float, tch::Device::Cpu)) * 0.05;
        let dir_tmp = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::create(dir_tmp.path().join("ledger.jsonl")).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let pca = dp_pca(&x, 2, 4.0, &mut rng, &mut ledger).unwrap();
        assert_eq!(pca.components.size(), vec![4, 2]);
        let first = Vec::<f32>::try_from(pca.components.select(1, 0)).unwrap();
        let cos = ((first[0] + first[1]) as f64 / 2f64.sqrt()).abs();
        // Signal eigenvalue ~ n = 2000 against noise of spectral norm ~ 2 sigma sqrt(d) = 16.
        assert!(cos > 0.99, "first component {first:?}");
        assert_eq!(ledger.phases().unwrap(), vec![crate::accounting::Phase::new(1.0, 4.0, 1).unwrap()]);
        assert_eq!(pca.project(&x).unwrap().size(), vec![n, 2]);
    }

    #[test]
    fn whitening_gives_every_component_the_same_energy_and_keeps_the_total() {
        let _rng = crate::torch_rng::lock();
        tch::manual_seed(0);
        // Anisotropic data in 6 dimensions; a negligible sigma_p makes the noisy eigenvalues the
        // exact ones of the unit-normalised rows, so the energies can be checked tightly.
        let n = 3000;
        let x = Tensor::randn([n, 6], (Kind::Double, tch::Device::Cpu))
            * Tensor::from_slice(&[5.0f64, 3.0, 2.0, 1.0, 0.5, 0.2]).view([1, 6]);
        let unit = &x / x.norm_scalaropt_dim(2, [1i64].as_slice(), true);
        let mut ledger = Ledger::in_memory();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut pca = dp_pca(&x, 4, 1e-9, &mut rng, &mut ledger).unwrap();
        let energy = |p: &DpPca| {
            Vec::<f64>::try_from(p.project(&unit).unwrap().to_kind(Kind::Double).square().sum_dim_intlist(
                [0i64].as_slice(),
                false,
                Kind::Double,
            ))
            .unwrap()
        };
        let before = energy(&pca);
        for (e, l) in before.iter().zip(&pca.eigenvalues) {
            assert!((e - l).abs() < 1e-4 * l, "plain energy {e} vs eigenvalue {l}");
        }
        assert!(before[0] > 2.0 * before[3], "the test needs unequal energies: {before:?}");
        pca.whiten().unwrap();
        let after = energy(&pca);
        let mean = before.iter().sum::<f64>() / 4.0;
        for e in &after {
            assert!((e - mean).abs() < 1e-4 * mean, "whitened energies {after:?}, expected all {mean}");
        }
        assert_eq!(pca.whitening.as_ref().map(Vec::len), Some(4));
        assert!(pca.whiten().is_err(), "whitening twice is refused");
        // A noisy eigenvalue below the floor is scaled as if it were the floor, not blown up.
        let mut tiny = DpPca {
            components: Tensor::eye(2, (Kind::Float, tch::Device::Cpu)),
            eigenvalues: vec![1.0, -5.0],
            whitening: None,
        };
        tiny.whiten().unwrap();
        let s = tiny.whitening.unwrap();
        assert!((s[1] / s[0] - (1.0 / WHITENING_FLOOR).sqrt()).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::create(dir.path().join("l.jsonl")).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let x = Tensor::from_slice(&[1f32, f32::NAN, 0.0, 1.0]).view([2, 2]);
        assert!(matches!(dp_pca(&x, 1, 1.0, &mut rng, &mut ledger), Err(Error::Numerical { .. })));
        let x = Tensor::ones([3, 2], (Kind::Float, tch::Device::Cpu));
        assert!(dp_pca(&x, 3, 1.0, &mut rng, &mut ledger).is_err());
        assert!(dp_pca(&x, 1, 0.0, &mut rng, &mut ledger).is_err());
        assert_eq!(ledger.steps(), 0);
    }
}
