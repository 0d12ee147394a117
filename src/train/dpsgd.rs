//! DP-SGD (Abadi et al. 2016): Poisson-sampled lots, per-example clipping, Gaussian noise on the
//! clipped sum, divided by the expected lot size; every noisy step recorded in the ledger (fsynced)
//! before its update is applied; checkpoints that resume the same sampler, noise stream and ledger.
//!
//! One step (private mode):
//! 1. lot = Poisson(q) sample of the training set (its size varies; it may be empty);
//! 2. the lot is split into physical batches of at most `physical_batch` examples; the clipped sums
//!    of the batches add up to the clipped sum of the whole lot (clipping is per example), so the
//!    split changes memory, not the result;
//! 3. noise N(0, sigma^2 C^2) per coordinate from the ChaCha20 stream;
//! 4. the ledger records (q, sigma, C) and fsyncs; only then
//! 5. the optimiser applies (clipped sum + noise) / (q N).
//!
//! Steps 3 to 5's release is [`GaussianSum::release`], the one mechanism DP-SGD and the DP-GAN
//! discriminator share (`proofs/train/gaussian_sum.md`).
use crate::accounting::ledger::Ledger;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::train::adversarial::{pgd, PgdConfig};
use crate::train::fault::Fault;
use crate::train::mechanism::GaussianSum;
use crate::train::models;
use crate::train::noise::{NoiseSeed, NoiseSeeding};
use crate::train::optim::{warmed_up_decay, LrSchedule, Optimizer, OptimizerKind};
use crate::train::per_example::{clip_and_sum, nonprivate_gradient, ClipConfig, Sequential};
use crate::train::sampling::{PoissonSampler, SamplerState};
use crate::train::streams::{NoiseKeyStream, RunStream};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

pub use crate::train::mechanism::CLIP_ROUNDING_SLACK;

/// The label of a DP-SGD step in the ledger.
pub const LEDGER_LABEL: &str = "dpsgd";
/// The ledger's file name inside a run folder.
pub const LEDGER_FILE: &str = crate::run_folder::LEDGER_FILE;
/// The pointer to the latest checkpoint inside a run folder.
pub const CHECKPOINT_POINTER: &str = crate::run_folder::CHECKPOINT_POINTER;

/// Everything that defines a training run (saved in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Model name (see [`models::specs`]).
    pub model: String,
    /// Expected lot size L; the sampling rate is q = L / N.
    pub lot_size: f64,
    /// Noise multiplier sigma (ignored without privacy).
    pub noise_multiplier: f64,
    /// Clipping norm C.
    pub max_grad_norm: f64,
    /// Largest number of examples pushed through the network at once.
    pub physical_batch: usize,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// `false` for the non-private baseline (no clipping, no noise, no ledger entries).
    pub private: bool,
}

/// Where the seeds of a run come from: `None` means the OS CSPRNG (`--secure-noise`).
pub type RunSeed = Option<u64>;

/// Training examples as tensors on one device: images (N, C, H, W) in [0, 1], labels (N,) int64.
#[derive(Debug)]
pub struct Examples {
    /// Images as f32 in [0, 1].
    pub images: Tensor,
    /// Labels as int64.
    pub labels: Tensor,
}

