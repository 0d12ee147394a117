//! Signed privacy certificates end to end: a fake run folder is certified, signed, written and
//! verified; then tampered with in every way we can think of. See `proofs/cert/signing.md`.
use dpaudit::accounting::ledger::Ledger;
use dpaudit::accounting::SamplingScheme;
use dpaudit::cert::keys::{generate_keypair, load_secret_key, KeyInfo};
use dpaudit::cert::schema::{ClaimStatus, Epsilon};
use dpaudit::cert::sign::{certify_run, sign, write_signed};
use dpaudit::cert::{verify, ArtifactKind, AuditRecord, CertifyOptions, SignedCertificate, Verdict, VerifyFailure};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const DELTA: f64 = 1e-5;

struct Fixture {
    _tmp: tempfile::TempDir,
    run: PathBuf,
    key: KeyInfo,
    other_key: KeyInfo,
    cert: PathBuf,
}

/// A run folder with a 40-step DP-SGD phase and a 1-step DP-PCA phase, a fake model, and a
/// metrics.json whose epsilons are deliberately wrong (they must not be used).
fn run_folder(dir: &Path, private: bool, extra_metrics: Value) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    if private {
        let mut ledger = Ledger::create(run.join("ledger.jsonl")).unwrap();
        ledger.record(SamplingScheme::Poisson, 1.0, 8.0, 1.0, "dp-pca").unwrap();
        for _ in 0..40 {
            ledger.record(SamplingScheme::Poisson, 0.01, 1.1, 1.0, "dpsgd").unwrap();
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let model: Vec<u8> = (0..4096).map(|_| rng.gen()).collect();
    std::fs::write(run.join("model.safetensors"), &model).unwrap();
    let mut metrics = json!({
        "tool_version": "0.1.0",
        "test_accuracy": 0.9,
        "epsilons": [{"accountant": "rdp", "epsilon": 0.0001, "delta": DELTA, "detail": null}],
        "private": private,
        "sampling": "poisson",
        "steps": if private { 41 } else { 0 },
        "sampling_rate": 0.01,
        "noise_multiplier_source": "given: 1.1",
        "epochs": 1.0,
        "wall_seconds": 1.0,
        "train_dataset": "fixture",
        "train_examples": 1000,
        "config": {"model": "mlp", "lot_size": 10.0, "noise_multiplier": 1.1, "max_grad_norm": 1.0, "private": private},
        "train_data_sha256": "ab".repeat(32),
        "model_sha256": hex::encode(Sha256::digest(&model)),
        "noise_seeding": "csprng",
    });
    for (k, v) in extra_metrics.as_object().unwrap() {
        metrics[k] = v.clone();
    }
    std::fs::write(run.join("metrics.json"), serde_json::to_vec_pretty(&metrics).unwrap()).unwrap();
    run
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(tmp.path(), true, json!({}));
    let key = generate_keypair(&tmp.path().join("keys")).unwrap();
    let other_key = generate_keypair(&tmp.path().join("other-keys")).unwrap();
    let cert = tmp.path().join("model.cert.json");
    let mut options = CertifyOptions::model(DELTA);
    options.git_commit = Some("0123456789abcdef0123456789abcdef01234567".into());
    options.audits = vec![audit(Verdict::Consistent, 0.1)];
    dpaudit::cert::sign_run(&run, &options, &key.secret_key_path, &cert).unwrap();
    Fixture { _tmp: tmp, run, key, other_key, cert }
}

fn audit(verdict: Verdict, epsilon_lower_bound: f64) -> AuditRecord {
    AuditRecord {
        name: "one-run canaries".into(),
        threat_model: "black-box, final model".into(),
        epsilon_lower_bound,
        confidence: 0.95,
        verdict,
        power: None,
    }
}

fn code(r: Result<dpaudit::cert::VerifyReport, VerifyFailure>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.exit_code(),
    }
}

