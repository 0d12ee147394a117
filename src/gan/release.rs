//! `dpaudit gan sample`: a labelled synthetic dataset from a trained generator, in the MNIST
//! format (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`), with `grid.png`, a copy
//! of the run's `ledger.jsonl` (so the release's epsilon can be re-derived from the release) and a
//! `release.json` that carries its provenance: the generator's SHA-256, the ledger summary, the
//! epsilon per accountant (labelled "claimed" for the noise-layer design), the design, and the
//! SHA-256 of every released file.
//!
//! Everything is written into a temporary sibling folder that is renamed into place at the end,
//! so a failure leaves no partial output; an existing output is replaced only with `force`.
use super::dpgan::{latents, Design};
use super::image::write_grid_png;
use super::networks::{Conditioning, Discriminator, Generator, CLASSES};
use super::run::{epsilons_of, read_run_info, to_u8, DISCRIMINATOR_FILE, GENERATOR_FILE};
use crate::data::{sha256_file, write_mnist_dir, Dataset, ImageShape, Split};
use crate::durable::write_atomically;
use crate::error::{Error, Result};
use crate::train::dpsgd::LEDGER_FILE;
use crate::train::streams::SeedStream;
use rand::RngCore;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The largest `--count` accepted (10 million images, 7.8 GB of pixels).
pub const MAX_COUNT: usize = 10_000_000;
/// Images generated per forward pass.
const SAMPLE_BATCH: usize = 1000;

pub use crate::run_folder::manifest::LedgerSummary;

/// The contents of `release.json` ([`crate::run_folder::manifest::ReleaseManifest`], written with
/// the GAN's own enums).
pub type Release = crate::run_folder::manifest::ReleaseManifest<Conditioning, Ranking, LabelSource>;

/// Checks `count` (1..=[`MAX_COUNT`]).
///
/// # Errors
/// [`Error::InvalidParameter`] otherwise.
pub fn validate_count(count: usize) -> Result<()> {
    if count == 0 || count > MAX_COUNT {
        return Err(Error::invalid("--count", count, format!("must be between 1 and {MAX_COUNT}")));
    }
    Ok(())
}

/// Loads the generator of a run folder.
///
/// # Errors
/// [`Error::Data`] naming the file for a missing folder, description or a corrupt checkpoint.
pub fn load_generator(run: &Path, device: Device) -> Result<(Generator, super::run::GanRunInfo)> {
    if !run.is_dir() {
        return Err(Error::data(run, "no such run folder (train one with `dpaudit gan train --out DIR`)"));
    }
    let info = read_run_info(run)?;
    // The initial draw is overwritten by the checkpoint; held so it cannot disturb a seeded build.
    let mut g = {
        let _rng = crate::torch_rng::lock();
        Generator::new(device, info.config.z_dim, info.config.g_width)?
    };
    let path = run.join(GENERATOR_FILE);
    if !path.is_file() {
        return Err(Error::data(&path, "missing generator checkpoint (did training finish?)"));
    }
    g.var_store_mut()
        .load(&path)
        .map_err(|e| Error::data(&path, format!("corrupt or incompatible generator checkpoint: {e}")))?;
    Ok((g, info))
}

/// What discriminator ranking ([`SampleOptions::keep`]) scores a candidate by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ranking {
    /// How real it looks: logit real minus logit generated for the image with its label
    /// ([`Conditioning::real_margin`]).
    #[default]
    Realism,
    /// How surely it shows its label: the log-odds of its label among the 10 real classes
    /// ([`Conditioning::label_margin`]); needs a classifier discriminator.
    Label,
}

impl Ranking {
    fn score(self, d: &Discriminator, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        match self {
            Ranking::Realism => d.conditioning.real_margin(logits, labels),
            Ranking::Label => d.conditioning.label_margin(logits, labels),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Ranking::Realism => "real margin of the final discriminator: logit real - logit fake, or logit of the label - logit fake for the classifier discriminator",
            Ranking::Label => "label margin of the final classifier discriminator: logit of the label - logsumexp of the other 9 real classes' logits",
        }
    }
}

