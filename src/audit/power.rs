//! What an audit can show, computed before any run: the threshold of the `from-claim` rule, the
//! *ceiling* of each threshold rule (the largest bound the procedure can report with K runs per
//! side), and its *power* (the smallest true epsilon of a Gaussian mechanism it would catch with
//! probability 50% and 90%). Derivation: `proofs/audit/power.md`.
//!
//! The model behind the numbers is the one the white-box statistic is normalised to: canary-out
//! scores N(0, 1), canary-in scores N(mu, 1) for a mechanism that is mu-GDP (a Gaussian
//! mechanism). A leakier mechanism can do anything on the canary-in side; the canary-out side is
//! fixed by the noise the recipe adds.
use crate::audit::bounds::{epsilon_from_rate_bounds, ClopperPearsonTable};
use crate::audit::gaussian::{epsilon_for_mu, ideal_lower_bound_table, mu_for_epsilon, normal_cdf};
use crate::audit::spec::ThresholdChoice;
use crate::error::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, Discrete, DiscreteCDF};

/// The largest mu searched (mu-GDP with mu = 20 is (about 280, 1e-5)-DP): a mechanism this audit
/// does not catch at mu = 20 is reported as "not detectable".
pub const MU_MAX: f64 = 20.0;
/// Replicates of the simulated power of the adaptive rules (`held-out`, `bonferroni`).
pub const POWER_REPLICATES: usize = 200;
/// Seed of those replicates (fixed: the same spec always gets the same power figures).
pub const POWER_SEED: u64 = 0x000A_0D17;

/// The threshold rule and the numbers an audit needs to fix it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Procedure {
    /// How the threshold is chosen.
    pub rule: ThresholdChoice,
    /// Runs per side K.
    pub runs_per_side: u64,
    /// `held-out`: runs per side spent choosing the threshold.
    pub selection_runs: u64,
    /// The claim's epsilon.
    pub claim_epsilon: f64,
    /// The claim's delta.
    pub delta: f64,
    /// 1 - confidence.
    pub alpha: f64,
}

impl Procedure {
    /// The procedure of a replay audit with `runs_per_side` runs per side and the spec's rule.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for fewer than 2 runs, alpha outside (0, 1), delta outside
    /// (0, 1), a negative or non-finite claim.
    pub fn new(
        rule: ThresholdChoice,
        runs_per_side: u64,
        held_out_fraction: f64,
        claim_epsilon: f64,
        delta: f64,
        alpha: f64,
    ) -> Result<Self> {
        if runs_per_side < 2 {
            return Err(Error::invalid("runs per side", runs_per_side, "must be at least 2"));
        }
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(Error::invalid("alpha", alpha, "must be in (0, 1)"));
        }
        if !(delta > 0.0 && delta < 1.0) {
            return Err(Error::invalid("delta", delta, "must be in (0, 1)"));
        }
        if !(claim_epsilon >= 0.0 && claim_epsilon.is_finite()) {
            return Err(Error::invalid("claimed epsilon", claim_epsilon, "must be a finite number >= 0"));
        }
        let selection_runs =
            if rule == ThresholdChoice::HeldOut { held_out_runs(runs_per_side, held_out_fraction) } else { 0 };
        Ok(Procedure { rule, runs_per_side, selection_runs, claim_epsilon, delta, alpha })
    }

    /// Runs per side the bound counts (K, or K minus the held-out runs).
    pub fn counted_runs(&self) -> u64 {
        self.runs_per_side - self.selection_runs
    }
}

/// Runs per side a `held-out` audit spends choosing its threshold: `round(K f)`, clamped to
/// `1..K-1`.
pub fn held_out_runs(runs_per_side: u64, fraction: f64) -> u64 {
    ((runs_per_side as f64 * fraction).round() as u64).clamp(1, runs_per_side.saturating_sub(1).max(1))
}

