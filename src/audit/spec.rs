//! Audit specifications: the TOML files in `audits/`. A spec names the training recipe (the
//! target), the privacy claim, the canary, the attack and how many runs to make; everything an
//! audit does follows from it and from the run seeds it derives.
//!
//! ```toml
//! name = "dirac-eps2"
//! [target]                 # the recipe, with the options of `dpaudit train`
//! dataset = "fixture"      # fixture | mnist | fashion-mnist | a path to an MNIST-format folder
//! train_examples = 500     # the first N training examples (default: all)
//! model = "logreg"
//! lot_size = 500           # q = lot_size / train_examples
//! steps = 10
//! noise_multiplier = 6.3
//! max_grad_norm = 1.0
//! optimizer = "sgd"        # sgd | momentum | adam
//! lr = 1.0
//! inject_fault = "no-clip" # optional: a deliberate bug (see dpaudit::train::fault)
//! [claim]
//! epsilon = "accountant"   # or a number
//! accountant = "pld"       # pld | rdp, when epsilon = "accountant": computed from the replays' ledgers
//! delta = 1e-5
//! [canary]
//! kind = "dirac"           # dirac | random-direction (gradient space); blank | mislabelled | out-of-distribution (input space)
//! norm = 1.0               # gradient canaries: the norm before clipping, in units of max_grad_norm
//! [attack]
//! threat_model = "white-box"    # white-box (all iterates) | black-box (final model)
//! runs_per_side = 1000
//! confidence = 0.95
//! threshold = "from-claim"      # from-claim | held-out | bonferroni
//! seed = 1
//! ```
use crate::error::{Error, Result};
use crate::train::fault::Fault;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A whole audit specification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSpec {
    /// Short name (used in reports).
    pub name: String,
    /// What the audit is for, in words.
    #[serde(default)]
    pub description: String,
    /// The training recipe under audit: dpaudit's own trainer, or an external command.
    pub target: AuditTarget,
    /// The privacy claim the audit tries to refute.
    pub claim: Claim,
    /// The canary: the record that D' has and D lacks.
    pub canary: Canary,
    /// The attack and the statistics.
    pub attack: Attack,
}

/// What an audit trains: dpaudit's own trainer (a `[target]` without `kind`, serialised exactly
/// as before command targets existed, so existing spec digests are unchanged) or an external
/// trainer (`kind = "command"`, the protocol of `docs/external-trainers.md`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AuditTarget {
    /// dpaudit's own DP-SGD or DP-GAN trainer.
    BuiltIn(Target),
    /// A trainer dpaudit did not write, run as a command.
    Command(CommandTarget),
}

impl<'de> Deserialize<'de> for AuditTarget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        let kind = value.get("kind").cloned();
        match kind {
            None => serde_json::from_value(value).map(AuditTarget::BuiltIn).map_err(D::Error::custom),
            Some(serde_json::Value::String(k)) if k == "command" => {
                serde_json::from_value(value).map(AuditTarget::Command).map_err(D::Error::custom)
            }
            Some(other) => Err(D::Error::custom(format!(
                "unknown target kind {other}: leave `kind` out for dpaudit's own trainer, or say kind = \"command\""
            ))),
        }
    }
}

/// The word `command` (so the TOML can say `kind = "command"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandWord {
    /// An external trainer.
    Command,
}

/// How dpaudit talks to an external trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandMode {
    /// One process per run: `argv` with `{request}`, `{data}`, `{out}`, `{seed}` substituted.
    Once,
    /// Long-lived processes, one JSON request per line on stdin, one reply per line on stdout.
    Worker,
}

