//! The training recipe: one type for "the options of `dpaudit train`", read and written as
//! `recipe.toml` in every training run folder, and one resolver ([`Recipe::resolve`]) that checks
//! every value and calibrates the noise multiplier once, before any privacy is spent.
//!
//! ```toml
//! dataset = "fixture"          # fixture | mnist | fashion-mnist | a path to an MNIST-format folder
//! model = "logreg"
//! lot_size = 200.0             # q = lot_size / (training examples)
//! epochs = 1.0                 # or steps = 10
//! max_grad_norm = 1.0
//! optimizer = "sgd"            # sgd | momentum | adam
//! lr = 0.1
//! delta = 1e-5                 # the delta of every epsilon the run reports (and of a target)
//! [privacy]
//! kind = "gaussian"            # off | gaussian | target-epsilon
//! noise_multiplier = 1.5       # gaussian: sigma
//! # kind = "target-epsilon"; epsilon = 3.0; accountant = "rdp"   (sigma calibrated up front)
//! ```
//!
//! A privacy setting is an enum, so a recipe never holds a placeholder or NaN sigma: the resolved
//! recipe ([`ResolvedRecipe`]) has the concrete sigma and where it came from
//! ([`NoiseProvenance`]), as data.
use crate::accounting::calibration::{noise_multiplier_for_epsilon_after, EpsilonAccountant};
pub use crate::accounting::calibration::{CalibrationAccountant, NoiseProvenance};
use crate::accounting::pld::PldAccountant;
use crate::accounting::rdp::RdpAccountant;
use crate::accounting::Phase;
use crate::audit::spec::CommandTarget;
use crate::error::{Error, Result};
use crate::gan::dpgan::{Design, GanConfig};
use crate::gan::networks::Conditioning;
use crate::train::adversarial::PgdConfig;
use crate::train::dpsgd::TrainConfig;
use crate::train::fault::Fault;
use crate::train::models;
use crate::train::optim::{LrSchedule, OptimizerKind};
use crate::train::run::MAX_TRAINING_STEPS;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A training recipe: everything that decides what a training run computes, except its seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// `fixture`, `mnist`, `fashion-mnist`, or a path to an MNIST-format folder.
    pub dataset: String,
    /// Use only the first N training examples (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_examples: Option<usize>,
    /// Hold out the last N training examples as a validation set (privacy is accounted over the
    /// others).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub validation: usize,
    /// Model name (see [`models::specs`]), with its `-hN` or DP-PCA dimension already in it.
    pub model: String,
    /// Expected lot size L (Poisson sampling, q = L / N).
    pub lot_size: f64,
    /// Epochs: steps = ceil(epochs / q). Give `epochs` or `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// Steps. Give `epochs` or `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Clipping norm C.
    pub max_grad_norm: f64,
    /// The update rule.
    #[serde(default)]
    pub optimizer: OptimizerName,
    /// Momentum coefficient (the momentum optimiser).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate schedule over the run's steps.
    #[serde(default)]
    pub schedule: ScheduleName,
    /// Largest number of examples per forward pass (memory only; does not change the result).
    #[serde(default = "default_physical_batch")]
    pub physical_batch: usize,
    /// The delta of every epsilon the run reports, and of a target epsilon.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Clipping and noise (or none).
    pub privacy: Privacy,
    /// The DP-PCA front end of the `abadi-pca` models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pca: Option<PcaRecipe>,
    /// Evaluate and save an exponential moving average of the parameters with this decay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
    /// A deliberate bug (see [`Fault`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_fault: Option<Fault>,
    /// Adversarial (PGD) training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversarial: Option<PgdConfig>,
    /// Public data for public-data BatchNorm (models ending in `-pn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_norm: Option<PublicNorm>,
    /// Who trains: dpaudit's own trainer (the default) or an external command.
    #[serde(default, skip_serializing_if = "Trainer::is_built_in")]
    pub trainer: Trainer,
    /// The DP-GAN's own options (`[gan]`): present, the recipe is one of `dpaudit gan train`
    /// (`model = "dp-gan"`, `lr` the discriminator's learning rate); absent in every other recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gan: Option<GanRecipe>,
}

/// The `model` of a GAN recipe (one with a `[gan]` table).
pub const GAN_MODEL: &str = "dp-gan";

/// The options of a DP-GAN run besides those every recipe has (`lot_size`, `epochs`,
/// `max_grad_norm`, `physical_batch`, `delta`, `privacy`, `dataset`; `lr` is the discriminator's
/// learning rate). Both networks use Adam with betas 0.5 / 0.999 (`optimizer = "adam"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GanRecipe {
    /// The privacy design.
    pub design: Design,
    /// Discriminator steps per generator step.
    pub n_critic: u32,
    /// Generator learning rate.
    pub g_lr: f64,
    /// Latent dimension.
    pub z_dim: i64,
    /// Generator width.
    pub g_width: i64,
    /// Discriminator width.
    pub d_width: i64,
    /// Decay of the released generator's moving average (none: the last iterate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub g_ema: Option<f64>,
    /// How the discriminator learns the labels.
    #[serde(default)]
    pub conditioning: Conditioning,
}

