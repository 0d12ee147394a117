//! A whole training run, as `dpaudit train` does it: epochs to steps, optional calibration of the
//! noise multiplier to a target epsilon (done up front, before any step), the step loop with
//! checkpoints, then `model.safetensors`, `metrics.json` and the ledger in the run folder.
use crate::accounting::calibration::noise_multiplier_for_epsilon;
use crate::accounting::pld::PldAccountant;
use crate::accounting::rdp::{self, RdpAccountant};
use crate::accounting::Phase;
use crate::data::{sha256_file, Dataset};
use crate::error::{Error, Result};
use crate::train::adversarial::PgdConfig;
use crate::train::fault::Fault;
use crate::train::dpsgd::{write_atomically, DpSgd, Examples, StepReport, TrainConfig, CHECKPOINT_POINTER};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tch::Device;

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
}

/// One accountant's epsilon, named.
#[derive(Debug, Clone, Serialize)]
pub struct AccountedEpsilon {
    /// `rdp` or `pld`.
    pub accountant: &'static str,
    /// The epsilon at `delta`.
    pub epsilon: f64,
    /// The delta.
    pub delta: f64,
    /// How it was obtained (order and conversion for RDP, discretisation for PLD).
    pub detail: serde_json::Value,
}

/// The contents of `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// `dpaudit` version.
    pub tool_version: &'static str,
    /// Accuracy on the test set.
    pub test_accuracy: f64,
    /// Epsilon from each accountant, computed from the ledger (empty without privacy).
    pub epsilons: Vec<AccountedEpsilon>,
    /// Whether the run was private.
    pub private: bool,
    /// The sampling scheme (Poisson).
    pub sampling: &'static str,
    /// The phases read back from the ledger.
    pub phases: Vec<Phase>,
    /// Steps applied.
    pub steps: u64,
    /// The sampling rate q.
    pub sampling_rate: f64,
    /// How sigma was chosen.
    pub noise_multiplier_source: String,
    /// All parameters.
    pub config: TrainConfig,
    /// Epochs asked for.
    pub epochs: f64,
    /// Seed (null: OS CSPRNG).
    pub seed: Option<u64>,
    /// Wall time of this invocation, seconds.
    pub wall_seconds: f64,
    /// Training set name and size.
    pub train_dataset: String,
    /// Training examples.
    pub train_examples: usize,
    /// The injected fault, if any (`dpaudit cert sign` refuses such runs).
    pub inject_fault: Option<Fault>,
    /// Adversarial training's PGD parameters (also used to measure robust accuracy).
    pub adversarial: Option<PgdConfig>,
    /// Test accuracy on PGD adversarial examples (adversarial runs).
    pub robust_test_accuracy: Option<f64>,
    /// The public batch behind public-data BatchNorm: name, size and content SHA-256.
    pub public_norm_data: Option<String>,
    /// SHA-256 of the training data's content (pixels and labels).
    pub train_data_sha256: String,
    /// SHA-256 of `model.safetensors`.
    pub model_sha256: String,
}

