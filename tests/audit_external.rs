//! External trainers (`[target] kind = "command"`, docs/external-trainers.md) end to end, with the
//! standard-library fake trainer `fixtures/external/fake_trainer.py`: once and worker mode, a
//! leaky trainer caught and a data-independent one not accused, the trainer's own claim, and every
//! kind of bad output stopping the audit with an error that names the run and the file while the
//! runs recorded before it are kept, and resumed.
//!
//! Every run seed is fixed (the audit seed, and the fake trainer draws from the run's seed), so
//! each test is deterministic: it cannot flake.
use dpaudit::audit::engine::{self, read_runs, Shard, RUNS_FILE};
use dpaudit::audit::external::{self, ExternalContext};
use dpaudit::audit::replay::Side;
use dpaudit::audit::spec::AuditSpec;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

const TRAINER: &str = "fixtures/external/fake_trainer.py";

/// The Python that runs the fake trainer: the project's `.venv`, else `python3`; `None` (the test
/// is skipped, with a message) when neither exists.
fn python() -> Option<String> {
    if Path::new(".venv/bin/python").exists() {
        return Some(".venv/bin/python".into());
    }
    let found = std::process::Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        Some("python3".into())
    } else {
        eprintln!("SKIPPED: neither .venv/bin/python nor python3 exists, so the fake external trainer cannot run");
        None
    }
}

struct Setup<'a> {
    mode: &'a str,
    runs: u64,
    workers: usize,
    claim: &'a str,
    options: &'a str,
    statistic: &'a str,
    timeout: f64,
    deterministic: bool,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            mode: "once",
            runs: 3,
            workers: 1,
            claim: "1.0",
            options: "behaviour = \"ok\"",
            statistic: "statistic = \"trainer:canary-signal\"",
            timeout: 60.0,
            deterministic: false,
        }
    }
}

fn spec(python: &str, s: &Setup) -> AuditSpec {
    let argv = if s.mode == "once" {
        format!("[\"{python}\", \"{TRAINER}\", \"--request\", \"{{request}}\"]")
    } else {
        format!("[\"{python}\", \"{TRAINER}\", \"--worker\"]")
    };
    let text = format!(
        r#"
name = "external-test"
[target]
kind = "command"
mode = "{mode}"
argv = {argv}
dataset = "fixture"
train_examples = 50
workers = {workers}
timeout_seconds = {timeout}
deterministic = {deterministic}
[target.options]
{options}
[claim]
epsilon = {claim}
delta = 1e-5
[canary]
kind = "mislabelled"
label = 3
[attack]
threat_model = "black-box"
runs_per_side = {runs}
threshold = "bonferroni"
{statistic}
seed = 5
"#,
        mode = s.mode,
        workers = s.workers,
        timeout = s.timeout,
        deterministic = s.deterministic,
        options = s.options,
        claim = s.claim,
        runs = s.runs,
        statistic = s.statistic,
    );
    AuditSpec::from_toml(&text, Path::new("external-test.toml")).unwrap()
}

fn run(spec: &AuditSpec, dir: &Path) -> dpaudit::Result<Vec<dpaudit::audit::replay::RunRecord>> {
    let ctx = ExternalContext::new(spec)?;
    external::run_external_audit(&ctx, dir, Shard::ALL, &|_, _| {}, &AtomicBool::new(false))
}

#[test]
fn a_leaky_trainer_is_caught_in_once_mode() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&py, &Setup { runs: 30, options: "behaviour = \"leaky\"", ..Setup::default() });
    let runs = run(&s, dir.path()).unwrap();
    assert_eq!(runs.len(), 60);
    let report = engine::analyse(&s, &runs, 0.0).unwrap();
    assert_eq!(report.verdict, "violated", "{}", report.verdict_reason);
    assert!(report.epsilon_lower > 1.0);
    // Every statistic the files allow is recorded; the score is the named one.
    let r = &runs[0];
    for name in ["trainer:canary-signal", "param-change-norm", "max-step-norm", "sum-step-norm"] {
        assert!(r.statistics.contains_key(name), "{name} missing from {:?}", r.statistics);
    }
    assert_eq!(r.score, r.statistics["trainer:canary-signal"]);
    assert_eq!((r.ledger_steps, r.applied_steps), (2, 2));
    assert_eq!(r.ledger_phases, vec![(0.5, 1.0, 2)]);
    // Scored runs leave no output folder behind.
    assert_eq!(std::fs::read_dir(dir.path().join(external::WORK_DIR)).unwrap().count(), 0);
}

#[test]
fn a_data_independent_trainer_is_consistent_in_worker_mode() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&py, &Setup { mode: "worker", runs: 30, workers: 2, ..Setup::default() });
    let runs = run(&s, dir.path()).unwrap();
    assert_eq!(runs.len(), 60);
    let report = engine::analyse(&s, &runs, 0.0).unwrap();
    assert!(report.plan.can_refute, "the test must be able to fail: ceiling {}", report.plan.ceiling);
    assert_eq!(report.verdict, "consistent", "{}", report.verdict_reason);
    // The same runs in once mode give the same records (the seeds, not the mode, decide).
    let dir2 = tempfile::tempdir().unwrap();
    let once = spec(&py, &Setup { runs: 30, workers: 2, ..Setup::default() });
    let runs2 = run(&once, dir2.path()).unwrap();
    let digests = |v: &[dpaudit::audit::replay::RunRecord]| {
        let mut d: Vec<(Side, u64, String)> = v.iter().map(|r| (r.side, r.index, r.score_digest.clone())).collect();
        d.sort();
        d
    };
    assert_eq!(digests(&runs), digests(&runs2));
}

