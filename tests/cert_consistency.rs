//! Cross-checks of a run folder's files on a real (tiny) training run: `metrics.json` edited in
//! each field that certificates and reports rely on (injected fault, noise multiplier, sampling
//! rate, steps, noise seeding, the phases read back from the ledger) no longer agrees with
//! `ledger.jsonl` or `checkpoint.json`, and `cert sign` and `report` refuse the folder with an
//! error naming both files and the field; so is a DP-GAN release whose run was edited. A
//! `metrics.json` or `release.json` written before `schema_version` was recorded is still signed;
//! one of a newer version (and an `audit.json` of one) is refused. `cert sign` defaults to the
//! run's own delta, as `report` does.
use dpaudit::cert::keys::generate_keypair;
use dpaudit::cert::sign::{sign_run, CertifyOptions};
use dpaudit::report::{self, ReportOptions};
use dpaudit::Error;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DELTA: f64 = 1e-5;

/// One private run (logreg on the bundled fixture, q = 100 / 2000, sigma = 1.2, 20 steps, noise
/// from the OS CSPRNG), trained once, and a key pair.
struct Shared {
    dir: tempfile::TempDir,
    run: PathBuf,
    secret_key: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let out = Command::new(env!("CARGO_BIN_EXE_dpaudit"))
            .current_dir(ROOT)
            .args(["train", "--dataset", "fixture", "--model", "logreg", "--epochs", "1", "--lot-size", "100"])
            .args(["--noise-multiplier", "1.2", "--max-grad-norm", "1", "--threads", "1", "--checkpoint-every", "0"])
            .arg("--out")
            .arg(&run)
            .output()
            .unwrap();
        assert!(out.status.success(), "dpaudit train: {}", String::from_utf8_lossy(&out.stderr));
        let keys = generate_keypair(&dir.path().join("keys")).unwrap();
        Shared { run, secret_key: keys.secret_key_path, dir }
    })
}