/// What `gan sample` draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// Images released (1..=[`MAX_COUNT`]; labels cycle 0..9).
    pub count: usize,
    /// Seed of the latents (`None`: from the OS CSPRNG; recorded in release.json).
    pub seed: Option<u64>,
    /// Scale of the N(0, 1) latents (> 0; 1 is the distribution the generator was trained on).
    pub temperature: f64,
    /// Fraction kept by discriminator ranking, in (0, 1]: `ceil(count / keep)` images are
    /// generated and, per label, those the run's final discriminator scores most real (logit
    /// real minus logit fake, for the image with its label) are kept. 1: no ranking. The
    /// discriminator is part of the private training transcript, so ranking is post-processing
    /// (`proofs/gan/design_b_joint_clipping.md`, "Sampling a release"). Not for the noise-layer
    /// design, whose discriminator is not covered by a proven epsilon.
    pub keep: f64,
    /// The score that ranking keeps the best of (only with `keep` below 1).
    pub rank_by: Ranking,
    /// Where the released labels come from.
    pub labels: LabelSource,
}

/// Where a release's labels come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelSource {
    /// The label each image was generated for (cycling 0..9: a public distribution).
    #[default]
    Generator,
    /// The run's final classifier discriminator's reading of each released (rounded) image: the
    /// argmax of its 10 real-class logits. The discriminator is covered by the run's epsilon
    /// (joint and real-only designs), so this is post-processing; the label distribution is then
    /// the discriminator's, not uniform.
    Discriminator,
}

impl SampleOptions {
    /// `count` images from `seed`, temperature 1, no ranking, the generator's labels.
    pub fn new(count: usize, seed: Option<u64>) -> Self {
        SampleOptions {
            count,
            seed,
            temperature: 1.0,
            keep: 1.0,
            rank_by: Ranking::Realism,
            labels: LabelSource::Generator,
        }
    }

    /// Whether the release needs the run's final discriminator (ranking or relabelling).
    pub fn needs_discriminator(&self) -> bool {
        self.keep < 1.0 || self.labels == LabelSource::Discriminator
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the flag.
    pub fn validate(&self) -> Result<()> {
        validate_count(self.count)?;
        validate_temperature(self.temperature)?;
        if !(self.keep > 0.0 && self.keep <= 1.0) {
            return Err(Error::invalid("--keep", self.keep, "must be in (0, 1]"));
        }
        if self.rank_by != Ranking::Realism && self.keep >= 1.0 {
            return Err(Error::invalid("--rank-by", "label", "ranks candidates only when --keep is below 1"));
        }
        if self.candidates() > MAX_COUNT {
            return Err(Error::invalid(
                "--keep",
                self.keep,
                format!("would generate {} images for --count {}; at most {MAX_COUNT}", self.candidates(), self.count),
            ));
        }
        Ok(())
    }

    /// Images generated: `ceil(count / keep)` (saturating), never fewer than `count`.
    pub fn candidates(&self) -> usize {
        ((self.count as f64 / self.keep).ceil() as usize).max(self.count)
    }
}

/// Checks a latent temperature (finite and > 0).
///
/// # Errors
/// [`Error::InvalidParameter`] otherwise.
pub fn validate_temperature(temperature: f64) -> Result<()> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::invalid("--temperature", temperature, "must be a finite number > 0"));
    }
    Ok(())
}

/// `count` images from the generator of `run` with latents from `seed`, each latent scaled by
/// `temperature`: labels cycle 0..9.
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad temperature; libtorch errors.
pub fn generate(g: &Generator, count: usize, seed: u64, temperature: f64) -> Result<Dataset> {
    let (pixels, labels, _) = generate_scored(g, None, count, seed, temperature)?;
    Dataset::new("synthetic", ImageShape { channels: 1, height: 28, width: 28 }, CLASSES as usize, pixels, labels)
}