/// The threshold of the `from-claim` rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FromClaimThreshold {
    /// The threshold (N(0, 1) units; a run is called "canary in" when its score is at least this).
    pub threshold: f64,
    /// The smallest epsilon of a Gaussian mechanism this threshold reports `violated` with
    /// probability [`DESIGN_LEVEL`] (the quantity the threshold minimises); `None` when no
    /// threshold catches any mechanism up to mu = [`MU_MAX`] so.
    pub design_epsilon: Option<f64>,
}

/// The threshold the `from-claim` rule used before issue 28: the one that maximises the ideal
/// bound of a Gaussian mechanism *at* the claim. Kept to show what it could reach
/// (`dpaudit audit ceilings`); no audit uses it.
///
/// # Errors
/// As [`mu_for_epsilon`].
pub fn claim_maximising_threshold(claim: f64, delta: f64, runs: u64, alpha: f64) -> Result<f64> {
    let mu = mu_for_epsilon(claim, delta)?;
    let table = ClopperPearsonTable::new(runs, alpha / 2.0)?;
    Ok(ideal_lower_bound_table(mu, delta, &table).threshold)
}

/// Thresholds the `from-claim` rule considers: a grid from -3 to 7 in steps of 0.1, then steps
/// of 0.005 within 0.1 of the best.
const COARSE: (f64, f64, f64) = (-3.0, 7.0, 0.1);
const FINE: f64 = 0.005;
/// The detection probability the `from-claim` threshold is designed for: it minimises the
/// smallest epsilon caught with probability 0.9 ("a mechanism this leaky would have been caught").
pub const DESIGN_LEVEL: f64 = 0.9;

/// The `from-claim` threshold, fixed before any run from the claim, K, delta and the confidence:
/// the threshold whose exact probability of reporting `violated` reaches [`DESIGN_LEVEL`] (0.9)
/// at the smallest Gaussian mechanism (mu by bisection to 1e-3 on a grid of thresholds): the
/// threshold with the most power against mechanisms leakier than the claim. Ties go to the
/// smaller threshold.
///
/// # Proof definition
/// Depends on the claim, delta, K and alpha only (no run), so the bound at this threshold keeps
/// its confidence (`proofs/audit/power.md`).
///
/// # Errors
/// As [`Procedure::new`].
pub fn from_claim_threshold(claim: f64, delta: f64, runs: u64, alpha: f64) -> Result<FromClaimThreshold> {
    let p = Procedure::new(ThresholdChoice::FromClaim, runs, 0.5, claim, delta, alpha)?;
    let table = ClopperPearsonTable::new(runs, alpha / 2.0)?;
    let mu50 = |t: f64| -> Result<f64> {
        let prob = |mu: f64| fixed_threshold_detection(t, mu, &p, &table);
        Ok(detectable_mu(DESIGN_LEVEL, &prob, 1e-3)?.unwrap_or(f64::INFINITY))
    };
    let mut best = (f64::INFINITY, f64::NAN);
    let (lo, hi, step) = COARSE;
    let coarse = ((hi - lo) / step).round() as i64;
    for i in 0..=coarse {
        let t = lo + step * i as f64;
        let m = mu50(t)?;
        if m < best.0 {
            best = (m, t);
        }
    }
    if best.0.is_infinite() {
        // No threshold catches even mu = MU_MAX with probability 0.9: take the one with the
        // highest ceiling (a perfectly leaky mechanism is caught with probability 1/2 at most
        // where the ceiling exceeds the claim, and never where it does not).
        let mut top = (f64::NEG_INFINITY, 0.0);
        for i in 0..=coarse {
            let t = lo + step * i as f64;
            let c = fixed_threshold_ceiling_table(t, &p, &table)?;
            if c > top.0 {
                top = (c, t);
            }
        }
        return Ok(FromClaimThreshold { threshold: top.1, design_epsilon: None });
    }
    let centre = best.1;
    let fine = (step / FINE).round() as i64;
    for i in -fine..=fine {
        let t = centre + FINE * i as f64;
        let m = mu50(t)?;
        if m < best.0 || (m == best.0 && t < best.1) {
            best = (m, t);
        }
    }
    let t = best.1;
    let prob = |mu: f64| fixed_threshold_detection(t, mu, &p, &table);
    let mu = detectable_mu(DESIGN_LEVEL, &prob, 1e-4)?;
    Ok(FromClaimThreshold { threshold: t, design_epsilon: mu.map(|m| epsilon_for_mu(m, delta)).transpose()? })
}

