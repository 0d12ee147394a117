//! Typed, versioned manifests: what `metrics.json` (of `dpaudit train`, `dpaudit gan train` and
//! `dpaudit import`) and `release.json` (of `dpaudit gan sample`) hold. The writers serialise these
//! types and every reader parses them, so a field has one name in one place. `audit.json` is
//! `dpaudit::audit::engine::AuditReport` (audit types, outside this layer); it carries the same
//! [`SCHEMA_VERSION`] and its readers check it with [`check_schema_version`].
//!
//! # Versions
//! Every manifest is written with `schema_version` ([`SCHEMA_VERSION`]). A file without it was
//! written before dpaudit recorded it and is read as version 1, which has the same fields. Fields
//! are added without changing the version, and a reader ignores fields it does not know, so an
//! older dpaudit still reads a newer file of the same version; a file of a higher version is
//! refused with a message saying so ([`check_schema_version`]).
//!
//! # Lenient reading
//! dpaudit's writers always write every field. On read, the fields later versions added are
//! optional (`Option`), as are those hand-made run folders lack; a reader that needs one says so
//! when it is missing. Nothing here uses libtorch: the trainers' own configuration types appear
//! as a type parameter (`TrainMetrics<TrainConfig>` when written; [`TrainConfigRecord`], the
//! fields readers use, when read).
use crate::accounting::Phase;
use crate::error::{Error, Result};
use crate::imported::ImportedProvenance;
use crate::noise_seeding::NoiseSeeding;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The manifest schema version this dpaudit writes, and the highest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The version of a file that does not state one (written before dpaudit recorded it).
pub fn unversioned() -> u32 {
    1
}

/// The ledger label of the DP-PCA step of an `abadi-pca` run (its sigma is `pca.noise_multiplier`
/// of `metrics.json`, not the training noise multiplier).
pub const DP_PCA_LEDGER_LABEL: &str = "dp-pca";

/// Refuses a manifest whose `schema_version` this dpaudit does not read.
///
/// # Errors
/// [`Error::Data`] naming `path` for version 0 or a version above [`SCHEMA_VERSION`].
pub fn check_schema_version(version: u32, path: &Path) -> Result<()> {
    if version == 0 || version > SCHEMA_VERSION {
        return Err(Error::data(
            path,
            format!(
                "schema_version {version}: this dpaudit reads versions 1 to {SCHEMA_VERSION} (a newer dpaudit wrote the file; use that version)"
            ),
        ));
    }
    Ok(())
}

/// Writes a manifest as indented JSON, atomically ([`crate::durable::write_atomically`]).
///
/// # Errors
/// I/O errors; [`Error::Data`] if the value does not serialise.
pub fn write_manifest<T: Serialize>(path: &Path, manifest: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::data(path, e.to_string()))?;
    crate::durable::write_atomically(path, &json)
}

/// Reads at most `max_bytes` of `path`, parses them as `T` and checks the schema version.
fn read_versioned<T: DeserializeOwned>(path: &Path, what: &str, version: impl Fn(&T) -> u32) -> Result<(T, Vec<u8>)> {
    let bytes = crate::durable::read_at_most(path, crate::durable::MAX_CERTIFICATE_BYTES)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let value: T = serde_json::from_slice(&bytes).map_err(|e| Error::data(path, format!("not {what}: {e}")))?;
    check_schema_version(version(&value), path)?;
    Ok((value, bytes))
}

/// `null` (how serde_json writes a non-finite number) read as `f64::INFINITY`: for an epsilon,
/// the safe reading of a number that was not finite.
fn f64_or_infinity<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// `null` (how serde_json writes NaN) read as `f64::NAN`.
fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A present field, `null` included: `Some(None)` for `null`, `None` (by `serde(default)`) when
/// the field is absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// One accountant's epsilon, named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountedEpsilon {
    /// `rdp` or `pld`.
    pub accountant: String,
    /// The epsilon at `delta` (a non-finite one is written `null` and read as infinity).
    #[serde(deserialize_with = "f64_or_infinity")]
    pub epsilon: f64,
    /// The delta.
    pub delta: f64,
    /// How it was obtained (order and conversion for RDP, discretisation for PLD), as the
    /// accountant reports it.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// How a run's noise was seeded, as `metrics.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordedSeeding {
    /// From the OS CSPRNG.
    Csprng,
    /// From an explicit seed: reproducible noise, not fit for release.
    Seeded,
    /// Not known (steps recorded before dpaudit recorded it, or a value this dpaudit does not
    /// know); `cert sign` treats it as seeded.
    #[serde(other)]
    Unknown,
}

