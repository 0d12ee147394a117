//! `gan train` killed (SIGKILL) mid-run, then resumed with `--resume`: the ledger is never
//! corrupt and never counts fewer steps than the checkpoint, and the finished run has the same
//! generator (bit for bit), the same per-epoch losses and the same ledger entries as an
//! uninterrupted run with the same seed. The ledger of the resumed run holds, in addition, the
//! steps recorded after a checkpoint whose updates the kill lost (they stay counted and are taken
//! again: the over-count of `train --resume`, `tests/crash_resume.rs`); the test counts them at
//! each kill and checks that the ledger holds exactly those extra entries.
use dpaudit::accounting::ledger::Ledger;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// 1.2 epochs of 2000 fixture examples at q = 40 / 2000: 60 discriminator steps over 2 epochs,
/// checkpoints every 5, with a generator moving average (all of it must survive a resume).
fn gan_train(out: &Path, epochs: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dpaudit"));
    c.args([
        "gan",
        "train",
        "--dataset",
        "fixture",
        "--noise-multiplier",
        "1.0",
        "--epochs",
        epochs,
        "--lot-size",
        "40",
        "--z-dim",
        "8",
        "--g-width",
        "4",
        "--d-width",
        "4",
        "--g-ema",
        "0.9",
        "--checkpoint-every",
        "5",
        "--seed",
        "7",
        "--threads",
        "1",
        "--out",
    ]);
    c.arg(out).args(extra);
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn ledger_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("ledger.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

fn checkpoint_steps(out: &Path) -> u64 {
    std::fs::read_to_string(out.join("checkpoint.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["gan"]["discriminator_steps"].as_u64())
        .unwrap_or(0)
}

/// Kills the child (SIGKILL) once the ledger holds at least `at_step` lines (or after a
/// deadline); returns whether it was still running when killed.
fn kill_when(child: &mut std::process::Child, out: &Path, at_step: usize) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
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

fn sha256(path: &Path) -> String {
    dpaudit::data::sha256_file(path).unwrap()
}

/// A ledger entry without its step number (the number of an over-counted step is shifted).
fn entry_without_step(e: &dpaudit::accounting::ledger::LedgerEntry) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap();
    v.as_object_mut().unwrap().remove("step");
    v
}

fn metrics(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn a_killed_gan_run_resumes_to_the_same_generator_and_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let done = run(gan_train(&whole, "1.2", &[]));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));

    let out = dir.path().join("killed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261206);
    let (mut kills, mut target, mut overcounted) = (0, 0, 0u64);
    for round in 0..4 {
        let extra: &[&str] = if round == 0 { &[] } else { &["--resume"] };
        let mut child = gan_train(&out, "1.2", extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kills land before, on and after checkpoints (every 5 steps), well before step 60.
        target += rng.gen_range(3..14);
        if kill_when(&mut child, &out, target) {
            kills += 1;
        }
        let ledger = Ledger::open(out.join("ledger.jsonl")).expect("the ledger must survive kill -9");
        let checkpoint = checkpoint_steps(&out);
        assert!(ledger.steps() >= checkpoint, "ledger {} < checkpoint {checkpoint}", ledger.steps());
        // Entries beyond the checkpoint's steps: every step recorded after a checkpoint and lost
        // with its process (this kill's and the earlier ones'), taken again on resume.
        overcounted = ledger.steps() - checkpoint;
        target = target.max(ledger.steps() as usize);
        drop(ledger);
        if round == 0 {
            // A half-finished folder: a run without --resume is refused and says what to do,
            // and so is a resume whose options differ from the run's; neither touches the ledger.
            let before = std::fs::read(out.join("ledger.jsonl")).unwrap();
            let refused = run(gan_train(&out, "1.2", &[]));
            let e = String::from_utf8_lossy(&refused.stderr);
            assert!(!refused.status.success());
            assert!(e.contains("already holds a run") && e.contains("use --resume"), "{e}");
            let refused = run(gan_train(&out, "1.5", &["--resume"]));
            let e = String::from_utf8_lossy(&refused.stderr);
            assert!(!refused.status.success());
            // Refused by the run's recipe.toml (gan.json alone for folders without one).
            assert!(e.contains("epochs 1.2") && e.contains("asks for 1.5"), "{e}");
            assert_eq!(std::fs::read(out.join("ledger.jsonl")).unwrap(), before);
        }
    }
    assert!(kills >= 3, "only {kills} of 4 runs were killed mid-run: the test did not test enough");
    let finished = run(gan_train(&out, "1.2", &["--resume"]));
    assert!(finished.status.success(), "{}", String::from_utf8_lossy(&finished.stderr));

    assert_eq!(sha256(&out.join("generator.safetensors")), sha256(&whole.join("generator.safetensors")));
    assert_eq!(sha256(&out.join("discriminator.safetensors")), sha256(&whole.join("discriminator.safetensors")));
    let (m_whole, m_out) = (metrics(&whole), metrics(&out));
    assert_eq!(m_out["per_epoch"], m_whole["per_epoch"]);
    assert_eq!(m_out["generator_sha256"], m_whole["generator_sha256"]);

    let whole_ledger = Ledger::open(whole.join("ledger.jsonl")).unwrap();
    let out_ledger = Ledger::open(out.join("ledger.jsonl")).unwrap();
    assert_eq!(whole_ledger.steps(), 60);
    assert_eq!(out_ledger.steps(), 60 + overcounted, "the ledger holds every step taken, over-counted ones included");
    let same: Vec<_> = whole_ledger.entries().iter().map(entry_without_step).collect();
    let resumed: Vec<_> = out_ledger.entries().iter().map(entry_without_step).collect();
    assert!(resumed.iter().all(|e| *e == same[0]) && same.iter().all(|e| *e == same[0]), "same entries");
    if overcounted == 0 {
        assert_eq!(
            std::fs::read(out.join("ledger.jsonl")).unwrap(),
            std::fs::read(whole.join("ledger.jsonl")).unwrap()
        );
    }
    let accounted: u64 = m_out["phases"].as_array().unwrap().iter().map(|p| p["steps"].as_u64().unwrap()).sum();
    assert_eq!(accounted, out_ledger.steps(), "epsilon is computed from every ledger step");
}