/// An external trainer (`[target] kind = "command"`): see `docs/external-trainers.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTarget {
    /// Always `command`.
    pub kind: CommandWord,
    /// `once` or `worker`.
    pub mode: CommandMode,
    /// The command line (program first). In `once` mode it may hold the placeholders
    /// `{request}`, `{data}`, `{out}` and `{seed}`.
    pub argv: Vec<String>,
    /// `fixture`, `mnist`, `fashion-mnist`, or a path to an MNIST-format folder.
    pub dataset: String,
    /// D: the first N training examples (default: all).
    #[serde(default)]
    pub train_examples: Option<usize>,
    /// Trainer processes in parallel.
    #[serde(default = "one_usize")]
    pub workers: usize,
    /// Longest a run may take (seconds); a run past it is killed with its process group.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// Whether the trainer reproduces a run bit for bit from its seed (then `--recheck` retrains
    /// records and compares them).
    #[serde(default)]
    pub deterministic: bool,
    /// Passed verbatim (as JSON) to the trainer in every request.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

fn one_usize() -> usize {
    1
}
fn default_timeout() -> f64 {
    600.0
}

/// The placeholders of a `once`-mode command line.
pub const PLACEHOLDERS: [&str; 4] = ["{request}", "{data}", "{out}", "{seed}"];

impl CommandTarget {
    /// Checks the trainer's own settings: a command line, its placeholders for its mode, the
    /// dataset, examples, workers and timeout (an audit spec and a membership-inference spec
    /// check the rest).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.argv.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(Error::invalid("target.argv", format!("{:?}", c.argv), "must name a program (argv[0])"));
        }
        if c.mode == CommandMode::Worker {
            if let Some(p) = PLACEHOLDERS.iter().find(|p| c.argv.iter().any(|a| a.contains(*p))) {
                return Err(Error::invalid(
                    "target.argv",
                    format!("{:?}", c.argv),
                    format!("holds {p}, but in worker mode one process serves many runs and gets each run's request on stdin; placeholders are for mode = \"once\""),
                ));
            }
        }
        if c.dataset.trim().is_empty() {
            return Err(Error::invalid(
                "target.dataset",
                "\"\"",
                "must name fixture, mnist, fashion-mnist or a folder",
            ));
        }
        if c.train_examples == Some(0) {
            return Err(Error::invalid("target.train_examples", 0, "must be at least 1"));
        }
        if c.workers == 0 || c.workers > 1024 {
            return Err(Error::invalid("target.workers", c.workers, "must be between 1 and 1024"));
        }
        if !(c.timeout_seconds > 0.0 && c.timeout_seconds <= 7.0 * 86_400.0) {
            return Err(Error::invalid("target.timeout_seconds", c.timeout_seconds, "must be > 0 and at most a week"));
        }
        Ok(())
    }
}

/// The training recipe as an audit spec writes it (its wire format, kept field for field so that
/// existing specs parse and their digests are unchanged); [`Target::recipe`] gives dpaudit's one
/// recipe type ([`crate::recipe::Recipe`]), which the replays train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `fixture`, `mnist`, `fashion-mnist`, or a path to an MNIST-format folder.
    pub dataset: String,
    /// Use only the first N training examples.
    #[serde(default)]
    pub train_examples: Option<usize>,
    /// Model name (`logreg`, `mlp`, ...).
    pub model: String,
    /// Expected lot size L (q = L / N).
    pub lot_size: f64,
    /// Training steps per run.
    pub steps: u64,
    /// Noise multiplier sigma.
    pub noise_multiplier: f64,
    /// Clipping norm C.
    pub max_grad_norm: f64,
    /// `sgd`, `momentum` or `adam`.
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    /// Learning rate.
    pub lr: f64,
    /// Largest physical batch (memory only; does not change results).
    #[serde(default = "default_physical_batch")]
    pub physical_batch: usize,
    /// A deliberate bug to plant (planted audits).
    #[serde(default)]
    pub inject_fault: Option<Fault>,
    /// A DP-GAN instead of a classifier (`model = "dpgan"`): `steps` are discriminator steps,
    /// `lot_size`, `noise_multiplier` and `max_grad_norm` are the discriminator's (for the
    /// noise-layer design: the noise layer's clip and sigma), `lr` the discriminator's Adam rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gan: Option<GanTarget>,
}