/// Runs (or resumes) training into `out`, calling `on_step` after each step with the running
/// RDP epsilon (`None` without privacy).
///
/// # Errors
/// Invalid parameters, data, ledger or I/O errors, NaN in training (no update is applied).
pub fn train_run(spec: &RunSpec, train: &Dataset, test: &Dataset, out: &Path, device: Device, on_step: &mut dyn FnMut(&StepReport, u64, Option<f64>)) -> Result<Metrics> {
    let start = Instant::now();
    let n = train.len();
    if n == 0 {
        return Err(Error::invalid("training set", 0, "has no examples"));
    }
    crate::accounting::validate_delta(spec.delta)?;
    if !(spec.epochs > 0.0 && spec.epochs.is_finite()) {
        return Err(Error::invalid("epochs", spec.epochs, "must be a finite number > 0"));
    }
    let q = spec.config.lot_size / n as f64;
    let total_steps = (spec.epochs / q).ceil() as u64;
    let mut config = spec.config.clone();
    let mut sigma_source = format!("given: {}", config.noise_multiplier);
    if let (true, Some(target)) = (config.private, spec.target_epsilon) {
        let cal = noise_multiplier_for_epsilon(target, q, total_steps, spec.delta, &RdpAccountant::default())?;
        config.noise_multiplier = cal.noise_multiplier;
        sigma_source = format!(
            "calibrated up front (RDP accountant, Poisson, q = {q}, {total_steps} steps, delta = {}) for target epsilon {target}: sigma = {}",
            spec.delta, cal.noise_multiplier
        );
    }
    let examples = Examples::from_dataset(train, device)?;
    let test_examples = Examples::from_dataset(test, device)?;
    let has_ledger = out.join(crate::train::dpsgd::LEDGER_FILE).exists();
    let mut run = if spec.resume && out.join(CHECKPOINT_POINTER).exists() {
        DpSgd::resume(out, n, device)?
    } else if spec.resume && has_ledger {
        // Crashed before its first checkpoint: start over, keeping every step already recorded.
        DpSgd::restart_keeping_ledger(config.clone(), n, out, spec.seed, device)?
    } else {
        if has_ledger {
            return Err(Error::invalid("output folder", out.display(), "already holds a run (ledger.jsonl); use --resume or another --out"));
        }
        DpSgd::new(config.clone(), n, out, spec.seed, device)?
    };
    if let Some(f) = spec.inject_fault {
        if run.fault().is_some_and(|g| g != f) {
            return Err(Error::invalid("--inject-fault", f, format!("the run being resumed has another fault ({})", run.fault().expect("checked"))));
        }
        run.inject_fault(f);
    }
    if let Some(cfg) = spec.adversarial {
        run.set_adversarial(cfg);
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
    let model_path = run.save_model()?;
    let test_accuracy = run.accuracy(&test_examples)?;
    let robust_test_accuracy = match run.adversarial() {
        Some(cfg) => Some(run.robust_accuracy(&test_examples, &cfg)?),
        None => None,
    };
    let (phases, epsilons) = match run.ledger() {
        Some(l) => {
            let phases = l.phases()?;
            let r = rdp::epsilon(&phases, spec.delta)?;
            let p = PldAccountant::default().epsilon(&phases, spec.delta)?;
            let eps = vec![
                AccountedEpsilon { accountant: "rdp", epsilon: r.epsilon, delta: spec.delta, detail: serde_json::to_value(r).unwrap_or_default() },
                AccountedEpsilon { accountant: "pld", epsilon: p.epsilon, delta: spec.delta, detail: serde_json::to_value(p).unwrap_or_default() },
            ];
            (phases, eps)
        }
        None => (Vec::new(), Vec::new()),
    };
    let metrics = Metrics {
        tool_version: env!("CARGO_PKG_VERSION"),
        test_accuracy,
        epsilons,
        private: run.config().private,
        sampling: "poisson",
        phases,
        steps: run.steps(),
        sampling_rate: run.sampling_rate(),
        noise_multiplier_source: if run.config().private { sigma_source } else { "no privacy".into() },
        config: run.config().clone(),
        epochs: spec.epochs,
        seed: spec.seed,
        wall_seconds: start.elapsed().as_secs_f64(),
        train_dataset: train.name().to_owned(),
        train_examples: n,
        inject_fault: run.fault(),
        adversarial: run.adversarial(),
        robust_test_accuracy,
        public_norm_data: spec.public_batch.as_ref().map(|d| format!("{} ({} examples, sha256 {})", d.name(), d.len(), d.content_sha256())),
        train_data_sha256: train.content_sha256(),
        model_sha256: sha256_file(&model_path)?,
    };
    let json = serde_json::to_vec_pretty(&metrics).map_err(|e| Error::data(out, e.to_string()))?;
    write_atomically(&out.join("metrics.json"), &json)?;
    Ok(metrics)
}
