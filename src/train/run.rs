//! A whole training run, as `dpaudit train` does it: epochs to steps, optional calibration of the
//! noise multiplier to a target epsilon (done up front, before any step), the step loop with
//! checkpoints, then `model.safetensors`, `metrics.json` and the ledger in the run folder.
//!
//! For `abadi-pca` (Abadi et al. 2016), DP-PCA of the training images runs first: its phase
//! (q = 1, sigma_p, 1 step) is the ledger's first entry, the calibration of sigma counts it, and
//! the projection is kept as `pca.safetensors` so that a resume loads it instead of paying again.
use crate::accounting::ledger::Ledger;
use crate::accounting::pld::PldAccountant;
use crate::accounting::rdp;
use crate::accounting::Phase;
use crate::data::{sha256_file, Dataset};
use crate::error::{Error, Result};
use crate::recipe::{resolve_noise, CalibrationAccountant, Privacy, Recipe, ResolvedRecipe};
use crate::run_folder::manifest::{PgdRecord, RecordedFault};
use crate::train::adversarial::PgdConfig;
use crate::train::dpsgd::{DpSgd, Examples, StepReport, TrainConfig, CHECKPOINT_POINTER};
use crate::train::fault::Fault;
use crate::train::models;
use crate::train::noise::NoiseSeed;
use crate::train::pca::{self, DpPca};
use crate::train::streams::RunStream;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Most noisy steps one training run may take: its ledger (about 140 bytes a step) then stays
/// well under the size certificates read ([`crate::durable::MAX_LEDGER_BYTES`]).
pub const MAX_TRAINING_STEPS: u64 = 5_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The trainer's configuration (its noise multiplier is replaced when `target_epsilon` is set).
    pub config: TrainConfig,
    /// Epochs: steps = ceil(epochs / q).
    pub epochs: f64,
    /// Delta for the reported epsilons.
    pub delta: f64,
    /// Calibrate sigma up front so that the RDP epsilon after all steps is at most this.
    pub target_epsilon: Option<f64>,
    /// Seed (None: OS CSPRNG).
    pub seed: Option<u64>,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Continue the run already in the folder.
    pub resume: bool,
    /// A deliberate bug for testing audits (`--inject-fault`); recorded in metrics.json, refused
    /// by certificates.
    pub inject_fault: Option<Fault>,
    /// Adversarial (PGD) training; robust test accuracy is then reported too.
    pub adversarial: Option<PgdConfig>,
    /// Public images for public-data BatchNorm (models such as `seed-cnn-pn`).
    pub public_batch: Option<Dataset>,
    /// DP-PCA's noise multiplier sigma_p, for the models on a projection (`abadi-pca`; see
    /// [`models::pca_dims`]); required for them, refused for the others.
    pub pca_noise_multiplier: Option<f64>,
    /// Whiten the DP-PCA projection ([`DpPca::whiten`]: every component scaled to the same
    /// energy, from the released eigenvalues only; post-processing). Refused for other models.
    pub pca_whiten: bool,
    /// Hold out the last this many training examples as a validation set (0: none). They are
    /// never trained on; the privacy accounting is over the remaining examples.
    pub validation: usize,
    /// Evaluate and save an exponential moving average of the parameters with this decay
    /// (post-processing, no privacy cost); `None`: the last iterate.
    pub parameter_averaging: Option<f64>,
}

/// The file of the DP-PCA projection inside a run folder.
pub const PCA_FILE: &str = crate::run_folder::PCA_FILE;

pub use crate::run_folder::manifest::{AccountedEpsilon, PcaReport};