/// The DP-GAN of a GAN audit (the options of `dpaudit gan train` that `[target]` does not cover).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GanTarget {
    /// `real-only`, `joint` or `noise-layer`.
    pub design: crate::gan::dpgan::Design,
    /// Discriminator steps per generator step.
    #[serde(default = "one_u32")]
    pub n_critic: u32,
    /// Generator learning rate (Adam).
    #[serde(default = "default_gan_lr")]
    pub g_lr: f64,
    /// Latent dimension.
    #[serde(default = "default_z_dim")]
    pub z_dim: i64,
    /// Generator width.
    #[serde(default = "default_width")]
    pub g_width: i64,
    /// Discriminator width.
    #[serde(default = "default_width")]
    pub d_width: i64,
    /// Noise-layer design: noise draws averaged in the discriminator's margin on the canary.
    #[serde(default = "default_draws")]
    pub score_draws: usize,
    /// Start every replay from the same initial weights (drawn from `attack.seed`); sampling,
    /// noise and latents still differ per run. Valid because DP must hold for any fixed
    /// initialisation; it removes variance that would otherwise hide one record.
    #[serde(default)]
    pub fixed_initialisation: bool,
    /// `label-planes` (default) or `classifier`: how the discriminator learns the labels
    /// ([`crate::gan::networks::Conditioning`]); the canary's score is its real margin.
    #[serde(default)]
    pub conditioning: crate::gan::networks::Conditioning,
}

impl Target {
    /// The same recipe as dpaudit's recipe type: `steps` steps of Gaussian noise `noise_multiplier`
    /// (an audit's recipe is always private; the claim's delta, not the recipe's, is the audit's).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an optimizer that is not sgd, momentum or adam.
    pub fn recipe(&self) -> Result<crate::recipe::Recipe> {
        use crate::recipe::{OptimizerName, Privacy, Recipe};
        Ok(Recipe {
            dataset: self.dataset.clone(),
            train_examples: self.train_examples,
            validation: 0,
            model: self.model.clone(),
            lot_size: self.lot_size,
            epochs: None,
            steps: Some(self.steps),
            max_grad_norm: self.max_grad_norm,
            optimizer: OptimizerName::parse(&self.optimizer, "target.optimizer")?,
            momentum: 0.9,
            lr: self.lr,
            schedule: Default::default(),
            physical_batch: self.physical_batch,
            delta: 1e-5,
            privacy: Privacy::Gaussian { noise_multiplier: self.noise_multiplier },
            pca: None,
            ema: None,
            inject_fault: self.inject_fault,
            adversarial: None,
            public_norm: None,
            trainer: Default::default(),
            gan: None,
        })
    }
}

fn one_u32() -> u32 {
    1
}
fn default_gan_lr() -> f64 {
    2e-4
}
fn default_z_dim() -> i64 {
    64
}
fn default_width() -> i64 {
    32
}
fn default_draws() -> usize {
    64
}

fn default_optimizer() -> String {
    "sgd".into()
}
fn default_physical_batch() -> usize {
    1024
}

/// Most trainings per side an audit spec may ask for (a million trainings per side is days on a
/// cluster; more is a typo, refused before anything is planned or trained).
pub const MAX_RUNS_PER_SIDE: u64 = 1_000_000;

/// The claim's epsilon: a number, `"accountant"` (computed from the replays' ledgers, or from an
/// external trainer's reported history), or `"trainer"` (an external trainer's own `claim.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClaimedEpsilon {
    /// An explicit epsilon.
    Explicit(f64),
    /// The string `"accountant"`.
    Accountant(AccountantWord),
    /// The string `"trainer"`.
    Trainer(TrainerWord),
}

/// The word `trainer` (so the TOML can say `epsilon = "trainer"`): the largest epsilon the
/// external trainer claimed in any run's `claim.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainerWord {
    /// Use the trainer's claim.
    Trainer,
}