impl Examples {
    /// Converts a [`Dataset`] (u8 pixels) to tensors on `device`.
    ///
    /// # Errors
    /// [`Error::Torch`] on allocation failure.
    pub fn from_dataset(data: &Dataset, device: Device) -> Result<Self> {
        let s = data.shape();
        let images = Tensor::f_from_slice(data.pixels())?
            .f_view([data.len() as i64, s.channels as i64, s.height as i64, s.width as i64])?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(255.0)?
            .f_to(device)?;
        let labels = Tensor::f_from_slice(data.labels())?.f_to_kind(Kind::Int64)?.f_to(device)?;
        Ok(Examples { images, labels })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn select(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        let idx: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let idx = Tensor::f_from_slice(&idx)?.f_to(self.labels.device())?;
        Ok((self.images.f_index_select(0, &idx)?, self.labels.f_index_select(0, &idx)?))
    }
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based step number.
    pub step: u64,
    /// Examples in the lot (Poisson: random).
    pub lot_size: usize,
    /// Mean training loss over the lot (NaN for an empty lot).
    pub loss: f64,
    /// Fraction of the lot whose gradient was clipped (private mode).
    pub clipped_fraction: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    steps: u64,
    dataset_size: usize,
    sampler: SamplerState,
    noise_seed: [u8; 32],
    noise_word_pos: u128,
    folder: String,
    /// An injected fault (`--inject-fault`), kept across resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fault: Option<Fault>,
    /// Adversarial training, kept across resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    adversarial: Option<PgdConfig>,
    /// The decay of the parameter average, kept across resumes (its tensors are
    /// `average.safetensors` in the checkpoint folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    average_decay: Option<f64>,
    /// How the noise stream was seeded, kept across resumes (absent in older checkpoints: the
    /// steps after such a resume are recorded with unknown seeding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    noise_seeding: Option<NoiseSeeding>,
}

/// An exponential moving average of the parameters (Polyak averaging; De et al. 2022 use it for
/// DP-SGD). It is computed from the noisy iterates only, so it is post-processing and costs no
/// privacy.
#[derive(Debug)]
struct ParameterAverage {
    decay: f64,
    params: Vec<Tensor>,
}

/// File of the parameter average inside a checkpoint folder.
const AVERAGE_FILE: &str = "average.safetensors";

/// A DP-SGD run in a folder: the model, the optimiser, the sampler, the noise stream, the ledger.
pub struct DpSgd {
    config: TrainConfig,
    vs: nn::VarStore,
    model: Sequential,
    params: Vec<Tensor>,
    optimizer: Optimizer,
    sampler: PoissonSampler,
    /// The key of the run's noise stream (PGD's random starts use other streams of it).
    noise_key: [u8; 32],
    /// The Gaussian mechanism, which owns the noise stream (private runs).
    mechanism: Option<GaussianSum>,
    ledger: Option<Ledger>,
    run_dir: PathBuf,
    steps: u64,
    dataset_size: usize,
    fault: Option<Fault>,
    adversarial: Option<PgdConfig>,
    /// Public examples whose statistics feed the model's public-data BatchNorm layers.
    public_batch: Option<Tensor>,
    canaries: Vec<Vec<Tensor>>,
    /// No folder: the ledger is in memory and checkpoints are refused (audit replays).
    ephemeral: bool,
    average: Option<ParameterAverage>,
    /// How the noise stream was seeded (`None`: resumed from a checkpoint that did not say).
    noise_seeding: Option<NoiseSeeding>,
}

impl std::fmt::Debug for DpSgd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpSgd").field("config", &self.config).field("steps", &self.steps).finish()
    }
}

fn validate(config: &TrainConfig, n: usize) -> Result<f64> {
    if n == 0 {
        return Err(Error::invalid("training set", 0, "has no examples"));
    }
    let q = config.lot_size / n as f64;
    if !(q > 0.0 && q <= 1.0) {
        return Err(Error::invalid(
            "lot size",
            config.lot_size,
            format!("must be in (0, {n}] (the training set size)"),
        ));
    }
    if config.physical_batch == 0 {
        return Err(Error::invalid("physical batch", 0, "must be at least 1"));
    }
    if config.private {
        if !(config.noise_multiplier > 0.0 && config.noise_multiplier.is_finite()) {
            return Err(Error::invalid("noise multiplier", config.noise_multiplier, "must be a finite number > 0"));
        }
        if !(config.max_grad_norm > 0.0 && config.max_grad_norm.is_finite()) {
            return Err(Error::invalid("clipping norm", config.max_grad_norm, "must be a finite number > 0"));
        }
    }
    Ok(q)
}

impl DpSgd {
    /// Starts a new run in `run_dir` (created; must not already hold a ledger) for a training set
    /// of `dataset_size` examples. `seed = None` seeds everything from the OS CSPRNG.
    ///
    /// # Errors
    /// Invalid configuration; I/O errors creating the folder or the ledger.
    pub fn new(
        config: TrainConfig,
        dataset_size: usize,
        run_dir: &Path,
        seed: RunSeed,
        device: Device,
    ) -> Result<Self> {
        Self::start(config, dataset_size, run_dir, seed, device, false)
    }

