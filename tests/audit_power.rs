//! What an audit can show before it runs (`proofs/audit/power.md`): the ceiling of a fixed
//! threshold against a brute-force enumeration, the adaptive rules' ceilings against perfectly
//! separated scores run through the library's own search, the old from-claim rule's ceilings of
//! issue 28, and the new rule's ceiling above every claim it can reach. No training: these are
//! exact computations, deterministic (the simulated power uses a fixed seed).
use dpaudit::audit::bounds::{best_threshold_bonferroni, epsilon_lower_bound, Outcomes};
use dpaudit::audit::gaussian::normal_cdf;
use dpaudit::audit::power::{
    claim_maximising_threshold, fixed_threshold_ceiling, from_claim_threshold, plan, Procedure,
};
use dpaudit::audit::spec::ThresholdChoice;
use statrs::distribution::{Binomial, Discrete};

const DELTA: f64 = 1e-5;
const ALPHA: f64 = 0.05;

/// The largest b with P[bound >= b] >= 1/2 when no canary-in run falls below `t` and the
/// canary-out false positives are Binomial(K, Phi(-t)): every count enumerated, each bound from
/// the library's `epsilon_lower_bound` (no table, no median shortcut).
fn brute_force_ceiling(t: f64, k: u64) -> f64 {
    let b = Binomial::new(normal_cdf(-t), k).unwrap();
    let mut outcomes: Vec<(f64, f64)> = (0..=k)
        .map(|f| {
            let o = Outcomes { false_negatives: 0, positives: k, false_positives: f, negatives: k };
            (epsilon_lower_bound(&o, DELTA, ALPHA).unwrap().epsilon_lower, b.pmf(f))
        })
        .collect();
    // Largest bound first; walk down until half the probability is covered.
    outcomes.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut mass = 0.0;
    for (bound, p) in outcomes {
        mass += p;
        if mass >= 0.5 {
            return bound;
        }
    }
    0.0
}

#[test]
fn the_fixed_threshold_ceiling_matches_brute_force() {
    for k in [20u64, 137, 500, 1000] {
        for t in [-1.5, -0.3, 0.0, 0.7, 1.3, 2.2, 3.5] {
            let fast = fixed_threshold_ceiling(t, DELTA, k, ALPHA).unwrap();
            let slow = brute_force_ceiling(t, k);
            assert!((fast - slow).abs() < 1e-9, "K {k}, t {t}: {fast} vs brute force {slow}");
        }
    }
}

#[test]
// 6.28 is the ceiling figure, not an approximation of tau.
#[allow(clippy::approx_constant)]
fn the_old_from_claim_rule_could_not_refute_large_claims() {
    // Issue 28: claim 4 has ceilings 2.97 (K = 1,000), 6.28 (K = 2,000), 3.76 (K = 5,000) under
    // the threshold that maximises the ideal bound at the claim.
    for (k, want) in [(1000u64, 2.97), (2000, 6.28), (5000, 3.76)] {
        let t = claim_maximising_threshold(4.0, DELTA, k, ALPHA).unwrap();
        let c = fixed_threshold_ceiling(t, DELTA, k, ALPHA).unwrap();
        assert!((c - want).abs() < 0.01, "K {k}: old ceiling {c}, issue says {want}");
    }
}

#[test]
fn the_new_from_claim_rule_exceeds_every_claim_it_can_reach() {
    for claim in [1.0, 2.0, 4.0] {
        for k in [500u64, 1000, 2000, 5000] {
            let fc = from_claim_threshold(claim, DELTA, k, ALPHA).unwrap();
            let c = fixed_threshold_ceiling(fc.threshold, DELTA, k, ALPHA).unwrap();
            assert!(fc.design_epsilon.is_some_and(|e| e > claim), "claim {claim}, K {k}: {fc:?}");
            assert!(c > claim, "claim {claim}, K {k}: ceiling {c} at t = {}", fc.threshold);
        }
    }
    // Claim 8 with 500 runs: even perfect separation gives at most ln((1 - d - u) / u) with
    // u = 1 - 0.025^(1/500), about 4.2 < 8: no threshold can refute it.
    let fc = from_claim_threshold(8.0, DELTA, 500, ALPHA).unwrap();
    assert_eq!(fc.design_epsilon, None);
    let p = plan(&Procedure::new(ThresholdChoice::FromClaim, 500, 0.5, 8.0, DELTA, ALPHA).unwrap()).unwrap();
    assert!(!p.can_refute && p.ceiling < 8.0 && p.detectable_epsilon_50.is_none(), "{p:?}");
}

#[test]
fn adaptive_ceilings_are_what_perfect_separation_gives() {
    for k in [10u64, 40, 300] {
        let out: Vec<f64> = (0..k).map(|i| i as f64 / k as f64).collect();
        let inn: Vec<f64> = (0..k).map(|i| 5.0 + i as f64 / k as f64).collect();
        let (b, _) = best_threshold_bonferroni(&inn, &out, DELTA, ALPHA).unwrap();
        let p = plan(&Procedure::new(ThresholdChoice::Bonferroni, k, 0.5, 0.1, DELTA, ALPHA).unwrap()).unwrap();
        assert!((p.ceiling - b.epsilon_lower).abs() < 1e-12, "bonferroni K {k}: {} vs {}", p.ceiling, b.epsilon_lower);
        // Held-out: the threshold chosen on the first half separates the second half perfectly.
        let h = k / 2;
        let o = Outcomes { false_negatives: 0, positives: k - h, false_positives: 0, negatives: k - h };
        let e = epsilon_lower_bound(&o, DELTA, ALPHA).unwrap().epsilon_lower;
        let p = plan(&Procedure::new(ThresholdChoice::HeldOut, k, 0.5, 0.1, DELTA, ALPHA).unwrap()).unwrap();
        assert!((p.ceiling - e).abs() < 1e-12, "held-out K {k}: {} vs {e}", p.ceiling);
    }
}

#[test]
fn fixed_threshold_detection_matches_a_direct_sum() {
    // The plan's 50% detectable epsilon: at its mu the exact detection probability (a double sum
    // over both counts, bounds from the library) is at least 1/2, and just below it is not.
    let (claim, k) = (2.0, 300u64);
    let p = plan(&Procedure::new(ThresholdChoice::FromClaim, k, 0.5, claim, DELTA, ALPHA).unwrap()).unwrap();
    let t = p.threshold.unwrap();
    let direct = |mu: f64| {
        let fp = Binomial::new(normal_cdf(-t), k).unwrap();
        let fnb = Binomial::new(normal_cdf(t - mu), k).unwrap();
        let mut total = 0.0;
        for f in 0..=k {
            let pf = fp.pmf(f);
            if pf < 1e-15 {
                continue;
            }
            for n in 0..=k {
                let o = Outcomes { false_negatives: n, positives: k, false_positives: f, negatives: k };
                if epsilon_lower_bound(&o, DELTA, ALPHA).unwrap().epsilon_lower > claim {
                    total += pf * fnb.pmf(n);
                }
            }
        }
        total
    };
    let e50 = p.detectable_epsilon_50.unwrap();
    let mu = dpaudit::audit::gaussian::mu_for_epsilon(e50, DELTA).unwrap();
    assert!(direct(mu + 1e-3) >= 0.5 - 1e-9, "{}", direct(mu + 1e-3));
    assert!(direct(mu - 1e-3) < 0.5, "{}", direct(mu - 1e-3));
    assert!(e50 > claim && p.detectable_epsilon_90.unwrap() > e50);
}
