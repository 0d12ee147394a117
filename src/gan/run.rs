//! A whole GAN training run, as `dpaudit gan train` does it: epochs to discriminator steps,
//! optional calibration of sigma to a target epsilon (up front), the loop, then the networks,
//! `gan.json`, `metrics.json` (per-epoch losses, epsilons from the ledger) and one sample grid
//! per epoch in the run folder.
use super::dpgan::{latents, DpGan, GanConfig};
use super::image::write_grid_png;
use super::networks::CLASSES;
use crate::accounting::calibration::noise_multiplier_for_epsilon;
use crate::accounting::ledger::Ledger;
use crate::accounting::pld::PldAccountant;
use crate::accounting::rdp::{self, RdpAccountant};
use crate::accounting::Phase;
use crate::data::{sha256_file, Dataset};
use crate::durable::{sync_file, write_atomically};
use crate::error::{Error, Result};
use crate::folder_lock::{FolderLock, LOCK_FILE};
use crate::train::dpsgd::{Examples, LEDGER_FILE};
use crate::train::noise::NoiseSeed;
use crate::train::run::AccountedEpsilon;
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
/// Stream of the fixed latents behind the per-epoch grids.
const GRID_STREAM: u64 = 5;

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
    let mut rng = ChaCha20Rng::from_seed(seed.to_bytes(GRID_STREAM));
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
    let mut rng = ChaCha20Rng::from_seed(seed.to_bytes(GRID_STREAM + 1));
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
    if spec.target_epsilon.is_some() {
        config.noise_multiplier = 1.0; // placeholder for validation; replaced below
    }
    let q = super::dpgan::validate(&config, n)?;
    let n_critic = u64::from(config.n_critic);
    let total = ((spec.epochs / q).ceil() as u64).div_ceil(n_critic) * n_critic;
    let steps_per_epoch = (1.0 / q).ceil() as u64;
    let mut sigma_source = format!("given: {}", spec.config.noise_multiplier);
    if let Some(target) = spec.target_epsilon {
        let cal = noise_multiplier_for_epsilon(target, q, total, spec.delta, &RdpAccountant::default())?;
        config.noise_multiplier = cal.noise_multiplier;
        sigma_source = format!(
            "calibrated up front (RDP accountant, Poisson, q = {q}, {total} discriminator steps, delta = {}) for target epsilon {target}: sigma = {}",
            spec.delta, cal.noise_multiplier
        );
    }
    // One writer per run folder, before anything in it is removed or written.
    let lock = FolderLock::acquire(out)?;
    fresh_folder(&lock, spec.force)?;
    let seed = spec.seed.map_or(NoiseSeed::Secure, NoiseSeed::Explicit);
    let mut ledger = Ledger::create(out.join(LEDGER_FILE))?;
    ledger.set_noise_seeding(seed.seeding());
    let examples = Examples::from_dataset(train, device)?;
    let mut gan = DpGan::new(config.clone(), n, ledger, seed, device)?;
    let info = GanRunInfo {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        config: config.clone(),
        delta: spec.delta,
        train_dataset: train.name().to_owned(),
        train_examples: n,
        train_data_sha256: train.content_sha256(),
        seed: spec.seed,
        noise_seeding: Some(seed.seeding()),
    };
    write_atomically(
        &out.join(GAN_FILE),
        &serde_json::to_vec_pretty(&info).map_err(|e| Error::data(out, e.to_string()))?,
    )?;
    let mut per_epoch = Vec::new();
    let (mut g_sum, mut g_n, mut r_sum, mut r_n, mut f_sum, mut f_n, mut c_sum, mut c_n) =
        (0.0, 0u64, 0.0, 0u64, 0.0, 0u64, 0.0, 0u64);
    let mut epoch = 0u64;
    while gan.discriminator_steps() < total {
        let (reports, g) = gan.round(&examples)?;
        g_sum += g;
        g_n += 1;
        for r in &reports {
            if r.real_loss.is_finite() {
                r_sum += r.real_loss;
                r_n += 1;
            }
            if r.fake_loss.is_finite() {
                f_sum += r.fake_loss;
                f_n += 1;
            }
            if r.clipped_fraction.is_finite() {
                c_sum += r.clipped_fraction;
                c_n += 1;
            }
        }
        let eps = rdp::epsilon(&gan.ledger().phases()?, spec.delta)?.epsilon;
        progress(gan.discriminator_steps(), total, eps);
        let done = gan.discriminator_steps() >= total;
        if gan.discriminator_steps() >= (epoch + 1) * steps_per_epoch || done {
            epoch += 1;
            let grid = format!("samples-epoch-{epoch:03}.png");
            write_epoch_grid(&gan, seed, &out.join(&grid))?;
            let mean = |s: f64, k: u64| if k == 0 { f64::NAN } else { s / k as f64 };
            per_epoch.push(EpochLosses {
                epoch,
                discriminator_steps: gan.discriminator_steps(),
                generator_steps: gan.generator_steps(),
                generator_loss: mean(g_sum, g_n),
                discriminator_real_loss: mean(r_sum, r_n),
                discriminator_fake_loss: mean(f_sum, f_n),
                clipped_fraction: mean(c_sum, c_n),
                grid,
            });
            (g_sum, g_n, r_sum, r_n, f_sum, f_n, c_sum, c_n) = (0.0, 0, 0.0, 0, 0.0, 0, 0.0, 0);
        }
    }
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