fn conditioning_word(c: Conditioning) -> &'static str {
    match c {
        Conditioning::LabelPlanes => "label-planes",
        Conditioning::Classifier => "classifier",
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
fn default_momentum() -> f64 {
    0.9
}
fn default_physical_batch() -> usize {
    256
}
fn default_delta() -> f64 {
    1e-5
}

/// The update rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerName {
    /// Plain SGD.
    #[default]
    Sgd,
    /// Heavy-ball momentum (coefficient `momentum`).
    Momentum,
    /// Adam (0.9, 0.999, 1e-8).
    Adam,
}

impl OptimizerName {
    /// The word of the TOML and of `--optimizer`.
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerName::Sgd => "sgd",
            OptimizerName::Momentum => "momentum",
            OptimizerName::Adam => "adam",
        }
    }

    /// Parses `sgd`, `momentum` or `adam`; `field` names the key in the error.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for any other word.
    pub fn parse(word: &str, field: &'static str) -> Result<Self> {
        match word {
            "sgd" => Ok(OptimizerName::Sgd),
            "momentum" => Ok(OptimizerName::Momentum),
            "adam" => Ok(OptimizerName::Adam),
            other => Err(Error::invalid(field, other, "must be sgd, momentum or adam")),
        }
    }
}

/// The learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleName {
    /// The same rate throughout.
    #[default]
    Constant,
    /// Cosine decay to 0 over the run's steps.
    Cosine,
    /// Linear decay to 0 over the run's steps.
    Linear,
}

impl ScheduleName {
    /// The word of the TOML and of `--schedule`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleName::Constant => "constant",
            ScheduleName::Cosine => "cosine",
            ScheduleName::Linear => "linear",
        }
    }
}

/// Clipping and noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Privacy {
    /// The non-private baseline: no clipping, no noise, no ledger.
    Off,
    /// Gaussian noise with this noise multiplier sigma.
    Gaussian {
        /// sigma: the noise's standard deviation over the clipping norm.
        noise_multiplier: f64,
    },
    /// sigma calibrated up front so that the accountant's epsilon after every step (and any
    /// earlier phase, such as DP-PCA's) is at most `epsilon`, at the recipe's `delta`.
    TargetEpsilon {
        /// The target epsilon.
        epsilon: f64,
        /// The accountant the calibration asks.
        #[serde(default)]
        accountant: CalibrationAccountant,
    },
}

/// The DP-PCA front end of the `abadi-pca` models (its dimension is in the model name).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcaRecipe {
    /// sigma_p of the one Gaussian release of A^T A (ledger phase q = 1, 1 step).
    pub noise_multiplier: f64,
    /// Whiten the projection with the released eigenvalues (post-processing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whiten: bool,
}

/// The public images behind public-data BatchNorm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicNorm {
    /// An MNIST-format folder of public images.
    pub data: PathBuf,
    /// How many of its first training images give the statistics.
    pub size: usize,
}

/// Who trains the recipe.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Trainer {
    /// dpaudit's own DP-SGD trainer (`trainer = "built-in"`, the default).
    #[default]
    BuiltIn,
    /// An external trainer run as a command (`[trainer] kind = "command"`; the protocol of
    /// `docs/external-trainers.md`).
    Command(CommandTarget),
}

impl Trainer {
    /// Whether this is dpaudit's own trainer.
    pub fn is_built_in(&self) -> bool {
        matches!(self, Trainer::BuiltIn)
    }
}

const BUILT_IN: &str = "built-in";

impl Serialize for Trainer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Trainer::BuiltIn => s.serialize_str(BUILT_IN),
            Trainer::Command(c) => c.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Trainer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) if s == BUILT_IN => Ok(Trainer::BuiltIn),
            v @ serde_json::Value::Object(_) => {
                serde_json::from_value(v).map(Trainer::Command).map_err(D::Error::custom)
            }
            other => Err(D::Error::custom(format!(
                "trainer must be \"{BUILT_IN}\" or a table with kind = \"command\", not {other}"
            ))),
        }
    }
}

/// What an audit of a recipe says something about, and a run must share with it for the audit to
/// count for the run: the model, sigma and the clipping norm.
#[derive(Debug, Clone, PartialEq)]
pub struct Mechanism {
    /// Model name.
    pub model: String,
    /// sigma.
    pub noise_multiplier: f64,
    /// C.
    pub max_grad_norm: f64,
}

impl From<&TrainConfig> for Mechanism {
    fn from(c: &TrainConfig) -> Self {
        Mechanism { model: c.model.clone(), noise_multiplier: c.noise_multiplier, max_grad_norm: c.max_grad_norm }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} with sigma = {}, C = {}", self.model, self.noise_multiplier, self.max_grad_norm)
    }
}

/// A concrete noise multiplier and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedNoise {
    /// sigma.
    pub noise_multiplier: f64,
    /// Given or calibrated.
    pub provenance: NoiseProvenance,
}