/// The lower median of Binomial(n, p): the smallest m with P[X <= m] >= 1/2.
fn binomial_lower_median(n: u64, p: f64) -> Result<u64> {
    let b = Binomial::new(p.clamp(0.0, 1.0), n).map_err(|e| Error::numerical("binomial", e.to_string()))?;
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if b.cdf(mid) >= 0.5 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// The ceiling of a threshold `t` fixed before the runs: the bound when every canary-in run
/// scores above `t` (no false negatives) and the canary-out runs above `t` are the lower median of
/// Binomial(K, Phi(-t)). Under the null model (canary-out scores N(0, 1)) no mechanism, however
/// leaky, reports more than this with probability 1/2 or more, and a perfectly leaky one reports
/// at least this with probability at least 1/2.
///
/// # Proof definition
/// `proofs/audit/power.md`, "The ceiling of a fixed threshold"; checked against a brute-force
/// enumeration in `tests/audit_power.rs`.
///
/// # Errors
/// As [`ClopperPearsonTable::new`].
pub fn fixed_threshold_ceiling(t: f64, delta: f64, runs: u64, alpha: f64) -> Result<f64> {
    let table = ClopperPearsonTable::new(runs, alpha / 2.0)?;
    let fp = binomial_lower_median(runs, normal_cdf(-t))?;
    Ok(epsilon_from_rate_bounds(table.upper(fp), table.upper(0), delta))
}

fn fixed_threshold_ceiling_table(t: f64, p: &Procedure, table: &ClopperPearsonTable) -> Result<f64> {
    let fp = binomial_lower_median(p.runs_per_side, normal_cdf(-t))?;
    Ok(epsilon_from_rate_bounds(table.upper(fp), table.upper(0), p.delta))
}

/// The largest bound an adaptive rule can report: both sides separated perfectly (no false
/// positive, no false negative) on the runs it counts, at the confidence each test spends.
/// `bonferroni`: K runs per side, each of the 2K thresholds at alpha / 2K; `held-out`: the K - h
/// evaluation runs at alpha.
///
/// # Errors
/// As [`ClopperPearsonTable::new`].
fn adaptive_ceiling(p: &Procedure) -> Result<f64> {
    let (n, alpha) = match p.rule {
        ThresholdChoice::Bonferroni => (p.runs_per_side, p.alpha / (2 * p.runs_per_side) as f64),
        _ => (p.counted_runs(), p.alpha),
    };
    let u = crate::audit::bounds::clopper_pearson_upper(0, n, alpha / 2.0)?;
    Ok(epsilon_from_rate_bounds(u, u, p.delta))
}

/// Probability that a fixed threshold `t` reports a bound above `claim` when the canary-out
/// scores are N(0, 1) and the canary-in ones N(mu, 1) (exact: a sum over the binomial counts).
fn fixed_threshold_detection(t: f64, mu: f64, p: &Procedure, table: &ClopperPearsonTable) -> Result<f64> {
    let k = p.runs_per_side;
    let q = normal_cdf(-t);
    let fp = Binomial::new(q, k).map_err(|e| Error::numerical("binomial", e.to_string()))?;
    let fnb = Binomial::new(normal_cdf(t - mu), k).map_err(|e| Error::numerical("binomial", e.to_string()))?;
    // Counts of false positives beyond 12 standard deviations of the mean carry less than 1e-30.
    let (mean, sd) = (k as f64 * q, (k as f64 * q * (1.0 - q)).sqrt());
    let f_hi = ((mean + 12.0 * sd + 2.0).ceil() as u64).min(k);
    let f_lo = (mean - 12.0 * sd - 2.0).floor().max(0.0) as u64;
    // n_max(f): the most false negatives with which f false positives still refute the claim;
    // it does not grow with f (the bound falls in both counts).
    let mut total = 0.0;
    let mut n_max: i64 = k as i64;
    for f in 0..=f_hi {
        while n_max >= 0
            && epsilon_from_rate_bounds(table.upper(f), table.upper(n_max as u64), p.delta) <= p.claim_epsilon
        {
            n_max -= 1;
        }
        if n_max < 0 {
            break;
        }
        if f >= f_lo {
            total += fp.pmf(f) * fnb.cdf(n_max as u64);
        }
    }
    Ok(total.min(1.0))
}

/// Pre-drawn N(0, 1) scores of the simulated power (common random numbers: the canary-in scores
/// of mechanism mu are `in + mu`, so the detection rate does not fall as mu grows).
struct Replicates {
    /// Per replicate: canary-out scores, canary-in noise; selection runs first (held-out).
    draws: Vec<(Vec<f64>, Vec<f64>)>,
}

impl Replicates {
    fn new(k: usize) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(POWER_SEED);
        let draws = (0..POWER_REPLICATES)
            .map(|_| {
                let mut draw = || (0..k).map(|_| StandardNormal.sample(&mut rng)).collect::<Vec<f64>>();
                (draw(), draw())
            })
            .collect();
        Replicates { draws }
    }
}

