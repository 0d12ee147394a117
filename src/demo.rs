//! The one-command pre-release audit (`dpaudit demo`): every part of dpaudit on one dataset, in
//! the order a data office would run them before a release.
//!
//! 1. train a DP-SGD model to a target epsilon (sigma calibrated up front by the RDP accountant);
//! 2. account for it with every accountant, from its ledger (RDP, PLD and the MPFR oracle);
//! 3. audit the recipe: a white-box replay audit (K trainings without and K with a Dirac
//!    gradient canary, threshold fixed from the claim) and a loss-threshold membership-inference
//!    attack on a target trained on half the data;
//! 4. train a small DP-GAN (design (b), joint clipping) on three quarters of the training split
//!    and release a synthetic set from it, with the nearest-neighbour screen of the release
//!    against the last quarter as holdout;
//! 5. sign a certificate for each release (the model, with the audit recorded; the synthetic
//!    set) and verify both, epsilon re-derived by the MPFR oracle;
//! 6. write the compliance reports of both releases (HTML, and the same content as JSON beside it).
//!
//! Everything lands in one folder, with `demo.json` listing every file and number. The library
//! function [`run_demo`] does the work; the command-line tool only draws the progress bars.
//! Nothing here is a shortcut: each step calls the same library functions as its own command,
//! and each certificate and report is the one those commands would write.
use crate::accounting::{exact, rdp, Phase};
use crate::attack::{nearest_neighbour, shadows};
use crate::audit::{engine, spec::AuditSpec};
use crate::data::{self, Dataset, Split};
use crate::error::{Error, Result};
use crate::gan::dpgan::{Design, GanConfig};
use crate::gan::release::{sample_release, SampleOptions};
use crate::gan::run::{train_gan_recipe, GanRunSpec};
use crate::recipe::{
    CalibrationAccountant, GanRecipe, OptimizerName, Privacy, Recipe, ResolvedRecipe, ScheduleName, GAN_MODEL,
};
use crate::train::run::{train_recipe, RunOptions};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use tch::Device;

/// The demo's settings. [`DemoConfig::fixture`] is what `dpaudit demo` runs on the bundled
/// data, [`DemoConfig::full`] what `dpaudit demo --full` runs on real MNIST, and
/// [`DemoConfig::tiny`] what the test suite runs.
#[derive(Debug, Clone, Serialize)]
pub struct DemoConfig {
    /// An MNIST-format folder (train and t10k splits).
    pub data_dir: PathBuf,
    /// Use only the first N training examples (None: all).
    pub train_examples: Option<usize>,
    /// The DP-SGD model (`logreg` or `mlp`: the white-box audit needs a dense first layer; each
    /// replay of `mlp` costs about 30 times one of `logreg`).
    pub model: String,
    /// Expected lot size L (Poisson sampling, q = L / N).
    pub lot_size: f64,
    /// Epochs of DP-SGD.
    pub epochs: f64,
    /// Clipping norm C.
    pub max_grad_norm: f64,
    /// Learning rate (plain SGD: the white-box audit reads gradients back from the iterates).
    pub lr: f64,
    /// The model's target epsilon (sigma calibrated up front, RDP accountant).
    pub target_epsilon: f64,
    /// Delta of every epsilon.
    pub delta: f64,
    /// Runs per side of the white-box replay audit.
    pub audit_runs_per_side: u64,
    /// DP-GAN epochs.
    pub gan_epochs: f64,
    /// DP-GAN expected lot size.
    pub gan_lot_size: f64,
    /// DP-GAN target epsilon.
    pub gan_target_epsilon: f64,
    /// Synthetic images released.
    pub release_count: usize,
    /// Seed of the experiments: the audit (which derives one seed per replay from it), the
    /// membership-inference target and the synthetic release's latents. The two releases the demo
    /// certifies (the DP-SGD model and the DP-GAN) draw their noise, lots and initialisation from
    /// the operating system's CSPRNG, never from this seed.
    pub seed: u64,
    /// Worker threads for the audit and the membership-inference models.
    pub threads: usize,
    /// Where every model trains (the CPU unless asked; recorded as `cpu` or `cuda:N`).
    #[serde(serialize_with = "serialize_device")]
    pub device: Device,
}

fn serialize_device<S: serde::Serializer>(device: &Device, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&crate::device::name(*device))
}