    /// A run with no folder: the ledger is kept in memory ([`Ledger::in_memory`]) and
    /// [`DpSgd::checkpoint`] / [`DpSgd::save_model`] are refused. For audit replays, which train
    /// thousands of throwaway models from explicit seeds; never for a run whose privacy is reported.
    ///
    /// # Errors
    /// Invalid configuration.
    pub fn ephemeral(config: TrainConfig, dataset_size: usize, seed: u64, device: Device) -> Result<Self> {
        Self::start(config, dataset_size, Path::new(""), Some(seed), device, false)
    }

    /// Starts the run in `run_dir` from scratch but continues the ledger already there (a run
    /// that crashed before its first checkpoint): the steps it recorded stay counted.
    ///
    /// # Errors
    /// As [`DpSgd::new`], and a missing or corrupt ledger.
    pub fn restart_keeping_ledger(
        config: TrainConfig,
        dataset_size: usize,
        run_dir: &Path,
        seed: RunSeed,
        device: Device,
    ) -> Result<Self> {
        Self::start(config, dataset_size, run_dir, seed, device, true)
    }

    fn start(
        config: TrainConfig,
        dataset_size: usize,
        run_dir: &Path,
        seed: RunSeed,
        device: Device,
        keep_ledger: bool,
    ) -> Result<Self> {
        let q = validate(&config, dataset_size)?;
        let ephemeral = run_dir.as_os_str().is_empty();
        if !ephemeral {
            std::fs::create_dir_all(run_dir).map_err(|e| Error::io(format!("creating {}", run_dir.display()), e))?;
        }
        let seed = seed.map_or(NoiseSeed::Secure, NoiseSeed::Explicit);
        let init = seed.to_bytes(RunStream::Initialisation);
        let (vs, model) = crate::torch_rng::seeded_by_key(&init, || -> Result<_> {
            let vs = nn::VarStore::new(device);
            let model = models::build(&config.model, &vs.root())?;
            Ok((vs, model))
        })?;
        if config.private {
            model.check_private()?;
        }
        let params: Vec<Tensor> = model.parameters().into_iter().map(|(_, t)| t).collect();
        let optimizer = Optimizer::new(config.optimizer, config.lr, config.schedule, &params)?;
        let sampler = PoissonSampler::new(dataset_size, q, seed.to_bytes(RunStream::Sampling))?;
        let noise_rng = ChaCha20Rng::from_seed(seed.to_bytes(RunStream::Noise));
        let noise_key = noise_rng.get_seed();
        let mechanism = match config.private {
            true => Some(GaussianSum::new(
                config.noise_multiplier,
                config.max_grad_norm,
                sampler.sampling_rate(),
                sampler.expected_lot_size(),
                LEDGER_LABEL,
                noise_rng,
            )?),
            false => None,
        };
        let mut ledger = match (config.private, keep_ledger) {
            (false, _) => None,
            (true, _) if ephemeral => Some(Ledger::in_memory()),
            (true, false) => Some(Ledger::create(run_dir.join(LEDGER_FILE))?),
            (true, true) => Some(Ledger::open(run_dir.join(LEDGER_FILE))?),
        };
        if let Some(l) = ledger.as_mut() {
            l.set_noise_seeding(seed.seeding());
        }
        Ok(DpSgd {
            config,
            vs,
            model,
            params,
            optimizer,
            sampler,
            noise_key,
            mechanism,
            ledger,
            run_dir: run_dir.to_path_buf(),
            steps: 0,
            dataset_size,
            fault: None,
            adversarial: None,
            public_batch: None,
            canaries: Vec::new(),
            ephemeral,
            average: None,
            noise_seeding: Some(seed.seeding()),
        })
    }

