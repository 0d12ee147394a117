//! The PLD accountant's automatic grid on random problems (issue 28, section 4): every valid
//! input answered, never below the true epsilon, and close to a fine-grid reference.
//!
//! Cases are drawn as in the issue: q log-uniform in [1e-4, 0.5] (every tenth case q = 1), sigma
//! log-uniform in [0.4, 20], steps log-uniform in [1, 100,000], delta log-uniform in
//! [1e-10, 1e-3], from a fixed ChaCha8 seed. Per case:
//! - `PldAccountant::default()` (the automatic grid) must answer;
//! - it must not be below a lower reference: the exact Gaussian epsilon for q = 1 (where it is
//!   below 512), otherwise the rounded-down PLD (`epsilon_lower_bound`, proof section 8) on a
//!   grid 10x finer (a valid but looser reference: rounding down costs up to `T h / 2`);
//! - it must be within [`REL_GAP`] relative, or [`ABS_GAP`] absolute, of the same accountant on a
//!   grid 10x finer than the one it chose (a fixed grid, `PldAccountant::new`; 5x, 3x or 2x when
//!   the 10x window exceeds the fixed grid's 2^25 points).
//!
//! `auto_grid_sample_full` (ignored; `benches/pld_sample.sh` runs it) draws 160 cases;
//! `auto_grid_sample_ci` is a proptest with a fixed seed drawing 12 cases the same way with steps
//! up to 10,000 (failures saved in `proptest-regressions/accounting_pld_sample.txt`); the fixed
//! seeds make neither flaky. `auto_grid_named_cases` checks the three named problems.
use dpaudit::accounting::pld::PldAccountant;
use dpaudit::accounting::Phase;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::function::erf::erfc;
use std::time::Instant;

/// Largest relative gap to the fine-grid reference (the bar).
const REL_GAP: f64 = 0.01;
/// ... or largest absolute gap.
const ABS_GAP: f64 = 1e-4;
/// The reference grid is this much finer than the automatic one ...
const REFINE: f64 = 10.0;
/// ... or, when that window is over the fixed grid's limit, the first of these that fits.
const REFINE_STEPS: [f64; 4] = [REFINE, 5.0, 3.0, 2.0];

fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Exact epsilon of T Gaussian steps with noise s (one Gaussian with noise s / sqrt(T)), by
/// bisection on Balle and Wang's delta; the lower end of the final bracket (so never above).
/// `None` above epsilon 512, where `e^eps` times an underflowing tail is not computable in f64.
fn gaussian_epsilon(s: f64, steps: u64, delta: f64) -> Option<f64> {
    let s = s / (steps as f64).sqrt();
    let d = |eps: f64| normal_sf(eps * s - 1.0 / (2.0 * s)) - eps.exp() * normal_sf(eps * s + 1.0 / (2.0 * s));
    if d(0.0) <= delta {
        return Some(0.0);
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while d(hi) > delta {
        hi *= 2.0;
        if hi > 512.0 {
            return None;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if d(mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

#[derive(Debug, Clone, Copy)]
struct Case {
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (rng.gen::<f64>() * (hi.ln() - lo.ln()) + lo.ln()).exp()
}

fn draw(seed: u64, count: usize, max_steps: f64) -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let q = log_uniform(&mut rng, 1e-4, 0.5);
            let sigma = log_uniform(&mut rng, 0.4, 20.0);
            let steps = log_uniform(&mut rng, 1.0, max_steps + 1.0).floor().min(max_steps) as u64;
            let delta = log_uniform(&mut rng, 1e-10, 1e-3);
            Case { q: if i % 10 == 9 { 1.0 } else { q }, sigma, steps, delta }
        })
        .collect()
}

/// What one case gave.
struct Outcome {
    auto: Result<f64, String>,
    h: f64,
    fine: Result<f64, String>,
    lower: Result<f64, String>,
    seconds: f64,
}

fn run_case(c: Case) -> Outcome {
    let phases = [Phase::new(c.q, c.sigma, c.steps).unwrap()];
    let start = Instant::now();
    let auto = PldAccountant::default().epsilon(&phases, c.delta);
    let seconds = start.elapsed().as_secs_f64();
    let h = match &auto {
        Ok(e) => e.discretization,
        Err(_) => PldAccountant::default().grid_width(&phases).unwrap_or(f64::NAN),
    };
    // The finest of h / 10, h / 5, h / 3, h / 2 whose window fits the fixed grid's limit.
    let mut fine = Err("no reference grid".to_string());
    let mut fine_acc = PldAccountant::new((h / REFINE).max(1e-7));
    for refine in REFINE_STEPS {
        fine_acc = PldAccountant::new((h / refine).max(1e-7));
        fine = fine_acc
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|a| a.epsilon(&phases, c.delta).map(|e| e.epsilon).map_err(|e| e.to_string()));
        if fine.is_ok() {
            break;
        }
    }
    let exact = if c.q == 1.0 { gaussian_epsilon(c.sigma, c.steps, c.delta) } else { None };
    let lower = if let Some(e) = exact {
        Ok(e)
    } else {
        fine_acc
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|a| a.epsilon_lower_bound(&phases, c.delta).map_err(|e| e.to_string()))
    };
    Outcome { auto: auto.map(|e| e.epsilon).map_err(|e| e.to_string()), h, fine, lower, seconds }
}

