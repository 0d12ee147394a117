//! Calibration: the noise multiplier that meets a target epsilon, and the number of steps a budget
//! allows. Both search over a pluggable accountant ([`EpsilonAccountant`]) and keep, as an
//! invariant, a value whose epsilon was *computed* to be within the target, so the answer is valid
//! whatever the search's path. Proof: [`proofs/accounting/calibration.md`](../../../proofs/accounting/calibration.md).
use crate::accounting::rdp::RdpAccountant;
use crate::accounting::{validate_delta, Phase};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// An accountant that turns a composition of phases into an epsilon for a given delta.
///
/// Implemented by [`RdpAccountant`] (the default) and by
/// [`PldAccountant`](crate::accounting::pld::PldAccountant) (tighter).
pub trait EpsilonAccountant {
    /// An epsilon at least the true epsilon of the composition of `phases` for `delta`.
    ///
    /// # Errors
    /// The accountant's errors (invalid parameters, numerical failure).
    fn epsilon_of(&self, phases: &[Phase], delta: f64) -> Result<f64>;

    /// Short name, for reports.
    fn name(&self) -> &'static str;
}

impl EpsilonAccountant for RdpAccountant {
    fn epsilon_of(&self, phases: &[Phase], delta: f64) -> Result<f64> {
        Ok(self.epsilon(phases, delta)?.epsilon)
    }

    fn name(&self) -> &'static str {
        "rdp"
    }
}

/// A calibrated noise multiplier and the epsilon it gives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The noise multiplier sigma.
    pub noise_multiplier: f64,
    /// The accountant's epsilon at that sigma (`<=` the target).
    pub epsilon: f64,
}

/// Relative width at which the bisection on sigma stops.
pub const SIGMA_RELATIVE_TOLERANCE: f64 = 1e-6;
/// Largest noise multiplier tried before giving up.
pub const MAX_NOISE_MULTIPLIER: f64 = 1e6;
/// Smallest noise multiplier tried (below it, the search returns this one if it already meets the
/// target).
pub const MIN_NOISE_MULTIPLIER: f64 = 1e-3;
/// Largest number of steps [`max_steps_for_epsilon`] searches.
pub const MAX_STEPS: u64 = 1 << 50;

fn validate_target(target_eps: f64) -> Result<()> {
    if target_eps > 0.0 && target_eps.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid("target epsilon", target_eps, "must be a finite number > 0"))
    }
}

/// The smallest noise multiplier (to a relative [`SIGMA_RELATIVE_TOLERANCE`]) whose epsilon is
/// at most `target_eps`, for `steps` steps at sampling rate `q`, found by bisection.
///
/// # Proof definition
/// Returns `sigma` such that `accountant` computed `epsilon(sigma) <= target_eps`, so (if the
/// accountant's contract holds) `steps` steps with noise multiplier `sigma` are
/// `(target_eps, delta)`-DP; or an error.
///
/// # Errors
/// [`Error::InvalidParameter`] for a target that is not finite and > 0, q outside (0, 1], `steps ==
/// 0`, delta outside (0, 1); [`Error::Numerical`] if no sigma up to [`MAX_NOISE_MULTIPLIER`] meets
/// the target.
pub fn noise_multiplier_for_epsilon(
    target_eps: f64,
    q: f64,
    steps: u64,
    delta: f64,
    accountant: &dyn EpsilonAccountant,
) -> Result<Calibration> {
    noise_multiplier_for_epsilon_after(&[], target_eps, q, steps, delta, accountant)
}

/// As [`noise_multiplier_for_epsilon`], for training that comes after fixed `earlier` phases
/// (e.g. DP-PCA's): the epsilon of `earlier` composed with the training phase is at most
/// `target_eps`.
///
/// # Proof definition
/// Returns `sigma` such that `accountant` computed `epsilon(earlier + (q, sigma, steps)) <=
/// target_eps`; or an error.
///
/// # Errors
/// As [`noise_multiplier_for_epsilon`]; [`Error::Numerical`] when `earlier` alone uses the budget.
pub fn noise_multiplier_for_epsilon_after(
    earlier: &[Phase],
    target_eps: f64,
    q: f64,
    steps: u64,
    delta: f64,
    accountant: &dyn EpsilonAccountant,
) -> Result<Calibration> {
    validate_target(target_eps)?;
    validate_delta(delta)?;
    if steps == 0 {
        return Err(Error::invalid("steps", steps, "must be >= 1"));
    }
    Phase::new(q, 1.0, steps)?;
    if !earlier.is_empty() {
        let spent = accountant.epsilon_of(earlier, delta)?;
        // NaN counts as spent.
        if spent.partial_cmp(&target_eps) != Some(std::cmp::Ordering::Less) {
            return Err(Error::numerical(
                "noise calibration",
                format!("the earlier phases alone have epsilon {spent} >= the target {target_eps}"),
            ));
        }
    }
    let eps = |sigma: f64| {
        let mut phases = earlier.to_vec();
        phases.push(Phase { sampling_rate: q, noise_multiplier: sigma, steps });
        accountant.epsilon_of(&phases, delta)
    };
    // Invariant: eps(hi) <= target (hi is always a valid answer); eps(lo) > target.
    let mut hi = 1.0;
    let mut eps_hi = eps(hi)?;
    while !(eps_hi <= target_eps) {
        hi *= 2.0;
        if hi > MAX_NOISE_MULTIPLIER {
            return Err(Error::numerical(
                "noise calibration",
                format!("no noise multiplier up to {MAX_NOISE_MULTIPLIER} reaches epsilon {target_eps}"),
            ));
        }
        eps_hi = eps(hi)?;
    }
    let mut lo = hi / 2.0;
    loop {
        let e = eps(lo)?;
        if e > target_eps {
            break;
        }
        hi = lo;
        eps_hi = e;
        if lo <= MIN_NOISE_MULTIPLIER {
            return Ok(Calibration { noise_multiplier: hi, epsilon: eps_hi });
        }
        lo /= 2.0;
    }
    while hi - lo > SIGMA_RELATIVE_TOLERANCE * hi {
        let mid = 0.5 * (lo + hi);
        let e = eps(mid)?;
        if e <= target_eps {
            hi = mid;
            eps_hi = e;
        } else {
            lo = mid;
        }
    }
    Ok(Calibration { noise_multiplier: hi, epsilon: eps_hi })
}

