//! `abadi-pca` end to end on the MNIST fixture (issue 3): DP-PCA runs first and is the ledger's
//! first entry (q = 1, sigma_p, 1 step), every accountant's epsilon composes it with the DP-SGD
//! steps, `--target-epsilon` calibration counts it, a resume loads `pca.safetensors` instead of
//! paying for DP-PCA again, and `--validation N` holds out the last N training examples.
use dpaudit::accounting::calibration::{noise_multiplier_for_epsilon, noise_multiplier_for_epsilon_after};
use dpaudit::accounting::ledger::Ledger;
use dpaudit::accounting::pld::PldAccountant;
use dpaudit::accounting::rdp::{self, RdpAccountant};
use dpaudit::accounting::Phase;
use dpaudit::data::{load_mnist_dir, Dataset, Split};
use dpaudit::train::dpsgd::{TrainConfig, LEDGER_FILE};
use dpaudit::train::models;
use dpaudit::train::optim::{LrSchedule, OptimizerKind};
use dpaudit::train::per_example::{clip_and_sum, ClipConfig};
use dpaudit::train::run::{hold_out_last, train_run, Metrics, RunSpec, PCA_FILE};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

const SIGMA_P: f64 = 4.0;

fn fixture() -> (Dataset, Dataset) {
    let dir = Path::new("fixtures/mnist-small");
    (load_mnist_dir(dir, Split::Train, 10).unwrap(), load_mnist_dir(dir, Split::Test, 10).unwrap())
}

fn spec(model: &str, epochs: f64) -> RunSpec {
    RunSpec {
        config: TrainConfig {
            model: model.into(),
            lot_size: 200.0,
            noise_multiplier: 1.0,
            max_grad_norm: 4.0,
            physical_batch: 256,
            optimizer: OptimizerKind::Momentum { momentum: 0.9 },
            lr: 0.05,
            schedule: LrSchedule::Constant,
            private: true,
        },
        epochs,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(3),
        checkpoint_every: 5,
        resume: false,
        inject_fault: None,
        adversarial: None,
        public_batch: None,
        pca_noise_multiplier: Some(SIGMA_P),
        pca_whiten: false,
        validation: 200,
        parameter_averaging: None,
    }
}

fn run(spec: &RunSpec, out: &Path) -> Metrics {
    let (train, test) = fixture();
    train_run(spec, &train, &test, out, Device::Cpu, &mut |_, _, _| {}).unwrap()
}

fn pca_entries(out: &Path) -> usize {
    let ledger = Ledger::open(out.join(LEDGER_FILE)).unwrap();
    ledger.entries().iter().filter(|e| e.label == dpaudit::train::pca::LEDGER_LABEL).count()
}

#[test]
fn abadi_pca_model_takes_projections() {
    // Unseeded draws from libtorch's shared generator: held so no seeded build elsewhere sees them.
    let _rng = dpaudit::torch_rng::lock();
    for (name, k) in [("abadi-pca", 60), ("abadi-pca-20", 20)] {
        assert_eq!(models::pca_dims(name), Some(k));
        let vs = nn::VarStore::new(Device::Cpu);
        let model = models::build(name, &vs.root()).unwrap();
        let inputs = Tensor::rand([3, k as i64], (Kind::Float, Device::Cpu));
        assert_eq!(model.forward(&inputs).unwrap().size(), [3, 10], "{name}");
        let out = clip_and_sum(&model, &inputs, &Tensor::from_slice(&[0i64, 5, 9]), &ClipConfig::new(1.0)).unwrap();
        assert_eq!(out.clipped_sum.len(), 4);
    }
    for bad in ["abadi-pca-0", "abadi-pca-", "abadi-pca-+5", "abadi-pca-07", "abadi-pcax"] {
        assert!(models::specs(bad).is_err(), "{bad}");
    }
}

