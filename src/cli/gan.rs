//! `dpaudit gan ...` (train a private GAN, sample a synthetic release) and `dpaudit evaluate
//! synthetic` (CAS, fid_mnist_classifier, real-vs-fake accuracy).
use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use dpaudit::data::{self, Split};
use dpaudit::gan::dpgan::Design;
use dpaudit::gan::evaluation::{evaluate_synthetic, EvalConfig};
use dpaudit::gan::networks::Conditioning;
use dpaudit::gan::release::{sample_release, LabelSource, Ranking, SampleOptions};
use dpaudit::gan::run::{train_gan_recipe, GanRunSpec};
use dpaudit::recipe::{CalibrationAccountant, GanRecipe, OptimizerName, Privacy, Recipe, ScheduleName, GAN_MODEL};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Which training data.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum GanDataset {
    /// fixtures/mnist-small (2000 MNIST training images).
    Fixture,
    /// data/mnist (`dpaudit data fetch mnist`).
    Mnist,
    /// data/fashion-mnist (`dpaudit data fetch fashion-mnist`).
    FashionMnist,
}

/// The privacy design.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum DesignChoice {
    /// (a) clip and noise only the real-data term; the fake-data gradient is added without noise.
    RealOnly,
    /// (b) clip each (real, fake) pair's joint gradient, then noise (Bie et al. 2023).
    Joint,
    /// Triastcyn & Faltings 2018's Gaussian noise layer; its epsilon is only claimed.
    NoiseLayer,
}

/// What `gan sample --keep` ranks candidates by.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum RankChoice {
    /// How real the final discriminator finds each image with its label.
    Realism,
    /// How surely the final (classifier) discriminator reads each image as its label: the
    /// log-odds of the label among the 10 classes. Needs `--conditioning classifier`.
    Label,
}

/// Where `gan sample` takes the released labels from.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum LabelChoice {
    /// The label each image was generated for.
    Generator,
    /// The final classifier discriminator's reading of each released image.
    Discriminator,
}

/// How the discriminator learns the labels.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum ConditioningChoice {
    /// The image with 10 one-hot label planes; logits real / generated.
    LabelPlanes,
    /// The image alone; 11 logits: real of label 0..9, or generated.
    Classifier,
}

/// GAN subcommands.
#[derive(Subcommand)]
pub enum GanCommand {
    /// Train a conditional DP-GAN. Only the discriminator touches private data: each of its steps
    /// is a Poisson-subsampled Gaussian step, recorded (fsynced) in ledger.jsonl before its update,
    /// n_critic per generator step. Writes generator.safetensors, discriminator.safetensors,
    /// gan.json, metrics.json (per-epoch generator / discriminator-real / discriminator-fake
    /// losses, epsilon per accountant with delta), samples-epoch-NNN.png per epoch and
    /// nearest_training_images.png (samples beside their nearest training image; shows private
    /// images, never release it).
    Train(Box<GanTrainArgs>),
    /// Sample a labelled synthetic dataset from a trained generator: MNIST-format IDX files, grid.png
    /// and release.json (generator SHA-256, ledger summary, epsilon per accountant, design, SHA-256
    /// of every file). Written to a temporary folder renamed into place: no partial output.
    Sample {
        /// The run folder (from `dpaudit gan train`).
        #[arg(long)]
        run: PathBuf,
        /// Number of images (labels cycle 0..9).
        #[arg(long)]
        count: usize,
        /// The release folder (refused if it exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the latents (default: from the OS CSPRNG; recorded in release.json).
        #[arg(long)]
        seed: Option<u64>,
        /// Scale of the latents: each N(0, 1) latent is multiplied by T (1: the distribution the
        /// generator was trained on; below 1 gives more typical, less varied images). Recorded in
        /// release.json. Post-processing: epsilon is unchanged.
        #[arg(long, value_name = "T", default_value_t = 1.0)]
        temperature: f64,
        /// Discriminator ranking: generate count / F images and keep, per label, the fraction F
        /// that the run's final discriminator scores most real (1: keep all). The discriminator is
        /// covered by the run's epsilon (joint and real-only designs), so this is post-processing;
        /// recorded in release.json with the discriminator's SHA-256.
        #[arg(long, value_name = "F", default_value_t = 1.0)]
        keep: f64,
        /// What `--keep` ranks by: `realism` (logit real - logit generated) or `label` (the
        /// classifier discriminator's log-odds of the image's own label, which drops images that
        /// look like another digit).
        #[arg(long, value_enum, default_value_t = RankChoice::Realism)]
        rank_by: RankChoice,
        /// Where the released labels come from: `generator` (the label each image was generated
        /// for; labels cycle 0..9) or `discriminator` (the run's final classifier discriminator's
        /// reading of each released image, the argmax of its 10 real-class logits; needs
        /// `--conditioning classifier`). The discriminator is covered by the run's epsilon, so
        /// this is post-processing; release.json records the choice, how often the two labels
        /// agree, and the discriminator's SHA-256.
        #[arg(long, value_enum, default_value_t = LabelChoice::Generator)]
        labels: LabelChoice,
        /// Replace an existing release folder.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        device: super::DeviceArg,
        /// Print release.json.
        #[arg(long)]
        json: bool,
    },
}