/// The largest number of steps whose epsilon is at most `target_eps` (0 if even one step exceeds
/// it), for sampling rate `q` and noise multiplier `sigma`.
///
/// # Proof definition
/// Returns `T` such that `accountant` computed `epsilon(T steps) <= target_eps` (or `T = 0`), and
/// `epsilon(T + 1 steps) > target_eps`; or an error.
///
/// # Errors
/// [`Error::InvalidParameter`] for invalid target, q, sigma or delta; [`Error::Numerical`] if more
/// than [`MAX_STEPS`] steps fit.
pub fn max_steps_for_epsilon(
    target_eps: f64,
    q: f64,
    sigma: f64,
    delta: f64,
    accountant: &dyn EpsilonAccountant,
) -> Result<u64> {
    validate_target(target_eps)?;
    validate_delta(delta)?;
    Phase::new(q, sigma, 1)?;
    let fits = |steps: u64| -> Result<bool> {
        Ok(accountant.epsilon_of(&[Phase { sampling_rate: q, noise_multiplier: sigma, steps }], delta)? <= target_eps)
    };
    if !fits(1)? {
        return Ok(0);
    }
    // Invariant: fits(lo), !fits(hi).
    let mut lo = 1u64;
    let mut hi = 2u64;
    while fits(hi)? {
        lo = hi;
        if hi >= MAX_STEPS {
            return Err(Error::numerical("step calibration", format!("more than {MAX_STEPS} steps fit")));
        }
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The accountants a noise multiplier can be calibrated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationAccountant {
    /// Rényi DP ([`RdpAccountant`]).
    #[default]
    Rdp,
    /// Privacy loss distributions ([`crate::accounting::pld::PldAccountant`], tighter and slower).
    Pld,
}

impl CalibrationAccountant {
    /// `rdp` or `pld`.
    pub fn as_str(self) -> &'static str {
        match self {
            CalibrationAccountant::Rdp => "rdp",
            CalibrationAccountant::Pld => "pld",
        }
    }
}

/// Where a run's noise multiplier came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum NoiseProvenance {
    /// Given in the recipe.
    Given,
    /// Calibrated up front ([`noise_multiplier_for_epsilon_after`]).
    Calibrated {
        /// The target epsilon.
        target_epsilon: f64,
        /// The accountant asked.
        accountant: CalibrationAccountant,
        /// The delta of the target.
        delta: f64,
        /// The accountant's epsilon at the calibrated sigma (at most the target).
        epsilon: f64,
        /// The sampling scheme.
        sampling: String,
        /// The sampling rate q of the training phase.
        sampling_rate: f64,
        /// Steps of the training phase.
        steps: u64,
        /// Phases composed before training (DP-PCA's), in the accountant's epsilon too.
        earlier_phases: Vec<Phase>,
    },
}

impl NoiseProvenance {
    /// The same in words (`metrics.json`'s `noise_multiplier_source`, as dpaudit wrote it before
    /// it recorded the provenance as data).
    pub fn describe(&self, noise_multiplier: f64) -> String {
        match self {
            NoiseProvenance::Given => format!("given: {noise_multiplier}"),
            NoiseProvenance::Calibrated {
                target_epsilon,
                accountant,
                delta,
                sampling_rate,
                steps,
                earlier_phases,
                ..
            } => {
                let after = match earlier_phases.first() {
                    Some(p) => format!(", after the DP-PCA phase (q = 1, sigma_p = {}, 1 step)", p.noise_multiplier),
                    None => String::new(),
                };
                format!(
                    "calibrated up front ({} accountant, Poisson, q = {sampling_rate}, {steps} steps{after}, delta = {delta}) for target epsilon {target_epsilon}: sigma = {noise_multiplier}",
                    accountant.as_str().to_uppercase()
                )
            }
        }
    }
}
