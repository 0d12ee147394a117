//! Membership inference against an external trainer (`[target] kind = "command"` in the spec of
//! `dpaudit attack mia`, docs/external-trainers.md) end to end through the CLI, with the
//! plain-PyTorch DP-SGD adapter `adapters/plain_dpsgd/train.py`: worker mode, every model's
//! confidences computed from the logits its trainer wrote; and once mode with a trainer that
//! writes a wrong-length `population_logits.npy` for one model: the experiment stops naming the
//! model and the file, the models recorded before it are kept, and running the command again
//! resumes.
//!
//! The memberships, the model seeds and the adapter's randomness are all seeded, so each test is
//! deterministic: it cannot flake. They assert structure, not attack strength (the AUCs are in
//! `mia.json`; no threshold on them is asserted).
use std::path::{Path, PathBuf};
use std::process::Output;

const PYTHON: &str = ".venv/bin/python";
const ADAPTER: &str = "adapters/plain_dpsgd/train.py";
const POPULATION: usize = 40;

/// Whether the adapter's Python (with torch and numpy) exists; a skipped test says why.
fn have_python() -> bool {
    let ok = Path::new(PYTHON).exists();
    if !ok {
        eprintln!("SKIPPED: {PYTHON} does not exist, so the external trainer cannot run");
    }
    ok
}

