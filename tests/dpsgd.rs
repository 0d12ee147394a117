//! DP-SGD end to end on the MNIST fixture: it learns, it records every noisy step in the ledger,
//! and a checkpoint + resume continues the same run (same sampler, noise and ledger).
use dpaudit::data::{load_mnist_dir, Split};
use dpaudit::train::dpsgd::{DpSgd, Examples, TrainConfig};
use dpaudit::train::optim::{LrSchedule, OptimizerKind};
use tch::Device;

fn fixture() -> (Examples, Examples) {
    let dir = std::path::Path::new("fixtures/mnist-small");
    let train = load_mnist_dir(dir, Split::Train, 10).unwrap();
    let test = load_mnist_dir(dir, Split::Test, 10).unwrap();
    (Examples::from_dataset(&train, Device::Cpu).unwrap(), Examples::from_dataset(&test, Device::Cpu).unwrap())
}

fn config(private: bool) -> TrainConfig {
    TrainConfig {
        model: "logreg".into(),
        lot_size: 200.0,
        noise_multiplier: 1.0,
        max_grad_norm: 1.0,
        physical_batch: 64,
        optimizer: OptimizerKind::Momentum { momentum: 0.9 },
        lr: 0.5,
        schedule: LrSchedule::Constant,
        private,
    }
}

#[test]
fn private_logreg_learns_and_every_step_is_in_the_ledger() {
    tch::set_num_threads(1);
    let (train, test) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut run = DpSgd::new(config(true), train.len(), dir.path(), Some(1), Device::Cpu).unwrap();
    let before = run.accuracy(&test).unwrap();
    let mut lot_sizes = Vec::new();
    for _ in 0..60 {
        lot_sizes.push(run.step(&train).unwrap().lot_size);
    }
    let after = run.accuracy(&test).unwrap();
    // Chance is ~0.1; 60 noisy steps of logistic regression reach well above 0.6 on MNIST.
    assert!(after > 0.6 && after > before + 0.3, "accuracy {before} -> {after}");
    let ledger = run.ledger().unwrap();
    assert_eq!(ledger.steps(), 60);
    let phases = ledger.phases().unwrap();
    assert_eq!(phases.len(), 1);
    assert_eq!((phases[0].sampling_rate, phases[0].noise_multiplier, phases[0].steps), (0.1, 1.0, 60));
    // Poisson sampling: the lot size varies around q N = 200.
    assert!(lot_sizes.iter().any(|&s| s != 200), "lot sizes {lot_sizes:?}");
}

#[test]
fn resume_continues_the_same_run() {
    tch::set_num_threads(1);
    let (train, test) = fixture();
    let a_dir = tempfile::tempdir().unwrap();
    let mut a = DpSgd::new(config(true), train.len(), a_dir.path(), Some(7), Device::Cpu).unwrap();
    for _ in 0..10 {
        a.step(&train).unwrap();
    }
    a.checkpoint().unwrap();
    let reports_a: Vec<usize> = (0..5).map(|_| a.step(&train).unwrap().lot_size).collect();
    drop(a);
    // A "crash" after the 5 extra steps: resume from the checkpoint at step 10.
    let mut b = DpSgd::resume(a_dir.path(), train.len(), Device::Cpu).unwrap();
    assert_eq!(b.steps(), 10);
    // The ledger keeps the 15 steps recorded before the crash (an over-count, which is safe).
    assert_eq!(b.ledger().unwrap().steps(), 15);
    let reports_b: Vec<usize> = (0..5).map(|_| b.step(&train).unwrap().lot_size).collect();
    assert_eq!(reports_a, reports_b, "the sampler stream must continue where the checkpoint left it");
    assert_eq!(b.ledger().unwrap().steps(), 20);
    assert!(b.accuracy(&test).unwrap() > 0.3);
}

#[test]
fn baseline_records_nothing_and_bad_configs_are_refused() {
    let (train, _) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut run = DpSgd::new(config(false), train.len(), dir.path(), Some(1), Device::Cpu).unwrap();
    run.step(&train).unwrap();
    assert!(run.ledger().is_none());
    let mut bad = config(true);
    bad.lot_size = 5000.0;
    assert!(DpSgd::new(bad, train.len(), tempfile::tempdir().unwrap().path(), Some(1), Device::Cpu).is_err());
    let mut bad = config(true);
    bad.noise_multiplier = f64::NAN;
    assert!(DpSgd::new(bad, train.len(), tempfile::tempdir().unwrap().path(), Some(1), Device::Cpu).is_err());
}

#[test]
fn public_batchnorm_needs_a_public_batch_and_then_trains_privately() {
    tch::set_num_threads(1);
    let (train, test) = fixture();
    // The public batch: 64 test images stand in for public data here (Fashion-MNIST in practice).
    let public = test.images.narrow(0, 0, 64);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { model: "seed-cnn-pn".into(), lot_size: 50.0, ..config(true) };
    let mut run = DpSgd::new(cfg, train.len(), dir.path(), Some(3), Device::Cpu).unwrap();
    let err = run.step(&train).unwrap_err().to_string();
    assert!(err.contains("public"), "{err}");
    assert_eq!(run.ledger().unwrap().steps(), 0, "nothing recorded for a refused step");
    run.set_public_batch(public.shallow_clone()).unwrap();
    for _ in 0..3 {
        run.step(&train).unwrap();
    }
    assert_eq!(run.ledger().unwrap().steps(), 3);
    assert!(run.accuracy(&test).unwrap().is_finite());
    // A model without public-norm layers refuses a public batch.
    let dir = tempfile::tempdir().unwrap();
    let mut plain = DpSgd::new(config(true), train.len(), dir.path(), Some(3), Device::Cpu).unwrap();
    assert!(plain.set_public_batch(public).is_err());
}