#[test]
fn dp_pca_is_the_first_phase_and_every_epsilon_includes_it() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let m = run(&spec("abadi-pca", 2.0), dir.path());
    // The ledger: DP-PCA first (q = 1, sigma_p, one step), then the DP-SGD steps.
    let ledger = Ledger::open(dir.path().join(LEDGER_FILE)).unwrap();
    let first = &ledger.entries()[0];
    assert_eq!((first.label.as_str(), first.sampling_rate, first.noise_multiplier), ("dp-pca", 1.0, SIGMA_P));
    assert_eq!(ledger.steps(), m.steps + 1);
    assert_eq!(m.phases[0], Phase::new(1.0, SIGMA_P, 1).unwrap());
    assert_eq!(m.phases[1], Phase::new(200.0 / 1800.0, 1.0, m.steps).unwrap());
    // Each accountant's epsilon exceeds that of the DP-SGD steps alone.
    let sgd_only = rdp::epsilon(&m.phases[1..], 1e-5).unwrap().epsilon;
    let sgd_only_pld = PldAccountant::default().epsilon(&m.phases[1..], 1e-5).unwrap().epsilon;
    let rdp_eps = m.epsilons.iter().find(|e| e.accountant == "rdp").unwrap().epsilon;
    let pld_eps = m.epsilons.iter().find(|e| e.accountant == "pld").unwrap().epsilon;
    assert!(
        rdp_eps > sgd_only && pld_eps > sgd_only_pld,
        "rdp {rdp_eps} vs {sgd_only}, pld {pld_eps} vs {sgd_only_pld} (SGD phases alone)"
    );
    assert_eq!(rdp_eps, rdp::epsilon(&m.phases, 1e-5).unwrap().epsilon);
    // The projection is saved, the validation examples held out before accounting (q = L / 1800).
    let pca = m.pca.as_ref().unwrap();
    assert_eq!((pca.dims, pca.noise_multiplier, pca.source.as_str()), (60, SIGMA_P, "computed"));
    assert!(dir.path().join(PCA_FILE).exists());
    assert_eq!((m.train_examples, m.validation_examples), (1800, 200));
    assert_eq!(m.sampling_rate, 200.0 / 1800.0);
    // 18 noisy steps of the MLP on 60 DP-PCA dimensions: far above chance (0.1) on both sets.
    let v = m.validation_accuracy.unwrap();
    assert!(m.test_accuracy > 0.5 && v > 0.5, "test {}, validation {v}", m.test_accuracy);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics.json")).unwrap()).unwrap();
    assert!(json["validation_accuracy"].is_number() && json["pca"]["dims"] == 60);
    // A certificate lists the DP-PCA phase in its mechanism.
    let key_dir = tempfile::tempdir().unwrap();
    dpaudit::cert::keys::generate_keypair(key_dir.path()).unwrap();
    let key = dpaudit::cert::keys::load_secret_key(&key_dir.path().join("dpaudit-cert.key")).unwrap();
    // The run is seeded (reproducible test), so it is certified only as reproducible noise.
    let options = dpaudit::cert::sign::CertifyOptions {
        allow_seeded_noise: true,
        ..dpaudit::cert::sign::CertifyOptions::model(1e-5)
    };
    let cert = dpaudit::cert::sign::certify_run(dir.path(), &options, &key).unwrap();
    assert_eq!(cert.noise_seeding, Some(dpaudit::train::noise::NoiseSeeding::Seeded));
    assert!(cert.limitations[0].contains("NOT FIT FOR RELEASE"), "{:?}", cert.limitations);
    assert_eq!(cert.mechanism.labels, ["dp-pca", "dpsgd"]);
    let p = &cert.mechanism.phases[0];
    assert_eq!((p.label.as_str(), p.sampling_rate, p.noise_multiplier, p.steps), ("dp-pca", 1.0, SIGMA_P, 1));
    // The released files are the model and the projection it is applied to.
    let files: Vec<&str> = cert.artifact.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["model.safetensors", PCA_FILE]);
}

