//! The Gaussian noise of DP-SGD, drawn from a ChaCha20 stream (a cryptographically secure
//! generator) rather than libtorch's Mersenne Twister, then copied to the model's device.
//!
//! - [`NoiseSeed::Secure`], the default of every command that releases something (`train`,
//!   `gan train`, `demo`), seeds from the operating system's CSPRNG: nobody, the operator
//!   included, can regenerate the noise.
//! - [`NoiseSeed::Explicit`] (`--seed N`) gives reproducible runs, which audits and tests need
//!   (replays with known seeds). Anyone who knows the seed can regenerate the noise and subtract
//!   it, so such a run is recorded as [`NoiseSeeding::Seeded`] in its metrics, its ledger and its
//!   certificate, and `cert sign` refuses it unless told otherwise.
//!
//! One run seed feeds every random choice of a run through separate ChaCha20 streams: the
//! Gaussian noise, the Poisson sampling of the lots and the initialisation (and, for a GAN, the
//! latents). So a CSPRNG-seeded run has unpredictable noise *and* unpredictable lots (Poisson
//! sampling's amplification assumes the adversary cannot predict them), and a seeded run has
//! neither. Why, and how older files are read:
//! [`proofs/train/noise_seeding.md`](../../../proofs/train/noise_seeding.md).
//!
//! What floating-point noise does and does not guarantee (Mironov 2012; Jin et al. 2022) is in
//! `proofs/train/floating_point_noise.md`.
use crate::error::Result;
use crate::train::streams::RunStream;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};

/// Where the noise generator's seed comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseSeed {
    /// A fixed seed: the same run twice gives the same noise.
    Explicit(u64),
    /// 32 bytes from the operating system's CSPRNG; the run cannot be replayed.
    Secure,
}

pub use crate::noise_seeding::{NoiseSeeding, SEEDED_NOISE_WARNING};

impl From<Option<u64>> for NoiseSeed {
    /// `None` (no seed given) is [`NoiseSeed::Secure`].
    fn from(seed: Option<u64>) -> Self {
        seed.map_or(NoiseSeed::Secure, NoiseSeed::Explicit)
    }
}

impl NoiseSeed {
    /// How this seed is recorded.
    pub fn seeding(self) -> NoiseSeeding {
        match self {
            NoiseSeed::Explicit(_) => NoiseSeeding::Seeded,
            NoiseSeed::Secure => NoiseSeeding::Csprng,
        }
    }

    /// The 32-byte ChaCha20 key of one named stream of this seed ([`RunStream`]: noise,
    /// sampling, initialisation, ...), so that independent uses never share a stream.
    pub fn to_bytes(self, stream: RunStream) -> [u8; 32] {
        match self {
            NoiseSeed::Explicit(seed) => {
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                rng.set_stream(stream.number());
                let mut out = [0u8; 32];
                rng.fill_bytes(&mut out);
                out
            }
            NoiseSeed::Secure => {
                let mut out = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut out);
                out
            }
        }
    }
}

/// Fills `out` with independent N(0, std^2) draws from `rng` (f64 Box–Muller/ziggurat of
/// `rand_distr`, rounded to f32).
pub fn gaussian(rng: &mut ChaCha20Rng, std: f64, out: &mut [f32]) -> Result<()> {
    for x in out.iter_mut() {
        let z: f64 = StandardNormal.sample(rng);
        *x = (z * std) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::distribution::{ContinuousCDF, Normal};

    #[test]
    fn explicit_seeds_reproduce_and_streams_differ() {
        let (a, b) = (RunStream::Sampling, RunStream::Noise);
        assert_eq!(NoiseSeed::Explicit(3).to_bytes(a), NoiseSeed::Explicit(3).to_bytes(a));
        assert_ne!(NoiseSeed::Explicit(3).to_bytes(a), NoiseSeed::Explicit(3).to_bytes(b));
        assert_ne!(NoiseSeed::Secure.to_bytes(a), NoiseSeed::Secure.to_bytes(a));
    }

    #[test]
    fn noise_is_gaussian_with_the_right_scale() {
        // Kolmogorov–Smirnov at alpha = 1e-6: reject if sqrt(n) D > 2.70 (asymptotic critical value).
        let mut rng = ChaCha20Rng::from_seed(NoiseSeed::Explicit(11).to_bytes(RunStream::Sampling));
        let mut v = vec![0f32; 20_000];
        gaussian(&mut rng, 3.0, &mut v).unwrap();
        let mut x: Vec<f64> = v.iter().map(|&a| a as f64).collect();
        x.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = Normal::new(0.0, 3.0).unwrap();
        let d = x
            .iter()
            .enumerate()
            .map(|(i, &xi)| {
                let f = n.cdf(xi);
                (f - i as f64 / x.len() as f64).abs().max(((i + 1) as f64 / x.len() as f64 - f).abs())
            })
            .fold(0.0, f64::max);
        assert!((x.len() as f64).sqrt() * d < 2.70, "KS statistic {}", (x.len() as f64).sqrt() * d);
    }
}
