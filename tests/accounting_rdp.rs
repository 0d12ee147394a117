//! The RDP accountant against the MPFR oracle, its monotonicity and composition properties,
//! calibration round trips, and the peers' numbers (fixtures/golden/peer_epsilons.json).
//!
//! Nothing here is statistical: every property is deterministic, so no false-failure rate
//! applies (proptest draws inputs; a failure is a real counterexample, persisted under
//! proptest-regressions/).
use dpaudit::accounting::calibration::{max_steps_for_epsilon, noise_multiplier_for_epsilon, EpsilonAccountant};
use dpaudit::accounting::conversion::{epsilon_classic, epsilon_improved, rdp_to_epsilon};
use dpaudit::accounting::rdp::{self, default_orders, rdp_composed, rdp_subsampled_gaussian, RdpAccountant};
use dpaudit::accounting::{exact, Phase};
use dpaudit::Error;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Required agreement between the f64 path and the oracle.
const ORACLE_RELATIVE_TOLERANCE: f64 = 1e-9;
/// Required agreement with Opacus and Google where the two agree with each other.
const PEER_RELATIVE_TOLERANCE: f64 = 1e-3;

fn config(cases: u32, file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}

fn log_uniform(lo: f64, hi: f64) -> impl Strategy<Value = f64> {
    (lo.ln()..=hi.ln()).prop_map(f64::exp)
}

fn q_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![log_uniform(1e-5, 1.0), Just(1.0), 0.45f64..0.55]
}

fn check_against_oracle(q: f64, sigma: f64, order: f64) -> Result<(), TestCaseError> {
    let fast = rdp_subsampled_gaussian(q, sigma, order).unwrap();
    let oracle = exact::rdp_enclosure(q, sigma, order).unwrap();
    let (lo, hi) = oracle.to_f64_bounds();
    let mid = oracle.mid_f64();
    // Never below the oracle's lower end beyond one rounding of the final division (q = 1 is the
    // closed form, rounded to nearest).
    prop_assert!(
        fast >= lo * (1.0 - 2.0 * f64::EPSILON),
        "q={q} sigma={sigma} order={order}: f64 {fast:e} below oracle [{lo:e}, {hi:e}]"
    );
    prop_assert!(
        ((fast - mid) / mid).abs() <= ORACLE_RELATIVE_TOLERANCE,
        "q={q} sigma={sigma} order={order}: f64 {fast:e} vs oracle {mid:e}, rel {:e}",
        (fast - mid) / mid
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(160, "proptest-regressions/accounting_rdp_integer.txt"))]
    #[test]
    fn f64_rdp_matches_oracle_at_integer_orders(q in q_strategy(), sigma in log_uniform(0.3, 50.0), order in 2u32..=256) {
        check_against_oracle(q, sigma, f64::from(order))?;
    }
}

proptest! {
    #![proptest_config(config(160, "proptest-regressions/accounting_rdp_fractional.txt"))]
    #[test]
    fn f64_rdp_matches_oracle_at_fractional_orders(
        q in q_strategy(), sigma in log_uniform(0.3, 50.0),
        order in prop_oneof![1.01f64..1.5, 1.5f64..12.0, 12.0f64..256.0].prop_filter("fractional", |a| a.fract() != 0.0)
    ) {
        check_against_oracle(q, sigma, order)?;
    }
}

#[test]
fn f64_rdp_matches_oracle_at_corners() {
    for &q in &[1e-5, 0.5, 0.5000001, 0.99, 1.0] {
        for &sigma in &[0.3, 50.0] {
            for &order in &[1.01, 1.1, 2.0, 255.5, 256.0] {
                check_against_oracle(q, sigma, order).unwrap();
            }
        }
    }
}

