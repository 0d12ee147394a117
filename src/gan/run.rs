//! A whole GAN training run, as `dpaudit gan train` does it: epochs to discriminator steps,
//! optional calibration of sigma to a target epsilon (up front), the loop, then the networks,
//! `gan.json`, `metrics.json` (per-epoch losses, epsilons from the ledger) and one sample grid
//! per epoch in the run folder. Checkpoints (`checkpoint.json` pointing at `checkpoint-{step}/`)
//! let a killed run continue with `resume` to the same generator as an uninterrupted one; the
//! ledger stays the source of truth ([`train_gan`]'s resume contract is that of `train --resume`).
use super::dpgan::{latents, DpGan, DpGanState, GanConfig};
use super::image::write_grid_png;
use super::networks::CLASSES;
use crate::accounting::ledger::Ledger;
use crate::accounting::pld::PldAccountant;
use crate::accounting::rdp;
use crate::accounting::Phase;
use crate::data::{sha256_file, Dataset};
use crate::durable::{sync_file, write_atomically};
use crate::error::{Error, Result};
use crate::folder_lock::{FolderLock, LOCK_FILE};
use crate::recipe::{resolve_noise, CalibrationAccountant, NoiseProvenance, Privacy, Recipe};
use crate::train::dpsgd::{Examples, CHECKPOINT_POINTER, LEDGER_FILE};
use crate::train::noise::NoiseSeed;
use crate::train::run::AccountedEpsilon;
use crate::train::streams::RunStream;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The generator's file in a run folder.
pub const GENERATOR_FILE: &str = crate::run_folder::GENERATOR_FILE;
/// The discriminator's file in a run folder.
pub const DISCRIMINATOR_FILE: &str = crate::run_folder::DISCRIMINATOR_FILE;
/// The run description `gan sample` reads.
pub const GAN_FILE: &str = crate::run_folder::GAN_FILE;

/// What to run.
#[derive(Debug, Clone)]
pub struct GanRunSpec {
    /// The configuration (its noise multiplier is replaced when `target_epsilon` is set).
    pub config: GanConfig,
    /// Epochs: discriminator steps = ceil(epochs / q), rounded up to a multiple of n_critic.
    pub epochs: f64,
    /// Delta of the reported epsilons.
    pub delta: f64,
    /// Calibrate sigma up front (RDP accountant) so the epsilon after all steps is at most this.
    pub target_epsilon: Option<f64>,
    /// Seed (None: OS CSPRNG, not replayable).
    pub seed: Option<u64>,
    /// Replace an existing run folder.
    pub force: bool,
    /// Continue the run in the folder from its latest checkpoint (same options required).
    pub resume: bool,
    /// Checkpoint every this many discriminator steps (at the end of the generator round that
    /// reaches a multiple; 0: only at the end).
    pub checkpoint_every: u64,
}

impl GanRunSpec {
    /// The run a GAN recipe (one with a `[gan]` table) describes, with this invocation's seed and
    /// folder options. A target epsilon is calibrated (RDP accountant) by [`train_gan_recipe`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a recipe that is not a valid GAN recipe.
    pub fn from_recipe(
        recipe: &Recipe,
        seed: Option<u64>,
        force: bool,
        resume: bool,
        checkpoint_every: u64,
    ) -> Result<Self> {
        recipe.validate()?;
        let (noise_multiplier, target_epsilon) = match recipe.privacy {
            Privacy::Gaussian { noise_multiplier } => (noise_multiplier, None),
            // Replaced by the calibrated sigma before anything is trained or written.
            Privacy::TargetEpsilon { epsilon, .. } => (f64::NAN, Some(epsilon)),
            Privacy::Off => return Err(Error::invalid("privacy", "off", "a DP-GAN always has privacy")),
        };
        let config = recipe
            .gan_config(noise_multiplier)
            .ok_or_else(|| Error::invalid("gan", "none", "the recipe has no [gan] table"))?;
        let epochs = recipe.epochs.ok_or_else(|| Error::invalid("epochs", "none", "a GAN recipe gives epochs"))?;
        Ok(GanRunSpec { config, epochs, delta: recipe.delta, target_epsilon, seed, force, resume, checkpoint_every })
    }
}