impl DemoConfig {
    /// The bundled fixture (2,000 MNIST training and 500 test images): a few minutes on 2 cores.
    pub fn fixture() -> Self {
        DemoConfig {
            data_dir: PathBuf::from("fixtures/mnist-small"),
            train_examples: None,
            model: "logreg".into(),
            lot_size: 100.0,
            epochs: 15.0,
            max_grad_norm: 1.0,
            lr: 0.5,
            target_epsilon: 3.0,
            delta: 1e-5,
            audit_runs_per_side: 500,
            gan_epochs: 10.0,
            gan_lot_size: 100.0,
            gan_target_epsilon: 10.0,
            release_count: 2000,
            seed: 1,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            device: Device::Cpu,
        }
    }

    /// Real MNIST (60,000 training images) in `data_dir` (`dpaudit data fetch mnist`).
    pub fn full(data_dir: PathBuf) -> Self {
        DemoConfig {
            data_dir,
            lot_size: 600.0,
            epochs: 10.0,
            audit_runs_per_side: 100,
            gan_epochs: 3.0,
            gan_lot_size: 600.0,
            release_count: 10_000,
            ..DemoConfig::fixture()
        }
    }

    /// The smallest setting that still runs every step (tests): seconds.
    pub fn tiny(data_dir: PathBuf) -> Self {
        DemoConfig {
            data_dir,
            train_examples: Some(300),
            model: "logreg".into(),
            lot_size: 60.0,
            epochs: 2.0,
            audit_runs_per_side: 8,
            gan_epochs: 1.0,
            gan_lot_size: 60.0,
            release_count: 100,
            threads: 1,
            ..DemoConfig::fixture()
        }
    }
}

/// Where the demo is, for progress display.
pub trait DemoObserver: Sync {
    /// Stage `index` (1-based) of `total` begins.
    fn stage(&self, index: usize, total: usize, title: &str);
    /// Progress within the stage.
    fn progress(&self, done: u64, total: u64, message: &str);
    /// A finished result, one line.
    fn note(&self, line: &str);
}

/// Observes nothing.
impl DemoObserver for () {
    fn stage(&self, _: usize, _: usize, _: &str) {}
    fn progress(&self, _: u64, _: u64, _: &str) {}
    fn note(&self, _: &str) {}
}

/// One accountant's epsilon of the model, from its ledger.
#[derive(Debug, Clone, Serialize)]
pub struct DemoEpsilon {
    /// `rdp`, `pld` or `mpfr-oracle`.
    pub accountant: String,
    /// Epsilon at the demo's delta.
    pub epsilon: f64,
}

/// What the demo wrote and found (`demo.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// `dpaudit` version.
    pub tool_version: &'static str,
    /// The settings.
    pub config: DemoConfig,
    /// The output folder.
    pub out: PathBuf,
    /// The DP-SGD run folder.
    pub model_run: PathBuf,
    /// Test accuracy of the model.
    pub test_accuracy: f64,
    /// The calibrated noise multiplier, and how it was chosen.
    pub noise_multiplier: String,
    /// The model's mechanism: Poisson sampling, q, sigma, steps.
    pub phases: Vec<Phase>,
    /// The model's epsilon per accountant, at `config.delta`.
    pub epsilons: Vec<DemoEpsilon>,
    /// The replay audit folder.
    pub audit: PathBuf,
    /// Its lower bound, the ideal bound for the same K, and its verdict.
    pub audit_epsilon_lower: f64,
    /// The most any audit of this size could show against the claim.
    pub audit_ideal_epsilon_lower: f64,
    /// `consistent` or `violated`.
    pub audit_verdict: String,
    /// The membership-inference folder.
    pub membership_inference: PathBuf,
    /// Loss-threshold attack: AUC and TPR at 1% FPR.
    pub mia_auc: f64,
    /// TPR at 1% FPR.
    pub mia_tpr_at_1pct: f64,
    /// The DP-GAN run folder.
    pub gan_run: PathBuf,
    /// The synthetic release folder.
    pub release: PathBuf,
    /// The DP-GAN's epsilon (RDP, then PLD).
    pub gan_epsilons: Vec<DemoEpsilon>,
    /// Flags raised by the nearest-neighbour heuristics (empty: none; exact copies, and the share
    /// closer to train by a permutation test: proofs/attack/nearest_neighbour.md).
    pub nearest_neighbour_flags: Vec<String>,
    /// The GAN-Leaks membership attack's AUC on the release (0.5: no signal).
    pub gan_leaks_auc: f64,
    /// The key pair folder.
    pub keys: PathBuf,
    /// The model's certificate.
    pub model_certificate: PathBuf,
    /// The synthetic set's certificate.
    pub release_certificate: PathBuf,
    /// The compliance report of the model (HTML; its JSON form has the extension `.json`).
    pub model_report: PathBuf,
    /// The compliance report of the synthetic set.
    pub release_report: PathBuf,
    /// Wall time, seconds.
    pub wall_seconds: f64,
}