/// Every accountant's epsilon of `phases` at `delta` (RDP, then PLD), and the error of each that
/// failed, by name.
fn accounted_epsilons(
    phases: &[Phase],
    delta: f64,
) -> (Vec<AccountedEpsilon>, std::collections::BTreeMap<&'static str, String>) {
    let mut epsilons = Vec::new();
    let mut errors = std::collections::BTreeMap::new();
    match rdp::epsilon(phases, delta) {
        Ok(r) => epsilons.push(AccountedEpsilon {
            accountant: "rdp".into(),
            epsilon: r.epsilon,
            delta,
            detail: serde_json::to_value(r).unwrap_or_default(),
        }),
        Err(e) => {
            errors.insert("rdp", e.to_string());
        }
    }
    match PldAccountant::default().epsilon(phases, delta) {
        Ok(p) => epsilons.push(AccountedEpsilon {
            accountant: "pld".into(),
            epsilon: p.epsilon,
            delta,
            detail: serde_json::to_value(p).unwrap_or_default(),
        }),
        Err(e) => {
            errors.insert("pld", e.to_string());
        }
    }
    (epsilons, errors)
}

/// The contents of `metrics.json` ([`crate::run_folder::manifest::TrainMetrics`], written with
/// the full configuration).
pub type Metrics = crate::run_folder::manifest::TrainMetrics<TrainConfig>;

/// Runs (or resumes) training into `out`, calling `on_step` after each step with the running
/// RDP epsilon (`None` without privacy).
///
/// # Errors
/// Invalid parameters, data, ledger or I/O errors, NaN in training (no update is applied).
pub fn train_run(
    spec: &RunSpec,
    train: &Dataset,
    test: &Dataset,
    out: &Path,
    device: Device,
    on_step: &mut dyn FnMut(&StepReport, u64, Option<f64>),
) -> Result<Metrics> {
    train_run_with(spec, None, train, test, out, device, on_step)
}

/// How a recipe's run is run: what is not part of the recipe.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Seed (None: OS CSPRNG).
    pub seed: Option<u64>,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Continue the run already in the folder.
    pub resume: bool,
    /// The public images of the recipe's `public_norm` (first `size` of its folder), loaded.
    pub public_batch: Option<Dataset>,
}

/// Trains a resolved recipe into `out` (as [`train_run`], with sigma resolved and calibrated
/// once, by [`Recipe::resolve`]), and writes the recipe to `recipe.toml` in the folder, so that
/// `dpaudit train --config <folder>/recipe.toml` trains the same recipe again. `train` is the
/// whole training split the recipe was resolved for (before `train_examples` cuts it).
/// A resume (`options.resume`) keeps the folder's `recipe.toml` as it is and refuses a recipe
/// that differs from it, before the ledger is read or appended to.
///
/// # Errors
/// As [`train_run`]; [`Error::InvalidParameter`] when `train` is not the size the recipe was
/// resolved for, or when a resume asks for another recipe than the folder's `recipe.toml`.
pub fn train_recipe(
    resolved: &ResolvedRecipe,
    options: RunOptions,
    train: &Dataset,
    test: &Dataset,
    out: &Path,
    device: Device,
    on_step: &mut dyn FnMut(&StepReport, u64, Option<f64>),
) -> Result<Metrics> {
    let r = &resolved.recipe;
    let train = first_examples(train, r.train_examples)?;
    if train.len().checked_sub(r.validation) != Some(resolved.train_examples) {
        return Err(Error::invalid(
            "training set",
            train.len(),
            format!("the recipe was resolved for {} training examples", resolved.train_examples + r.validation),
        ));
    }
    let spec = RunSpec {
        config: resolved.config.clone(),
        epochs: r.epochs.unwrap_or(resolved.steps as f64 * resolved.sampling_rate),
        delta: r.delta,
        target_epsilon: None,
        seed: options.seed,
        checkpoint_every: options.checkpoint_every,
        resume: options.resume,
        inject_fault: r.inject_fault,
        adversarial: r.adversarial,
        public_batch: options.public_batch,
        pca_noise_multiplier: r.pca.map(|p| p.noise_multiplier),
        pca_whiten: r.pca.is_some_and(|p| p.whiten),
        validation: r.validation,
        parameter_averaging: r.ema,
    };
    train_run_with(&spec, Some(resolved), &train, test, out, device, on_step)
}

