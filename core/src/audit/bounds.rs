//! From attack outcomes to an empirical epsilon lower bound (Jagielski et al. 2020; Nasr et al.
//! 2021): if a mechanism is (epsilon, delta)-DP, every test that tells "canary in" from "canary
//! out" has FPR and FNR with `1 - delta - FNR <= e^epsilon FPR` (and the mirror), so
//!
//! epsilon >= ln((1 - delta - FNR) / FPR)  and  epsilon >= ln((1 - delta - FPR) / FNR).
//!
//! Rates measured from finitely many runs are replaced by their Clopper–Pearson upper bounds,
//! each at confidence `1 - alpha/2`, so both hold together with probability at least `1 - alpha`
//! (union bound), and the bound is valid at confidence `1 - alpha`.
//! Derivation: `proofs/audit/bounds.md`.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, Binomial, ContinuousCDF, Discrete, DiscreteCDF};

/// Outcomes of a threshold test on the runs of each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Runs on D' (canary in) whose score fell below the threshold: false negatives.
    pub false_negatives: u64,
    /// Runs on D' in total.
    pub positives: u64,
    /// Runs on D (canary out) whose score reached the threshold: false positives.
    pub false_positives: u64,
    /// Runs on D in total.
    pub negatives: u64,
}

/// A lower bound on epsilon with how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonLowerBound {
    /// The bound (0 when the outcomes are consistent with epsilon = 0).
    pub epsilon_lower: f64,
    /// Confidence 1 - alpha with which it holds.
    pub confidence: f64,
    /// Clopper–Pearson upper bound on the false positive rate (confidence 1 - alpha/2).
    pub fpr_upper: f64,
    /// Clopper–Pearson upper bound on the false negative rate (confidence 1 - alpha/2).
    pub fnr_upper: f64,
}

/// The one-sided Clopper–Pearson upper bound on a binomial rate from `k` successes in `n`
/// trials, at confidence `1 - alpha`: the `1 - alpha` quantile of Beta(k + 1, n - k), and 1 when
/// k = n.
///
/// # Errors
/// [`Error::InvalidParameter`] for n = 0, k > n or alpha outside (0, 1).
pub fn clopper_pearson_upper(k: u64, n: u64, alpha: f64) -> Result<f64> {
    if n == 0 || k > n {
        return Err(Error::invalid("binomial counts", format!("{k} of {n}"), "need n >= 1 and k <= n"));
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(Error::invalid("alpha", alpha, "must be in (0, 1)"));
    }
    if k == n {
        return Ok(1.0);
    }
    if k == 0 {
        // Closed form: P(X = 0) = (1 - p)^n = alpha.
        return Ok(1.0 - alpha.powf(1.0 / n as f64));
    }
    let beta =
        Beta::new((k + 1) as f64, (n - k) as f64).map_err(|e| Error::numerical("Clopper-Pearson", e.to_string()))?;
    Ok(beta.inverse_cdf(1.0 - alpha))
}

/// The rigorous epsilon lower bound for one threshold test, at confidence `1 - alpha`.
///
/// # Proof definition
/// If the mechanism is (epsilon, delta)-DP, then with probability at least `1 - alpha` over the
/// runs, `epsilon >= epsilon_lower` (`proofs/audit/bounds.md`).
///
/// # Errors
/// [`Error::InvalidParameter`] for empty sides, counts above totals, delta outside [0, 1), alpha
/// outside (0, 1).
pub fn epsilon_lower_bound(o: &Outcomes, delta: f64, alpha: f64) -> Result<EpsilonLowerBound> {
    if !(0.0..1.0).contains(&delta) {
        return Err(Error::invalid("delta", delta, "must be in [0, 1)"));
    }
    let fpr_upper = clopper_pearson_upper(o.false_positives, o.negatives, alpha / 2.0)?;
    let fnr_upper = clopper_pearson_upper(o.false_negatives, o.positives, alpha / 2.0)?;
    let epsilon_lower = epsilon_from_rate_bounds(fpr_upper, fnr_upper, delta);
    Ok(EpsilonLowerBound { epsilon_lower, confidence: 1.0 - alpha, fpr_upper, fnr_upper })
}

/// The bound of [`epsilon_lower_bound`] from the rates' upper bounds:
/// `max(ln((1 - delta - FNR_u) / FPR_u), ln((1 - delta - FPR_u) / FNR_u), 0)`. Non-increasing in
/// each upper bound.
pub fn epsilon_from_rate_bounds(fpr_upper: f64, fnr_upper: f64, delta: f64) -> f64 {
    let side = |num: f64, den: f64| if num > 0.0 && den > 0.0 { (num / den).ln() } else { 0.0 };
    side(1.0 - delta - fnr_upper, fpr_upper).max(side(1.0 - delta - fpr_upper, fnr_upper)).max(0.0)
}

