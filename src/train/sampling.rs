//! Poisson sampling of lots: each example joins each lot independently with probability q, so the
//! lot size varies (Binomial(N, q)). This is the sampling the accountants assume; fixed-size
//! shuffled batches are a different mechanism (Chua et al. 2024) and are not offered here.
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// Draws Poisson lots over `0..n` from a ChaCha20 stream, which is reproducible from its seed and
/// resumable from [`PoissonSampler::state`].
#[derive(Debug, Clone)]
pub struct PoissonSampler {
    n: usize,
    q: f64,
    /// q times the dataset size given at construction: the public normaliser of the noisy sum
    /// (unchanged by [`PoissonSampler::add_examples`]).
    expected: f64,
    rng: ChaCha20Rng,
}

/// Where a sampler's stream stands, for checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// The ChaCha20 seed.
    pub seed: [u8; 32],
    /// The position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl PoissonSampler {
    /// A sampler over `n` examples with rate `q`, seeded with `seed`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `n == 0` or `q` is not in (0, 1].
    pub fn new(n: usize, q: f64, seed: [u8; 32]) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("dataset size", n, "must be at least 1"));
        }
        if !(q > 0.0 && q <= 1.0) {
            return Err(Error::invalid("sampling rate q", q, "must be in (0, 1]"));
        }
        Ok(PoissonSampler { n, q, expected: q * n as f64, rng: ChaCha20Rng::from_seed(seed) })
    }

    /// Restores a sampler from a checkpointed state.
    ///
    /// # Errors
    /// As [`PoissonSampler::new`].
    pub fn resume(n: usize, q: f64, state: SamplerState) -> Result<Self> {
        let mut s = Self::new(n, q, state.seed)?;
        s.rng.set_word_pos(state.word_pos);
        Ok(s)
    }

    /// The current stream position, to store in a checkpoint.
    pub fn state(&self) -> SamplerState {
        SamplerState { seed: self.rng.get_seed(), word_pos: self.rng.get_word_pos() }
    }

    /// Adds `extra` examples at indices `n..n + extra`, sampled with the same rate q (an audit's
    /// canary: the adjacent dataset has one more record, included with the same probability).
    pub fn add_examples(&mut self, extra: usize) {
        self.n += extra;
    }

    /// The sampling rate q.
    pub fn sampling_rate(&self) -> f64 {
        self.q
    }

    /// Expected lot size q * N (the divisor of the noisy clipped sum).
    pub fn expected_lot_size(&self) -> f64 {
        self.expected
    }

    /// The next lot: the sorted indices of the examples that joined it (possibly none).
    ///
    /// Each index is included independently with probability q: one uniform draw per example.
    /// (A geometric-skip sampler would be faster for tiny q, but its float rounding makes the
    /// inclusion probability differ from q by an amount that is hard to bound; one Bernoulli draw
    /// per example with a 53-bit uniform is exact up to 2^-53.)
    pub fn next_lot(&mut self) -> Vec<usize> {
        if self.q >= 1.0 {
            return (0..self.n).collect();
        }
        (0..self.n).filter(|_| self.rng.gen::<f64>() < self.q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lot_sizes_are_binomial() {
        // n = 10_000, q = 0.05: mean 500, sd = sqrt(475) ~ 21.8. Over 200 lots the sample mean has
        // sd 1.54; |mean - 500| > 10 is a 6.5-sigma event (false-failure rate < 1e-10).
        let mut s = PoissonSampler::new(10_000, 0.05, [7; 32]).unwrap();
        let sizes: Vec<usize> = (0..200).map(|_| s.next_lot().len()).collect();
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!((mean - 500.0).abs() < 10.0, "mean lot size {mean}");
        assert!(sizes.iter().any(|&k| k != sizes[0]), "lot sizes must vary");
    }

    #[test]
    fn resume_continues_the_same_stream() {
        let mut a = PoissonSampler::new(1000, 0.1, [1; 32]).unwrap();
        a.next_lot();
        let state = a.state();
        let next = a.next_lot();
        let mut b = PoissonSampler::resume(1000, 0.1, state).unwrap();
        assert_eq!(b.next_lot(), next);
    }

    #[test]
    fn invalid_parameters_are_errors() {
        assert!(PoissonSampler::new(0, 0.1, [0; 32]).is_err());
        assert!(PoissonSampler::new(10, 0.0, [0; 32]).is_err());
        assert!(PoissonSampler::new(10, f64::NAN, [0; 32]).is_err());
        assert!(PoissonSampler::new(10, 1.5, [0; 32]).is_err());
    }
}