const STAGES: usize = 6;

fn subset(d: &Dataset, n: Option<usize>) -> Result<Dataset> {
    let Some(n) = n.filter(|&n| n < d.len()) else { return Ok(d.clone()) };
    let per = d.shape().pixels().unwrap_or(0);
    Dataset::new(
        format!("{} (first {n})", d.name()),
        d.shape(),
        d.classes(),
        d.pixels()[..n * per].to_vec(),
        d.labels()[..n].to_vec(),
    )
}

/// The last `n` examples of `d`.
fn tail(d: &Dataset, n: usize, name: &str) -> Result<Dataset> {
    let per = d.shape().pixels().unwrap_or(0);
    let from = d.len().saturating_sub(n);
    Dataset::new(
        name.to_owned(),
        d.shape(),
        d.classes(),
        d.pixels()[from * per..].to_vec(),
        d.labels()[from..].to_vec(),
    )
}

/// The demo's DP-GAN recipe: design (b), joint clipping, calibrated to the demo's GAN epsilon
/// with the RDP accountant; every other option the trainer's default ([`GanConfig::default`]).
fn gan_recipe(config: &DemoConfig, data_dir: &Path) -> Recipe {
    let d = GanConfig::default();
    Recipe {
        dataset: data_dir.display().to_string(),
        train_examples: None,
        validation: 0,
        model: GAN_MODEL.into(),
        lot_size: config.gan_lot_size,
        epochs: Some(config.gan_epochs),
        steps: None,
        max_grad_norm: d.max_grad_norm,
        optimizer: OptimizerName::Adam,
        momentum: 0.9,
        lr: d.d_lr,
        schedule: ScheduleName::Constant,
        physical_batch: d.physical_batch,
        delta: config.delta,
        privacy: Privacy::TargetEpsilon { epsilon: config.gan_target_epsilon, accountant: CalibrationAccountant::Rdp },
        pca: None,
        ema: None,
        inject_fault: None,
        adversarial: None,
        public_norm: None,
        trainer: Default::default(),
        gan: Some(GanRecipe {
            design: Design::Joint,
            n_critic: d.n_critic,
            g_lr: d.g_lr,
            z_dim: d.z_dim,
            g_width: d.g_width,
            d_width: d.d_width,
            g_ema: d.g_ema,
            conditioning: d.conditioning,
        }),
    }
}

/// The recipe of the demo's model: DP-SGD to the target epsilon (sigma calibrated up front by
/// the RDP accountant), plain SGD (the white-box audit reads gradients back from the iterates).
pub fn model_recipe(config: &DemoConfig, data_dir: &Path) -> Recipe {
    Recipe {
        dataset: data_dir.display().to_string(),
        train_examples: None,
        validation: 0,
        model: config.model.clone(),
        lot_size: config.lot_size,
        epochs: Some(config.epochs),
        steps: None,
        max_grad_norm: config.max_grad_norm,
        optimizer: OptimizerName::Sgd,
        momentum: 0.9,
        lr: config.lr,
        schedule: Default::default(),
        physical_batch: 512,
        delta: config.delta,
        privacy: Privacy::TargetEpsilon { epsilon: config.target_epsilon, accountant: CalibrationAccountant::Rdp },
        pca: None,
        ema: None,
        inject_fault: None,
        adversarial: None,
        public_norm: None,
        trainer: Default::default(),
        gan: None,
    }
}