#[test]
fn resume_loads_the_projection_and_never_records_dp_pca_twice() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let first = run(&spec("abadi-pca", 1.0), dir.path());
    let projection = std::fs::read(dir.path().join(PCA_FILE)).unwrap();
    let mut more = spec("abadi-pca", 2.0);
    more.resume = true;
    let second = run(&more, dir.path());
    assert_eq!(second.pca.as_ref().unwrap().source, "loaded");
    assert!(second.steps > first.steps);
    assert_eq!(pca_entries(dir.path()), 1);
    assert_eq!(Ledger::open(dir.path().join(LEDGER_FILE)).unwrap().steps(), second.steps + 1);
    assert_eq!(std::fs::read(dir.path().join(PCA_FILE)).unwrap(), projection);
    // A crash before the first checkpoint (no checkpoint.json): the restart keeps the ledger and
    // still loads the projection.
    std::fs::remove_file(dir.path().join("checkpoint.json")).unwrap();
    let third = run(&more, dir.path());
    assert_eq!(third.pca.as_ref().unwrap().source, "loaded");
    assert_eq!(pca_entries(dir.path()), 1);
    // Resuming with another sigma_p is refused: the projection was paid for with the first.
    let mut other = more.clone();
    other.pca_noise_multiplier = Some(2.0 * SIGMA_P);
    let (train, test) = fixture();
    assert!(train_run(&other, &train, &test, dir.path(), Device::Cpu, &mut |_, _, _| {}).is_err());
}

#[test]
fn whitened_projection_is_saved_as_used_and_a_resume_must_match_it() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("abadi-pca", 1.0);
    s.pca_whiten = true;
    let first = run(&s, dir.path());
    assert!(first.pca.as_ref().unwrap().whitened);
    // The file holds the whitened components (what the model was trained on) and the scale: the
    // components divided by the scale are orthonormal eigenvectors, and the scale follows the
    // saved eigenvalues as DpPca::whiten defines it.
    let tensors: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join(PCA_FILE)).unwrap().into_iter().collect();
    let scale = Vec::<f64>::try_from(tensors["whitening"].to_kind(Kind::Double)).unwrap();
    let eig = Vec::<f64>::try_from(tensors["eigenvalues"].to_kind(Kind::Double)).unwrap();
    assert_eq!((scale.len(), eig.len()), (60, 60));
    let floor = dpaudit::train::pca::WHITENING_FLOOR * eig[0];
    let c2 = eig.iter().map(|l| l.max(floor)).sum::<f64>() / 60.0;
    for (s, l) in scale.iter().zip(&eig) {
        assert!((s - (c2 / l.max(floor)).sqrt()).abs() < 1e-9 * s, "scale {s} for eigenvalue {l}");
    }
    let v = tensors["components"].to_kind(Kind::Double) / Tensor::from_slice(&scale).view([1, 60]);
    let gram = v.transpose(0, 1).matmul(&v);
    assert!(f64::try_from((gram - Tensor::eye(60, (Kind::Double, Device::Cpu))).abs().max()).unwrap() < 1e-5);
    assert!(scale.iter().any(|&s| (s - scale[0]).abs() > 0.1 * scale[0]), "whitening changed nothing: {scale:?}");
    // Resuming without --pca-whiten is refused; with it, the projection is loaded as saved.
    let (train, test) = fixture();
    let mut plain = spec("abadi-pca", 2.0);
    plain.resume = true;
    let err = train_run(&plain, &train, &test, dir.path(), Device::Cpu, &mut |_, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("with --pca-whiten"), "{err}");
    let mut more = plain.clone();
    more.pca_whiten = true;
    let second = run(&more, dir.path());
    assert_eq!((second.pca.as_ref().unwrap().source.as_str(), second.pca.as_ref().unwrap().whitened), ("loaded", true));
    assert_eq!(pca_entries(dir.path()), 1);
    // Whitening is refused for a model without DP-PCA.
    let mut lr = spec("logreg", 1.0);
    (lr.pca_noise_multiplier, lr.pca_whiten) = (None, true);
    let other = tempfile::tempdir().unwrap();
    assert!(train_run(&lr, &train, &test, other.path(), Device::Cpu, &mut |_, _, _| {}).is_err());
}