fn read_signed(path: &Path) -> SignedCertificate {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Re-signs an edited certificate with the right key and writes it next to the original.
fn resign(f: &Fixture, edit: impl FnOnce(&mut dpaudit::cert::Certificate)) -> PathBuf {
    let mut cert = read_signed(&f.cert).certificate;
    edit(&mut cert);
    let signed = sign(&cert, &load_secret_key(&f.key.secret_key_path).unwrap()).unwrap();
    let out = f.cert.with_file_name(format!("edited-{}.json", rand::random::<u32>()));
    write_signed(&out, &signed).unwrap();
    out
}

#[test]
fn certify_sign_verify_round_trip() {
    let f = fixture();
    let report = verify(&f.cert, &f.key.public_key_path, Some(&f.run), true).unwrap();
    let c = &report.certificate;
    assert_eq!(c.format, "dpaudit-cert-v1");
    assert_eq!(c.status, ClaimStatus::Certified);
    assert_eq!(c.signer_key_id, f.key.key_id);
    assert_eq!(c.artifact.kind, ArtifactKind::Model);
    assert_eq!(c.mechanism.steps, 41);
    assert_eq!(c.mechanism.labels, vec!["dp-pca", "dpsgd"]);
    assert_eq!(report.artifacts_checked, vec!["model.safetensors", "ledger.jsonl"]);
    // Epsilons are recomputed from the ledger, not copied from metrics.json (which says 0.0001).
    let oracle = report.recomputed_epsilon.unwrap().value();
    assert!(oracle > 0.01 && oracle.is_finite());
    assert!(c.privacy.epsilons.iter().all(|e| e.epsilon.value() > 0.01));
    assert_eq!(c.privacy.verified_epsilon.epsilon, Epsilon::Finite(oracle));
    assert!(c.issued_at.ends_with('Z') && c.issued_at.len() == 20);
    assert!(!c.limitations.is_empty());
    // The secret key appears nowhere in the certificate.
    let text = std::fs::read_to_string(&f.cert).unwrap();
    let secret: Value = serde_json::from_slice(&std::fs::read(&f.key.secret_key_path).unwrap()).unwrap();
    assert!(!text.contains(secret["secret_key"].as_str().unwrap()));
    // No temporary file is left behind, and an existing certificate is not overwritten.
    let leftovers: Vec<_> = std::fs::read_dir(f.cert.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
    assert!(write_signed(&f.cert, &read_signed(&f.cert)).is_err());
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let f = fixture();
    let original = std::fs::read(&f.cert).unwrap();
    let tampered = f.cert.with_file_name("tampered.json");
    let mut codes = [0usize; 6];
    for i in 0..original.len() {
        for mask in [0x01u8, 0xff] {
            let mut bytes = original.clone();
            bytes[i] ^= mask;
            std::fs::write(&tampered, &bytes).unwrap();
            let c = code(verify(&tampered, &f.key.public_key_path, None, false));
            assert!(
                matches!(c, 2..=5),
                "flipping byte {i} ({:?}) with {mask:#04x} still verifies",
                original[i] as char
            );
            codes[c as usize] += 1;
        }
    }
    assert!(codes[2] > 0 && codes[3] > 0, "both unreadable and bad-signature failures expected: {codes:?}");
}

#[test]
fn artifact_byte_flips_give_code_5() {
    let f = fixture();
    for name in ["model.safetensors", "ledger.jsonl"] {
        let path = f.run.join(name);
        let original = std::fs::read(&path).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(64);
        let positions: Vec<usize> = (0..64)
            .map(|j| (j * original.len() / 64 + rng.gen_range(0..original.len() / 64)).min(original.len() - 1))
            .collect();
        for &i in &positions {
            let mut bytes = original.clone();
            bytes[i] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(code(verify(&f.cert, &f.key.public_key_path, Some(&f.run), false)), 5, "{name} byte {i}");
        }
        std::fs::write(&path, &original).unwrap();
    }
    assert_eq!(code(verify(&f.cert, &f.key.public_key_path, Some(&f.run), false)), 0);
    std::fs::remove_file(f.run.join("model.safetensors")).unwrap();
    assert_eq!(code(verify(&f.cert, &f.key.public_key_path, Some(&f.run), false)), 5);
    // Without an artifacts folder the files are not checked.
    assert_eq!(code(verify(&f.cert, &f.key.public_key_path, None, false)), 0);
}

#[test]
fn wrong_key_gives_code_3() {
    let f = fixture();
    assert_eq!(code(verify(&f.cert, &f.other_key.public_key_path, None, false)), 3);
    // The right key id but a signature made by another key.
    let mut signed = read_signed(&f.cert);
    let other = sign(
        &{
            let mut c = signed.certificate.clone();
            c.signer_key_id = f.other_key.key_id.clone();
            c
        },
        &load_secret_key(&f.other_key.secret_key_path).unwrap(),
    )
    .unwrap();
    signed.signature.value = other.signature.value;
    let forged = f.cert.with_file_name("forged.json");
    write_signed(&forged, &signed).unwrap();
    assert_eq!(code(verify(&forged, &f.key.public_key_path, None, false)), 3);
}

#[test]
fn unreadable_inputs_give_code_2() {
    let f = fixture();
    let original = std::fs::read(&f.cert).unwrap();
    let truncated = f.cert.with_file_name("truncated.json");
    for len in [0, 1, original.len() / 3, original.len() / 2, original.len() - 3] {
        std::fs::write(&truncated, &original[..len]).unwrap();
        assert_eq!(code(verify(&truncated, &f.key.public_key_path, None, false)), 2, "truncated to {len}");
    }
    assert_eq!(code(verify(&f.cert.with_file_name("missing.json"), &f.key.public_key_path, None, false)), 2);
    assert_eq!(code(verify(&f.cert, &f.cert.with_file_name("missing.pub"), None, false)), 2);
    // Endless or oversized inputs are refused after a bounded read, not read until memory runs out.
    let zero = Path::new("/dev/zero");
    if zero.exists() {
        let e = verify(zero, &f.key.public_key_path, None, false).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("larger than"), "{e}");
        assert_eq!(code(verify(&f.cert, zero, None, false)), 2);
    }
    let padded = f.cert.with_file_name("padded.json");
    let mut big = original.clone();
    big.resize(dpaudit::durable::MAX_CERTIFICATE_BYTES as usize + 1, b' ');
    std::fs::write(&padded, &big).unwrap();
    assert_eq!(code(verify(&padded, &f.key.public_key_path, None, false)), 2, "a certificate over the size limit");
    // Another format version.
    let text = String::from_utf8(original.clone()).unwrap().replace("dpaudit-cert-v1", "dpaudit-cert-v2");
    std::fs::write(&truncated, text).unwrap();
    assert_eq!(code(verify(&truncated, &f.key.public_key_path, None, false)), 2);
    // A duplicate key placed before the real one (a first-wins reader would see epsilon 0).
    let text =
        String::from_utf8(original).unwrap().replacen("\"privacy\": {", "\"privacy\": {\n    \"delta\": 0.5,", 1);
    std::fs::write(&truncated, text).unwrap();
    assert_eq!(code(verify(&truncated, &f.key.public_key_path, None, false)), 2);
}

/// Writes JSON with every object's keys in reverse order and odd whitespace.
fn write_reordered(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push_str("{\n\t");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.reverse();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(" ,\r\n\t ");
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(" :  ");
                write_reordered(&m[k], out);
            }
            out.push_str("\n}");
        }
        Value::Array(a) => {
            out.push_str("[ ");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                write_reordered(x, out);
            }
            out.push_str(" ]");
        }
        other => out.push_str(&dpaudit::cert::canonical::canonical_json(other).unwrap()),
    }
}

