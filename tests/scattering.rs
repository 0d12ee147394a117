//! The scattering transform (`dpaudit::train::scattering`) against Kymatio's `Scattering2D`
//! (J = 2, L = 8), whose coefficients for three fixture images are in
//! `fixtures/scattering/kymatio_reference.json` (made by `make_reference.py` beside it).
use dpaudit::data::{load_mnist_dir, Split};
use dpaudit::train::dpsgd::Examples;
use dpaudit::train::scattering::Scattering;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[test]
fn matches_kymatio_on_fixture_images() {
    let text = std::fs::read_to_string("fixtures/scattering/kymatio_reference.json").expect("reference");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want: Vec<f32> = v["coefficients"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let want = Tensor::from_slice(&want).view([3, 81, 7, 7]);
    let data = load_mnist_dir(Path::new("fixtures/mnist-small"), Split::Train, 10).expect("fixture");
    let images = Examples::from_dataset(&data, Device::Cpu).unwrap().images.narrow(0, 0, 3);
    let got = Scattering::new(Device::Cpu).unwrap().transform(&images).unwrap();
    let scale = f64::try_from(want.abs().max()).unwrap();
    // Per channel, so that a wrong ordering or a wrong filter in one channel shows by name.
    for c in 0..81 {
        let err = f64::try_from((got.narrow(1, c, 1) - want.narrow(1, c, 1)).abs().max()).unwrap();
        assert!(err <= 1e-4 * scale, "channel {c}: max abs error {err} (largest coefficient {scale})");
    }
    assert!(f64::try_from(got.to_kind(Kind::Double).abs().sum(Kind::Double)).unwrap() > 0.0);
}

/// `scatter-linear` end to end on the fixture: `train_run` computes the features itself, the ledger
/// holds only the DP-SGD steps (the feature map costs nothing), metrics.json says what the features
/// are, the model learns, and the parts that replay training on raw pixels refuse it.
#[test]
fn scatter_linear_trains_on_the_features_and_pays_only_for_dp_sgd() {
    use dpaudit::train::dpsgd::TrainConfig;
    use dpaudit::train::models;
    use dpaudit::train::optim::{LrSchedule, OptimizerKind};
    use dpaudit::train::run::{train_run, RunSpec};
    tch::set_num_threads(1);
    let dir = Path::new("fixtures/mnist-small");
    let (train, test) = (load_mnist_dir(dir, Split::Train, 10).unwrap(), load_mnist_dir(dir, Split::Test, 10).unwrap());
    let spec = |model: &str, pca: Option<f64>| RunSpec {
        config: TrainConfig {
            model: model.into(),
            lot_size: 200.0,
            noise_multiplier: 1.0,
            max_grad_norm: 0.1,
            physical_batch: 256,
            optimizer: OptimizerKind::Momentum { momentum: 0.9 },
            lr: 4.0,
            schedule: LrSchedule::Constant,
            private: true,
        },
        epochs: 3.0,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(1),
        checkpoint_every: 0,
        resume: false,
        inject_fault: None,
        adversarial: None,
        public_batch: None,
        pca_noise_multiplier: pca,
        pca_whiten: false,
        validation: 0,
        parameter_averaging: None,
    };
    let out = tempfile::tempdir().unwrap();
    let m =
        train_run(&spec("scatter-linear", None), &train, &test, out.path(), Device::Cpu, &mut |_, _, _| {}).unwrap();
    let steps = (3.0f64 / (200.0 / train.len() as f64)).ceil() as u64;
    assert_eq!(m.steps, steps);
    assert_eq!(m.phases.len(), 1, "only the DP-SGD phase: {:?}", m.phases);
    assert_eq!(m.phases[0].steps, steps);
    assert!(m.features.as_deref().is_some_and(|f| f.contains("scattering")), "{:?}", m.features);
    assert!(m.test_accuracy > 0.5, "scatter-linear on the fixture: test accuracy {}", m.test_accuracy);
    assert!(!models::trains_on_pixels("scatter-linear") && !models::trains_on_pixels("scatter-cnn"));
    assert!(models::trains_on_pixels("tanh-cnn") && !models::trains_on_pixels("abadi-pca"));
    // The scattering models refuse a DP-PCA noise multiplier (they do not run DP-PCA).
    let out2 = tempfile::tempdir().unwrap();
    assert!(
        train_run(&spec("scatter-cnn", Some(4.0)), &train, &test, out2.path(), Device::Cpu, &mut |_, _, _| {}).is_err()
    );
}
