//! Integration tests of the PLD accountant (`core/src/accounting/pld.rs`, proof
//! `proofs/accounting/pld.md`).
use dpaudit::accounting::pld::{Construction, Direction, Discretization, PldAccountant};
use dpaudit::accounting::Phase;
use dpaudit::Error;
use proptest::prelude::*;
use statrs::function::erf::erfc;

/// Largest accepted excess of the PLD epsilon over the exact Gaussian epsilon (q = 1), relative.
/// The connect-the-dots discretisation is second-order in h; with h = 1e-4 the excess is far below.
const EXACT_EXCESS: f64 = 1e-3;
/// Accuracy rule against Google's dp_accounting PLD: no lower than -0.5%, no higher than +1%.
const GOOGLE_BELOW: f64 = 0.005;
const GOOGLE_ABOVE: f64 = 0.01;
/// Slack for the monotonicity properties (relative + absolute): two PLD epsilons on different
/// grids may differ by discretisation noise; the bounds are not claimed monotone below it.
const MONOTONE_REL: f64 = 2e-3;
const MONOTONE_ABS: f64 = 1e-3;

fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Exact delta of the Gaussian mechanism with sensitivity 1 and noise s (Balle and Wang 2018).
fn gaussian_delta(s: f64, eps: f64) -> f64 {
    normal_sf(eps * s - 1.0 / (2.0 * s)) - eps.exp() * normal_sf(eps * s + 1.0 / (2.0 * s))
}

