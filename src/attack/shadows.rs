//! The membership-inference experiment behind `dpaudit attack mia`: `1 + shadows` models trained
//! by the real trainer ([`DpSgd::ephemeral`]) on random halves of a population, one line each
//! in an fsynced `runs.jsonl` (an interrupted experiment resumes without losing or redoing a
//! model), shardable (`--shard i/N`, then [`merge`]) like the audit engine's replays; then
//! [`analyse`] scores the target model(s) with the loss attack and LiRA into `mia.json`.
//!
//! **Design (Carlini et al. 2022, §VI).** A population of N examples; model m trains on the
//! examples with `keep[m][i]`. For every example, a seeded random permutation of the M models
//! puts it in the first `M / 2` of them (odd M: `floor(M / 2)` or one more, by a fair coin), so
//! every example is in half the models, in expectation exactly. Model 0 (and the next
//! `targets - 1`) is the target: its members are the examples it trained on, its non-members the
//! rest of the population (same distribution, never seen by it). The other M - 1 models are its
//! shadows. With several targets each is attacked with all the other models as shadows and the
//! scores are pooled, which multiplies the examples scored (finer FPR resolution); the pooled
//! scores are not independent across targets.
//!
//! The `[target]` may instead be an external trainer (`kind = "command"`, the protocol of
//! `docs/external-trainers.md`): then each model is one run of that command
//! ([`crate::attack::mia_command`]).
//!
//! ```toml
//! name = "mnist-mlp-eps8"
//! [data]
//! dataset = "mnist"        # fixture | mnist | fashion-mnist | a path to an MNIST-format folder
//! population = 4000        # the first N training examples (default: all)
//! [target]                 # the recipe, with the options of `dpaudit train`
//! model = "mlp"
//! lot_size = 128           # q = lot_size / (examples a model trains on)
//! epochs = 20
//! private = true           # false: the non-private baseline (no clipping, no noise)
//! target_epsilon = 8.0     # or noise_multiplier = 1.1 (sigma calibrated per model, RDP)
//! max_grad_norm = 1.0
//! delta = 1e-5
//! optimizer = "momentum"   # sgd | momentum | adam
//! lr = 0.1
//! [attack]
//! shadows = 16             # 0: the loss attack only; LiRA needs at least 4
//! targets = 1
//! seed = 1
//! variance = "auto"        # auto | per-example | global
//! ```
use crate::accounting::pld::PldAccountant;
use crate::accounting::rdp;
use crate::accounting::Phase;
use crate::attack::metrics::{attack_metrics, thin_roc, AttackMetrics, LOW_FPRS};
use crate::attack::mia::{confidences, lira_scores, loss_score, VarianceMode};
use crate::audit::spec::CommandTarget;
use crate::data::{load_mnist_dir, sha256_hex, Dataset, Split};
use crate::durable::write_atomically;
use crate::error::{Error, Result};
use crate::experiment::{self, Experiment, Vocabulary};
pub use crate::experiment::{Progress, Shard};
use crate::train::dpsgd::{DpSgd, Examples};
use crate::train::streams::SeedSalt;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use tch::Device;

/// The file of finished models in an experiment folder.
pub const RUNS_FILE: &str = crate::run_folder::RUNS_FILE;
/// The copy of the spec (with its digest), checked on resume and merge.
pub const SPEC_FILE: &str = crate::run_folder::SPEC_FILE;
/// The result.
pub const REPORT_FILE: &str = crate::run_folder::MIA_REPORT_FILE;
/// Examples per forward pass when scoring the population.
const SCORE_BATCH: usize = 1024;
/// LiRA needs an IN and an OUT shadow for every example: at least this many shadows.
pub const MIN_LIRA_SHADOWS: u64 = 4;

/// A whole experiment specification (the `--target-config` TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiaSpec {
    /// Short name (used in reports).
    pub name: String,
    /// What the experiment is for, in words.
    #[serde(default)]
    pub description: String,
    /// The population.
    pub data: DataSpec,
    /// The training recipe of the target and of every shadow: dpaudit's own trainer, or an
    /// external trainer run as a command ([`crate::attack::mia_command`]).
    pub target: MiaTarget,
    /// The attack.
    #[serde(default)]
    pub attack: AttackSpec,
}

/// Where the population comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// `fixture`, `mnist`, `fashion-mnist`, or a path to an MNIST-format folder.
    pub dataset: String,
    /// The first N training examples (default: all).
    #[serde(default)]
    pub population: Option<usize>,
}

/// Who trains the target and the shadows: dpaudit's own trainer (a `[target]` recipe without
/// `kind`, serialised exactly as before command targets existed, so existing spec digests are
/// unchanged) or an external trainer (`kind = "command"`, the protocol of
/// `docs/external-trainers.md`; its `dataset` must be `[data] dataset`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MiaTarget {
    /// dpaudit's own DP-SGD trainer.
    BuiltIn(Recipe),
    /// A trainer dpaudit did not write, run as a command.
    Command(CommandTarget),
}

