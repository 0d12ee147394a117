//! kill -9 at random moments, then resume: the ledger is never corrupt and never counts fewer
//! steps than the updates that survive in the run (the checkpointed model), and the finished run
//! accounts every step it recorded.
use dpaudit::accounting::ledger::Ledger;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn train_cmd(out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dpaudit"));
    c.args([
        "train",
        "--dataset",
        "fixture",
        "--model",
        "logreg",
        "--epochs",
        "4",
        "--lot-size",
        "100",
        "--noise-multiplier",
        "1.0",
        "--lr",
        "0.5",
        "--checkpoint-every",
        "7",
        "--seed",
        "5",
        "--threads",
        "1",
        "--out",
    ]);
    c.arg(out);
    if resume {
        c.arg("--resume");
    }
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    c
}

fn checkpoint_steps(out: &Path) -> u64 {
    std::fs::read_to_string(out.join("checkpoint.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["steps"].as_u64())
        .unwrap_or(0)
}

fn ledger_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("ledger.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

/// Kills the child (SIGKILL) once the ledger holds at least `at_step` lines, or after `deadline`;
/// returns whether it was still running when killed. Waiting on the ledger rather than on a clock
/// makes the kill land mid-run on a fast machine and a slow one alike.
fn kill_when(child: &mut std::process::Child, out: &Path, at_step: usize, deadline: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ledger_lines(out) >= at_step {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap(); // SIGKILL
    }
    child.wait().unwrap();
    killed
}

#[test]
fn kill_9_at_random_moments_never_undercounts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let mut kills = 0;
    let mut target = 0;
    for round in 0..6 {
        let mut child = train_cmd(&out, round > 0).spawn().unwrap();
        // Round 0 is killed at start-up, before any step (step 0 is reached at once); later rounds
        // when the ledger has grown by a random 1..12 steps, so kills land before, on and after
        // checkpoints (every 7 steps), ending well before the run's 80 steps.
        target += if round == 0 { 0 } else { rng.gen_range(1..12) };
        if kill_when(&mut child, &out, target, Duration::from_secs(120)) {
            kills += 1;
        }
        if out.join("ledger.jsonl").exists() {
            let ledger = Ledger::open(out.join("ledger.jsonl")).expect("the ledger must survive kill -9");
            assert!(
                ledger.steps() >= checkpoint_steps(&out),
                "ledger {} < checkpoint {}",
                ledger.steps(),
                checkpoint_steps(&out)
            );
            target = target.max(ledger.steps() as usize);
        }
    }
    assert!(kills >= 4, "only {kills} of 6 runs were killed mid-run: the test did not test enough");
    let status = train_cmd(&out, true).status().unwrap();
    assert!(status.success());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let ledger = Ledger::open(out.join("ledger.jsonl")).unwrap();
    let applied = metrics["steps"].as_u64().unwrap();
    assert_eq!(applied, 80, "4 epochs at q = 100/2000");
    assert!(ledger.steps() >= applied, "ledger {} < applied updates {applied}", ledger.steps());
    let accounted: u64 = metrics["phases"].as_array().unwrap().iter().map(|p| p["steps"].as_u64().unwrap()).sum();
    assert_eq!(accounted, ledger.steps(), "epsilon must be computed from every ledger step");
}

#[test]
fn the_read_only_ledger_reader_counts_a_torn_line_and_changes_nothing() {
    use dpaudit::accounting::ledger::{read_ledger, Ledger};
    use dpaudit::accounting::SamplingScheme;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.jsonl");
    let mut l = Ledger::create(&path).unwrap();
    for _ in 0..3 {
        l.record(SamplingScheme::Poisson, 0.01, 1.1, 1.0, "dpsgd").unwrap();
    }
    drop(l);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"step\":4,\"sampl");
    std::fs::write(&path, &bytes).unwrap();
    let s = read_ledger(&path).unwrap();
    assert_eq!((s.entries.len(), s.torn_bytes), (3, 16));
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "reading never repairs");
    // Ledger::open (continuing a run) applies the same rule and repairs.
    assert_eq!(Ledger::open(&path).unwrap().steps(), 3);
    assert_eq!(read_ledger(&path).unwrap().torn_bytes, 0);
    // Out of sequence: an error naming the line, for every reader.
    let text = std::fs::read_to_string(&path).unwrap().replacen("\"step\":2", "\"step\":7", 1);
    std::fs::write(&path, text).unwrap();
    let e = read_ledger(&path).unwrap_err().to_string();
    assert!(e.contains("line 2: step 7 out of sequence"), "{e}");
    assert!(Ledger::open(&path).unwrap_err().to_string().contains("line 2: step 7 out of sequence"));
}

