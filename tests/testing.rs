//! dpaudit::testing used the way a user would: property suites over adjacent datasets, the
//! ledger's budget, and an audit spec that must come out consistent.
use dpaudit::accounting::ledger::Ledger;
use dpaudit::accounting::SamplingScheme;
use dpaudit::audit::spec::AuditSpec;
use dpaudit::testing::{
    adjacent_datasets, assert_audit_consistent, assert_ledger_within_budget, assert_sensitivity_at_most, phases,
};
use proptest::prelude::*;
use std::path::Path;

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn adding_one_record_moves_the_clipped_sum_by_at_most_c(pair in adjacent_datasets(1..8, 28, 28), c in 0.01f64..10.0) {
        for model in ["logreg", "mlp"] {
            let s = assert_sensitivity_at_most(model, &pair, c).map_err(TestCaseError::fail)?;
            prop_assert!(s > 0.0, "the canary must move the sum");
        }
    }

    #[test]
    fn phase_strategies_are_valid_mechanisms(p in phases()) {
        prop_assert!(!p.is_empty() && p.len() < 5);
        for ph in &p {
            prop_assert!(ph.sampling_rate > 0.0 && ph.sampling_rate <= 1.0 && ph.noise_multiplier >= 0.5 && ph.steps >= 1);
        }
    }
}

#[test]
fn the_budget_assertion_passes_within_and_fails_beyond() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let mut l = Ledger::create(&path).unwrap();
    for _ in 0..100 {
        l.record(SamplingScheme::Poisson, 0.01, 1.0, 1.0, "dpsgd").unwrap();
    }
    let eps = assert_ledger_within_budget(&path, 1e-5, 10.0).unwrap();
    assert!(eps > 0.1 && eps < 10.0, "{eps}");
    let err = assert_ledger_within_budget(&path, 1e-5, eps / 2.0).unwrap_err();
    assert!(err.contains("exceeds the budget"), "{err}");
}

#[test]
fn an_audit_spec_of_a_correct_trainer_is_consistent_and_a_planted_bug_is_not() {
    // sigma = 20, q = 1, 3 steps: the accountant claims about 0.4 at delta 1e-5. 30 runs per side
    // (15 to pick the threshold) can show at most about 1.27: enough to refute the claim when the
    // noise is 100 times too small, never when it is right.
    let text = |fault: &str| {
        format!(
            r#"
name = "user-test"
[target]
dataset = "fixture"
train_examples = 100
model = "logreg"
lot_size = 100
steps = 3
noise_multiplier = 20.0
max_grad_norm = 1.0
lr = 1.0
{fault}
[claim]
epsilon = "accountant"
delta = 1e-5
[canary]
kind = "dirac"
[attack]
threat_model = "white-box"
runs_per_side = 30
threshold = "held-out"
"#
        )
    };
    let ok = AuditSpec::from_toml(&text(""), Path::new("t")).unwrap();
    assert_audit_consistent(&ok).unwrap();
    let bad = AuditSpec::from_toml(&text("inject_fault = \"noise-on-mean\""), Path::new("t")).unwrap();
    let err = assert_audit_consistent(&bad).unwrap_err();
    assert!(err.contains("violated"), "{err}");
}