/// The noise multiplier a privacy setting asks for, for `steps` steps at sampling rate `q` after
/// the `earlier` phases: the given one, or one calibrated to the target (the only place dpaudit
/// calibrates a training run's sigma). `None` without privacy.
///
/// # Proof definition
/// For [`Privacy::TargetEpsilon`], returns sigma such that the named accountant computed
/// `epsilon(earlier + (q, sigma, steps)) <= epsilon` at `delta`
/// ([`noise_multiplier_for_epsilon_after`], `proofs/accounting/calibration.md`); or an error.
///
/// # Errors
/// [`Error::InvalidParameter`] for a sigma that is not finite and > 0; calibration errors.
pub fn resolve_noise(
    privacy: &Privacy,
    earlier: &[Phase],
    q: f64,
    steps: u64,
    delta: f64,
) -> Result<Option<ResolvedNoise>> {
    match *privacy {
        Privacy::Off => Ok(None),
        Privacy::Gaussian { noise_multiplier } => {
            if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
                return Err(Error::invalid("noise multiplier", noise_multiplier, "must be a finite number > 0"));
            }
            Ok(Some(ResolvedNoise { noise_multiplier, provenance: NoiseProvenance::Given }))
        }
        Privacy::TargetEpsilon { epsilon, accountant } => {
            let acc: &dyn EpsilonAccountant = match accountant {
                CalibrationAccountant::Rdp => &RdpAccountant::default(),
                CalibrationAccountant::Pld => &PldAccountant::default(),
            };
            let cal = noise_multiplier_for_epsilon_after(earlier, epsilon, q, steps, delta, acc)?;
            Ok(Some(ResolvedNoise {
                noise_multiplier: cal.noise_multiplier,
                provenance: NoiseProvenance::Calibrated {
                    target_epsilon: epsilon,
                    accountant,
                    delta,
                    epsilon: cal.epsilon,
                    sampling: "poisson".into(),
                    sampling_rate: q,
                    steps,
                    earlier_phases: earlier.to_vec(),
                },
            }))
        }
    }
}

/// A recipe with every derived number made concrete: the examples it trains on, q, the steps,
/// sigma with its provenance and the trainer's configuration. Two runs follow the same recipe
/// when their resolved recipes are equal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedRecipe {
    /// The recipe as given.
    pub recipe: Recipe,
    /// Training examples the sampling rate is over (after `train_examples` and `validation`).
    pub train_examples: usize,
    /// q = lot_size / train_examples.
    pub sampling_rate: f64,
    /// Steps of DP-SGD.
    pub steps: u64,
    /// sigma and its provenance (`None` without privacy).
    pub noise: Option<ResolvedNoise>,
    /// The trainer's configuration (its `noise_multiplier` is the resolved one; 0 without privacy,
    /// where it is never read).
    pub config: TrainConfig,
}

impl ResolvedRecipe {
    /// The phases before training (DP-PCA's), which the ledger records first.
    pub fn earlier_phases(&self) -> Result<Vec<Phase>> {
        match &self.recipe.pca {
            Some(p) => Ok(vec![Phase::new(1.0, p.noise_multiplier, 1)?]),
            None => Ok(Vec::new()),
        }
    }

    /// `metrics.json`'s `noise_multiplier_source`.
    pub fn noise_multiplier_source(&self) -> String {
        match &self.noise {
            Some(n) => n.provenance.describe(n.noise_multiplier),
            None => "no privacy".into(),
        }
    }
}

/// One field in which two recipes differ: its name and each recipe's value, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeDifference {
    /// The field, in words (`noise multiplier`, `lot size`, ...).
    pub field: &'static str,
    /// Its value in the recorded recipe (a run folder's `recipe.toml`).
    pub recorded: String,
    /// Its value in the recipe asked for now.
    pub asked: String,
}

fn optional<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string)
}

fn describe_privacy(p: &Privacy) -> String {
    match p {
        Privacy::Off => "off (no clipping, no noise)".into(),
        Privacy::Gaussian { noise_multiplier } => format!("Gaussian with noise multiplier {noise_multiplier}"),
        Privacy::TargetEpsilon { epsilon, accountant } => {
            format!("noise calibrated to target epsilon {epsilon} ({} accountant)", accountant.as_str())
        }
    }
}