/// The word `accountant` (so the TOML can say `epsilon = "accountant"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountantWord {
    /// Use the accountant.
    Accountant,
}

/// The privacy claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Explicit epsilon or `"accountant"`.
    pub epsilon: ClaimedEpsilon,
    /// Which accountant (`pld` or `rdp`) when the epsilon comes from the ledger.
    #[serde(default = "default_accountant")]
    pub accountant: String,
    /// The claim's delta.
    pub delta: f64,
}

fn default_accountant() -> String {
    "pld".into()
}

/// The kinds of canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryKind {
    /// Gradient space: one coordinate (of a weight that no real example moves) set to the norm.
    Dirac,
    /// Gradient space: a seeded random unit direction over all parameters, times the norm.
    RandomDirection,
    /// Input space: an all-zero image with the given label.
    Blank,
    /// Input space: a test-set image given a wrong label.
    Mislabelled,
    /// Input space: a seeded random-noise image with the given label.
    OutOfDistribution,
}

impl CanaryKind {
    /// Whether the canary lives in gradient space (added to the clipped sum by the trainer).
    pub fn is_gradient(self) -> bool {
        matches!(self, CanaryKind::Dirac | CanaryKind::RandomDirection)
    }
}

/// The canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Which kind.
    pub kind: CanaryKind,
    /// Gradient canaries: norm before clipping, in units of the clipping norm.
    #[serde(default = "one")]
    pub norm: f64,
    /// Input canaries: the label given to the canary image.
    #[serde(default)]
    pub label: u8,
}

fn one() -> f64 {
    1.0
}

/// What the attacker sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThreatModel {
    /// Every iterate of training (the statistic: the updates' projections on the canary).
    WhiteBox,
    /// Only the final model (the statistic: minus the canary's loss).
    BlackBox,
}

/// How the decision threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdChoice {
    /// Fixed before any run, from the claim: the threshold that maximises the ideal bound of the
    /// claimed Gaussian mechanism (white-box gradient canaries, whose scores are in N(0, 1) units).
    FromClaim,
    /// Chosen on a first part of the runs (`held_out_fraction`), evaluated on the rest.
    HeldOut,
    /// The best of all thresholds, each test at alpha / (number of thresholds).
    Bonferroni,
}

/// The attack and its statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attack {
    /// White-box or black-box.
    pub threat_model: ThreatModel,
    /// Runs on D and on D' each.
    pub runs_per_side: u64,
    /// Confidence of the lower bound (e.g. 0.95).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// How the threshold is chosen.
    #[serde(default = "default_threshold")]
    pub threshold: ThresholdChoice,
    /// With `held-out`: the share of runs (per side) used to choose the threshold.
    #[serde(default = "half")]
    pub held_out_fraction: f64,
    /// The seed every run seed derives from.
    #[serde(default)]
    pub seed: u64,
    /// `replay` (K runs per side) or `one-run` (Steinke, Nasr & Jagielski 2023: one training run
    /// with `canaries` gradient canaries, each included with probability 1/2).
    #[serde(default)]
    pub mode: AuditMode,
    /// One-run: the number of canaries m.
    #[serde(default)]
    pub canaries: u64,
    /// One-run: how many canaries the auditor guesses (half "in" from the top scores, half "out"
    /// from the bottom); fixed in advance.
    #[serde(default)]
    pub guesses: u64,
    /// Which statistic scores a run. Absent: the threat model's own (today's single statistic).
    /// `"select"`: every statistic the runs report ([`crate::audit::replay::RunRecord::statistics`],
    /// each also negated) is tried; the statistic, its direction and the threshold are chosen on
    /// held-out runs and the bound is computed on the rest. Any other word: that named statistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
}

/// How the audit gathers its evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditMode {
    /// K independent trainings per side.
    #[default]
    Replay,
    /// One training with many canaries.
    OneRun,
}