/// `count` images as [`generate`] makes them (the first `count` of a larger draw are the same
/// images): pixels (784 bytes per image), labels (cycling 0..9) and, when `d` is given, each
/// (unrounded) image's score by that discriminator under that [`Ranking`].
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad temperature; libtorch errors.
pub fn generate_scored(
    g: &Generator,
    d: Option<(&Discriminator, Ranking)>,
    count: usize,
    seed: u64,
    temperature: f64,
) -> Result<(Vec<u8>, Vec<u8>, Vec<f32>)> {
    validate_temperature(temperature)?;
    let mut rng = SeedStream::ReleaseLatents.rng(seed);
    let device = g.var_store().device();
    let mut pixels = Vec::with_capacity(count * 784);
    let mut scores = Vec::with_capacity(if d.is_some() { count } else { 0 });
    let labels: Vec<u8> = (0..count).map(|i| (i % CLASSES as usize) as u8).collect();
    let _guard = tch::no_grad_guard();
    for start in (0..count).step_by(SAMPLE_BATCH) {
        let len = SAMPLE_BATCH.min(count - start);
        let (z, _) = latents(&mut rng, len as i64, g.z_dim(), device)?;
        let z = if temperature == 1.0 { z } else { z.f_mul_scalar(temperature)? };
        let y: Vec<i64> = labels[start..start + len].iter().map(|&l| i64::from(l)).collect();
        let y = Tensor::f_from_slice(&y)?.f_to(device)?;
        let images = g.forward(&z, &y, false)?;
        if let Some((d, rank_by)) = d {
            let logits = d.net.forward(&d.conditioning.input(&images, &y)?)?;
            let s = rank_by.score(d, &logits, &y)?.f_to_kind(tch::Kind::Float)?.f_to(Device::Cpu)?;
            scores.extend(Vec::<f32>::try_from(&s)?);
        }
        pixels.extend(to_u8(&images)?);
    }
    Ok((pixels, labels, scores))
}

/// `opts.count` images chosen by discriminator ranking: [`SampleOptions::candidates`] are generated (labels
/// cycling 0..9), and output i (label i mod 10) is the next best-scored unused candidate of its
/// label. NaN scores rank last.
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad temperature; libtorch errors.
pub fn generate_ranked(g: &Generator, d: &Discriminator, opts: &SampleOptions, seed: u64) -> Result<Dataset> {
    let count = opts.count;
    let (pixels, labels, scores) =
        generate_scored(g, Some((d, opts.rank_by)), opts.candidates(), seed, opts.temperature)?;
    let mut by_label: Vec<Vec<usize>> = vec![Vec::new(); CLASSES as usize];
    for (i, &l) in labels.iter().enumerate() {
        by_label[l as usize].push(i);
    }
    let rank = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    for list in &mut by_label {
        // Best first; ties keep generation order (stable sort).
        list.sort_by(|&a, &b| rank(scores[b]).total_cmp(&rank(scores[a])));
        list.reverse(); // pop() takes from the end
    }
    let mut out_pixels = Vec::with_capacity(count * 784);
    let mut out_labels = Vec::with_capacity(count);
    for i in 0..count {
        let l = i % CLASSES as usize;
        let j = by_label[l]
            .pop()
            .ok_or_else(|| Error::numerical("discriminator ranking", format!("ran out of label-{l} candidates")))?;
        out_pixels.extend_from_slice(&pixels[j * 784..(j + 1) * 784]);
        out_labels.push(l as u8);
    }
    Dataset::new(
        "synthetic",
        ImageShape { channels: 1, height: 28, width: 28 },
        CLASSES as usize,
        out_pixels,
        out_labels,
    )
}

/// `data` with each image labelled by the classifier discriminator `d`: the argmax of its 10
/// real-class logits for the image as released (rounded to bytes, read back as training data is).
/// Returns the relabelled set and the fraction of images whose new label equals the old one.
///
/// # Errors
/// [`Error::InvalidParameter`] for a label-plane discriminator (it has no class logits); libtorch
/// errors.
pub fn relabel_by_discriminator(data: &Dataset, d: &Discriminator) -> Result<(Dataset, f64)> {
    if d.conditioning != Conditioning::Classifier {
        return Err(Error::invalid(
            "--labels",
            "discriminator",
            "needs a discriminator with class logits (--conditioning classifier)",
        ));
    }
    let n = data.len();
    let examples = crate::train::dpsgd::Examples::from_dataset(data, d.vs.device())?;
    let _guard = tch::no_grad_guard();
    let mut labels = Vec::with_capacity(n);
    for start in (0..n).step_by(SAMPLE_BATCH) {
        let len = SAMPLE_BATCH.min(n - start) as i64;
        let x = examples.images.f_narrow(0, start as i64, len)?;
        let y = examples.labels.f_narrow(0, start as i64, len)?;
        let logits = d.net.forward(&d.conditioning.input(&x, &y)?)?;
        let pred =
            logits.f_narrow(1, 0, CLASSES)?.f_argmax(-1, false)?.f_to_kind(tch::Kind::Uint8)?.f_to(Device::Cpu)?;
        labels.extend(Vec::<u8>::try_from(&pred)?);
    }
    let same = (0..n).filter(|&i| labels[i] == data.label(i)).count();
    let agreement = if n == 0 { f64::NAN } else { same as f64 / n as f64 };
    Ok((
        Dataset::new(
            "synthetic",
            ImageShape { channels: 1, height: 28, width: 28 },
            CLASSES as usize,
            data.pixels().to_vec(),
            labels,
        )?,
        agreement,
    ))
}