/// A copy of the shared run's files with `metrics.json` edited by `edit`.
fn edited_copy(name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let s = shared();
    let copy = s.dir.path().join(name);
    std::fs::create_dir(&copy).unwrap();
    for f in ["metrics.json", "ledger.jsonl", "model.safetensors", "checkpoint.json"] {
        std::fs::copy(s.run.join(f), copy.join(f)).unwrap();
    }
    let mut m: Value = serde_json::from_slice(&std::fs::read(copy.join("metrics.json")).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(copy.join("metrics.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    copy
}

fn sign(run: &Path, options: &CertifyOptions) -> dpaudit::error::Result<()> {
    let out = run.join(format!("cert-{}.json", rand::random::<u32>()));
    sign_run(run, options, &shared().secret_key, &out).map(|_| ())
}

#[test]
fn the_real_run_is_signed_and_so_is_its_metrics_without_schema_version() {
    let s = shared();
    let m: Value = serde_json::from_slice(&std::fs::read(s.run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["schema_version"], 1, "written from now on");
    sign(&s.run, &CertifyOptions::model(DELTA)).unwrap();
    // A metrics.json written before schema_version was recorded reads as version 1.
    let old = edited_copy("old-format", |m| {
        m.as_object_mut().unwrap().remove("schema_version");
    });
    sign(&old, &CertifyOptions::model(DELTA)).unwrap();
    report::build(&ReportOptions::for_run(&old)).unwrap();
    // One of a version this dpaudit does not know is refused, saying so.
    let newer = edited_copy("newer-format", |m| m["schema_version"] = json!(2));
    let e = sign(&newer, &CertifyOptions::model(DELTA)).unwrap_err().to_string();
    assert!(e.contains("schema_version 2"), "{e}");
}

#[test]
fn an_edited_field_of_metrics_json_is_refused_naming_both_files_and_the_field() {
    // Seeded noise is allowed here, so that the noise-seeding edit is refused for disagreeing with
    // the ledger, not for being seeded.
    let options = CertifyOptions { allow_seeded_noise: true, ..CertifyOptions::model(DELTA) };
    // (copy name, the edit, the field, the first file, the second file) of each case.
    type Case = (&'static str, fn(&mut Value), &'static str, &'static str, &'static str);
    let cases: [Case; 7] = [
        ("fault", |m| m["inject_fault"] = json!("no-clip"), "injected fault", "metrics.json", "checkpoint.json"),
        (
            "sigma",
            |m| m["config"]["noise_multiplier"] = json!(0.9),
            "noise multiplier",
            "metrics.json",
            "ledger.jsonl step 1",
        ),
        ("q", |m| m["sampling_rate"] = json!(0.1), "sampling rate", "metrics.json", "ledger.jsonl step 1"),
        ("steps", |m| m["steps"] = json!(m["steps"].as_u64().unwrap() + 1), "steps", "metrics.json", "checkpoint.json"),
        (
            "fewer-steps",
            |m| m["steps"] = json!(m["steps"].as_u64().unwrap() - 1),
            "steps",
            "metrics.json",
            "checkpoint.json",
        ),
        ("seeding", |m| m["noise_seeding"] = json!("seeded"), "noise seeding", "metrics.json", "ledger.jsonl"),
        (
            "phases",
            |m| m["phases"][0]["noise_multiplier"] = json!(5.0),
            "noise multiplier",
            "metrics.json phases",
            "ledger.jsonl step 1",
        ),
    ];
    for (name, edit, want_field, want_first, want_second) in cases {
        let run = edited_copy(name, edit);
        for (what, result) in
            [("cert sign", sign(&run, &options)), ("report", report::build(&ReportOptions::for_run(&run)).map(|_| ()))]
        {
            match result {
                Err(Error::Inconsistent(i)) => {
                    assert_eq!(
                        (i.field, i.first.as_str(), i.second.as_str()),
                        (want_field, want_first, want_second),
                        "{name}: {what}"
                    );
                }
                other => panic!("{name}: {what} should refuse an inconsistent folder, got {other:?}"),
            }
        }
    }
    // The message names both files, the field and both values.
    let run = shared().dir.path().join("sigma");
    let e = sign(&run, &options).unwrap_err().to_string();
    assert!(e.contains("metrics.json says noise multiplier 0.9 but ledger.jsonl step 1 says 1.2"), "{e}");
}

/// A DP-GAN release: signed as sampled, and with a `release.json` written before
/// `schema_version` was recorded; refused when the GAN run's `metrics.json` disagrees with its
/// ledger about the noise multiplier.
#[test]
fn a_gan_release_is_signed_and_an_edited_gan_run_is_refused() {
    use dpaudit::gan::dpgan::{Design, GanConfig};
    use dpaudit::gan::release::{sample_release, SampleOptions};
    use dpaudit::gan::run::{train_gan, GanRunSpec};
    let dir = tempfile::tempdir().unwrap();
    let train =
        dpaudit::data::load_mnist_dir(&Path::new(ROOT).join("fixtures/mnist-small"), dpaudit::data::Split::Train, 10)
            .unwrap();
    let spec = GanRunSpec {
        config: GanConfig { design: Design::Joint, lot_size: 100.0, noise_multiplier: 1.0, ..GanConfig::default() },
        epochs: 0.1,
        delta: DELTA,
        target_epsilon: None,
        seed: Some(3),
        force: false,
        resume: false,
        checkpoint_every: 0,
    };
    let run = dir.path().join("gan");
    train_gan(&spec, &train, &run, tch::Device::Cpu, &mut |_, _, _| {}).unwrap();
    let release = dir.path().join("release");
    sample_release(&run, &release, &SampleOptions::new(20, Some(1)), false, tch::Device::Cpu).unwrap();
    let keys = generate_keypair(&dir.path().join("keys")).unwrap();
    let mut opts = CertifyOptions { allow_seeded_noise: true, ..CertifyOptions::model(DELTA) };
    opts.kind = dpaudit::cert::schema::ArtifactKind::SyntheticDataset;
    let sign = |name: &str| {
        dpaudit::cert::sign::sign_release(&release, &run, &opts, &keys.secret_key_path, &dir.path().join(name))
    };
    let edit = |path: PathBuf, f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    };
    sign("c1.json").unwrap();
    // release.json and metrics.json as written before schema_version (release.json is certified
    // by its hash, which changes: the edit is before signing).
    edit(release.join("release.json"), &|v| {
        assert_eq!(v["schema_version"], 1);
        v.as_object_mut().unwrap().remove("schema_version");
    });
    edit(run.join("metrics.json"), &|v| {
        assert_eq!(v["schema_version"], 1);
        v.as_object_mut().unwrap().remove("schema_version");
    });
    sign("c2.json").unwrap();
    edit(run.join("metrics.json"), &|v| v["config"]["noise_multiplier"] = json!(0.5));
    match sign("c3.json") {
        Err(Error::Inconsistent(i)) => {
            assert_eq!(
                (i.field, i.first.as_str(), i.second.as_str()),
                ("noise multiplier", "metrics.json", "ledger.jsonl step 1")
            );
        }
        other => panic!("an edited GAN run must be refused as inconsistent, got {other:?}"),
    }
}

/// `cert sign` without `--delta` certifies at the delta the run reported (as `report` claims it),
/// and 1e-5 only when the run reported none.
#[test]
fn cert_sign_defaults_to_the_runs_own_delta() {
    let s = shared();
    let run = s.dir.path().join("delta-1e-6");
    let train = Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .current_dir(ROOT)
        .args(["train", "--dataset", "fixture", "--model", "logreg", "--epochs", "1", "--lot-size", "100"])
        .args(["--noise-multiplier", "1.2", "--threads", "1", "--delta", "1e-6", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(train.status.success(), "{}", String::from_utf8_lossy(&train.stderr));
    let delta_of = |run: &Path, extra: &[&str]| {
        let cert = run.join(format!("cert-{}.json", rand::random::<u32>()));
        let o = Command::new(env!("CARGO_BIN_EXE_dpaudit"))
            .args(["cert", "sign", "--key"])
            .arg(&s.secret_key)
            .arg("--run")
            .arg(run)
            .arg("--out")
            .arg(&cert)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let c: Value = serde_json::from_slice(&std::fs::read(&cert).unwrap()).unwrap();
        c["certificate"]["privacy"]["delta"].as_f64().unwrap()
    };
    assert_eq!(delta_of(&run, &[]), 1e-6);
    assert_eq!(delta_of(&run, &["--delta", "1e-7"]), 1e-7);
    assert_eq!(report::build(&ReportOptions::for_run(&run)).unwrap().claim.delta, 1e-6);
    assert_eq!(delta_of(&s.run, &[]), 1e-5);
}

/// An `audit.json` of a schema version this dpaudit does not know is refused by the report.
#[test]
fn an_audit_json_of_a_newer_version_is_refused() {
    let s = shared();
    let audit = s.dir.path().join("audit-v2");
    std::fs::create_dir(&audit).unwrap();
    let mut a: Value =
        serde_json::from_slice(&std::fs::read(Path::new(ROOT).join("fixtures/report/audit.json")).unwrap()).unwrap();
    a["schema_version"] = json!(2);
    std::fs::write(audit.join("audit.json"), a.to_string()).unwrap();
    let mut o = ReportOptions::for_run(&s.run);
    o.audits = vec![audit];
    let e = report::build(&o).unwrap_err().to_string();
    assert!(e.contains("schema_version 2"), "{e}");
}