impl Recipe {
    /// Every field that decides what a run computes (and what it spends) in which this recipe
    /// differs from `recorded`, in the order of [`Recipe`]'s fields. `physical_batch` is left
    /// out: it only splits a lot into forward passes and does not change the result.
    ///
    /// Every field is named here (the destructuring below fails to compile when a field is
    /// added), so a new field cannot be silently left out of the comparison.
    pub fn differences_from(&self, recorded: &Recipe) -> Vec<RecipeDifference> {
        let Recipe {
            dataset,
            train_examples,
            validation,
            model,
            lot_size,
            epochs,
            steps,
            max_grad_norm,
            optimizer,
            momentum,
            lr,
            schedule,
            physical_batch: _,
            delta,
            privacy,
            pca,
            ema,
            inject_fault,
            adversarial,
            public_norm,
            trainer,
            gan,
        } = self;
        let mut out = Vec::new();
        let mut differ = |field: &'static str, changed: bool, recorded: String, asked: String| {
            if changed {
                out.push(RecipeDifference { field, recorded, asked });
            }
        };
        let r = recorded;
        differ("dataset", *dataset != r.dataset, r.dataset.clone(), dataset.clone());
        differ(
            "train examples",
            *train_examples != r.train_examples,
            optional(&r.train_examples),
            optional(train_examples),
        );
        differ("validation examples", *validation != r.validation, r.validation.to_string(), validation.to_string());
        differ("model", *model != r.model, r.model.clone(), model.clone());
        differ("lot size", *lot_size != r.lot_size, r.lot_size.to_string(), lot_size.to_string());
        differ("epochs", *epochs != r.epochs, optional(&r.epochs), optional(epochs));
        differ("steps", *steps != r.steps, optional(&r.steps), optional(steps));
        differ(
            "clipping norm",
            *max_grad_norm != r.max_grad_norm,
            r.max_grad_norm.to_string(),
            max_grad_norm.to_string(),
        );
        differ("optimizer", *optimizer != r.optimizer, r.optimizer.as_str().into(), optimizer.as_str().into());
        differ("momentum", *momentum != r.momentum, r.momentum.to_string(), momentum.to_string());
        differ("learning rate", *lr != r.lr, r.lr.to_string(), lr.to_string());
        differ("learning-rate schedule", *schedule != r.schedule, r.schedule.as_str().into(), schedule.as_str().into());
        differ("delta", *delta != r.delta, format!("{:e}", r.delta), format!("{delta:e}"));
        match (privacy, &r.privacy) {
            (Privacy::Gaussian { noise_multiplier: a }, Privacy::Gaussian { noise_multiplier: b }) => {
                differ("noise multiplier", a != b, b.to_string(), a.to_string())
            }
            (a, b) => differ("privacy", a != b, describe_privacy(b), describe_privacy(a)),
        }
        let pca_words = |p: &Option<PcaRecipe>| {
            p.map_or_else(
                || "none".to_owned(),
                |p| format!("noise multiplier {}{}", p.noise_multiplier, if p.whiten { ", whitened" } else { "" }),
            )
        };
        differ("DP-PCA", *pca != r.pca, pca_words(&r.pca), pca_words(pca));
        differ("parameter-average decay", *ema != r.ema, optional(&r.ema), optional(ema));
        differ("injected fault", *inject_fault != r.inject_fault, optional(&r.inject_fault), optional(inject_fault));
        let pgd_words = |p: &Option<PgdConfig>| {
            p.map_or_else(
                || "none".to_owned(),
                |p| format!("epsilon {}, {} steps of {}", p.epsilon, p.steps, p.step_size),
            )
        };
        differ(
            "adversarial training",
            *adversarial != r.adversarial,
            pgd_words(&r.adversarial),
            pgd_words(adversarial),
        );
        let norm_words = |p: &Option<PublicNorm>| {
            p.as_ref().map_or_else(|| "none".to_owned(), |p| format!("first {} images of {}", p.size, p.data.display()))
        };
        differ(
            "public normalisation data",
            *public_norm != r.public_norm,
            norm_words(&r.public_norm),
            norm_words(public_norm),
        );
        let trainer_words = |t: &Trainer| match t {
            Trainer::BuiltIn => BUILT_IN.to_owned(),
            Trainer::Command(c) => format!("the command {:?}", c.argv),
        };
        differ("trainer", *trainer != r.trainer, trainer_words(&r.trainer), trainer_words(trainer));
        match (gan, &r.gan) {
            (Some(a), Some(b)) => {
                let GanRecipe { design, n_critic, g_lr, z_dim, g_width, d_width, g_ema, conditioning } = a;
                differ("GAN design", *design != b.design, b.design.to_string(), design.to_string());
                differ("n_critic", *n_critic != b.n_critic, b.n_critic.to_string(), n_critic.to_string());
                differ("generator learning rate", *g_lr != b.g_lr, b.g_lr.to_string(), g_lr.to_string());
                differ("latent dimension", *z_dim != b.z_dim, b.z_dim.to_string(), z_dim.to_string());
                differ("generator width", *g_width != b.g_width, b.g_width.to_string(), g_width.to_string());
                differ("discriminator width", *d_width != b.d_width, b.d_width.to_string(), d_width.to_string());
                differ("generator average decay", *g_ema != b.g_ema, optional(&b.g_ema), optional(g_ema));
                differ(
                    "conditioning",
                    *conditioning != b.conditioning,
                    conditioning_word(b.conditioning).into(),
                    conditioning_word(*conditioning).into(),
                );
            }
            (a, b) => {
                let words = |g: &Option<GanRecipe>| g.map_or_else(|| "none".to_owned(), |g| format!("{g:?}"));
                differ("GAN options", a != b, words(b), words(a));
            }
        }
        out
    }
}

fn positive(name: &'static str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(name, v, "must be a finite number > 0"))
    }
}