/// The demo's white-box replay audit of its model's recipe (`resolved`, which trained `steps`
/// steps with noise multiplier `sigma`): K trainings without and K with a Dirac gradient canary,
/// the threshold fixed from the PLD accountant's claim before any run.
///
/// # Errors
/// [`Error::InvalidParameter`] if the spec does not validate.
pub fn white_box_audit_spec(
    config: &DemoConfig,
    resolved: &ResolvedRecipe,
    steps: u64,
    sigma: f64,
) -> Result<AuditSpec> {
    use crate::audit::spec::{
        AccountantWord, Attack, AuditMode, AuditTarget, Canary, CanaryKind, Claim, ClaimedEpsilon, Target, ThreatModel,
        ThresholdChoice,
    };
    let r = &resolved.recipe;
    let k = config.audit_runs_per_side;
    let spec = AuditSpec {
        name: "demo-white-box".into(),
        description: format!("The demo's DP-SGD recipe replayed {k} times without and {k} times with a Dirac gradient canary\n(a weight no real example moves); the attacker sees every iterate; the threshold is fixed from\nthe claim (the PLD accountant's epsilon) before any run."),
        target: AuditTarget::BuiltIn(Target {
            dataset: r.dataset.clone(),
            train_examples: Some(resolved.train_examples),
            model: r.model.clone(),
            lot_size: r.lot_size,
            steps,
            noise_multiplier: sigma,
            max_grad_norm: r.max_grad_norm,
            optimizer: r.optimizer.as_str().into(),
            lr: r.lr,
            physical_batch: r.physical_batch,
            inject_fault: None,
            gan: None,
        }),
        claim: Claim { epsilon: ClaimedEpsilon::Accountant(AccountantWord::Accountant), accountant: "pld".into(), delta: r.delta },
        canary: Canary { kind: CanaryKind::Dirac, norm: 1.0, label: 0 },
        attack: Attack {
            threat_model: ThreatModel::WhiteBox,
            runs_per_side: k,
            confidence: 0.95,
            threshold: ThresholdChoice::FromClaim,
            held_out_fraction: 0.5,
            seed: config.seed,
            mode: AuditMode::Replay,
            canaries: 0,
            guesses: 0,
            statistic: None,
        },
    };
    spec.validate()?;
    Ok(spec)
}

/// The demo's loss-threshold membership inference: one target trained on a random half of the `n`
/// examples in `data_dir` with the demo's recipe at half the lot size, the other half as
/// non-members.
///
/// # Errors
/// [`Error::InvalidParameter`] if the spec does not validate.
pub fn loss_threshold_mia_spec(config: &DemoConfig, data_dir: &Path, n: usize) -> Result<shadows::MiaSpec> {
    let spec = shadows::MiaSpec {
        name: "demo-loss-threshold".into(),
        description: format!("Loss-threshold membership inference against the demo's recipe: one target trained on a random half of the {n} examples, the other half as non-members."),
        data: shadows::DataSpec { dataset: data_dir.display().to_string(), population: Some(n) },
        target: shadows::MiaTarget::BuiltIn(shadows::Recipe {
            model: config.model.clone(),
            lot_size: (config.lot_size / 2.0).max(1.0),
            epochs: config.epochs,
            private: true,
            noise_multiplier: None,
            target_epsilon: Some(config.target_epsilon),
            max_grad_norm: config.max_grad_norm,
            delta: config.delta,
            optimizer: "sgd".into(),
            momentum: 0.9,
            lr: config.lr,
            physical_batch: 256,
        }),
        attack: shadows::AttackSpec { shadows: 0, targets: 1, seed: config.seed, variance: Default::default() },
    };
    spec.validate()?;
    Ok(spec)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::durable::write_atomically(path, text.as_bytes())
}