impl<'de> Deserialize<'de> for MiaTarget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        match value.get("kind").cloned() {
            None => serde_json::from_value(value).map(MiaTarget::BuiltIn).map_err(D::Error::custom),
            Some(serde_json::Value::String(k)) if k == "command" => {
                serde_json::from_value(value).map(MiaTarget::Command).map_err(D::Error::custom)
            }
            Some(other) => Err(D::Error::custom(format!(
                "unknown target kind {other}: leave `kind` out for dpaudit's own trainer, or say kind = \"command\""
            ))),
        }
    }
}

impl MiaTarget {
    /// dpaudit's own recipe, when the target is not a command.
    pub fn built_in(&self) -> Option<&Recipe> {
        match self {
            MiaTarget::BuiltIn(r) => Some(r),
            MiaTarget::Command(_) => None,
        }
    }

    /// The external trainer, when the target is a command.
    pub fn command(&self) -> Option<&CommandTarget> {
        match self {
            MiaTarget::Command(c) => Some(c),
            MiaTarget::BuiltIn(_) => None,
        }
    }
}

/// The training recipe as an experiment spec writes it (its wire format, kept so that existing
/// specs and their digests are unchanged); [`Recipe::to_recipe`] gives dpaudit's one recipe type,
/// which resolves and calibrates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Model name (`logreg`, `mlp`, `tanh-cnn`, `seed-cnn`).
    pub model: String,
    /// Expected lot size L.
    pub lot_size: f64,
    /// Epochs: steps = ceil(epochs / q).
    pub epochs: f64,
    /// `false` for the non-private baseline.
    #[serde(default = "yes")]
    pub private: bool,
    /// Noise multiplier sigma (private, unless `target_epsilon`).
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// Calibrate sigma up front, per model, so that its RDP epsilon is at most this.
    #[serde(default)]
    pub target_epsilon: Option<f64>,
    /// Clipping norm C.
    #[serde(default = "one")]
    pub max_grad_norm: f64,
    /// Delta.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// `sgd`, `momentum` or `adam`.
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    /// Momentum coefficient.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Learning rate.
    pub lr: f64,
    /// Largest physical batch (memory only).
    #[serde(default = "default_physical_batch")]
    pub physical_batch: usize,
}

/// The attack's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSpec {
    /// Shadow models (0: the loss attack only).
    #[serde(default)]
    pub shadows: u64,
    /// Target models (each attacked with all the other models as shadows).
    #[serde(default = "one_u64")]
    pub targets: u64,
    /// Seed of the memberships and of every model.
    #[serde(default)]
    pub seed: u64,
    /// LiRA's standard deviations.
    #[serde(default)]
    pub variance: VarianceMode,
}

impl Default for AttackSpec {
    fn default() -> Self {
        AttackSpec { shadows: 0, targets: 1, seed: 0, variance: VarianceMode::Auto }
    }
}

fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}
fn one_u64() -> u64 {
    1
}
fn default_delta() -> f64 {
    1e-5
}
fn default_optimizer() -> String {
    "sgd".into()
}
fn default_momentum() -> f64 {
    0.9
}
fn default_physical_batch() -> usize {
    256
}

impl Recipe {
    /// The same recipe as dpaudit's recipe type, on the experiment's `data` (each model then
    /// resolves it for the examples it trains on).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an optimizer word, or a privacy setting that gives both or
    /// neither of `noise_multiplier` and `target_epsilon`.
    pub fn to_recipe(&self, data: &DataSpec) -> Result<crate::recipe::Recipe> {
        use crate::recipe::{CalibrationAccountant, OptimizerName, Privacy};
        let privacy = match (self.private, self.noise_multiplier, self.target_epsilon) {
            (false, _, _) => Privacy::Off,
            (true, Some(noise_multiplier), None) => Privacy::Gaussian { noise_multiplier },
            (true, None, Some(epsilon)) => Privacy::TargetEpsilon { epsilon, accountant: CalibrationAccountant::Rdp },
            (true, Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "target",
                    "noise_multiplier and target_epsilon",
                    "give one of them, not both",
                ))
            }
            (true, None, None) => {
                return Err(Error::invalid(
                    "target",
                    "private",
                    "give noise_multiplier or target_epsilon (or private = false)",
                ))
            }
        };
        Ok(crate::recipe::Recipe {
            dataset: data.dataset.clone(),
            train_examples: None,
            validation: 0,
            model: self.model.clone(),
            lot_size: self.lot_size,
            epochs: Some(self.epochs),
            steps: None,
            max_grad_norm: self.max_grad_norm,
            optimizer: OptimizerName::parse(&self.optimizer, "target.optimizer")?,
            momentum: self.momentum,
            lr: self.lr,
            schedule: Default::default(),
            physical_batch: self.physical_batch,
            delta: self.delta,
            privacy,
            pca: None,
            ema: None,
            inject_fault: None,
            adversarial: None,
            public_norm: None,
            trainer: Default::default(),
            gan: None,
        })
    }
}

impl MiaSpec {
    /// The recipe of the target and of every shadow, as dpaudit's recipe type.
    ///
    /// # Errors
    /// As [`Recipe::to_recipe`].
    /// [`Error::InvalidParameter`] for a command target (an external trainer).
    pub fn recipe(&self) -> Result<crate::recipe::Recipe> {
        match &self.target {
            MiaTarget::BuiltIn(r) => r.to_recipe(&self.data),
            MiaTarget::Command(c) => Err(Error::invalid(
                "target.kind",
                "command",
                format!(
                    "this needs dpaudit's own trainer, but the spec's target is the external command {:?}",
                    c.argv.first().map(String::as_str).unwrap_or("")
                ),
            )),
        }
    }