#[test]
fn the_datasets_hold_d_and_d_prime_with_the_canary_last() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&py, &Setup::default());
    let ctx = ExternalContext::new(&s).unwrap();
    let paths = external::write_datasets(&ctx, dir.path()).unwrap();
    let read = |p: &PathBuf| {
        dpaudit::data::load_mnist_dir(p, dpaudit::data::Split::Train, 10).unwrap_or_else(|e| panic!("{e}"))
    };
    let (without, with, canary) = (read(&paths.without), read(&paths.with), read(&paths.canary));
    assert_eq!((without.len(), with.len(), canary.len()), (50, 51, 1));
    assert_eq!(with.image(50), canary.image(0));
    assert_eq!(with.label(50), canary.label(0));
    assert_eq!(&with.pixels()[..without.pixels().len()], without.pixels());
    // The same canary as dpaudit's own black-box audits plant: a test image, relabelled.
    let (train, test) = engine::load_audit_data("fixture", Some(50)).unwrap();
    let (px, label) = dpaudit::audit::replay::spec_input_canary(&s, &train, &test).unwrap().unwrap();
    let quantised: Vec<u8> = px.iter().map(|&p| (p * 255.0).round() as u8).collect();
    assert_eq!(canary.image(0), quantised.as_slice());
    assert_eq!(i64::from(canary.label(0)), label);
    // x.npy holds the same pixels as floats; dataset.json the count.
    let x = std::fs::read(paths.with.join("x.npy")).unwrap();
    let hl = u16::from_le_bytes([x[8], x[9]]) as usize;
    assert_eq!(x.len(), 10 + hl + 51 * 28 * 28 * 4);
    let last = &x[10 + hl + 50 * 784 * 4..];
    let floats: Vec<u8> =
        last.chunks_exact(4).map(|c| (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 255.0).round() as u8).collect();
    assert_eq!(floats, quantised);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(paths.with.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(meta["examples"], 51);
    // Written once: a second call checks and keeps them; an edited file is refused.
    external::write_datasets(&ctx, dir.path()).unwrap();
    std::fs::write(paths.without.join("y.npy"), b"edited").unwrap();
    let err = external::write_datasets(&ctx, dir.path()).unwrap_err().to_string();
    assert!(err.contains("y.npy") && err.contains("differs"), "{err}");
}

#[test]
fn a_missing_program_is_refused_before_any_run() {
    let Some(py) = python() else { return };
    let s = spec(&py.replace("python", "no-such-python-for-dpaudit"), &Setup::default());
    let err = ExternalContext::new(&s).unwrap_err().to_string();
    assert!(err.contains("target.argv") && err.contains("no such program"), "{err}");
}

#[test]
fn the_trainer_claim_is_the_largest_claimed_epsilon() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The claim grows with the examples: D' (51) claims 0.5 + 0.051, D (50) 0.5 + 0.05.
    let s = spec(
        &py,
        &Setup {
            claim: "\"trainer\"",
            options: "behaviour = \"ok\"\nclaim_epsilon = 0.5\nclaim_epsilon_per_example = 0.001",
            ..Setup::default()
        },
    );
    let runs = run(&s, dir.path()).unwrap();
    let report = engine::analyse(&s, &runs, 0.0).unwrap();
    assert!((report.claim.epsilon - 0.551).abs() < 1e-12, "{}", report.claim.epsilon);
    assert!(report.claim.source.contains("0.55"), "{}", report.claim.source);
    assert!(runs.iter().all(|r| r.claimed_epsilon.is_some()));
    // A claim.json whose delta is not the spec's is refused.
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&py, &Setup { claim: "\"trainer\"", options: "claim_delta = 1e-6", ..Setup::default() });
    let err = run(&s, dir.path()).unwrap_err().to_string();
    assert!(err.contains("claim.json") && err.contains("delta"), "{err}");
}

/// Runs an audit whose with-canary runs fail with `fault`, and checks the error and that the
/// run recorded before it (without the canary, index 0) is kept.
fn fails_clearly(mode: &str, fault: &str, timeout: f64, file: &str, words: &str) {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let options = format!("behaviour = \"ok\"\nfault = \"{fault}\"");
    let s = spec(&py, &Setup { mode, options: &options, timeout, ..Setup::default() });
    let err = run(&s, dir.path()).unwrap_err().to_string();
    assert!(err.contains("external trainer, run "), "{err}");
    assert!(err.contains("with the canary, index 0"), "{err}");
    assert!(err.contains(file), "{fault}: the error should name {file}: {err}");
    assert!(err.contains(words), "{fault}: the error should say {words:?}: {err}");
    assert!(err.contains("fake trainer: run"), "{fault}: the error should quote the trainer's stderr: {err}");
    let kept = read_runs(dir.path()).unwrap();
    assert_eq!(kept.len(), 1, "the run finished before the failure is kept");
    assert_eq!((kept[0].side, kept[0].index), (Side::Without, 0));
    // The failed run's folder is kept for diagnosis.
    assert_eq!(std::fs::read_dir(dir.path().join(external::WORK_DIR)).unwrap().count(), 1);
}