/// The first `n` examples of `data` (all of them for `None`).
fn first_examples(data: &Dataset, n: Option<usize>) -> Result<Cow<'_, Dataset>> {
    let Some(n) = n.filter(|&n| n < data.len()) else { return Ok(Cow::Borrowed(data)) };
    let per = data.shape().pixels().unwrap_or(0);
    Ok(Cow::Owned(Dataset::new(
        format!("{} (first {n})", data.name()),
        data.shape(),
        data.classes(),
        data.pixels()[..n * per].to_vec(),
        data.labels()[..n].to_vec(),
    )?))
}

fn train_run_with(
    spec: &RunSpec,
    resolved: Option<&ResolvedRecipe>,
    train: &Dataset,
    test: &Dataset,
    out: &Path,
    device: Device,
    on_step: &mut dyn FnMut(&StepReport, u64, Option<f64>),
) -> Result<Metrics> {
    let start = Instant::now();
    crate::device::check_available(device)?;
    let train_data_dir = train.source_files().first().and_then(|f| f.parent()).map(|d| {
        if d.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            d.display().to_string()
        }
    });
    let (train, validation) = hold_out_last(train, spec.validation)?;
    let train: &Dataset = &train;
    let n = train.len();
    if n == 0 {
        return Err(Error::invalid("training set", 0, "has no examples"));
    }
    let pca_dims = models::pca_dims(&spec.config.model);
    let pca_sigma = match (pca_dims, spec.pca_noise_multiplier) {
        (Some(_), Some(s)) if s > 0.0 && s.is_finite() => Some(s),
        (Some(_), Some(s)) => return Err(Error::invalid("PCA noise multiplier", s, "must be a finite number > 0")),
        (Some(_), None) => {
            return Err(Error::invalid(
                "PCA noise multiplier",
                "none",
                format!("model {} trains on a DP-PCA projection: give its noise multiplier", spec.config.model),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::invalid(
                "PCA noise multiplier",
                spec.config.model.as_str(),
                "only the abadi-pca models use DP-PCA",
            ))
        }
        (None, None) => None,
    };
    if spec.pca_whiten && pca_sigma.is_none() {
        return Err(Error::invalid(
            "PCA whitening",
            spec.config.model.as_str(),
            "only the abadi-pca models use DP-PCA",
        ));
    }
    if !models::trains_on_pixels(&spec.config.model) && (spec.adversarial.is_some() || spec.public_batch.is_some()) {
        return Err(Error::invalid("model", spec.config.model.as_str(), "trains on DP-PCA projections or scattering coefficients; adversarial training and public-data normalisation work on images"));
    }
    crate::accounting::validate_delta(spec.delta)?;
    if !(spec.epochs > 0.0 && spec.epochs.is_finite()) {
        return Err(Error::invalid("epochs", spec.epochs, "must be a finite number > 0"));
    }
    if let Some(decay) = spec.parameter_averaging {
        if !(decay > 0.0 && decay < 1.0) {
            return Err(Error::invalid("parameter-average decay", decay, "must be in (0, 1)"));
        }
    }
    let q = spec.config.lot_size / n as f64;
    let steps = (spec.epochs / q).ceil();
    if !(steps <= MAX_TRAINING_STEPS as f64) {
        return Err(Error::invalid(
            "epochs",
            spec.epochs,
            format!("{steps} steps at sampling rate {q}; at most {MAX_TRAINING_STEPS} are accepted (a ledger line per step)"),
        ));
    }
    // A resolved recipe that gives steps (not epochs) keeps exactly its steps.
    let total_steps = resolved.map_or(steps as u64, |r| r.steps);
    let mut config = spec.config.clone();
    // DP-PCA's phase comes first; calibration composes the training phase after it.
    let earlier: Vec<Phase> = match pca_sigma {
        Some(s) => vec![Phase::new(1.0, s, 1)?],
        None => Vec::new(),
    };
    let noise = match resolved {
        // Resolved (and calibrated) once already, by `Recipe::resolve`.
        Some(r) => r.noise.clone(),
        None => {
            let privacy = match (config.private, spec.target_epsilon) {
                (false, _) => Privacy::Off,
                (true, Some(epsilon)) => Privacy::TargetEpsilon { epsilon, accountant: CalibrationAccountant::Rdp },
                (true, None) => Privacy::Gaussian { noise_multiplier: config.noise_multiplier },
            };
            resolve_noise(&privacy, &earlier, q, total_steps, spec.delta)?
        }
    };
    if let Some(n) = &noise {
        config.noise_multiplier = n.noise_multiplier;
    }
    // Every epsilon the run will report, for the planned schedule, before the ledger exists: an
    // accountant that cannot answer fails here, before any privacy is spent.
    // metrics.json reuses them when the ledger's phases are the planned ones.
    let planned = if config.private {
        let planned: Vec<Phase> =
            earlier.iter().copied().chain([Phase::new(q, config.noise_multiplier, total_steps)?]).collect();
        let accounted = accounted_epsilons(&planned, spec.delta);
        if let Some((name, e)) = accounted.1.iter().next() {
            return Err(Error::numerical(
                "planned privacy accounting",
                format!("the {name} accountant cannot account for the planned schedule {planned:?}: {e}"),
            ));
        }
        Some((planned, accounted))
    } else {
        None
    };
    // One writer per run folder, before the ledger is read or appended to.
    let _lock = crate::folder_lock::FolderLock::acquire(out)?;
    // A resumed run continues the recipe it started with: another one is refused before the
    // ledger is read or appended to.
    if let (true, Some(r)) = (spec.resume, resolved) {
        refuse_another_recipe(out, r)?;
    }
    let mut examples = Examples::from_dataset(train, device)?;
    let mut test_examples = Examples::from_dataset(test, device)?;
    let mut validation_examples = match &validation {
        Some(v) => Some(Examples::from_dataset(v, device)?),
        None => None,
    };
    let has_ledger = out.join(crate::train::dpsgd::LEDGER_FILE).exists();
    let mut run = if spec.resume && out.join(CHECKPOINT_POINTER).exists() {
        DpSgd::resume(out, n, device)?
    } else if spec.resume && has_ledger {
        // Crashed before its first checkpoint: start over, keeping every step already recorded.
        DpSgd::restart_keeping_ledger(config.clone(), n, out, spec.seed, device)?
    } else {
        if has_ledger {
            return Err(Error::invalid(
                "output folder",
                out.display(),
                "already holds a run (ledger.jsonl); use --resume or another --out",
            ));
        }
        // The recipe is recorded before the ledger exists, and never rewritten on a resume.
        if let Some(r) = resolved {
            write_recipe(out, &r.recipe)?;
        }
        DpSgd::new(config.clone(), n, out, spec.seed, device)?
    };
    // Before any step: the projection (computed and recorded now, or loaded on a resume).
    let pca_report = match (pca_dims, pca_sigma) {
        (Some(k), Some(sigma_p)) => {
            let (projection, source) =
                pca_projection(&mut run, &examples, k, sigma_p, spec.pca_whiten, spec.seed, out)?;
            examples.images = projection.project(&examples.images)?;
            test_examples.images = projection.project(&test_examples.images)?;
            if let Some(v) = validation_examples.as_mut() {
                v.images = projection.project(&v.images)?;
            }
            Some(PcaReport {
                dims: k,
                noise_multiplier: sigma_p,
                source: source.into(),
                whitened: projection.whitening.is_some(),
                sha256: sha256_file(&out.join(PCA_FILE))?,
            })
        }
        _ => None,
    };
    let features = if models::uses_scattering(&spec.config.model) {
        let sc = crate::train::scattering::Scattering::new(device)?;
        examples.images = sc.transform(&examples.images)?;
        test_examples.images = sc.transform(&test_examples.images)?;
        if let Some(v) = validation_examples.as_mut() {
            v.images = sc.transform(&v.images)?;
        }
        Some(format!(
            "scattering transform (J = {}, L = {}, Kymatio's filters): 81 x 7 x 7 coefficients per image, computed from each image alone with data-independent filters, so no privacy cost (proofs/train/scattering.md)",
            crate::train::scattering::J,
            crate::train::scattering::L
        ))
    } else {
        None
    };
    if let Some(f) = spec.inject_fault {
        if run.fault().is_some_and(|g| g != f) {
            return Err(Error::invalid(
                "--inject-fault",
                f,
                format!("the run being resumed has another fault ({})", run.fault().expect("checked")),
            ));
        }
        run.inject_fault(f);
    }
    if let Some(cfg) = spec.adversarial {
        run.set_adversarial(cfg);
    }
    if let Some(decay) = spec.parameter_averaging {
        run.set_parameter_averaging(decay)?;
    }
    if let Some(public) = &spec.public_batch {
        run.set_public_batch(Examples::from_dataset(public, device)?.images)?;
    }
    while run.steps() < total_steps {
        let report = run.step(&examples)?;
        let eps = match run.ledger() {
            Some(l) => Some(rdp::epsilon(&l.phases()?, spec.delta)?.epsilon),
            None => None,
        };
        on_step(&report, total_steps, eps);
        if spec.checkpoint_every > 0 && run.steps() % spec.checkpoint_every == 0 {
            run.checkpoint()?;
        }
    }
    run.checkpoint()?;
    run.use_average()?;
    let model_path = run.save_model()?;
    let test_accuracy = run.accuracy(&test_examples)?;
    let validation_accuracy = match &validation_examples {
        Some(v) => Some(run.accuracy(v)?),
        None => None,
    };
    let robust_test_accuracy = match run.adversarial() {
        Some(cfg) => Some(run.robust_accuracy(&test_examples, &cfg)?),
        None => None,
    };
    let (phases, (epsilons, accountant_errors)) = match run.ledger() {
        Some(l) => {
            let phases = l.phases()?;
            let accounted = match planned {
                Some((planned, accounted)) if planned == phases => accounted,
                _ => accounted_epsilons(&phases, spec.delta),
            };
            (phases, accounted)
        }
        None => (Vec::new(), (Vec::new(), Default::default())),
    };
    let metrics = Metrics {
        schema_version: crate::run_folder::manifest::SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        test_accuracy,
        validation_accuracy,
        validation_examples: spec.validation,
        pca: pca_report,
        features,
        parameter_averaging: run.parameter_averaging(),
        epsilons,
        accountant_errors: accountant_errors.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        private: run.config().private,
        sampling: "poisson".into(),
        phases,
        steps: run.steps(),
        sampling_rate: run.sampling_rate(),
        noise_multiplier_source: match (&noise, run.config().private) {
            (Some(n), true) => n.provenance.describe(n.noise_multiplier),
            _ => "no privacy".into(),
        },
        noise_multiplier_provenance: noise.as_ref().filter(|_| run.config().private).map(|n| n.provenance.clone()),
        config: run.config().clone(),
        epochs: spec.epochs,
        seed: Some(spec.seed),
        noise_seeding: Some(match run.ledger() {
            Some(l) => crate::accounting::ledger::noise_seeding_of(l.entries()).into(),
            None => Some(NoiseSeed::from(spec.seed).seeding()).into(),
        }),
        train_data_dir,
        wall_seconds: start.elapsed().as_secs_f64(),
        train_dataset: train.name().to_owned(),
        train_examples: n,
        inject_fault: run.fault().map(|f| RecordedFault(f.to_string())),
        adversarial: run.adversarial().map(|a| PgdRecord {
            epsilon: a.epsilon,
            steps: a.steps,
            step_size: a.step_size,
        }),
        robust_test_accuracy,
        public_norm_data: spec
            .public_batch
            .as_ref()
            .map(|d| format!("{} ({} examples, sha256 {})", d.name(), d.len(), d.content_sha256())),
        train_data_sha256: train.content_sha256(),
        model_sha256: sha256_file(&model_path)?,
        device: Some(crate::device::name(device)),
        cpu_only_routes_skipped: crate::train::per_example::cpu_only_fallbacks()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    };
    crate::run_folder::manifest::write_manifest(&out.join(crate::run_folder::METRICS_FILE), &metrics)?;
    Ok(metrics)
}