    /// Resumes the run in `run_dir` from its latest checkpoint, continuing the same ledger,
    /// sampler and noise streams.
    ///
    /// The ledger may hold more steps than the checkpoint (steps taken after it, whose updates
    /// were lost in a crash): they stay counted, which over-counts and is safe. Fewer steps than
    /// the checkpoint would mean a lost ledger: an error.
    ///
    /// # Errors
    /// Missing or corrupt checkpoint or ledger; a dataset of a different size.
    pub fn resume(run_dir: &Path, dataset_size: usize, device: Device) -> Result<Self> {
        let pointer = run_dir.join(CHECKPOINT_POINTER);
        let text =
            std::fs::read_to_string(&pointer).map_err(|e| Error::io(format!("reading {}", pointer.display()), e))?;
        let state: CheckpointState = serde_json::from_str(&text).map_err(|e| Error::data(&pointer, e.to_string()))?;
        if state.dataset_size != dataset_size {
            return Err(Error::data(
                &pointer,
                format!("the run was trained on {} examples, the data given has {dataset_size}", state.dataset_size),
            ));
        }
        let q = validate(&state.config, dataset_size)?;
        let folder = run_dir.join(&state.folder);
        let mut vs = nn::VarStore::new(device);
        // The initial draw is overwritten by the checkpoint; held so it cannot disturb a seeded build.
        let model = {
            let _rng = crate::torch_rng::lock();
            models::build(&state.config.model, &vs.root())?
        };
        vs.load(folder.join("model.safetensors"))?;
        let params: Vec<Tensor> = model.parameters().into_iter().map(|(_, t)| t).collect();
        let mut optimizer = Optimizer::new(state.config.optimizer, state.config.lr, state.config.schedule, &params)?;
        let saved = Tensor::read_safetensors(folder.join("optimizer.safetensors"))?;
        optimizer.load_state(&saved, state.steps)?;
        let sampler = PoissonSampler::resume(dataset_size, q, state.sampler)?;
        let mut noise_rng = ChaCha20Rng::from_seed(state.noise_seed);
        noise_rng.set_word_pos(state.noise_word_pos);
        let mechanism = match state.config.private {
            true => {
                let mut m = GaussianSum::new(
                    state.config.noise_multiplier,
                    state.config.max_grad_norm,
                    sampler.sampling_rate(),
                    sampler.expected_lot_size(),
                    LEDGER_LABEL,
                    noise_rng,
                )?;
                m.set_fault(state.fault);
                Some(m)
            }
            false => None,
        };
        let average = match state.average_decay {
            Some(decay) => {
                let path = folder.join(AVERAGE_FILE);
                let saved = Tensor::read_safetensors(&path)?;
                let mut avg = Vec::with_capacity(params.len());
                for (i, p) in params.iter().enumerate() {
                    let t = saved
                        .iter()
                        .find_map(|(n, t)| (*n == i.to_string()).then(|| t.shallow_clone()))
                        .ok_or_else(|| Error::data(&path, format!("has no tensor {i}")))?;
                    if t.size() != p.size() {
                        return Err(Error::data(
                            &path,
                            format!("tensor {i} has shape {:?}, the parameter {:?}", t.size(), p.size()),
                        ));
                    }
                    avg.push(t.f_to_kind(p.kind())?.f_to(device)?);
                }
                Some(ParameterAverage { decay, params: avg })
            }
            None => None,
        };
        let ledger = if state.config.private {
            let mut l = Ledger::open(run_dir.join(LEDGER_FILE))?;
            if let Some(seeding) = state.noise_seeding {
                l.set_noise_seeding(seeding);
            }
            if l.steps() < state.steps {
                return Err(Error::data(
                    l.path(),
                    format!("holds {} steps but the checkpoint is at step {}", l.steps(), state.steps),
                ));
            }
            Some(l)
        } else {
            None
        };
        Ok(DpSgd {
            config: state.config,
            vs,
            model,
            params,
            optimizer,
            sampler,
            noise_key: state.noise_seed,
            mechanism,
            ledger,
            run_dir: run_dir.to_path_buf(),
            steps: state.steps,
            dataset_size,
            fault: state.fault,
            adversarial: state.adversarial,
            public_batch: None,
            canaries: Vec::new(),
            ephemeral: false,
            average,
            noise_seeding: state.noise_seeding,
        })
    }