#[test]
fn q_one_is_the_gaussian_mechanism() {
    for &sigma in &[0.3, 1.0, 1.1, 7.0, 50.0] {
        for order in default_orders() {
            assert_eq!(rdp_subsampled_gaussian(1.0, sigma, order).unwrap(), order / (2.0 * sigma * sigma));
        }
    }
    // Known value: sigma = 5, 10 steps, delta = 1e-5 (closed form min over the default orders).
    let e = rdp::epsilon(&[Phase::new(1.0, 5.0, 10).unwrap()], 1e-5).unwrap();
    let expected =
        default_orders().into_iter().map(|a| epsilon_improved(10.0 * a / 50.0, a, 1e-5)).fold(f64::INFINITY, f64::min);
    assert_eq!(e.epsilon, expected);
}

#[test]
fn default_orders_cover_both_peers() {
    let orders = default_orders();
    let opacus = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).chain((12..64).map(f64::from));
    let google =
        (1..100).map(|x| 1.0 + f64::from(x) / 10.0).chain((11..64).map(f64::from)).chain([128.0, 256.0, 512.0, 1024.0]);
    let google_old = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5]
        .into_iter()
        .chain((5..64).map(f64::from))
        .chain([128.0, 256.0, 512.0]);
    for a in opacus.chain(google).chain(google_old) {
        assert!(orders.contains(&a), "{a} missing");
    }
}

#[test]
fn invalid_inputs_are_typed_errors() {
    let bad = [
        (0.0, 1.0, 2.0),
        (-0.1, 1.0, 2.0),
        (1.5, 1.0, 2.0),
        (f64::NAN, 1.0, 2.0),
        (0.1, 0.0, 2.0),
        (0.1, -1.0, 2.0),
        (0.1, f64::NAN, 2.0),
        (0.1, f64::INFINITY, 2.0),
        (0.1, 1.0, 1.0),
        (0.1, 1.0, 0.5),
        (0.1, 1.0, f64::NAN),
        (0.1, 1.0, f64::INFINITY),
    ];
    for (q, s, a) in bad {
        assert!(matches!(rdp_subsampled_gaussian(q, s, a), Err(Error::InvalidParameter { .. })), "{q} {s} {a}");
        assert!(matches!(exact::rdp_enclosure(q, s, a), Err(Error::InvalidParameter { .. })), "{q} {s} {a}");
    }
    let p = [Phase::new(0.01, 1.0, 100).unwrap()];
    for d in [0.0, 1.0, -1.0, f64::NAN] {
        assert!(matches!(rdp::epsilon(&p, d), Err(Error::InvalidParameter { .. })));
        assert!(matches!(exact::verified_epsilon(&p, d, &default_orders()), Err(Error::InvalidParameter { .. })));
        assert!(matches!(rdp_to_epsilon(1.0, 2.0, d), Err(Error::InvalidParameter { .. })));
    }
    assert!(rdp::epsilon(&[], 1e-5).is_err());
    assert!(RdpAccountant::with_orders(&[]).is_err());
    assert!(RdpAccountant::with_orders(&[2.0, 1.0]).is_err());
    let acc = RdpAccountant::default();
    assert!(noise_multiplier_for_epsilon(0.0, 0.01, 100, 1e-5, &acc).is_err());
    assert!(noise_multiplier_for_epsilon(1.0, 0.01, 0, 1e-5, &acc).is_err());
    assert!(max_steps_for_epsilon(f64::NAN, 0.01, 1.0, 1e-5, &acc).is_err());
}

#[test]
fn conversions_match_the_peers_formulas() {
    // Opacus: eps = rdp - (ln delta + ln a)/(a - 1) + ln((a - 1)/a); Mironov: rdp + ln(1/delta)/(a - 1).
    for &(r, a, d) in &[(0.5, 2.0, 1e-5), (3.0, 10.9, 1e-6), (0.01, 63.0, 0.1)] {
        let opacus = r - (f64::ln(d) + f64::ln(a)) / (a - 1.0) + ((a - 1.0) / a).ln();
        assert!((epsilon_improved(r, a, d) - opacus).abs() <= 1e-14 * opacus.abs().max(1.0));
        let mironov = r + (1.0 / d).ln() / (a - 1.0);
        assert!((epsilon_classic(r, a, d) - mironov).abs() <= 1e-14 * mironov);
        let (e, _) = rdp_to_epsilon(r, a, d).unwrap();
        assert_eq!(e, epsilon_improved(r, a, d).min(epsilon_classic(r, a, d)).max(0.0));
    }
}

