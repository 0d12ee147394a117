//! The private GAN (`dpaudit::gan`): the discriminator's private step against a one-example-at-a-
//! time reference, the ledger's count of discriminator steps, deterministic sampling, and clear
//! errors with no partial output. Tiny networks and the MNIST fixture: seconds.
use dpaudit::accounting::ledger::Ledger;
use dpaudit::data::{load_mnist_dir, sha256_file, Dataset, Split};
use dpaudit::gan::dpgan::{private_discriminator_gradient, Design, DpGan, GanConfig};
use dpaudit::gan::networks::{condition, Conditioning, D_INPUT_CHANNELS, FAKE, REAL};
use dpaudit::gan::release::{
    generate_scored, load_discriminator, load_generator, sample_release, LabelSource, Ranking, SampleOptions,
};
use dpaudit::gan::run::{train_gan, GanRunSpec, DISCRIMINATOR_FILE, GENERATOR_FILE};
use dpaudit::train::dpsgd::{Examples, CLIP_ROUNDING_SLACK};
use dpaudit::train::mechanism::GaussianSum;
use dpaudit::train::noise::{self, NoiseSeed};
use dpaudit::train::per_example::{
    clip_and_sum_grouped, per_example_cross_entropy, ClipConfig, LayerSpec, NormMethod, Sequential,
};
use dpaudit::train::streams::RunStream;
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// Relative agreement between the engine and the one-at-a-time loop (f64; observed ~1e-14).
const RELATIVE_TOLERANCE: f64 = 1e-6;
/// Absolute floor for quantities that are exactly zero.
const ABSOLUTE_TOLERANCE: f64 = 1e-10;

fn assert_close(engine: &Tensor, reference: &Tensor, what: &str) {
    let diff = (engine - reference).norm().double_value(&[]);
    let scale = reference.norm().double_value(&[]);
    assert!(
        diff <= RELATIVE_TOLERANCE * scale + ABSOLUTE_TOLERANCE,
        "{what}: |engine - reference| = {diff:e}, |reference| = {scale:e}"
    );
}

/// A tiny conditional discriminator in f64 with random weights: conv 11 -> 3 (4x4, stride 4) to
/// 7x7, GroupNorm, tanh, flatten, linear to 2 logits.
fn tiny_discriminator(seed: u64) -> (nn::VarStore, Sequential) {
    tiny_discriminator_for(seed, Conditioning::LabelPlanes)
}

/// [`tiny_discriminator`] for `conditioning`: label planes (11 channels in, 2 logits out) or the
/// classifier (1 channel in, 11 logits out), written out here rather than taken from the library.
fn tiny_discriminator_for(seed: u64, conditioning: Conditioning) -> (nn::VarStore, Sequential) {
    let (channels, logits) = match conditioning {
        Conditioning::LabelPlanes => (D_INPUT_CHANNELS, 2),
        Conditioning::Classifier => (1, 11),
    };
    // The default initialisation draws from libtorch's shared generator (then is overwritten).
    let _rng = dpaudit::torch_rng::lock();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let specs = [
        LayerSpec::Conv2d { in_channels: channels, out_channels: 3, kernel: 4, stride: 4, padding: 0, bias: true },
        LayerSpec::GroupNorm { groups: 1, channels: 3 },
        LayerSpec::Tanh,
        LayerSpec::Flatten,
        LayerSpec::Linear { in_features: 3 * 7 * 7, out_features: logits, bias: true },
    ];
    let model = Sequential::new(&vs.root(), &specs).unwrap();
    vs.set_kind(Kind::Double);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tch::no_grad(|| {
        for (_, mut p) in model.parameters() {
            let v: Vec<f64> = (0..p.numel()).map(|_| rng.gen_range(-0.5..0.5)).collect();
            p.copy_(&Tensor::from_slice(&v).reshape(p.size()));
        }
    });
    (vs, model)
}

fn random_images(n: i64, rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
    let v: Vec<f64> = (0..n * 784).map(|_| rng.gen_range(0.0..1.0)).collect();
    let y: Vec<i64> = (0..n).map(|_| rng.gen_range(0..10)).collect();
    (Tensor::from_slice(&v).reshape([n, 1, 28, 28]), Tensor::from_slice(&y))
}