/// Refuses to resume the run in `out` with a recipe other than the one its `recipe.toml` records
/// (every field but the physical batch, see [`Recipe::differences_from`]). A folder without
/// `recipe.toml` (written before recipes were recorded) is checked against its `checkpoint.json`
/// instead: model, lot size, learning rate, privacy and (with privacy) sigma and C. A folder
/// with neither (never started) passes.
///
/// # Errors
/// [`Error::InvalidParameter`] naming every differing field with both values; a `recipe.toml`
/// or `checkpoint.json` that cannot be read or parsed.
fn refuse_another_recipe(out: &Path, asked: &ResolvedRecipe) -> Result<()> {
    let path = out.join(crate::run_folder::RECIPE_FILE);
    let (file, differences) = if path.exists() {
        let recorded = Recipe::load(&path)?;
        (crate::run_folder::RECIPE_FILE, asked.recipe.differences_from(&recorded))
    } else if let Some(c) = crate::run_folder::manifest::CheckpointRecord::read(out)? {
        (CHECKPOINT_POINTER, checkpoint_differences(&c.config, &asked.config))
    } else {
        return Ok(());
    };
    if differences.is_empty() {
        return Ok(());
    }
    let words: Vec<String> = differences
        .iter()
        .map(|d| format!("{file} says {} {}, this invocation asks for {}", d.field, d.recorded, d.asked))
        .collect();
    Err(Error::invalid(
        "resumed recipe",
        out.display(),
        format!(
            "{}; a run is resumed with the recipe it started with (nothing was trained, the ledger is unchanged)",
            words.join("; ")
        ),
    ))
}