/// `dpaudit train` on the fixture with `noise` and `lot` into `out` (a short run).
fn short_train(out: &Path, noise: &str, lot: &str, resume: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dpaudit"));
    c.args(["train", "--dataset", "fixture", "--model", "logreg", "--steps", "3", "--lot-size", lot])
        .args(["--noise-multiplier", noise, "--lr", "0.5", "--seed", "5", "--threads", "1", "--out"])
        .arg(out);
    if resume {
        c.arg("--resume");
    }
    c.output().unwrap()
}

#[test]
fn a_resume_with_another_recipe_is_refused_before_the_ledger_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = short_train(&out, "1.1", "100", false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |name: &str| std::fs::read(out.join(name)).unwrap();
    let (ledger, recipe, checkpoint) = (read("ledger.jsonl"), read("recipe.toml"), read("checkpoint.json"));
    for (noise, lot, field, says, asks) in
        [("0.9", "100", "noise multiplier", "1.1", "0.9"), ("1.1", "50", "lot size", "100", "50")]
    {
        let o = short_train(&out, noise, lot, true);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "a resume with {field} {asks} was accepted");
        let expected = format!("recipe.toml says {field} {says}, this invocation asks for {asks}");
        assert!(err.contains(&expected), "expected {expected:?} in: {err}");
        assert_eq!(read("ledger.jsonl"), ledger, "the refused resume changed the ledger");
        assert_eq!(read("recipe.toml"), recipe, "the refused resume rewrote recipe.toml");
        assert_eq!(read("checkpoint.json"), checkpoint, "the refused resume changed the checkpoint");
    }
    // Both changed at once: both named.
    let o = short_train(&out, "0.9", "50", true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("noise multiplier 1.1") && err.contains("lot size 100"), "{err}");
    assert_eq!(read("ledger.jsonl"), ledger);
    // The same recipe resumes (the run is complete: no step is added) and recipe.toml is kept.
    let o = short_train(&out, "1.1", "100", true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read("ledger.jsonl"), ledger);
    assert_eq!(read("recipe.toml"), recipe);
    // A folder from before recipe.toml: its checkpoint's configuration is checked instead, and no
    // recipe.toml is written on the resume.
    std::fs::remove_file(out.join("recipe.toml")).unwrap();
    let o = short_train(&out, "0.9", "100", true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a resume of an old folder with another sigma was accepted");
    assert!(err.contains("checkpoint.json says noise multiplier 1.1, this invocation asks for 0.9"), "{err}");
    assert_eq!(read("ledger.jsonl"), ledger);
    let o = short_train(&out, "1.1", "100", true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("recipe.toml").exists(), "a resume wrote recipe.toml");
}

#[test]
fn a_resume_after_a_crash_with_the_same_recipe_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = short_train(&out, "1.1", "100", false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recipe = std::fs::read(out.join("recipe.toml")).unwrap();
    // A crash before the first checkpoint: the ledger stays, the checkpoint is gone.
    std::fs::remove_file(out.join("checkpoint.json")).unwrap();
    std::fs::remove_file(out.join("metrics.json")).unwrap();
    let before = ledger_lines(&out);
    // Another recipe is refused without a line added to the ledger.
    let o = short_train(&out, "0.9", "100", true);
    assert!(!o.status.success());
    assert_eq!(ledger_lines(&out), before);
    // The same recipe restarts, keeping the 3 recorded steps counted, and adds its own 3.
    let o = short_train(&out, "1.1", "100", true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ledger_lines(&out), before + 3);
    assert_eq!(std::fs::read(out.join("recipe.toml")).unwrap(), recipe);
    assert!(out.join("metrics.json").exists());
}
