//! `dpaudit demo`, end to end on the tiny setting: every step runs, the certificates it writes
//! verify (and stop verifying when a released file changes), the reports name the claim and the
//! key, and a second demo into the same folder is refused rather than mixed in.
use dpaudit::cert::verify::verify;
use dpaudit::demo::{run_demo, DemoConfig};
use std::path::Path;
use std::process::Command;

fn tiny(dir: &Path) -> dpaudit::demo::DemoSummary {
    let config = DemoConfig::tiny("fixtures/mnist-small".into());
    run_demo(&config, &dir.join("demo"), &()).unwrap()
}

#[test]
fn tiny_demo_runs_every_step_and_its_certificates_verify() {
    let dir = tempfile::tempdir().unwrap();
    let s = tiny(dir.path());
    let out = dir.path().join("demo");

    // 1-2. The model met its target, by every accountant, on the ledger it wrote.
    let rdp = s.epsilons.iter().find(|e| e.accountant == "rdp").unwrap().epsilon;
    let pld = s.epsilons.iter().find(|e| e.accountant == "pld").unwrap().epsilon;
    let oracle = s.epsilons.iter().find(|e| e.accountant == "mpfr-oracle").unwrap().epsilon;
    assert!(rdp <= s.config.target_epsilon * (1.0 + 1e-9) && rdp > 0.5 * s.config.target_epsilon, "rdp {rdp}");
    assert!(pld <= rdp && oracle <= rdp * (1.0 + 1e-9), "pld {pld} oracle {oracle} rdp {rdp}");
    assert!(s.phases.iter().all(|p| p.sampling_rate < 1.0), "Poisson-subsampled: {:?}", s.phases);
    assert!((0.0..=1.0).contains(&s.test_accuracy));

    // 3. The audit ran 2K replays of the certified recipe and agrees with the claim; the
    // membership-inference attack scored members and non-members.
    let audit = dpaudit::audit::engine::read_report(&s.audit).unwrap();
    assert_eq!(audit.runs.len() as u64, 2 * s.config.audit_runs_per_side);
    assert_eq!(
        audit.spec.as_ref().unwrap().built_in().unwrap().noise_multiplier,
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(s.model_run.join("metrics.json")).unwrap())
            .unwrap()["config"]["noise_multiplier"]
            .as_f64()
            .unwrap()
    );
    // Eight runs per side cannot refute a claim of 3 (the most they can show is about 0.54):
    // the audit says so rather than call the claim consistent.
    assert_eq!(s.audit_verdict, "inconclusive");
    assert!(!audit.plan.can_refute && audit.plan.ceiling < s.config.target_epsilon);
    assert!(s.audit_epsilon_lower <= rdp);
    assert!((0.0..=1.0).contains(&s.mia_auc));

    // 4. A synthetic release with its provenance and its nearest-neighbour screen.
    let release: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.release.join("release.json")).unwrap()).unwrap();
    assert_eq!(release["count"], s.config.release_count);
    assert!(out.join("nearest-neighbour.json").exists());

    // 5. Both certificates verify from their release folders alone, epsilon re-derived.
    let public = s.keys.join("dpaudit-cert.pub");
    let model = verify(&s.model_certificate, &public, Some(&s.model_run), true).unwrap();
    assert!(model.artifacts_checked.iter().any(|f| f == "model.safetensors"), "{:?}", model.artifacts_checked);
    let synthetic = verify(&s.release_certificate, &public, Some(&s.release), true).unwrap();
    assert!(
        synthetic.artifacts_checked.iter().any(|f| f.starts_with("train-images")),
        "{:?}",
        synthetic.artifacts_checked
    );
    let cert: serde_json::Value = serde_json::from_slice(&std::fs::read(&s.model_certificate).unwrap()).unwrap();
    assert_eq!(
        cert["certificate"]["audits"].as_array().unwrap().len(),
        1,
        "the audit is recorded in the model's certificate"
    );
    let cert: serde_json::Value = serde_json::from_slice(&std::fs::read(&s.release_certificate).unwrap()).unwrap();
    assert_eq!(cert["certificate"]["artifact"]["kind"], "synthetic_dataset");

    // The same through the command line: `cert sign --release` finds the GAN run from
    // release.json, and `cert verify --artifacts RELEASE --recompute` accepts it.
    let again = out.join("again.json");
    let bin = env!("CARGO_BIN_EXE_dpaudit");
    let o = Command::new(bin)
        .args(["cert", "sign", "--release"])
        .arg(&s.release)
        .arg("--key")
        .arg(s.keys.join("dpaudit-cert.key"))
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(bin)
        .args(["cert", "verify"])
        .arg(&again)
        .arg("--pubkey")
        .arg(&public)
        .arg("--artifacts")
        .arg(&s.release)
        .arg("--recompute")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A released image changed after signing: verification fails with the artifact exit code.
    let images = s.release.join("train-images-idx3-ubyte.gz");
    let mut bytes = std::fs::read(&images).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&images, bytes).unwrap();
    let failure = verify(&s.release_certificate, &public, Some(&s.release), false).unwrap_err();
    assert_eq!(failure.exit_code(), 5, "{failure}");

    // 6. The reports carry the claim and the key id on their first screen.
    let key_id = cert["signature"]["key_id"].as_str().unwrap().to_owned();
    for report in [&s.model_report, &s.release_report] {
        let html = std::fs::read_to_string(report).unwrap();
        assert!(html.contains("differential privacy") && html.contains(&key_id[..16]), "{}", report.display());
    }
    let listed: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("demo.json")).unwrap()).unwrap();
    assert_eq!(listed["audit_verdict"], "inconclusive");

    // Both run folders keep the recipe that reproduces them: the model's and the DP-GAN's.
    for (run, model) in [("model", s.config.model.as_str()), ("gan", dpaudit::recipe::GAN_MODEL)] {
        let text = std::fs::read_to_string(out.join(run).join("recipe.toml")).unwrap();
        let recipe: dpaudit::recipe::Recipe = toml::from_str(&text).unwrap();
        assert_eq!(recipe.model, model, "{run}/recipe.toml");
        assert_eq!(recipe.gan.is_some(), run == "gan", "{run}/recipe.toml");
    }
}

