//! Property-test building blocks for users' own `cargo test` suites on DP code: proptest
//! strategies for mechanism parameters, canaries and adjacent dataset pairs, and assertions for
//! the three properties a DP-SGD deployment must keep: bounded per-example sensitivity, an
//! epsilon within budget, and an audit that does not refute the claim.
//!
//! # Examples
//! A user's test that the clipped sum of their model moves by at most C when one record is added:
//! ```
//! use dpaudit::testing::{adjacent_datasets, assert_sensitivity_at_most};
//! use proptest::prelude::*;
//! use proptest::test_runner::{Config, TestRunner};
//!
//! let mut runner = TestRunner::new(Config { cases: 4, ..Config::default() });
//! runner
//!     .run(&adjacent_datasets(2..6, 28, 28), |pair| {
//!         let c = 0.5;
//!         let s = assert_sensitivity_at_most("logreg", &pair, c).map_err(TestCaseError::fail)?;
//!         prop_assert!(s <= c * (1.0 + 1e-5));
//!         Ok(())
//!     })
//!     .unwrap();
//! ```
use crate::accounting::calibration::EpsilonAccountant;
use crate::accounting::pld::PldAccountant;
use crate::accounting::rdp::RdpAccountant;
use crate::accounting::Phase;
use crate::audit::engine::{self, AuditReport, Shard};
use crate::audit::spec::AuditSpec;
use crate::data::{Dataset, ImageShape};
use crate::train::dpsgd::{Examples, CLIP_ROUNDING_SLACK};
use crate::train::per_example::{clip_and_sum, ClipConfig};
use proptest::prelude::*;
use std::ops::Range;
use std::path::Path;
use tch::{Device, Kind};

/// Mechanism parameters of one DP-SGD phase: q in [1e-4, 1], sigma in [0.5, 20], steps in 1..10_000.
pub fn mechanism_parameters() -> impl Strategy<Value = Phase> {
    (1e-4f64..=1.0, 0.5f64..20.0, 1u64..10_000).prop_map(|(q, s, t)| Phase::new(q, s, t).expect("the ranges are valid"))
}

/// A composition of one to four phases (schedules, GANs, DP-PCA plus training).
pub fn phases() -> impl Strategy<Value = Vec<Phase>> {
    proptest::collection::vec(mechanism_parameters(), 1..5)
}

/// An input-space canary: (pixels of a `height` x `width` grey image, label 0..10). Draws blank,
/// saturated and random images.
pub fn input_canary(height: usize, width: usize) -> impl Strategy<Value = (Vec<u8>, u8)> {
    let n = height * width;
    prop_oneof![Just(vec![0u8; n]), Just(vec![255u8; n]), proptest::collection::vec(any::<u8>(), n),]
        .prop_flat_map(|px| (Just(px), 0u8..10))
}

/// Two datasets that differ in one record: `with` is `without` plus the canary at the end.
#[derive(Debug, Clone)]
pub struct AdjacentPair {
    /// D.
    pub without: Dataset,
    /// D' = D plus one record.
    pub with: Dataset,
}

/// Adjacent pairs of random grey-image datasets with `size` records in D (at least 1).
pub fn adjacent_datasets(size: Range<usize>, height: usize, width: usize) -> impl Strategy<Value = AdjacentPair> {
    let n = height * width;
    (size.prop_map(|s| s.max(1)), input_canary(height, width)).prop_flat_map(move |(s, canary)| {
        (proptest::collection::vec(any::<u8>(), s * n), proptest::collection::vec(0u8..10, s), Just(canary)).prop_map(
            move |(px, labels, (cpx, clabel))| {
                let shape = ImageShape { channels: 1, height, width };
                let without = Dataset::new("D", shape, 10, px.clone(), labels.clone()).expect("consistent sizes");
                let mut px2 = px;
                px2.extend(&cpx);
                let mut l2 = labels;
                l2.push(clabel);
                let with = Dataset::new("D'", shape, 10, px2, l2).expect("consistent sizes");
                AdjacentPair { without, with }
            },
        )
    })
}