fn eps(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    rdp::epsilon(&[Phase::new(q, sigma, steps).unwrap()], delta).unwrap().epsilon
}

proptest! {
    #![proptest_config(config(128, "proptest-regressions/accounting_rdp_monotone.txt"))]
    #[test]
    fn epsilon_is_monotone(q in log_uniform(1e-4, 1.0), sigma in log_uniform(0.5, 20.0), steps in 1u64..100_000,
                           delta in log_uniform(1e-10, 0.1), f in 1.01f64..2.0) {
        let e = eps(q, sigma, steps, delta);
        prop_assert!(eps(q, sigma * f, steps, delta) <= e);
        prop_assert!(eps((q * f).min(1.0), sigma, steps, delta) >= e);
        prop_assert!(eps(q, sigma, steps * 2, delta) >= e);
        prop_assert!(eps(q, sigma, steps, delta / f) >= e);
    }

    #[test]
    fn search_finds_the_grid_minimum(q in log_uniform(1e-4, 1.0), sigma in log_uniform(0.5, 20.0),
                                     steps in 1u64..100_000, delta in log_uniform(1e-10, 0.1)) {
        let p = [Phase::new(q, sigma, steps).unwrap()];
        let acc = RdpAccountant::default();
        let fast = acc.epsilon(&p, delta).unwrap();
        let all = acc.epsilon_all_orders(&p, delta).unwrap();
        prop_assert!(fast.epsilon <= all.epsilon * (1.0 + 1e-12), "{fast:?} vs {all:?}");
    }

    #[test]
    fn composition_adds_rdp(q1 in log_uniform(1e-4, 1.0), s1 in log_uniform(0.5, 20.0), t1 in 1u64..10_000,
                            q2 in log_uniform(1e-4, 1.0), s2 in log_uniform(0.5, 20.0), t2 in 1u64..10_000,
                            order in prop_oneof![1.01f64..64.0, (2u32..64).prop_map(f64::from)]) {
        let p1 = Phase::new(q1, s1, t1).unwrap();
        let p2 = Phase::new(q2, s2, t2).unwrap();
        let both = rdp_composed(&[p1, p2], order).unwrap();
        let sum = t1 as f64 * rdp_subsampled_gaussian(q1, s1, order).unwrap() + t2 as f64 * rdp_subsampled_gaussian(q2, s2, order).unwrap();
        prop_assert!((both - sum).abs() <= 1e-14 * sum);
        // Splitting a phase in two changes nothing.
        let split = rdp::epsilon(&[Phase { steps: t1, ..p1 }, Phase { steps: t1, ..p1 }], 1e-5).unwrap().epsilon;
        let whole = eps(q1, s1, 2 * t1, 1e-5);
        prop_assert!((split - whole).abs() <= 1e-12 * whole.max(1e-300));
    }
}

proptest! {
    #![proptest_config(config(24, "proptest-regressions/accounting_rdp_calibration.txt"))]
    #[test]
    fn calibration_round_trips(target in 0.3f64..10.0, q in log_uniform(1e-3, 0.1), steps in 10u64..10_000) {
        let acc = RdpAccountant::default();
        let c = noise_multiplier_for_epsilon(target, q, steps, 1e-5, &acc).unwrap();
        let e = eps(q, c.noise_multiplier, steps, 1e-5);
        prop_assert_eq!(e, c.epsilon);
        prop_assert!(e <= target);
        // Close: 1e-6 less noise (the bisection's resolution, doubled) breaks the target.
        prop_assert!(eps(q, c.noise_multiplier * (1.0 - 2e-6), steps, 1e-5) > target || c.noise_multiplier <= 1e-3);
        prop_assert!(e >= target * 0.99);
        let t = max_steps_for_epsilon(target, q, c.noise_multiplier, 1e-5, &acc).unwrap();
        prop_assert!(t >= steps);
        prop_assert!(eps(q, c.noise_multiplier, t, 1e-5) <= target);
        prop_assert!(eps(q, c.noise_multiplier, t + 1, 1e-5) > target);
    }
}