/// Runs the cases, prints one line each and a summary, and returns the failures.
fn check(cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    let (mut errors, mut under, mut far, mut worst_rel, mut total_s, mut max_s) = (0, 0, 0, 0.0f64, 0.0, 0.0f64);
    let started = Instant::now();
    for (i, &c) in cases.iter().enumerate() {
        let o = run_case(c);
        total_s += o.seconds;
        max_s = max_s.max(o.seconds);
        let line = format!(
            "{i:3} q={:.4e} sigma={:.3} T={} delta={:.2e} h={:.3e} auto={:?} fine={:?} lower={:?} {:.3}s",
            c.q, c.sigma, c.steps, c.delta, o.h, o.auto, o.fine, o.lower, o.seconds
        );
        println!("{line}");
        let auto = match o.auto {
            Ok(e) => e,
            Err(e) => {
                errors += 1;
                failures.push(format!("error: {line}: {e}"));
                continue;
            }
        };
        match o.lower {
            Ok(l) if auto < l => {
                under += 1;
                failures.push(format!("under-report: {line}"));
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("lower reference failed: {line}: {e}")),
        }
        match o.fine {
            Ok(f) => {
                let gap = auto - f;
                let rel = if f > 0.0 { gap / f } else { 0.0 };
                if gap > ABS_GAP {
                    worst_rel = worst_rel.max(rel);
                }
                if gap > ABS_GAP && rel > REL_GAP {
                    far += 1;
                    failures.push(format!("gap {rel:.4}: {line}"));
                }
            }
            Err(e) => failures.push(format!("fine reference failed: {line}: {e}")),
        }
    }
    println!(
        "cases {}, errors {errors}, under-reports {under}, beyond 1%/1e-4 of the fine grid {far}, worst relative gap \
         (cases beyond 1e-4 absolute) {worst_rel:.5}; automatic accountant {total_s:.1} s in all, slowest case \
         {max_s:.2} s; whole check {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    failures
}

#[test]
#[ignore = "about 160 cases with 10x finer references; run by benches/pld_sample.sh"]
fn auto_grid_sample_full() {
    let failures = check(&draw(0x28_04, 160, 100_000.0));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn log_uniform_strategy(lo: f64, hi: f64) -> impl Strategy<Value = f64> {
    (lo.ln()..=hi.ln()).prop_map(f64::exp)
}

proptest! {
    // Fixed seed: the same 12 cases on every run (not flaky); failures are saved to the file.
    #![proptest_config(ProptestConfig {
        cases: 12,
        rng_seed: RngSeed::Fixed(0x28_05),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/accounting_pld_sample.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn auto_grid_sample_ci(
        q in log_uniform_strategy(1e-4, 0.5),
        q_is_one in proptest::bool::weighted(0.1),
        sigma in log_uniform_strategy(0.4, 20.0),
        steps in log_uniform_strategy(1.0, 10_000.0),
        delta in log_uniform_strategy(1e-10, 1e-3),
    ) {
        let case = Case { q: if q_is_one { 1.0 } else { q }, sigma, steps: steps.round() as u64, delta };
        let failures = check(&[case]);
        prop_assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[test]
fn auto_grid_named_cases() {
    // The named problems: small delta (the error terms once used it all), small epsilon
    // (h = 1e-4 was 2.2x too pessimistic), q = 1 with sigma 0.4 (the window was too wide).
    let cases = [
        Case { q: 0.0275, sigma: 14.0, steps: 15_152, delta: 1.6e-9 },
        Case { q: 2.9e-4, sigma: 16.3, steps: 32_209, delta: 1.3e-6 },
        Case { q: 1.0, sigma: 0.4, steps: 100_000, delta: 1e-5 },
    ];
    let failures = check(&cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