/// `gan.json`: what `gan sample` needs to rebuild the generator and account the release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GanRunInfo {
    /// `dpaudit` version.
    pub tool_version: String,
    /// The configuration (with the noise multiplier actually used).
    pub config: GanConfig,
    /// Delta of the reported epsilons.
    pub delta: f64,
    /// Training set name.
    pub train_dataset: String,
    /// Training examples N.
    pub train_examples: usize,
    /// SHA-256 of the training data's content.
    pub train_data_sha256: String,
    /// Seed (null: OS CSPRNG).
    pub seed: Option<u64>,
    /// How the discriminator's noise was seeded (`csprng` or `seeded`; absent in older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_seeding: Option<crate::train::noise::NoiseSeeding>,
    /// Epochs asked for (absent in runs written before `gan train --resume` existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// The target epsilon sigma was calibrated for, if any (absent in older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_epsilon: Option<f64>,
}

pub use crate::run_folder::manifest::EpochLosses;

/// The contents of `metrics.json` ([`crate::run_folder::manifest::GanMetrics`], written with the
/// full configuration).
pub type GanMetrics = crate::run_folder::manifest::GanMetrics<GanConfig>;

/// Progress after each generator step: (discriminator steps done, total, running RDP epsilon).
pub type Progress<'a> = dyn FnMut(u64, u64, f64) + 'a;

/// Epsilons of `phases` at `delta` from the RDP and the PLD accountant.
///
/// # Errors
/// Accountant errors.
pub fn epsilons_of(phases: &[Phase], delta: f64) -> Result<Vec<AccountedEpsilon>> {
    if phases.is_empty() {
        return Ok(Vec::new());
    }
    let r = rdp::epsilon(phases, delta)?;
    let p = PldAccountant::default().epsilon(phases, delta)?;
    Ok(vec![
        AccountedEpsilon {
            accountant: "rdp".into(),
            epsilon: r.epsilon,
            delta,
            detail: serde_json::to_value(r).unwrap_or_default(),
        },
        AccountedEpsilon {
            accountant: "pld".into(),
            epsilon: p.epsilon,
            delta,
            detail: serde_json::to_value(p).unwrap_or_default(),
        },
    ])
}

/// Images (B, 1, 28, 28) in [0, 1] to u8 pixels, rounded.
///
/// # Errors
/// libtorch errors.
pub fn to_u8(images: &Tensor) -> Result<Vec<u8>> {
    let t = images
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_clamp(0.0, 255.0)?
        .f_to_kind(Kind::Uint8)?
        .f_to(Device::Cpu)?
        .f_contiguous()?
        .f_reshape([-1])?;
    Ok(Vec::<u8>::try_from(&t)?)
}

/// Writes a grid of the generator's images for fixed latents: row r holds `per_row` images of
/// label r (eval mode).
fn write_epoch_grid(gan: &DpGan, seed: NoiseSeed, path: &Path) -> Result<()> {
    let per_row = 10i64;
    let mut rng = ChaCha20Rng::from_seed(seed.to_bytes(RunStream::GanEpochGrid));
    let device = gan.released_generator().var_store().device();
    let (z, _) = latents(&mut rng, CLASSES * per_row, gan.config().z_dim, device)?;
    let labels = Tensor::f_arange(CLASSES, (Kind::Int64, device))?.f_repeat_interleave_self_int(per_row, None, None)?;
    let _g = tch::no_grad_guard();
    let pixels = to_u8(&gan.released_generator().forward(&z, &labels, false)?)?;
    let images: Vec<&[u8]> = pixels.chunks(784).collect();
    write_grid_png(path, &images, 28, per_row as usize)
}