    /// Reads and validates a spec file.
    ///
    /// # Errors
    /// I/O errors, TOML errors (unknown keys included), invalid values.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let spec: MiaSpec = toml::from_str(&text).map_err(|e| Error::data(path, e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every value's domain.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the key.
    pub fn validate(&self) -> Result<()> {
        let t = match &self.target {
            MiaTarget::BuiltIn(t) => t,
            MiaTarget::Command(c) => {
                c.validate()?;
                if c.dataset != self.data.dataset {
                    return Err(Error::invalid(
                        "target.dataset",
                        &c.dataset,
                        format!("must be the population's dataset, data.dataset = {:?}", self.data.dataset),
                    ));
                }
                if let Some(n) = c.train_examples {
                    return Err(Error::invalid(
                        "target.train_examples",
                        n,
                        "is not used by membership inference: each model trains on its half of data.population",
                    ));
                }
                return self.validate_attack();
            }
        };
        crate::train::models::specs(&t.model)?;
        if !crate::train::models::trains_on_pixels(&t.model) {
            return Err(Error::invalid("target.model", &t.model, "membership inference trains on the raw pixels and does not run the model's DP-PCA or scattering front end; use a model on the raw pixels (e.g. mlp)"));
        }
        if !(t.lot_size >= 1.0 && t.lot_size.is_finite()) {
            return Err(Error::invalid("target.lot_size", t.lot_size, "must be a finite number >= 1"));
        }
        if !(t.epochs > 0.0 && t.epochs.is_finite()) {
            return Err(Error::invalid("target.epochs", t.epochs, "must be a finite number > 0"));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(Error::invalid("target.lr", t.lr, "must be a finite number > 0"));
        }
        if !["sgd", "momentum", "adam"].contains(&t.optimizer.as_str()) {
            return Err(Error::invalid("target.optimizer", &t.optimizer, "must be sgd, momentum or adam"));
        }
        crate::accounting::validate_delta(t.delta)?;
        if t.private {
            match (t.noise_multiplier, t.target_epsilon) {
                (Some(_), Some(_)) => {
                    return Err(Error::invalid(
                        "target",
                        "noise_multiplier and target_epsilon",
                        "give one of them, not both",
                    ))
                }
                (None, None) => {
                    return Err(Error::invalid(
                        "target",
                        "private",
                        "give noise_multiplier or target_epsilon (or private = false)",
                    ))
                }
                (Some(s), None) if !(s > 0.0 && s.is_finite()) => {
                    return Err(Error::invalid("target.noise_multiplier", s, "must be a finite number > 0"))
                }
                (None, Some(e)) if !(e > 0.0 && e.is_finite()) => {
                    return Err(Error::invalid("target.target_epsilon", e, "must be a finite number > 0"))
                }
                _ => {}
            }
        }
        // The checks every recipe gets (the model, the optimiser, delta, sigma, ...).
        self.recipe()?.validate()?;
        self.validate_attack()
    }

    /// Checks the attack's and the population's values.
    fn validate_attack(&self) -> Result<()> {
        let a = &self.attack;
        if a.targets == 0 {
            return Err(Error::invalid("attack.targets", 0, "must be at least 1"));
        }
        if a.shadows > 0 && a.shadows < MIN_LIRA_SHADOWS {
            return Err(Error::invalid(
                "attack.shadows",
                a.shadows,
                format!("LiRA needs at least {MIN_LIRA_SHADOWS} shadows (0 runs the loss attack alone)"),
            ));
        }
        if a.targets > 1 + a.shadows {
            return Err(Error::invalid(
                "attack.targets",
                a.targets,
                format!("at most the {} models trained", 1 + a.shadows),
            ));
        }
        if a.targets > 1 && a.shadows == 0 {
            return Err(Error::invalid("attack.targets", a.targets, "several targets need shadow models"));
        }
        if let Some(n @ (0 | 1)) = self.data.population {
            return Err(Error::invalid("data.population", n, "needs at least 2 examples"));
        }
        Ok(())
    }

    /// Models trained: the target plus the shadows.
    pub fn models(&self) -> u64 {
        1 + self.attack.shadows
    }