/// Exact epsilon of T Gaussian steps (= one Gaussian with noise s / sqrt(T)), by bisection.
fn gaussian_epsilon(s: f64, steps: u64, delta: f64) -> f64 {
    let s = s / (steps as f64).sqrt();
    let (mut lo, mut hi) = (0.0, 1.0);
    while gaussian_delta(s, hi) > delta {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if gaussian_delta(s, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// LOCAL REFERENCE, NOT THE CRATE'S RDP ACCOUNTANT: RDP of the Poisson-subsampled Gaussian at
/// integer orders by the exact binomial expansion (Mironov, Talwar and Zhang 2019, section 3.3),
/// then the classic conversion eps = min_a T RDP(a) + ln(1/delta) / (a - 1) (Mironov 2017).
fn local_rdp_epsilon(q: f64, s: f64, steps: u64, delta: f64) -> f64 {
    let mut best = f64::INFINITY;
    for a in 2u32..=512 {
        let af = f64::from(a);
        let mut terms = Vec::with_capacity(a as usize + 1);
        let mut ln_binom = 0.0;
        for k in 0..=a {
            let kf = f64::from(k);
            if k > 0 {
                ln_binom += (af - kf + 1.0).ln() - kf.ln();
            }
            let ln_q_part = if q < 1.0 {
                (af - kf) * (-q).ln_1p()
            } else if k == a {
                0.0
            } else {
                f64::NEG_INFINITY
            };
            terms.push(ln_binom + ln_q_part + kf * q.ln() + (kf * kf - kf) / (2.0 * s * s));
        }
        let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ln_a = top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
        let eps = steps as f64 * ln_a / (af - 1.0) + (1.0 / delta).ln() / (af - 1.0);
        best = best.min(eps);
    }
    best
}

fn eps(acc: &PldAccountant, q: f64, s: f64, steps: u64, delta: f64) -> f64 {
    acc.epsilon(&[Phase::new(q, s, steps).unwrap()], delta).unwrap().epsilon
}

#[test]
fn pld_dominates_exact_gaussian() {
    let acc = PldAccountant::default();
    for (s, steps, delta) in [(5.0, 10, 1e-5), (1.0, 1, 1e-5), (2.0, 100, 1e-6), (0.8, 3, 1e-3)] {
        let exact = gaussian_epsilon(s, steps, delta);
        let pld = eps(&acc, 1.0, s, steps, delta);
        assert!(pld >= exact, "s={s} T={steps}: PLD {pld} below exact {exact}");
        assert!(pld <= exact * (1.0 + EXACT_EXCESS), "s={s} T={steps}: PLD {pld} vs exact {exact}");
    }
}

#[test]
fn pld_delta_dominates_exact_gaussian() {
    let acc = PldAccountant::default();
    for (s, steps, e) in [(5.0, 10, 1.0), (1.0, 1, 2.0), (2.0, 100, 3.0)] {
        let exact = gaussian_delta(s / (steps as f64).sqrt(), e);
        let pld = acc.delta(&[Phase::new(1.0, s, steps).unwrap()], e).unwrap();
        assert!(pld >= exact, "s={s} T={steps}: PLD delta {pld} below exact {exact}");
        assert!(pld <= exact * 1.01 + 1e-12, "s={s} T={steps}: PLD delta {pld} vs exact {exact}");
    }
}

#[derive(serde::Deserialize)]
struct Golden {
    cases: Vec<GoldenCase>,
}

#[derive(serde::Deserialize)]
struct GoldenCase {
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    google_pld: f64,
}

#[test]
fn pld_matches_google_golden() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/golden/pld_google.json")).unwrap();
    let golden: Golden = serde_json::from_str(&text).unwrap();
    assert!(golden.cases.len() >= 2);
    let acc = PldAccountant::default();
    for c in &golden.cases {
        let ours = eps(&acc, c.q, c.sigma, c.steps, c.delta);
        let g = c.google_pld;
        assert!(
            ours >= g * (1.0 - GOOGLE_BELOW) && ours <= g * (1.0 + GOOGLE_ABOVE),
            "q={} s={} T={}: ours {ours} vs google {g}",
            c.q,
            c.sigma,
            c.steps
        );
    }
}

#[test]
fn pld_below_rdp() {
    let acc = PldAccountant::default();
    for (q, s, steps, delta) in [(256.0 / 60_000.0, 1.1, 1000, 1e-5), (0.1, 2.0, 100, 1e-5), (1.0, 5.0, 10, 1e-5)] {
        let pld = eps(&acc, q, s, steps, delta);
        let rdp = local_rdp_epsilon(q, s, steps, delta);
        assert!(pld <= rdp, "q={q} s={s} T={steps}: PLD {pld} above RDP {rdp}");
    }
}

/// Against the crate's RDP accountant (`core/src/accounting/rdp.rs`): the PLD epsilon is tight, the
/// RDP one is an upper bound, so PLD must not exceed it (the PLD error terms are charged to delta,
/// so no epsilon slack is needed).
#[test]
fn pld_below_crate_rdp() {
    let pld = PldAccountant::default();
    let rdp = dpaudit::accounting::rdp::RdpAccountant::default();
    let cases = [
        vec![Phase::new(256.0 / 60_000.0, 1.1, 1000).unwrap()],
        vec![Phase::new(0.1, 2.0, 100).unwrap()],
        vec![Phase::new(1.0, 5.0, 10).unwrap()],
        vec![Phase::new(0.01, 0.8, 100).unwrap(), Phase::new(0.05, 2.0, 300).unwrap()],
    ];
    for phases in &cases {
        let p = pld.epsilon(phases, 1e-5).unwrap().epsilon;
        let r = rdp.epsilon(phases, 1e-5).unwrap().epsilon;
        assert!(p <= r, "{phases:?}: PLD {p} above RDP {r}");
    }
}

#[test]
fn heterogeneous_phases_compose() {
    let acc = PldAccountant::default();
    let q = 0.01;
    let whole = eps(&acc, q, 1.0, 300, 1e-5);
    let split =
        acc.epsilon(&[Phase::new(q, 1.0, 100).unwrap(), Phase::new(q, 1.0, 200).unwrap()], 1e-5).unwrap().epsilon;
    assert!((whole - split).abs() <= 1e-6 * whole, "{whole} vs {split}");
    let mixed =
        acc.epsilon(&[Phase::new(q, 1.0, 100).unwrap(), Phase::new(2.0 * q, 1.5, 200).unwrap()], 1e-5).unwrap().epsilon;
    let low = eps(&acc, q, 1.0, 100, 1e-5).max(eps(&acc, 2.0 * q, 1.5, 200, 1e-5));
    assert!(mixed >= low, "{mixed} < {low}");
}

#[test]
fn result_is_traceable_and_serialisable() {
    let acc = PldAccountant::default();
    let phases = [Phase::new(256.0 / 60_000.0, 1.1, 1000).unwrap()];
    let r = acc.epsilon(&phases, 1e-5).unwrap();
    // The automatic grid is recorded, and a fixed-grid accountant at it recomputes the same epsilon
    // (what `cert verify --recompute` relies on).
    assert_eq!(r.discretization_choice, Discretization::Auto);
    assert_eq!(r.discretization, acc.grid_width(&phases).unwrap());
    let again = PldAccountant::new(r.discretization).unwrap().epsilon(&phases, 1e-5).unwrap();
    assert_eq!(again.epsilon, r.epsilon);
    assert_eq!(r.worse_direction, if r.remove.epsilon >= r.add.epsilon { Direction::Remove } else { Direction::Add });
    for d in [r.remove, r.add] {
        assert!(d.delta_charged < 1e-3 * r.delta, "{d:?}");
        assert!(d.window_low <= d.epsilon && d.epsilon < d.window_high, "{d:?}");
    }
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"worse_direction\""));
    let back: dpaudit::accounting::pld::PldEpsilon = serde_json::from_str(&json).unwrap();
    // serde_json's default float parser may move the last ulp.
    assert!((back.epsilon - r.epsilon).abs() <= 4.0 * f64::EPSILON * r.epsilon);
    assert_eq!((back.worse_direction, back.remove.window_points), (r.worse_direction, r.remove.window_points));
}