/// Samples beside their nearest training image (L2 in pixel space), the seed paper's Figure 3:
/// two samples per label, each followed by its nearest real image.
fn write_nearest_figure(gan: &DpGan, train: &Examples, seed: NoiseSeed, path: &Path) -> Result<()> {
    let per = 2i64;
    let mut rng = ChaCha20Rng::from_seed(seed.to_bytes(RunStream::GanNearestFigure));
    let device = gan.released_generator().var_store().device();
    let (z, _) = latents(&mut rng, CLASSES * per, gan.config().z_dim, device)?;
    let labels = Tensor::f_arange(CLASSES, (Kind::Int64, device))?.f_repeat_interleave_self_int(per, None, None)?;
    let _g = tch::no_grad_guard();
    let fake = gan.released_generator().forward(&z, &labels, false)?.f_reshape([CLASSES * per, -1])?;
    let real = train.images.f_reshape([train.len() as i64, -1])?;
    let mut best_d = Tensor::f_full([CLASSES * per], f64::INFINITY, (Kind::Float, device))?;
    let mut best_i = Tensor::f_zeros([CLASSES * per], (Kind::Int64, device))?;
    let chunk = 4096i64;
    let mut start = 0i64;
    let n = train.len() as i64;
    while start < n {
        let len = chunk.min(n - start);
        let r = real.f_narrow(0, start, len)?;
        let d = Tensor::f_cdist(&fake, &r, 2.0, None::<i64>)?; // (F, len)
        let (m, i) = d.f_min_dim(1, false)?;
        let better = m.f_lt_tensor(&best_d)?;
        best_d = best_d.f_where_self(&better.f_logical_not()?, &m)?;
        best_i = best_i.f_where_self(&better.f_logical_not()?, &i.f_add_scalar(start)?)?;
        start += len;
    }
    let nearest = real.f_index_select(0, &best_i)?;
    let pairs = Tensor::f_stack(&[fake, nearest], 1)?.f_reshape([-1, 1, 28, 28])?;
    let pixels = to_u8(&pairs)?;
    let images: Vec<&[u8]> = pixels.chunks(784).collect();
    write_grid_png(path, &images, 28, 8)
}