#[test]
fn calibration_known_point() {
    // DP-SGD on MNIST-sized data: q = 256/60000, 10_000 steps, delta = 1e-5, target 2.1615948...
    // (the peers' epsilon at sigma = 1.1): calibration must give sigma within 0.1% of 1.1.
    let acc = RdpAccountant::default();
    assert_eq!(acc.name(), "rdp");
    let c = noise_multiplier_for_epsilon(2.1615948269075744, 256.0 / 60000.0, 10_000, 1e-5, &acc).unwrap();
    assert!((c.noise_multiplier - 1.1).abs() < 1.1e-3, "{c:?}");
}

#[derive(serde::Deserialize)]
struct PeerPoint {
    command: String,
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    opacus_rdp: f64,
    google_rdp: f64,
}

#[derive(serde::Deserialize)]
struct PeerFixture {
    points: Vec<PeerPoint>,
}

#[test]
fn rdp_epsilon_agrees_with_peers_and_oracle() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/golden/peer_epsilons.json")).unwrap();
    let fixture: PeerFixture = serde_json::from_str(&text).unwrap();
    assert!(fixture.points.len() >= 5);
    for p in &fixture.points {
        let phases = [Phase::new(p.q, p.sigma, p.steps).unwrap()];
        let ours = rdp::epsilon(&phases, p.delta).unwrap();
        let verified = exact::verified_epsilon(&phases, p.delta, &default_orders()).unwrap();
        // The oracle's rigorous bound is at least ours up to our margin, and close to it.
        assert!(verified.epsilon >= ours.epsilon * (1.0 - 1e-9), "{}: {verified:?} vs {ours:?}", p.command);
        assert!(verified.epsilon <= ours.epsilon * (1.0 + 1e-8), "{}: {verified:?} vs {ours:?}", p.command);
        println!(
            "q={} sigma={} steps={} delta={}: ours {} (order {}), verified {}, opacus {}, google {}",
            p.q, p.sigma, p.steps, p.delta, ours.epsilon, ours.order, verified.epsilon, p.opacus_rdp, p.google_rdp
        );
        let peers_agree =
            (p.opacus_rdp - p.google_rdp).abs() <= PEER_RELATIVE_TOLERANCE * p.opacus_rdp.min(p.google_rdp);
        if peers_agree {
            for peer in [p.opacus_rdp, p.google_rdp] {
                assert!(
                    (ours.epsilon - peer).abs() <= PEER_RELATIVE_TOLERANCE * peer,
                    "{}: ours {} peer {peer}",
                    p.command,
                    ours.epsilon
                );
            }
        } else {
            // The peers disagree (truncated fractional series, different order grids): ours, which
            // the oracle verifies above, must be no larger than the smaller of theirs beyond 0.1%.
            assert!(
                ours.epsilon <= p.opacus_rdp.min(p.google_rdp) * (1.0 + PEER_RELATIVE_TOLERANCE),
                "{}: ours {}",
                p.command,
                ours.epsilon
            );
        }
    }
}

#[test]
fn verified_epsilon_brackets_the_f64_accountant() {
    // The oracle's speed is measured in benches/accountant.rs, not asserted here.
    let phases = [Phase::new(256.0 / 60000.0, 1.1, 10_000).unwrap()];
    let v = exact::verified_epsilon(&phases, 1e-5, &default_orders()).unwrap();
    let ours = rdp::epsilon(&phases, 1e-5).unwrap();
    assert!(v.epsilon >= ours.epsilon * (1.0 - 1e-9) && v.epsilon <= ours.epsilon * (1.0 + 1e-8));
}