impl RecordedSeeding {
    /// The seeding, when known.
    pub fn known(self) -> Option<NoiseSeeding> {
        match self {
            RecordedSeeding::Csprng => Some(NoiseSeeding::Csprng),
            RecordedSeeding::Seeded => Some(NoiseSeeding::Seeded),
            RecordedSeeding::Unknown => None,
        }
    }

    /// `csprng`, `seeded` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedSeeding::Csprng => "csprng",
            RecordedSeeding::Seeded => "seeded",
            RecordedSeeding::Unknown => "unknown",
        }
    }
}

impl From<Option<NoiseSeeding>> for RecordedSeeding {
    fn from(s: Option<NoiseSeeding>) -> Self {
        match s {
            Some(NoiseSeeding::Csprng) => RecordedSeeding::Csprng,
            Some(NoiseSeeding::Seeded) => RecordedSeeding::Seeded,
            None => RecordedSeeding::Unknown,
        }
    }
}

/// An injected fault as `metrics.json` or `checkpoint.json` records it (`no-clip`,
/// `skip-noise:K`, ...). Any non-null JSON value reads as a fault (hand-made files may hold an
/// object); its text is the value's JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RecordedFault(pub String);

impl<'de> Deserialize<'de> for RecordedFault {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(RecordedFault(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

impl std::fmt::Display for RecordedFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An update rule or learning-rate schedule as recorded: its `kind` and its numeric parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindRecord {
    /// `sgd`, `momentum`, `adam`; `constant`, `step`, `cosine`, `linear`.
    pub kind: String,
    /// Its parameters (`momentum`, `beta1`, `every`, ...).
    #[serde(flatten)]
    pub parameters: BTreeMap<String, serde_json::Value>,
}

/// The trainer's configuration in a run's `metrics.json` (and `checkpoint.json`), as readers see
/// it: the fields of `crate::train::dpsgd::TrainConfig` and of a DP-GAN's `GanConfig` that
/// reports and cross-checks use. Every field is optional (imports record only `model` and
/// `private`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfigRecord {
    /// Model name (for an import: who trained it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Expected lot size L.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lot_size: Option<f64>,
    /// Noise multiplier sigma of the training steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_multiplier: Option<f64>,
    /// Clipping norm C.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    /// Largest number of examples pushed through the network at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical_batch: Option<u64>,
    /// Update rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<KindRecord>,
    /// Base learning rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Learning-rate schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<KindRecord>,
    /// Whether the run was private.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    /// A DP-GAN's design (`real-only`, `joint`, `noise-layer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub design: Option<String>,
    /// A DP-GAN discriminator's conditioning (`label-planes`, `classifier`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditioning: Option<String>,
    /// An injected fault recorded in the configuration (hand-made and older files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject_fault: Option<RecordedFault>,
}

/// What an audit of a recipe and a run must share for the audit to count for the run: the
/// model, the noise multiplier sigma and the clipping norm C (the mechanism the audit tested).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditedMechanism {
    /// Model name.
    pub model: String,
    /// sigma.
    pub noise_multiplier: f64,
    /// C.
    pub max_grad_norm: f64,
}

impl std::fmt::Display for AuditedMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} with sigma = {}, C = {}", self.model, self.noise_multiplier, self.max_grad_norm)
    }
}

impl TrainConfigRecord {
    /// The mechanism the run trained with (`None` when the file lacks the model, sigma or C).
    pub fn mechanism(&self) -> Option<AuditedMechanism> {
        Some(AuditedMechanism {
            model: self.model.clone()?,
            noise_multiplier: self.noise_multiplier?,
            max_grad_norm: self.max_grad_norm?,
        })
    }
}

/// The `[target]` of the spec an `audit.json` records (`spec.target`): the fields of a built-in
/// target that reports compare with a run. Every field is optional (an external trainer's
/// target has none of them); unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditTargetRecord {
    /// Model name.
    pub model: Option<String>,
    /// Dataset name or folder.
    pub dataset: Option<String>,
    /// Noise multiplier sigma.
    pub noise_multiplier: Option<f64>,
    /// Clipping norm C.
    pub max_grad_norm: Option<f64>,
    /// Expected lot size.
    pub lot_size: Option<f64>,
    /// Steps of each replayed training.
    pub steps: Option<f64>,
}

impl AuditTargetRecord {
    /// Reads `spec.target` of an `audit.json`: each field absent or not of its type is `None`.
    pub fn from_value(target: &serde_json::Value) -> Self {
        fn field<T: DeserializeOwned>(target: &serde_json::Value, key: &str) -> Option<T> {
            target.get(key).and_then(|v| T::deserialize(v).ok())
        }
        AuditTargetRecord {
            model: field(target, "model"),
            dataset: field(target, "dataset"),
            noise_multiplier: field(target, "noise_multiplier"),
            max_grad_norm: field(target, "max_grad_norm"),
            lot_size: field(target, "lot_size"),
            steps: field(target, "steps"),
        }
    }