/// Every command a demo report lists under "How to reproduce", run as printed (by `sh`, from the
/// crate root where the demo ran, with this build's `dpaudit` first on PATH), exits 0; and no
/// report of the demo's releases prints a noise seed, names a file that does not exist, or leaves
/// a placeholder.
#[test]
fn every_reproduce_command_of_the_demo_reports_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = tiny(dir.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_dpaudit"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let mut ran = 0;
    for report in [&s.model_report, &s.release_report] {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(report.with_extension("json")).unwrap()).unwrap();
        let html = std::fs::read_to_string(report).unwrap();
        assert!(!html.contains("KEY.pub") && !html.contains("--seed"), "{}", report.display());
        assert_eq!(json["claim"]["noise_seeding"], "csprng", "{}", report.display());
        assert_eq!(json["certificate"]["noise_seeding"], "csprng", "{}", report.display());
        assert_eq!(
            json["claim"]["epsilon"],
            json["certificate"]["verified_epsilon"],
            "one certified number in the headline and the certificate box: {}",
            report.display()
        );
        for h in json["reproduce"]["hashes"].as_array().unwrap() {
            let p = h["path"].as_str().unwrap();
            assert!(
                p.starts_with("content hash") || Path::new(p).is_file(),
                "{} hashes {p}, which does not exist",
                report.display()
            );
        }
        let commands = json["reproduce"]["commands"].as_array().unwrap();
        assert!(commands.len() >= 4, "{}: {commands:?}", report.display());
        for c in commands {
            let command = c["command"].as_str().unwrap();
            let o = Command::new("sh").args(["-c", command]).env("PATH", &path).output().unwrap();
            let expected = c["expected_exit"].as_i64().unwrap();
            assert!(
                o.status.code() == Some(expected as i32),
                "{}: `{command}` exited {:?}\n{}{}",
                report.display(),
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            ran += 1;
        }
    }
    // The model's list: train, account, sha256sum, cert verify, audit run, report; the synthetic
    // set's: its GAN configuration, account, sha256sum, cert verify, report.
    assert_eq!(ran, 11);
    assert!(s.out.join("model-reproduced").join("ledger.jsonl").is_file(), "the model was trained again");
    assert!(s.out.join("audit-reproduced").join("audit.json").is_file(), "the audit was run again");
}

#[test]
fn the_demo_command_refuses_a_used_folder_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("something.txt"), "earlier work").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(["demo", "--tiny", "--out"]).arg(&out).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("something.txt")).unwrap(), "earlier work");
}

#[test]
fn a_noise_layer_release_is_not_certified() {
    use dpaudit::gan::dpgan::{Design, GanConfig};
    use dpaudit::gan::run::{train_gan, GanRunSpec};
    let dir = tempfile::tempdir().unwrap();
    let train =
        dpaudit::data::load_mnist_dir(Path::new("fixtures/mnist-small"), dpaudit::data::Split::Train, 10).unwrap();
    let spec = GanRunSpec {
        config: GanConfig {
            design: Design::NoiseLayer,
            lot_size: 100.0,
            noise_multiplier: 1.0,
            ..GanConfig::default()
        },
        epochs: 0.1,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(3),
        force: false,
        resume: false,
        checkpoint_every: 0,
    };
    let run = dir.path().join("gan");
    train_gan(&spec, &train, &run, tch::Device::Cpu, &mut |_, _, _| {}).unwrap();
    let release = dir.path().join("release");
    dpaudit::gan::release::sample_release(
        &run,
        &release,
        &dpaudit::gan::release::SampleOptions::new(20, Some(1)),
        false,
        tch::Device::Cpu,
    )
    .unwrap();
    let keys = dpaudit::cert::keys::generate_keypair(&dir.path().join("keys")).unwrap();
    let mut opts = dpaudit::cert::sign::CertifyOptions::model(1e-5);
    opts.kind = dpaudit::cert::schema::ArtifactKind::SyntheticDataset;
    let err =
        dpaudit::cert::sign::sign_release(&release, &run, &opts, &keys.secret_key_path, &dir.path().join("c.json"))
            .unwrap_err();
    assert!(err.to_string().contains("claimed, not proven"), "{err}");
    assert!(!dir.path().join("c.json").exists());
}
