//! The Gaussian mechanism's exact privacy curve (Balle & Wang 2018; Dong, Roth & Su's mu-GDP):
//! a mechanism whose privacy loss is that of N(0, 1) against N(mu, 1) is (epsilon, delta)-DP
//! exactly for
//!
//! delta(epsilon) = Phi(-epsilon/mu + mu/2) - e^epsilon Phi(-epsilon/mu - mu/2).
//!
//! Audits use it three ways: the ideal lower bound a perfect test could reach from K runs, a
//! threshold fixed in advance from the claim (so choosing it costs no confidence), and the
//! clearly labelled Gaussian-DP *estimate* fitted to the scores. Derivation:
//! `proofs/audit/ideal_bound.md`.
use crate::audit::bounds::{epsilon_from_rate_bounds, ClopperPearsonTable};
use crate::error::{Error, Result};

/// Standard normal CDF, accurate in the tails (erfc to about 1 ulp).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// The exact delta of mu-GDP at `epsilon`.
pub fn delta_for(epsilon: f64, mu: f64) -> f64 {
    if mu <= 0.0 {
        return 0.0;
    }
    let a = normal_cdf(-epsilon / mu + mu / 2.0);
    // e^eps Phi(x) as exp(eps + ln Phi(x)) would lose nothing here; Phi(x) > 0 for moderate x.
    let b = epsilon.exp() * normal_cdf(-epsilon / mu - mu / 2.0);
    (a - b).max(0.0)
}