impl Recipe {
    /// The checks of a GAN recipe that do not need the data: the `[gan]` table with
    /// `model = "dp-gan"`, epochs (not steps), Adam with a constant rate, privacy given as a sigma
    /// or a target epsilon for the RDP accountant (a DP-GAN always has privacy), and none of the
    /// options of `dpaudit train` only. The numbers are checked by the GAN trainer, before any
    /// privacy is spent.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the value.
    fn validate_gan(&self) -> Result<()> {
        if self.gan.is_none() {
            return Err(Error::invalid("gan", "none", format!("model {GAN_MODEL} needs the [gan] table")));
        }
        if self.model != GAN_MODEL {
            return Err(Error::invalid(
                "model",
                self.model.as_str(),
                format!("a recipe with a [gan] table trains the DP-GAN: model = \"{GAN_MODEL}\""),
            ));
        }
        if self.dataset.trim().is_empty() {
            return Err(Error::invalid("dataset", "\"\"", "must name fixture, mnist, fashion-mnist or a folder"));
        }
        let only_train = [
            ("train examples", self.train_examples.is_some()),
            ("validation examples", self.validation != 0),
            ("steps", self.steps.is_some()),
            ("DP-PCA", self.pca.is_some()),
            ("parameter-average decay", self.ema.is_some()),
            ("injected fault", self.inject_fault.is_some()),
            ("adversarial training", self.adversarial.is_some()),
            ("public normalisation data", self.public_norm.is_some()),
        ];
        if let Some((field, _)) = only_train.iter().find(|(_, set)| *set) {
            return Err(Error::invalid(field, "set", "is an option of dpaudit train, not of a GAN recipe"));
        }
        if self.epochs.is_none() {
            return Err(Error::invalid("epochs", "none", "a GAN recipe gives epochs"));
        }
        if self.optimizer != OptimizerName::Adam || self.schedule != ScheduleName::Constant {
            return Err(Error::invalid(
                "optimizer",
                format!("{} with a {} schedule", self.optimizer.as_str(), self.schedule.as_str()),
                "the GAN trains with Adam (betas 0.5 / 0.999) at a constant rate: optimizer = \"adam\"",
            ));
        }
        match self.privacy {
            Privacy::Off => Err(Error::invalid("privacy", "off", "a DP-GAN always has privacy")),
            Privacy::TargetEpsilon { accountant: CalibrationAccountant::Pld, .. } => {
                Err(Error::invalid("calibration accountant", "pld", "the GAN calibrates sigma with the RDP accountant"))
            }
            _ => Ok(()),
        }
    }

    /// The GAN's configuration for this (GAN) recipe with noise multiplier `noise_multiplier`;
    /// `None` for a recipe without a `[gan]` table.
    pub fn gan_config(&self, noise_multiplier: f64) -> Option<GanConfig> {
        let g = self.gan?;
        Some(GanConfig {
            design: g.design,
            lot_size: self.lot_size,
            noise_multiplier,
            max_grad_norm: self.max_grad_norm,
            n_critic: g.n_critic,
            d_lr: self.lr,
            g_lr: g.g_lr,
            z_dim: g.z_dim,
            g_width: g.g_width,
            d_width: g.d_width,
            physical_batch: self.physical_batch,
            g_ema: g.g_ema,
            conditioning: g.conditioning,
        })
    }

    /// The trainer's configuration for this recipe with noise multiplier `noise_multiplier` (read
    /// only with privacy) over `steps` steps (the length of a decaying schedule).
    pub fn train_config(&self, noise_multiplier: f64, steps: u64) -> TrainConfig {
        TrainConfig {
            model: self.model.clone(),
            lot_size: self.lot_size,
            noise_multiplier,
            max_grad_norm: self.max_grad_norm,
            physical_batch: self.physical_batch,
            optimizer: match self.optimizer {
                OptimizerName::Sgd => OptimizerKind::Sgd,
                OptimizerName::Momentum => OptimizerKind::Momentum { momentum: self.momentum },
                OptimizerName::Adam => OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            },
            lr: self.lr,
            schedule: match self.schedule {
                ScheduleName::Constant => LrSchedule::Constant,
                ScheduleName::Cosine => LrSchedule::Cosine { total: steps, min_lr: 0.0 },
                ScheduleName::Linear => LrSchedule::Linear { total: steps, end_lr: 0.0 },
            },
            private: self.privacy != Privacy::Off,
        }
    }