/// Where the configuration a checkpoint records (`recorded`) differs from `asked`: model, lot
/// size, learning rate, privacy and, for a private run, sigma and C (fields it does not record
/// are not compared).
fn checkpoint_differences(
    recorded: &crate::run_folder::manifest::TrainConfigRecord,
    asked: &TrainConfig,
) -> Vec<crate::recipe::RecipeDifference> {
    let mut out = Vec::new();
    let mut differ = |field: &'static str, recorded: Option<String>, asked: String| {
        if let Some(recorded) = recorded.filter(|r| *r != asked) {
            out.push(crate::recipe::RecipeDifference { field, recorded, asked });
        }
    };
    let num = |x: Option<f64>| x.map(|x| x.to_string());
    differ("model", recorded.model.clone(), asked.model.clone());
    differ("lot size", num(recorded.lot_size), asked.lot_size.to_string());
    differ("learning rate", num(recorded.lr), asked.lr.to_string());
    differ("privacy", recorded.private.map(|p| p.to_string()), asked.private.to_string());
    if asked.private && recorded.private != Some(false) {
        differ("noise multiplier", num(recorded.noise_multiplier), asked.noise_multiplier.to_string());
        differ("clipping norm", num(recorded.max_grad_norm), asked.max_grad_norm.to_string());
    }
    out
}