#[test]
fn invalid_input_is_a_typed_error() {
    let acc = PldAccountant::default();
    let ok = Phase { sampling_rate: 0.1, noise_multiplier: 1.0, steps: 10 };
    let bad_phases = [
        Phase { sampling_rate: 0.0, ..ok },
        Phase { sampling_rate: 1.5, ..ok },
        Phase { sampling_rate: f64::NAN, ..ok },
        Phase { noise_multiplier: 0.0, ..ok },
        Phase { noise_multiplier: f64::INFINITY, ..ok },
    ];
    for p in bad_phases {
        assert!(matches!(acc.epsilon(&[p], 1e-5), Err(Error::InvalidParameter { .. })), "{p:?}");
        assert!(matches!(acc.delta(&[p], 1.0), Err(Error::InvalidParameter { .. })), "{p:?}");
    }
    assert!(matches!(acc.epsilon(&[], 1e-5), Err(Error::InvalidParameter { .. })));
    for d in [0.0, 1.0, -1.0, f64::NAN] {
        assert!(matches!(acc.epsilon(&[ok], d), Err(Error::InvalidParameter { .. })), "{d}");
    }
    assert!(matches!(acc.delta(&[ok], f64::NAN), Err(Error::InvalidParameter { .. })));
    for h in [0.0, -1e-4, f64::NAN, 1.0, 1e-9] {
        assert!(matches!(PldAccountant::new(h), Err(Error::InvalidParameter { .. })), "{h}");
    }
    assert!(matches!(acc.with_tail_mass(0.5), Err(Error::InvalidParameter { .. })));
}

#[test]
fn impossible_cases_are_numerical_errors() {
    // Tiny sigma with a fine grid: the per-step loss range needs too many points.
    let acc = PldAccountant::new(1e-7).unwrap();
    let r = acc.epsilon(&[Phase::new(1.0, 0.05, 10).unwrap()], 1e-5);
    assert!(matches!(r, Err(Error::Numerical { .. })), "{r:?}");
    // Delta below what the charged error terms allow.
    let r = PldAccountant::default().epsilon(&[Phase::new(0.1, 1.0, 10).unwrap()], 1e-300);
    assert!(matches!(r, Err(Error::Numerical { .. })), "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn epsilon_monotone(
        q in 0.001f64..1.0,
        s in 0.8f64..4.0,
        steps in 1u64..400,
        delta in 1e-8f64..1e-3,
    ) {
        let acc = PldAccountant::new(1e-3).unwrap();
        let base = eps(&acc, q, s, steps, delta);
        let slack = |e: f64| e * MONOTONE_REL + MONOTONE_ABS;
        // Down in sigma.
        let more_noise = eps(&acc, q, s * 1.2, steps, delta);
        prop_assert!(more_noise <= base + slack(base), "sigma: {} > {}", more_noise, base);
        // Up in q.
        let more_q = eps(&acc, (q * 1.5).min(1.0), s, steps, delta);
        prop_assert!(more_q >= base - slack(base), "q: {} < {}", more_q, base);
        // Up in steps.
        let more_steps = eps(&acc, q, s, steps * 2, delta);
        prop_assert!(more_steps >= base - slack(base), "steps: {} < {}", more_steps, base);
        // Down in delta.
        let more_delta = eps(&acc, q, s, steps, delta * 10.0);
        prop_assert!(more_delta <= base + slack(base), "delta: {} > {}", more_delta, base);
    }

    #[test]
    fn epsilon_never_below_exact_for_q1(s in 0.8f64..8.0, steps in 1u64..200, delta in 1e-9f64..1e-2) {
        let acc = PldAccountant::new(1e-3).unwrap();
        let pld = eps(&acc, 1.0, s, steps, delta);
        let exact = gaussian_epsilon(s, steps, delta);
        prop_assert!(pld >= exact, "PLD {} below exact {}", pld, exact);
    }
}