#[test]
fn adversarial_training_keeps_the_ledger_and_reports_robust_accuracy() {
    tch::set_num_threads(1);
    let (train, test) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut run = DpSgd::new(config(true), train.len(), dir.path(), Some(4), Device::Cpu).unwrap();
    let pgd = dpaudit::train::adversarial::PgdConfig::new(0.1, 3, 0.05).unwrap();
    run.set_adversarial(pgd);
    for _ in 0..20 {
        run.step(&train).unwrap();
    }
    assert_eq!(run.ledger().unwrap().steps(), 20);
    let clean = run.accuracy(&test).unwrap();
    let robust = run.robust_accuracy(&test, &pgd).unwrap();
    assert!(robust <= clean, "robust {robust} > clean {clean}");
    // The setting survives a checkpoint and resume.
    run.checkpoint().unwrap();
    let resumed = DpSgd::resume(dir.path(), train.len(), Device::Cpu).unwrap();
    assert_eq!(resumed.adversarial(), Some(pgd));
}

#[test]
fn a_resumed_adversarial_run_replays_the_same_pgd_starts() {
    tch::set_num_threads(1);
    let (train, test) = fixture();
    let pgd = dpaudit::train::adversarial::PgdConfig::new(0.1, 1, 0.01).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = DpSgd::new(config(true), train.len(), dir.path(), Some(6), Device::Cpu).unwrap();
    a.set_adversarial(pgd);
    for _ in 0..3 {
        a.step(&train).unwrap();
    }
    a.checkpoint().unwrap();
    let losses_a: Vec<f64> = (0..3).map(|_| a.step(&train).unwrap().loss).collect();
    let robust_a = a.robust_accuracy(&test, &pgd).unwrap();
    drop(a);
    // Draws from libtorch's process-wide generator in between must not matter.
    {
        let _rng = dpaudit::torch_rng::lock();
        let _ = tch::Tensor::rand([1000], (tch::Kind::Float, Device::Cpu));
    }
    let mut b = DpSgd::resume(dir.path(), train.len(), Device::Cpu).unwrap();
    let losses_b: Vec<f64> = (0..3).map(|_| b.step(&train).unwrap().loss).collect();
    // Same sampler, noise and PGD starts: the adversarial losses after the resume are identical.
    assert_eq!(losses_a, losses_b);
    assert_eq!(robust_a, b.robust_accuracy(&test, &pgd).unwrap());
}

#[test]
fn parameter_average_is_the_warmed_up_ema_and_survives_a_resume() {
    tch::set_num_threads(1);
    let (train, _) = fixture();
    let flat =
        |r: &DpSgd| tch::Tensor::cat(&r.parameters().iter().map(|p| p.detach().flatten(0, -1)).collect::<Vec<_>>(), 0);
    let decay: f64 = 0.8;
    // Two runs with the same seed, one averaging. Initialisation draws from libtorch's global
    // generator, which other tests running in parallel also use, so copy the reference run's
    // initial parameters into the other before either steps; everything after that (sampler,
    // noise) comes from the seed alone.
    let ref_dir = tempfile::tempdir().unwrap();
    let mut r = DpSgd::new(config(true), train.len(), ref_dir.path(), Some(3), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = DpSgd::new(config(true), train.len(), dir.path(), Some(3), Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (p, q) in a.parameters().iter().zip(r.parameters()) {
            p.shallow_clone().copy_(q);
        }
    });
    assert!(a.set_parameter_averaging(1.0).is_err() && a.set_parameter_averaging(0.0).is_err());
    a.set_parameter_averaging(decay).unwrap();
    // The reference average, computed by hand from the reference run's iterates.
    let mut avg = flat(&r);
    for t in 1..=12u32 {
        r.step(&train).unwrap();
        let d = decay.min((1.0 + f64::from(t)) / (10.0 + f64::from(t)));
        avg = avg * d + flat(&r) * (1.0 - d);
    }
    let last = flat(&r);
    // The averaging run, interrupted by a checkpoint and a resume at step 5.
    for _ in 0..5 {
        a.step(&train).unwrap();
    }
    a.checkpoint().unwrap();
    drop(a);
    let mut b = DpSgd::resume(dir.path(), train.len(), Device::Cpu).unwrap();
    assert_eq!(b.parameter_averaging(), Some(decay));
    assert!(b.set_parameter_averaging(0.9).is_err(), "a resume must not change the decay");
    b.set_parameter_averaging(decay).unwrap();
    for _ in 0..7 {
        b.step(&train).unwrap();
    }
    // Averaging does not change the iterates (nor the ledger) ...
    let drift = f64::try_from((flat(&b) - &last).abs().max()).unwrap();
    assert!(drift < 1e-6, "iterates differ by {drift}");
    assert_eq!(b.ledger().unwrap().steps(), 12);
    // ... and use_average puts the hand-computed average in the model.
    b.use_average().unwrap();
    let got = flat(&b);
    assert!(f64::try_from((&got - &avg).abs().max()).unwrap() < 1e-5);
    assert!(f64::try_from((&got - &last).abs().max()).unwrap() > 1e-3, "the average must differ from the last iterate");
    // A run that took steps without averaging cannot start averaging mid-way.
    let c_dir = tempfile::tempdir().unwrap();
    let mut c = DpSgd::new(config(true), train.len(), c_dir.path(), Some(3), Device::Cpu).unwrap();
    c.step(&train).unwrap();
    assert!(c.set_parameter_averaging(decay).is_err());
}