/// Loads the final discriminator of a (`joint` or `real-only`) run.
///
/// # Errors
/// [`Error::InvalidParameter`] for the noise-layer design; [`Error::Data`] for a missing or
/// corrupt checkpoint.
pub fn load_discriminator(run: &Path, info: &super::run::GanRunInfo, device: Device) -> Result<Discriminator> {
    if info.config.design == Design::NoiseLayer {
        return Err(Error::invalid("--keep / --labels", "noise-layer", "ranking or labelling by the discriminator needs a design with a proven epsilon (joint or real-only): the noise-layer discriminator's layers before the noise saw raw records"));
    }
    let mut d = {
        let _rng = crate::torch_rng::lock();
        Discriminator::with_conditioning(device, info.config.d_width, info.config.conditioning)?
    };
    let path = run.join(DISCRIMINATOR_FILE);
    if !path.is_file() {
        return Err(Error::data(&path, "missing discriminator checkpoint (did training finish?)"));
    }
    d.vs.load(&path)
        .map_err(|e| Error::data(&path, format!("corrupt or incompatible discriminator checkpoint: {e}")))?;
    Ok(d)
}

fn temp_sibling(out: &Path) -> Result<PathBuf> {
    let name = out.file_name().ok_or_else(|| Error::invalid("--out", out.display(), "must name a folder"))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    Ok(parent.join(format!(".{}.tmp-{}-{:016x}", name.to_string_lossy(), std::process::id(), rand::random::<u64>())))
}

fn write_release(
    g: &Generator,
    d: Option<&Discriminator>,
    info: &super::run::GanRunInfo,
    run: &Path,
    dir: &Path,
    opts: &SampleOptions,
    seed: u64,
) -> Result<Release> {
    let (count, temperature) = (opts.count, opts.temperature);
    // Read-only: sampling never changes the run's ledger.
    let ledger_path = run.join(LEDGER_FILE);
    let ledger = crate::accounting::ledger::read_ledger(&ledger_path)?;
    if ledger.torn_bytes > 0 {
        return Err(Error::data(
            &ledger_path,
            "ends with a torn line: the run was interrupted; resume it (or finish it) before sampling a release",
        ));
    }
    let phases = crate::accounting::ledger::phases_of(&ledger.entries)?;
    let mut labels = BTreeMap::new();
    for e in &ledger.entries {
        *labels.entry(e.label.clone()).or_insert(0u64) += 1;
    }
    let data = match d {
        Some(d) if opts.keep < 1.0 => generate_ranked(g, d, opts, seed)?,
        _ => generate(g, count, seed, temperature)?,
    };
    let (data, label_agreement) = match (opts.labels, d) {
        (LabelSource::Discriminator, Some(d)) => {
            let (data, agreement) = relabel_by_discriminator(&data, d)?;
            (data, Some(agreement))
        }
        (LabelSource::Discriminator, None) => {
            return Err(Error::invalid("--labels", "discriminator", "needs the run's discriminator"))
        }
        (LabelSource::Generator, _) => (data, None),
    };
    let ranked = opts.keep < 1.0;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let (img, lbl) = write_mnist_dir(dir, Split::Train, &data)?;
    // Grid: the first 10 images of each label, one label per row.
    let mut grid: Vec<&[u8]> = Vec::new();
    for label in 0..CLASSES as u8 {
        grid.extend((0..count).filter(|&i| data.label(i) == label).take(10).map(|i| data.image(i)));
    }
    let grid_path = dir.join("grid.png");
    write_grid_png(&grid_path, &grid, 28, 10)?;
    // The ledger travels with the release (it holds only q, sigma and C per step, no data), so a
    // certificate of the release can be verified, epsilon re-derived, from the release alone.
    let ledger_copy = dir.join(LEDGER_FILE);
    std::fs::copy(&ledger_path, &ledger_copy)
        .map_err(|e| Error::io(format!("copying the ledger to {}", ledger_copy.display()), e))?;
    crate::durable::sync_file(&ledger_copy)?;
    let mut files = BTreeMap::new();
    for p in [&img, &lbl, &grid_path] {
        files.insert(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), sha256_file(p)?);
    }
    let release = Release {
        schema_version: crate::run_folder::manifest::SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        design: info.config.design.to_string(),
        conditioning: info.config.conditioning,
        epsilon_status: info.config.design.epsilon_status().into(),
        epsilons: epsilons_of(&phases, info.delta)?,
        sampling: "poisson".into(),
        ledger: LedgerSummary { steps: ledger.entries.len() as u64, phases, labels, sha256: ledger.sha256.clone() },
        generator_sha256: sha256_file(&run.join(GENERATOR_FILE))?,
        generator: match info.config.g_ema {
            Some(decay) => format!("moving average (decay {decay})"),
            None => "last iterate".to_owned(),
        },
        run: run.display().to_string(),
        count,
        class_counts: data.class_counts(),
        seed,
        temperature,
        selection: if ranked {
            format!(
                "discriminator ranking: {} generated, per label the best-scored ({}) kept",
                opts.candidates(),
                opts.rank_by.describe()
            )
        } else {
            "all generated".to_owned()
        },
        keep: opts.keep,
        rank_by: ranked.then_some(opts.rank_by),
        labels: opts.labels,
        label_agreement,
        discriminator_sha256: match d {
            Some(_) => Some(sha256_file(&run.join(DISCRIMINATOR_FILE))?),
            None => None,
        },
        files,
    };
    write_atomically(
        &dir.join(crate::run_folder::RELEASE_FILE),
        &serde_json::to_vec_pretty(&release).map_err(|e| Error::data(dir, e.to_string()))?,
    )?;
    Ok(release)
}

