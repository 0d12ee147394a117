//! The audit engine end to end on the MNIST fixture: planted bugs are caught, the correct trainer
//! is not accused, runs survive interruption, shards merge into the same result.
use dpaudit::audit::engine::{self, read_runs, run_audit, Shard, RUNS_FILE};
use dpaudit::audit::spec::AuditSpec;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// A small white-box Dirac audit: logreg on 100 fixture examples, q = 1, 4 steps, sigma = 4
/// (true mu = sqrt(4) / 4 = 0.5: epsilon about 2 at delta 1e-5), an explicit claim `claim`.
fn spec(fault: Option<&str>, claim: &str, runs: u64, threshold: &str, norm: f64) -> AuditSpec {
    let fault = fault.map_or(String::new(), |f| format!("inject_fault = \"{f}\""));
    let text = format!(
        r#"
name = "test"
[target]
dataset = "fixture"
train_examples = 100
model = "logreg"
lot_size = 100
steps = 4
noise_multiplier = 4.0
max_grad_norm = 1.0
lr = 1.0
{fault}
[claim]
epsilon = {claim}
delta = 1e-5
[canary]
kind = "dirac"
norm = {norm}
[attack]
threat_model = "white-box"
runs_per_side = {runs}
threshold = "{threshold}"
seed = 11
"#
    );
    AuditSpec::from_toml(&text, Path::new("test.toml")).unwrap()
}

fn audit(s: &AuditSpec, dir: &Path) -> engine::AuditReport {
    let ctx = engine::prepare(s).unwrap();
    let runs = run_audit(&ctx, dir, Shard::ALL, 2, &|_, _| {}, &AtomicBool::new(false)).unwrap();
    engine::analyse(s, &runs, 0.0).unwrap()
}

#[test]
fn planted_bugs_are_violated_and_the_correct_trainer_is_consistent() {
    // 40 runs per side, threshold on the first 20: a perfect separation gives
    // ln((1 - 1e-5 - u) / u) with u = 1 - 0.025^(1/20), about 0.99 at 95% confidence; claim 0.5.
    for (fault, norm) in [("no-clip", 100.0), ("noise-on-mean", 1.0), ("skip-noise:2", 1.0)] {
        let dir = tempfile::tempdir().unwrap();
        let r = audit(&spec(Some(fault), "0.5", 40, "held-out", norm), dir.path());
        assert_eq!(r.verdict, "violated", "{fault}: {} ({})", r.epsilon_lower, r.verdict_reason);
        assert!(r.epsilon_lower > 0.9, "{fault}: {}", r.epsilon_lower);
        // The same spec with the bug removed: the canary is clipped and noised as it should be.
        let dir = tempfile::tempdir().unwrap();
        let r = audit(&spec(None, "0.5", 40, "held-out", norm), dir.path());
        assert_eq!(r.verdict, "consistent", "no fault ({fault}'s spec): {}", r.epsilon_lower);
        assert!(r.ledger_check.as_ref().unwrap().ok);
    }
}

#[test]
fn a_ledger_that_undercounts_is_caught_by_the_white_box_check() {
    let dir = tempfile::tempdir().unwrap();
    let r = audit(&spec(Some("ledger-undercount"), "\"accountant\"", 5, "held-out", 1.0), dir.path());
    let check = r.ledger_check.as_ref().unwrap();
    assert_eq!((check.applied_steps, check.ledger_steps, check.ok), (4, 2, false));
    assert_eq!(r.verdict, "violated");
    assert!(r.claim.source.contains("2 steps"), "{}", r.claim.source);
}