    /// The mechanism the audit tested (`None` when the target lacks the model, sigma or C).
    pub fn mechanism(&self) -> Option<AuditedMechanism> {
        Some(AuditedMechanism {
            model: self.model.clone()?,
            noise_multiplier: self.noise_multiplier?,
            max_grad_norm: self.max_grad_norm?,
        })
    }

    /// Whether an audit of this target counts for a run trained with `run`: `Some(true)` when the
    /// model, sigma and C are equal, `Some(false)` when any differs, `None` when either side does
    /// not record all three.
    pub fn same_mechanism_as(&self, run: &TrainConfigRecord) -> Option<bool> {
        Some(self.mechanism()? == run.mechanism()?)
    }
}

/// What `metrics.json` says about the DP-PCA projection of an `abadi-pca` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaReport {
    /// Projection dimension k.
    pub dims: usize,
    /// sigma_p of the (q = 1, sigma_p, 1 step) phase.
    pub noise_multiplier: f64,
    /// `computed` in this invocation, or `loaded` from `pca.safetensors` (a resume).
    pub source: String,
    /// Whether the components were whitened (`--pca-whiten`, post-processing of the release).
    #[serde(default)]
    pub whitened: bool,
    /// SHA-256 of `pca.safetensors`.
    pub sha256: String,
}

/// PGD's parameters as `metrics.json` records them (adversarial training).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PgdRecord {
    /// Radius of the L-infinity ball, in pixel units of [0, 1].
    pub epsilon: f64,
    /// Gradient-sign steps.
    pub steps: u32,
    /// Step size.
    pub step_size: f64,
}

/// `metrics.json` of `dpaudit train`. `C` is the trainer's configuration: the full
/// `TrainConfig` when written, [`TrainConfigRecord`] when read. Every dpaudit version wrote the
/// required fields; the `Option` ones are absent from older (or hand-made) files, and the writer
/// sets every one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainMetrics<C = TrainConfigRecord> {
    /// The manifest's schema version ([`SCHEMA_VERSION`]; 1 when absent).
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    /// `dpaudit` version.
    pub tool_version: String,
    /// Accuracy on the test set (NaN is written `null`).
    #[serde(deserialize_with = "f64_or_nan")]
    pub test_accuracy: f64,
    /// Accuracy on the validation examples held out of the training set (`--validation N`).
    #[serde(default)]
    pub validation_accuracy: Option<f64>,
    /// Validation examples held out (the last ones of the training set; absent in older files,
    /// which held none out).
    #[serde(default)]
    pub validation_examples: usize,
    /// The DP-PCA projection (abadi-pca).
    #[serde(default)]
    pub pca: Option<PcaReport>,
    /// The fixed feature map in front of the model, if any (the `scatter-` models): what it is and
    /// why it costs no privacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// The decay of the exponential moving average of the parameters that was evaluated and saved
    /// (`None`: the last iterate). Post-processing of the noisy iterates: no privacy cost.
    #[serde(default)]
    pub parameter_averaging: Option<f64>,
    /// Epsilon from each accountant, computed from the ledger (empty without privacy).
    #[serde(default)]
    pub epsilons: Vec<AccountedEpsilon>,
    /// Accountants that failed on the ledger's phases, with the error (absent when none did).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accountant_errors: BTreeMap<String, String>,
    /// Whether the run was private.
    pub private: bool,
    /// The sampling scheme (`poisson`).
    pub sampling: String,
    /// The phases read back from the ledger (absent in hand-made files: empty, and then not
    /// cross-checked).
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// Training steps applied.
    pub steps: u64,
    /// The sampling rate q of the training steps.
    pub sampling_rate: f64,
    /// How sigma was chosen, in words (kept for older readers; the same as data in
    /// `noise_multiplier_provenance`).
    pub noise_multiplier_source: String,
    /// How sigma was chosen, as data: given, or calibrated (target, accountant, delta, the
    /// accountant's epsilon at the result). Absent without privacy and in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_multiplier_provenance: Option<crate::accounting::calibration::NoiseProvenance>,
    /// All parameters.
    pub config: C,
    /// Epochs asked for.
    pub epochs: f64,
    /// Seed of this invocation: `Some(None)` is `null` (OS CSPRNG), `None` an absent field.
    /// Operator's record only: reports never print it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub seed: Option<Option<u64>>,
    /// How the noise of the run's ledger steps was seeded (from the ledger: a resume that mixes
    /// the two says `seeded`).
    #[serde(default)]
    pub noise_seeding: Option<RecordedSeeding>,
    /// The folder the training data was read from, when it was read from files.
    #[serde(default)]
    pub train_data_dir: Option<String>,
    /// Wall time of this invocation, seconds.
    pub wall_seconds: f64,
    /// Training set name and size.
    pub train_dataset: String,
    /// Training examples (after the validation examples were held out).
    pub train_examples: usize,
    /// The injected fault, if any (`dpaudit cert sign` refuses such runs).
    #[serde(default)]
    pub inject_fault: Option<RecordedFault>,
    /// Adversarial training's PGD parameters (also used to measure robust accuracy).
    #[serde(default)]
    pub adversarial: Option<PgdRecord>,
    /// Test accuracy on PGD adversarial examples (adversarial runs).
    #[serde(default)]
    pub robust_test_accuracy: Option<f64>,
    /// The public batch behind public-data BatchNorm: name, size and content SHA-256.
    #[serde(default)]
    pub public_norm_data: Option<String>,
    /// SHA-256 of the training data's content (pixels and labels).
    pub train_data_sha256: String,
    /// SHA-256 of `model.safetensors`.
    pub model_sha256: String,
    /// The device this invocation trained on (`cpu`, `cuda:N`); files written before dpaudit
    /// recorded it have none (they ran on the CPU).
    #[serde(default)]
    pub device: Option<String>,
    /// The per-example engine's CPU-only routes this run skipped on its device (absent on the
    /// CPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_only_routes_skipped: Vec<String>,
}