    /// Reads a `recipe.toml`.
    ///
    /// # Errors
    /// I/O errors; [`Error::Data`] for TOML that does not parse or has unknown keys; the checks of
    /// [`Recipe::validate`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading the recipe {}", path.display()), e))?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks a recipe; `origin` names it in errors.
    ///
    /// # Errors
    /// As [`Recipe::load`], without the I/O.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| Error::data(origin, e.to_string()))?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// The recipe as TOML (what `recipe.toml` holds).
    ///
    /// # Errors
    /// [`Error::Data`] if it does not serialise (it always does for recipes that validate).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::data(Path::new(crate::run_folder::RECIPE_FILE), e.to_string()))
    }

    /// The data folder `dataset` names: `fixture` (`fixtures/mnist-small`), `mnist`
    /// (`data/mnist`), `fashion-mnist` (`data/fashion-mnist`), or the path itself.
    pub fn data_dir(&self) -> PathBuf {
        crate::audit::engine::dataset_dir(&self.dataset)
    }

    /// Every check that does not need the data: run before any data is read.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the value.
    pub fn validate(&self) -> Result<()> {
        if let Trainer::Command(c) = &self.trainer {
            return Err(Error::invalid(
                "trainer",
                c.argv.first().map(String::as_str).unwrap_or(""),
                "an external trainer resolves its own noise; dpaudit's trainer needs trainer = \"built-in\"",
            ));
        }
        if self.gan.is_some() || self.model == GAN_MODEL {
            return self.validate_gan();
        }
        if self.dataset.trim().is_empty() {
            return Err(Error::invalid("dataset", "\"\"", "must name fixture, mnist, fashion-mnist or a folder"));
        }
        if self.train_examples == Some(0) {
            return Err(Error::invalid("train examples", 0, "must be at least 1"));
        }
        models::specs(&self.model)?;
        positive("lot size", self.lot_size)?;
        positive("learning rate", self.lr)?;
        if !(self.momentum >= 0.0 && self.momentum < 1.0) {
            return Err(Error::invalid("momentum", self.momentum, "must be in [0, 1)"));
        }
        if self.physical_batch == 0 {
            return Err(Error::invalid("physical batch", 0, "must be at least 1"));
        }
        crate::accounting::validate_delta(self.delta)?;
        match (self.epochs, self.steps) {
            (Some(e), None) if !(e > 0.0 && e.is_finite()) => {
                return Err(Error::invalid("epochs", e, "must be a finite number > 0"))
            }
            (None, Some(0)) => return Err(Error::invalid("steps", 0, "must be at least 1")),
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err(Error::invalid("epochs / steps", "both or neither", "give exactly one of them")),
        }
        match self.privacy {
            Privacy::Off => {}
            Privacy::Gaussian { noise_multiplier } => positive("noise multiplier", noise_multiplier)?,
            Privacy::TargetEpsilon { epsilon, .. } => positive("target epsilon", epsilon)?,
        }
        if self.privacy != Privacy::Off {
            positive("clipping norm", self.max_grad_norm)?;
        }
        match (models::pca_dims(&self.model), &self.pca) {
            (Some(_), Some(p)) => positive("PCA noise multiplier", p.noise_multiplier)?,
            (Some(_), None) => {
                return Err(Error::invalid(
                    "PCA noise multiplier",
                    "none",
                    format!("model {} trains on a DP-PCA projection: give its noise multiplier", self.model),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "PCA noise multiplier",
                    self.model.as_str(),
                    "only the abadi-pca models use DP-PCA",
                ))
            }
            (None, None) => {}
        }
        if let Some(decay) = self.ema {
            if !(decay > 0.0 && decay < 1.0) {
                return Err(Error::invalid("parameter-average decay", decay, "must be in (0, 1)"));
            }
        }
        if let Some(p) = &self.adversarial {
            PgdConfig::new(p.epsilon, p.steps, p.step_size)?;
        }
        let public_norm_layers = models::specs(&self.model)?
            .iter()
            .any(|l| matches!(l, crate::train::per_example::LayerSpec::PublicBatchNorm2d { .. }));
        if public_norm_layers && self.public_norm.is_none() {
            return Err(Error::invalid(
                "public normalisation data",
                "none",
                format!("model {} normalises with public-data statistics: name a folder of public images", self.model),
            ));
        }
        if let Some(p) = &self.public_norm {
            if p.size == 0 {
                return Err(Error::invalid("public normalisation size", 0, "must be at least 1"));
            }
        }
        if !models::trains_on_pixels(&self.model) && (self.adversarial.is_some() || self.public_norm.is_some()) {
            return Err(Error::invalid("model", self.model.as_str(), "trains on DP-PCA projections or scattering coefficients; adversarial training and public-data normalisation work on images"));
        }
        Ok(())
    }

    /// Checks everything and makes every derived number concrete for a training set of
    /// `available` examples (before `train_examples` and `validation` cut it): q, the steps (at
    /// most [`MAX_TRAINING_STEPS`]), the learning-rate schedule and sigma, calibrated here (once)
    /// for a target epsilon. Nothing is trained and no privacy is spent.
    ///
    /// # Proof definition
    /// For [`Privacy::TargetEpsilon`], the resolved sigma is [`resolve_noise`]'s for the resolved
    /// q and steps after the DP-PCA phase, if any.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the value; calibration errors.
    pub fn resolve(&self, available: usize) -> Result<ResolvedRecipe> {
        self.validate()?;
        let n = match self.train_examples {
            Some(k) if k > available => {
                return Err(Error::invalid(
                    "train examples",
                    k,
                    format!("the training set has only {available} examples"),
                ))
            }
            Some(k) => k,
            None => available,
        };
        if self.validation >= n {
            return Err(Error::invalid(
                "validation examples",
                self.validation,
                format!("must leave training examples (the training set has {n})"),
            ));
        }
        let n = n - self.validation;
        let q = self.lot_size / n as f64;
        if !(q > 0.0 && q <= 1.0) {
            return Err(Error::invalid(
                "lot size",
                self.lot_size,
                format!("must be in (0, {n}] (the training set size)"),
            ));
        }
        let steps = match (self.epochs, self.steps) {
            (Some(epochs), _) => {
                let steps = (epochs / q).ceil();
                if !(steps <= MAX_TRAINING_STEPS as f64) {
                    return Err(Error::invalid(
                        "epochs",
                        epochs,
                        format!("{steps} steps at sampling rate {q}; at most {MAX_TRAINING_STEPS} are accepted (a ledger line per step)"),
                    ));
                }
                steps as u64
            }
            (None, Some(steps)) if steps > MAX_TRAINING_STEPS => {
                return Err(Error::invalid(
                    "steps",
                    steps,
                    format!("at most {MAX_TRAINING_STEPS} are accepted (a ledger line per step)"),
                ))
            }
            (None, Some(steps)) => steps,
            (None, None) => unreachable!("validate refuses a recipe without epochs or steps"),
        };
        let earlier: Vec<Phase> = match &self.pca {
            Some(p) => vec![Phase::new(1.0, p.noise_multiplier, 1)?],
            None => Vec::new(),
        };
        let noise = resolve_noise(&self.privacy, &earlier, q, steps, self.delta)?;
        let config = self.train_config(noise.as_ref().map_or(0.0, |n| n.noise_multiplier), steps);
        Ok(ResolvedRecipe { recipe: self.clone(), train_examples: n, sampling_rate: q, steps, noise, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAUSSIAN: &str = r#"
dataset = "fixture"
model = "logreg"
lot_size = 200
epochs = 1.0
max_grad_norm = 1.0
lr = 0.1
[privacy]
kind = "gaussian"
noise_multiplier = 1.5
"#;

    #[test]
    fn a_recipe_round_trips_through_toml() {
        let r = Recipe::from_toml(GAUSSIAN, Path::new("t")).unwrap();
        assert_eq!(r.privacy, Privacy::Gaussian { noise_multiplier: 1.5 });
        assert_eq!(
            (r.optimizer, r.schedule, r.trainer.clone()),
            (OptimizerName::Sgd, ScheduleName::Constant, Trainer::BuiltIn)
        );
        let text = r.to_toml().unwrap();
        assert_eq!(Recipe::from_toml(&text, Path::new("t")).unwrap(), r, "{text}");
        let mut full = r.clone();
        full.privacy = Privacy::TargetEpsilon { epsilon: 2.0, accountant: CalibrationAccountant::Pld };
        full.model = "abadi-pca-k20".into();
        full.pca = Some(PcaRecipe { noise_multiplier: 7.0, whiten: true });
        full.ema = Some(0.99);
        full.inject_fault = Some(Fault::SkipNoise(3));
        full.schedule = ScheduleName::Cosine;
        full.validation = 100;
        let text = full.to_toml().unwrap();
        assert_eq!(toml::from_str::<Recipe>(&text).unwrap(), full, "{text}");
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_refused() {
        for (from, to) in [
            ("lr = 0.1", "lr = 0.1\nnoise_multplier = 1.5"),
            ("noise_multiplier = 1.5", "noise_multiplier = 1.5\nepsilon = 2.0"),
            ("noise_multiplier = 1.5", "noise_multiplier = nan"),
            ("noise_multiplier = 1.5", "noise_multiplier = 0.0"),
            ("kind = \"gaussian\"", "kind = \"laplace\""),
            ("epochs = 1.0", "epochs = 1.0\nsteps = 3"),
            ("epochs = 1.0", ""),
            ("epochs = 1.0", "epochs = inf"),
            ("model = \"logreg\"", "model = \"resnet\""),
            ("model = \"logreg\"", "model = \"abadi-pca\""),
            ("lr = 0.1", "lr = 0.1\nema = 1.0"),
            ("lr = 0.1", "lr = 0.1\ntrainer = \"other\""),
            ("lot_size = 200", "lot_size = -1"),
        ] {
            let bad = GAUSSIAN.replace(from, to);
            assert_ne!(bad, GAUSSIAN, "{from}");
            assert!(Recipe::from_toml(&bad, Path::new("t")).is_err(), "accepted {to}");
        }
    }

    #[test]
    fn resolving_checks_the_schedule_before_any_privacy_is_spent() {
        let r = Recipe::from_toml(GAUSSIAN, Path::new("t")).unwrap();
        let ok = r.resolve(2000).unwrap();
        assert_eq!((ok.train_examples, ok.steps, ok.sampling_rate), (2000, 10, 0.1));
        assert_eq!(ok.noise, Some(ResolvedNoise { noise_multiplier: 1.5, provenance: NoiseProvenance::Given }));
        assert_eq!(ok.noise_multiplier_source(), "given: 1.5");
        assert_eq!(ok, r.resolve(2000).unwrap(), "the same recipe resolves to the same thing");
        assert_ne!(ok, r.resolve(1000).unwrap(), "another training set size is another recipe");
        let mut long = r.clone();
        long.epochs = Some(1e12);
        let err = long.resolve(2000).unwrap_err().to_string();
        assert!(err.contains(&format!("at most {MAX_TRAINING_STEPS}")), "{err}");
        let mut big_lot = r.clone();
        big_lot.lot_size = 3000.0;
        assert!(big_lot.resolve(2000).is_err());
        let mut held_out = r;
        held_out.validation = 2000;
        assert!(held_out.resolve(2000).is_err());
    }

    /// The calibrated sigma is the calibration function's, and its provenance records the target,
    /// the accountant, delta and the accountant's epsilon at the result (at most the target).
    #[test]
    fn a_target_epsilon_is_calibrated_once_with_its_provenance() {
        let mut r = Recipe::from_toml(GAUSSIAN, Path::new("t")).unwrap();
        r.privacy = Privacy::TargetEpsilon { epsilon: 2.0, accountant: CalibrationAccountant::Rdp };
        let resolved = r.resolve(2000).unwrap();
        let want =
            crate::accounting::calibration::noise_multiplier_for_epsilon(2.0, 0.1, 10, 1e-5, &RdpAccountant::default())
                .unwrap();
        let noise = resolved.noise.clone().unwrap();
        assert_eq!(noise.noise_multiplier, want.noise_multiplier);
        assert_eq!(resolved.config.noise_multiplier, want.noise_multiplier);
        match &noise.provenance {
            NoiseProvenance::Calibrated { target_epsilon, accountant, delta, epsilon, steps, .. } => {
                assert_eq!((*target_epsilon, *accountant, *delta, *steps), (2.0, CalibrationAccountant::Rdp, 1e-5, 10));
                assert_eq!(*epsilon, want.epsilon);
                assert!(*epsilon <= 2.0);
            }
            other => panic!("{other:?}"),
        }
        assert!(resolved.noise_multiplier_source().starts_with("calibrated up front (RDP accountant"));
        let json = serde_json::to_value(&noise.provenance).unwrap();
        assert_eq!(json["source"], "calibrated");
        assert_eq!(json["accountant"], "rdp");
        // Off: no sigma at all.
        r.privacy = Privacy::Off;
        let off = r.resolve(2000).unwrap();
        assert_eq!(off.noise, None);
        assert!(!off.config.private);
    }

    const GAN: &str = r#"
dataset = "fixture"
model = "dp-gan"
lot_size = 40
epochs = 0.2
max_grad_norm = 1.0
optimizer = "adam"
lr = 0.0002
[privacy]
kind = "gaussian"
noise_multiplier = 1.0
[gan]
design = "joint"
n_critic = 1
g_lr = 0.0002
z_dim = 8
g_width = 4
d_width = 4
"#;

    /// A GAN recipe round-trips, gives the GAN's configuration, and differs field by field; a
    /// recipe without a `[gan]` table serialises without one (old recipe.toml files unchanged).
    #[test]
    fn a_gan_recipe_round_trips_and_names_its_differences() {
        let r = Recipe::from_toml(GAN, Path::new("t")).unwrap();
        let g = r.gan.unwrap();
        assert_eq!(
            (g.design, g.n_critic, g.conditioning, g.g_ema),
            (Design::Joint, 1, Conditioning::LabelPlanes, None)
        );
        assert_eq!(Recipe::from_toml(&r.to_toml().unwrap(), Path::new("t")).unwrap(), r);
        let c = r.gan_config(1.5).unwrap();
        assert_eq!((c.noise_multiplier, c.d_lr, c.lot_size, c.z_dim, c.physical_batch), (1.5, 2e-4, 40.0, 8, 256));
        let mut other = r.clone();
        other.gan = Some(GanRecipe { n_critic: 2, ..g });
        let d = other.differences_from(&r);
        assert_eq!(d, vec![RecipeDifference { field: "n_critic", recorded: "1".into(), asked: "2".into() }]);
        let plain = Recipe::from_toml(GAUSSIAN, Path::new("t")).unwrap();
        assert_eq!(plain.gan, None);
        assert!(!plain.to_toml().unwrap().contains("gan"));
        assert!(plain.gan_config(1.0).is_none());
        assert_eq!(plain.differences_from(&r).iter().filter(|d| d.field == "GAN options").count(), 1);
    }

    #[test]
    fn a_gan_recipe_refuses_options_it_does_not_have() {
        for (from, to) in [
            ("model = \"dp-gan\"", "model = \"logreg\""),
            ("optimizer = \"adam\"", "optimizer = \"sgd\""),
            ("epochs = 0.2", "steps = 10"),
            ("lr = 0.0002", "lr = 0.0002\nema = 0.9"),
            ("kind = \"gaussian\"\nnoise_multiplier = 1.0", "kind = \"off\""),
            (
                "kind = \"gaussian\"\nnoise_multiplier = 1.0",
                "kind = \"target-epsilon\"\nepsilon = 2.0\naccountant = \"pld\"",
            ),
            ("z_dim = 8", "z_dim = 8\nwidth = 3"),
        ] {
            let bad = GAN.replace(from, to);
            assert_ne!(bad, GAN, "{from}");
            assert!(Recipe::from_toml(&bad, Path::new("t")).is_err(), "accepted {to}");
        }
        let no_table = &GAN[..GAN.find("[gan]").unwrap()];
        assert!(Recipe::from_toml(no_table, Path::new("t")).is_err());
    }
}