/// A spec of `models - 1` shadows whose target is the command `argv`.
fn write_spec(dir: &Path, mode: &str, argv: &[String], workers: usize, shadows: u64) -> PathBuf {
    let p = dir.join("spec.toml");
    let text = format!(
        "name = \"command-mia\"\n[data]\ndataset = \"fixture\"\npopulation = {POPULATION}\n[target]\nkind = \"command\"\nmode = \"{mode}\"\nargv = {argv:?}\ndataset = \"fixture\"\nworkers = {workers}\ntimeout_seconds = 300\n[target.options]\nsteps = 60\nsample_rate = 0.5\nlot_size = 10\nnoise_multiplier = 1e-8\nmax_grad_norm = 100.0\nlr = 1.0\n[attack]\nshadows = {shadows}\nseed = 5\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn mia(spec: &Path, out: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(["attack", "mia", "--json", "--target-config"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// The data of a little-endian `.npy` file after its header.
fn npy_data(bytes: &[u8]) -> &[u8] {
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    &bytes[10 + len..]
}

/// Worker mode: nine models (a target and eight shadows), each trained by the adapter; mia.json
/// holds the three attacks on the 40 examples, the target's epsilon accounted from the trainer's
/// claim; every record's phi is the one the logits its own trainer run wrote give.
#[test]
fn worker_mode_models_come_from_the_trainer() {
    if !have_python() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("trainer-logits");
    std::fs::create_dir(&log).unwrap();
    // The adapter in worker mode, keeping a copy of each run's logits (named by its seed).
    let wrapper = root.path().join("keep_logits.py");
    let repo = std::env::current_dir().unwrap();
    std::fs::write(
        &wrapper,
        format!(
            r#"import os, shutil, sys
sys.path.insert(0, {adapters:?})
sys.path.insert(0, {plain:?})
import protocol
from train import train
handle = protocol.handle
def keep(request, train):
    handle(request, train)
    shutil.copy(os.path.join(request["out"], "population_logits.npy"), os.path.join({log:?}, str(request["seed"]) + ".npy"))
protocol.handle = keep
sys.exit(protocol.serve(train, ["--worker"]))
"#,
            adapters = repo.join("adapters").display().to_string(),
            plain = repo.join("adapters/plain_dpsgd").display().to_string(),
            log = log.display().to_string(),
        ),
    )
    .unwrap();
    let argv = vec![PYTHON.to_string(), wrapper.display().to_string()];
    let spec = write_spec(root.path(), "worker", &argv, 2, 8);
    let out = root.path().join("out");
    let o = mia(&spec, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["models"], 9);
    assert_eq!(report["population"], POPULATION);
    let names: Vec<&str> =
        report["attacks"].as_array().unwrap().iter().map(|a| a["attack"].as_str().unwrap()).collect();
    assert_eq!(names, ["loss", "lira-offline", "lira-online"]);
    for a in report["attacks"].as_array().unwrap() {
        let m = &a["metrics"];
        assert_eq!(m["members"].as_u64().unwrap() + m["non_members"].as_u64().unwrap(), POPULATION as u64);
        let auc = m["auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{auc}");
    }
    // The claim.json history, accounted by dpaudit's accountants.
    assert_eq!(report["privacy"]["private"], true);
    let accountants: Vec<&str> =
        report["privacy"]["epsilons"].as_array().unwrap().iter().map(|e| e["accountant"].as_str().unwrap()).collect();
    assert_eq!(accountants, ["rdp", "pld"]);
    assert!(std::fs::read_to_string(out.join("mia.json")).is_ok());
    // Each model's phi is what its own trainer run's logits give (labels from the population
    // folder dpaudit wrote).
    let y = std::fs::read(out.join("datasets/population/y.npy")).unwrap();
    let labels: Vec<usize> =
        npy_data(&y).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize).collect();
    assert_eq!(labels.len(), POPULATION);
    let runs = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = runs.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 9);
    assert_eq!(std::fs::read_dir(&log).unwrap().count(), 9, "one trainer run per model");
    for r in &records {
        let bytes = std::fs::read(log.join(format!("{}.npy", r["seed"]))).unwrap();
        let z: Vec<f64> = npy_data(&bytes).chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(z.len(), POPULATION * 10);
        let phi = r["phi"].as_array().unwrap();
        for (i, (row, &yi)) in z.chunks_exact(10).zip(&labels).enumerate() {
            let others: f64 = row.iter().enumerate().filter(|&(j, _)| j != yi).map(|(_, v)| v.exp()).sum();
            let want = row[yi] - others.ln();
            let got = phi[i].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * (1.0 + want.abs()),
                "model {}: example {i}: {got} vs {want}",
                r["index"]
            );
        }
    }
    // Each model's dataset and output folders are gone once it is recorded; the population stays.
    assert_eq!(std::fs::read_dir(out.join("trainer-runs")).unwrap().count(), 0);
    let left: Vec<String> = std::fs::read_dir(out.join("datasets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["population"]);
}

/// Once mode: model 2's trainer writes 39 rows of logits for the 40 examples: the run stops
/// with an error naming model 2 and population_logits.npy, exit non-zero, models 0 and 1 kept
/// (one worker trains the models in order); with the fault gone the same command resumes and
/// leaves the kept records as they were.
#[test]
fn wrong_length_logits_stop_the_run_naming_the_model_and_file() {
    if !have_python() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let fault = root.path().join("fault-on");
    std::fs::write(&fault, "").unwrap();
    let script = format!(
        "{PYTHON} {ADAPTER} --request {{request}} && if [ -e {fault} ]; then case {{out}} in */model-2) {PYTHON} -c \"import sys, numpy; numpy.save(sys.argv[1], numpy.zeros((39, 10)))\" {{out}}/population_logits.npy;; esac; fi",
        fault = fault.display()
    );
    let argv = vec!["sh".to_string(), "-c".to_string(), script];
    let spec = write_spec(root.path(), "once", &argv, 1, 4);
    let out = root.path().join("out");
    let o = mia(&spec, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("model 2 "), "{stderr}");
    assert!(stderr.contains("trainer-runs/model-2/population_logits.npy"), "{stderr}");
    assert!(stderr.contains("has shape [39, 10], expected [40, 10]"), "{stderr}");
    let kept = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    let indices: Vec<u64> = kept
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1]);
    assert!(out.join("trainer-runs/model-2/population_logits.npy").exists(), "the failed run's folder is kept");
    assert!(!out.join("mia.json").exists());
    std::fs::remove_file(&fault).unwrap();
    let o = mia(&spec, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    assert!(all.starts_with(&kept), "the records kept are unchanged");
    assert_eq!(all.lines().count(), 5);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["models"], 5);
}