/// The smallest epsilon >= 0 at which mu-GDP is (epsilon, delta)-DP (bisection to 1e-12).
///
/// # Errors
/// [`Error::InvalidParameter`] for mu < 0 or non-finite, delta outside (0, 1).
pub fn epsilon_for_mu(mu: f64, delta: f64) -> Result<f64> {
    if !(mu >= 0.0 && mu.is_finite()) {
        return Err(Error::invalid("mu", mu, "must be a finite number >= 0"));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(Error::invalid("delta", delta, "must be in (0, 1)"));
    }
    if delta_for(0.0, mu) <= delta {
        return Ok(0.0);
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while delta_for(hi, mu) > delta {
        hi *= 2.0;
        if hi > 1e6 {
            return Err(Error::numerical("epsilon of mu-GDP", format!("no epsilon below 1e6 for mu = {mu}")));
        }
    }
    while hi - lo > 1e-12 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if delta_for(mid, mu) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// The mu for which mu-GDP is exactly (epsilon, delta)-DP (bisection; delta grows with mu).
///
/// # Errors
/// [`Error::InvalidParameter`] for epsilon < 0 or non-finite, delta outside (0, 1).
pub fn mu_for_epsilon(epsilon: f64, delta: f64) -> Result<f64> {
    if !(epsilon >= 0.0 && epsilon.is_finite()) {
        return Err(Error::invalid("epsilon", epsilon, "must be a finite number >= 0"));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(Error::invalid("delta", delta, "must be in (0, 1)"));
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while delta_for(epsilon, hi) < delta {
        hi *= 2.0;
        if hi > 1e4 {
            return Err(Error::numerical("mu of (epsilon, delta)", "no mu below 1e4"));
        }
    }
    while hi - lo > 1e-13 * hi {
        let mid = 0.5 * (lo + hi);
        if delta_for(epsilon, mid) < delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The ideal audit: a threshold test on N(0, 1) ("out") against N(mu, 1) ("in"), each side run
/// `runs` times, with the expected error counts (rounded) in place of observed ones.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IdealBound {
    /// The best Clopper–Pearson lower bound over thresholds.
    pub epsilon_lower: f64,
    /// The threshold (in N(0, 1) units) that reaches it.
    pub threshold: f64,
}

/// The lower bound a perfect distinguisher of a Gaussian mechanism with the given true epsilon
/// reaches from `runs` runs per side at confidence `1 - alpha` (expected counts, rounded; the best
/// threshold on a grid of 4,000 points). For example epsilon = 2, delta = 1e-5, 95%: about 0.49
/// with 1,000 runs and 0.81 with 5,000.
///
/// # Errors
/// As [`mu_for_epsilon`] and [`crate::audit::bounds::epsilon_lower_bound`].
pub fn ideal_lower_bound(true_epsilon: f64, delta: f64, runs: u64, alpha: f64) -> Result<IdealBound> {
    let mu = mu_for_epsilon(true_epsilon, delta)?;
    ideal_lower_bound_mu(mu, delta, runs, alpha)
}

/// [`ideal_lower_bound`] for a given mu.
///
/// # Errors
/// As [`crate::audit::bounds::epsilon_lower_bound`].
pub fn ideal_lower_bound_mu(mu: f64, delta: f64, runs: u64, alpha: f64) -> Result<IdealBound> {
    if runs == 0 {
        return Err(Error::invalid("runs per side", 0, "must be at least 1"));
    }
    if !(0.0..1.0).contains(&delta) {
        return Err(Error::invalid("delta", delta, "must be in [0, 1)"));
    }
    let table = ClopperPearsonTable::new(runs, alpha / 2.0)?;
    Ok(ideal_lower_bound_table(mu, delta, &table))
}

/// [`ideal_lower_bound_mu`] with the Clopper–Pearson table (`runs` trials at `alpha / 2`) given.
pub(crate) fn ideal_lower_bound_table(mu: f64, delta: f64, table: &ClopperPearsonTable) -> IdealBound {
    let runs = table.trials();
    let k = runs as f64;
    let (lo, hi) = (-3.0, mu + 9.0);
    let mut best = IdealBound { epsilon_lower: 0.0, threshold: mu / 2.0 };
    for i in 0..=IDEAL_GRID {
        let t = lo + (hi - lo) * i as f64 / IDEAL_GRID as f64;
        let fp = ((k * normal_cdf(-t)).round() as u64).min(runs);
        let fn_ = ((k * normal_cdf(t - mu)).round() as u64).min(runs);
        let b = epsilon_from_rate_bounds(table.upper(fp), table.upper(fn_), delta);
        if b > best.epsilon_lower {
            best = IdealBound { epsilon_lower: b, threshold: t };
        }
    }
    best
}

/// Intervals of the threshold grid of the ideal bound (4,001 thresholds from -3 to mu + 9).
const IDEAL_GRID: u32 = 4000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mu_and_epsilon_invert_each_other() {
        for eps in [0.1, 1.0, 2.0, 8.0] {
            let mu = mu_for_epsilon(eps, 1e-5).unwrap();
            let back = epsilon_for_mu(mu, 1e-5).unwrap();
            assert!((back - eps).abs() < 1e-8, "{eps} -> {mu} -> {back}");
        }
        assert_eq!(epsilon_for_mu(0.0, 1e-5).unwrap(), 0.0);
    }

    #[test]
    fn the_issue_figures_for_the_ideal_bound() {
        // Issue 5, section 3: about 0.49 / 0.81 at epsilon 2 and 2.69 / 3.45 at epsilon 8, with
        // 1,000 / 5,000 runs per side, 95% two-sided Clopper-Pearson, delta = 1e-5.
        for (eps, k, want) in [(2.0, 1000, 0.49), (2.0, 5000, 0.81), (8.0, 1000, 2.69), (8.0, 5000, 3.45)] {
            let b = ideal_lower_bound(eps, 1e-5, k, 0.05).unwrap();
            assert!((b.epsilon_lower - want).abs() < 0.03, "eps {eps}, K {k}: {} (want about {want})", b.epsilon_lower);
        }
    }

    #[test]
    fn the_mu_gdp_curve_matches_the_pld_accountant_at_full_batch() {
        // q = 1, sigma, T steps is exactly mu-GDP with mu = sqrt(T) / sigma; the PLD accountant
        // (an upper bound, discretised at 1e-4) must sit at or just above the exact value.
        use crate::accounting::{calibration::EpsilonAccountant, pld::PldAccountant, Phase};
        let (sigma, t) = (6.0, 10u64);
        let exact = epsilon_for_mu((t as f64).sqrt() / sigma, 1e-5).unwrap();
        let pld = PldAccountant::default().epsilon_of(&[Phase::new(1.0, sigma, t).unwrap()], 1e-5).unwrap();
        assert!(pld >= exact - 1e-9 && pld < exact + 0.01, "pld {pld}, exact {exact}");
    }
}