/// Writes `recipe.toml` atomically into a run folder.
fn write_recipe(out: &Path, recipe: &Recipe) -> Result<()> {
    crate::durable::write_atomically(&out.join(crate::run_folder::RECIPE_FILE), recipe.to_toml()?.as_bytes())
}

/// Splits off the last `count` examples of `data` as a validation set (`None` for 0).
///
/// # Errors
/// [`Error::InvalidParameter`] when `count` leaves no training example.
pub fn hold_out_last(data: &Dataset, count: usize) -> Result<(Cow<'_, Dataset>, Option<Dataset>)> {
    if count == 0 {
        return Ok((Cow::Borrowed(data), None));
    }
    if count >= data.len() {
        return Err(Error::invalid(
            "validation examples",
            count,
            format!("must leave training examples (the training set has {})", data.len()),
        ));
    }
    let keep = data.len() - count;
    let per = data.shape().pixels().unwrap_or(0);
    let part = |name: String, from: usize, to: usize| {
        Dataset::new(
            name,
            data.shape(),
            data.classes(),
            data.pixels()[from * per..to * per].to_vec(),
            data.labels()[from..to].to_vec(),
        )
    };
    let train = part(format!("{} (first {keep})", data.name()), 0, keep)?;
    let validation = part(format!("{} (last {count}, validation)", data.name()), keep, data.len())?;
    Ok((Cow::Owned(train), Some(validation)))
}