/// The Bonferroni search of [`crate::audit::bounds::best_threshold_bonferroni`] on sorted sides
/// (continuous scores: 2n distinct thresholds), with its table (n trials at alpha / 2n / 2):
/// returns (best bound, its threshold).
fn bonferroni_sorted(inn: &[f64], out: &[f64], delta: f64, table: &ClopperPearsonTable) -> (f64, f64) {
    // Thresholds ascending; at threshold s, FN = #in < s, FP = #out >= s.
    let (mut i, mut o) = (0usize, 0usize);
    let mut best: Option<(f64, f64)> = None;
    while i < inn.len() || o < out.len() {
        let t = if o >= out.len() || (i < inn.len() && inn[i] < out[o]) { inn[i] } else { out[o] };
        let b = epsilon_from_rate_bounds(table.upper((out.len() - o) as u64), table.upper(i as u64), delta);
        if best.is_none_or(|(x, _)| b > x) {
            best = Some((b, t));
        }
        if i < inn.len() && inn[i] == t {
            i += 1;
        } else {
            o += 1;
        }
    }
    best.unwrap_or((0.0, 0.0))
}

fn sorted(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Share of simulated audits of mechanism mu that report a bound above the claim.
fn simulated_detection(
    mu: f64,
    p: &Procedure,
    reps: &Replicates,
    tables: &(ClopperPearsonTable, ClopperPearsonTable),
) -> f64 {
    let h = p.selection_runs as usize;
    let hits = reps
        .draws
        .iter()
        .filter(|(out, noise)| match p.rule {
            ThresholdChoice::Bonferroni => {
                let inn = sorted(noise.iter().map(|z| z + mu));
                let out = sorted(out.iter().copied());
                bonferroni_sorted(&inn, &out, p.delta, &tables.0).0 > p.claim_epsilon
            }
            _ => {
                let (sel_in, sel_out) = (sorted(noise[..h].iter().map(|z| z + mu)), sorted(out[..h].iter().copied()));
                let (_, t) = bonferroni_sorted(&sel_in, &sel_out, p.delta, &tables.0);
                let fn_ = noise[h..].iter().filter(|&&z| z + mu < t).count() as u64;
                let fp = out[h..].iter().filter(|&&z| z >= t).count() as u64;
                epsilon_from_rate_bounds(tables.1.upper(fp), tables.1.upper(fn_), p.delta) > p.claim_epsilon
            }
        })
        .count();
    hits as f64 / reps.draws.len() as f64
}

/// What an audit procedure can show, computed before any run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPlan {
    /// `from-claim`, `held-out` or `bonferroni`.
    pub rule: String,
    /// The claim's epsilon the plan is for.
    pub claim_epsilon: f64,
    /// Runs per side the bound counts.
    pub counted_runs_per_side: u64,
    /// `from-claim`: the threshold, fixed before the runs.
    pub threshold: Option<f64>,
    /// `from-claim`: the epsilon of the Gaussian mechanism the threshold is aimed at.
    pub design_epsilon: Option<f64>,
    /// The largest bound the procedure can report with these runs (see `ceiling_meaning`).
    pub ceiling: f64,
    /// What the ceiling is, in words.
    pub ceiling_meaning: String,
    /// Whether the ceiling exceeds the claim (otherwise the audit cannot refute it: `inconclusive`).
    pub can_refute: bool,
    /// The smallest true epsilon of a Gaussian mechanism this audit reports as `violated` with
    /// probability 1/2; `None` when none up to mu = 20 (epsilon about 280 at delta 1e-5) is.
    pub detectable_epsilon_50: Option<f64>,
    /// The same with probability 0.9.
    pub detectable_epsilon_90: Option<f64>,
    /// How the power was computed.
    pub power_method: String,
}