    /// SHA-256 of the spec's JSON (resume and merge refuse another spec's runs).
    pub fn digest(&self) -> String {
        sha256_hex(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Which models train on which examples: `keep[m][i]` for `models` models and `population`
/// examples (see the module's documentation). Deterministic in `seed`.
pub fn memberships(seed: u64, population: usize, models: usize) -> Vec<Vec<bool>> {
    let mut rng = SeedSalt::MiaMemberships.rng(seed);
    let mut keep = vec![vec![false; population]; models];
    let mut order: Vec<usize> = (0..models).collect();
    #[allow(clippy::needless_range_loop)] // i indexes the inner vectors of keep[m], for several m
    for i in 0..population {
        order.shuffle(&mut rng);
        let extra = models % 2 == 1 && rng.gen::<bool>();
        let k = models / 2 + usize::from(extra);
        for &m in &order[..k] {
            keep[m][i] = true;
        }
    }
    keep
}

/// The seed of model `index`: SplitMix64 of the experiment seed and the index.
pub fn model_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index).wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One trained model's outcome (a line of `runs.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Model index (0: the first target).
    pub index: u64,
    /// Its seed (initialisation, sampling and noise).
    pub seed: u64,
    /// Examples it trained on.
    pub train_examples: u64,
    /// Steps applied.
    pub steps: u64,
    /// Noise multiplier (private models).
    pub noise_multiplier: Option<f64>,
    /// Its ledger's phases as (q, sigma, steps) (private models).
    pub ledger_phases: Vec<(f64, f64, u64)>,
    /// Accuracy on the examples it trained on.
    pub member_accuracy: f64,
    /// Accuracy on the rest of the population.
    pub non_member_accuracy: f64,
    /// Wall time of training and scoring.
    pub seconds: f64,
    /// The logit-scaled confidence of every population example's label on this model.
    pub phi: Vec<f64>,
    /// An external trainer's claimed delta (from its `claim.json`, whose history is
    /// `ledger_phases`); absent for dpaudit's own trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_delta: Option<f64>,
}

/// Everything the models share, in plain memory (each worker makes its own tensors).
#[derive(Debug, Clone)]
pub struct MiaContext {
    spec: MiaSpec,
    population: Dataset,
    keep: Vec<Vec<bool>>,
    device: Device,
}

impl MiaContext {
    /// The spec.
    pub fn spec(&self) -> &MiaSpec {
        &self.spec
    }
    /// The population.
    pub fn population(&self) -> &Dataset {
        &self.population
    }
    /// The membership matrix.
    pub fn memberships(&self) -> &[Vec<bool>] {
        &self.keep
    }
    /// The models train on `device` instead of the CPU.
    ///
    /// # Errors
    /// [`Error::DeviceUnavailable`] when libtorch does not see the device.
    pub fn on_device(mut self, device: Device) -> Result<Self> {
        crate::device::check_available(device)?;
        self.device = device;
        Ok(self)
    }
    /// The device the models train on (the CPU unless [`MiaContext::on_device`]).
    pub fn device(&self) -> Device {
        self.device
    }
}

/// The rows of `data` whose flag is set.
///
/// # Errors
/// As [`Dataset::new`].
pub fn select(data: &Dataset, flags: &[bool], name: &str) -> Result<Dataset> {
    let per = data.shape().pixels().unwrap_or(0);
    let mut px = Vec::new();
    let mut labels = Vec::new();
    for (i, _) in flags.iter().enumerate().filter(|(_, &f)| f) {
        px.extend_from_slice(&data.pixels()[i * per..(i + 1) * per]);
        labels.push(data.labels()[i]);
    }
    Dataset::new(name, data.shape(), data.classes(), px, labels)
}

/// Loads the population and draws the memberships.
///
/// # Errors
/// Missing or corrupt data, a population larger than the training set, a lot size larger than
/// a model's training set.
pub fn prepare(spec: &MiaSpec) -> Result<MiaContext> {
    spec.validate()?;
    let dir = crate::audit::engine::dataset_dir(&spec.data.dataset);
    let train = load_mnist_dir(&dir, Split::Train, 10)?;
    let population = match spec.data.population {
        Some(n) if n > train.len() => {
            return Err(Error::invalid(
                "data.population",
                n,
                format!("the training set of {} has only {} examples", dir.display(), train.len()),
            ))
        }
        Some(n) => select(
            &train,
            &(0..train.len()).map(|i| i < n).collect::<Vec<_>>(),
            &format!("{} (first {n})", train.name()),
        )?,
        None => train,
    };
    let keep = memberships(spec.attack.seed, population.len(), spec.models() as usize);
    for (m, k) in keep.iter().enumerate() {
        let n = k.iter().filter(|&&b| b).count();
        let Some(recipe) = spec.target.built_in() else { break };
        if recipe.lot_size > n as f64 {
            return Err(Error::invalid(
                "target.lot_size",
                recipe.lot_size,
                format!("model {m} trains on only {n} examples (half the population)"),
            ));
        }
    }
    Ok(MiaContext { spec: spec.clone(), population, keep, device: Device::Cpu })
}

/// Trains model `index` of the experiment and scores the population on it.
///
/// # Errors
/// Trainer errors (NaN in training included), calibration errors.
pub fn train_model(ctx: &MiaContext, population: &Examples, index: u64) -> Result<ModelRecord> {
    let start = Instant::now();
    let keep = &ctx.keep[index as usize];
    let members = select(&ctx.population, keep, "members")?;
    let n = members.len();
    // Resolved (checked, and sigma calibrated) for the examples this model trains on.
    let resolved = ctx.spec.recipe()?.resolve(n)?;
    let steps = resolved.steps;
    let sigma = resolved.noise.as_ref().map(|noise| noise.noise_multiplier);
    let seed = model_seed(ctx.spec.attack.seed, index);
    let data = Examples::from_dataset(&members, ctx.device)?;
    let mut run = DpSgd::ephemeral(resolved.config.clone(), n, seed, ctx.device)?;
    for _ in 0..steps {
        run.step(&data)?;
    }
    let c = confidences(run.model(), population, SCORE_BATCH)?;
    if let Some(x) = c.phi.iter().find(|x| !x.is_finite()) {
        return Err(Error::numerical("logit-scaled confidence", format!("model {index} gave {x}")));
    }
    let acc = |inn: bool| {
        let (right, total) = c
            .correct
            .iter()
            .zip(keep)
            .filter(|(_, &k)| k == inn)
            .fold((0usize, 0usize), |(a, b), (&ok, _)| (a + usize::from(ok), b + 1));
        if total == 0 {
            f64::NAN
        } else {
            right as f64 / total as f64
        }
    };
    let ledger_phases = match run.ledger() {
        Some(l) => l.phases()?.iter().map(|p| (p.sampling_rate, p.noise_multiplier, p.steps)).collect(),
        None => Vec::new(),
    };
    Ok(ModelRecord {
        index,
        seed,
        train_examples: n as u64,
        steps: run.steps(),
        noise_multiplier: sigma,
        ledger_phases,
        member_accuracy: acc(true),
        non_member_accuracy: acc(false),
        seconds: start.elapsed().as_secs_f64(),
        phi: c.phi,
        claim_delta: None,
    })
}

/// A membership-inference experiment is an experiment of the sharded runner
/// ([`crate::experiment`]): its jobs are the models, model m in shard `m mod N`.
impl Experiment for MiaSpec {
    type Record = ModelRecord;
    type Job = u64;
    const WORDS: Vocabulary =
        Vocabulary { experiment: "experiment", folder: "experiment folder", item: "model", shard_units: "models" };
    /// Folders written before membership inference recorded its shard have none: any shard may
    /// resume them, as then.
    const ABSENT_SHARD_IS_WHOLE: bool = false;