/// One epoch's mean losses of a DP-GAN run (`null`, how NaN is written, reads as NaN).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLosses {
    /// 1-based epoch.
    pub epoch: u64,
    /// Discriminator steps so far.
    pub discriminator_steps: u64,
    /// Generator steps so far.
    pub generator_steps: u64,
    /// Mean generator loss over the epoch's generator steps.
    #[serde(deserialize_with = "f64_or_nan")]
    pub generator_loss: f64,
    /// Mean discriminator loss on the real examples of the epoch's lots (private data: see
    /// [`GanMetrics::losses_note`]).
    #[serde(deserialize_with = "f64_or_nan")]
    pub discriminator_real_loss: f64,
    /// Mean discriminator loss on fakes.
    #[serde(deserialize_with = "f64_or_nan")]
    pub discriminator_fake_loss: f64,
    /// Mean fraction of clipped units (NaN for the noise-layer design).
    #[serde(deserialize_with = "f64_or_nan")]
    pub clipped_fraction: f64,
    /// The sample grid of the epoch (rows: labels 0..9).
    #[serde(default)]
    pub grid: String,
}

/// `metrics.json` of `dpaudit gan train`. `C` is the GAN's configuration: `GanConfig` when
/// written, [`TrainConfigRecord`] when read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GanMetrics<C = TrainConfigRecord> {
    /// The manifest's schema version ([`SCHEMA_VERSION`]; 1 when absent).
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    /// `dpaudit` version.
    pub tool_version: String,
    /// The design (`real-only`, `joint`, `noise-layer`).
    pub design: String,
    /// Whether the epsilons are proven by dpaudit or claimed by the method's authors.
    pub epsilon_status: String,
    /// Epsilon per accountant, from the ledger.
    pub epsilons: Vec<AccountedEpsilon>,
    /// Sampling scheme of the discriminator's lots.
    pub sampling: String,
    /// The sampling rate q.
    pub sampling_rate: f64,
    /// The phases read back from the ledger.
    pub phases: Vec<Phase>,
    /// Ledger entries (= discriminator steps, n_critic included).
    pub ledger_steps: u64,
    /// Discriminator steps taken.
    pub discriminator_steps: u64,
    /// Generator steps taken (free: post-processing).
    pub generator_steps: u64,
    /// How sigma was chosen, in words (kept for older readers).
    pub noise_multiplier_source: String,
    /// How sigma was chosen, as data: given, or calibrated (target, accountant, delta, the
    /// accountant's epsilon at the result). Absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_multiplier_provenance: Option<crate::accounting::calibration::NoiseProvenance>,
    /// The configuration.
    pub config: C,
    /// Epochs asked for.
    pub epochs: f64,
    /// Seed (null: OS CSPRNG). Operator's record only: reports never print it.
    pub seed: Option<u64>,
    /// How the discriminator's noise was seeded (absent in older runs).
    #[serde(default)]
    pub noise_seeding: Option<RecordedSeeding>,
    /// Per-epoch losses.
    pub per_epoch: Vec<EpochLosses>,
    /// What the losses are.
    pub losses_note: String,
    /// Wall time, seconds.
    pub wall_seconds: f64,
    /// Training set name.
    pub train_dataset: String,
    /// Training examples.
    pub train_examples: usize,
    /// SHA-256 of the training data's content.
    pub train_data_sha256: String,
    /// SHA-256 of `generator.safetensors`.
    pub generator_sha256: String,
    /// SHA-256 of `discriminator.safetensors`.
    pub discriminator_sha256: String,
    /// The figure of samples beside their nearest training images (shows private images).
    pub nearest_figure: String,
    /// The device the run trained on (`cpu`, `cuda:N`; absent in older runs).
    #[serde(default)]
    pub device: Option<String>,
}