/// Samples `opts.count` labelled images from the generator of `run` into the folder `out` (see
/// the module documentation and [`SampleOptions`]). `opts.seed = None` draws one from the OS
/// CSPRNG (recorded in release.json).
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad count, temperature or keep fraction (or ranking asked of
/// a noise-layer run), or an existing output without `force`;
/// [`Error::Data`] for a missing run folder, description, ledger or a corrupt checkpoint. On any
/// error nothing is left at `out` (and an existing `out` is untouched).
pub fn sample_release(run: &Path, out: &Path, opts: &SampleOptions, force: bool, device: Device) -> Result<Release> {
    crate::device::check_available(device)?;
    opts.validate()?;
    if out.exists() && !force {
        return Err(Error::invalid(
            "--out",
            out.display(),
            "already exists; choose another folder or give --force to replace it",
        ));
    }
    let (g, info) = load_generator(run, device)?;
    // Refused here, before any image is generated, rather than by the first batch's scores.
    if opts.keep < 1.0 && opts.rank_by == Ranking::Label && info.config.conditioning != Conditioning::Classifier {
        return Err(Error::invalid("--rank-by", "label", "needs a discriminator with class logits (--conditioning classifier); this run's discriminator reads label planes"));
    }
    if opts.labels == LabelSource::Discriminator && info.config.conditioning != Conditioning::Classifier {
        return Err(Error::invalid("--labels", "discriminator", "needs a discriminator with class logits (--conditioning classifier); this run's discriminator reads label planes"));
    }
    let d = if opts.needs_discriminator() { Some(load_discriminator(run, &info, device)?) } else { None };
    let seed = opts.seed.unwrap_or_else(|| rand::rngs::OsRng.next_u64());
    let tmp = temp_sibling(out)?;
    let result = write_release(&g, d.as_ref(), &info, run, &tmp, opts, seed).and_then(|r| {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| Error::io(format!("removing {}", out.display()), e))?;
        }
        std::fs::rename(&tmp, out)
            .map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), out.display()), e))?;
        Ok(r)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The GAN run folder a release was sampled from, as its `release.json` names it (relative
/// paths are as given to `gan sample`, i.e. relative to the working folder then).
///
/// # Errors
/// [`Error::Io`] / [`Error::Data`] for a missing or malformed `release.json`.
pub fn release_run_dir(release_dir: &Path) -> Result<std::path::PathBuf> {
    Ok(std::path::PathBuf::from(crate::run_folder::manifest::ReleaseManifest::read(release_dir)?.run))
}