#[test]
fn target_epsilon_calibration_counts_the_pca_phase() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("abadi-pca", 1.0);
    s.target_epsilon = Some(3.0);
    let m = run(&s, dir.path());
    let q = 200.0 / 1800.0;
    let without = noise_multiplier_for_epsilon(3.0, q, m.steps, 1e-5, &RdpAccountant::default()).unwrap();
    assert!(
        m.config.noise_multiplier > without.noise_multiplier,
        "{} vs {}",
        m.config.noise_multiplier,
        without.noise_multiplier
    );
    let eps = m.epsilons.iter().find(|e| e.accountant == "rdp").unwrap().epsilon;
    assert!(eps <= 3.0 && eps > 0.99 * 3.0, "RDP epsilon {eps} with the DP-PCA phase");
    // Earlier phases that already spend the budget are refused.
    let pca = [Phase::new(1.0, 0.5, 1).unwrap()];
    assert!(noise_multiplier_for_epsilon_after(&pca, 3.0, q, 10, 1e-5, &RdpAccountant::default()).is_err());
}

#[test]
fn validation_is_the_last_examples_and_bad_settings_are_refused() {
    let (train, test) = fixture();
    let (kept, held) = hold_out_last(&train, 300).unwrap();
    let held = held.unwrap();
    assert_eq!((kept.len(), held.len()), (1700, 300));
    assert_eq!(held.image(0), train.image(1700));
    assert_eq!(held.labels(), &train.labels()[1700..]);
    assert!(hold_out_last(&train, 0).unwrap().1.is_none());
    assert!(hold_out_last(&train, 2000).is_err());
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("abadi-pca", 1.0);
    s.pca_noise_multiplier = None;
    assert!(train_run(&s, &train, &test, dir.path(), Device::Cpu, &mut |_, _, _| {}).is_err());
    let mut s = spec("logreg", 1.0);
    assert!(
        train_run(&s, &train, &test, dir.path(), Device::Cpu, &mut |_, _, _| {}).is_err(),
        "sigma_p without DP-PCA"
    );
    s.pca_noise_multiplier = None;
    s.validation = 2000;
    assert!(train_run(&s, &train, &test, dir.path(), Device::Cpu, &mut |_, _, _| {}).is_err());
    assert!(!dir.path().join(LEDGER_FILE).exists(), "nothing recorded for refused settings");
}

#[test]
fn cli_trains_abadi_pca_with_pca_dims_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [
        "train",
        "--dataset",
        "fixture",
        "--model",
        "abadi-pca",
        "--pca-dims",
        "20",
        "--pca-noise-multiplier",
        "5",
        "--validation",
        "300",
        "--epochs",
        "1",
        "--lot-size",
        "170",
        "--noise-multiplier",
        "1",
        "--max-grad-norm",
        "4",
        "--lr",
        "0.05",
        "--threads",
        "1",
        "--json",
        "--out",
    ];
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(args).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["config"]["model"], "abadi-pca-20");
    assert_eq!((m["train_examples"].as_u64(), m["validation_examples"].as_u64()), (Some(1700), Some(300)));
    assert_eq!(m["sampling_rate"].as_f64(), Some(0.1));
    assert_eq!(m["phases"][0]["noise_multiplier"].as_f64(), Some(5.0));
    assert!(m["validation_accuracy"].as_f64().is_some());
    // --pca-dims belongs to abadi-pca.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args([
            "train",
            "--dataset",
            "fixture",
            "--model",
            "logreg",
            "--pca-dims",
            "20",
            "--noise-multiplier",
            "1",
            "--out",
        ])
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