#[test]
fn reordered_and_reformatted_json_still_verifies() {
    let f = fixture();
    let value: Value = serde_json::from_slice(&std::fs::read(&f.cert).unwrap()).unwrap();
    let mut text = String::new();
    write_reordered(&value, &mut text);
    assert_ne!(text.as_bytes(), std::fs::read(&f.cert).unwrap().as_slice());
    let reordered = f.cert.with_file_name("reordered.json");
    std::fs::write(&reordered, &text).unwrap();
    assert_eq!(code(verify(&reordered, &f.key.public_key_path, Some(&f.run), true)), 0);
    // A number spelled another way (1.0E-5 for 0.00001) is refused as unreadable: numbers must be
    // in canonical form, so that no byte can change without changing what the file says.
    let respelled = text.replace("\"delta\" :  0.00001", "\"delta\" :  1.0E-5");
    assert_ne!(respelled, text, "the delta should be written as 0.00001");
    std::fs::write(&reordered, &respelled).unwrap();
    assert_eq!(code(verify(&reordered, &f.key.public_key_path, None, false)), 2);
}

#[test]
fn lowered_epsilon_resigned_fails_recompute_with_code_4() {
    let f = fixture();
    // Every claimed epsilon lowered by 10%, re-signed with the right key: the signature is fine,
    // but the claim does not reproduce.
    let lowered = resign(&f, |c| {
        c.privacy.verified_epsilon.epsilon = Epsilon::Finite(c.privacy.verified_epsilon.epsilon.value() * 0.9);
        for e in &mut c.privacy.epsilons {
            e.epsilon = Epsilon::Finite(e.epsilon.value() * 0.9);
        }
    });
    assert_eq!(code(verify(&lowered, &f.key.public_key_path, Some(&f.run), false)), 0);
    assert_eq!(code(verify(&lowered, &f.key.public_key_path, Some(&f.run), true)), 4);
    // Each stated epsilon is held on its own: lowering just one is enough to fail.
    for which in ["verified", "rdp", "pld"] {
        let one = resign(&f, |c| match which {
            "verified" => {
                c.privacy.verified_epsilon.epsilon = Epsilon::Finite(c.privacy.verified_epsilon.epsilon.value() * 0.999)
            }
            name => {
                let e = c.privacy.epsilons.iter_mut().find(|e| e.accountant == name).unwrap();
                e.epsilon = Epsilon::Finite(e.epsilon.value() * 0.999);
            }
        });
        assert_eq!(code(verify(&one, &f.key.public_key_path, None, true)), 4, "{which}");
    }
    // A mechanism edited to fewer steps: the epsilons no longer match the ledger.
    let fewer = resign(&f, |c| {
        c.mechanism.phases[1].steps -= 10;
        c.mechanism.steps -= 10;
    });
    assert_eq!(code(verify(&fewer, &f.key.public_key_path, Some(&f.run), true)), 4);
    // Raising an epsilon is allowed (a looser claim is still true).
    let raised = resign(&f, |c| {
        c.privacy.verified_epsilon.epsilon = Epsilon::Finite(c.privacy.verified_epsilon.epsilon.value() * 2.0)
    });
    assert_eq!(code(verify(&raised, &f.key.public_key_path, Some(&f.run), true)), 0);
}