#[test]
fn calibration_with_pld_round_trips() {
    use dpaudit::accounting::calibration::noise_multiplier_for_epsilon;
    let pld = PldAccountant::default();
    let (q, steps, delta, target) = (0.01, 1000, 1e-5, 2.0);
    let cal = noise_multiplier_for_epsilon(target, q, steps, delta, &pld).unwrap();
    let eps = pld.epsilon(&[Phase::new(q, cal.noise_multiplier, steps).unwrap()], delta).unwrap().epsilon;
    assert!(eps <= target, "calibrated sigma {} gives epsilon {eps} > {target}", cal.noise_multiplier);
    assert!(eps > 0.99 * target, "calibration should be tight: epsilon {eps} for target {target}");
    // PLD is tighter than RDP, so it needs less noise for the same target.
    let rdp_cal =
        noise_multiplier_for_epsilon(target, q, steps, delta, &dpaudit::accounting::rdp::RdpAccountant::default())
            .unwrap();
    assert!(cal.noise_multiplier < rdp_cal.noise_multiplier);
}

#[test]
fn lower_bound_brackets_exact_gaussian() {
    // Rounded-down PLD (proof section 8) <= exact <= connect-the-dots PLD, on both kinds of grid.
    for acc in [PldAccountant::default(), PldAccountant::new(1e-3).unwrap()] {
        for (s, steps, delta) in [(5.0, 10, 1e-5), (1.0, 1, 1e-5), (2.0, 100, 1e-9), (0.8, 3, 1e-3)] {
            let phases = [Phase::new(1.0, s, steps).unwrap()];
            let exact = gaussian_epsilon(s, steps, delta);
            let lower = acc.epsilon_lower_bound(&phases, delta).unwrap();
            let upper = acc.epsilon(&phases, delta).unwrap().epsilon;
            assert!(lower <= exact && exact <= upper, "s={s} T={steps}: {lower} <= {exact} <= {upper}");
        }
    }
}

#[test]
fn discretization_parses_auto_and_widths() {
    assert_eq!("auto".parse::<Discretization>().unwrap(), Discretization::Auto);
    assert_eq!("1e-4".parse::<Discretization>().unwrap(), Discretization::Fixed(1e-4));
    for bad in ["", "fine", "0", "1", "1e-9", "NaN"] {
        assert!(matches!(bad.parse::<Discretization>(), Err(Error::InvalidParameter { .. })), "{bad:?}");
    }
    assert_eq!(PldAccountant::default(), PldAccountant::auto());
    assert_eq!(PldAccountant::new(1e-3).unwrap().fixed_width(), Some(1e-3));
}

#[test]
fn auto_grid_answers_small_delta_and_wide_windows() {
    // The failures at h = 1e-4: the FFT error term used the whole delta (small delta, many
    // steps) or the window needed too many points (q = 1, sigma 0.4). The automatic grid answers,
    // and the charged error terms stay a small share of delta.
    let acc = PldAccountant::default();
    for (q, s, steps, delta) in [(0.0275, 14.0, 15_152, 1.6e-9), (1.0, 0.4, 100_000, 1e-5), (0.01, 1.0, 100_000, 1e-10)]
    {
        let r = acc.epsilon(&[Phase::new(q, s, steps).unwrap()], delta).unwrap();
        for d in [r.remove, r.add] {
            assert!(d.delta_charged < 1e-3 * delta, "q={q} s={s} T={steps}: {d:?}");
        }
    }
}