fn default_confidence() -> f64 {
    0.95
}
fn default_threshold() -> ThresholdChoice {
    ThresholdChoice::HeldOut
}
fn half() -> f64 {
    0.5
}

impl AuditSpec {
    /// Parses and validates a spec from TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::Data`] for TOML that does not parse or has unknown fields; [`Error::InvalidParameter`]
    /// for impossible values.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let spec: AuditSpec = toml::from_str(text).map_err(|e| Error::data(origin, e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads and validates a spec file.
    ///
    /// # Errors
    /// As [`AuditSpec::from_toml`], and I/O errors.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading audit spec {}", path.display()), e))?;
        Self::from_toml(&text, path)
    }

    /// SHA-256 of the spec's canonical JSON: shards and resumed audits must agree on it.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a spec always serialises");
        hex::encode(Sha256::digest(&json))
    }

    /// The built-in recipe, for code that runs dpaudit's own trainer.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a command target (an external trainer).
    pub fn built_in(&self) -> Result<&Target> {
        match &self.target {
            AuditTarget::BuiltIn(t) => Ok(t),
            AuditTarget::Command(c) => Err(Error::invalid(
                "target.kind",
                "command",
                format!(
                    "this needs dpaudit's own trainer, but the spec's target is the external command {:?}",
                    c.argv.first().map(String::as_str).unwrap_or("")
                ),
            )),
        }
    }

    /// The external trainer, when the target is a command.
    pub fn command(&self) -> Option<&CommandTarget> {
        match &self.target {
            AuditTarget::Command(c) => Some(c),
            AuditTarget::BuiltIn(_) => None,
        }
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let t = match &self.target {
            AuditTarget::BuiltIn(t) => t,
            AuditTarget::Command(c) => return self.validate_command(c),
        };
        if matches!(self.claim.epsilon, ClaimedEpsilon::Trainer(_)) {
            return Err(Error::invalid(
                "claim.epsilon",
                "trainer",
                "is for external trainers (kind = \"command\"); dpaudit's own trainer is claimed with \"accountant\" or a number",
            ));
        }
        let pos = |name: &'static str, v: f64| -> Result<()> {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::invalid(name, v, "must be a finite number > 0"))
            }
        };
        pos("target.lot_size", t.lot_size)?;
        pos("target.noise_multiplier", t.noise_multiplier)?;
        pos("target.max_grad_norm", t.max_grad_norm)?;
        pos("target.lr", t.lr)?;
        pos("canary.norm", self.canary.norm)?;
        if t.steps == 0 {
            return Err(Error::invalid("target.steps", 0, "must be at least 1"));
        }
        if t.train_examples == Some(0) {
            return Err(Error::invalid("target.train_examples", 0, "must be at least 1"));
        }
        if !["sgd", "momentum", "adam"].contains(&t.optimizer.as_str()) {
            return Err(Error::invalid("target.optimizer", &t.optimizer, "must be sgd, momentum or adam"));
        }
        match &t.gan {
            Some(g) => {
                if t.model != "dpgan" {
                    return Err(Error::invalid(
                        "target.model",
                        &t.model,
                        "must be \"dpgan\" with a [target.gan] section",
                    ));
                }
                if self.canary.kind.is_gradient() {
                    return Err(Error::invalid("canary.kind", format!("{:?}", self.canary.kind), "GAN audits use an input canary (scored by the discriminator's margin on it, black-box, or by the discriminator's weight change along the canary's direction, white-box)"));
                }
                if self.attack.threshold == ThresholdChoice::FromClaim {
                    return Err(Error::invalid(
                        "attack.threshold",
                        "from-claim",
                        "GAN scores are not in N(0, 1) units: use held-out or bonferroni",
                    ));
                }
                if g.n_critic == 0 || !t.steps.is_multiple_of(u64::from(g.n_critic)) {
                    return Err(Error::invalid(
                        "target.steps",
                        t.steps,
                        format!("must be a positive multiple of gan.n_critic = {}", g.n_critic),
                    ));
                }
                if g.score_draws == 0
                    || !(g.g_lr > 0.0 && g.g_lr.is_finite())
                    || g.z_dim < 1
                    || g.g_width < 1
                    || g.d_width < 1
                {
                    return Err(Error::invalid(
                        "target.gan",
                        format!("{g:?}"),
                        "score_draws, g_lr, z_dim and widths must be positive",
                    ));
                }
                if self.attack.mode != AuditMode::Replay {
                    return Err(Error::invalid("attack.mode", "one-run", "GAN audits replay K trainings per side"));
                }
            }
            None => {
                // Every check a training recipe gets (the model among them).
                t.recipe()?.validate()?;
                if !crate::train::models::trains_on_pixels(&t.model) {
                    return Err(Error::invalid("target.model", &t.model, "audits replay DP-SGD on the raw pixels and do not run the model's DP-PCA or scattering front end; audit a network on the raw pixels (e.g. mlp) instead"));
                }
            }
        }
        self.validate_attack()?;
        let a = &self.attack;
        if t.gan.is_none() && self.canary.kind.is_gradient() != (a.threat_model == ThreatModel::WhiteBox) {
            return Err(Error::invalid(
                "canary.kind",
                format!("{:?} with a {:?} attack", self.canary.kind, a.threat_model),
                "gradient canaries (dirac, random-direction) go with white-box audits, input canaries with black-box ones",
            ));
        }
        if t.gan.is_none() && a.threat_model == ThreatModel::WhiteBox && t.optimizer != "sgd" {
            return Err(Error::invalid(
                "target.optimizer",
                &t.optimizer,
                "white-box audits read the gradients back from the iterates, which needs plain sgd",
            ));
        }
        if a.mode == AuditMode::OneRun {
            if self.canary.kind != CanaryKind::Dirac {
                return Err(Error::invalid(
                    "attack.mode",
                    "one-run",
                    "needs Dirac gradient canaries (one null coordinate each)",
                ));
            }
            if a.canaries < 2 || a.guesses < 2 || a.guesses > a.canaries {
                return Err(Error::invalid(
                    "attack.canaries / attack.guesses",
                    format!("{} / {}", a.canaries, a.guesses),
                    "need 2 <= guesses <= canaries",
                ));
            }
        }
        if a.threshold == ThresholdChoice::FromClaim && a.threat_model != ThreatModel::WhiteBox {
            return Err(Error::invalid(
                "attack.threshold",
                "from-claim",
                "needs a white-box gradient canary (scores in N(0, 1) units)",
            ));
        }
        Ok(())
    }

    /// The checks of `[claim]` and `[attack]` that do not depend on the target.
    fn validate_attack(&self) -> Result<()> {
        if let ClaimedEpsilon::Explicit(e) = self.claim.epsilon {
            if !(e >= 0.0 && e.is_finite()) {
                return Err(Error::invalid(
                    "claim.epsilon",
                    e,
                    "must be a finite number >= 0, \"accountant\" or \"trainer\"",
                ));
            }
        }
        if !["pld", "rdp"].contains(&self.claim.accountant.as_str()) {
            return Err(Error::invalid("claim.accountant", &self.claim.accountant, "must be pld or rdp"));
        }
        crate::accounting::validate_delta(self.claim.delta)?;
        let a = &self.attack;
        if !(2..=MAX_RUNS_PER_SIDE).contains(&a.runs_per_side) {
            return Err(Error::invalid(
                "attack.runs_per_side",
                a.runs_per_side,
                format!("must be between 2 and {MAX_RUNS_PER_SIDE} (trainings per side)"),
            ));
        }
        if !(a.confidence > 0.0 && a.confidence < 1.0) {
            return Err(Error::invalid("attack.confidence", a.confidence, "must be in (0, 1)"));
        }
        if !(a.held_out_fraction > 0.0 && a.held_out_fraction < 1.0) {
            return Err(Error::invalid("attack.held_out_fraction", a.held_out_fraction, "must be in (0, 1)"));
        }
        Ok(())
    }

    /// Checks an external trainer's spec: a command line, its placeholders for its mode,
    /// workers, timeout, examples, an input-space canary, and an attack that fits scores of
    /// unknown scale (no threshold fixed from the claim, no one-run audit).
    fn validate_command(&self, c: &CommandTarget) -> Result<()> {
        c.validate()?;
        if self.canary.kind.is_gradient() {
            return Err(Error::invalid(
                "canary.kind",
                format!("{:?}", self.canary.kind),
                "an external trainer gets only datasets, so its canary must be an input-space example: blank, mislabelled or out-of-distribution",
            ));
        }
        if self.attack.mode != AuditMode::Replay {
            return Err(Error::invalid(
                "attack.mode",
                "one-run",
                "external trainers are audited by replay (K runs per side); one-run audits plant gradient canaries",
            ));
        }
        if self.attack.threshold == ThresholdChoice::FromClaim {
            return Err(Error::invalid(
                "attack.threshold",
                "from-claim",
                "an external trainer's statistics are not in N(0, 1) units: use held-out or bonferroni",
            ));
        }
        self.validate_attack()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[target]
dataset = "fixture"
train_examples = 100
model = "logreg"
lot_size = 100
steps = 3
noise_multiplier = 2.0
max_grad_norm = 1.0
lr = 1.0
[claim]
epsilon = "accountant"
delta = 1e-5
[canary]
kind = "dirac"
[attack]
threat_model = "white-box"
runs_per_side = 10
threshold = "from-claim"
"#;

    #[test]
    fn parses_and_rejects() {
        let s = AuditSpec::from_toml(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(s.claim.epsilon, ClaimedEpsilon::Accountant(AccountantWord::Accountant));
        assert_eq!(s.canary.norm, 1.0);
        let explicit = GOOD.replace("epsilon = \"accountant\"", "epsilon = 2.5");
        assert_eq!(
            AuditSpec::from_toml(&explicit, Path::new("t")).unwrap().claim.epsilon,
            ClaimedEpsilon::Explicit(2.5)
        );
        for (from, to) in [
            ("steps = 3", "steps = 0"),
            ("noise_multiplier = 2.0", "noise_multiplier = -1.0"),
            ("kind = \"dirac\"", "kind = \"blank\""),
            ("model = \"logreg\"", "model = \"resnet\""),
            ("model = \"logreg\"", "model = \"abadi-pca\""),
            ("epsilon = \"accountant\"", "epsilon = \"whatever\""),
            ("runs_per_side = 10", "runs_per_side = 10\nbogus = 1"),
            ("runs_per_side = 10", "runs_per_side = 1000000000"),
            ("runs_per_side = 10", "runs_per_side = 1"),
            ("lr = 1.0", "lr = 1.0\noptimizer = \"adam\""),
        ] {
            let bad = GOOD.replace(from, to);
            assert!(AuditSpec::from_toml(&bad, Path::new("t")).is_err(), "{to}");
        }
        let f = GOOD.replace("lr = 1.0", "lr = 1.0\ninject_fault = \"skip-noise:2\"");
        assert_eq!(
            AuditSpec::from_toml(&f, Path::new("t")).unwrap().built_in().unwrap().inject_fault,
            Some(Fault::SkipNoise(2))
        );
    }
}

#[cfg(test)]
mod digest_pins {
    use super::*;

    /// The digests of the shipped specs, pinned before command targets were added: a built-in
    /// target must serialise exactly as before, or every existing audit folder stops resuming.
    #[test]
    fn shipped_spec_digests_are_unchanged() {
        for (file, want) in [
            ("audits/blackbox-blank.toml", "0a16dfaba6aaa386d314e2e21a3f2310e9680f83c10a7e1b10a4b0a062784090"),
            ("audits/dirac-eps2.toml", "fad3ed22311832b18462ff29c114cd1ab672d7b6ce8b4c8f58dbf6a85c17d50e"),
            ("audits/noise-layer-gan.toml", "ba1dca4e1fc16dd463e1bf67c22323d5edade76fd6e4b8e7f5bacd4735d278ca"),
        ] {
            let spec = AuditSpec::load(Path::new(file)).unwrap();
            assert_eq!(spec.digest(), want, "{file}");
        }
    }
}

#[cfg(test)]
mod command_targets {
    use super::*;

    const COMMAND: &str = r#"
name = "ext"
[target]
kind = "command"
mode = "worker"
argv = ["python3", "train.py", "--worker"]
dataset = "fixture"
train_examples = 200
workers = 2
timeout_seconds = 30
[target.options]
steps = 20
lr = 0.5
nested = { a = [1, 2] }
[claim]
epsilon = "trainer"
delta = 1e-5
[canary]
kind = "mislabelled"
label = 3
[attack]
threat_model = "black-box"
statistic = "select"
runs_per_side = 100
"#;

    #[test]
    fn command_targets_parse_and_round_trip() {
        let s = AuditSpec::from_toml(COMMAND, Path::new("t")).unwrap();
        let c = s.command().unwrap();
        assert_eq!((c.mode, c.workers, c.deterministic), (CommandMode::Worker, 2, false));
        assert_eq!(c.options["nested"]["a"][1], 2);
        assert_eq!(s.claim.epsilon, ClaimedEpsilon::Trainer(TrainerWord::Trainer));
        assert!(s.built_in().is_err());
        // spec.json and audit.json hold the spec as JSON: it reads back identically, `kind` first.
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""target":{"kind":"command""#), "{json}");
        let back: AuditSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.digest(), s.digest());
    }

    #[test]
    fn command_targets_are_checked_before_any_run() {
        for (from, to) in [
            ("kind = \"command\"", "kind = \"shell\""),
            ("kind = \"mislabelled\"", "kind = \"dirac\""),
            ("kind = \"mislabelled\"", "kind = \"random-direction\""),
            ("\"--worker\"]", "\"--out\", \"{out}\"]"),
            ("argv = [\"python3\", \"train.py\", \"--worker\"]", "argv = []"),
            ("workers = 2", "workers = 0"),
            ("timeout_seconds = 30", "timeout_seconds = 0"),
            ("train_examples = 200", "train_examples = 0"),
            ("train_examples = 200", "train_examples = 200\nmodel = \"mlp\""),
            ("statistic = \"select\"", "threshold = \"from-claim\""),
            ("mode = \"worker\"", "mode = \"forever\""),
            ("runs_per_side = 100", "runs_per_side = 1"),
        ] {
            let bad = COMMAND.replace(from, to);
            assert_ne!(bad, COMMAND, "{from}");
            let err = AuditSpec::from_toml(&bad, Path::new("t"));
            assert!(err.is_err(), "accepted {to}");
        }
        let err = AuditSpec::from_toml(&COMMAND.replace("kind = \"mislabelled\"", "kind = \"dirac\""), Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("input-space"), "{err}");
        // Placeholders are for once mode.
        let once = COMMAND.replace("mode = \"worker\"", "mode = \"once\"").replace("\"--worker\"]", "\"{request}\"]");
        assert!(AuditSpec::from_toml(&once, Path::new("t")).is_ok());
    }

    #[test]
    fn the_trainer_claim_is_for_command_targets_only() {
        let built_in = r#"
name = "t"
[target]
dataset = "fixture"
model = "logreg"
lot_size = 100
steps = 3
noise_multiplier = 2.0
max_grad_norm = 1.0
lr = 1.0
[claim]
epsilon = "trainer"
delta = 1e-5
[canary]
kind = "blank"
[attack]
threat_model = "black-box"
runs_per_side = 10
"#;
        let err = AuditSpec::from_toml(built_in, Path::new("t")).unwrap_err().to_string();
        assert!(err.contains("external trainers"), "{err}");
    }
}