#[test]
fn a_crashing_trainer_is_reported_with_its_stderr() {
    fails_clearly("once", "crash", 60.0, "python", "exited with exit status: 3");
    fails_clearly("worker", "crash", 60.0, "python", "planted crash");
}

#[test]
fn a_hanging_trainer_is_killed_after_its_timeout() {
    fails_clearly("once", "hang", 3.0, "python", "timeout_seconds = 3");
    fails_clearly("worker", "hang", 3.0, "python", "timeout_seconds = 3");
}

#[test]
fn missing_nan_and_malformed_outputs_are_refused() {
    fails_clearly("once", "no-model", 60.0, "model.safetensors", "wrote no model.safetensors");
    fails_clearly("worker", "nan", 60.0, "model.safetensors", "non-finite value NaN");
    fails_clearly("once", "bad-claim", 60.0, "claim.json", "malformed claim");
    fails_clearly("worker", "bad-reply", 60.0, "python", "malformed reply");
    fails_clearly("worker", "ok-false", 60.0, "python", "ok: false: planted failure");
}

#[test]
fn an_audit_resumes_after_a_failed_run_and_retries_it() {
    let Some(py) = python() else { return };
    for mode in ["once", "worker"] {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("fail-now");
        std::fs::write(&flag, b"").unwrap();
        let options = format!("behaviour = \"ok\"\nfault = \"crash\"\nfault_flag = {:?}", flag.display().to_string());
        let out = dir.path().join("audit");
        let s = spec(&py, &Setup { mode, options: &options, ..Setup::default() });
        assert!(run(&s, &out).is_err());
        let first = read_runs(&out).unwrap();
        assert_eq!(first.len(), 1);
        // The trainer is fixed (the flag removed); the same spec resumes, keeps the recorded run
        // and retries the failed one.
        std::fs::remove_file(&flag).unwrap();
        let runs = run(&s, &out).unwrap();
        assert_eq!(runs.len(), 6);
        assert_eq!(runs[0], first[0]);
        let text = std::fs::read_to_string(out.join(RUNS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 6);
        engine::analyse(&s, &runs, 0.0).unwrap();
        assert_eq!(
            std::fs::read_dir(out.join(external::WORK_DIR)).unwrap().count(),
            0,
            "{mode}: the retried run's folder is gone"
        );
    }
}

#[test]
fn shards_of_an_external_audit_merge() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&py, &Setup { runs: 4, ..Setup::default() });
    let ctx = ExternalContext::new(&s).unwrap();
    let mut folders = Vec::new();
    for i in 0..2 {
        let d = dir.path().join(format!("shard-{i}"));
        external::run_external_audit(&ctx, &d, Shard { index: i, count: 2 }, &|_, _| {}, &AtomicBool::new(false))
            .unwrap();
        folders.push(d);
    }
    let whole = dir.path().join("whole");
    run(&s, &whole).unwrap();
    let (_, merged) = engine::merge(&folders, &dir.path().join("merged")).unwrap();
    let mut alone = read_runs(&whole).unwrap();
    alone.sort_by_key(|r| (r.side, r.index));
    let key = |v: &[dpaudit::audit::replay::RunRecord]| v.iter().map(|r| r.score_digest.clone()).collect::<Vec<_>>();
    assert_eq!(key(&merged), key(&alone));
}

#[test]
fn a_deterministic_trainer_is_rechecked_and_a_tampered_record_caught() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&py, &Setup { options: "behaviour = \"ok\"", ..Setup::default() });
    let ctx = ExternalContext::new(&s).unwrap();
    let runs = run(&s, dir.path()).unwrap();
    let origin = dir.path().join(RUNS_FILE);
    // The spec says deterministic = false: no replay is attempted.
    assert!(external::replay_check_external(&ctx, dir.path(), &runs, 2, &origin).is_err());
    let det = spec(&py, &Setup { deterministic: true, ..Setup::default() });
    assert!(det.command().unwrap().deterministic);
    let dir = tempfile::tempdir().unwrap();
    let ctx = ExternalContext::new(&det).unwrap();
    let mut runs = run(&det, dir.path()).unwrap();
    let origin = dir.path().join(RUNS_FILE);
    let replayed = external::replay_check_external(&ctx, dir.path(), &runs, 6, &origin).unwrap();
    assert_eq!(replayed.len(), 6);
    runs[2].score += 1e-9;
    let err = external::replay_check_external(&ctx, dir.path(), &runs, 6, &origin).unwrap_err().to_string();
    assert!(err.contains("run record") && err.contains("not deterministic, or the record was not produced"), "{err}");
}