/// The gradient of `loss` (a scalar) with respect to every parameter, flattened into one vector.
fn flat_gradient(model: &Sequential, loss: &Tensor) -> Tensor {
    let params: Vec<Tensor> = model.parameters().into_iter().map(|(_, t)| t).collect();
    let g = Tensor::run_backward(&[loss], &params, false, false);
    Tensor::cat(&g.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
}

/// CE of one conditioned example against `target`, as a scalar.
fn one_loss(model: &Sequential, x: &Tensor, y: &Tensor, target: i64) -> Tensor {
    let logits = model.forward(&condition(x, y).unwrap()).unwrap();
    per_example_cross_entropy(&logits, &Tensor::from_slice(&[target])).unwrap().sum(Kind::Double)
}

/// CE of one example (x, y), real (`real`) or generated, as each conditioning defines it: label
/// planes: the conditioned image against class 1 (real) or 0; classifier: the bare image against
/// class y (real) or 10.
fn one_loss_for(model: &Sequential, conditioning: Conditioning, x: &Tensor, y: &Tensor, real: bool) -> Tensor {
    match conditioning {
        Conditioning::LabelPlanes => one_loss(model, x, y, if real { REAL } else { FAKE }),
        Conditioning::Classifier => {
            let target = if real { y.int64_value(&[0]) } else { 10 };
            let logits = model.forward(x).unwrap();
            per_example_cross_entropy(&logits, &Tensor::from_slice(&[target])).unwrap().sum(Kind::Double)
        }
    }
}

fn clip(g: &Tensor, c: f64) -> Tensor {
    let norm = g.norm().double_value(&[]);
    g * (c / (norm + 1e-6)).min(1.0)
}

fn flatten(ts: &[Tensor]) -> Tensor {
    Tensor::cat(&ts.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
}

/// The noise the step draws: per parameter in order, `numel` f32 draws of N(0, std^2).
fn reference_noise(model: &Sequential, std: f64, seed: u64) -> Tensor {
    let mut rng = ChaCha20Rng::from_seed(NoiseSeed::Explicit(seed).to_bytes(RunStream::Noise));
    let mut parts = Vec::new();
    for (_, p) in model.parameters() {
        let mut z = vec![0f32; p.numel()];
        noise::gaussian(&mut rng, std, &mut z).unwrap();
        parts.push(Tensor::from_slice(&z).to_kind(Kind::Double));
    }
    Tensor::cat(&parts, 0)
}

#[test]
fn grouped_clip_and_sum_equals_one_pair_at_a_time() {
    for (seed, method) in [(1u64, NormMethod::Auto), (2, NormMethod::Ghost), (3, NormMethod::Materialise)] {
        let (_vs, d) = tiny_discriminator(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
        let b = 5;
        let (xr, yr) = random_images(b, &mut rng);
        let (xf, yf) = random_images(b, &mut rng);
        let c = 0.05;
        let rows = Tensor::stack(&[condition(&xr, &yr).unwrap(), condition(&xf, &yf).unwrap()], 1).reshape([
            2 * b,
            D_INPUT_CHANNELS,
            28,
            28,
        ]);
        let targets = Tensor::from_slice(&[REAL, FAKE]).repeat([b]);
        let out =
            clip_and_sum_grouped(&d, &rows, &targets, 2, &ClipConfig { max_norm: c, norm_method: method }).unwrap();
        let mut reference = None::<Tensor>;
        for i in 0..b {
            let loss = one_loss(&d, &xr.narrow(0, i, 1), &yr.narrow(0, i, 1), REAL)
                + one_loss(&d, &xf.narrow(0, i, 1), &yf.narrow(0, i, 1), FAKE);
            let g = flat_gradient(&d, &loss);
            let norm = g.norm().double_value(&[]);
            assert!(
                (out.norms.double_value(&[i]) - norm).abs() <= RELATIVE_TOLERANCE * norm,
                "pair {i}: norm {} vs {norm}",
                out.norms.double_value(&[i])
            );
            let g = clip(&g, c);
            reference = Some(match reference {
                Some(r) => r + g,
                None => g,
            });
        }
        assert_close(&flatten(&out.clipped_sum), &reference.unwrap(), &format!("grouped clipped sum ({method:?})"));
    }
}

#[test]
fn private_step_equals_one_at_a_time_reference() {
    let (sigma, c, expected_lot, seed) = (0.7, 0.05, 6.0, 9u64);
    let cases = [Design::RealOnly, Design::Joint]
        .into_iter()
        .flat_map(|d| [(d, Conditioning::LabelPlanes), (d, Conditioning::Classifier)]);
    for (design, conditioning) in cases {
        let (_vs, d) = tiny_discriminator_for(4, conditioning);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let b = 5;
        let (xr, yr) = random_images(b, &mut rng);
        let fakes = if design == Design::Joint { b } else { 6 };
        let (xf, yf) = random_images(fakes, &mut rng);
        let noise_rng = ChaCha20Rng::from_seed(NoiseSeed::Explicit(seed).to_bytes(RunStream::Noise));
        let mut mechanism = GaussianSum::new(sigma, c, 0.1, expected_lot, "test", noise_rng).unwrap();
        let mut ledger = Ledger::in_memory();
        // physical batch 2: the lot is split, which must not change the result.
        let out = private_discriminator_gradient(
            &d,
            design,
            conditioning,
            &xr,
            &yr,
            &xf,
            &yf,
            2,
            &mut mechanism,
            1,
            &mut ledger,
        )
        .unwrap();
        assert_eq!(ledger.steps(), 1, "the release is recorded");
        let e = &ledger.entries()[0];
        assert_eq!((e.sampling_rate, e.noise_multiplier, e.clipping_norm), (0.1, sigma, c));
        let noise = reference_noise(&d, sigma * c * (1.0 + CLIP_ROUNDING_SLACK), seed);
        let mut sum = noise.zeros_like();
        for i in 0..b {
            let mut loss = one_loss_for(&d, conditioning, &xr.narrow(0, i, 1), &yr.narrow(0, i, 1), true);
            if design == Design::Joint {
                loss += one_loss_for(&d, conditioning, &xf.narrow(0, i, 1), &yf.narrow(0, i, 1), false);
            }
            sum += clip(&flat_gradient(&d, &loss), c);
        }
        let mut reference = (sum + noise) / expected_lot;
        if design == Design::RealOnly {
            let mut fake = reference.zeros_like();
            for j in 0..fakes {
                fake +=
                    flat_gradient(&d, &one_loss_for(&d, conditioning, &xf.narrow(0, j, 1), &yf.narrow(0, j, 1), false));
            }
            reference += fake / fakes as f64;
        }
        assert_close(
            &flatten(&out.gradients),
            &reference,
            &format!("private discriminator gradient, design {design}, {conditioning:?}"),
        );
        assert_eq!((out.real_count, out.fake_count), (b as usize, fakes as usize));
        // The reported loss sums (design (b) splits one forward pass of the pairs into real and
        // generated rows) against the one-at-a-time losses.
        let real_ref: f64 = (0..b)
            .map(|i| one_loss_for(&d, conditioning, &xr.narrow(0, i, 1), &yr.narrow(0, i, 1), true).double_value(&[]))
            .sum();
        let fake_ref: f64 = (0..fakes)
            .map(|j| one_loss_for(&d, conditioning, &xf.narrow(0, j, 1), &yf.narrow(0, j, 1), false).double_value(&[]))
            .sum();
        for (what, got, want) in [("real", out.real_loss_sum, real_ref), ("fake", out.fake_loss_sum, fake_ref)] {
            assert!(
                (got - want).abs() <= RELATIVE_TOLERANCE * want.abs() + ABSOLUTE_TOLERANCE,
                "{what} loss sum, design {design}, {conditioning:?}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn joint_design_refuses_unpaired_fakes_and_noise_layer_has_no_clipped_step() {
    let (_vs, d) = tiny_discriminator(1);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (xr, yr) = random_images(3, &mut rng);
    let (xf, yf) = random_images(4, &mut rng);
    let mut n = GaussianSum::new(1.0, 1.0, 0.1, 3.0, "test", ChaCha20Rng::seed_from_u64(0)).unwrap();
    let mut ledger = Ledger::in_memory();
    for design in [Design::Joint, Design::NoiseLayer] {
        let out = private_discriminator_gradient(
            &d,
            design,
            Conditioning::LabelPlanes,
            &xr,
            &yr,
            &xf,
            &yf,
            8,
            &mut n,
            1,
            &mut ledger,
        );
        assert!(out.is_err(), "{design}");
    }
    assert_eq!(ledger.steps(), 0, "a refused step records nothing");
    assert!(GaussianSum::new(0.0, 1.0, 0.1, 3.0, "test", ChaCha20Rng::seed_from_u64(0)).is_err());
}

fn fixture_subset(n: usize) -> Dataset {
    let d = load_mnist_dir(Path::new("fixtures/mnist-small"), Split::Train, 10).unwrap();
    Dataset::new("fixture-subset", d.shape(), 10, d.pixels()[..n * 784].to_vec(), d.labels()[..n].to_vec()).unwrap()
}

fn tiny_config(design: Design) -> GanConfig {
    GanConfig {
        design,
        lot_size: 16.0,
        noise_multiplier: 1.0,
        max_grad_norm: 1.0,
        n_critic: 3,
        z_dim: 8,
        g_width: 4,
        d_width: 4,
        physical_batch: 64,
        ..GanConfig::default()
    }
}

#[test]
fn ledger_counts_every_discriminator_step() {
    let data = fixture_subset(160);
    let examples = Examples::from_dataset(&data, Device::Cpu).unwrap();
    for design in [Design::RealOnly, Design::Joint, Design::NoiseLayer] {
        let mut gan =
            DpGan::new(tiny_config(design), data.len(), Ledger::in_memory(), NoiseSeed::Explicit(3), Device::Cpu)
                .unwrap();
        for _ in 0..2 {
            let (reports, g) = gan.round(&examples).unwrap();
            assert_eq!(reports.len(), 3);
            assert!(g.is_finite());
        }
        gan.discriminator_step(&examples).unwrap();
        assert_eq!((gan.discriminator_steps(), gan.generator_steps()), (7, 2), "design {design}");
        let l = gan.ledger();
        assert_eq!(l.steps(), 7, "every discriminator step, n_critic included, is in the ledger (design {design})");
        assert!(l
            .entries()
            .iter()
            .all(|e| e.label == design.ledger_label() && e.sampling_rate == 0.1 && e.noise_multiplier == 1.0));
        assert_eq!(l.phases().unwrap()[0].steps, 7);
    }
}

/// Every variable of a generator's `VarStore`, by name.
fn generator_variables(g: &dpaudit::gan::networks::Generator) -> std::collections::HashMap<String, Tensor> {
    g.var_store().variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

/// Audit replays build GANs on several threads while other tests build DP-SGD models: a seeded
/// GAN's initial weights must depend on its seed alone. (Before one lock guarded libtorch's
/// shared generator, a DP-SGD build seeding it mid-way changed a replay's weights: CI saw a
/// replayed audit score differ from the original.)
#[test]
fn a_seeded_gan_starts_the_same_while_other_threads_build_models() {
    use dpaudit::train::dpsgd::{DpSgd, TrainConfig};
    use dpaudit::train::optim::{LrSchedule, OptimizerKind};
    let build = || {
        DpGan::new(
            GanConfig { g_ema: Some(0.5), ..tiny_config(Design::Joint) },
            160,
            Ledger::in_memory(),
            NoiseSeed::Explicit(11),
            Device::Cpu,
        )
        .unwrap()
    };
    let reference = generator_variables(build().generator());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let differing = std::thread::scope(|s| {
        for t in 0..2u64 {
            let stop = &stop;
            s.spawn(move || {
                let config = TrainConfig {
                    model: "mlp".into(),
                    lot_size: 16.0,
                    noise_multiplier: 1.0,
                    max_grad_norm: 1.0,
                    physical_batch: 64,
                    optimizer: OptimizerKind::Sgd,
                    lr: 0.1,
                    schedule: LrSchedule::Constant,
                    private: true,
                };
                let mut seed = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seed += 2;
                    let _ = DpSgd::ephemeral(config.clone(), 160, seed, Device::Cpu).unwrap();
                    let _ = DpGan::new(
                        tiny_config(Design::RealOnly),
                        160,
                        Ledger::in_memory(),
                        NoiseSeed::Explicit(seed),
                        Device::Cpu,
                    )
                    .unwrap();
                }
            });
        }
        // Compared after the scope: a panic inside it would wait forever for the builders.
        let differing: Vec<String> = (0..200)
            .flat_map(|i| {
                let again = generator_variables(build().generator());
                reference
                    .iter()
                    .filter(|(name, t)| !t.equal(&again[*name]))
                    .map(|(name, _)| format!("build {i}: {name}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        differing
    });
    assert!(differing.is_empty(), "differ from the first build with the same seed: {differing:?}");
}

#[test]
fn released_generator_is_the_moving_average_of_the_iterates() {
    let data = fixture_subset(160);
    let examples = Examples::from_dataset(&data, Device::Cpu).unwrap();
    let decay = 0.2;
    let config = GanConfig { g_ema: Some(decay), ..tiny_config(Design::Joint) };
    let mut gan =
        DpGan::new(config.clone(), data.len(), Ledger::in_memory(), NoiseSeed::Explicit(4), Device::Cpu).unwrap();
    // Start: the average is a copy of the freshly initialised generator.
    let mut expected = generator_variables(gan.generator());
    assert_eq!(generator_variables(gan.released_generator()).len(), expected.len());
    for t in 0..3u64 {
        gan.round(&examples).unwrap();
        // The warm-up decays are 1/10, 2/11, then the configured 0.2 (< 3/12).
        let d = DpGan::average_decay(decay, t);
        assert_eq!(d, [0.1, 2.0 / 11.0, 0.2][t as usize]);
        let live = generator_variables(gan.generator());
        let released = generator_variables(gan.released_generator());
        for (name, e) in expected.iter_mut() {
            *e = &*e * d + &live[name] * (1.0 - d);
            let r = &released[name];
            assert!(r.allclose(e, 1e-6, 1e-7, false), "step {t}, variable {name}");
        }
        // BatchNorm running statistics are averaged too; the average is not the last iterate.
        assert!(released.contains_key("bn0.running_mean"));
        assert!(!released["fc.weight"].allclose(&live["fc.weight"], 1e-6, 1e-7, false));
    }
    // A run trained with it saves the average and its releases say so.
    let dir = tempfile::tempdir().unwrap();
    let spec = GanRunSpec {
        config: GanConfig { g_ema: Some(0.5), ..tiny_config(Design::Joint) },
        epochs: 0.3,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(2),
        force: false,
        resume: false,
        checkpoint_every: 0,
    };
    train_gan(&spec, &data, &dir.path().join("run"), Device::Cpu, &mut |_, _, _| {}).unwrap();
    let release = sample_release(
        &dir.path().join("run"),
        &dir.path().join("synth"),
        &SampleOptions::new(20, Some(1)),
        false,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(release.generator, "moving average (decay 0.5)");
    // Without the option the released generator is the last iterate itself.
    let mut plain =
        DpGan::new(tiny_config(Design::Joint), data.len(), Ledger::in_memory(), NoiseSeed::Explicit(4), Device::Cpu)
            .unwrap();
    plain.round(&examples).unwrap();
    assert!(std::ptr::eq(plain.released_generator(), plain.generator()));
    // A decay outside (0, 1) is refused.
    for bad in [0.0, 1.0, f64::NAN] {
        let err = DpGan::new(
            GanConfig { g_ema: Some(bad), ..tiny_config(Design::Joint) },
            data.len(),
            Ledger::in_memory(),
            NoiseSeed::Explicit(4),
            Device::Cpu,
        )
        .unwrap_err();
        assert!(err.to_string().contains("generator average decay"), "{err}");
    }
}

fn train_tiny(out: &Path, design: Design, seed: u64) -> dpaudit::gan::run::GanMetrics {
    let spec = GanRunSpec {
        config: tiny_config(design),
        epochs: 0.3,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(seed),
        force: false,
        resume: false,
        checkpoint_every: 0,
    };
    train_gan(&spec, &fixture_subset(160), out, Device::Cpu, &mut |_, _, _| {}).unwrap()
}

#[test]
fn training_replays_under_a_seed_and_sampling_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = train_tiny(&dir.path().join("g1"), Design::NoiseLayer, 11);
    let m2 = train_tiny(&dir.path().join("g2"), Design::NoiseLayer, 11);
    // 0.3 epochs / q 0.1 = 3 steps, a multiple of n_critic = 3.
    assert_eq!((m1.discriminator_steps, m1.ledger_steps, m1.generator_steps), (3, 3, 1));
    assert_eq!(m1.generator_sha256, m2.generator_sha256, "a seeded noise-layer run replays exactly (auditable)");
    assert!(m1.epsilon_status.contains("claimed by the method's authors; not proven by dpaudit"));
    let run = dir.path().join("g1");
    let a = sample_release(&run, &dir.path().join("a"), &SampleOptions::new(50, Some(5)), false, Device::Cpu).unwrap();
    let b = sample_release(&run, &dir.path().join("b"), &SampleOptions::new(50, Some(5)), false, Device::Cpu).unwrap();
    let c = sample_release(&run, &dir.path().join("c"), &SampleOptions::new(50, Some(6)), false, Device::Cpu).unwrap();
    assert_eq!(a.files, b.files, "same seed, same release");
    assert_ne!(
        a.files["train-images-idx3-ubyte.gz"], c.files["train-images-idx3-ubyte.gz"],
        "another seed, other images"
    );
    assert_eq!(a.generator_sha256, m1.generator_sha256);
    assert_eq!(a.generator, "last iterate");
    assert_eq!(a.conditioning, Conditioning::LabelPlanes);
    assert_eq!(a.ledger.steps, 3);
    assert!(a.epsilon_status.contains("claimed"));
    let released = load_mnist_dir(&dir.path().join("a"), Split::Train, 10).unwrap();
    assert_eq!((released.len(), released.class_counts()), (50, vec![5; 10]));
    for (name, hash) in &a.files {
        assert_eq!(&sha256_file(&dir.path().join("a").join(name)).unwrap(), hash);
    }
    // The latent temperature: recorded, and it scales the latents (near 0, every image of a label
    // is the generator's output at z = 0, so they coincide; at 1 they differ).
    assert_eq!(a.temperature, 1.0);
    let cold = sample_release(
        &run,
        &dir.path().join("cold"),
        &SampleOptions { temperature: 1e-6, ..SampleOptions::new(50, Some(5)) },
        false,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(cold.temperature, 1e-6);
    assert_ne!(cold.files["train-images-idx3-ubyte.gz"], a.files["train-images-idx3-ubyte.gz"]);
    let same_label = |d: &dpaudit::data::Dataset| {
        (0..d.len()).filter(|&i| d.label(i) == 3).map(|i| d.image(i).to_vec()).collect::<Vec<_>>()
    };
    let cold_threes = same_label(&load_mnist_dir(&dir.path().join("cold"), Split::Train, 10).unwrap());
    let warm_threes = same_label(&load_mnist_dir(&dir.path().join("a"), Split::Train, 10).unwrap());
    assert_eq!(cold_threes.len(), 5);
    assert!(cold_threes.iter().all(|im| im == &cold_threes[0]), "temperature ~0: one image per label");
    assert!(warm_threes.iter().any(|im| im != &warm_threes[0]), "temperature 1: images of a label differ");
    // An existing output is refused without --force, replaced with it.
    assert!(sample_release(&run, &dir.path().join("a"), &SampleOptions::new(50, Some(7)), false, Device::Cpu).is_err());
    assert_eq!(
        sha256_file(&dir.path().join("a/train-images-idx3-ubyte.gz")).unwrap(),
        a.files["train-images-idx3-ubyte.gz"]
    );
    sample_release(&run, &dir.path().join("a"), &SampleOptions::new(50, Some(6)), true, Device::Cpu).unwrap();
    assert_eq!(
        sha256_file(&dir.path().join("a/train-images-idx3-ubyte.gz")).unwrap(),
        c.files["train-images-idx3-ubyte.gz"]
    );
}

#[test]
fn discriminator_ranking_keeps_the_best_scored_candidates_of_each_label() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, Design::Joint, 3);
    let opts = SampleOptions { keep: 0.25, ..SampleOptions::new(40, Some(9)) };
    let r = sample_release(&run, &dir.path().join("ranked"), &opts, false, Device::Cpu).unwrap();
    assert_eq!(r.keep, 0.25);
    assert_eq!(r.discriminator_sha256.as_deref(), Some(sha256_file(&run.join(DISCRIMINATOR_FILE)).unwrap().as_str()));
    assert!(r.selection.starts_with("discriminator ranking: 160 generated"), "{}", r.selection);
    let released = load_mnist_dir(&dir.path().join("ranked"), Split::Train, 10).unwrap();
    assert_eq!((released.len(), released.class_counts()), (40, vec![4; 10]));
    // The 160 candidates, scored by the run's discriminator: for each label, the released images
    // are its 4 best-scored candidates, best first.
    let (g, info) = load_generator(&run, Device::Cpu).unwrap();
    let d = load_discriminator(&run, &info, Device::Cpu).unwrap();
    let (pixels, labels, scores) = generate_scored(&g, Some((&d, Ranking::Realism)), 160, 9, 1.0).unwrap();
    assert_eq!(scores.len(), 160);
    assert!(scores.iter().any(|&s| s != scores[0]), "the scores must differ for the ranking to mean anything");
    for l in 0..10u8 {
        let mut idx: Vec<usize> = (0..160).filter(|&i| labels[i] == l).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let got: Vec<&[u8]> = (0..40).filter(|&i| released.label(i) == l).map(|i| released.image(i)).collect();
        let want: Vec<&[u8]> = idx[..4].iter().map(|&i| &pixels[i * 784..(i + 1) * 784]).collect();
        assert_eq!(got, want, "label {l}");
    }
    // The scores are the discriminator's real-minus-fake logit: recomputed here on the rounded
    // pixels, the kept candidates score higher on average than the rejected ones.
    let x = Tensor::from_slice(&pixels).view([160, 1, 28, 28]).to_kind(Kind::Float) / 255.0;
    let y = Tensor::from_slice(&labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>());
    let logits = tch::no_grad(|| d.net.forward(&condition(&x, &y).unwrap()).unwrap());
    let again = Vec::<f32>::try_from(logits.select(1, REAL) - logits.select(1, FAKE)).unwrap();
    for (a, b) in again.iter().zip(&scores) {
        assert!((a - b).abs() < 0.05 * (1.0 + b.abs()), "score {b} vs {a} on the rounded image");
    }
    // Without ranking nothing about the discriminator is recorded; a bad fraction is refused; the
    // noise-layer design cannot rank (its discriminator has no proven epsilon).
    let plain =
        sample_release(&run, &dir.path().join("plain"), &SampleOptions::new(40, Some(9)), false, Device::Cpu).unwrap();
    assert_eq!(
        (plain.keep, plain.discriminator_sha256.is_none(), plain.selection.as_str()),
        (1.0, true, "all generated")
    );
    for keep in [0.0, -0.5, 1.5, f64::NAN] {
        let e = sample_release(
            &run,
            &dir.path().join("bad"),
            &SampleOptions { keep, ..SampleOptions::new(40, Some(9)) },
            false,
            Device::Cpu,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--keep"), "{e}");
    }
    let nl = dir.path().join("nl");
    train_tiny(&nl, Design::NoiseLayer, 3);
    let e = sample_release(
        &nl,
        &dir.path().join("bad"),
        &SampleOptions { keep: 0.5, ..SampleOptions::new(40, Some(9)) },
        false,
        Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("noise-layer"), "{e}");
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn classifier_discriminator_trains_ranks_by_the_label_logit_and_is_recorded() {
    let data = fixture_subset(160);
    let examples = Examples::from_dataset(&data, Device::Cpu).unwrap();
    let classifier = |design| GanConfig { conditioning: Conditioning::Classifier, ..tiny_config(design) };
    // Every discriminator step is in the ledger, as with label planes.
    for design in [Design::RealOnly, Design::Joint] {
        let mut gan =
            DpGan::new(classifier(design), data.len(), Ledger::in_memory(), NoiseSeed::Explicit(3), Device::Cpu)
                .unwrap();
        let (reports, g) = gan.round(&examples).unwrap();
        assert_eq!((reports.len(), gan.ledger().steps()), (3, 3));
        assert!(g.is_finite() && reports.iter().all(|r| r.real_loss.is_finite() || r.lot_size == 0));
        // The generator's loss is CE(D(G(z, y)), y) over 11 classes: at initialisation near
        // ln 11 = 2.40, not the 2-class ln 2 = 0.69 of label planes.
        assert!(g > 1.5, "generator loss {g}");
    }
    // The noise-layer design keeps its paper's label planes.
    let e = DpGan::new(
        classifier(Design::NoiseLayer),
        data.len(),
        Ledger::in_memory(),
        NoiseSeed::Explicit(3),
        Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("conditioning"), "{e}");
    // A run records the choice; ranking scores each candidate by logit[label] - logit[generated].
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let spec = GanRunSpec {
        config: classifier(Design::Joint),
        epochs: 0.3,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(3),
        force: false,
        resume: false,
        checkpoint_every: 0,
    };
    train_gan(&spec, &data, &run, Device::Cpu, &mut |_, _, _| {}).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("gan.json")).unwrap()).unwrap();
    assert_eq!(saved["config"]["conditioning"], "classifier", "{saved}");
    let (g, info) = load_generator(&run, Device::Cpu).unwrap();
    let d = load_discriminator(&run, &info, Device::Cpu).unwrap();
    assert_eq!(d.conditioning, Conditioning::Classifier);
    let (pixels, labels, scores) = generate_scored(&g, Some((&d, Ranking::Realism)), 40, 9, 1.0).unwrap();
    let x = Tensor::from_slice(&pixels).view([40, 1, 28, 28]).to_kind(Kind::Float) / 255.0;
    let logits = tch::no_grad(|| d.net.forward(&x).unwrap());
    assert_eq!(logits.size(), [40, 11]);
    for (i, (&l, &score)) in labels.iter().zip(&scores).enumerate() {
        let again = logits.double_value(&[i as i64, i64::from(l)]) - logits.double_value(&[i as i64, 10]);
        assert!(
            (again - f64::from(score)).abs() < 0.05 * (1.0 + f64::from(score).abs()),
            "candidate {i}: score {score} vs {again}"
        );
    }
    let r = sample_release(
        &run,
        &dir.path().join("ranked"),
        &SampleOptions { keep: 0.5, ..SampleOptions::new(20, Some(9)) },
        false,
        Device::Cpu,
    )
    .unwrap();
    assert!(r.selection.contains("logit of the label"), "{}", r.selection);
    assert_eq!(r.conditioning, Conditioning::Classifier);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ranked/release.json")).unwrap()).unwrap();
    assert_eq!(written["conditioning"], "classifier");
    assert_eq!(written["rank_by"], "realism");

    // Ranking by label: each candidate's score is the log-odds of its label among the 10 real
    // classes, computed here from the logits by hand, and the release keeps each label's best.
    let (pixels, labels, scores) = generate_scored(&g, Some((&d, Ranking::Label)), 40, 9, 1.0).unwrap();
    let real = logits.narrow(1, 0, 10);
    for (i, (&l, &score)) in labels.iter().zip(&scores).enumerate() {
        let row: Vec<f64> = (0..10).map(|k| real.double_value(&[i as i64, k])).collect();
        let others =
            row.iter().enumerate().filter(|&(k, _)| k != usize::from(l)).map(|(_, v)| v.exp()).sum::<f64>().ln();
        let want = row[usize::from(l)] - others;
        assert!(
            (want - f64::from(score)).abs() < 0.05 * (1.0 + want.abs()),
            "candidate {i}: label score {score} vs {want}"
        );
    }
    let by_label = SampleOptions { keep: 0.5, rank_by: Ranking::Label, ..SampleOptions::new(20, Some(9)) };
    let r = sample_release(&run, &dir.path().join("by-label"), &by_label, false, Device::Cpu).unwrap();
    assert!(r.selection.contains("logsumexp of the other 9"), "{}", r.selection);
    assert_eq!(r.rank_by, Some(Ranking::Label));
    let released = load_mnist_dir(&dir.path().join("by-label"), Split::Train, 10).unwrap();
    for l in 0..10u8 {
        let mut idx: Vec<usize> = (0..40).filter(|&i| labels[i] == l).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let got: Vec<&[u8]> = (0..20).filter(|&i| released.label(i) == l).map(|i| released.image(i)).collect();
        let want: Vec<&[u8]> = idx[..2].iter().map(|&i| &pixels[i * 784..(i + 1) * 784]).collect();
        assert_eq!(got, want, "label {l}");
    }
    // Discriminator labels: every released image carries the argmax of the discriminator's 10
    // real-class logits for the released bytes, computed here by hand; the pixels are the
    // unranked release's; the agreement is the share of labels left unchanged.
    let plain =
        sample_release(&run, &dir.path().join("plain"), &SampleOptions::new(40, Some(9)), false, Device::Cpu).unwrap();
    assert_eq!(plain.labels, LabelSource::Generator);
    assert_eq!(plain.label_agreement, None);
    let relabel = SampleOptions { labels: LabelSource::Discriminator, ..SampleOptions::new(40, Some(9)) };
    let r = sample_release(&run, &dir.path().join("relabelled"), &relabel, false, Device::Cpu).unwrap();
    assert_eq!(r.labels, LabelSource::Discriminator);
    assert!(r.discriminator_sha256.is_some());
    let before = load_mnist_dir(&dir.path().join("plain"), Split::Train, 10).unwrap();
    let after = load_mnist_dir(&dir.path().join("relabelled"), Split::Train, 10).unwrap();
    assert_eq!(before.pixels(), after.pixels());
    let x = Tensor::from_slice(after.pixels()).view([40, 1, 28, 28]).to_kind(Kind::Float) / 255.0;
    let want = tch::no_grad(|| d.net.forward(&x).unwrap()).narrow(1, 0, 10).argmax(-1, false);
    let mut same = 0;
    for i in 0..40 {
        assert_eq!(i64::from(after.label(i)), want.int64_value(&[i as i64]), "image {i}");
        same += usize::from(after.label(i) == before.label(i));
    }
    assert_eq!(r.label_agreement, Some(same as f64 / 40.0));
    assert_eq!(r.class_counts, after.class_counts());
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("relabelled/release.json")).unwrap()).unwrap();
    assert_eq!(written["labels"], "discriminator");
    // Without --keep there is nothing to rank; a label-plane discriminator has no class logits.
    let e = sample_release(
        &run,
        &dir.path().join("bad"),
        &SampleOptions { rank_by: Ranking::Label, ..SampleOptions::new(20, Some(9)) },
        false,
        Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--rank-by"), "{e}");
    let planes = dir.path().join("planes");
    train_tiny(&planes, Design::Joint, 3);
    let e = sample_release(&planes, &dir.path().join("bad"), &by_label, false, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("class logits"), "{e}");
    // Refused by `gan sample` before generating (it names the flag), not by the first batch's scores.
    assert!(e.contains("--rank-by"), "{e}");
    assert!(!dir.path().join("bad").exists());
    let e = sample_release(&planes, &dir.path().join("bad"), &relabel, false, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("--labels") && e.contains("class logits"), "{e}");
    assert!(!dir.path().join("bad").exists());
}

/// Names in `dir`, sorted (to check that nothing, not even a temporary folder, was left).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn bad_count_missing_run_and_corrupt_checkpoint_are_clear_errors_with_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, Design::Joint, 1);
    let before = listing(dir.path());
    let out = dir.path().join("synth");
    for count in [0usize, 10_000_001] {
        let e = sample_release(&run, &out, &SampleOptions::new(count, Some(1)), false, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--count"), "{e}");
    }
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = sample_release(
            &run,
            &out,
            &SampleOptions { temperature: t, ..SampleOptions::new(10, Some(1)) },
            false,
            Device::Cpu,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--temperature"), "{e}");
    }
    let e = sample_release(&dir.path().join("nope"), &out, &SampleOptions::new(10, Some(1)), false, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such run folder"), "{e}");
    let g = run.join(GENERATOR_FILE);
    let bytes = std::fs::read(&g).unwrap();
    std::fs::write(&g, &bytes[..bytes.len() / 2]).unwrap();
    let e = sample_release(&run, &out, &SampleOptions::new(10, Some(1)), false, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("corrupt or incompatible generator checkpoint"), "{e}");
    std::fs::write(&g, b"not a safetensors file").unwrap();
    assert!(sample_release(&run, &out, &SampleOptions::new(10, Some(1)), false, Device::Cpu).is_err());
    assert_eq!(listing(dir.path()), before, "no output and no temporary folder left behind");
    // Training refuses to overwrite a run.
    let spec = GanRunSpec {
        config: tiny_config(Design::Joint),
        epochs: 0.3,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(1),
        force: false,
        resume: false,
        checkpoint_every: 0,
    };
    let e = train_gan(&spec, &fixture_subset(160), &run, Device::Cpu, &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(e.contains("--force"), "{e}");
}

#[test]
fn cli_trains_samples_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_dpaudit");
    let run = dir.path().join("g");
    let st = std::process::Command::new(bin)
        .args([
            "gan",
            "train",
            "--dataset",
            "fixture",
            "--target-epsilon",
            "8",
            "--epochs",
            "0.06",
            "--lot-size",
            "40",
            "--n-critic",
            "2",
            "--z-dim",
            "8",
            "--g-width",
            "4",
            "--d-width",
            "4",
            "--seed",
            "2",
            "--json",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let m: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    // 0.06 epochs / q 0.02 = 3 steps, rounded up to 4 (a multiple of n_critic).
    assert_eq!(m["ledger_steps"], 4);
    assert!(m["epsilons"][0]["epsilon"].as_f64().unwrap() <= 8.0);
    assert_eq!(m["sampling"], "poisson");
    assert!(run.join("samples-epoch-001.png").is_file());
    let out = dir.path().join("s");
    let bad = std::process::Command::new(bin)
        .args(["gan", "sample", "--count", "0", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--count"));
    assert!(!out.exists());
    let ok = std::process::Command::new(bin)
        .args(["gan", "sample", "--count", "30", "--seed", "1", "--json", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let r: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(r["design"], "joint");
    assert_eq!(r["ledger"]["steps"], 4);
    assert_eq!(r["labels"], "generator");
    assert!(out.join("grid.png").is_file() && out.join("release.json").is_file());
    // A label-plane discriminator has no class logits to label a release with: refused, no output.
    let relabelled = dir.path().join("relabelled");
    let bad = std::process::Command::new(bin)
        .args(["gan", "sample", "--count", "30", "--labels", "discriminator", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&relabelled)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--labels"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(!relabelled.exists());
}

#[test]
fn frechet_distance_of_a_shifted_copy_is_the_squared_shift() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let v: Vec<f64> = (0..400 * 5).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let f = Tensor::from_slice(&v).reshape([400, 5]);
    let shift = Tensor::from_slice(&[1.0f64, -2.0, 0.5, 0.0, 3.0]);
    let d0 = dpaudit::gan::evaluation::frechet_distance(&f, &f).unwrap();
    let d1 = dpaudit::gan::evaluation::frechet_distance(&f, &(&f + &shift)).unwrap();
    // Same covariance: tr(S) + tr(S) - 2 tr(S) = 0 up to the eigen-solver's rounding.
    assert!(d0.abs() < 1e-8, "{d0}");
    assert!((d1 - 14.25).abs() < 1e-8, "{d1}");
}

#[test]
fn evaluate_synthetic_reports_numbers_with_their_protocol() {
    use dpaudit::gan::evaluation::{evaluate_synthetic, EvalConfig};
    let train = load_mnist_dir(Path::new("fixtures/mnist-small"), Split::Train, 10).unwrap();
    let test = load_mnist_dir(Path::new("fixtures/mnist-small"), Split::Test, 10).unwrap();
    // Real images standing in for synthetic ones: CAS must be far above chance.
    let synthetic = fixture_subset(1000);
    let config = EvalConfig {
        cas_epochs: 2,
        validation_size: 500,
        fid_epochs: 1,
        real_vs_fake_epochs: 1,
        ..EvalConfig::default()
    };
    let r = evaluate_synthetic(&synthetic, &train, &test, &config, Device::Cpu, &mut |_| {}).unwrap();
    assert!(r.cas.test_accuracy > 0.5 && r.cas.test_accuracy <= 1.0, "{}", r.cas.test_accuracy);
    assert_eq!(r.cas.validation_accuracy.len(), 2);
    assert!(r.cas.protocol.contains("validation split of the last 500 real training examples"));
    assert!(r.fid_mnist_classifier.is_finite() && r.fid_protocol.contains("NOT Inception-FID"));
    assert!((0.0..=1.0).contains(&r.real_vs_fake_accuracy));
    let bad = EvalConfig { validation_size: train.len(), ..config.clone() };
    assert!(evaluate_synthetic(&synthetic, &train, &test, &bad, Device::Cpu, &mut |_| {}).is_err());

    // A weight average of decay 0 is the raw weights: swapping it in to validate and swapping the
    // raw weights back must leave training, selection and every number unchanged.
    let avg0 = EvalConfig { cas_weight_average: Some(0.0), ..config.clone() };
    let r0 = evaluate_synthetic(&synthetic, &train, &test, &avg0, Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!(r0.cas.validation_accuracy, r.cas.validation_accuracy);
    assert_eq!(r0.cas.test_accuracy, r.cas.test_accuracy);
    assert_eq!(r0.fid_mnist_classifier, r.fid_mnist_classifier);
    assert!(r0.cas.protocol.contains("moving average of its weights, decay 0"), "{}", r0.cas.protocol);
    // A real average validates other weights than the raw ones.
    let avg = EvalConfig { cas_weight_average: Some(0.99), ..config.clone() };
    let ra = evaluate_synthetic(&synthetic, &train, &test, &avg, Device::Cpu, &mut |_| {}).unwrap();
    assert_ne!(ra.cas.validation_accuracy, r.cas.validation_accuracy);
    // The FID and real-vs-fake classifiers shuffle from their own streams: the CAS settings do not
    // move their numbers.
    let longer = EvalConfig { cas_epochs: 3, ..config.clone() };
    let rl = evaluate_synthetic(&synthetic, &train, &test, &longer, Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!((rl.fid_mnist_classifier, rl.real_vs_fake_accuracy), (r.fid_mnist_classifier, r.real_vs_fake_accuracy));
    assert_eq!(rl.cas.validation_accuracy[..2], r.cas.validation_accuracy[..]);
    let bad = EvalConfig { cas_weight_average: Some(1.0), ..config };
    assert!(evaluate_synthetic(&synthetic, &train, &test, &bad, Device::Cpu, &mut |_| {}).is_err());
}
