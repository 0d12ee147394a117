//! Runs trained elsewhere (Opacus, JAX, TF Privacy, an adapter of `docs/external-trainers.md`),
//! imported into a run folder so that `dpaudit cert sign` and `dpaudit report` can certify and
//! report them.
//!
//! An imported run folder holds the released model, the trainer's privacy history exactly as it
//! was given ([`HISTORY_FILE`], kept byte for byte as evidence), a `ledger.jsonl` transcribed from
//! that history (one line per step, label [`IMPORTED_LABEL`]) and a `metrics.json` whose
//! `imported` block says where it all came from. Epsilon is then recomputed by dpaudit's own
//! accountants from the ledger, never copied from the trainer's claim.
//!
//! What this does not prove: that the trainer did what its history says. dpaudit did not run the
//! training; the history is the trainer's word. Certificates and reports of imported runs say so,
//! and an audit of the trainer (`[target] kind = "command"`) is the evidence that it did.
use crate::accounting::ledger::Ledger;
use crate::accounting::{Phase, SamplingScheme};
use crate::error::{Error, Result};
use crate::noise_seeding::NoiseSeeding;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The trainer's privacy history, copied verbatim into an imported run folder.
pub const HISTORY_FILE: &str = crate::run_folder::HISTORY_FILE;
/// The ledger label of a step transcribed from an imported history.
pub const IMPORTED_LABEL: &str = "imported";
/// Largest history file read (a history is a few lines per phase).
pub const MAX_HISTORY_BYTES: u64 = 16 << 20;
/// Most steps an imported history may hold (one ledger line each).
pub const MAX_IMPORTED_STEPS: u64 = 50_000_000;

/// One phase of a trainer's history: `steps` steps of the Poisson-subsampled Gaussian mechanism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedPhase {
    /// Noise multiplier sigma (noise standard deviation / clipping norm).
    pub noise_multiplier: f64,
    /// Poisson sampling rate q.
    pub sample_rate: f64,
    /// Steps taken with these parameters.
    pub steps: u64,
    /// The clipping norm, when the history gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
}

/// The trainer's own privacy claim, as it stated it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerClaim {
    /// The trainer's epsilon.
    pub epsilon: f64,
    /// Its delta.
    pub delta: f64,
    /// The trainer's accountant (e.g. `rdp`, `prv`).
    pub accountant: String,
}

/// A privacy history read from a file: the protocol's `claim.json`
/// (`{"epsilon", "delta", "accountant", "sampling", "history": [{"noise_multiplier",
/// "sample_rate", "steps"}], "library"}`) or Opacus' accountant history as JSON
/// (`[[noise_multiplier, sample_rate, steps], ...]`, what `json.dumps(accountant.history)` gives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyHistory {
    /// The phases, in order.
    pub phases: Vec<ImportedPhase>,
    /// The trainer's claim, when the file states one.
    pub claim: Option<TrainerClaim>,
    /// The training library, when the file names it (e.g. `opacus 1.6.0`).
    pub library: Option<String>,
    /// How the trainer's noise was drawn, when the file says (`csprng` or `seeded`).
    pub noise_seeding: Option<NoiseSeeding>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimFile {
    #[serde(default)]
    epsilon: Option<f64>,
    #[serde(default)]
    delta: Option<f64>,
    #[serde(default)]
    accountant: Option<String>,
    #[serde(default)]
    sampling: Option<String>,
    history: Vec<ImportedPhase>,
    #[serde(default)]
    library: Option<String>,
    #[serde(default)]
    noise_seeding: Option<NoiseSeeding>,
}