/// The plan of a replay audit: threshold (from-claim), ceiling and power.
///
/// # Proof definition
/// The ceiling is the procedure's largest reportable bound as defined in `proofs/audit/power.md`;
/// the detectable epsilons are where the detection probability of a Gaussian mechanism crosses
/// 1/2 and 0.9 (exact for `from-claim`, simulated with a fixed seed for the adaptive rules).
///
/// # Errors
/// As [`Procedure::new`]'s numbers and [`ClopperPearsonTable::new`].
pub fn plan(p: &Procedure) -> Result<AuditPlan> {
    let k = p.runs_per_side;
    let (threshold, design_epsilon, ceiling, meaning) = match p.rule {
        ThresholdChoice::FromClaim => {
            let fc = from_claim_threshold(p.claim_epsilon, p.delta, k, p.alpha)?;
            let c = fixed_threshold_ceiling(fc.threshold, p.delta, k, p.alpha)?;
            (Some(fc.threshold), fc.design_epsilon, c, format!("threshold {:.4} fixed before the runs: the bound with no canary-in run below it and the median number of N(0, 1) canary-out runs above it; no mechanism exceeds it with probability 1/2 or more", fc.threshold))
        }
        ThresholdChoice::Bonferroni => (None, None, adaptive_ceiling(p)?, format!("every canary-in score above every canary-out score: no error among {k} runs per side, each of the {} thresholds at alpha / {}", 2 * k, 2 * k)),
        ThresholdChoice::HeldOut => (None, None, adaptive_ceiling(p)?, format!("no error among the {} evaluation runs per side", p.counted_runs())),
    };
    let can_refute = ceiling > p.claim_epsilon;
    let (d50, d90, method) = if !can_refute {
        (None, None, "none: the ceiling does not exceed the claim".to_string())
    } else {
        match p.rule {
            ThresholdChoice::FromClaim => {
                let t = threshold.unwrap_or(0.0);
                let table = ClopperPearsonTable::new(k, p.alpha / 2.0)?;
                let prob = |mu: f64| fixed_threshold_detection(t, mu, p, &table);
                (
                    detectable(0.5, p, &prob)?,
                    detectable(0.9, p, &prob)?,
                    "exact binomial sum at the fixed threshold: canary-out scores N(0, 1), canary-in N(mu, 1)"
                        .to_string(),
                )
            }
            _ => {
                let reps = Replicates::new(k as usize);
                let tables = match p.rule {
                    ThresholdChoice::Bonferroni => (
                        ClopperPearsonTable::new(k, p.alpha / (2 * k) as f64 / 2.0)?,
                        ClopperPearsonTable::new(1, 0.5)?,
                    ),
                    _ => {
                        let h = p.selection_runs;
                        (
                            ClopperPearsonTable::new(h, p.alpha / (2 * h) as f64 / 2.0)?,
                            ClopperPearsonTable::new(p.counted_runs(), p.alpha / 2.0)?,
                        )
                    }
                };
                let prob = |mu: f64| Ok(simulated_detection(mu, p, &reps, &tables));
                (
                    detectable(0.5, p, &prob)?,
                    detectable(0.9, p, &prob)?,
                    format!("simulation: {POWER_REPLICATES} audits of N(0, 1) against N(mu, 1) scores with the same rule (seed {POWER_SEED:#x}, common random numbers)"),
                )
            }
        }
    };
    Ok(AuditPlan {
        rule: rule_name(p.rule).into(),
        claim_epsilon: p.claim_epsilon,
        counted_runs_per_side: p.counted_runs(),
        threshold,
        design_epsilon,
        ceiling,
        ceiling_meaning: meaning,
        can_refute,
        detectable_epsilon_50: d50,
        detectable_epsilon_90: d90,
        power_method: method,
    })
}