/// The configuration an import records: who trained the model, and that it was private.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportedConfig {
    /// `trained by <trainer> (imported; not dpaudit's training code)`.
    pub model: String,
    /// Always true: only private runs are imported.
    pub private: bool,
}

/// `metrics.json` of `dpaudit import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportedMetrics {
    /// The manifest's schema version ([`SCHEMA_VERSION`]; 1 when absent).
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    /// Always true.
    pub private: bool,
    /// Steps of the privacy history.
    pub steps: u64,
    /// SHA-256 of the training data's content (read by dpaudit, or stated by the importer).
    pub train_data_sha256: String,
    /// The training data's name, or that dpaudit did not read it.
    pub train_dataset: String,
    /// Training examples, when dpaudit read the data.
    pub train_examples: Option<usize>,
    /// SHA-256 of `model.safetensors`.
    pub model_sha256: String,
    /// How the trainer's noise was drawn (`null`: not stated).
    pub noise_seeding: Option<NoiseSeeding>,
    /// Always null: dpaudit injected nothing.
    pub inject_fault: Option<RecordedFault>,
    /// Who trained it.
    pub config: ImportedConfig,
    /// Where the run came from.
    pub imported: ImportedProvenance,
}

/// A run's `metrics.json`, whichever command wrote it: a DP-GAN run has `design`, an import has
/// `imported`, anything else is a training run.
#[derive(Debug, Clone)]
pub enum RunMetrics {
    /// `dpaudit train` (or a hand-made run folder).
    Train(TrainMetrics),
    /// `dpaudit gan train`.
    Gan(GanMetrics),
    /// `dpaudit import`.
    Imported(ImportedMetrics),
}

