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
    c.args(["train", "--dataset", "fixture", "--model", "logreg", "--epochs", "4", "--lot-size", "100", "--noise-multiplier", "1.0",
        "--lr", "0.5", "--checkpoint-every", "7", "--seed", "5", "--threads", "1", "--out"]);
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

#[test]
fn kill_9_at_random_moments_never_undercounts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let mut kills = 0;
    for round in 0..6 {
        let mut child = train_cmd(&out, round > 0).spawn().unwrap();
        // The first kill comes early (before the first checkpoint at step 7, often before any
        // step); later ones at random moments of the run.
        let wait = if round == 0 { rng.gen_range(300..700) } else { rng.gen_range(400..1500) };
        std::thread::sleep(Duration::from_millis(wait));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        if out.join("ledger.jsonl").exists() {
            let ledger = Ledger::open(out.join("ledger.jsonl")).expect("the ledger must survive kill -9");
            assert!(ledger.steps() >= checkpoint_steps(&out), "ledger {} < checkpoint {}", ledger.steps(), checkpoint_steps(&out));
        }
    }
    assert!(kills > 0, "no run was killed: the test did not test anything");
    let status = train_cmd(&out, true).status().unwrap();
    assert!(status.success());
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let ledger = Ledger::open(out.join("ledger.jsonl")).unwrap();
    let applied = metrics["steps"].as_u64().unwrap();
    assert_eq!(applied, 80, "4 epochs at q = 100/2000");
    assert!(ledger.steps() >= applied, "ledger {} < applied updates {applied}", ledger.steps());
    let accounted: u64 = metrics["phases"].as_array().unwrap().iter().map(|p| p["steps"].as_u64().unwrap()).sum();
    assert_eq!(accounted, ledger.steps(), "epsilon must be computed from every ledger step");
}