/// Clopper–Pearson upper bounds for every count `0..=n` of `n` trials at one `alpha`: the
/// values of [`clopper_pearson_upper`], computed once (power and ceiling calculations look them
/// up many times).
#[derive(Debug, Clone)]
pub struct ClopperPearsonTable {
    upper: Vec<f64>,
}

impl ClopperPearsonTable {
    /// The table for `n` trials at `alpha`.
    ///
    /// # Errors
    /// As [`clopper_pearson_upper`].
    pub fn new(n: u64, alpha: f64) -> Result<Self> {
        Ok(ClopperPearsonTable { upper: (0..=n).map(|k| clopper_pearson_upper(k, n, alpha)).collect::<Result<_>>()? })
    }

    /// Trials.
    pub fn trials(&self) -> u64 {
        self.upper.len() as u64 - 1
    }

    /// The upper bound for `k` successes (`k` is clamped to `n`).
    pub fn upper(&self, k: u64) -> f64 {
        self.upper[(k as usize).min(self.upper.len() - 1)]
    }
}

/// The best bound over every threshold between the observed scores, with a Bonferroni
/// correction for the number of thresholds tried (each test at `alpha / m`), so the maximum is
/// still valid at confidence `1 - alpha`. Larger scores mean "canary in". Returns the bound and
/// the threshold (a run is called "in" when its score is >= the threshold).
///
/// # Errors
/// As [`epsilon_lower_bound`]; [`Error::InvalidParameter`] for an empty side or NaN scores.
pub fn best_threshold_bonferroni(
    in_scores: &[f64],
    out_scores: &[f64],
    delta: f64,
    alpha: f64,
) -> Result<(EpsilonLowerBound, f64)> {
    if in_scores.is_empty() || out_scores.is_empty() {
        return Err(Error::invalid("scores", "an empty side", "need runs with and without the canary"));
    }
    if in_scores.iter().chain(out_scores).any(|s| s.is_nan()) {
        return Err(Error::invalid("scores", "NaN", "every score must be a number"));
    }
    let mut thresholds: Vec<f64> = in_scores.iter().chain(out_scores).copied().collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let m = thresholds.len() as f64;
    let mut best: Option<(EpsilonLowerBound, f64)> = None;
    for &t in &thresholds {
        let o = Outcomes {
            false_negatives: in_scores.iter().filter(|&&s| s < t).count() as u64,
            positives: in_scores.len() as u64,
            false_positives: out_scores.iter().filter(|&&s| s >= t).count() as u64,
            negatives: out_scores.len() as u64,
        };
        let b = epsilon_lower_bound(&o, delta, alpha / m)?;
        if best.is_none_or(|(x, _)| b.epsilon_lower > x.epsilon_lower) {
            best = Some((EpsilonLowerBound { confidence: 1.0 - alpha, ..b }, t));
        }
    }
    Ok(best.expect("at least one threshold"))
}

/// The p-value of the one-run audit (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One
/// (1) Training Run", Theorem 3.1 and Appendix D): the probability, under (epsilon, delta)-DP, that
/// an auditor who guesses the membership of `r` of `m` canaries (each included independently with
/// probability 1/2) gets at least `v` right:
///
/// P[Bin(r, p) >= v] + 2 m delta max_{1 <= i <= v} P[v - i <= Bin(r, p) < v] / i,  p = e^eps / (1 + e^eps).
///
/// # Errors
/// [`Error::InvalidParameter`] unless `v <= r <= m`, `epsilon >= 0` and `delta` in [0, 1].
pub fn one_run_p_value(m: u64, r: u64, v: u64, epsilon: f64, delta: f64) -> Result<f64> {
    if !(v <= r && r <= m) {
        return Err(Error::invalid("one-run counts", format!("v = {v}, r = {r}, m = {m}"), "need v <= r <= m"));
    }
    if !(epsilon.is_finite() && epsilon >= 0.0 && (0.0..=1.0).contains(&delta)) {
        return Err(Error::invalid(
            "(epsilon, delta)",
            format!("({epsilon}, {delta})"),
            "need epsilon >= 0 finite and delta in [0, 1]",
        ));
    }
    if r == 0 || v == 0 {
        return Ok(1.0);
    }
    let p = 1.0 / (1.0 + (-epsilon).exp());
    let bin = Binomial::new(p, r).map_err(|e| Error::numerical("binomial", e.to_string()))?;
    // P[Bin >= v] = 1 - P[Bin <= v - 1].
    let beta = bin.sf(v - 1);
    let mut alpha: f64 = 0.0;
    let mut sum = 0.0;
    if delta > 0.0 {
        for i in 1..=v {
            sum += bin.pmf(v - i);
            alpha = alpha.max(sum / i as f64);
        }
    }
    Ok((beta + alpha * delta * 2.0 * m as f64).min(1.0))
}