fn save_var_store(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.safetensors",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    vs.save(&tmp)?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

/// Prepares `out` as a new run folder, locked by `lock`: refuses a non-empty one unless `force`
/// (then empties it, keeping the lock file).
fn fresh_folder(lock: &FolderLock, force: bool) -> Result<()> {
    let out = lock.folder();
    let listing_error = |e| Error::io(format!("reading {}", out.display()), e);
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(out).map_err(listing_error)? {
        let entry = entry.map_err(listing_error)?;
        if entry.file_name() != LOCK_FILE {
            entries.push(entry.path());
        }
    }
    if !entries.is_empty() && !force && out.join(LEDGER_FILE).exists() {
        return Err(Error::invalid(
            "output folder",
            out.display(),
            "already holds a run (ledger.jsonl); use --resume to continue it, or --force to replace it (its ledger included), or choose another --out",
        ));
    }
    if !entries.is_empty() && !force {
        return Err(Error::invalid(
            "output folder",
            out.display(),
            "already exists and is not empty; choose another --out or give --force to replace it",
        ));
    }
    for path in entries {
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
    }
    Ok(())
}

/// Trains a private GAN on `train` into `out`.
///
/// # Errors
/// Invalid parameters; an existing output without `force`; data, ledger, numerical or I/O errors.
pub fn train_gan(
    spec: &GanRunSpec,
    train: &Dataset,
    out: &Path,
    device: Device,
    progress: &mut Progress<'_>,
) -> Result<GanMetrics> {
    train_gan_recipe(spec, None, train, out, device, progress)
}

/// [`train_gan`] of the run `recipe` describes (`spec` from [`GanRunSpec::from_recipe`]): a
/// fresh run writes `recipe.toml` into `out` before its ledger, and a resumed run is refused,
/// before its ledger is opened, when its `recipe.toml` records another recipe.
///
/// # Errors
/// As [`train_gan`]; [`Error::InvalidParameter`] naming every field in which `recipe` differs
/// from the resumed run's `recipe.toml`.
pub fn train_gan_recipe(
    spec: &GanRunSpec,
    recipe: Option<&Recipe>,
    train: &Dataset,
    out: &Path,
    device: Device,
    progress: &mut Progress<'_>,
) -> Result<GanMetrics> {
    let start = Instant::now();
    crate::device::check_available(device)?;
    let n = train.len();
    let s = train.shape();
    if (s.channels, s.height, s.width) != (1, 28, 28) {
        return Err(Error::invalid("training images", format!("{s:?}"), "the GAN generates 1 x 28 x 28 images"));
    }
    if train.classes() != CLASSES as usize {
        return Err(Error::invalid("classes", train.classes(), "the GAN is conditioned on 10 labels"));
    }
    crate::accounting::validate_delta(spec.delta)?;
    if !(spec.epochs > 0.0 && spec.epochs.is_finite()) {
        return Err(Error::invalid("epochs", spec.epochs, "must be a finite number > 0"));
    }
    let mut config = spec.config.clone();
    let q = super::dpgan::validate_all_but_noise(&config, n)?;
    let n_critic = u64::from(config.n_critic);
    let total = ((spec.epochs / q).ceil() as u64).div_ceil(n_critic) * n_critic;
    let steps_per_epoch = (1.0 / q).ceil() as u64;
    let privacy = match spec.target_epsilon {
        Some(epsilon) => Privacy::TargetEpsilon { epsilon, accountant: CalibrationAccountant::Rdp },
        None => Privacy::Gaussian { noise_multiplier: spec.config.noise_multiplier },
    };
    // The one calibration of dpaudit (a DP-GAN always has privacy, so there is always a sigma).
    let noise = resolve_noise(&privacy, &[], q, total, spec.delta)?
        .ok_or_else(|| Error::invalid("noise multiplier", "none", "a DP-GAN needs one"))?;
    config.noise_multiplier = noise.noise_multiplier;
    let sigma_source = match &noise.provenance {
        NoiseProvenance::Given => format!("given: {}", noise.noise_multiplier),
        NoiseProvenance::Calibrated { target_epsilon, .. } => format!(
            "calibrated up front (RDP accountant, Poisson, q = {q}, {total} discriminator steps, delta = {}) for target epsilon {target_epsilon}: sigma = {}",
            spec.delta, noise.noise_multiplier
        ),
    };
    // One writer per run folder, before anything in it is removed or written.
    let lock = FolderLock::acquire(out)?;
    let seed = spec.seed.map_or(NoiseSeed::Secure, NoiseSeed::Explicit);
    let info = GanRunInfo {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        config: config.clone(),
        delta: spec.delta,
        train_dataset: train.name().to_owned(),
        train_examples: n,
        train_data_sha256: train.content_sha256(),
        seed: spec.seed,
        noise_seeding: Some(seed.seeding()),
        epochs: Some(spec.epochs),
        target_epsilon: spec.target_epsilon,
    };
    let examples = Examples::from_dataset(train, device)?;
    let ledger_path = out.join(LEDGER_FILE);
    let (mut gan, mut progress_state) = if spec.resume {
        if spec.force {
            return Err(Error::invalid(
                "output folder",
                out.display(),
                "--resume continues the run in it and --force replaces it: give one of them",
            ));
        }
        resume_run(out, &info, recipe, &examples, seed, device)?
    } else {
        fresh_folder(&lock, spec.force)?;
        if let Some(r) = recipe {
            write_atomically(&out.join(crate::run_folder::RECIPE_FILE), r.to_toml()?.as_bytes())?;
        }
        write_run_info(out, &info)?;
        let mut ledger = Ledger::create(&ledger_path)?;
        ledger.set_noise_seeding(seed.seeding());
        (DpGan::new(config.clone(), n, ledger, seed, device)?, RunProgress::default())
    };
    let mut last_checkpoint = gan.discriminator_steps();
    while gan.discriminator_steps() < total {
        let (reports, g) = gan.round(&examples)?;
        let p = &mut progress_state;
        p.g_sum += g;
        p.g_n += 1;
        for r in &reports {
            if r.real_loss.is_finite() {
                p.r_sum += r.real_loss;
                p.r_n += 1;
            }
            if r.fake_loss.is_finite() {
                p.f_sum += r.fake_loss;
                p.f_n += 1;
            }
            if r.clipped_fraction.is_finite() {
                p.c_sum += r.clipped_fraction;
                p.c_n += 1;
            }
        }
        let eps = rdp::epsilon(&gan.ledger().phases()?, spec.delta)?.epsilon;
        progress(gan.discriminator_steps(), total, eps);
        let done = gan.discriminator_steps() >= total;
        if gan.discriminator_steps() >= (p.epoch + 1) * steps_per_epoch || done {
            p.epoch += 1;
            let grid = format!("samples-epoch-{:03}.png", p.epoch);
            write_epoch_grid(&gan, seed, &out.join(&grid))?;
            let mean = |s: f64, k: u64| if k == 0 { f64::NAN } else { s / k as f64 };
            let losses = EpochLosses {
                epoch: p.epoch,
                discriminator_steps: gan.discriminator_steps(),
                generator_steps: gan.generator_steps(),
                generator_loss: mean(p.g_sum, p.g_n),
                discriminator_real_loss: mean(p.r_sum, p.r_n),
                discriminator_fake_loss: mean(p.f_sum, p.f_n),
                clipped_fraction: mean(p.c_sum, p.c_n),
                grid,
            };
            *p = RunProgress { epoch: p.epoch, per_epoch: std::mem::take(&mut p.per_epoch), ..Default::default() };
            p.per_epoch.push(losses);
        }
        let every = spec.checkpoint_every;
        if every > 0 && gan.discriminator_steps() / every > last_checkpoint / every && !done {
            write_checkpoint(out, &gan, &progress_state)?;
            last_checkpoint = gan.discriminator_steps();
        }
    }
    // The finished state too: a run killed while writing its outputs resumes with nothing to redo.
    write_checkpoint(out, &gan, &progress_state)?;
    let per_epoch = progress_state.per_epoch;
    let g_path = out.join(GENERATOR_FILE);
    let d_path = out.join(DISCRIMINATOR_FILE);
    save_var_store(gan.released_generator().var_store(), &g_path)?;
    save_var_store(gan.discriminator().var_store(), &d_path)?;
    let nearest = "nearest_training_images.png";
    write_nearest_figure(&gan, &examples, seed, &out.join(nearest))?;
    let phases = gan.ledger().phases()?;
    let metrics = GanMetrics {
        schema_version: crate::run_folder::manifest::SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        design: config.design.to_string(),
        epsilon_status: config.design.epsilon_status().into(),
        epsilons: epsilons_of(&phases, spec.delta)?,
        sampling: "poisson".into(),
        sampling_rate: q,
        phases,
        ledger_steps: gan.ledger().steps(),
        discriminator_steps: gan.discriminator_steps(),
        generator_steps: gan.generator_steps(),
        noise_multiplier_source: sigma_source,
        noise_multiplier_provenance: Some(noise.provenance.clone()),
        config,
        epochs: spec.epochs,
        seed: spec.seed,
        noise_seeding: Some(Some(seed.seeding()).into()),
        per_epoch,
        losses_note: "discriminator_real_loss is measured on the private training lots without noise and is NOT covered by epsilon: a tuning aid for the operator, never to be released (gan sample's release.json does not include it)".into(),
        wall_seconds: start.elapsed().as_secs_f64(),
        train_dataset: train.name().to_owned(),
        train_examples: n,
        train_data_sha256: train.content_sha256(),
        generator_sha256: sha256_file(&g_path)?,
        discriminator_sha256: sha256_file(&d_path)?,
        nearest_figure: format!("{nearest}: generated samples (left of each pair) beside their nearest training image in pixel space (the seed paper's Figure 3); it shows private training images, never release it"),
        device: Some(crate::device::name(device)),
    };
    crate::run_folder::manifest::write_manifest(&out.join(crate::run_folder::METRICS_FILE), &metrics)?;
    Ok(metrics)
}

/// Where the loop of [`train_gan`] stands besides the networks: the finished epochs' losses and
/// the running sums of the current epoch (kept in checkpoints, so that a resumed run reports the
/// same per-epoch losses as an uninterrupted one).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunProgress {
    epoch: u64,
    per_epoch: Vec<EpochLosses>,
    g_sum: f64,
    g_n: u64,
    r_sum: f64,
    r_n: u64,
    f_sum: f64,
    f_n: u64,
    c_sum: f64,
    c_n: u64,
}