    fn digest(&self) -> String {
        MiaSpec::digest(self)
    }

    fn validate(&self) -> Result<()> {
        MiaSpec::validate(self)
    }

    fn jobs(&self) -> Vec<u64> {
        (0..self.models()).collect()
    }

    fn shard_key(&self, model: u64) -> Option<u64> {
        Some(model)
    }

    fn shard_keys(&self) -> u64 {
        self.models()
    }

    fn job_of(r: &ModelRecord) -> u64 {
        r.index
    }

    fn job_label(model: u64) -> String {
        format!("index {model}")
    }

    /// A model the spec has, trained from the seed the spec derives for it.
    fn check_record(&self, r: &ModelRecord) -> std::result::Result<(), String> {
        if r.index >= self.models() {
            return Err(format!("index outside the spec's {} models", self.models()));
        }
        let want = model_seed(self.attack.seed, r.index);
        if r.seed != want {
            return Err(format!("seed {} is not the seed {want} the spec derives for this model", r.seed));
        }
        Ok(())
    }
}

/// Reads the finished models of an experiment folder (a torn last line, from a crash, is
/// ignored).
///
/// # Errors
/// I/O errors; [`Error::Data`] for a corrupt complete line.
pub fn read_runs(dir: &Path) -> Result<Vec<ModelRecord>> {
    experiment::read_records(dir)
}

/// Trains (or resumes) the shard's models into `dir` on `threads` threads (one libtorch thread
/// each). Models already in `runs.jsonl` are skipped; each new one is appended and fsynced as it
/// finishes. Model m belongs to shard `m mod N`. If `stop` becomes true the workers finish their
/// current model and return.
///
/// # Errors
/// A folder holding another spec's or another shard's models, or models that do not check; a
/// shard that owns no model; trainer and I/O errors (models finished before the error are kept).
pub fn run_models(
    ctx: &MiaContext,
    dir: &Path,
    shard: Shard,
    threads: usize,
    progress: Progress<'_>,
    stop: &AtomicBool,
) -> Result<Vec<ModelRecord>> {
    if let Some(target) = ctx.spec.target.command() {
        return crate::attack::mia_command::run_command_models(ctx, target, dir, shard, progress, stop);
    }
    let (_lock, existing) = experiment::open_folder(&ctx.spec, dir, shard)?;
    // One libtorch thread per worker: the workers are the parallelism.
    tch::set_num_threads(1);
    experiment::run_pending(
        &ctx.spec,
        dir,
        shard,
        threads,
        &existing,
        progress,
        stop,
        // tch::Tensor is not Sync: every worker builds its own copy of the population.
        &|| Examples::from_dataset(&ctx.population, ctx.device),
        &|population, m| train_model(ctx, population, m),
    )
}

/// Gathers the models of several shard folders into `out` (the spec and every model once),
/// refusing folders of another spec, a model in two folders and a model outside its folder's
/// shard ([`experiment::merge`]).
///
/// # Errors
/// Folders of different specs, models that do not check, corrupt files, I/O errors.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(MiaSpec, Vec<ModelRecord>)> {
    experiment::merge(dirs, out, &|_, _| Ok(()))
}