/// A rigorous lower bound on the exact epsilon of `steps` Gaussian steps (q = 1) that needs no
/// `e^eps` (so it works where eps is in the thousands): with `s` the composed noise,
/// `delta(eps) = P(Z > z1) - e^eps P(Z > z0)`, `z1 = eps s - 1/(2s)`, `z0 = z1 + 1/s`, and
/// `e^eps phi(z0) = phi(z1)`; the Mills bound `P(Z > z0) <= phi(z0) / z0` gives
/// `delta(eps) >= P(Z > z1) - phi(z1) / z0`. Any eps where that is above delta is below the
/// exact epsilon; bisection keeps such a point.
fn gaussian_epsilon_lower(s: f64, steps: u64, delta: f64) -> f64 {
    let s = s / (steps as f64).sqrt();
    let lower_delta = |eps: f64| {
        let z1 = eps * s - 1.0 / (2.0 * s);
        let z0 = z1 + 1.0 / s;
        let phi = (-0.5 * z1 * z1).exp() / (2.0 * std::f64::consts::PI).sqrt();
        normal_sf(z1) - phi / z0
    };
    let (mut lo, mut hi) = (0.0, 1.0);
    assert!(lower_delta(lo) > delta);
    while lower_delta(hi) > delta {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if lower_delta(mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[test]
fn small_noise_answers_at_least_the_lower_bounds() {
    // The reported failures (q = 0.128, T = 8, delta = 1e-5): "pmf mass 1.24 exceeds 1" at
    // s = 0.02, 0.01 (e^eps overflowed in the hockey-stick values past loss 709, and the curve fell
    // from q to 0 there), and "needs too many points" at s = 0.001. The automatic grid answers,
    // connect-the-dots where its grid fits and the losses rounded up (proof section 9) where not,
    // and the answer is at least the rigorous rounded-down lower bound (proof section 8), whose
    // masses come from the thresholds, not from the hockey-stick values.
    let (q, steps, delta) = (0.128, 8, 1e-5);
    for (s, construction) in
        [(0.05, Construction::ConnectTheDots), (0.02, Construction::ConnectTheDots), (0.001, Construction::RoundedUp)]
    {
        let phases = [Phase::new(q, s, steps).unwrap()];
        let r = PldAccountant::default().epsilon(&phases, delta).unwrap();
        let lower = PldAccountant::default().epsilon_lower_bound(&phases, delta).unwrap();
        assert_eq!(r.construction, construction, "s={s}");
        assert!(r.epsilon >= lower, "s={s}: {} below the lower bound {lower}", r.epsilon);
        // At least 6 of the 8 steps are sampled with probability 9e-5 > delta, each adding a loss
        // of about 1 / (2 s^2): a floor that a curve missing the sampled component would break.
        assert!(lower > 5.0 / (2.0 * s * s), "s={s}: lower bound {lower}");
        // The recorded construction and width recompute the same epsilon.
        let again = match r.construction {
            Construction::ConnectTheDots => PldAccountant::new(r.discretization).unwrap(),
            Construction::RoundedUp => PldAccountant::rounded_up(r.discretization).unwrap(),
        };
        assert_eq!(again.epsilon(&phases, delta).unwrap().epsilon, r.epsilon, "s={s}");
    }
    // The user-fixed grids that failed at s = 0.02 (mass 2.2 at h = 0.1, 13.7 at h = 0.01).
    let phases = [Phase::new(q, 0.02, steps).unwrap()];
    let lower = PldAccountant::new(0.01).unwrap().epsilon_lower_bound(&phases, delta).unwrap();
    for h in [0.1, 0.01] {
        let e = PldAccountant::new(h).unwrap().epsilon(&phases, delta).unwrap().epsilon;
        assert!(e >= lower, "h={h}: {e} below {lower}");
    }
    // q = 1 against the closed form's rigorous lower bound, both constructions.
    for (s, steps) in [(0.02, 8), (0.001, 3)] {
        let phases = [Phase::new(1.0, s, steps).unwrap()];
        let exact_lower = gaussian_epsilon_lower(s, steps, delta);
        let r = PldAccountant::default().epsilon(&phases, delta).unwrap();
        assert!(r.epsilon >= exact_lower, "q=1 s={s}: {} below {exact_lower}", r.epsilon);
        // And not absurdly loose: the rounded-up grid moves each step's loss up by at most h.
        assert!(r.epsilon <= exact_lower * 1.01 + steps as f64 * r.discretization, "q=1 s={s}: {r:?}");
    }
}

#[test]
fn noise_beyond_f64_is_a_clear_error() {
    // The loss range 1 / (2 s^2) overflows f64: epsilon is astronomically large, and the typed error
    // says so rather than a number.
    let r = PldAccountant::default().epsilon(&[Phase::new(0.5, 1e-160, 3).unwrap()], 1e-5);
    match r {
        Err(Error::Numerical { .. }) => assert!(r.unwrap_err().to_string().contains("astronomically")),
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Small noise: the automatic grid always answers, never below the rounded-down lower bound.
    #[test]
    fn auto_grid_answers_small_noise_above_lower_bound(
        s in 0.005f64..0.3,
        q in 0.01f64..1.0,
        steps in 1u64..20,
        delta in 1e-9f64..1e-3,
    ) {
        let phases = [Phase::new(q, s, steps).unwrap()];
        let r = PldAccountant::default().epsilon(&phases, delta);
        prop_assert!(r.is_ok(), "{:?}", r);
        let e = r.unwrap().epsilon;
        let lower = PldAccountant::default().epsilon_lower_bound(&phases, delta).unwrap();
        prop_assert!(e.is_finite() && e >= lower, "epsilon {} below the lower bound {}", e, lower);
    }
}