/// `checkpoint.json` of a GAN run: the state of the networks' folder and of the loop.
#[derive(Debug, Serialize, Deserialize)]
struct GanCheckpoint {
    /// The checkpoint folder (relative to the run folder) holding the tensors.
    folder: String,
    gan: DpGanState,
    progress: RunProgress,
}

/// Writes a checkpoint as [`crate::train::dpsgd::DpSgd::checkpoint`] does: a new folder
/// `checkpoint-{discriminator steps}/` (networks and optimisers, fsynced), then `checkpoint.json`
/// pointing at it, replaced atomically; the previous folder is removed afterwards. A crash at any
/// point leaves the old or the new checkpoint complete.
fn write_checkpoint(out: &Path, gan: &DpGan, progress: &RunProgress) -> Result<()> {
    let name = format!("checkpoint-{}", gan.discriminator_steps());
    let previous = read_checkpoint(out).ok().flatten().map(|c| c.folder);
    if previous.as_deref() == Some(name.as_str()) {
        // The latest checkpoint is of this very state (a finished run resumed): keep it.
        return Ok(());
    }
    let folder = out.join(&name);
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(format!("creating {}", folder.display()), e))?;
    let state = gan.write_checkpoint_files(&folder)?;
    let pointer = out.join(CHECKPOINT_POINTER);
    let checkpoint = GanCheckpoint { folder: name.clone(), gan: state, progress: progress.clone() };
    let json = serde_json::to_vec_pretty(&checkpoint).map_err(|e| Error::data(&pointer, e.to_string()))?;
    write_atomically(&pointer, &json)?;
    if let Some(old) = previous.filter(|o| *o != name) {
        let _ = std::fs::remove_dir_all(out.join(old));
    }
    Ok(())
}