impl RunMetrics {
    /// Parses the bytes of a run's `metrics.json` (`path` names it in errors).
    ///
    /// # Errors
    /// [`Error::Data`] for bytes that are not JSON, not the manifest of any run, or of a schema
    /// version this dpaudit does not read.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::data(path, format!("not JSON: {e}")))?;
        let has = |k: &str| value.get(k).is_some_and(|v| !v.is_null());
        let bad = |what: &str, e: serde_json::Error| Error::data(path, format!("not {what}'s metrics.json: {e}"));
        let metrics = if has("imported") {
            RunMetrics::Imported(serde_json::from_value(value).map_err(|e| bad("an imported run", e))?)
        } else if has("design") {
            RunMetrics::Gan(serde_json::from_value(value).map_err(|e| bad("a DP-GAN run", e))?)
        } else if value.is_object() {
            RunMetrics::Train(serde_json::from_value(value).map_err(|e| bad("a training run", e))?)
        } else {
            return Err(Error::data(path, "not a run's metrics.json: not a JSON object"));
        };
        check_schema_version(metrics.schema_version(), path)?;
        Ok(metrics)
    }

    /// Reads `dir/metrics.json`; also returns its bytes (for hashing).
    ///
    /// # Errors
    /// I/O errors, and as [`RunMetrics::parse`].
    pub fn read(dir: &Path) -> Result<(Self, Vec<u8>)> {
        let path = dir.join(super::METRICS_FILE);
        let bytes = crate::durable::read_at_most(&path, crate::durable::MAX_CERTIFICATE_BYTES)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Ok((Self::parse(&bytes, &path)?, bytes))
    }

    /// The file's schema version.
    pub fn schema_version(&self) -> u32 {
        match self {
            RunMetrics::Train(m) => m.schema_version,
            RunMetrics::Gan(m) => m.schema_version,
            RunMetrics::Imported(m) => m.schema_version,
        }
    }

    /// An imported run's provenance.
    pub fn imported(&self) -> Option<&ImportedProvenance> {
        match self {
            RunMetrics::Imported(m) => Some(&m.imported),
            _ => None,
        }
    }

    /// The fields every kind of run may have, in one flat view (absent fields `None`).
    pub fn summary(&self) -> RunSummary {
        match self {
            RunMetrics::Train(m) => {
                let config = m.config.clone();
                RunSummary {
                    schema_version: m.schema_version,
                    tool_version: Some(m.tool_version.clone()),
                    test_accuracy: Some(m.test_accuracy).filter(|a| !a.is_nan()),
                    robust_test_accuracy: m.robust_test_accuracy,
                    private: Some(m.private),
                    epsilons: m.epsilons.clone(),
                    steps: Some(m.steps),
                    sampling_rate: Some(m.sampling_rate),
                    phases: Some(m.phases.clone()).filter(|p| !p.is_empty()),
                    pca_noise_multiplier: m.pca.as_ref().map(|p| p.noise_multiplier),
                    noise_multiplier_source: Some(m.noise_multiplier_source.clone()),
                    epochs: Some(m.epochs),
                    seed: m.seed,
                    noise_seeding: m.noise_seeding,
                    train_data_dir: m.train_data_dir.clone(),
                    device: m.device.clone(),
                    validation_examples: Some(m.validation_examples),
                    parameter_averaging: m.parameter_averaging,
                    design: None,
                    train_dataset: Some(m.train_dataset.clone()),
                    train_examples: Some(m.train_examples),
                    inject_fault: m.inject_fault.clone().or_else(|| config.inject_fault.clone()),
                    adversarial: m.adversarial,
                    public_norm_data: m.public_norm_data.clone(),
                    train_data_sha256: Some(m.train_data_sha256.clone()),
                    model_sha256: Some(m.model_sha256.clone()),
                    generator_sha256: None,
                    config,
                }
            }
            RunMetrics::Gan(m) => RunSummary {
                schema_version: m.schema_version,
                tool_version: Some(m.tool_version.clone()),
                private: m.config.private,
                epsilons: m.epsilons.clone(),
                steps: None,
                sampling_rate: Some(m.sampling_rate),
                phases: Some(m.phases.clone()),
                noise_multiplier_source: Some(m.noise_multiplier_source.clone()),
                epochs: Some(m.epochs),
                seed: Some(m.seed),
                noise_seeding: m.noise_seeding,
                device: m.device.clone(),
                design: Some(m.design.clone()),
                train_dataset: Some(m.train_dataset.clone()),
                train_examples: Some(m.train_examples),
                inject_fault: m.config.inject_fault.clone(),
                train_data_sha256: Some(m.train_data_sha256.clone()),
                generator_sha256: Some(m.generator_sha256.clone()),
                config: m.config.clone(),
                ..RunSummary::default()
            },
            RunMetrics::Imported(m) => RunSummary {
                schema_version: m.schema_version,
                private: Some(m.private),
                steps: Some(m.steps),
                noise_seeding: Some(RecordedSeeding::from(m.noise_seeding)),
                train_dataset: Some(m.train_dataset.clone()),
                train_examples: m.train_examples,
                inject_fault: m.inject_fault.clone(),
                train_data_sha256: Some(m.train_data_sha256.clone()),
                model_sha256: Some(m.model_sha256.clone()),
                config: TrainConfigRecord {
                    model: Some(m.config.model.clone()),
                    private: Some(m.config.private),
                    ..TrainConfigRecord::default()
                },
                ..RunSummary::default()
            },
        }
    }
}

/// The fields of any run's `metrics.json` that reports and certificates use, each `None` where
/// the run's kind or the file's age has none ([`RunMetrics::summary`]).
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The file's schema version.
    pub schema_version: u32,
    /// dpaudit version that trained the run.
    pub tool_version: Option<String>,
    /// Test accuracy.
    pub test_accuracy: Option<f64>,
    /// Robust test accuracy (adversarial runs).
    pub robust_test_accuracy: Option<f64>,
    /// Whether the run was private (`private`, else `config.private`).
    pub private: Option<bool>,
    /// The epsilons the run reported.
    pub epsilons: Vec<AccountedEpsilon>,
    /// Training steps the run applied (DP-SGD runs and imports).
    pub steps: Option<u64>,
    /// The sampling rate of the training (or discriminator) steps.
    pub sampling_rate: Option<f64>,
    /// The phases the run read back from its ledger (`None` when it recorded none).
    pub phases: Option<Vec<Phase>>,
    /// sigma_p of an `abadi-pca` run's DP-PCA step.
    pub pca_noise_multiplier: Option<f64>,
    /// How sigma was chosen.
    pub noise_multiplier_source: Option<String>,
    /// Epochs asked for.
    pub epochs: Option<f64>,
    /// Seed: `Some(None)` for `null` (OS CSPRNG), `None` when absent. Never printed.
    pub seed: Option<Option<u64>>,
    /// How the noise was seeded, as recorded.
    pub noise_seeding: Option<RecordedSeeding>,
    /// The folder the training data was read from.
    pub train_data_dir: Option<String>,
    /// The device the run trained on.
    pub device: Option<String>,
    /// Held-out validation examples.
    pub validation_examples: Option<usize>,
    /// The decay of the parameter average.
    pub parameter_averaging: Option<f64>,
    /// A DP-GAN run's design; `None` for other runs.
    pub design: Option<String>,
    /// Training set name.
    pub train_dataset: Option<String>,
    /// Training examples.
    pub train_examples: Option<usize>,
    /// The injected fault (top level, else in the configuration).
    pub inject_fault: Option<RecordedFault>,
    /// PGD parameters (adversarial runs).
    pub adversarial: Option<PgdRecord>,
    /// Public normalisation data, if any.
    pub public_norm_data: Option<String>,
    /// Content hash of the training data.
    pub train_data_sha256: Option<String>,
    /// Hash of `model.safetensors` as the run recorded it.
    pub model_sha256: Option<String>,
    /// Hash of a DP-GAN's `generator.safetensors` as the run recorded it.
    pub generator_sha256: Option<String>,
    /// The trainer's configuration.
    pub config: TrainConfigRecord,
}