impl PrivacyHistory {
    /// Parses a history file's bytes; `origin` names the file in errors.
    ///
    /// # Errors
    /// [`Error::Data`] for JSON in neither form, a sampling scheme other than Poisson, a phase
    /// with a sample rate outside (0, 1], a noise multiplier that is not a finite number > 0,
    /// zero steps, more than [`MAX_IMPORTED_STEPS`] steps in all, or a claim without its delta.
    pub fn parse(bytes: &[u8], origin: &Path) -> Result<Self> {
        let bad = |why: String| Error::data(origin, why);
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let history = if value.is_array() {
            let rows: Vec<(f64, f64, u64)> = serde_json::from_value(value).map_err(|e| {
                bad(format!("not an accountant history ([[noise_multiplier, sample_rate, steps], ...]): {e}"))
            })?;
            PrivacyHistory {
                phases: rows
                    .into_iter()
                    .map(|(noise_multiplier, sample_rate, steps)| ImportedPhase {
                        noise_multiplier,
                        sample_rate,
                        steps,
                        max_grad_norm: None,
                    })
                    .collect(),
                claim: None,
                library: None,
                noise_seeding: None,
            }
        } else {
            let f: ClaimFile = serde_json::from_value(value)
                .map_err(|e| bad(format!("not a claim.json of docs/external-trainers.md: {e}")))?;
            if let Some(s) = f.sampling.as_deref() {
                if s != "poisson" {
                    return Err(bad(format!(
                        "sampling {s:?}: only Poisson sampling is accounted (its amplification is what the accountants prove)"
                    )));
                }
            }
            let claim = match (f.epsilon, f.delta) {
                (None, _) => None,
                (Some(epsilon), Some(delta)) => {
                    if !(epsilon >= 0.0 && delta > 0.0 && delta < 1.0) {
                        return Err(bad(format!(
                            "the claim (epsilon {epsilon}, delta {delta}) needs epsilon >= 0 and delta in (0, 1)"
                        )));
                    }
                    Some(TrainerClaim { epsilon, delta, accountant: f.accountant.unwrap_or_else(|| "unstated".into()) })
                }
                (Some(_), None) => return Err(bad("states an epsilon without its delta".into())),
            };
            PrivacyHistory { phases: f.history, claim, library: f.library, noise_seeding: f.noise_seeding }
        };
        if history.phases.is_empty() {
            return Err(bad("the history has no phase: nothing was trained privately".into()));
        }
        let mut total = 0u64;
        for (i, p) in history.phases.iter().enumerate() {
            Phase::new(p.sample_rate, p.noise_multiplier, p.steps.max(1))
                .map_err(|e| bad(format!("phase {}: {e}", i + 1)))?;
            if p.steps == 0 {
                return Err(bad(format!("phase {}: zero steps", i + 1)));
            }
            if let Some(c) = p.max_grad_norm {
                if !(c > 0.0 && c.is_finite()) {
                    return Err(bad(format!("phase {}: max_grad_norm {c} must be a finite number > 0", i + 1)));
                }
            }
            total = total.saturating_add(p.steps);
        }
        if total > MAX_IMPORTED_STEPS {
            return Err(bad(format!("{total} steps in all; at most {MAX_IMPORTED_STEPS} are imported")));
        }
        Ok(history)
    }

    /// Reads and parses a history file (at most [`MAX_HISTORY_BYTES`]).
    ///
    /// # Errors
    /// As [`PrivacyHistory::parse`], and I/O errors.
    pub fn load(path: &Path) -> Result<(Self, Vec<u8>)> {
        let bytes = crate::durable::read_at_most(path, MAX_HISTORY_BYTES)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Ok((Self::parse(&bytes, path)?, bytes))
    }

    /// Total steps.
    pub fn steps(&self) -> u64 {
        self.phases.iter().map(|p| p.steps).sum()
    }

    /// The phases as the accountants take them.
    ///
    /// # Errors
    /// Never for a parsed history (every phase was checked).
    pub fn accounting_phases(&self) -> Result<Vec<Phase>> {
        self.phases.iter().map(|p| Phase::new(p.sample_rate, p.noise_multiplier, p.steps)).collect()
    }
}

/// What `metrics.json` of an imported run says about its origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedProvenance {
    /// Always `external`: dpaudit did not run the training.
    pub training_code: String,
    /// The trainer, as named by the importer or the history (e.g. `opacus 1.6.0`).
    pub trainer: String,
    /// The history file, relative to the run folder ([`HISTORY_FILE`]), and its SHA-256.
    pub history_file: String,
    /// SHA-256 of the history file.
    pub history_sha256: String,
    /// The trainer's own claim, when the history stated one.
    pub trainer_claim: Option<TrainerClaim>,
    /// Where the training data's hash came from: `dataset` (dpaudit read the data) or `given`
    /// (the importer stated it).
    pub data_hash_source: String,
}

/// The training data of an imported run: read by dpaudit, or its hash as stated by the importer.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportedData {
    /// A dataset dpaudit read (its content hash, name and number of examples, from
    /// `dpaudit::data::Dataset::{content_sha256, name, len}`).
    Dataset {
        /// The dataset's content SHA-256.
        content_sha256: String,
        /// Its name.
        name: String,
        /// Its number of examples.
        examples: usize,
    },
    /// A content hash given by the importer (64 lowercase hex digits).
    Sha256(String),
}

/// How to import.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// The trainer's name and version; `None`: the history's `library`, else `unnamed trainer`.
    pub trainer: Option<String>,
    /// The clipping norm when the history does not give it (it does not change epsilon; it is
    /// recorded as the sensitivity).
    pub clipping_norm: Option<f64>,
    /// How the trainer's noise was drawn when the history does not say; `None` is recorded as
    /// unknown, which `cert sign` treats as seeded (not fit for release).
    pub noise_seeding: Option<NoiseSeeding>,
}

