//! The `dpaudit` front binary: it runs `account`, `keygen`, `cert verify` and `report` itself,
//! with no libtorch, and hands every other command line to `dpaudit-torch` beside it.
use std::path::{Path, PathBuf};
use std::process::Command;

fn front() -> &'static str {
    env!("CARGO_BIN_EXE_dpaudit")
}

/// A folder holding a copy of the front binary and nothing else (no `dpaudit-torch`).
fn front_alone(dir: &Path) -> PathBuf {
    let copy = dir.join("dpaudit");
    std::fs::copy(front(), &copy).unwrap();
    copy
}

#[test]
fn the_front_alone_accounts_and_verifies_without_dpaudit_torch() {
    let dir = tempfile::tempdir().unwrap();
    let alone = front_alone(dir.path());
    let out = Command::new(&alone)
        .args([
            "account",
            "epsilon",
            "-q",
            "0.01",
            "-s",
            "1.1",
            "-t",
            "1000",
            "-d",
            "1e-5",
            "--accountant",
            "rdp",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.to_string().contains("rdp"), "{v}");

    // keygen and a certificate check run here too: an unreadable certificate is exit 2, the
    // verifier's own status, not a complaint about a missing dpaudit-torch.
    let keys = dir.path().join("keys");
    let k = Command::new(&alone).args(["keygen", "--out"]).arg(&keys).output().unwrap();
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    let bogus = dir.path().join("cert.json");
    std::fs::write(&bogus, b"{not json").unwrap();
    let v = Command::new(&alone)
        .args(["cert", "verify"])
        .arg(&bogus)
        .arg("--pubkey")
        .arg(keys.join("dpaudit-cert.pub"))
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(2), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(!String::from_utf8_lossy(&v.stderr).contains("dpaudit-torch"));
}

#[test]
fn a_command_that_trains_says_dpaudit_torch_is_missing_when_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let alone = front_alone(dir.path());
    let out = Command::new(&alone)
        .args(["train", "--dataset", "fixture", "--model", "logreg", "--noise-multiplier", "1", "--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dpaudit-torch") && err.contains("is missing"), "{err}");
    assert!(!dir.path().join("run").exists());
}

#[test]
fn the_front_hands_other_commands_over_with_their_exit_status_and_help() {
    // `audit ideal` runs in dpaudit-torch; its output and status come back unchanged.
    let out = Command::new(front()).args(["audit", "ideal", "--epsilon", "2", "--runs", "100"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A usage error in a handed-over command is clap's exit 2, under the name `dpaudit`.
    let bad = Command::new(front()).args(["train", "--no-such-flag"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("dpaudit train"), "{err}");
    // The top-level help lists every command group, those of both binaries.
    let help = Command::new(front()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for group in ["account", "train", "keygen", "cert", "audit", "gan", "report", "demo", "import", "attack"] {
        assert!(text.contains(group), "{group} missing from:\n{text}");
    }
}

#[test]
fn a_dpaudit_torch_from_another_build_refuses_to_run() {
    let torch = Path::new(front()).with_file_name("dpaudit-torch");
    let out = Command::new(&torch)
        .args(["audit", "ideal", "--epsilon", "2", "--runs", "100"])
        .env("DPAUDIT_BUILD_ID", "another-build")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another build"));
}