/// One accountant's epsilon for the target's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetEpsilon {
    /// `rdp` or `pld`.
    pub accountant: String,
    /// Epsilon at `delta` (Poisson sampling, add/remove-one adjacency).
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
}

/// The privacy of the first target model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacySummary {
    /// Whether the recipe is private.
    pub private: bool,
    /// Its epsilons from its ledger (empty for the non-private baseline, whose epsilon is
    /// infinite).
    pub epsilons: Vec<TargetEpsilon>,
    /// Noise multiplier, sampling rate and steps of the target model.
    pub mechanism: String,
}

/// One attack's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackResult {
    /// `loss`, `lira-offline` or `lira-online`.
    pub attack: String,
    /// What the score is.
    pub score: String,
    /// AUC, TPR at low FPR, the ROC (thinned above FPR 1%).
    pub metrics: AttackMetrics,
    /// For a private target: the most TPR any attack can have at each FPR under the target's
    /// (epsilon, delta) (the smallest epsilon of the accountants): min(1, e^epsilon FPR + delta).
    pub dp_tpr_ceiling: Option<BTreeMap<String, f64>>,
}

/// A model's summary in the report (without its confidences).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Index.
    pub index: u64,
    /// Seed.
    pub seed: u64,
    /// Whether it is a target.
    pub target: bool,
    /// Examples it trained on.
    pub train_examples: u64,
    /// Steps.
    pub steps: u64,
    /// Noise multiplier.
    pub noise_multiplier: Option<f64>,
    /// Accuracy on its members.
    pub member_accuracy: f64,
    /// Accuracy on the rest of the population.
    pub non_member_accuracy: f64,
    /// Seconds.
    pub seconds: f64,
}

/// `mia.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiaReport {
    /// dpaudit's version.
    pub tool_version: String,
    /// The spec's name.
    pub spec_name: String,
    /// SHA-256 of the spec's JSON.
    pub spec_digest: String,
    /// The spec.
    pub spec: MiaSpec,
    /// Population size.
    pub population: u64,
    /// Models trained (targets included).
    pub models: u64,
    /// Target models attacked.
    pub targets: u64,
    /// The target's privacy.
    pub privacy: PrivacySummary,
    /// Mean accuracy of the targets on their members.
    pub target_member_accuracy: f64,
    /// Mean accuracy of the targets on their non-members.
    pub target_non_member_accuracy: f64,
    /// The attacks' results.
    pub attacks: Vec<AttackResult>,
    /// How to read the figures.
    pub interpretation: String,
    /// Every model.
    pub model_runs: Vec<ModelSummary>,
    /// Seconds of training and scoring, summed over models.
    pub training_seconds: f64,
    /// Wall time of this invocation.
    pub wall_seconds: f64,
}