#[test]
fn violated_audit_is_refused_at_signing_and_at_verification() {
    let f = fixture();
    let key = load_secret_key(&f.key.secret_key_path).unwrap();
    let mut options = CertifyOptions::model(DELTA);
    options.audits = vec![audit(Verdict::Violated, 0.5)];
    assert!(certify_run(&f.run, &options, &key).is_err());
    // A lower bound above the certified epsilon is a contradiction whatever the verdict says.
    options.audits = vec![audit(Verdict::Consistent, 1e6)];
    assert!(certify_run(&f.run, &options, &key).is_err());
    // Smuggled in after certification and signed: refused at verification, even without --recompute.
    let violated = resign(&f, |c| c.audits.push(audit(Verdict::Violated, 0.5)));
    assert_eq!(code(verify(&violated, &f.key.public_key_path, None, false)), 4);
    let contradicted = resign(&f, |c| c.audits.push(audit(Verdict::Inconclusive, 1e6)));
    assert_eq!(code(verify(&contradicted, &f.key.public_key_path, None, false)), 4);
}

#[test]
fn refuses_to_certify_faulty_non_private_or_inconsistent_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let key_info = generate_keypair(&tmp.path().join("k")).unwrap();
    let key = load_secret_key(&key_info.secret_key_path).unwrap();
    let options = CertifyOptions::model(DELTA);
    let fresh = |extra: Value, private: bool| {
        let d = tempfile::tempdir_in(tmp.path()).unwrap().keep();
        run_folder(&d, private, extra)
    };
    // Injected faults, at the top level or in the config; null means none.
    assert!(certify_run(&fresh(json!({"inject_fault": "skip_clipping"}), true), &options, &key).is_err());
    let run = fresh(json!({}), true);
    let mut m: Value = serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    m["config"]["inject_fault"] = json!({"kind": "no_noise"});
    std::fs::write(run.join("metrics.json"), m.to_string()).unwrap();
    assert!(certify_run(&run, &options, &key).is_err());
    assert!(certify_run(&fresh(json!({"inject_fault": null}), true), &options, &key).is_ok());
    // Non-private: refused, unless signed as an uncertified claim with epsilon "infinity".
    let plain = fresh(json!({}), false);
    assert!(certify_run(&plain, &options, &key).is_err());
    let uncertified =
        certify_run(&plain, &CertifyOptions { allow_uncertified: true, ..options.clone() }, &key).unwrap();
    assert_eq!(uncertified.status, ClaimStatus::UncertifiedClaim);
    let signed = sign(&uncertified, &key).unwrap();
    let text = serde_json::to_string(&signed).unwrap();
    assert!(text.contains("\"epsilon\":\"infinity\""));
    let out = tmp.path().join("uncertified.json");
    write_signed(&out, &signed).unwrap();
    assert_eq!(code(verify(&out, &key_info.public_key_path, Some(&plain), true)), 0);
    // A non-Poisson step in the ledger.
    let shuffled = fresh(json!({"steps": 0}), true);
    Ledger::open(shuffled.join("ledger.jsonl"))
        .unwrap()
        .record(SamplingScheme::Shuffled, 0.01, 1.1, 1.0, "dpsgd")
        .unwrap();
    assert!(certify_run(&shuffled, &options, &key).is_err());
    // A model that is not the one the run recorded.
    let swapped = fresh(json!({"model_sha256": "00".repeat(32)}), true);
    assert!(certify_run(&swapped, &options, &key).is_err());
    // A torn ledger line (the run crashed) is refused and left untouched.
    let torn = fresh(json!({}), true);
    let ledger = torn.join("ledger.jsonl");
    let mut bytes = std::fs::read(&ledger).unwrap();
    bytes.extend_from_slice(b"{\"step\":42,\"sam");
    std::fs::write(&ledger, &bytes).unwrap();
    assert!(certify_run(&torn, &options, &key).is_err());
    assert_eq!(std::fs::read(&ledger).unwrap(), bytes);
    // Fewer ledger steps than metrics.json reports.
    assert!(certify_run(&fresh(json!({"steps": 1000}), true), &options, &key).is_err());
    // An artifact path that escapes the run folder.
    let escape = CertifyOptions { artifacts: vec![PathBuf::from("../k/dpaudit-cert.pub")], ..options.clone() };
    assert!(certify_run(&fresh(json!({}), true), &escape, &key).is_err());
}