#[test]
fn the_scores_follow_the_gaussian_model_of_correct_dp_sgd() {
    // Correct trainer: score ~ N(0, 1) without the canary and N(mu, 1) with it, mu = 0.5. With
    // 150 runs per side the mean difference has standard error sqrt(2/150) = 0.115: |diff - 0.5|
    // < 0.6 fails with probability < 1e-6; a missing canary (diff 0) or unclipped one (diff 50)
    // would fail it.
    let dir = tempfile::tempdir().unwrap();
    let r = audit(&spec(None, "2.0", 150, "from-claim", 1.0), dir.path());
    let mean = |side: &str| {
        let v: Vec<f64> =
            r.runs.iter().filter(|x| serde_json::to_value(x.side).unwrap() == side).map(|x| x.score).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let diff = mean("with") - mean("without");
    assert!((diff - 0.5).abs() < 0.6, "mean shift {diff}");
    assert_eq!(r.verdict, "consistent");
    assert!(r.ideal_epsilon_lower > 0.0 && r.ideal_epsilon_lower < 2.0);
    assert_eq!(r.roc.first().map(|p| (p.fpr, p.tpr)), Some((0.0, 0.0)));
    // 150 canary-out runs resolve FPR 1% (1.5 runs) but not 0.1% or 0.01%: those are null with
    // a reason, never a number.
    assert!(r.tpr_at_fpr["0.01"].is_some());
    for key in ["0.001", "0.0001"] {
        assert_eq!(r.tpr_at_fpr[key], None, "{key}");
        assert!(r.tpr_at_fpr_notes[key].contains("not measurable with 150"), "{}", r.tpr_at_fpr_notes[key]);
    }
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["tpr_at_fpr"]["0.001"].is_null());
    // The plan: the from-claim ceiling exceeds the claim, and the audit says what it could catch.
    assert!(r.plan.can_refute && r.plan.ceiling > 2.0, "{:?}", r.plan);
    assert!(r.plan.detectable_epsilon_50.is_some_and(|e| e > 2.0), "{:?}", r.plan);
}

#[test]
fn an_interrupted_audit_resumes_without_losing_or_redoing_runs() {
    let s = spec(None, "2.0", 6, "held-out", 1.0);
    let full = tempfile::tempdir().unwrap();
    let reference = audit(&s, full.path());
    // Keep 5 finished runs and half of a sixth (a crash mid-write), then resume.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(full.path().join(RUNS_FILE)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = lines[..5].join("\n");
    kept.push('\n');
    kept.push_str(&lines[5][..lines[5].len() / 2]);
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::copy(full.path().join(engine::SPEC_FILE), dir.path().join(engine::SPEC_FILE)).unwrap();
    std::fs::write(dir.path().join(RUNS_FILE), kept).unwrap();
    let before = read_runs(dir.path()).unwrap();
    assert_eq!(before.len(), 5);
    let resumed = audit(&s, dir.path());
    assert_eq!(resumed.runs.len(), 12);
    for b in &before {
        let r = resumed.runs.iter().find(|r| r.side == b.side && r.index == b.index).unwrap();
        assert_eq!(r.seconds, b.seconds, "a finished run was redone");
    }
    // Same seeds, same scores: the resumed audit is the uninterrupted one.
    let scores = |r: &engine::AuditReport| r.runs.iter().map(|x| x.score).collect::<Vec<_>>();
    assert_eq!(scores(&resumed), scores(&reference));
    assert_eq!(resumed.epsilon_lower, reference.epsilon_lower);
    // Another spec in the same folder is refused.
    let other = spec(None, "3.0", 6, "held-out", 1.0);
    let ctx = engine::prepare(&other).unwrap();
    assert!(run_audit(&ctx, dir.path(), Shard::ALL, 1, &|_, _| {}, &AtomicBool::new(false)).is_err());
}

#[test]
fn shards_merge_into_the_single_run_result() {
    let s = spec(None, "2.0", 5, "bonferroni", 1.0);
    let whole = tempfile::tempdir().unwrap();
    let reference = audit(&s, whole.path());
    let ctx = engine::prepare(&s).unwrap();
    let parts: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, p) in parts.iter().enumerate() {
        let runs =
            run_audit(&ctx, p.path(), Shard { index: i as u32, count: 3 }, 1, &|_, _| {}, &AtomicBool::new(false))
                .unwrap();
        assert!(runs.len() < 10);
        assert!(engine::analyse(&s, &runs, 0.0).is_err(), "a lone shard is incomplete");
    }
    let out = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = parts.iter().map(|p| p.path().to_path_buf()).collect();
    let (merged_spec, runs) = engine::merge(&dirs, out.path()).unwrap();
    assert_eq!(merged_spec, s);
    let merged = engine::analyse(&s, &runs, 0.0).unwrap();
    let scores = |r: &engine::AuditReport| r.runs.iter().map(|x| (x.side, x.index, x.score)).collect::<Vec<_>>();
    assert_eq!(scores(&merged), scores(&reference));
    assert_eq!(merged.epsilon_lower, reference.epsilon_lower);
}