/// Imports a run trained elsewhere into the new folder `out`: the model (copied), the history
/// (copied verbatim), a ledger transcribed from it and a `metrics.json`. Everything is checked
/// before `out` is created; `out` must not exist.
///
/// # Errors
/// [`Error::Data`] for a history that does not parse ([`PrivacyHistory::parse`]) or a model that
/// is not a safetensors file; [`Error::InvalidParameter`] for a missing clipping norm, an
/// existing `out`, or a data hash that is not 64 lowercase hex digits; I/O errors.
pub fn import_run(
    model: &Path,
    history_path: &Path,
    data: &ImportedData,
    options: &ImportOptions,
    out: &Path,
) -> Result<ImportedProvenance> {
    let (history, history_bytes) = PrivacyHistory::load(history_path)?;
    let model_bytes = crate::durable::read_at_most(model, 1 << 34)
        .map_err(|e| Error::io(format!("reading {}", model.display()), e))?;
    check_safetensors(&model_bytes, model)?;
    let clipping: Vec<f64> = history
        .phases
        .iter()
        .map(|p| p.max_grad_norm.or(options.clipping_norm))
        .collect::<Option<Vec<f64>>>()
        .ok_or_else(|| {
            Error::invalid(
                "clipping norm",
                "unknown",
                "the history does not give max_grad_norm for every phase; state the clipping norm",
            )
        })?;
    if let Some(c) = options.clipping_norm {
        if !(c > 0.0 && c.is_finite()) {
            return Err(Error::invalid("clipping norm", c, "must be a finite number > 0"));
        }
    }
    let (data_sha256, data_hash_source, data_name, data_examples) = match data {
        ImportedData::Dataset { content_sha256, name, examples } => {
            (content_sha256.clone(), "dataset", name.clone(), Some(*examples))
        }
        ImportedData::Sha256(h) if crate::cert::sign::is_sha256_hex(h) => {
            (h.clone(), "given", "not read by dpaudit (its hash stated at import)".to_owned(), None)
        }
        ImportedData::Sha256(h) => {
            return Err(Error::invalid("training data SHA-256", h, "must be 64 lowercase hex digits"))
        }
    };
    if out.exists() {
        return Err(Error::invalid("run folder", out.display(), "already exists; an import never overwrites"));
    }
    let seeding = history.noise_seeding.or(options.noise_seeding);
    let trainer =
        options.trainer.clone().or_else(|| history.library.clone()).unwrap_or_else(|| "unnamed trainer".into());

    // Build in a sibling temporary folder, then rename: a crash leaves no half-imported run.
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "import".into());
    let tmp = parent.join(format!(".{name}.importing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let result = (|| -> Result<ImportedProvenance> {
        crate::durable::write_atomically(&tmp.join(crate::cert::sign::MODEL_FILE), &model_bytes)?;
        crate::durable::write_atomically(&tmp.join(HISTORY_FILE), &history_bytes)?;
        let mut ledger = Ledger::create(tmp.join(crate::cert::sign::LEDGER_FILE))?;
        if let Some(s) = seeding {
            ledger.set_noise_seeding(s);
        }
        for (p, &c) in history.phases.iter().zip(&clipping) {
            for _ in 0..p.steps {
                ledger.record(SamplingScheme::Poisson, p.sample_rate, p.noise_multiplier, c, IMPORTED_LABEL)?;
            }
        }
        let provenance = ImportedProvenance {
            training_code: "external".into(),
            trainer: trainer.clone(),
            history_file: HISTORY_FILE.into(),
            history_sha256: crate::durable::sha256_hex(&history_bytes),
            trainer_claim: history.claim.clone(),
            data_hash_source: data_hash_source.into(),
        };
        let metrics = crate::run_folder::manifest::ImportedMetrics {
            schema_version: crate::run_folder::manifest::SCHEMA_VERSION,
            private: true,
            steps: history.steps(),
            train_data_sha256: data_sha256,
            train_dataset: data_name,
            train_examples: data_examples,
            model_sha256: crate::durable::sha256_hex(&model_bytes),
            noise_seeding: seeding,
            inject_fault: None,
            config: crate::run_folder::manifest::ImportedConfig {
                model: format!("trained by {trainer} (imported; not dpaudit's training code)"),
                private: true,
            },
            imported: provenance.clone(),
        };
        crate::run_folder::manifest::write_manifest(&tmp.join(crate::run_folder::METRICS_FILE), &metrics)?;
        Ok(provenance)
    })();
    match result {
        Ok(p) => {
            std::fs::rename(&tmp, out)
                .map_err(|e| Error::io(format!("moving {} to {}", tmp.display(), out.display()), e))?;
            Ok(p)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Checks that `bytes` are a safetensors file with at least one tensor (the `safetensors` crate
/// validates the header and every tensor's offsets).
fn check_safetensors(bytes: &[u8], origin: &Path) -> Result<()> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::data(origin, format!("not a safetensors model: {e}")))?;
    if st.is_empty() {
        return Err(Error::data(origin, "not a safetensors model: no tensors"));
    }
    Ok(())
}