/// The run's `checkpoint.json`, `None` when there is none.
fn read_checkpoint(out: &Path) -> Result<Option<GanCheckpoint>> {
    let pointer = out.join(CHECKPOINT_POINTER);
    let text = match std::fs::read_to_string(&pointer) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", pointer.display()), e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::data(&pointer, format!("corrupt GAN checkpoint: {e}")))
}

fn write_run_info(out: &Path, info: &GanRunInfo) -> Result<()> {
    write_atomically(
        &out.join(GAN_FILE),
        &serde_json::to_vec_pretty(info).map_err(|e| Error::data(out, e.to_string()))?,
    )
}

/// The first option in which `asked` differs from the run's `gan.json`, as (name, run's value,
/// asked value).
fn differing_option(run: &GanRunInfo, asked: &GanRunInfo) -> Option<(&'static str, String, String)> {
    let pair = |name, a: String, b: String| (a != b).then_some((name, a, b));
    let opt = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |x| x.to_string());
    let seed = |v: Option<u64>| v.map_or_else(|| "none (OS CSPRNG)".to_owned(), |x| x.to_string());
    let c = (&run.config, &asked.config);
    pair("training data (sha256)", run.train_data_sha256.clone(), asked.train_data_sha256.clone())
        .or_else(|| pair("epochs", opt(run.epochs), opt(asked.epochs)))
        .or_else(|| pair("target epsilon", opt(run.target_epsilon), opt(asked.target_epsilon)))
        .or_else(|| pair("delta", run.delta.to_string(), asked.delta.to_string()))
        .or_else(|| pair("seed", seed(run.seed), seed(asked.seed)))
        .or_else(|| pair("design", c.0.design.to_string(), c.1.design.to_string()))
        .or_else(|| pair("noise multiplier", c.0.noise_multiplier.to_string(), c.1.noise_multiplier.to_string()))
        .or_else(|| (c.0 != c.1).then(|| ("configuration", format!("{:?}", c.0), format!("{:?}", c.1))))
}