#[test]
fn the_cli_exits_10_on_a_violated_audit_and_writes_audit_json() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("s.toml");
    let text = toml_of(&spec(Some("noise-on-mean"), "0.5", 20, "held-out", 1.0));
    std::fs::write(&spec_path, text).unwrap();
    let out = dir.path().join("audit");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(["audit", "run"])
        .arg(&spec_path)
        .arg("--out")
        .arg(&out)
        .args(["--threads", "2", "--json"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(10), "{}", String::from_utf8_lossy(&status.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("audit.json")).unwrap()).unwrap();
    assert_eq!(v["verdict"], "violated");
    let printed: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(printed["epsilon_lower"], v["epsilon_lower"]);
    // A spec with a typo is a clear error (exit 1), not a silent default.
    std::fs::write(&spec_path, toml_of(&spec(None, "0.5", 20, "held-out", 1.0)).replace("steps = 4", "stepz = 4"))
        .unwrap();
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(["audit", "run"])
        .arg(&spec_path)
        .arg("--out")
        .arg(dir.path().join("b"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("stepz"), "{}", String::from_utf8_lossy(&bad.stderr));
}

fn toml_of(s: &AuditSpec) -> String {
    toml::to_string(s).unwrap()
}

#[test]
fn the_one_run_audit_bounds_epsilon_from_a_single_training() {
    // 300 Dirac canaries, 60 guesses, q = 1, 4 steps, sigma = 1: mu = 2 per canary (true epsilon
    // about 10 at delta 1e-5). A correct trainer gives a positive bound below the claim; the
    // noise-on-mean bug makes the canaries obvious and the bound (about 2.96 for 60 right of 60) exceeds a claim of 2.
    let text = |fault: &str, claim: &str| {
        format!(
            r#"
name = "one-run-test"
[target]
dataset = "fixture"
train_examples = 500
model = "logreg"
lot_size = 500
steps = 4
noise_multiplier = 1.0
max_grad_norm = 1.0
lr = 1.0
{fault}
[claim]
epsilon = {claim}
delta = 1e-5
[canary]
kind = "dirac"
[attack]
threat_model = "white-box"
mode = "one-run"
canaries = 300
guesses = 60
runs_per_side = 2
seed = 3
"#
        )
    };
    let correct = AuditSpec::from_toml(&text("", "\"accountant\""), Path::new("t")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = audit(&correct, dir.path());
    let o = r.one_run.as_ref().unwrap();
    assert_eq!((o.canaries, o.guesses), (300, 60));
    // 60 guesses, all right, give at most about 2.96 < the claim of about 10: the audit could
    // not have refuted it, and says so.
    assert!(!r.plan.can_refute && r.plan.ceiling < r.claim.epsilon, "{:?}", r.plan);
    assert_eq!(r.verdict, "inconclusive", "{}", r.verdict_reason);
    assert!(
        r.epsilon_lower > 0.5 && r.epsilon_lower < r.claim.epsilon,
        "{} vs claim {}",
        r.epsilon_lower,
        r.claim.epsilon
    );
    let faulty = AuditSpec::from_toml(&text("inject_fault = \"noise-on-mean\"", "2.0"), Path::new("t")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = audit(&faulty, dir.path());
    assert_eq!(r.one_run.as_ref().unwrap().correct, 60, "the bug makes every guess right");
    assert_eq!(r.verdict, "violated", "{}", r.epsilon_lower);
}

#[test]
fn a_certificate_records_an_audit_of_the_runs_recipe_and_refuses_another_recipes() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_dpaudit");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    };
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (code, out) = run(&[
        "train",
        "--dataset",
        "fixture",
        "--model",
        "logreg",
        "--noise-multiplier",
        "4.0",
        "--max-grad-norm",
        "1.0",
        "--epochs",
        "1",
        "--lot-size",
        "200",
        "--out",
        &p("run"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(run(&["keygen", "--out", &p("keys")]).0, Some(0));
    // An audit of the same recipe (logreg, sigma 4, C 1).
    // With 10 runs per side it cannot refute the claim (epsilon about 2): it runs only when
    // forced, is `inconclusive` (exit 12), and the certificate records it so, never `consistent`.
    let s = spec(None, "\"accountant\"", 10, "held-out", 1.0);
    std::fs::write(p("spec.toml"), toml_of(&s)).unwrap();
    let (code, out) = run(&["audit", "run", &p("spec.toml"), "--out", &p("audit"), "--allow-inconclusive"]);
    assert_eq!(code, Some(12), "{out}");
    let (code, out) = run(&[
        "cert",
        "sign",
        "--run",
        &p("run"),
        "--key",
        &p("keys/dpaudit-cert.key"),
        "--out",
        &p("cert.json"),
        "--audit",
        &p("audit"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let cert: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("cert.json")).unwrap()).unwrap();
    let audits = cert["certificate"]["audits"].as_array().unwrap();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0]["verdict"], "inconclusive");
    assert_eq!(audits[0]["threat_model"], "white-box");
    let (code, out) = run(&["cert", "verify", &p("cert.json"), "--pubkey", &p("keys/dpaudit-cert.pub")]);
    assert_eq!(code, Some(0), "{out}");
    // An audit.json edited after the fact (its verdict no longer what its runs give), or one none
    // of whose records was replayed, is not cited.
    let sign_with = |audit_dir: &str, cert: &str| {
        run(&[
            "cert",
            "sign",
            "--run",
            &p("run"),
            "--key",
            &p("keys/dpaudit-cert.key"),
            "--out",
            &p(cert),
            "--audit",
            audit_dir,
        ])
    };
    let report_path = dir.path().join("audit").join("audit.json");
    let genuine = std::fs::read_to_string(&report_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&genuine).unwrap();
    edited["verdict"] = "consistent".into();
    std::fs::write(&report_path, edited.to_string()).unwrap();
    let (code, out) = sign_with(&p("audit"), "cert-edited.json");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("its runs give"), "{out}");
    let mut unreplayed: serde_json::Value = serde_json::from_str(&genuine).unwrap();
    unreplayed["record_check"]["replayed"] = serde_json::json!([]);
    std::fs::write(&report_path, unreplayed.to_string()).unwrap();
    let (code, out) = sign_with(&p("audit"), "cert-unreplayed.json");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("none of its run records was replayed"), "{out}");
    std::fs::write(&report_path, genuine).unwrap();
    assert!(!dir.path().join("cert-edited.json").exists() && !dir.path().join("cert-unreplayed.json").exists());
    // An audit of another recipe (sigma 2) is refused, and no certificate is written.
    let other = toml_of(&s).replace("noise_multiplier = 4.0", "noise_multiplier = 2.0");
    std::fs::write(p("other.toml"), other).unwrap();
    assert_eq!(run(&["audit", "run", &p("other.toml"), "--out", &p("audit2"), "--allow-inconclusive"]).0, Some(12));
    let (code, out) = run(&[
        "cert",
        "sign",
        "--run",
        &p("run"),
        "--key",
        &p("keys/dpaudit-cert.key"),
        "--out",
        &p("cert2.json"),
        "--audit",
        &p("audit2"),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("certifies only the recipe it ran"), "{out}");
    assert!(!dir.path().join("cert2.json").exists());
}

/// A DP-GAN audit spec: `design`, N = 20 fixture images, `steps` discriminator steps at q = `q`.
fn gan_spec(design: &str, sigma: f64, q: f64, steps: u64, runs: u64, threat: &str) -> AuditSpec {
    let text = format!(
        r#"
name = "gan-test"
[target]
dataset = "fixture"
train_examples = 20
model = "dpgan"
lot_size = {lot}
steps = {steps}
noise_multiplier = {sigma}
max_grad_norm = 1.0
lr = 1e-2
[target.gan]
design = "{design}"
g_width = 8
d_width = 8
z_dim = 8
score_draws = 4
fixed_initialisation = true
[claim]
epsilon = "accountant"
accountant = "rdp"
delta = 1e-5
[canary]
kind = "out-of-distribution"
label = 3
[attack]
threat_model = "{threat}"
runs_per_side = {runs}
threshold = "held-out"
seed = 5
"#,
        lot = q * 20.0
    );
    AuditSpec::from_toml(&text, Path::new("gan.toml")).unwrap()
}

#[test]
fn gan_audits_replay_the_gan_and_see_an_unnoised_canary() {
    // Nearly no noise and the canary in every step: the white-box statistic must tell the sides
    // apart on every pair of runs; the claim comes from the noise-layer ledger of each replay.
    let s = gan_spec("noise-layer", 0.3, 1.0, 30, 4, "white-box");
    let dir = tempfile::tempdir().unwrap();
    let r = audit(&s, dir.path());
    assert_eq!(r.runs.len(), 8);
    assert!(
        r.runs.iter().all(|x| x.ledger_steps == 30 && x.applied_steps == 30 && x.ledger_phases == vec![(1.0, 0.3, 30)]),
        "{:?}",
        r.runs
    );
    let side =
        |w: dpaudit::audit::replay::Side| r.runs.iter().filter(|x| x.side == w).map(|x| x.score).collect::<Vec<_>>();
    let (with, without) = (side(dpaudit::audit::replay::Side::With), side(dpaudit::audit::replay::Side::Without));
    let lowest_with = with.iter().copied().fold(f64::INFINITY, f64::min);
    let highest_without = without.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert!(lowest_with > highest_without, "with {with:?} without {without:?}");
    // Replays are exact: the same run again gives the same score.
    let ctx = engine::prepare(&s).unwrap();
    let w = dpaudit::audit::replay::Worker::new(&ctx).unwrap();
    let a = w.run(dpaudit::audit::replay::Side::With, 1).unwrap();
    assert_eq!(
        a.score,
        r.runs.iter().find(|x| x.side == dpaudit::audit::replay::Side::With && x.index == 1).unwrap().score
    );
    // The black-box statistic runs too (the discriminator's margin on the canary).
    let b = audit(&gan_spec("joint", 1.0, 0.5, 4, 2, "black-box"), &dir.path().join("b"));
    assert_eq!(b.runs.len(), 4);
}

#[test]
fn gan_audit_specs_refuse_what_they_cannot_score() {
    let good = toml_of(&gan_spec("joint", 1.0, 0.5, 4, 2, "white-box"));
    for (from, to) in [
        ("kind = \"out-of-distribution\"", "kind = \"dirac\""),
        ("threshold = \"held-out\"", "threshold = \"from-claim\""),
        ("model = \"dpgan\"", "model = \"logreg\""),
        ("steps = 4", "steps = 0"),
        ("design = \"joint\"", "design = \"magic\""),
    ] {
        let bad = good.replace(from, to);
        assert_ne!(bad, good, "{from}");
        assert!(AuditSpec::from_toml(&bad, Path::new("t")).is_err(), "{to}");
    }
}

fn cli(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(args).output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

#[test]
fn an_underpowered_audit_is_refused_or_inconclusive_never_consistent() {
    // 10 runs per side, held-out: 5 evaluation runs per side can show at most
    // ln((1 - d - u) / u) with u = 1 - 0.025^(1/5) = 0.52, i.e. 0: a claim of 2 cannot be refuted.
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("s.toml");
    std::fs::write(&spec_path, toml_of(&spec(None, "2.0", 10, "held-out", 1.0))).unwrap();
    let out = dir.path().join("audit");
    let (code, text) =
        cli(&["audit".as_ref(), "run".as_ref(), spec_path.as_os_str(), "--out".as_ref(), out.as_os_str()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot refute its claim"), "{text}");
    assert!(!out.join(RUNS_FILE).exists(), "refused before any training");
    let (code, text) = cli(&[
        "audit".as_ref(),
        "run".as_ref(),
        spec_path.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--allow-inconclusive".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
    ]);
    assert_eq!(code, Some(12), "{text}");
    assert!(text.contains("INCONCLUSIVE"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("audit.json")).unwrap()).unwrap();
    assert_eq!(v["verdict"], "inconclusive");
    assert_eq!(v["plan"]["can_refute"], false);
    assert_eq!(v["record_check"]["replayed"].as_array().unwrap().len(), 2);
}

#[test]
fn merge_refuses_records_that_do_not_check() {
    let s = spec(None, "2.0", 5, "bonferroni", 1.0);
    let ctx = engine::prepare(&s).unwrap();
    let go = |dir: &Path, shard: Shard| run_audit(&ctx, dir, shard, 1, &|_, _| {}, &AtomicBool::new(false));
    // A shard that owns no run (issue 28: --shard 4000/4001) is refused before anything is written.
    let empty = tempfile::tempdir().unwrap();
    let e = go(empty.path(), Shard { index: 4000, count: 4001 }).unwrap_err().to_string();
    assert!(e.contains("at most 5 shards"), "{e}");
    assert!(!empty.path().join(engine::SPEC_FILE).exists());
    let parts: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, p) in parts.iter().enumerate() {
        go(p.path(), Shard { index: i as u32, count: 2 }).unwrap();
    }
    let dirs: Vec<_> = parts.iter().map(|p| p.path().to_path_buf()).collect();
    let merged = tempfile::tempdir().unwrap();
    let (_, runs) = engine::merge(&dirs, merged.path()).unwrap();
    assert_eq!(runs.len(), 10);
    // Every record replays bit for bit.
    assert_eq!(engine::replay_check(&ctx, &runs, 10, Path::new("x")).unwrap().len(), 10);

    // Each forgery in shard 0's runs.jsonl, merged with the genuine shard 1.
    let original = std::fs::read_to_string(parts[0].path().join(RUNS_FILE)).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let lines: Vec<String> = original
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                if i == 0 {
                    f(&mut v);
                }
                v.to_string()
            })
            .collect();
        std::fs::write(parts[0].path().join(RUNS_FILE), lines.join("\n") + "\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        engine::merge(&dirs, out.path()).map(|(_, r)| r)
    };
    let refused = |f: &dyn Fn(&mut serde_json::Value), why: &str| {
        let e = edit(f).unwrap_err().to_string();
        assert!(e.contains(why), "expected {why:?}: {e}");
    };
    refused(&|v| v["seed"] = 12345.into(), "is not the seed");
    refused(&|v| v["spec_digest"] = "ab".repeat(32).into(), "belongs to spec");
    refused(&|v| v["spec_digest"] = "".into(), "cannot be checked");
    refused(&|v| v["score_digest"] = "".into(), "no score digest");
    refused(&|v| v["index"] = 7.into(), "index outside");
    // The next index on the same side: a real run of the spec, but shard 1's, not this folder's
    // (shard i of N holds both sides of the indices congruent to i mod N).
    refused(
        &|v| {
            let next = v["index"].as_u64().unwrap() + 1;
            let seed = dpaudit::audit::replay::run_seed(11, serde_json::from_value(v["side"].clone()).unwrap(), next);
            v["index"] = next.into();
            v["seed"] = seed.into();
        },
        "is not a run of shard 0/2",
    );
    // A hand-written score with every field in order passes the field checks but not a replay.
    let forged = edit(&|v| v["score"] = 9.5.into()).unwrap();
    let e = engine::replay_check(&ctx, &forged, 10, Path::new("x")).unwrap_err().to_string();
    assert!(e.contains("not produced by this spec's run"), "{e}");
    std::fs::write(parts[0].path().join(RUNS_FILE), &original).unwrap();
    // The same folder twice: every run twice.
    let out = tempfile::tempdir().unwrap();
    let e = engine::merge(&[dirs[0].clone(), dirs[0].clone(), dirs[1].clone()], out.path()).unwrap_err().to_string();
    assert!(e.contains("also in another folder"), "{e}");
    // A spec.json whose shard index is outside its count.
    let spec_json = parts[1].path().join(engine::SPEC_FILE);
    let text = std::fs::read_to_string(&spec_json).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["shard"]["index"] = 5.into();
    std::fs::write(&spec_json, v.to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = engine::merge(&dirs, out.path()).unwrap_err().to_string();
    assert!(e.contains("outside its count"), "{e}");
}

#[test]
fn a_runs_file_without_its_spec_is_not_adopted() {
    let s = spec(None, "2.0", 5, "bonferroni", 1.0);
    let whole = tempfile::tempdir().unwrap();
    audit(&s, whole.path());
    let stray = tempfile::tempdir().unwrap();
    std::fs::copy(whole.path().join(RUNS_FILE), stray.path().join(RUNS_FILE)).unwrap();
    let ctx = engine::prepare(&s).unwrap();
    let e = run_audit(&ctx, stray.path(), Shard::ALL, 1, &|_, _| {}, &AtomicBool::new(false)).unwrap_err().to_string();
    assert!(e.contains("no spec.json"), "{e}");
    assert!(!stray.path().join(engine::SPEC_FILE).exists());
}