/// `dpaudit gan train` options.
#[derive(clap::Args)]
#[command(args_override_self = true)]
pub struct GanTrainArgs {
    /// A GAN run's `recipe.toml` (the recipe type with a `[gan]` table): its options go first, so
    /// the command line overrides them; with the run's seed it trains the same generator again.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Training data.
    #[arg(long, value_enum, default_value = "fixture")]
    dataset: GanDataset,
    /// MNIST-format folder (default: fixtures/mnist-small, data/mnist or data/fashion-mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Privacy design.
    #[arg(long, value_enum, default_value = "joint")]
    design: DesignChoice,
    /// Calibrate sigma up front (RDP accountant) so the epsilon after all steps is at most E.
    #[arg(long, conflicts_with = "noise_multiplier")]
    target_epsilon: Option<f64>,
    /// Noise multiplier sigma.
    #[arg(long, short = 's', allow_negative_numbers = true)]
    noise_multiplier: Option<f64>,
    /// Delta of the reported epsilons.
    #[arg(long, short = 'd', allow_negative_numbers = true, default_value_t = 1e-5)]
    delta: f64,
    /// Epochs (discriminator steps = epochs / q, rounded up to a multiple of --n-critic).
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Expected lot size L of a discriminator step (q = L / N).
    #[arg(long, default_value_t = 128.0)]
    lot_size: f64,
    /// Clipping norm C (per example for real-only, per pair for joint, of the activations for
    /// noise-layer).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Discriminator steps per generator step (each one is recorded in the ledger).
    #[arg(long, default_value_t = 1)]
    n_critic: u32,
    /// Discriminator learning rate (Adam, betas 0.5 / 0.999).
    #[arg(long, default_value_t = 2e-4)]
    d_lr: f64,
    /// Generator learning rate (Adam, betas 0.5 / 0.999).
    #[arg(long, default_value_t = 2e-4)]
    g_lr: f64,
    /// Latent dimension.
    #[arg(long, default_value_t = 64)]
    z_dim: i64,
    /// Generator width.
    #[arg(long, default_value_t = 32)]
    g_width: i64,
    /// Release an exponential moving average of the generator with this decay (e.g. 0.995)
    /// instead of its last iterate; post-processing, no privacy cost. Recorded in gan.json.
    #[arg(long)]
    g_ema: Option<f64>,
    /// Discriminator width.
    #[arg(long, default_value_t = 32)]
    d_width: i64,
    /// How the discriminator learns the labels: `label-planes` (the image with 10 one-hot label
    /// planes, real/fake logits) or `classifier` (the image alone, 11 logits: real of label 0..9
    /// or generated; the generator is pushed to make G(z, y) read as a real y). Same privacy
    /// accounting (each pair's or example's gradient is clipped the same way); not for the
    /// noise-layer design.
    #[arg(long, value_enum, default_value = "label-planes")]
    conditioning: ConditioningChoice,
    /// Largest number of examples (pairs) through the discriminator at once.
    #[arg(long, default_value_t = 512)]
    physical_batch: usize,
    /// The run folder (refused if it exists and is not empty, unless --force or --resume).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its latest checkpoint (after a crash or a kill); the
    /// options must be the run's. Steps recorded after that checkpoint stay in the ledger.
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Checkpoint every N discriminator steps (at the end of the generator round that reaches a
    /// multiple of N; 0: only at the end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Seed of everything (sampling, noise, initialisation, latents); default: OS CSPRNG.
    #[arg(long)]
    seed: Option<u64>,
    /// Replace an existing run folder.
    #[arg(long)]
    force: bool,
    /// libtorch threads.
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    device: super::DeviceArg,
    /// Print metrics.json.
    #[arg(long)]
    json: bool,
}

/// Evaluation subcommands.
#[derive(Subcommand)]
pub enum EvaluateCommand {
    /// Utility of a synthetic MNIST-format dataset: CAS (classifier trained on synthetic only,
    /// epoch selected on a validation split of the real training data, tested on the real test
    /// set), fid_mnist_classifier (not Inception-FID) and real-vs-fake accuracy (0.5 is perfect).
    Synthetic {
        /// The synthetic folder (from `dpaudit gan sample`).
        #[arg(long)]
        synthetic: PathBuf,
        /// The real MNIST-format folder (train and t10k splits).
        #[arg(long)]
        real: PathBuf,
        /// CAS classifier epochs (best on validation kept).
        #[arg(long, default_value_t = 10)]
        cas_epochs: u32,
        /// Validate and test the CAS classifier with an exponential moving average of its
        /// weights, of this decay (DPImageBench uses 0.9999); default: its raw weights.
        #[arg(long, value_name = "DECAY")]
        cas_weight_average: Option<f64>,
        /// Real training examples carved off (from the end) for CAS's epoch selection.
        #[arg(long, default_value_t = 5000)]
        validation_size: usize,
        /// Epochs of the FID feature classifier on real data.
        #[arg(long, default_value_t = 2)]
        fid_epochs: u32,
        /// Epochs of the real-vs-fake classifier.
        #[arg(long, default_value_t = 3)]
        real_vs_fake_epochs: u32,
        /// Seed of the classifiers.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// libtorch threads.
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        device: super::DeviceArg,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn train(a: &GanTrainArgs) -> Result<()> {
    let device = a.device.resolve()?;
    if let Some(t) = a.threads {
        tch::set_num_threads(t as i32);
    }
    let dir = a.data_dir.clone().unwrap_or_else(|| match a.dataset {
        GanDataset::Fixture => PathBuf::from("fixtures/mnist-small"),
        GanDataset::Mnist => PathBuf::from("data/mnist"),
        GanDataset::FashionMnist => PathBuf::from("data/fashion-mnist"),
    });
    let hint = match a.dataset {
        GanDataset::Mnist => " (get it with `dpaudit data fetch mnist`)",
        GanDataset::FashionMnist => " (get it with `dpaudit data fetch fashion-mnist`)",
        GanDataset::Fixture => "",
    };
    let train_set = data::load_mnist_dir(&dir, Split::Train, 10)
        .with_context(|| format!("loading the training set from {}{hint}", dir.display()))?;
    let privacy = match (a.noise_multiplier, a.target_epsilon) {
        (Some(noise_multiplier), _) => Privacy::Gaussian { noise_multiplier },
        (None, Some(epsilon)) => Privacy::TargetEpsilon { epsilon, accountant: CalibrationAccountant::Rdp },
        (None, None) => bail!("give --noise-multiplier S or --target-epsilon E"),
    };
    let recipe = gan_recipe_from_args(a, privacy);
    let spec = GanRunSpec::from_recipe(&recipe, a.seed, a.force, a.resume, a.checkpoint_every)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} discriminator steps  {msg}  [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    let mut progress = |done: u64, total: u64, eps: f64| {
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(format!("epsilon (RDP) {eps:.3}"));
    };
    let m = train_gan_recipe(&spec, Some(&recipe), &train_set, &a.out, device, &mut progress)
        .with_context(|| format!("training the GAN into {}", a.out.display()))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    println!(
        "design {} ({}), {} discriminator steps (all in the ledger), {} generator steps, q = {:.6}, {:.0} s",
        m.design, m.epsilon_status, m.discriminator_steps, m.generator_steps, m.sampling_rate, m.wall_seconds
    );
    for e in &m.epsilons {
        println!("  epsilon {:.4} at delta {:e} ({} accountant, Poisson sampling)", e.epsilon, e.delta, e.accountant);
    }
    println!("  {}", m.noise_multiplier_source);
    for e in &m.per_epoch {
        println!(
            "  epoch {:>3}: G loss {:.4}  D real {:.4}  D fake {:.4}  clipped {:.2}  {}",
            e.epoch, e.generator_loss, e.discriminator_real_loss, e.discriminator_fake_loss, e.clipped_fraction, e.grid
        );
    }
    println!("wrote {} (generator sha256 {})", a.out.display(), m.generator_sha256);
    Ok(())
}

/// The recipe `gan train`'s options describe.
fn gan_recipe_from_args(a: &GanTrainArgs, privacy: Privacy) -> Recipe {
    let dataset = match (&a.data_dir, a.dataset) {
        (Some(dir), _) => dir.display().to_string(),
        (None, GanDataset::Fixture) => "fixture".into(),
        (None, GanDataset::Mnist) => "mnist".into(),
        (None, GanDataset::FashionMnist) => "fashion-mnist".into(),
    };
    Recipe {
        dataset,
        train_examples: None,
        validation: 0,
        model: GAN_MODEL.into(),
        lot_size: a.lot_size,
        epochs: Some(a.epochs),
        steps: None,
        max_grad_norm: a.max_grad_norm,
        optimizer: OptimizerName::Adam,
        momentum: 0.9,
        lr: a.d_lr,
        schedule: ScheduleName::Constant,
        physical_batch: a.physical_batch,
        delta: a.delta,
        privacy,
        pca: None,
        ema: None,
        inject_fault: None,
        adversarial: None,
        public_norm: None,
        trainer: Default::default(),
        gan: Some(GanRecipe {
            design: match a.design {
                DesignChoice::RealOnly => Design::RealOnly,
                DesignChoice::Joint => Design::Joint,
                DesignChoice::NoiseLayer => Design::NoiseLayer,
            },
            n_critic: a.n_critic,
            g_lr: a.g_lr,
            z_dim: a.z_dim,
            g_width: a.g_width,
            d_width: a.d_width,
            g_ema: a.g_ema,
            conditioning: match a.conditioning {
                ConditioningChoice::LabelPlanes => Conditioning::LabelPlanes,
                ConditioningChoice::Classifier => Conditioning::Classifier,
            },
        }),
    }
}

/// `dpaudit gan train --config FILE ...`: the options of the GAN recipe in FILE go first, so the
/// command line overrides them (GanTrainArgs lets a later occurrence of an option replace an
/// earlier one).
///
/// # Errors
/// A file that cannot be read, is not a recipe, or has no `[gan]` table.
pub fn expand_gan_train_config(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>> {
    if args.get(1).and_then(|a| a.to_str()) != Some("gan") || args.get(2).and_then(|a| a.to_str()) != Some("train") {
        return Ok(args);
    }
    let Some(pos) = args.iter().position(|a| a == "--config") else { return Ok(args) };
    let path = PathBuf::from(args.get(pos + 1).context("--config needs a file")?);
    let r = Recipe::load(&path)?;
    let Some(g) = r.gan else {
        bail!("{} is not a GAN recipe (no [gan] table); run it with `dpaudit train --config`", path.display());
    };
    let mut o: Vec<String> = Vec::new();
    let mut opt = |flag: &str, value: String| o.extend([format!("--{flag}"), value]);
    match r.dataset.as_str() {
        d @ ("fixture" | "mnist" | "fashion-mnist") => opt("dataset", d.into()),
        dir => opt("data-dir", dir.into()),
    }
    opt("design", g.design.to_string());
    match r.privacy {
        Privacy::Gaussian { noise_multiplier } => opt("noise-multiplier", noise_multiplier.to_string()),
        Privacy::TargetEpsilon { epsilon, .. } => opt("target-epsilon", epsilon.to_string()),
        Privacy::Off => bail!("{}: a DP-GAN always has privacy", path.display()),
    }
    opt("delta", r.delta.to_string());
    if let Some(epochs) = r.epochs {
        opt("epochs", epochs.to_string());
    }
    opt("lot-size", r.lot_size.to_string());
    opt("max-grad-norm", r.max_grad_norm.to_string());
    opt("n-critic", g.n_critic.to_string());
    opt("d-lr", r.lr.to_string());
    opt("g-lr", g.g_lr.to_string());
    opt("z-dim", g.z_dim.to_string());
    opt("g-width", g.g_width.to_string());
    if let Some(decay) = g.g_ema {
        opt("g-ema", decay.to_string());
    }
    opt("d-width", g.d_width.to_string());
    opt(
        "conditioning",
        match g.conditioning {
            Conditioning::LabelPlanes => "label-planes".into(),
            Conditioning::Classifier => "classifier".into(),
        },
    );
    opt("physical-batch", r.physical_batch.to_string());
    let mut out: Vec<std::ffi::OsString> = args[..3].to_vec();
    out.extend(o.into_iter().map(Into::into));
    out.extend(args[3..].iter().cloned());
    Ok(out)
}

/// Runs a `gan` subcommand.
///
/// # Errors
/// Whatever the library reports, with context.
pub fn run(cmd: GanCommand) -> Result<()> {
    match cmd {
        GanCommand::Train(a) => train(&a),
        GanCommand::Sample { run, count, out, seed, temperature, keep, rank_by, labels, force, device, json } => {
            let device = device.resolve()?;
            let rank_by = match rank_by {
                RankChoice::Realism => Ranking::Realism,
                RankChoice::Label => Ranking::Label,
            };
            let labels = match labels {
                LabelChoice::Generator => LabelSource::Generator,
                LabelChoice::Discriminator => LabelSource::Discriminator,
            };
            let opts = SampleOptions { count, seed, temperature, keep, rank_by, labels };
            let r = sample_release(&run, &out, &opts, force, device)
                .with_context(|| format!("sampling {count} images from {} into {}", run.display(), out.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "wrote {} images to {} (design {}, {}; seed {}, temperature {})",
                    r.count,
                    out.display(),
                    r.design,
                    r.epsilon_status,
                    r.seed,
                    r.temperature
                );
                if let Some(agreement) = r.label_agreement {
                    println!(
                        "  labels from the final discriminator: {:.2}% equal the generated label; per label {:?}",
                        100.0 * agreement,
                        r.class_counts
                    );
                }
                for e in &r.epsilons {
                    println!(
                        "  epsilon {:.4} at delta {:e} ({} accountant, {} ledger steps)",
                        e.epsilon, e.delta, e.accountant, r.ledger.steps
                    );
                }
                for (f, h) in &r.files {
                    println!("  {f:<28} {h}");
                }
            }
            Ok(())
        }
    }
}

/// Runs an `evaluate` subcommand.
///
/// # Errors
/// Whatever the library reports, with context.
pub fn run_evaluate(cmd: EvaluateCommand) -> Result<()> {
    match cmd {
        EvaluateCommand::Synthetic {
            synthetic,
            real,
            cas_epochs,
            cas_weight_average,
            validation_size,
            fid_epochs,
            real_vs_fake_epochs,
            seed,
            threads,
            device,
            json,
        } => {
            let device = device.resolve()?;
            if let Some(t) = threads {
                tch::set_num_threads(t as i32);
            }
            let syn = data::load_mnist_dir(&synthetic, Split::Train, 10)
                .with_context(|| format!("loading the synthetic set from {}", synthetic.display()))?;
            let train = data::load_mnist_dir(&real, Split::Train, 10)
                .with_context(|| format!("loading the real training set from {}", real.display()))?;
            let test = data::load_mnist_dir(&real, Split::Test, 10)
                .with_context(|| format!("loading the real test set from {}", real.display()))?;
            let config = EvalConfig {
                cas_epochs,
                cas_weight_average,
                validation_size,
                fid_epochs,
                real_vs_fake_epochs,
                seed,
                ..EvalConfig::default()
            };
            let spinner = ProgressBar::new_spinner();
            spinner.enable_steady_tick(std::time::Duration::from_millis(200));
            let mut stage = |s: &str| spinner.set_message(s.to_owned());
            let r = evaluate_synthetic(&syn, &train, &test, &config, device, &mut stage)
                .context("evaluating the synthetic set")?;
            spinner.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "CAS {:.4} (epoch {} selected on validation)\n  {}",
                    r.cas.test_accuracy, r.cas.selected_epoch, r.cas.protocol
                );
                println!("fid_mnist_classifier {:.3}\n  {}", r.fid_mnist_classifier, r.fid_protocol);
                println!(
                    "real-vs-fake accuracy {:.4} (0.5 is perfect)\n  {}",
                    r.real_vs_fake_accuracy, r.real_vs_fake_protocol
                );
            }
            Ok(())
        }
    }
}