/// Scores the target model(s) with the loss attack and (with shadows) LiRA offline and online.
///
/// # Errors
/// Missing models (the message says which), records that do not match the spec.
pub fn analyse(ctx: &MiaContext, records: &[ModelRecord], wall_seconds: f64) -> Result<MiaReport> {
    let spec = &ctx.spec;
    let m = spec.models();
    let by_index: BTreeMap<u64, &ModelRecord> = records.iter().filter(|r| r.index < m).map(|r| (r.index, r)).collect();
    let missing: Vec<u64> = (0..m).filter(|i| !by_index.contains_key(i)).collect();
    if !missing.is_empty() {
        return Err(Error::invalid(
            "models",
            format!("{} of {m} missing (e.g. {:?})", missing.len(), &missing[..missing.len().min(5)]),
            "resume the experiment or merge the missing shards",
        ));
    }
    let n = ctx.population.len();
    for r in by_index.values() {
        let members = ctx.keep[r.index as usize].iter().filter(|&&b| b).count() as u64;
        if r.phi.len() != n || r.train_examples != members {
            return Err(Error::invalid("model record", r.index, "does not match the spec's population or memberships"));
        }
    }
    let mut loss = (Vec::new(), Vec::new());
    let mut online = (Vec::new(), Vec::new());
    let mut offline = (Vec::new(), Vec::new());
    let mut per_example = None;
    for t in 0..spec.attack.targets {
        let target = by_index[&t];
        let keep = &ctx.keep[t as usize];
        for (i, &phi) in target.phi.iter().enumerate() {
            if keep[i] { &mut loss.0 } else { &mut loss.1 }.push(loss_score(phi));
        }
        if spec.attack.shadows > 0 {
            let others: Vec<u64> = (0..m).filter(|&j| j != t).collect();
            let phis: Vec<Vec<f64>> = others.iter().map(|j| by_index[j].phi.clone()).collect();
            let keeps: Vec<Vec<bool>> = others.iter().map(|&j| ctx.keep[j as usize].clone()).collect();
            let s = lira_scores(&target.phi, &phis, &keeps, spec.attack.variance)?;
            per_example = Some(s.per_example_variance);
            for ((&member, &on), &off) in keep.iter().zip(&s.online).zip(&s.offline) {
                if member { &mut online.0 } else { &mut online.1 }.push(on);
                if member { &mut offline.0 } else { &mut offline.1 }.push(off);
            }
        }
    }
    let target0 = by_index[&0];
    // The delta of the target's epsilons: the recipe's, or an external trainer's claimed one.
    let accounted_delta = match &spec.target {
        MiaTarget::BuiltIn(recipe) => recipe.private.then_some(recipe.delta),
        MiaTarget::Command(_) => target0.claim_delta.filter(|_| !target0.ledger_phases.is_empty()),
    };
    let privacy = if let Some(delta) = accounted_delta {
        let phases: Vec<Phase> =
            target0.ledger_phases.iter().map(|&(q, s, t)| Phase::new(q, s, t)).collect::<Result<_>>()?;
        let r = rdp::epsilon(&phases, delta)?;
        let p = PldAccountant::default().epsilon(&phases, delta)?;
        PrivacySummary {
            private: true,
            epsilons: vec![
                TargetEpsilon { accountant: "rdp".into(), epsilon: r.epsilon, delta },
                TargetEpsilon { accountant: "pld".into(), epsilon: p.epsilon, delta },
            ],
            mechanism: match &spec.target {
                MiaTarget::BuiltIn(recipe) => format!(
                    "DP-SGD, Poisson sampling q = {:.6}, sigma = {:.6}, C = {}, {} steps, add/remove-one adjacency",
                    recipe.lot_size / target0.train_examples as f64,
                    target0.noise_multiplier.unwrap_or(f64::NAN),
                    recipe.max_grad_norm,
                    target0.steps
                ),
                MiaTarget::Command(c) => format!(
                    "external trainer {:?}: the history of its claim.json, (q, sigma, steps) per phase {:?}, Poisson sampling, add/remove-one adjacency, accounted by dpaudit",
                    c.argv.join(" "),
                    target0.ledger_phases
                ),
            },
        }
    } else if let Some(c) = spec.target.command() {
        PrivacySummary {
            private: false,
            epsilons: Vec::new(),
            mechanism: format!(
                "external trainer {:?} wrote no claim.json: its privacy is not accounted (treated as none)",
                c.argv.join(" ")
            ),
        }
    } else {
        PrivacySummary {
            private: false,
            epsilons: Vec::new(),
            mechanism: "no privacy (no clipping, no noise): epsilon is infinite".into(),
        }
    };
    let ceiling = privacy.epsilons.iter().map(|e| e.epsilon).reduce(f64::min).map(|eps| {
        LOW_FPRS
            .iter()
            .map(|(k, f)| (k.to_string(), (eps.exp() * f + accounted_delta.unwrap_or(0.0)).min(1.0)))
            .collect::<BTreeMap<String, f64>>()
    });
    let result = |attack: &str, score: String, (mem, non): &(Vec<f64>, Vec<f64>)| -> Result<AttackResult> {
        let mut metrics = attack_metrics(mem, non)?;
        metrics.roc = thin_roc(&metrics.roc, 400);
        Ok(AttackResult { attack: attack.into(), score, metrics, dp_tpr_ceiling: ceiling.clone() })
    };
    let mut attacks = vec![result(
        "loss",
        "minus the cross-entropy loss of the example on the target (Yeom et al. 2018)".into(),
        &loss,
    )?];
    if let Some(pe) = per_example {
        let sd =
            if pe { "per-example standard deviations" } else { "one pooled standard deviation per side (few shadows)" };
        let k = spec.attack.shadows;
        attacks.push(result(
            "lira-offline",
            format!("(phi - mu_out) / sd_out from the OUT shadows among {k} (Carlini et al. 2022, offline; {sd})"),
            &offline,
        )?);
        attacks.push(result("lira-online", format!("log N(phi; mu_in, sd_in) - log N(phi; mu_out, sd_out) from {k} shadows (Carlini et al. 2022, online; {sd})"), &online)?);
    }
    let targets = spec.attack.targets;
    let mean_of = |f: &dyn Fn(&ModelRecord) -> f64| (0..targets).map(|t| f(by_index[&t])).sum::<f64>() / targets as f64;
    let model_runs: Vec<ModelSummary> = by_index
        .values()
        .map(|r| ModelSummary {
            index: r.index,
            seed: r.seed,
            target: r.index < targets,
            train_examples: r.train_examples,
            steps: r.steps,
            noise_multiplier: r.noise_multiplier,
            member_accuracy: r.member_accuracy,
            non_member_accuracy: r.non_member_accuracy,
            seconds: r.seconds,
        })
        .collect();
    Ok(MiaReport {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        spec_name: spec.name.clone(),
        spec_digest: spec.digest(),
        spec: spec.clone(),
        population: n as u64,
        models: m,
        targets,
        privacy,
        target_member_accuracy: mean_of(&|r| r.member_accuracy),
        target_non_member_accuracy: mean_of(&|r| r.non_member_accuracy),
        attacks,
        interpretation: "Membership-inference figures are evidence about this recipe on this population, measured on finitely many examples: not a privacy bound, and a weak attack proves nothing. A DP guarantee caps every attack: TPR <= e^epsilon FPR + delta (dp_tpr_ceiling); an empirical TPR above the ceiling by more than sampling error would contradict the claim. See proofs/attack/mia.md.".into(),
        training_seconds: model_runs.iter().map(|r| r.seconds).sum(),
        model_runs,
        wall_seconds,
    })
}