/// Continues the GAN run in `out` (locked by the caller): checks that `asked` (this
/// invocation's options) are the run's, then restores the latest checkpoint, or, for a run
/// killed before its first checkpoint, starts it over keeping its ledger.
///
/// # Proof definition
/// The ledger stays the source of truth and is never rewritten: it is opened for appending, must
/// hold at least the checkpoint's discriminator steps, and steps it recorded after the checkpoint
/// (their updates lost in the crash) stay counted while the resumed run takes them again: an
/// over-count, which is safe, as for `train --resume` ([`crate::train::dpsgd::DpSgd::resume`]).
/// The checkpoint holds the position of every random stream, so the resumed run draws the lots,
/// noise and latents the uninterrupted run would have drawn (a seeded run gives the same
/// generator, bit for bit: `tests/gan_resume.rs`).
fn resume_run(
    out: &Path,
    asked: &GanRunInfo,
    recipe: Option<&Recipe>,
    examples: &Examples,
    seed: NoiseSeed,
    device: Device,
) -> Result<(DpGan, RunProgress)> {
    let ledger_path = out.join(LEDGER_FILE);
    let run_info = match read_run_info(out) {
        Ok(info) => info,
        Err(_) if !ledger_path.exists() && !out.join(CHECKPOINT_POINTER).exists() => {
            return Err(Error::invalid(
                "output folder",
                out.display(),
                "holds no GAN run to resume (no gan.json and no ledger); start one without --resume",
            ))
        }
        Err(e) => return Err(e),
    };
    let recipe_path = out.join(crate::run_folder::RECIPE_FILE);
    if let (Some(asked_recipe), true) = (recipe, recipe_path.exists()) {
        let differences = asked_recipe.differences_from(&Recipe::load(&recipe_path)?);
        if !differences.is_empty() {
            let words: Vec<String> = differences
                .iter()
                .map(|d| {
                    format!(
                        "{} says {} {}, this invocation asks for {}",
                        crate::run_folder::RECIPE_FILE,
                        d.field,
                        d.recorded,
                        d.asked
                    )
                })
                .collect();
            return Err(Error::invalid(
                "resumed recipe",
                out.display(),
                format!(
                    "{}; a run is resumed with the recipe it started with (nothing was trained, the ledger is unchanged)",
                    words.join("; ")
                ),
            ));
        }
    }
    if let Some((name, was, now)) = differing_option(&run_info, asked) {
        return Err(Error::invalid(
            "resume",
            out.display(),
            format!("the run was started with {name} {was}, this invocation asks for {now}; resume with the run's options (see its gan.json)"),
        ));
    }
    let mut ledger = if ledger_path.exists() { Ledger::open(&ledger_path)? } else { Ledger::create(&ledger_path)? };
    ledger.set_noise_seeding(seed.seeding());
    match read_checkpoint(out)? {
        Some(c) => {
            if c.gan.config != asked.config || c.gan.dataset_size != asked.train_examples {
                return Err(Error::data(
                    out.join(CHECKPOINT_POINTER),
                    "does not match the run's gan.json (configuration or training-set size)",
                ));
            }
            let gan = DpGan::from_checkpoint(c.gan, &out.join(&c.folder), ledger, device)?;
            Ok((gan, c.progress))
        }
        // Killed before the first checkpoint: start over, keeping every step already recorded.
        None => Ok((DpGan::new(asked.config.clone(), examples.len(), ledger, seed, device)?, RunProgress::default())),
    }
}

/// Reads a run folder's `gan.json`.
///
/// # Errors
/// [`Error::Data`] naming the file when it is missing or unreadable.
pub fn read_run_info(run: &Path) -> Result<GanRunInfo> {
    let p: PathBuf = run.join(GAN_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        Error::data(
            &p,
            format!(
                "cannot read the GAN run description ({e}); is {} a folder written by `dpaudit gan train`?",
                run.display()
            ),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Error::data(&p, format!("corrupt GAN run description: {e}")))
}
