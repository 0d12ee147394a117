//! The real Opacus adapter (`adapters/opacus/train.py`, Opacus 1.6.0 `make_private`) audited end to
//! end through `dpaudit audit run`, small K: the protocol, worker mode, Opacus' own claim read back
//! and recomputed, and statistic selection. The long audits are `benches/external_audits.sh`.
//!
//! Needs the project's `.venv` with Opacus (installed by `scripts/setup.sh`); skipped with a message
//! where it is missing.
use std::path::Path;
use std::process::Command;

fn opacus_python() -> Option<&'static str> {
    let py = ".venv/bin/python";
    let ok = Path::new(py).exists()
        && Command::new(py).args(["-c", "import opacus, safetensors"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: .venv/bin/python with opacus and safetensors is missing (run scripts/setup.sh)");
    }
    ok.then_some(py)
}

#[test]
fn an_opacus_recipe_is_audited_end_to_end_with_its_own_claim() {
    let Some(_) = opacus_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spec = std::fs::read_to_string("audits/external/opacus-logreg-n200.toml")
        .unwrap()
        .replace("runs_per_side = 500", "runs_per_side = 12")
        .replace("steps = 20", "steps = 5");
    assert!(spec.contains("runs_per_side = 12"));
    let spec_path = tmp.path().join("opacus-small.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let out = tmp.path().join("audit");
    let run = Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(["audit", "run"])
        .arg(&spec_path)
        .arg("--out")
        .arg(&out)
        .args(["--allow-inconclusive", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    // 12 runs per side cannot refute Opacus' claim: inconclusive (12), or consistent (0); never an error.
    assert!(matches!(run.status.code(), Some(0 | 12)), "exit {:?}: {stderr}", run.status.code());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("audit.json")).unwrap()).unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 24);
    // Opacus' own claim, read from each run's claim.json: positive and finite.
    let claim = report["claim"]["epsilon"].as_f64().unwrap();
    assert!(claim > 0.0 && claim.is_finite(), "{claim}");
    // Every run carries the trainer's statistics and the ledger phases of Opacus' accountant history.
    for r in report["runs"].as_array().unwrap() {
        let stats = r["statistics"].as_object().unwrap();
        assert!(stats.contains_key("trainer:canary-loss") && stats.contains_key("param-change-norm"), "{stats:?}");
        let phases = r["ledger_phases"].as_array().unwrap();
        assert_eq!(phases[0][1].as_f64(), Some(1.1), "Opacus' noise multiplier");
        assert_eq!(r["ledger_steps"].as_u64(), Some(5));
    }
    // The statistic was selected on held-out runs, and the report says which.
    assert!(report["statistic_selection"].is_object(), "{}", report["statistic_selection"]);
}