/// Writes `mia.json` atomically.
///
/// # Errors
/// I/O errors.
pub fn write_report(dir: &Path, report: &MiaReport) -> Result<PathBuf> {
    let path = dir.join(REPORT_FILE);
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::data(&path, e.to_string()))?;
    write_atomically(&path, &json)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner checks every model record against the spec (on resume and merge): a model the
    /// spec has, its seed, once, and in its folder's shard.
    #[test]
    fn model_records_are_checked_against_the_spec() {
        let spec: MiaSpec = toml::from_str(
            "name = \"t\"\n[data]\ndataset = \"fixture\"\n[target]\nmodel = \"mlp\"\nlot_size = 8\nepochs = 1\nprivate = false\nlr = 0.1\n[attack]\nshadows = 4\nseed = 9\n",
        )
        .unwrap();
        let record = |index: u64, seed: u64| ModelRecord {
            index,
            seed,
            train_examples: 0,
            steps: 0,
            noise_multiplier: None,
            ledger_phases: Vec::new(),
            member_accuracy: 0.0,
            non_member_accuracy: 0.0,
            seconds: 0.0,
            phi: Vec::new(),
            claim_delta: None,
        };
        let good: Vec<ModelRecord> = (0..5).map(|m| record(m, model_seed(9, m))).collect();
        let origin = Path::new(RUNS_FILE);
        experiment::verify_records(&spec, None, &good, origin).unwrap();
        let refused = |records: &[ModelRecord], shard: Option<Shard>, why: &str| {
            let e = experiment::verify_records(&spec, shard, records, origin).unwrap_err().to_string();
            assert!(e.contains(why), "expected {why:?}: {e}");
        };
        refused(&[record(5, model_seed(9, 5))], None, "index outside the spec's 5 models");
        refused(&[record(2, model_seed(9, 3))], None, "is not the seed");
        refused(&[good[1].clone(), good[1].clone()], None, "model record 2 (index 1): appears twice");
        refused(
            &good[..2],
            Some(Shard { index: 1, count: 2 }),
            "model record 1 (index 0): is not a model of shard 1/2",
        );
        assert!(Shard { index: 0, count: 6 }.check_against(&spec).is_err(), "6 shards of 5 models");
    }

    /// A built-in target serialises as the bare recipe (as before command targets existed: the
    /// same JSON, so the same digest); a command target parses, and must name the population's
    /// dataset and leave train_examples out.
    #[test]
    fn built_in_specs_serialise_as_before_and_command_targets_are_checked() {
        let text = "name = \"t\"\n[data]\ndataset = \"fixture\"\n[target]\nmodel = \"mlp\"\nlot_size = 8\nepochs = 1\nprivate = false\nlr = 0.1\n";
        let spec: MiaSpec = toml::from_str(text).unwrap();
        let recipe: Recipe = toml::from_str(text.split("[target]\n").nth(1).unwrap()).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["target"], serde_json::to_value(&recipe).unwrap());
        assert_eq!(spec.target, MiaTarget::BuiltIn(recipe));
        let command = "name = \"c\"\n[data]\ndataset = \"fixture\"\npopulation = 20\n[target]\nkind = \"command\"\nmode = \"once\"\nargv = [\"train\", \"{request}\"]\ndataset = \"fixture\"\n[target.options]\nsteps = 3\n[attack]\nshadows = 4\n";
        let spec: MiaSpec = toml::from_str(command).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.target.command().unwrap().options["steps"], 3);
        assert!(spec.recipe().unwrap_err().to_string().contains("external command"));
        let refused = |text: &str, why: &str| {
            let e = match toml::from_str::<MiaSpec>(text) {
                Ok(s) => s.validate().unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(why), "expected {why:?}: {e}");
        };
        refused(
            &command.replace("dataset = \"fixture\"\n[target.options]", "dataset = \"mnist\"\n[target.options]"),
            "must be the population's dataset",
        );
        refused(&command.replace("[target.options]", "train_examples = 10\n[target.options]"), "target.train_examples");
        refused(&command.replace("mode = \"once\"", "mode = \"worker\""), "placeholders are for mode");
        refused(&command.replace("kind = \"command\"", "kind = \"shell\""), "unknown target kind");
        refused(&command.replace("shadows = 4", "shadows = 2"), "LiRA needs at least");
    }

    #[test]
    fn every_example_is_in_half_the_models() {
        for models in [1usize, 2, 5, 17] {
            let keep = memberships(3, 400, models);
            #[allow(clippy::needless_range_loop)]
            for i in 0..400 {
                let k = (0..models).filter(|&m| keep[m][i]).count();
                assert!(
                    k == models / 2 || (models % 2 == 1 && k == models / 2 + 1),
                    "{models} models: example {i} in {k}"
                );
            }
            // Odd M: the coin makes the share 1/2 on average (M = 1: about half the examples).
            if models == 1 {
                let c = keep[0].iter().filter(|&&b| b).count();
                assert!((150..250).contains(&c), "{c}");
            }
        }
        assert_eq!(memberships(3, 50, 4), memberships(3, 50, 4));
        assert_ne!(memberships(3, 50, 4), memberships(4, 50, 4));
    }
}