/// [`plan`] without the power figures (`detectable_epsilon_*` are `None`): the threshold and the
/// ceiling only, which cost no simulation.
///
/// # Errors
/// As [`plan`].
pub fn ceiling_only(p: &Procedure) -> Result<AuditPlan> {
    let (threshold, design_epsilon, ceiling) = match p.rule {
        ThresholdChoice::FromClaim => {
            let fc = from_claim_threshold(p.claim_epsilon, p.delta, p.runs_per_side, p.alpha)?;
            (
                Some(fc.threshold),
                fc.design_epsilon,
                fixed_threshold_ceiling(fc.threshold, p.delta, p.runs_per_side, p.alpha)?,
            )
        }
        _ => (None, None, adaptive_ceiling(p)?),
    };
    Ok(AuditPlan {
        rule: rule_name(p.rule).into(),
        claim_epsilon: p.claim_epsilon,
        counted_runs_per_side: p.counted_runs(),
        threshold,
        design_epsilon,
        ceiling,
        ceiling_meaning: "see plan()".into(),
        can_refute: ceiling > p.claim_epsilon,
        detectable_epsilon_50: None,
        detectable_epsilon_90: None,
        power_method: "not computed".into(),
    })
}

/// The rule's name in specs.
pub fn rule_name(rule: ThresholdChoice) -> &'static str {
    match rule {
        ThresholdChoice::FromClaim => "from-claim",
        ThresholdChoice::HeldOut => "held-out",
        ThresholdChoice::Bonferroni => "bonferroni",
    }
}

/// The smallest epsilon (of mu-GDP, mu by bisection to 1e-4) at which `prob(mu)` reaches `level`;
/// `None` if not even mu = [`MU_MAX`] does.
fn detectable(level: f64, p: &Procedure, prob: &dyn Fn(f64) -> Result<f64>) -> Result<Option<f64>> {
    detectable_mu(level, prob, 1e-4)?.map(|mu| epsilon_for_mu(mu, p.delta)).transpose()
}

/// The smallest mu (bisection to `tol`) at which `prob(mu)` reaches `level`; `None` if not even
/// mu = [`MU_MAX`] does.
fn detectable_mu(level: f64, prob: &dyn Fn(f64) -> Result<f64>, tol: f64) -> Result<Option<f64>> {
    if prob(MU_MAX)? < level {
        return Ok(None);
    }
    let (mut lo, mut hi) = (0.0, MU_MAX);
    while hi - lo > tol {
        let mid = 0.5 * (lo + hi);
        if prob(mid)? >= level {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(Some(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_median_is_the_smallest_half_quantile() {
        let b = Binomial::new(0.3, 101).unwrap();
        let m = binomial_lower_median(101, 0.3).unwrap();
        assert!(b.cdf(m) >= 0.5 && (m == 0 || b.cdf(m - 1) < 0.5));
    }
}