impl RunSummary {
    /// The delta the run reported its epsilons at (`None` when it reported none).
    pub fn delta(&self) -> Option<f64> {
        self.epsilons.first().map(|e| e.delta)
    }
}

/// `checkpoint.json` of a training run, as cross-checks read it: the configuration, the steps
/// applied, the injected fault and the noise seeding the run resumes with. Written by
/// `crate::train::dpsgd::DpSgd::checkpoint` (with the sampler and noise-stream state, which no
/// reader outside the trainer uses).
#[derive(Debug, Clone, Deserialize)]
pub struct CheckpointRecord {
    /// The trainer's configuration.
    pub config: TrainConfigRecord,
    /// Steps applied when the checkpoint was taken.
    pub steps: u64,
    /// The injected fault, if any.
    #[serde(default)]
    pub fault: Option<RecordedFault>,
    /// How the noise stream was seeded (absent in older checkpoints).
    #[serde(default)]
    pub noise_seeding: Option<NoiseSeeding>,
}

impl CheckpointRecord {
    /// Reads `dir/checkpoint.json`; `None` when there is none.
    ///
    /// # Errors
    /// I/O errors; [`Error::Data`] for a file that is not a checkpoint pointer.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(super::CHECKPOINT_POINTER);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = crate::durable::read_at_most(&path, crate::durable::MAX_CERTIFICATE_BYTES)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::data(&path, format!("not a checkpoint: {e}")))
    }
}

/// The ledger as a release states it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerSummary {
    /// Recorded steps (every discriminator step).
    pub steps: u64,
    /// Run-length phases (q, sigma, steps).
    pub phases: Vec<Phase>,
    /// The labels of the recorded steps, with counts.
    pub labels: BTreeMap<String, u64>,
    /// SHA-256 of `ledger.jsonl`.
    pub sha256: String,
}

fn one() -> f64 {
    1.0
}

fn last_iterate() -> String {
    "last iterate".into()
}

fn all_generated() -> String {
    "all generated".into()
}

/// `release.json` of `dpaudit gan sample`: a synthetic release's provenance and files. The type
/// parameters are the GAN's own enums when written (`Conditioning`, `Ranking`, `LabelSource`)
/// and their names when read. Fields later versions added have the value older releases had
/// when absent (temperature 1, every generated image kept, the last iterate, the generator's
/// labels, label-plane conditioning).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseManifest<Conditioning = Option<String>, Ranking = String, Labels = Option<String>> {
    /// The manifest's schema version ([`SCHEMA_VERSION`]; 1 when absent).
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    /// `dpaudit` version.
    pub tool_version: String,
    /// The design of the private GAN (`real-only`, `joint`, `noise-layer`).
    pub design: String,
    /// How its discriminator learned the labels (`label-planes` or `classifier`).
    #[serde(default)]
    pub conditioning: Conditioning,
    /// "proven: ..." or the claimed label.
    pub epsilon_status: String,
    /// Epsilon per accountant (from the ledger), at the run's delta.
    pub epsilons: Vec<AccountedEpsilon>,
    /// Sampling scheme of the ledger's steps.
    pub sampling: String,
    /// The ledger.
    pub ledger: LedgerSummary,
    /// SHA-256 of the generator checkpoint the images come from.
    pub generator_sha256: String,
    /// Which generator that checkpoint holds: `last iterate`, or `moving average (decay D)` for a
    /// run trained with `--g-ema D` (post-processing either way).
    #[serde(default = "last_iterate")]
    pub generator: String,
    /// The run folder.
    pub run: String,
    /// Images released.
    pub count: usize,
    /// Images per label (with the generator's labels they cycle 0..9, a public distribution; with
    /// the discriminator's, they are its reading of the images).
    pub class_counts: Vec<usize>,
    /// Seed of the latents (drawn from the OS CSPRNG when not given, recorded here).
    pub seed: u64,
    /// The latents' scale: each is drawn from N(0, 1) and multiplied by this (1: the training
    /// distribution; below 1 trades diversity for typical samples). Post-processing.
    #[serde(default = "one")]
    pub temperature: f64,
    /// How the images were chosen among the generated ones: `all generated` or discriminator
    /// ranking.
    #[serde(default = "all_generated")]
    pub selection: String,
    /// The fraction kept by discriminator ranking (1: every generated image).
    #[serde(default = "one")]
    pub keep: f64,
    /// The score ranking kept the best of (`None` without ranking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_by: Option<Ranking>,
    /// Where the labels come from: `generator` (the label each image was generated for) or
    /// `discriminator` (the final classifier discriminator's argmax over the 10 real classes).
    #[serde(default)]
    pub labels: Labels,
    /// With discriminator labels: the fraction of images whose discriminator label equals the
    /// label it was generated for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_agreement: Option<f64>,
    /// SHA-256 of the discriminator checkpoint that ranked or labelled the images (`None` when it
    /// played no part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discriminator_sha256: Option<String>,
    /// SHA-256 of each released file (release.json itself excluded).
    pub files: BTreeMap<String, String>,
}