    /// One DP-SGD step (or a non-private step in baseline mode) on `data`.
    ///
    /// # Errors
    /// NaN/inf in the data, loss or gradients ([`Error::Numerical`]: nothing is recorded or
    /// applied); ledger I/O errors (nothing is applied).
    pub fn step(&mut self, data: &Examples) -> Result<StepReport> {
        if data.len() != self.dataset_size {
            return Err(Error::invalid("training set", data.len(), format!("expected {} examples", self.dataset_size)));
        }
        self.refresh_public_statistics()?;
        let mut lot = self.sampler.next_lot();
        // Indices from `dataset_size` on are the gradient canaries (if any), sampled like every
        // other example; the lot is sorted, so they come last.
        let first_canary = lot.partition_point(|&i| i < self.dataset_size);
        let canaries_in_lot: Vec<usize> =
            lot.split_off(first_canary).into_iter().map(|i| i - self.dataset_size).collect();
        let mut loss_sum = 0.0;
        let mut clipped = 0usize;
        let step = self.steps + 1;
        // PGD's random starts: a stream of this step, so a resumed run replays them.
        let mut pgd_rng = NoiseKeyStream::PgdTraining(step).rng(self.noise_key);
        let grads = if let Some(mechanism) = self.mechanism.as_mut() {
            // The injected no-clip fault is the mechanism's: it clips at 1e30 (nothing).
            let clip_norm = mechanism.clipping_norm();
            let clip = ClipConfig::new(clip_norm);
            let mut sums: Vec<Tensor> =
                self.params.iter().map(|p| p.f_zeros_like()).collect::<std::result::Result<_, _>>()?;
            for chunk in lot.chunks(self.config.physical_batch) {
                let (x, y) = data.select(chunk)?;
                let x = match &self.adversarial {
                    Some(cfg) => pgd(&self.model, &x, &y, cfg, &mut pgd_rng)?,
                    None => x,
                };
                let batch = clip_and_sum(&self.model, &x, &y, &clip)?;
                for (s, c) in sums.iter_mut().zip(&batch.clipped_sum) {
                    let _ = s.f_add_(c)?;
                }
                loss_sum += batch.loss_sum;
                clipped += i64::try_from(batch.clip_factors.f_lt(1.0)?.f_sum(Kind::Int64)?)? as usize;
            }
            for canary in canaries_in_lot.iter().filter_map(|&c| self.canaries.get(c)) {
                let mut sq = 0.0;
                for g in canary {
                    sq += f64::try_from(g.f_square()?.f_sum(Kind::Double)?)?;
                }
                let factor = (clip_norm / sq.sqrt()).min(1.0);
                for (s, g) in sums.iter_mut().zip(canary) {
                    let _ = s.f_add_(&g.f_mul_scalar(factor)?)?;
                }
            }
            let ledger = self
                .ledger
                .as_mut()
                .ok_or_else(|| Error::invalid("ledger", "none", "a private run must have a ledger"))?;
            // Recorded (fsynced) in the ledger before the noisy sum exists outside the mechanism.
            mechanism.release(&sums, step, ledger)?
        } else {
            let mut sums: Vec<Tensor> =
                self.params.iter().map(|p| p.f_zeros_like()).collect::<std::result::Result<_, _>>()?;
            for chunk in lot.chunks(self.config.physical_batch) {
                let (x, y) = data.select(chunk)?;
                let x = match &self.adversarial {
                    Some(cfg) => pgd(&self.model, &x, &y, cfg, &mut pgd_rng)?,
                    None => x,
                };
                let g = nonprivate_gradient(&self.model, &x, &y)?;
                let w = chunk.len() as f64 / lot.len() as f64;
                for (s, gi) in sums.iter_mut().zip(&g.gradients) {
                    let _ = s.f_add_(&gi.f_mul_scalar(w)?)?;
                }
                loss_sum += g.loss_mean * chunk.len() as f64;
            }
            sums
        };
        self.optimizer.step(&self.params, &grads)?;
        self.steps += 1;
        if let Some(avg) = &mut self.average {
            // De et al. 2022's warm-up: early iterates (far from the end point) fade fast.
            let d = warmed_up_decay(avg.decay, self.steps);
            let _guard = tch::no_grad_guard();
            for (a, p) in avg.params.iter_mut().zip(&self.params) {
                let _ = a.f_lerp_(p, 1.0 - d)?; // a = d a + (1 - d) p
            }
        }
        let n = lot.len();
        Ok(StepReport {
            step: self.steps,
            lot_size: n,
            loss: if n == 0 { f64::NAN } else { loss_sum / n as f64 },
            clipped_fraction: if n == 0 { 0.0 } else { clipped as f64 / n as f64 },
        })
    }