/// A run whose noise was seeded explicitly (its metrics, or any ledger step, says `seeded`), or
/// that does not say how (an older run), is refused; with `allow_seeded_noise` it is certified,
/// recorded as `seeded` under the signature, and the certificate says in plain words that it is
/// not fit for release. A CSPRNG run is recorded as such. Certificates from before the field
/// existed still verify.
#[test]
fn seeded_noise_is_refused_unless_allowed_and_then_marked_not_fit_for_release() {
    use dpaudit::train::noise::NoiseSeeding;
    let tmp = tempfile::tempdir().unwrap();
    let key_info = generate_keypair(&tmp.path().join("k")).unwrap();
    let key = load_secret_key(&key_info.secret_key_path).unwrap();
    let options = CertifyOptions::model(DELTA);
    let allowed = CertifyOptions { allow_seeded_noise: true, ..options.clone() };
    let fresh = |extra: Value| {
        let d = tempfile::tempdir_in(tmp.path()).unwrap().keep();
        run_folder(&d, true, extra)
    };
    let csprng = certify_run(&fresh(json!({})), &options, &key).unwrap();
    assert_eq!(csprng.noise_seeding, Some(NoiseSeeding::Csprng));
    assert!(!csprng.limitations.iter().any(|l| l.contains("NOT FIT FOR RELEASE")));
    // Seeded by metrics.json; by an older metrics.json's non-null seed; by one ledger step (the
    // metrics not saying); or not recorded at all.
    let by_ledger = fresh(json!({"steps": 0, "noise_seeding": null}));
    let mut l = Ledger::open(by_ledger.join("ledger.jsonl")).unwrap();
    l.set_noise_seeding(NoiseSeeding::Seeded);
    l.record(SamplingScheme::Poisson, 0.01, 1.1, 1.0, "dpsgd").unwrap();
    // A metrics.json that says `csprng` beside a ledger step that says `seeded` does not describe
    // the run: refused as inconsistent, even where seeded noise is allowed.
    let contradicted = fresh(json!({"steps": 0}));
    let mut l = Ledger::open(contradicted.join("ledger.jsonl")).unwrap();
    l.set_noise_seeding(NoiseSeeding::Seeded);
    l.record(SamplingScheme::Poisson, 0.01, 1.1, 1.0, "dpsgd").unwrap();
    let err = certify_run(&contradicted, &allowed, &key).unwrap_err();
    assert!(matches!(&err, dpaudit::Error::Inconsistent(i) if i.field == "noise seeding"), "{err}");
    let unrecorded = fresh(json!({}));
    let mut m: Value = serde_json::from_slice(&std::fs::read(unrecorded.join("metrics.json")).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("noise_seeding");
    std::fs::write(unrecorded.join("metrics.json"), m.to_string()).unwrap();
    for run in [
        fresh(json!({"noise_seeding": "seeded"})),
        fresh(json!({"noise_seeding": null, "seed": 7})),
        by_ledger,
        unrecorded,
    ] {
        let err = certify_run(&run, &options, &key).unwrap_err().to_string();
        assert!(err.contains("reproducible noise"), "{}: {err}", run.display());
        let cert = certify_run(&run, &allowed, &key).unwrap();
        assert_eq!(cert.noise_seeding, Some(NoiseSeeding::Seeded), "{}", run.display());
        assert!(
            cert.limitations[0].contains("NOT FIT FOR RELEASE: its noise can be regenerated from the seed"),
            "{:?}",
            cert.limitations
        );
        let out = tmp.path().join(format!("seeded-{}.json", rand::random::<u32>()));
        write_signed(&out, &sign(&cert, &key).unwrap()).unwrap();
        assert_eq!(code(verify(&out, &key_info.public_key_path, Some(&run), true)), 0);
        assert!(std::fs::read_to_string(&out).unwrap().contains("\"noise_seeding\": \"seeded\""));
    }
    // An older run with `seed: null` (trained with --secure-noise) is CSPRNG.
    let old_secure = fresh(json!({"noise_seeding": null, "seed": null}));
    assert_eq!(certify_run(&old_secure, &options, &key).unwrap().noise_seeding, Some(NoiseSeeding::Csprng));
    // A certificate issued before the field existed (no `noise_seeding`) still verifies.
    let mut older = csprng.clone();
    older.noise_seeding = None;
    let out = tmp.path().join("older.json");
    write_signed(&out, &sign(&older, &key).unwrap()).unwrap();
    assert!(!std::fs::read_to_string(&out).unwrap().contains("noise_seeding"));
    let report = verify(&out, &key_info.public_key_path, None, true).unwrap();
    assert_eq!(report.certificate.noise_seeding, None);
}