/// The one-run audit's lower bound: the largest epsilon (to 1e-6, at most 100) whose p-value
/// [`one_run_p_value`] is still below `alpha`; 0 when even epsilon = 0 is not rejected.
///
/// # Proof definition
/// If the mechanism is (epsilon, delta)-DP, the returned bound exceeds epsilon with probability at
/// most `alpha` (`proofs/audit/one_run.md`).
///
/// # Errors
/// As [`one_run_p_value`]; alpha outside (0, 1).
pub fn one_run_epsilon_lower(m: u64, r: u64, v: u64, delta: f64, alpha: f64) -> Result<f64> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(Error::invalid("alpha", alpha, "must be in (0, 1)"));
    }
    if one_run_p_value(m, r, v, 0.0, delta)? >= alpha {
        return Ok(0.0);
    }
    let (mut lo, mut hi) = (0.0, 100.0);
    if one_run_p_value(m, r, v, hi, delta)? < alpha {
        return Ok(hi);
    }
    // The p-value grows with epsilon; keep p(lo) < alpha <= p(hi).
    while hi - lo > 1e-6 {
        let mid = 0.5 * (lo + hi);
        if one_run_p_value(m, r, v, mid, delta)? < alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_closed_forms() {
        // k = 0: 1 - alpha^(1/n).
        let u = clopper_pearson_upper(0, 1000, 0.025).unwrap();
        assert!((u - (1.0 - 0.025f64.powf(1e-3))).abs() < 1e-15);
        // k = n - 1: the Beta(n, 1) quantile at 1 - alpha is (1 - alpha)^(1/n).
        let u = clopper_pearson_upper(9, 10, 0.05).unwrap();
        assert!((u - 0.95f64.powf(0.1)).abs() < 1e-9, "{u}");
        assert_eq!(clopper_pearson_upper(10, 10, 0.05).unwrap(), 1.0);
        assert!(clopper_pearson_upper(3, 2, 0.05).is_err());
        assert!(clopper_pearson_upper(0, 0, 0.05).is_err());
    }

    #[test]
    fn a_perfect_distinguisher_gives_a_finite_bound() {
        // 1000 runs per side, no errors, 95% confidence: FPR_u = FNR_u = 1 - 0.025^(1/1000).
        let o = Outcomes { false_negatives: 0, positives: 1000, false_positives: 0, negatives: 1000 };
        let b = epsilon_lower_bound(&o, 1e-5, 0.05).unwrap();
        let u = 1.0 - 0.025f64.powf(1e-3);
        assert!((b.epsilon_lower - ((1.0 - 1e-5 - u) / u).ln()).abs() < 1e-12);
        assert!((5.5..5.7).contains(&b.epsilon_lower), "{}", b.epsilon_lower);
    }

    #[test]
    fn one_run_bound_matches_its_definition() {
        // delta = 0: the bound is where P[Bin(r, p(eps)) >= v] crosses alpha.
        let (m, r, v) = (1000, 100, 90);
        let e = one_run_epsilon_lower(m, r, v, 0.0, 0.05).unwrap();
        assert!(one_run_p_value(m, r, v, e, 0.0).unwrap() < 0.05);
        assert!(one_run_p_value(m, r, v, e + 1e-5, 0.0).unwrap() >= 0.05);
        // 90 of 100 right: p_hat = 0.9, ln(0.9/0.1) = 2.2; the 95% bound must sit below it.
        assert!(e > 1.0 && e < 2.2, "{e}");
        // Chance-level guessing proves nothing; delta only loosens.
        assert_eq!(one_run_epsilon_lower(m, r, 50, 0.0, 0.05).unwrap(), 0.0);
        assert!(one_run_epsilon_lower(m, r, v, 1e-5, 0.05).unwrap() <= e);
        assert!(one_run_p_value(10, 20, 5, 1.0, 0.0).is_err());
    }

    #[test]
    fn an_uninformative_test_gives_zero() {
        let o = Outcomes { false_negatives: 500, positives: 1000, false_positives: 500, negatives: 1000 };
        assert_eq!(epsilon_lower_bound(&o, 1e-5, 0.05).unwrap().epsilon_lower, 0.0);
    }

    #[test]
    fn bonferroni_search_finds_the_separating_threshold() {
        let out: Vec<f64> = (0..200).map(|i| i as f64 / 200.0).collect();
        let inn: Vec<f64> = (0..200).map(|i| 2.0 + i as f64 / 200.0).collect();
        let (b, t) = best_threshold_bonferroni(&inn, &out, 0.0, 0.05).unwrap();
        assert_eq!(t, 2.0);
        // Corrected for 400 thresholds: weaker than the single-threshold bound, still large.
        let single = epsilon_lower_bound(
            &Outcomes { false_negatives: 0, positives: 200, false_positives: 0, negatives: 200 },
            0.0,
            0.05,
        )
        .unwrap();
        assert!(b.epsilon_lower < single.epsilon_lower && b.epsilon_lower > 3.0, "{b:?}");
        assert!(best_threshold_bonferroni(&[f64::NAN], &[0.0], 0.0, 0.05).is_err());
    }
}