impl ReleaseManifest {
    /// Reads `dir/release.json`.
    ///
    /// # Errors
    /// I/O errors; [`Error::Data`] for a file that is not a release manifest or of a schema
    /// version this dpaudit does not read.
    pub fn read(dir: &Path) -> Result<Self> {
        Ok(Self::read_with_bytes(dir)?.0)
    }

    /// As [`ReleaseManifest::read`], with the file's bytes (for hashing).
    ///
    /// # Errors
    /// As [`ReleaseManifest::read`].
    pub fn read_with_bytes(dir: &Path) -> Result<(Self, Vec<u8>)> {
        let path = dir.join(super::RELEASE_FILE);
        read_versioned(&path, "a release.json", |r: &ReleaseManifest| r.schema_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_schema_version_reads_as_version_one_and_a_newer_version_is_refused() {
        let p = Path::new("metrics.json");
        let old =
            br#"{"tool_version": "0.1.0", "test_accuracy": null, "private": true, "sampling": "poisson", "steps": 3,
            "sampling_rate": 0.1, "noise_multiplier_source": "given", "epochs": 1, "wall_seconds": 1,
            "train_dataset": "d", "train_examples": 10,
            "config": {"model": "mlp", "noise_multiplier": 1.1}, "train_data_sha256": "", "model_sha256": "",
            "seed": null, "future_field": [1]}"#;
        let m = RunMetrics::parse(old, p).unwrap();
        assert_eq!(m.schema_version(), 1);
        let s = m.summary();
        assert_eq!((s.private, s.steps, s.config.noise_multiplier), (Some(true), Some(3), Some(1.1)));
        assert_eq!(s.seed, Some(None), "null is recorded, not absent");
        assert_eq!(s.test_accuracy, None, "NaN is written null");
        let mut newer: serde_json::Value = serde_json::from_slice(old).unwrap();
        newer["schema_version"] = 2.into();
        let newer = serde_json::to_vec(&newer).unwrap();
        let e = RunMetrics::parse(&newer, p).unwrap_err().to_string();
        assert!(e.contains("schema_version 2"), "{e}");
    }

    #[test]
    fn faults_and_seedings_read_whatever_was_recorded() {
        let m = RunMetrics::parse(
            br#"{"tool_version": "0.1.0", "test_accuracy": 0.5, "private": false, "sampling": "poisson", "steps": 0,
                "sampling_rate": 0.1, "noise_multiplier_source": "given", "epochs": 1, "wall_seconds": 1,
                "train_dataset": "d", "train_examples": 10,
                "config": {"inject_fault": {"kind": "no_noise"}}, "noise_seeding": "something-new",
                "train_data_sha256": "", "model_sha256": ""}"#,
            Path::new("m"),
        )
        .unwrap()
        .summary();
        assert_eq!(m.inject_fault, Some(RecordedFault(r#"{"kind":"no_noise"}"#.into())));
        assert_eq!(m.noise_seeding, Some(RecordedSeeding::Unknown));
        assert_eq!(m.seed, None);
        let e: AccountedEpsilon =
            serde_json::from_str(r#"{"accountant": "rdp", "epsilon": null, "delta": 1e-5}"#).unwrap();
        assert_eq!(e.epsilon, f64::INFINITY);
    }
}