    /// Writes a checkpoint: a new folder `checkpoint-{step}/` (model and optimiser as
    /// safetensors), then `checkpoint.json` pointing at it, replaced atomically (write, fsync,
    /// rename); the previous checkpoint folder is removed afterwards. A crash at any point leaves
    /// either the old or the new checkpoint complete.
    ///
    /// # Errors
    /// I/O and libtorch errors.
    pub fn checkpoint(&self) -> Result<()> {
        self.refuse_if_ephemeral("checkpoint")?;
        let name = format!("checkpoint-{}", self.steps);
        let folder = self.run_dir.join(&name);
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(format!("creating {}", folder.display()), e))?;
        self.vs.save(folder.join("model.safetensors"))?;
        Tensor::write_safetensors(&self.optimizer.named_state(), folder.join("optimizer.safetensors"))?;
        for f in ["model.safetensors", "optimizer.safetensors"] {
            sync_file(&folder.join(f))?;
        }
        if let Some(avg) = &self.average {
            let named: Vec<(String, &Tensor)> =
                avg.params.iter().enumerate().map(|(i, t)| (i.to_string(), t)).collect();
            Tensor::write_safetensors(&named, folder.join(AVERAGE_FILE))?;
            sync_file(&folder.join(AVERAGE_FILE))?;
        }
        let previous = std::fs::read_to_string(self.run_dir.join(CHECKPOINT_POINTER))
            .ok()
            .and_then(|t| serde_json::from_str::<CheckpointState>(&t).ok())
            .map(|s| s.folder);
        let state = CheckpointState {
            config: self.config.clone(),
            steps: self.steps,
            dataset_size: self.dataset_size,
            sampler: self.sampler.state(),
            noise_seed: self.noise_key,
            noise_word_pos: self.mechanism.as_ref().map_or(0, |m| m.noise_stream().get_word_pos()),
            folder: name.clone(),
            fault: self.fault,
            adversarial: self.adversarial,
            average_decay: self.average.as_ref().map(|a| a.decay),
            noise_seeding: self.noise_seeding,
        };
        let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::data(&folder, e.to_string()))?;
        write_atomically(&self.run_dir.join(CHECKPOINT_POINTER), &json)?;
        if let Some(old) = previous.filter(|o| *o != name) {
            let _ = std::fs::remove_dir_all(self.run_dir.join(old));
        }
        Ok(())
    }

    /// Keeps an exponential moving average of the parameters with this decay (for example
    /// 0.999), from the next step on; [`DpSgd::use_average`] puts it in the model. A resumed run
    /// keeps the average it had; asking again with the same decay does nothing.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a decay outside (0, 1), or one that differs from the decay
    /// of the run being resumed, or for a run that has taken steps without averaging.
    pub fn set_parameter_averaging(&mut self, decay: f64) -> Result<()> {
        if !(decay > 0.0 && decay < 1.0) {
            return Err(Error::invalid("parameter-average decay", decay, "must be in (0, 1)"));
        }
        match &self.average {
            Some(a) if a.decay == decay => return Ok(()),
            Some(a) => {
                return Err(Error::invalid(
                    "parameter-average decay",
                    decay,
                    format!("the run being resumed averages with decay {}", a.decay),
                ))
            }
            None if self.steps > 0 => {
                return Err(Error::invalid(
                    "parameter-average decay",
                    decay,
                    "the run being resumed was trained without averaging",
                ))
            }
            None => {}
        }
        let params = self.params.iter().map(|p| p.f_detach_copy()).collect::<std::result::Result<Vec<_>, _>>()?;
        self.average = Some(ParameterAverage { decay, params });
        Ok(())
    }

    /// The decay of the parameter average, if the run keeps one.
    pub fn parameter_averaging(&self) -> Option<f64> {
        self.average.as_ref().map(|a| a.decay)
    }

    /// Copies the parameter average into the model (no-op without averaging). Call it after the
    /// last step and checkpoint: a checkpoint keeps both the last iterate and the average.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn use_average(&mut self) -> Result<()> {
        if let Some(avg) = &self.average {
            let _guard = tch::no_grad_guard();
            for (p, a) in self.params.iter_mut().zip(&avg.params) {
                p.f_copy_(a)?;
            }
        }
        Ok(())
    }

    /// Saves the final model as `model.safetensors` in the run folder (atomically).
    ///
    /// # Errors
    /// I/O and libtorch errors.
    pub fn save_model(&self) -> Result<PathBuf> {
        self.refuse_if_ephemeral("save the model of")?;
        let path = self.run_dir.join("model.safetensors");
        let tmp = self.run_dir.join(".model.safetensors.tmp.safetensors");
        self.vs.save(&tmp)?;
        sync_file(&tmp)?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
        Ok(path)
    }

    /// Classification accuracy on `data`, in batches of `physical_batch`.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn accuracy(&self, data: &Examples) -> Result<f64> {
        self.refresh_public_statistics()?;
        let _guard = tch::no_grad_guard();
        let mut correct = 0i64;
        let n = data.len();
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(self.config.physical_batch.max(256)) {
            let (x, y) = data.select(chunk)?;
            let pred = self.model.forward(&x)?.f_argmax(-1, false)?;
            correct += i64::try_from(pred.f_eq_tensor(&y)?.f_sum(Kind::Int64)?)?;
        }
        Ok(if n == 0 { f64::NAN } else { correct as f64 / n as f64 })
    }

    /// Accuracy on PGD adversarial versions of `data` (robust accuracy); the random starts come
    /// from a fixed stream of the run, so the figure is reproducible.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn robust_accuracy(&self, data: &Examples, cfg: &PgdConfig) -> Result<f64> {
        self.refresh_public_statistics()?;
        let mut rng = NoiseKeyStream::PgdEvaluation.rng(self.noise_key);
        let mut correct = 0i64;
        let n = data.len();
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(self.config.physical_batch.max(256)) {
            let (x, y) = data.select(chunk)?;
            let adv = pgd(&self.model, &x, &y, cfg, &mut rng)?;
            let _guard = tch::no_grad_guard();
            let pred = self.model.forward(&adv)?.f_argmax(-1, false)?;
            correct += i64::try_from(pred.f_eq_tensor(&y)?.f_sum(Kind::Int64)?)?;
        }
        Ok(if n == 0 { f64::NAN } else { correct as f64 / n as f64 })
    }

    /// Gives the public examples (images as for [`Examples`], e.g. 128 Fashion-MNIST images for
    /// private MNIST) whose statistics the model's public-data BatchNorm layers use; they are
    /// recomputed from the current model before every step. Needed (and only allowed) for models
    /// with such layers; not kept in checkpoints (give it again after a resume).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a model without public-norm layers or a batch below 2.
    pub fn set_public_batch(&mut self, images: Tensor) -> Result<()> {
        if !self.model.needs_public_batch() {
            return Err(Error::invalid(
                "public batch",
                self.config.model.as_str(),
                "this model has no public-data normalisation layers",
            ));
        }
        self.model.set_public_batch(&images)?;
        self.public_batch = Some(images);
        Ok(())
    }

    fn refresh_public_statistics(&self) -> Result<()> {
        match (&self.public_batch, self.model.needs_public_batch()) {
            (Some(x), _) => self.model.set_public_batch(x),
            (None, true) => Err(Error::invalid(
                "public batch",
                "none",
                format!("model {} normalises with public-data statistics: give a public batch", self.config.model),
            )),
            (None, false) => Ok(()),
        }
    }

    /// Trains on PGD adversarial examples from the next step on (DP + robust).
    pub fn set_adversarial(&mut self, cfg: PgdConfig) {
        self.adversarial = Some(cfg);
    }

    /// The adversarial-training configuration, if any.
    pub fn adversarial(&self) -> Option<PgdConfig> {
        self.adversarial
    }

    /// Steps taken (updates applied) so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The ledger (private runs).
    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_ref()
    }

    /// The ledger, to record a mechanism that runs before training on the same data (DP-PCA,
    /// [`crate::train::pca::dp_pca`]); `None` without privacy.
    pub fn ledger_mut(&mut self) -> Option<&mut Ledger> {
        self.ledger.as_mut()
    }

    /// The sampling rate q = L / N.
    pub fn sampling_rate(&self) -> f64 {
        self.sampler.sampling_rate()
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The network.
    pub fn model(&self) -> &Sequential {
        &self.model
    }

    /// The trainable tensors, in [`Sequential::parameters`] order (white-box audits read the
    /// iterates from them).
    pub fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    /// How the noise stream was seeded (`None`: resumed from a checkpoint that did not say).
    pub fn noise_seeding(&self) -> Option<NoiseSeeding> {
        self.noise_seeding
    }

    /// The injected fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Injects a deliberate bug (see [`Fault`]) from the next step on. For testing audits only:
    /// the run records it and certificates refuse it.
    pub fn inject_fault(&mut self, fault: Fault) {
        self.fault = Some(fault);
        if let Some(m) = self.mechanism.as_mut() {
            m.set_fault(Some(fault));
        }
    }

    /// Adds a gradient-space canary (Nasr et al. 2021, 2023): one more "example" whose gradient
    /// is always `gradient` (one tensor per parameter), whatever the model. It is Poisson-sampled
    /// with the same rate q as the real examples, then clipped and noised like them, so the run is
    /// DP-SGD on the dataset plus one record. Must be called before the first step.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] after the first step, for a second canary, shapes that do not
    /// match the parameters, or a non-finite gradient.
    pub fn add_gradient_canary(&mut self, gradient: Vec<Tensor>) -> Result<()> {
        if !self.canaries.is_empty() {
            return Err(Error::invalid(
                "gradient canary",
                "repeated",
                "add one canary, or all of them with add_gradient_canaries",
            ));
        }
        self.add_gradient_canaries(vec![gradient])
    }

    /// Adds several gradient canaries at once (the one-run audit of Steinke et al. 2023): each
    /// is one more record, Poisson-sampled on its own like every example.
    ///
    /// # Errors
    /// As [`DpSgd::add_gradient_canary`].
    pub fn add_gradient_canaries(&mut self, gradients: Vec<Vec<Tensor>>) -> Result<()> {
        if self.steps > 0 || !self.canaries.is_empty() {
            return Err(Error::invalid(
                "gradient canaries",
                "late or repeated",
                "add them once, before the first step",
            ));
        }
        let mut all = Vec::with_capacity(gradients.len());
        for gradient in gradients {
            all.push(self.check_canary(gradient)?);
        }
        self.sampler.add_examples(all.len());
        self.canaries = all;
        Ok(())
    }

    fn check_canary(&self, gradient: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if gradient.len() != self.params.len() {
            return Err(Error::invalid(
                "gradient canary",
                gradient.len(),
                format!("needs one tensor per parameter ({})", self.params.len()),
            ));
        }
        for (g, p) in gradient.iter().zip(&self.params) {
            if g.size() != p.size() {
                return Err(Error::invalid(
                    "gradient canary shape",
                    format!("{:?}", g.size()),
                    format!("expected {:?}", p.size()),
                ));
            }
            if !bool::try_from(g.f_isfinite()?.f_all()?)? {
                return Err(Error::invalid("gradient canary", "NaN or infinity", "must be finite"));
            }
        }
        Ok(gradient
            .iter()
            .map(|g| g.f_to_kind(Kind::Float)?.f_to(self.params[0].device()))
            .collect::<std::result::Result<Vec<_>, _>>()?)
    }

    fn refuse_if_ephemeral(&self, what: &str) -> Result<()> {
        if self.ephemeral {
            return Err(Error::invalid("run", "ephemeral (audit replay)", format!("has no folder; cannot {what} it")));
        }
        Ok(())
    }
}

use crate::durable::sync_file;
pub use crate::durable::write_atomically;