/// The DP-PCA projection of an abadi-pca run: loaded from `pca.safetensors` when the folder has
/// one (a resume: nothing is recorded again), otherwise computed on `examples` with its phase
/// recorded in the run's ledger (a non-private baseline uses a throwaway in-memory ledger), then
/// saved atomically before any training step.
///
/// A crash after the phase was recorded but before the file was written makes the next resume
/// compute (and record) DP-PCA again: an over-count, which is safe.
///
/// With `whiten` the saved `components` are the whitened ones (the projection the model is
/// trained on, so the file alone reproduces the model's inputs), with the scale kept as
/// `whitening`; a resume must ask for the same.
fn pca_projection(
    run: &mut DpSgd,
    examples: &Examples,
    k: usize,
    sigma_p: f64,
    whiten: bool,
    seed: Option<u64>,
    out: &Path,
) -> Result<(DpPca, &'static str)> {
    let path = out.join(PCA_FILE);
    if path.exists() {
        if let Some(ledger) = run.ledger() {
            match ledger.entries().iter().find(|e| e.label == pca::LEDGER_LABEL) {
                None => return Err(Error::data(
                    &path,
                    "the run folder has a DP-PCA projection but its ledger does not record DP-PCA; refusing to use it",
                )),
                Some(e) if e.noise_multiplier != sigma_p => {
                    return Err(Error::invalid(
                        "PCA noise multiplier",
                        sigma_p,
                        format!(
                            "the projection in {} was made with sigma_p = {}; resume with that",
                            path.display(),
                            e.noise_multiplier
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let mut tensors = Tensor::read_safetensors(&path)?;
        let mut take =
            |wanted: &str| tensors.iter().position(|(name, _)| name == wanted).map(|i| tensors.swap_remove(i).1);
        let components = take("components").ok_or_else(|| Error::data(&path, "has no `components` tensor"))?;
        let whitening = match take("whitening") {
            Some(t) => Some(Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?)?),
            None => None,
        };
        if whitening.is_some() != whiten {
            let (made, ask) = if whiten { ("without", "without --pca-whiten") } else { ("with", "with --pca-whiten") };
            return Err(Error::invalid(
                "PCA whitening",
                whiten,
                format!("the projection in {} was made {made} whitening; resume {ask}", path.display()),
            ));
        }
        let eigenvalues = match take("eigenvalues") {
            Some(t) => Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?)?,
            None => Vec::new(),
        };
        let d = examples.images.f_flatten(1, -1)?.size()[1];
        if components.size() != [d, k as i64] {
            return Err(Error::data(
                &path,
                format!("components have shape {:?}, expected [{d}, {k}]", components.size()),
            ));
        }
        let components = components.f_to_kind(Kind::Float)?.f_to(examples.images.device())?;
        return Ok((DpPca { components, eigenvalues, whitening }, "loaded"));
    }
    let mut rng =
        ChaCha20Rng::from_seed(seed.map_or(NoiseSeed::Secure, NoiseSeed::Explicit).to_bytes(RunStream::PcaNoise));
    let mut projection = match run.ledger_mut() {
        Some(ledger) => pca::dp_pca(&examples.images, k, sigma_p, &mut rng, ledger)?,
        None => pca::dp_pca(&examples.images, k, sigma_p, &mut rng, &mut Ledger::in_memory())?,
    };
    if whiten {
        projection.whiten()?;
    }
    let eigenvalues = Tensor::f_from_slice(&projection.eigenvalues)?;
    let mut named = vec![("components", projection.components.shallow_clone()), ("eigenvalues", eigenvalues)];
    if let Some(scale) = &projection.whitening {
        named.push(("whitening", Tensor::f_from_slice(scale)?));
    }
    let tmp = out.join(".pca.safetensors.tmp.safetensors");
    Tensor::write_safetensors(&named, &tmp)?;
    crate::durable::sync_file(&tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
    Ok((projection, "computed"))
}