/// Runs the whole pre-release audit into `out`, which must not exist or be empty.
///
/// # Errors
/// Bad settings or data, a non-empty `out`, and any error of the steps (each names its step).
pub fn run_demo(config: &DemoConfig, out: &Path, observer: &dyn DemoObserver) -> Result<DemoSummary> {
    let start = Instant::now();
    crate::device::check_available(config.device)?;
    if out.exists()
        && std::fs::read_dir(out).map_err(|e| Error::io(format!("reading {}", out.display()), e))?.next().is_some()
    {
        return Err(Error::invalid(
            "demo output folder",
            out.display(),
            "exists and is not empty; choose another (or remove it)",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let train_full = data::load_mnist_dir(&config.data_dir, Split::Train, 10)?;
    let train = subset(&train_full, config.train_examples)?;
    let test = data::load_mnist_dir(&config.data_dir, Split::Test, 10)?;
    let n = train.len();
    // The subset as an MNIST-format folder, so that the audit, the attack, the GAN and the reports
    // all read exactly the records the model was trained on (read back from there, so that the
    // run records the folder and its report can train the same recipe again).
    let (data_dir, train, test) = if config.train_examples.is_some_and(|k| k < train_full.len()) {
        let dir = out.join("data");
        data::write_mnist_dir(&dir, Split::Train, &train)?;
        data::write_mnist_dir(&dir, Split::Test, &test)?;
        let train = data::load_mnist_dir(&dir, Split::Train, 10)?;
        let test = data::load_mnist_dir(&dir, Split::Test, 10)?;
        (dir, train, test)
    } else {
        (config.data_dir.clone(), train, test)
    };

    // 1. DP-SGD to a target epsilon.
    observer.stage(
        1,
        STAGES,
        &format!(
            "DP-SGD: {} on {n} examples to epsilon {} (delta {:e})",
            config.model, config.target_epsilon, config.delta
        ),
    );
    let model_run = out.join("model");
    let recipe = model_recipe(config, &data_dir);
    // Checked, and sigma calibrated once, before any step.
    let resolved = recipe.resolve(train.len())?;
    // A release: noise from the OS CSPRNG (the audit below replays the recipe with seeds).
    let options = RunOptions { seed: None, checkpoint_every: 0, resume: false, public_batch: None };
    let mut on_step = |r: &crate::train::dpsgd::StepReport, total: u64, eps: Option<f64>| {
        observer.progress(r.step, total, &format!("loss {:.3}, epsilon {:.3} (RDP)", r.loss, eps.unwrap_or(f64::NAN)));
    };
    let metrics = train_recipe(&resolved, options, &train, &test, &model_run, config.device, &mut on_step)?;
    let phases = metrics.phases.clone();
    let noise_multiplier_source = metrics.noise_multiplier_source.clone();
    observer.note(&format!(
        "model: test accuracy {:.4} after {} steps; {}",
        metrics.test_accuracy, metrics.steps, noise_multiplier_source
    ));

    // 2. Accountants, from the ledger.
    observer.stage(2, STAGES, "accountants: RDP, PLD and the MPFR oracle, from the ledger");
    let mut epsilons: Vec<DemoEpsilon> =
        metrics.epsilons.iter().map(|e| DemoEpsilon { accountant: e.accountant.clone(), epsilon: e.epsilon }).collect();
    let verified = exact::verified_epsilon(&phases, config.delta, &rdp::default_orders())?;
    epsilons.push(DemoEpsilon { accountant: "mpfr-oracle".into(), epsilon: verified.epsilon });
    for e in &epsilons {
        observer.note(&format!(
            "  {:<12} epsilon = {:.4} at delta {:e} (Poisson sampling, q = {:.4}, sigma = {:.4}, {} steps)",
            e.accountant,
            e.epsilon,
            config.delta,
            metrics.sampling_rate,
            metrics.config.noise_multiplier,
            metrics.steps
        ));
    }

    // 3a. White-box replay audit of the same recipe.
    let sigma = metrics.config.noise_multiplier;
    observer.stage(
        3,
        STAGES,
        &format!(
            "audit: white-box replay, {} trainings per side, Dirac canary; loss-threshold membership inference",
            config.audit_runs_per_side
        ),
    );
    let audit_spec = white_box_audit_spec(config, &resolved, metrics.steps, sigma)?;
    // Named after the spec, beside the audit folder: where the report looks for it.
    let audit_spec_path = out.join("demo-white-box.toml");
    write_text(
        &audit_spec_path,
        &toml::to_string(&audit_spec).map_err(|e| Error::data(&audit_spec_path, e.to_string()))?,
    )?;
    let audit_dir = out.join("audit");
    let audit_start = engine::now();
    let ctx = engine::prepare(&audit_spec)?.on_device(config.device)?;
    let stop = AtomicBool::new(false);
    let audit_progress = |done: u64, total: u64| observer.progress(done, total, "replays");
    let runs = engine::run_audit(&ctx, &audit_dir, engine::Shard::ALL, config.threads.max(1), &audit_progress, &stop)?;
    let mut audit = engine::analyse(&audit_spec, &runs, audit_start.elapsed().as_secs_f64())?;
    // Two records chosen at random are trained again and must reproduce (a certificate cites
    // only an audit whose records were checked so).
    audit.record_check.replayed = engine::replay_check(&ctx, &audit.runs, 2, &audit_dir.join(engine::RUNS_FILE))?;
    audit.record_check.note = format!(
        "every record's fields checked; {} chosen at random replayed and reproduced exactly",
        audit.record_check.replayed.len()
    );
    engine::write_report(&audit_dir, &audit)?;
    observer.note(&format!(
        "audit: {} (epsilon >= {:.4} at 95% confidence against the claim {:.4}; with K = {} this procedure can report at most {:.4})",
        audit.verdict.to_uppercase(),
        audit.epsilon_lower,
        audit.claim.epsilon,
        audit.runs_per_side,
        audit.plan.ceiling
    ));

    // 3b. Loss-threshold membership inference on a target trained on a random half.
    let mia_spec = loss_threshold_mia_spec(config, &data_dir, n)?;
    let mia_spec_path = out.join("mia-loss-threshold.toml");
    write_text(&mia_spec_path, &toml::to_string(&mia_spec).map_err(|e| Error::data(&mia_spec_path, e.to_string()))?)?;
    let mia_dir = out.join("membership-inference");
    let mia_start = Instant::now();
    let mia_ctx = shadows::prepare(&mia_spec)?.on_device(config.device)?;
    let mia_progress = |done: u64, total: u64| observer.progress(done, total, "target model");
    let records = shadows::run_models(&mia_ctx, &mia_dir, engine::Shard::ALL, 1, &mia_progress, &stop)?;
    let mia = shadows::analyse(&mia_ctx, &records, mia_start.elapsed().as_secs_f64())?;
    shadows::write_report(&mia_dir, &mia)?;
    let loss = mia.attacks.first().ok_or_else(|| Error::numerical("membership inference", "no attack result"))?;
    let mia_tpr = loss.metrics.tpr_at_fpr.get("0.01").map_or(f64::NAN, |t| t.tpr);
    observer.note(&format!(
        "membership inference ({}): AUC {:.4}, TPR at 1% FPR {:.4} (evidence about the recipe, not a bound)",
        loss.attack, loss.metrics.auc, mia_tpr
    ));

    // 4. DP-GAN and a synthetic release.
    observer.stage(
        4,
        STAGES,
        &format!(
            "DP-GAN (design b, joint clipping) to epsilon {}, then {} synthetic images",
            config.gan_target_epsilon, config.release_count
        ),
    );
    let gan_run = out.join("gan");
    // The GAN trains on the first three quarters of the training split; the last quarter is the
    // holdout of the nearest-neighbour screen, drawn like the training records (the test split was
    // written by other people and would shift the screen without any memorisation).
    let holdout_n = n / 4;
    let gan_train = subset(&train, Some(n - holdout_n))?;
    let holdout = tail(&train, holdout_n, &format!("{} (last {holdout_n}, holdout)", train.name()))?;
    let gan_data = out.join("gan-data");
    data::write_mnist_dir(&gan_data, Split::Train, &gan_train)?;
    data::write_mnist_dir(&gan_data, Split::Test, &holdout)?;
    // The GAN's recipe (design b, the trainer's defaults otherwise); the run folder keeps it as
    // recipe.toml. A release: noise from the OS CSPRNG.
    let gan_recipe = gan_recipe(config, &gan_data);
    let gan_spec = GanRunSpec::from_recipe(&gan_recipe, None, false, false, 0)?;
    let mut gan_progress = |done: u64, total: u64, eps: f64| {
        observer.progress(done, total, &format!("discriminator steps, epsilon {eps:.3} (RDP)"))
    };
    let gan = train_gan_recipe(&gan_spec, Some(&gan_recipe), &gan_train, &gan_run, config.device, &mut gan_progress)?;
    let release = out.join("synthetic");
    let rel = sample_release(
        &gan_run,
        &release,
        &SampleOptions::new(config.release_count, Some(config.seed)),
        false,
        config.device,
    )?;
    let gan_epsilons: Vec<DemoEpsilon> =
        rel.epsilons.iter().map(|e| DemoEpsilon { accountant: e.accountant.clone(), epsilon: e.epsilon }).collect();
    observer.note(&format!(
        "DP-GAN: {} discriminator steps, epsilon {}; released {} images",
        gan.discriminator_steps,
        gan_epsilons.iter().map(|e| format!("{} {:.4}", e.accountant, e.epsilon)).collect::<Vec<_>>().join(", "),
        rel.count
    ));
    let s = nearest_neighbour::load_images(&release, false)?.truncate(10_000);
    let t = nearest_neighbour::load_images(&gan_data, false)?.truncate(10_000);
    let h = nearest_neighbour::load_images(&gan_data, true)?.truncate(10_000);
    let nn = nearest_neighbour::analyse(&s, &t, &h)?;
    let nn_path = out.join("nearest-neighbour.json");
    crate::durable::write_atomically(
        &nn_path,
        &serde_json::to_vec_pretty(&nn).map_err(|e| Error::data(&nn_path, e.to_string()))?,
    )?;
    observer.note(&format!(
        "nearest neighbours: {} exact copies of training images, {:.1}% closer to train than to holdout, GAN-Leaks membership AUC {:.4}{}",
        nn.distances.exact_copies_of_train,
        100.0 * nn.distances.share_closer_to_train,
        nn.attack.metrics.auc,
        if nn.distances.flags.is_empty() { String::new() } else { format!("; flags: {}", nn.distances.flags.join("; ")) }
    ));

    // 5. Certificates.
    observer.stage(5, STAGES, "certificates: Ed25519 key pair, one certificate per release, verified");
    let keys = out.join("keys");
    let k = crate::cert::keys::generate_keypair(&keys)?;
    let mut model_opts = crate::cert::sign::CertifyOptions::model(config.delta);
    model_opts.audits.push(audit.cert_record_for(&metrics.config)?);
    let model_cert = out.join("model-certificate.json");
    crate::cert::sign::sign_run(&model_run, &model_opts, &k.secret_key_path, &model_cert)?;
    let mut release_opts = crate::cert::sign::CertifyOptions::model(config.delta);
    release_opts.kind = crate::cert::schema::ArtifactKind::SyntheticDataset;
    let release_cert = out.join("synthetic-certificate.json");
    crate::cert::sign::sign_release(&release, &gan_run, &release_opts, &k.secret_key_path, &release_cert)?;
    for (cert, artifacts) in [(&model_cert, &model_run), (&release_cert, &release)] {
        crate::cert::verify::verify(cert, &k.public_key_path, Some(artifacts), true)
            .map_err(|f| Error::invalid("certificate", cert.display(), format!("does not verify: {f}")))?;
    }
    observer.note(&format!(
        "certificates signed by key {} and verified (signature, file hashes, epsilon re-derived by the MPFR oracle)",
        k.key_id
    ));

    // 6. Reports.
    observer.stage(6, STAGES, "compliance reports (HTML)");
    // Each report's "write this report again" is the `dpaudit report` command that writes it.
    let model_report = out.join("model-report.html");
    let mut options = crate::report::ReportOptions {
        runs: vec![model_run.clone()],
        audits: vec![audit_dir.clone()],
        certificate: Some(model_cert.clone()),
        public_key: Some(k.public_key_path.clone()),
        delta: Some(config.delta),
        epsilon_points: crate::report::DEFAULT_EPSILON_POINTS,
        command_line: None,
        release: None,
        nearest_neighbour: None,
        evaluation: None,
    };
    options.command_line = Some(options.command_line(&model_report));
    let rep = crate::report::build(&options)?;
    crate::report::write_report(&model_report, &crate::report::render(&rep, crate::report::Format::Html)?, false)?;
    let json = crate::report::render(&rep, crate::report::Format::Json)?;
    crate::report::write_report(&model_report.with_extension("json"), &json, false)?;
    let release_report = out.join("synthetic-report.html");
    let mut options = crate::report::ReportOptions {
        runs: vec![gan_run.clone()],
        audits: Vec::new(),
        certificate: Some(release_cert.clone()),
        public_key: Some(k.public_key_path.clone()),
        delta: Some(config.delta),
        epsilon_points: crate::report::DEFAULT_EPSILON_POINTS,
        command_line: None,
        release: Some(release.clone()),
        nearest_neighbour: Some(nn_path.clone()),
        evaluation: None,
    };
    options.command_line = Some(options.command_line(&release_report));
    let rep = crate::report::build(&options)?;
    crate::report::write_report(&release_report, &crate::report::render(&rep, crate::report::Format::Html)?, false)?;
    let json = crate::report::render(&rep, crate::report::Format::Json)?;
    crate::report::write_report(&release_report.with_extension("json"), &json, false)?;

    let summary = DemoSummary {
        tool_version: env!("CARGO_PKG_VERSION"),
        config: config.clone(),
        out: out.to_path_buf(),
        model_run,
        test_accuracy: metrics.test_accuracy,
        noise_multiplier: noise_multiplier_source,
        phases,
        epsilons,
        audit: audit_dir,
        audit_epsilon_lower: audit.epsilon_lower,
        audit_ideal_epsilon_lower: audit.ideal_epsilon_lower,
        audit_verdict: audit.verdict.clone(),
        membership_inference: mia_dir,
        mia_auc: loss.metrics.auc,
        mia_tpr_at_1pct: mia_tpr,
        gan_run,
        release,
        gan_epsilons,
        nearest_neighbour_flags: nn.distances.flags.clone(),
        gan_leaks_auc: nn.attack.metrics.auc,
        keys,
        model_certificate: model_cert,
        release_certificate: release_cert,
        model_report,
        release_report,
        wall_seconds: start.elapsed().as_secs_f64(),
    };
    let path = out.join("demo.json");
    crate::durable::write_atomically(
        &path,
        &serde_json::to_vec_pretty(&summary).map_err(|e| Error::data(&path, e.to_string()))?,
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specs the demo builds in Rust are the ones it wrote as text and parsed back before
    /// (that text is kept here), and the TOML it now writes parses back to them.
    #[test]
    fn the_demo_specs_built_in_rust_match_the_text_it_used_to_write() {
        let config = DemoConfig::tiny("fixtures/mnist-small".into());
        let dir = Path::new("fixtures/mnist-small");
        let resolved = model_recipe(&config, dir).resolve(2000).unwrap();
        let (n, steps, sigma) = (2000usize, resolved.steps, 1.2345678901234567);
        let old = format!(
            "name = \"demo-white-box\"\ndescription = \"\"\"\nThe demo's DP-SGD recipe replayed {k} times without and {k} times with a Dirac gradient canary\n(a weight no real example moves); the attacker sees every iterate; the threshold is fixed from\nthe claim (the PLD accountant's epsilon) before any run.\"\"\"\n\n[target]\ndataset = {ds:?}\ntrain_examples = {n}\nmodel = {model:?}\nlot_size = {lot}\nsteps = {steps}\nnoise_multiplier = {sigma}\nmax_grad_norm = {c}\noptimizer = \"sgd\"\nlr = {lr}\nphysical_batch = 512\n\n[claim]\nepsilon = \"accountant\"\naccountant = \"pld\"\ndelta = {delta:e}\n\n[canary]\nkind = \"dirac\"\nnorm = 1.0\n\n[attack]\nthreat_model = \"white-box\"\nruns_per_side = {k}\nconfidence = 0.95\nthreshold = \"from-claim\"\nseed = {seed}\n",
            k = config.audit_runs_per_side,
            ds = dir.display().to_string(),
            model = config.model,
            lot = config.lot_size,
            c = config.max_grad_norm,
            lr = config.lr,
            delta = config.delta,
            seed = config.seed,
        );
        let built = white_box_audit_spec(&config, &resolved, steps, sigma).unwrap();
        assert_eq!(built, AuditSpec::from_toml(&old, Path::new("old")).unwrap());
        assert_eq!(AuditSpec::from_toml(&toml::to_string(&built).unwrap(), Path::new("new")).unwrap(), built);

        let old_mia = format!(
            "name = \"demo-loss-threshold\"\ndescription = \"Loss-threshold membership inference against the demo's recipe: one target trained on a random half of the {n} examples, the other half as non-members.\"\n\n[data]\ndataset = {ds:?}\npopulation = {n}\n\n[target]\nmodel = {model:?}\nlot_size = {lot}\nepochs = {epochs}\ntarget_epsilon = {eps}\nmax_grad_norm = {c}\ndelta = {delta:e}\noptimizer = \"sgd\"\nlr = {lr}\n\n[attack]\nshadows = 0\ntargets = 1\nseed = {seed}\n",
            ds = dir.display().to_string(),
            model = config.model,
            lot = (config.lot_size / 2.0).max(1.0),
            epochs = config.epochs,
            eps = config.target_epsilon,
            c = config.max_grad_norm,
            delta = config.delta,
            lr = config.lr,
            seed = config.seed,
        );
        let built = loss_threshold_mia_spec(&config, dir, n).unwrap();
        assert_eq!(built, toml::from_str::<shadows::MiaSpec>(&old_mia).unwrap());
        assert_eq!(toml::from_str::<shadows::MiaSpec>(&toml::to_string(&built).unwrap()).unwrap(), built);
    }
}
