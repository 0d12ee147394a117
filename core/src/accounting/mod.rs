//! Privacy accountants for the Poisson-subsampled Gaussian mechanism (DP-SGD's step).
//!
//! - [`rdp`]: Rényi DP (the moments accountant), integer and fractional orders.
//! - [`conversion`]: RDP to (epsilon, delta), the classic and the improved conversion.
//! - [`pld`]: privacy loss distributions, tight and pessimistic.
//! - [`exact`]: the arbitrary-precision (MPFR, `rug`) oracle with directed rounding, used by tests
//!   and by `--verify`.
//! - [`calibration`]: the noise multiplier for a target epsilon, the steps a budget allows.
//! - [`ledger`]: the append-only, fsynced record of every noisy step that epsilon is computed from.
//!
//! Every accountant takes a list of [`Phase`]s (heterogeneous composition) and promises an epsilon
//! at least as large as the true one: it may be loose, never optimistic.
pub mod calibration;
pub mod conversion;
mod double_word;
pub mod exact;
pub mod ledger;
pub mod pld;
pub mod rdp;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the examples of each step were chosen. Accounting here is valid only for Poisson sampling;
/// other schemes are named so that the tool can refuse to report a Poisson epsilon for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingScheme {
    /// Each example joins each lot independently with probability q.
    Poisson,
    /// Fixed-size batches from a shuffled dataset. No accountant here covers it; it is named so
    /// that such steps are recorded honestly and then refused by the accountants.
    Shuffled,
}

/// `steps` repetitions of the Poisson-subsampled Gaussian mechanism with sampling rate `q` and
/// noise multiplier `sigma` (noise standard deviation divided by the clipping norm), under
/// add/remove-one adjacency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Sampling rate q in (0, 1].
    pub sampling_rate: f64,
    /// Noise multiplier sigma > 0.
    pub noise_multiplier: f64,
    /// Number of steps (compositions).
    pub steps: u64,
}

impl Phase {
    /// A validated phase.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when q is not in (0, 1], sigma is not a finite positive number.
    pub fn new(sampling_rate: f64, noise_multiplier: f64, steps: u64) -> Result<Self> {
        let phase = Phase { sampling_rate, noise_multiplier, steps };
        phase.validate()?;
        Ok(phase)
    }

    /// Checks the invariants of [`Phase::new`] (for phases built by struct literal or deserialised).
    ///
    /// # Errors
    /// As [`Phase::new`].
    pub fn validate(&self) -> Result<()> {
        let q = self.sampling_rate;
        if !(q > 0.0 && q <= 1.0) {
            return Err(Error::invalid("sampling rate q", q, "must be in (0, 1]"));
        }
        let s = self.noise_multiplier;
        if !(s > 0.0 && s.is_finite()) {
            return Err(Error::invalid("noise multiplier sigma", s, "must be a finite number > 0"));
        }
        Ok(())
    }
}

/// Checks that delta is in (0, 1).
///
/// # Errors
/// [`Error::InvalidParameter`] otherwise (NaN included).
pub fn validate_delta(delta: f64) -> Result<f64> {
    if delta > 0.0 && delta < 1.0 {
        Ok(delta)
    } else {
        Err(Error::invalid("delta", delta, "must be in (0, 1)"))
    }
}

/// Validates every phase of a composition, and that there is at least one.
///
/// # Errors
/// [`Error::InvalidParameter`] for an empty list or an invalid phase.
pub fn validate_phases(phases: &[Phase]) -> Result<()> {
    if phases.is_empty() {
        return Err(Error::invalid("phases", "[]", "at least one phase is needed"));
    }
    phases.iter().try_for_each(Phase::validate)
}
