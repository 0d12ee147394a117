//! `dpaudit train`: DP-SGD (or the non-private baseline) into a run folder.
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use dpaudit::data::{self, Split};
use dpaudit::recipe::{CalibrationAccountant, OptimizerName, PcaRecipe, Privacy, PublicNorm, Recipe, ScheduleName};
use dpaudit::train::run::{train_recipe, RunOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Args)]
#[command(args_override_self = true)]
pub struct TrainArgs {
    /// A TOML file of options: a run's `recipe.toml` (the recipe type, with a `[privacy]` table;
    /// with the run's seed it trains the same model again), or `key = value` per line with keys as
    /// the long options without `--` (`model = "tanh-cnn"`, `epochs = 10`, `no_privacy = true`).
    /// Options given on the command line override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which data: mnist, fashion-mnist (MNIST-format folders) or fixture (the built-in 2,000/500
    /// MNIST subset in fixtures/mnist-small).
    #[arg(long, value_enum, default_value_t = TrainDataset::Fixture)]
    pub dataset: TrainDataset,
    /// The data folder (default: data/<dataset>, or fixtures/mnist-small for `fixture`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Model: logreg, mlp, tanh-cnn, seed-cnn, seed-cnn-pn, abadi-pca (Abadi et al. 2016: DP-PCA
    /// to --pca-dims dimensions, then 1000 ReLU units).
    #[arg(long, default_value = "tanh-cnn")]
    pub model: String,
    /// abadi-pca: dimension of the DP-PCA projection (default 60).
    #[arg(long, value_name = "K")]
    pub pca_dims: Option<usize>,
    /// abadi-pca: DP-PCA's noise multiplier sigma_p (one Gaussian release of the noisy A^T A,
    /// recorded in the ledger as (q = 1, sigma_p, 1 step) before training; Abadi et al. used 4 and 7).
    #[arg(long, value_name = "SIGMA_P", default_value_t = 7.0)]
    pub pca_noise_multiplier: f64,
    /// abadi-pca: whiten the projection, scaling each component to the same energy using the
    /// released noisy eigenvalues (post-processing, no privacy cost; metrics.json: pca.whitened).
    #[arg(long)]
    pub pca_whiten: bool,
    /// mlp and abadi-pca: hidden units of the one hidden layer (default 1000; the run's model
    /// name gets a -hN suffix, e.g. mlp-h500).
    #[arg(long, value_name = "N")]
    pub hidden: Option<usize>,
    /// Hold out the last N training examples as a validation set (tune on it, not on the test
    /// set); privacy is accounted over the remaining examples. metrics.json: validation_accuracy.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub validation: usize,
    /// Evaluate and save an exponential moving average of the parameters with this decay (e.g.
    /// 0.999; De et al. 2022) instead of the last iterate. Post-processing of the noisy updates: no
    /// privacy cost. metrics.json: parameter_averaging.
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f64>,
    /// Inject a deliberate bug, to test that audits catch it: no-clip, noise-on-mean, skip-noise:K
    /// (no noise every K-th step) or ledger-undercount (half the steps recorded). The run records
    /// the fault and `dpaudit cert sign` refuses to certify it.
    #[arg(long, value_name = "FAULT")]
    pub inject_fault: Option<dpaudit::train::fault::Fault>,
    /// Adversarial training (DP + robust): train on PGD examples within this L-infinity radius
    /// (pixels in [0, 1], e.g. 0.1); robust test accuracy is reported too.
    #[arg(long, value_name = "RADIUS")]
    pub pgd_epsilon: Option<f64>,
    /// PGD steps.
    #[arg(long, default_value_t = 10, requires = "pgd_epsilon")]
    pub pgd_steps: u32,
    /// PGD step size (default: 2.5 radius / steps).
    #[arg(long, requires = "pgd_epsilon")]
    pub pgd_step_size: Option<f64>,
    /// Public data for public-data BatchNorm (models ending in -pn, e.g. seed-cnn-pn): an
    /// MNIST-format folder whose first --public-norm-size training images give the normalisation
    /// statistics (e.g. data/fashion-mnist for private MNIST). It must really be public.
    #[arg(long, value_name = "DIR")]
    pub public_norm_data: Option<PathBuf>,
    /// Public images used for the statistics.
    #[arg(long, default_value_t = 128)]
    pub public_norm_size: usize,
    /// Use only the first N training examples (default: all).
    #[arg(long, value_name = "N")]
    pub train_examples: Option<usize>,
    /// Epochs (steps = epochs / q).
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    /// Steps, instead of epochs.
    #[arg(long, short = 't', value_name = "N", conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Expected lot size L (Poisson sampling with q = L / N).
    #[arg(long, default_value_t = 256.0)]
    pub lot_size: f64,
    /// Noise multiplier sigma.
    #[arg(long, short = 's', allow_negative_numbers = true, conflicts_with = "target_epsilon")]
    pub noise_multiplier: Option<f64>,
    /// Calibrate sigma up front for this epsilon after all the epochs (RDP accountant, or
    /// --calibration-accountant).
    #[arg(long)]
    pub target_epsilon: Option<f64>,
    /// The accountant --target-epsilon calibrates with: rdp or pld.
    #[arg(long, value_enum, default_value_t = AccountantChoice::Rdp, requires = "target_epsilon")]
    pub calibration_accountant: AccountantChoice,
    /// Clipping norm C.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Delta.
    #[arg(long, short = 'd', allow_negative_numbers = true, default_value_t = 1e-5)]
    pub delta: f64,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerChoice::Momentum)]
    pub optimizer: OptimizerChoice,
    /// Momentum coefficient (momentum optimiser).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleChoice::Constant)]
    pub schedule: ScheduleChoice,
    /// Largest number of examples per forward pass (memory bound; does not change the result).
    #[arg(long, default_value_t = 256)]
    pub physical_batch: usize,
    /// Train without privacy (baseline): no clipping, no noise, no ledger.
    #[arg(long)]
    pub no_privacy: bool,
    /// Seed for sampling, noise and initialisation: a reproducible-noise run, for experiments.
    /// Anyone who knows the seed can regenerate the noise, so the run is recorded as `seeded` in
    /// metrics.json, the ledger and its certificate, and `cert sign` refuses it unless given
    /// --allow-seeded-noise. Default: everything seeded from the operating system's CSPRNG.
    #[arg(long, conflicts_with = "secure_noise")]
    pub seed: Option<u64>,
    /// Seed everything from the operating system's CSPRNG (the default; kept for older scripts).
    #[arg(long)]
    pub secure_noise: bool,
    /// libtorch threads.
    #[arg(long)]
    pub threads: Option<i32>,
    #[command(flatten)]
    pub device: crate::cli::DeviceArg,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Run folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Print metrics.json to stdout at the end.
    #[arg(long)]
    pub json: bool,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum TrainDataset {
    Mnist,
    FashionMnist,
    Fixture,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum OptimizerChoice {
    Sgd,
    Momentum,
    Adam,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum AccountantChoice {
    Rdp,
    Pld,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum ScheduleChoice {
    Constant,
    Cosine,
    Linear,
}

/// `dpaudit train --config FILE ...`: the file's options go first, so the command line overrides
/// them (TrainArgs lets a later occurrence of an option replace an earlier one).
pub fn expand_train_config(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>> {
    if args.get(1).and_then(|a| a.to_str()) != Some("train") {
        return Ok(args);
    }
    let Some(pos) = args.iter().position(|a| a == "--config") else { return Ok(args) };
    let path = PathBuf::from(args.get(pos + 1).context("--config needs a file")?);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the config {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing the config {}", path.display()))?;
    let mut from_file: Vec<std::ffi::OsString> = Vec::new();
    if table.contains_key("privacy") {
        // A recipe (a run's recipe.toml): read as the recipe type, then given as its options.
        let recipe = Recipe::from_toml(&text, &path)?;
        from_file = recipe_options(&recipe)?;
    } else {
        for (key, value) in table {
            let flag = format!("--{}", key.replace('_', "-"));
            match value {
                toml::Value::Boolean(true) => from_file.push(flag.into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(v) => from_file.extend([flag.into(), v.into()]),
                toml::Value::Integer(v) => from_file.extend([flag.into(), v.to_string().into()]),
                toml::Value::Float(v) => from_file.extend([flag.into(), v.to_string().into()]),
                other => bail!(
                    "{}: option {key} has an unsupported value {other} (use a string, number or boolean)",
                    path.display()
                ),
            }
        }
    }
    let mut out: Vec<std::ffi::OsString> = args[..2].to_vec();
    out.extend(from_file);
    out.extend(args[2..].iter().cloned());
    Ok(out)
}

/// The command-line options that give `recipe` (in the order of `dpaudit train --help`).
fn recipe_options(r: &Recipe) -> Result<Vec<std::ffi::OsString>> {
    if !r.trainer.is_built_in() {
        bail!("the recipe names an external trainer; `dpaudit train` runs dpaudit's own");
    }
    if r.gan.is_some() {
        bail!("the recipe is a GAN's (it has a [gan] table); run it with `dpaudit gan train --config`");
    }
    let mut o: Vec<String> = Vec::new();
    let mut opt = |flag: &str, value: String| o.extend([format!("--{flag}"), value]);
    match r.dataset.as_str() {
        d @ ("fixture" | "mnist" | "fashion-mnist") => opt("dataset", d.into()),
        dir => opt("data-dir", dir.into()),
    }
    opt("model", r.model.clone());
    if let Some(p) = r.pca {
        opt("pca-noise-multiplier", p.noise_multiplier.to_string());
    }
    if r.validation > 0 {
        opt("validation", r.validation.to_string());
    }
    if let Some(d) = r.ema {
        opt("ema", d.to_string());
    }
    if let Some(f) = r.inject_fault {
        opt("inject-fault", f.to_string());
    }
    if let Some(p) = r.adversarial {
        opt("pgd-epsilon", p.epsilon.to_string());
        opt("pgd-steps", p.steps.to_string());
        opt("pgd-step-size", p.step_size.to_string());
    }
    if let Some(p) = &r.public_norm {
        opt("public-norm-data", p.data.display().to_string());
        opt("public-norm-size", p.size.to_string());
    }
    if let Some(n) = r.train_examples {
        opt("train-examples", n.to_string());
    }
    match (r.epochs, r.steps) {
        (_, Some(steps)) => opt("steps", steps.to_string()),
        (Some(epochs), None) => opt("epochs", epochs.to_string()),
        (None, None) => {}
    }
    opt("lot-size", r.lot_size.to_string());
    match r.privacy {
        Privacy::Off => {}
        Privacy::Gaussian { noise_multiplier } => opt("noise-multiplier", noise_multiplier.to_string()),
        Privacy::TargetEpsilon { epsilon, accountant } => {
            opt("target-epsilon", epsilon.to_string());
            opt("calibration-accountant", accountant.as_str().into());
        }
    }
    opt("max-grad-norm", r.max_grad_norm.to_string());
    opt("delta", r.delta.to_string());
    opt("lr", r.lr.to_string());
    opt("optimizer", r.optimizer.as_str().into());
    opt("momentum", r.momentum.to_string());
    opt("schedule", r.schedule.as_str().into());
    opt("physical-batch", r.physical_batch.to_string());
    if r.privacy == Privacy::Off {
        o.push("--no-privacy".into());
    }
    if r.pca.is_some_and(|p| p.whiten) {
        o.push("--pca-whiten".into());
    }
    Ok(o.into_iter().map(Into::into).collect())
}

/// The recipe the options describe (checked by [`Recipe::validate`] before any data is read).
fn recipe_from_args(args: &TrainArgs) -> Result<Recipe> {
    let dataset = match (&args.data_dir, args.dataset) {
        (Some(dir), _) => dir.display().to_string(),
        (None, TrainDataset::Mnist) => "mnist".into(),
        (None, TrainDataset::FashionMnist) => "fashion-mnist".into(),
        (None, TrainDataset::Fixture) => "fixture".into(),
    };
    let model = match (dpaudit::train::models::pca_dims(&args.model), args.pca_dims) {
        (Some(_), Some(k)) => dpaudit::train::models::abadi_pca_name(k),
        (Some(_), None) => args.model.clone(),
        (None, Some(_)) => bail!("--pca-dims is for the abadi-pca model, not {}", args.model),
        (None, None) => args.model.clone(),
    };
    let model = match args.hidden {
        Some(h) => dpaudit::train::models::with_hidden(&model, h)?,
        None => model,
    };
    let pca = dpaudit::train::models::pca_dims(&model)
        .map(|_| PcaRecipe { noise_multiplier: args.pca_noise_multiplier, whiten: args.pca_whiten });
    if args.pca_whiten && pca.is_none() {
        bail!("--pca-whiten is for the abadi-pca models, not {model}: only they use DP-PCA");
    }
    let privacy = match (args.no_privacy, args.noise_multiplier, args.target_epsilon) {
        (true, _, _) => Privacy::Off,
        (false, Some(noise_multiplier), _) => Privacy::Gaussian { noise_multiplier },
        (false, None, Some(epsilon)) => Privacy::TargetEpsilon {
            epsilon,
            accountant: match args.calibration_accountant {
                AccountantChoice::Rdp => CalibrationAccountant::Rdp,
                AccountantChoice::Pld => CalibrationAccountant::Pld,
            },
        },
        (false, None, None) => {
            bail!("give --noise-multiplier S or --target-epsilon E (or --no-privacy for the baseline)")
        }
    };
    let adversarial = match args.pgd_epsilon {
        Some(r) => Some(dpaudit::train::adversarial::PgdConfig::new(
            r,
            args.pgd_steps,
            args.pgd_step_size.unwrap_or(2.5 * r / f64::from(args.pgd_steps.max(1))),
        )?),
        None => None,
    };
    let recipe = Recipe {
        dataset,
        train_examples: args.train_examples,
        validation: args.validation,
        model,
        lot_size: args.lot_size,
        epochs: if args.steps.is_some() { None } else { Some(args.epochs) },
        steps: args.steps,
        max_grad_norm: args.max_grad_norm,
        optimizer: match args.optimizer {
            OptimizerChoice::Sgd => OptimizerName::Sgd,
            OptimizerChoice::Momentum => OptimizerName::Momentum,
            OptimizerChoice::Adam => OptimizerName::Adam,
        },
        momentum: args.momentum,
        lr: args.lr,
        schedule: match args.schedule {
            ScheduleChoice::Constant => ScheduleName::Constant,
            ScheduleChoice::Cosine => ScheduleName::Cosine,
            ScheduleChoice::Linear => ScheduleName::Linear,
        },
        physical_batch: args.physical_batch,
        delta: args.delta,
        privacy,
        pca,
        ema: args.ema,
        inject_fault: args.inject_fault,
        adversarial,
        public_norm: args
            .public_norm_data
            .as_ref()
            .map(|data| PublicNorm { data: data.clone(), size: args.public_norm_size }),
        trainer: Default::default(),
        gan: None,
    };
    recipe.validate()?;
    Ok(recipe)
}

pub fn train(args: &TrainArgs) -> Result<()> {
    let device = args.device.resolve()?;
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    if args.public_norm_data.is_none()
        && dpaudit::train::models::specs(&args.model).is_ok_and(|s| {
            s.iter().any(|l| matches!(l, dpaudit::train::per_example::LayerSpec::PublicBatchNorm2d { .. }))
        })
    {
        bail!("model {} normalises with public-data statistics: give --public-norm-data DIR (an MNIST-format folder of public images, e.g. data/fashion-mnist from `dpaudit data fetch fashion-mnist`)", args.model);
    }
    let recipe = recipe_from_args(args)?;
    let data_dir = recipe.data_dir();
    let hint = match (args.data_dir.is_some(), args.dataset) {
        (false, TrainDataset::Mnist) => " (get it with `dpaudit data fetch mnist`)",
        (false, TrainDataset::FashionMnist) => " (get it with `dpaudit data fetch fashion-mnist`)",
        _ => "",
    };
    let train_set = data::load_mnist_dir(&data_dir, Split::Train, 10)
        .with_context(|| format!("loading the training set from {}{hint}", data_dir.display()))?;
    let test_set = data::load_mnist_dir(&data_dir, Split::Test, 10)
        .with_context(|| format!("loading the test set from {}{hint}", data_dir.display()))?;
    // Every check, and sigma calibrated once, before any data is trained on.
    let resolved = recipe.resolve(train_set.len())?;
    let total = resolved.steps;
    let public_batch = match &recipe.public_norm {
        Some(p) => {
            let d = data::load_mnist_dir(&p.data, Split::Train, 10)
                .with_context(|| format!("loading the public normalisation data from {}", p.data.display()))?;
            let n = p.size.min(d.len());
            let per = d.shape().pixels().unwrap_or(0);
            Some(data::Dataset::new(
                format!("{} (first {n}, public)", d.name()),
                d.shape(),
                d.classes(),
                d.pixels()[..n * per].to_vec(),
                d.labels()[..n].to_vec(),
            )?)
        }
        None => None,
    };
    let options =
        RunOptions { seed: args.seed, checkpoint_every: args.checkpoint_every, resume: args.resume, public_batch };
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed}<{eta}] {msg}").expect("valid template"),
    );
    if dpaudit::train::models::uses_scattering(&resolved.config.model) {
        bar.set_message(format!(
            "computing the scattering coefficients of {} images before the first step",
            train_set.len() + test_set.len()
        ));
    }
    let mut on_step = |r: &dpaudit::train::dpsgd::StepReport, _total: u64, eps: Option<f64>| {
        bar.set_position(r.step);
        let eps = eps.map_or("no privacy".to_string(), |e| format!("epsilon {e:.3} (RDP, delta {:e})", args.delta));
        bar.set_message(format!("loss {:.4}, lot {}, {eps}", r.loss, r.lot_size));
    };
    let metrics = train_recipe(&resolved, options, &train_set, &test_set, &args.out, device, &mut on_step)
        .with_context(|| format!("training into {}", args.out.display()))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} examples): test accuracy {:.4} after {} steps, {:.1} s",
        metrics.config.model,
        metrics.train_dataset,
        metrics.train_examples,
        metrics.test_accuracy,
        metrics.steps,
        metrics.wall_seconds
    );
    if let Some(v) = metrics.validation_accuracy {
        println!("  validation accuracy {v:.4} ({} held-out training examples)", metrics.validation_examples);
    }
    if let Some(p) = &metrics.pca {
        let whitened = if p.whitened { ", whitened" } else { "" };
        println!(
            "  DP-PCA: {} dimensions, sigma_p = {} ({}{whitened}; the ledger's phase q = 1, 1 step)",
            p.dims, p.noise_multiplier, p.source
        );
    }
    if let Some(f) = &metrics.features {
        println!("  features: {f}");
    }
    if let Some(d) = metrics.parameter_averaging {
        println!("  evaluated and saved: the exponential moving average of the parameters (decay {d}; post-processing, no privacy cost)");
    }
    if let (Some(r), Some(cfg)) = (metrics.robust_test_accuracy, metrics.adversarial) {
        println!(
            "  robust test accuracy {r:.4} (PGD, L-infinity radius {}, {} steps of {})",
            cfg.epsilon, cfg.steps, cfg.step_size
        );
    }
    for e in &metrics.epsilons {
        println!(
            "  {} accountant: epsilon = {:.4} at delta = {:e} (Poisson sampling, q = {:.6}, sigma = {}, C = {})",
            e.accountant,
            e.epsilon,
            e.delta,
            metrics.sampling_rate,
            metrics.config.noise_multiplier,
            metrics.config.max_grad_norm
        );
    }
    if !metrics.private {
        println!("  no privacy: baseline run, epsilon is infinite");
    }
    println!(
        "  wrote {}/model.safetensors, metrics.json{}",
        args.out.display(),
        if metrics.private { ", ledger.jsonl" } else { "" }
    );
    Ok(())
}
