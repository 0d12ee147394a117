//! Runs trained elsewhere (issue 27, item 6): `dpaudit import` makes a run folder from a model and
//! the trainer's privacy history; `cert sign` recomputes epsilon from that history with dpaudit's
//! accountants and says the training code was not dpaudit's; tampering and bad histories are refused.
use dpaudit::accounting::{rdp, Phase};
use dpaudit::cert::keys::{generate_keypair, load_secret_key};
use dpaudit::cert::sign::{certify_run, sign, write_signed};
use dpaudit::cert::{verify, CertifyOptions};
use dpaudit::imported::{import_run, ImportOptions, ImportedData, PrivacyHistory};
use dpaudit::train::noise::NoiseSeeding;
use std::path::{Path, PathBuf};
use std::process::Command;

const DELTA: f64 = 1e-5;

/// A minimal safetensors file: one f32 tensor of 4 values.
fn safetensors(path: &Path) {
    let header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    for x in [0.5f32, -1.0, 2.0, 0.25] {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

struct Setup {
    tmp: tempfile::TempDir,
    model: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.safetensors");
    safetensors(&model);
    Setup { tmp, model }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn options(noise: Option<NoiseSeeding>) -> ImportOptions {
    ImportOptions { trainer: Some("opacus 1.6.0".into()), clipping_norm: Some(1.0), noise_seeding: noise }
}

fn hash() -> ImportedData {
    ImportedData::Sha256("cd".repeat(32))
}

#[test]
fn an_imported_opacus_history_is_certified_with_dpaudits_own_epsilon_and_says_whose_code_trained_it() {
    let s = setup();
    let history = write(s.tmp.path(), "history.json", "[[1.1, 0.01, 300], [0.9, 0.02, 50]]");
    let run = s.tmp.path().join("run");
    import_run(&s.model, &history, &hash(), &options(Some(NoiseSeeding::Csprng)), &run).unwrap();
    // The history is kept byte for byte; the ledger is its transcription.
    assert_eq!(std::fs::read(run.join("privacy-history.json")).unwrap(), std::fs::read(&history).unwrap());
    assert_eq!(std::fs::read_to_string(run.join("ledger.jsonl")).unwrap().lines().count(), 350);

    let key = generate_keypair(&s.tmp.path().join("keys")).unwrap();
    let secret = load_secret_key(&key.secret_key_path).unwrap();
    let cert = certify_run(&run, &CertifyOptions::model(DELTA), &secret).unwrap();
    let ext = cert.external_training.as_ref().expect("an imported run's certificate names its trainer");
    assert_eq!(ext.trainer, "opacus 1.6.0");
    assert_eq!(ext.data_hash_source, "given");
    assert!(cert.limitations.iter().any(|l| l.contains("The training code was not dpaudit's")));
    assert!(cert.limitations.iter().any(|l| l.contains("No audit backs this claim")));
    // Epsilon is dpaudit's, from the history: the RDP accountant on the same phases.
    let phases = [Phase::new(0.01, 1.1, 300).unwrap(), Phase::new(0.02, 0.9, 50).unwrap()];
    let rdp = rdp::epsilon(&phases, DELTA).unwrap().epsilon;
    let certified = cert.privacy.epsilons.iter().find(|e| e.accountant == "rdp").unwrap().epsilon.value();
    assert_eq!(certified, rdp);
    assert!(cert.privacy.verified_epsilon.epsilon.value() >= rdp * (1.0 - 1e-9));

    let signed = sign(&cert, &secret).unwrap();
    let out = s.tmp.path().join("cert.json");
    write_signed(&out, &signed).unwrap();
    verify(&out, &key.public_key_path, Some(&run), true).expect("the certificate verifies and its epsilon re-derives");
}

#[test]
fn a_protocol_claim_file_keeps_the_trainers_own_claim_beside_dpaudits() {
    let s = setup();
    let claim = write(
        s.tmp.path(),
        "claim.json",
        r#"{"epsilon": 0.5, "delta": 1e-5, "accountant": "prv", "sampling": "poisson", "library": "opacus 1.6.0",
            "noise_seeding": "csprng", "history": [{"noise_multiplier": 1.1, "sample_rate": 0.01, "steps": 300, "max_grad_norm": 2.0}]}"#,
    );
    let run = s.tmp.path().join("run");
    let opts = ImportOptions { trainer: None, clipping_norm: None, noise_seeding: None };
    let p = import_run(&s.model, &claim, &hash(), &opts, &run).unwrap();
    assert_eq!(p.trainer, "opacus 1.6.0");
    assert_eq!(p.trainer_claim.as_ref().unwrap().epsilon, 0.5);
    let key = generate_keypair(&s.tmp.path().join("keys")).unwrap();
    let secret = load_secret_key(&key.secret_key_path).unwrap();
    let cert = certify_run(&run, &CertifyOptions::model(DELTA), &secret).unwrap();
    // The trainer under-claimed (0.5 against dpaudit's ~1.15): the certificate shows both numbers.
    let line = cert.limitations.iter().find(|l| l.contains("The trainer claimed epsilon 0.5")).unwrap();
    assert!(line.contains("dpaudit's verified epsilon from the same history is 1.1"), "{line}");
    assert_eq!(cert.mechanism.phases[0].clipping_norm, 2.0);
}

#[test]
fn tampering_with_an_imported_folder_is_refused_at_signing() {
    let s = setup();
    let history = write(s.tmp.path(), "history.json", "[[1.1, 0.01, 30]]");
    let key = generate_keypair(&s.tmp.path().join("keys")).unwrap();
    let secret = load_secret_key(&key.secret_key_path).unwrap();
    let opts = CertifyOptions::model(DELTA);

    let run = s.tmp.path().join("edited-history");
    import_run(&s.model, &history, &hash(), &options(Some(NoiseSeeding::Csprng)), &run).unwrap();
    std::fs::write(run.join("privacy-history.json"), "[[5.0, 0.01, 30]]").unwrap();
    let e = certify_run(&run, &opts, &secret).unwrap_err().to_string();
    assert!(e.contains("differs from the history that was imported"), "{e}");

    let run = s.tmp.path().join("edited-ledger");
    import_run(&s.model, &history, &hash(), &options(Some(NoiseSeeding::Csprng)), &run).unwrap();
    let ledger = std::fs::read_to_string(run.join("ledger.jsonl")).unwrap();
    let kept: Vec<&str> = ledger.lines().take(29).collect();
    std::fs::write(run.join("ledger.jsonl"), kept.join("\n") + "\n").unwrap();
    let e = certify_run(&run, &opts, &secret).unwrap_err().to_string();
    assert!(e.contains("metrics.json says steps 30 but ledger.jsonl says 29 steps"), "{e}");
    // A step whose noise multiplier was edited is not the history's transcription.
    let edited = ledger.replacen("\"noise_multiplier\":1.1", "\"noise_multiplier\":1.5", 1);
    assert_ne!(edited, ledger);
    std::fs::write(run.join("ledger.jsonl"), edited).unwrap();
    let e = certify_run(&run, &opts, &secret).unwrap_err().to_string();
    assert!(e.contains("step 1 is not the transcription"), "{e}");

    // Nothing says how the trainer drew its noise: taken as reproducible, refused.
    let run = s.tmp.path().join("unstated-noise");
    import_run(&s.model, &history, &hash(), &options(None), &run).unwrap();
    let e = certify_run(&run, &opts, &secret).unwrap_err().to_string();
    assert!(e.contains("was trained elsewhere and nothing says how its noise was drawn"), "{e}");
}

#[test]
fn bad_histories_and_models_are_refused_before_any_folder_is_made() {
    let s = setup();
    let run = s.tmp.path().join("run");
    let cases = [
        ("nan sigma", r#"[[NaN, 0.01, 3]]"#, "not JSON"),
        ("q above 1", "[[1.1, 1.5, 3]]", "phase 1"),
        ("zero steps", "[[1.1, 0.01, 0]]", "zero steps"),
        ("empty", "[]", "no phase"),
        (
            "shuffling",
            r#"{"sampling": "shuffle", "history": [{"noise_multiplier": 1, "sample_rate": 0.1, "steps": 3}]}"#,
            "only Poisson",
        ),
        (
            "epsilon without delta",
            r#"{"epsilon": 1, "history": [{"noise_multiplier": 1, "sample_rate": 0.1, "steps": 3}]}"#,
            "without its delta",
        ),
        ("unknown field", r#"{"histori": []}"#, "not a claim.json"),
        ("too many steps", "[[1.1, 0.01, 60000000]]", "at most"),
    ];
    for (what, text, expected) in cases {
        let h = write(s.tmp.path(), "h.json", text);
        let e = import_run(&s.model, &h, &hash(), &options(None), &run).unwrap_err().to_string();
        assert!(e.contains(expected), "{what}: {e}");
        assert!(e.contains("h.json"), "{what}: the error names the file: {e}");
        assert!(!run.exists(), "{what}: no folder is left behind");
    }
    let h = write(s.tmp.path(), "h.json", "[[1.1, 0.01, 3]]");
    let not_a_model = write(s.tmp.path(), "model.pt", "PK\u{3}\u{4} a pickle, not safetensors");
    let e = import_run(&not_a_model, &h, &hash(), &options(None), &run).unwrap_err().to_string();
    assert!(e.contains("not a safetensors model"), "{e}");
    let e = import_run(&s.model, &h, &ImportedData::Sha256("XY".into()), &options(None), &run).unwrap_err().to_string();
    assert!(e.contains("64 lowercase hex"), "{e}");
    assert!(!run.exists());
    // An existing folder is never overwritten.
    std::fs::create_dir(&run).unwrap();
    let e = import_run(&s.model, &h, &hash(), &options(None), &run).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    // Parsing alone accepts both forms.
    assert_eq!(PrivacyHistory::parse(b"[[1.0, 0.5, 2]]", Path::new("x")).unwrap().steps(), 2);
}

#[test]
fn the_cli_imports_and_the_report_says_the_training_code_was_not_dpaudits() {
    let s = setup();
    let history = write(s.tmp.path(), "history.json", "[[1.1, 0.01, 30]]");
    let run = s.tmp.path().join("run");
    let bin = env!("CARGO_BIN_EXE_dpaudit");
    let out = Command::new(bin)
        .args(["import", "--model"])
        .arg(&s.model)
        .arg("--history")
        .arg(&history)
        .args(["--data", "fixtures/mnist-small", "--max-grad-norm", "1", "--noise", "csprng", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = s.tmp.path().join("report.md");
    let out = Command::new(bin).arg("report").arg("--run").arg(&run).arg("--out").arg(&report).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("not by dpaudit"), "{text}");
    assert!(text.contains("The training code was not dpaudit's"));
    assert!(!text.contains("ChaCha20"), "the report must not describe dpaudit's noise for a trainer it did not run");
    // keygen and cert sign speak JSON for scripts; the signed certificate names the trainer.
    let keys = s.tmp.path().join("keys");
    let out = Command::new(bin).arg("keygen").arg("--out").arg(&keys).arg("--json").output().unwrap();
    let k: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = k["secret_key"].as_str().unwrap().to_owned();
    let cert = s.tmp.path().join("cert.json");
    let out = Command::new(bin)
        .args(["cert", "sign", "--run"])
        .arg(&run)
        .args(["--key", &secret, "--json", "--out"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(signed["key_id"], k["key_id"]);
    assert_eq!(signed["external_training"]["trainer"], "unnamed trainer");
    // Without the clipping norm the CLI refuses, naming what is missing.
    let out = Command::new(bin)
        .args(["import", "--model"])
        .arg(&s.model)
        .arg("--history")
        .arg(&history)
        .args(["--data-sha256", &"ab".repeat(32), "--out"])
        .arg(s.tmp.path().join("run2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_grad_norm"));
}