/// The L2 distance between the clipped gradient sums of a freshly initialised `model` on D and
/// on D' (one record more): the sensitivity the Gaussian noise of DP-SGD is calibrated to. Returns
/// it, or an error message when it exceeds `c` (beyond the f32 rounding slack
/// [`CLIP_ROUNDING_SLACK`]).
///
/// # Errors
/// A message: the sensitivity and the bound, or a model/data error.
pub fn assert_sensitivity_at_most(model: &str, pair: &AdjacentPair, c: f64) -> std::result::Result<f64, String> {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = {
        let _rng = crate::torch_rng::lock();
        crate::train::models::build(model, &vs.root()).map_err(|e| e.to_string())?
    };
    let clip = ClipConfig::new(c);
    let sum = |d: &Dataset| -> std::result::Result<Vec<tch::Tensor>, String> {
        let e = Examples::from_dataset(d, Device::Cpu).map_err(|e| e.to_string())?;
        Ok(clip_and_sum(&net, &e.images, &e.labels, &clip).map_err(|e| e.to_string())?.clipped_sum)
    };
    let (a, b) = (sum(&pair.without)?, sum(&pair.with)?);
    let mut sq = 0.0;
    for (x, y) in a.iter().zip(&b) {
        sq += f64::try_from(
            x.f_sub(y).and_then(|d| d.f_square()).and_then(|d| d.f_sum(Kind::Double)).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    }
    let s = sq.sqrt();
    if s > c * (1.0 + CLIP_ROUNDING_SLACK) {
        return Err(format!("sensitivity {s} exceeds the clipping norm {c}"));
    }
    Ok(s)
}

/// Checks that the epsilon of a ledger file, from both accountants (RDP and PLD), is within
/// `budget` at `delta`. Returns the larger of the two.
///
/// # Errors
/// A message naming the accountant and its epsilon, or a ledger error.
pub fn assert_ledger_within_budget(ledger: &Path, delta: f64, budget: f64) -> std::result::Result<f64, String> {
    let l = crate::accounting::ledger::read_ledger(ledger).map_err(|e| e.to_string())?;
    let phases = crate::accounting::ledger::phases_of(&l.entries).map_err(|e| e.to_string())?;
    let mut worst: f64 = 0.0;
    for (name, eps) in [
        ("rdp", RdpAccountant::default().epsilon_of(&phases, delta)),
        ("pld", PldAccountant::default().epsilon_of(&phases, delta)),
    ] {
        let eps = eps.map_err(|e| e.to_string())?;
        if eps > budget {
            return Err(format!(
                "{name} epsilon {eps} at delta {delta} exceeds the budget {budget} ({} steps in {})",
                l.entries.len(),
                ledger.display()
            ));
        }
        worst = worst.max(eps);
    }
    Ok(worst)
}

/// Runs an audit spec in a temporary folder on all cores and checks it comes out `consistent`.
/// Returns the report.
///
/// # Errors
/// A message with the bound and the claim when the audit is `violated`, or the audit's error.
pub fn assert_audit_consistent(spec: &AuditSpec) -> std::result::Result<AuditReport, String> {
    let dir = tempfile_dir().map_err(|e| e.to_string())?;
    let ctx = engine::prepare(spec).map_err(|e| e.to_string())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runs =
        engine::run_audit(&ctx, &dir, Shard::ALL, threads, &|_, _| {}, &std::sync::atomic::AtomicBool::new(false))
            .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    let report = engine::analyse(spec, &runs, 0.0).map_err(|e| e.to_string())?;
    if report.verdict != "consistent" {
        return Err(format!("audit {} is {}: {}", spec.name, report.verdict, report.verdict_reason));
    }
    Ok(report)
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use rand::Rng;
    let dir = std::env::temp_dir().join(format!(
        "dpaudit-testing-{}-{:016x}",
        std::process::id(),
        rand::thread_rng().gen::<u64>()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
