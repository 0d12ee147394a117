//! Replay: train the target recipe on D (canary out) or D' (canary in) from a run seed, and score
//! the run with the attack's statistic. Each run is the real trainer ([`DpSgd`]), with its ledger
//! kept in memory ([`DpSgd::ephemeral`]).
//!
//! **White-box statistic** (gradient canaries, plain SGD): the attacker reads every iterate, so
//! it recovers each step's noisy clipped sum, `g_t = (theta_{t-1} - theta_t) L / lr`, in units of
//! C. It projects `g_t` on the canary direction `u` (`p_t`), and estimates the step's noise scale
//! `s_t` as the root mean square of `g_t` over *null coordinates*: weights that no real example
//! moves (an always-zero pixel's weights in the first layer), so they carry only noise. The
//! score is the likelihood-ratio statistic for a mean shift under Gaussian noise of those scales,
//!
//! score = sum_t p_t / s_t^2 / sqrt(sum_t 1 / s_t^2),
//!
//! which for correct DP-SGD at q = 1 is N(0, 1) without the canary and N(sqrt(T)/sigma, 1) with
//! it: the normalisation that makes a threshold fixed from the claim meaningful. A step that adds
//! no noise (a planted `skip-noise` bug) gets a tiny `s_t` and dominates the score.
//!
//! **Black-box statistic** (input canaries): minus the canary's cross-entropy loss on the final
//! model (Jagielski et al. 2020).
use crate::audit::spec::{AuditSpec, CanaryKind, ThreatModel};
use crate::data::{Dataset, ImageShape};
use crate::error::{Error, Result};
use crate::train::dpsgd::{DpSgd, Examples, TrainConfig};
use crate::train::per_example::per_example_cross_entropy;
use crate::train::streams::SeedSalt;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Reference noise images a GAN audit's out-of-distribution canary is compared with.
const GAN_REFERENCES: i64 = 32;

/// Which dataset a run trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// D': the canary is in.
    With,
    /// D: the canary is out.
    Without,
}

/// The outcome of one replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Canary in or out.
    pub side: Side,
    /// Index of the run within its side (0-based).
    pub index: u64,
    /// The run's seed (model initialisation, sampling and noise all derive from it).
    pub seed: u64,
    /// The attack's statistic (larger means "canary in").
    pub score: f64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Noisy updates the trainer applied.
    pub applied_steps: u64,
    /// Steps its ledger recorded.
    pub ledger_steps: u64,
    /// The ledger's phases as (q, sigma, steps), for the claim.
    pub ledger_phases: Vec<(f64, f64, u64)>,
    /// SHA-256 of the canonical JSON of the spec the run belongs to ([`AuditSpec::digest`]).
    /// Empty in records written before issue 28 (which merge refuses: they cannot be checked).
    #[serde(default)]
    pub spec_digest: String,
    /// SHA-256 of what the run scored: the trained parameters (f32, little-endian, in order),
    /// then the attack's per-step observations and the score (f64, little-endian). A replay of
    /// the same (side, index) reproduces it bit for bit ([`Worker::run`] on CPU).
    #[serde(default)]
    pub score_digest: String,
    /// Further named statistics of the run (larger means "canary in" for each), for audits that
    /// choose their statistic on held-out runs: e.g. `final-canary-loss` (negated),
    /// `param-change-norm`, or `trainer:<name>` for a statistic an external trainer reported.
    /// Empty (and absent from the JSON) in single-statistic audits, so their records and digests
    /// are unchanged.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub statistics: std::collections::BTreeMap<String, f64>,
    /// The epsilon an external trainer claimed for this run (its `claim.json`); absent for
    /// dpaudit's own trainer, whose claim comes from its ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_epsilon: Option<f64>,
}

/// Accumulates [`RunRecord::score_digest`].
struct ScoreDigest(Sha256);

impl ScoreDigest {
    fn new() -> Self {
        ScoreDigest(Sha256::new())
    }

    fn tensors<'a>(&mut self, params: impl IntoIterator<Item = &'a Tensor>) -> Result<()> {
        for p in params {
            let flat = p.f_detach()?.f_to_kind(Kind::Float)?.f_contiguous()?.f_view(-1)?;
            let v = Vec::<f32>::try_from(&flat)?;
            for x in v {
                self.0.update(x.to_le_bytes());
            }
        }
        Ok(())
    }

    fn values(&mut self, v: &[f64]) {
        for x in v {
            self.0.update(x.to_le_bytes());
        }
    }

    fn finish(self, score: f64) -> String {
        let mut h = self.0;
        h.update(score.to_le_bytes());
        hex::encode(h.finalize())
    }
}

/// The seed of run `index` on `side`: SplitMix64 of the audit seed, the side and the index.
pub fn run_seed(audit_seed: u64, side: Side, index: u64) -> u64 {
    let mut z = audit_seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_mul(2).wrapping_add(u64::from(side == Side::With)))
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A finished run's record; refuses a non-finite score.
#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &ReplayContext,
    side: Side,
    index: u64,
    seed: u64,
    score: f64,
    digest: ScoreDigest,
    start: Instant,
    applied_steps: u64,
    ledger: &crate::accounting::ledger::Ledger,
) -> Result<RunRecord> {
    if !score.is_finite() {
        return Err(Error::numerical("audit score", format!("run {index} ({side:?}) scored {score}")));
    }
    Ok(RunRecord {
        spec_digest: ctx.spec_digest.clone(),
        score_digest: digest.finish(score),
        side,
        index,
        seed,
        score,
        seconds: start.elapsed().as_secs_f64(),
        applied_steps,
        ledger_steps: ledger.steps(),
        ledger_phases: ledger.phases()?.iter().map(|p| (p.sampling_rate, p.noise_multiplier, p.steps)).collect(),
        statistics: Default::default(),
        claimed_epsilon: None,
    })
}

/// The input canary of `spec` (pixels in [0, 1], label), drawn exactly as [`ReplayContext::new`]
/// draws it (so an external trainer's audit plants the same canary), or `None` for a gradient
/// canary.
///
/// # Errors
/// As [`ReplayContext::new`] for input canaries.
pub fn spec_input_canary(spec: &AuditSpec, train: &Dataset, test: &Dataset) -> Result<Option<(Vec<f32>, i64)>> {
    let shape = train.shape();
    let pixels = shape.pixels().ok_or_else(|| Error::invalid("image shape", format!("{shape:?}"), "too large"))?;
    let mut rng = SeedSalt::AuditInputCanary.rng(spec.attack.seed);
    input_canary(spec, pixels, train, test, &mut rng)
}

/// The input canary of `kind` (pixels in [0, 1], label), or `None` for a gradient canary.
fn input_canary(
    spec: &AuditSpec,
    pixels: usize,
    train: &Dataset,
    test: &Dataset,
    rng: &mut ChaCha20Rng,
) -> Result<Option<(Vec<f32>, i64)>> {
    let label = i64::from(spec.canary.label);
    Ok(match spec.canary.kind {
        CanaryKind::Blank => Some((vec![0.0; pixels], label)),
        CanaryKind::OutOfDistribution => Some(((0..pixels).map(|_| rng.gen::<f32>()).collect(), label)),
        CanaryKind::Mislabelled => {
            if test.is_empty() || test.shape() != train.shape() {
                return Err(Error::invalid(
                    "test set",
                    test.len(),
                    "the mislabelled canary needs a test image of the training shape",
                ));
            }
            let true_label = test.label(0);
            let l = if spec.canary.label == true_label {
                (true_label + 1) % train.classes() as u8
            } else {
                spec.canary.label
            };
            Some((test.image(0).iter().map(|&p| f32::from(p) / 255.0).collect(), i64::from(l)))
        }
        CanaryKind::Dirac | CanaryKind::RandomDirection => None,
    })
}

/// Everything the runs share, in plain memory (shared by worker threads; each worker makes its
/// own tensors with [`Worker::new`]).
#[derive(Debug, Clone)]
pub struct ReplayContext {
    spec: AuditSpec,
    train: Dataset,
    /// Input canary: (pixels in [0, 1], label).
    input_canary: Option<(Vec<f32>, i64)>,
    /// Gradient canary: the unit direction, one flat vector per parameter.
    direction: Option<Vec<Vec<f32>>>,
    /// Null coordinates: (parameter 0's flat indices), for the noise estimate.
    null_coords: Vec<i64>,
    /// The parameters' shapes.
    shapes: Vec<Vec<i64>>,
    /// The spec's digest, stamped on every record.
    spec_digest: String,
    /// The device the runs train on (the CPU unless [`ReplayContext::on_device`]).
    device: Device,
}

/// Input pixels that are zero in every training example.
fn always_zero_pixels(train: &Dataset) -> Vec<usize> {
    let per = train.shape().pixels().unwrap_or(0);
    let mut nonzero = vec![false; per];
    for i in 0..train.len() {
        for (flag, &p) in nonzero.iter_mut().zip(train.image(i)) {
            *flag |= p != 0;
        }
    }
    nonzero.iter().enumerate().filter(|(_, &nz)| !nz).map(|(i, _)| i).collect()
}

impl ReplayContext {
    /// Prepares the runs of `spec` on `train` (already cut to `train_examples`); `test` supplies
    /// the mislabelled canary.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the canary cannot be built for this model or data (a
    /// Dirac canary needs a first layer `Linear(pixels -> h)` and an always-zero pixel).
    pub fn new(spec: &AuditSpec, train: Dataset, test: &Dataset) -> Result<Self> {
        let shape = train.shape();
        let pixels = shape.pixels().ok_or_else(|| Error::invalid("image shape", format!("{shape:?}"), "too large"))?;
        let target = spec.built_in()?;
        if target.gan.is_some() {
            // A DP-GAN target: an input canary, scored on the trained discriminator.
            let mut rng = SeedSalt::AuditInputCanary.rng(spec.attack.seed);
            let input_canary = input_canary(spec, pixels, &train, test, &mut rng)?;
            if input_canary.is_none() {
                return Err(Error::invalid(
                    "canary.kind",
                    format!("{:?}", spec.canary.kind),
                    "GAN audits need an input canary",
                ));
            }
            return Ok(ReplayContext {
                spec: spec.clone(),
                train,
                input_canary,
                direction: None,
                null_coords: Vec::new(),
                shapes: Vec::new(),
                spec_digest: spec.digest(),
                device: Device::Cpu,
            });
        }
        let specs = crate::train::models::specs(&target.model)?;
        let first_linear = specs.iter().find_map(|l| match l {
            crate::train::per_example::LayerSpec::Linear { in_features, out_features, .. } => {
                Some((*in_features, *out_features))
            }
            _ => None,
        });
        let dense_first = matches!(specs.first(), Some(crate::train::per_example::LayerSpec::Flatten))
            && first_linear.is_some_and(|(i, _)| i as usize == pixels);
        let zero = always_zero_pixels(&train);
        let mut null_coords = Vec::new();
        if dense_first {
            let (inputs, outputs) = first_linear.expect("checked");
            'rows: for r in 0..outputs {
                for &z in &zero {
                    null_coords.push(r * inputs + z as i64);
                    if null_coords.len() > 2000 {
                        break 'rows;
                    }
                }
            }
        }
        let mut rng = SeedSalt::AuditInputCanary.rng(spec.attack.seed);
        let mut input_canary = None;
        let mut direction = None;
        let vs = tch::nn::VarStore::new(Device::Cpu);
        // Only the shapes are used; held so the draw cannot disturb a seeded build elsewhere.
        let model = {
            let _rng = crate::torch_rng::lock();
            crate::train::models::build(&target.model, &vs.root())?
        };
        let shapes: Vec<Vec<i64>> = model.parameters().iter().map(|(_, t)| t.size()).collect();
        match spec.canary.kind {
            CanaryKind::Dirac => {
                if !dense_first || null_coords.len() < 2 {
                    return Err(Error::invalid(
                        "canary.kind",
                        "dirac",
                        format!("needs a model whose first layer is Linear on the {pixels} pixels (logreg, mlp) and a pixel that is zero in every training example"),
                    ));
                }
                // The canary's coordinate is the first null coordinate; the rest estimate the noise.
                let at = null_coords.remove(0);
                let mut d: Vec<Vec<f32>> =
                    shapes.iter().map(|s| vec![0.0; s.iter().product::<i64>() as usize]).collect();
                d[0][at as usize] = 1.0;
                direction = Some(d);
            }
            CanaryKind::RandomDirection => {
                let mut d: Vec<Vec<f32>> = shapes
                    .iter()
                    .map(|s| {
                        (0..s.iter().product::<i64>())
                            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
                            .collect()
                    })
                    .collect();
                let norm = d.iter().flatten().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
                d.iter_mut().flatten().for_each(|x| *x = (f64::from(*x) / norm) as f32);
                direction = Some(d);
            }
            CanaryKind::Blank | CanaryKind::OutOfDistribution | CanaryKind::Mislabelled => {
                input_canary = self::input_canary(spec, pixels, &train, test, &mut rng)?
            }
        }
        Ok(ReplayContext {
            spec: spec.clone(),
            train,
            input_canary,
            direction,
            null_coords,
            shapes,
            spec_digest: spec.digest(),
            device: Device::Cpu,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &AuditSpec {
        &self.spec
    }

    /// Training examples per run on D.
    pub fn train_examples(&self) -> usize {
        self.train.len()
    }

    /// Null coordinates available for the white-box noise estimate.
    pub fn null_coordinates(&self) -> usize {
        self.null_coords.len()
    }

    /// The runs train on `device` instead of the CPU. Records made on the CPU are
    /// bit-reproducible; CUDA kernels need not be, so replay records on the device that made them.
    ///
    /// # Errors
    /// [`Error::DeviceUnavailable`] when libtorch does not see the device.
    pub fn on_device(mut self, device: Device) -> Result<Self> {
        crate::device::check_available(device)?;
        self.device = device;
        Ok(self)
    }

    /// The device the runs train on.
    pub fn device(&self) -> Device {
        self.device
    }
}

/// One worker's tensors (libtorch tensors cannot be shared between threads).
#[derive(Debug)]
pub struct Worker<'a> {
    ctx: &'a ReplayContext,
    without: Examples,
    with: Option<Examples>,
    canary_x: Option<(Tensor, Tensor)>,
    direction: Option<Vec<Tensor>>,
    null_idx: Tensor,
}

impl<'a> Worker<'a> {
    /// Builds the worker's tensors.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn new(ctx: &'a ReplayContext) -> Result<Self> {
        let device = ctx.device;
        let without = Examples::from_dataset(&ctx.train, device)?;
        let shape: ImageShape = ctx.train.shape();
        let dims = [1i64, shape.channels as i64, shape.height as i64, shape.width as i64];
        let (with, canary_x) = match &ctx.input_canary {
            Some((px, label)) => {
                let x = Tensor::f_from_slice(px)?.f_view(dims)?.f_to(device)?;
                let y = Tensor::f_from_slice(&[*label])?.f_to(device)?;
                let with = Examples {
                    images: Tensor::f_cat(&[&without.images, &x], 0)?,
                    labels: Tensor::f_cat(&[&without.labels, &y], 0)?,
                };
                (Some(with), Some((x, y)))
            }
            None => (None, None),
        };
        let direction = match &ctx.direction {
            Some(d) => Some(
                d.iter()
                    .zip(&ctx.shapes)
                    .map(|(v, s)| Tensor::f_from_slice(v)?.f_view(s.as_slice())?.f_to(device))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let null_idx = Tensor::f_from_slice(&ctx.null_coords)?.f_to(device)?;
        Ok(Worker { ctx, without, with, canary_x, direction, null_idx })
    }

    /// Trains one run and scores it.
    ///
    /// # Errors
    /// Trainer errors (including NaN in training).
    pub fn run(&self, side: Side, index: u64) -> Result<RunRecord> {
        let start = Instant::now();
        let spec = &self.ctx.spec;
        let t = spec.built_in()?;
        let seed = run_seed(spec.attack.seed, side, index);
        let data = match (side, &self.with) {
            (Side::With, Some(w)) => w,
            _ => &self.without,
        };
        let n = data.len();
        // The same sampling rate q = L / N on D and D' (N counts D's examples).
        let q = (t.lot_size / self.without.len() as f64).min(1.0);
        if let Some(g) = &t.gan {
            return self.run_gan(g, data, q, side, index, seed, start);
        }
        // The spec's recipe, on this side's examples at the same q.
        let config = TrainConfig { lot_size: q * n as f64, ..t.recipe()?.train_config(t.noise_multiplier, t.steps) };
        let mut run = DpSgd::ephemeral(config, n, seed, self.ctx.device)?;
        if let Some(f) = t.inject_fault {
            run.inject_fault(f);
        }
        if let (Side::With, Some(dir)) = (side, &self.direction) {
            let scale = spec.canary.norm * t.max_grad_norm;
            run.add_gradient_canary(
                dir.iter().map(|d| d.f_mul_scalar(scale)).collect::<std::result::Result<Vec<_>, _>>()?,
            )?;
        }
        // Recovering g_t from the iterates: theta_{t-1} - theta_t = lr g_t / L.
        let to_units = q * self.without.len() as f64 / (t.lr * t.max_grad_norm);
        let white = spec.attack.threat_model == ThreatModel::WhiteBox;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        let mut digest = ScoreDigest::new();
        let mut observed = Vec::new();
        for _ in 0..t.steps {
            let before = if white { Some(self.snapshot(&run)?) } else { None };
            run.step(data)?;
            if let Some((p0, n0)) = before {
                let (p1, n1) = self.snapshot(&run)?;
                let p = (p0 - p1) * to_units;
                let s2 = if n0.numel() > 0 {
                    let d = n0.f_sub(&n1)?.f_mul_scalar(to_units)?;
                    f64::try_from(d.f_square()?.f_mean(Kind::Double)?)?
                } else {
                    (t.noise_multiplier * t.noise_multiplier).max(f64::MIN_POSITIVE)
                };
                // A floor far below any real noise level keeps a noiseless step finite.
                let s2 = s2.max(1e-30);
                observed.extend([p, s2]);
                num += p / s2;
                den += 1.0 / s2;
            }
        }
        let score = if white {
            num / den.sqrt()
        } else {
            let (x, y) = self
                .canary_x
                .as_ref()
                .ok_or_else(|| Error::invalid("canary", "none", "black-box audits need an input canary"))?;
            let _g = tch::no_grad_guard();
            let loss = per_example_cross_entropy(&run.model().forward(x)?, y)?;
            -f64::try_from(loss.f_sum(Kind::Double)?)?
        };
        digest.tensors(run.parameters())?;
        digest.values(&observed);
        let ledger = run.ledger().ok_or_else(|| Error::invalid("ledger", "none", "a private run must have one"))?;
        record(self.ctx, side, index, seed, score, digest, start, run.steps(), ledger)
    }

    /// A DP-GAN replay: `t.steps` discriminator steps (rounds of `n_critic` plus a generator
    /// step) on `data`, scored by the discriminator's real margin on the canary.
    #[allow(clippy::too_many_arguments)]
    fn run_gan(
        &self,
        g: &crate::audit::spec::GanTarget,
        data: &Examples,
        q: f64,
        side: Side,
        index: u64,
        seed: u64,
        start: Instant,
    ) -> Result<RunRecord> {
        use crate::gan::dpgan::{DpGan, GanConfig};
        let t = self.ctx.spec.built_in()?;
        let n = data.len();
        let config = GanConfig {
            design: g.design,
            lot_size: q * n as f64,
            noise_multiplier: t.noise_multiplier,
            max_grad_norm: t.max_grad_norm,
            n_critic: g.n_critic,
            d_lr: t.lr,
            g_lr: g.g_lr,
            z_dim: g.z_dim,
            g_width: g.g_width,
            d_width: g.d_width,
            physical_batch: t.physical_batch,
            g_ema: None,
            conditioning: g.conditioning,
        };
        use crate::train::noise::NoiseSeed;
        let init = if g.fixed_initialisation {
            NoiseSeed::Explicit(self.ctx.spec.attack.seed ^ 0x1417)
        } else {
            NoiseSeed::Explicit(seed)
        };
        let mut gan = DpGan::with_initialisation(
            config,
            n,
            crate::accounting::ledger::Ledger::in_memory(),
            NoiseSeed::Explicit(seed),
            init,
            self.ctx.device,
        )?;
        let (x, y) = self
            .canary_x
            .as_ref()
            .ok_or_else(|| Error::invalid("canary", "none", "GAN audits need an input canary"))?;
        let mut rng = SeedSalt::GanAuditScoring.rng(seed);
        if self.ctx.spec.attack.threat_model == ThreatModel::WhiteBox {
            // The attacker reads every iterate of the discriminator: each round's weight change is
            // projected on the direction in which training on the canary as a real record would
            // move the weights at that round (unit vector); the score sums the projections.
            let mut score = 0.0f64;
            while gan.discriminator_steps() < t.steps {
                let before: Vec<Tensor> = gan
                    .discriminator()
                    .parameters()
                    .iter()
                    .map(|p| p.f_detach().and_then(|t| t.f_mul_scalar(1.0)))
                    .collect::<std::result::Result<_, _>>()?;
                let direction = gan.margin_gradient(x, y, g.score_draws, &mut rng)?;
                gan.round(data)?;
                let (mut dot, mut norm2) = (0.0f64, 0.0f64);
                for ((p, p0), d) in gan.discriminator().parameters().iter().zip(&before).zip(&direction) {
                    let delta = p.f_detach()?.f_sub(p0)?;
                    dot += f64::try_from(delta.f_mul(d)?.f_sum(Kind::Double)?)?;
                    norm2 += f64::try_from(d.f_square()?.f_sum(Kind::Double)?)?;
                }
                score += dot / norm2.sqrt().max(1e-30);
            }
            let mut digest = ScoreDigest::new();
            digest.tensors(&gan.discriminator().parameters())?;
            return record(self.ctx, side, index, seed, score, digest, start, gan.discriminator_steps(), gan.ledger());
        }
        while gan.discriminator_steps() < t.steps {
            gan.round(data)?;
        }
        let mut score = f64::try_from(gan.real_margin(x, y, g.score_draws, &mut rng)?.f_sum(Kind::Double)?)?;
        if self.ctx.spec.canary.kind == CanaryKind::OutOfDistribution {
            // Calibrate out the run's general attitude to noise images (its initialisation and
            // training move it far more than one record does): subtract the mean margin of
            // GAN_REFERENCES other noise images of the canary's label, the same in every run and
            // never trained on.
            let mut refs_rng = SeedSalt::GanAuditReferences.rng(self.ctx.spec.attack.seed);
            let dims = x.size();
            let per: i64 = dims[1..].iter().product();
            let px: Vec<f32> = (0..GAN_REFERENCES * per).map(|_| refs_rng.gen::<f32>()).collect();
            let mut shape = dims.clone();
            shape[0] = GAN_REFERENCES;
            let rx = Tensor::f_from_slice(&px)?.f_view(shape.as_slice())?;
            let ry = y.f_expand([GAN_REFERENCES], false)?.f_contiguous()?;
            let reference = f64::try_from(gan.real_margin(&rx, &ry, g.score_draws, &mut rng)?.f_mean(Kind::Double)?)?;
            score -= reference;
        }
        let mut digest = ScoreDigest::new();
        digest.tensors(&gan.discriminator().parameters())?;
        record(self.ctx, side, index, seed, score, digest, start, gan.discriminator_steps(), gan.ledger())
    }

    /// The one-run audit (Steinke, Nasr & Jagielski 2023): one training on D plus each of m Dirac
    /// canaries (on m null coordinates) included with probability 1/2 (seeded); every canary is
    /// scored with the white-box statistic on its own coordinate, the noise estimated on the
    /// remaining null coordinates. Returns one record per canary: side `with` if it was included.
    ///
    /// # Errors
    /// Too few null coordinates for m canaries plus 50 for the noise estimate; trainer errors.
    pub fn one_run(&self) -> Result<Vec<RunRecord>> {
        let start = Instant::now();
        let spec = &self.ctx.spec;
        let t = spec.built_in()?;
        let m = spec.attack.canaries as usize;
        // The Dirac canary's own coordinate was taken out of null_coords; give it back.
        let dir0 = self
            .direction
            .as_ref()
            .ok_or_else(|| Error::invalid("canary", "none", "one-run audits need Dirac canaries"))?;
        let first = i64::try_from(dir0[0].f_view(-1)?.f_argmax(0, false)?)?;
        let mut coords = vec![first];
        coords.extend(self.ctx.null_coords.iter().copied());
        if coords.len() < m + 50 {
            return Err(Error::invalid(
                "attack.canaries",
                m,
                format!("this model and data have {} null coordinates; m canaries need m + 50", coords.len()),
            ));
        }
        let (canary_coords, noise_coords) = coords.split_at(m);
        let seed = run_seed(spec.attack.seed, Side::With, 0);
        let mut rng = SeedSalt::OneRunInclusion.rng(seed);
        let included: Vec<bool> = (0..m).map(|_| rng.gen::<bool>()).collect();
        let n = self.without.len();
        // One-run audits are white-box, so the recipe's optimizer is plain sgd (checked by the spec).
        let config = t.recipe()?.train_config(t.noise_multiplier, t.steps);
        let mut run = DpSgd::ephemeral(config, n, seed, self.ctx.device)?;
        if let Some(f) = t.inject_fault {
            run.inject_fault(f);
        }
        let scale = spec.canary.norm * t.max_grad_norm;
        let mut grads = Vec::new();
        for (&c, _) in canary_coords.iter().zip(&included).filter(|(_, &inc)| inc) {
            let g: Vec<Tensor> =
                run.parameters().iter().map(|p| p.f_zeros_like()).collect::<std::result::Result<_, _>>()?;
            let _ = g[0].f_view(-1)?.f_narrow(0, c, 1)?.f_fill_(scale)?;
            grads.push(g);
        }
        run.add_gradient_canaries(grads)?;
        let to_units = t.lot_size / (t.lr * t.max_grad_norm);
        let cidx = Tensor::f_from_slice(canary_coords)?.f_to(self.ctx.device)?;
        let nidx = Tensor::f_from_slice(noise_coords)?.f_to(self.ctx.device)?;
        let read = |run: &DpSgd| -> Result<(Tensor, Tensor)> {
            let _g = tch::no_grad_guard();
            let w = run.parameters()[0].f_view(-1)?;
            Ok((
                w.f_index_select(0, &cidx)?.f_to_kind(Kind::Double)?,
                w.f_index_select(0, &nidx)?.f_to_kind(Kind::Double)?,
            ))
        };
        let mut num = Tensor::f_zeros([m as i64], (Kind::Double, self.ctx.device))?;
        let mut den = 0.0;
        for _ in 0..t.steps {
            let (c0, n0) = read(&run)?;
            run.step(&self.without)?;
            let (c1, n1) = read(&run)?;
            let s2 =
                f64::try_from(n0.f_sub(&n1)?.f_mul_scalar(to_units)?.f_square()?.f_mean(Kind::Double)?)?.max(1e-30);
            num = num.f_add(&c0.f_sub(&c1)?.f_mul_scalar(to_units / s2)?)?;
            den += 1.0 / s2;
        }
        let scores: Vec<f64> = Vec::<f64>::try_from(num.f_div_scalar(den.sqrt())?)?;
        let ledger = run.ledger().ok_or_else(|| Error::invalid("ledger", "none", "a private run must have one"))?;
        let ledger_phases: Vec<(f64, f64, u64)> =
            ledger.phases()?.iter().map(|p| (p.sampling_rate, p.noise_multiplier, p.steps)).collect();
        let seconds = start.elapsed().as_secs_f64();
        let mut common = ScoreDigest::new();
        common.tensors(run.parameters())?;
        Ok(scores
            .iter()
            .zip(&included)
            .enumerate()
            .map(|(i, (&score, &inc))| RunRecord {
                side: if inc { Side::With } else { Side::Without },
                index: i as u64,
                seed,
                score,
                seconds: if i == 0 { seconds } else { 0.0 },
                applied_steps: run.steps(),
                ledger_steps: ledger.steps(),
                ledger_phases: ledger_phases.clone(),
                spec_digest: self.ctx.spec_digest.clone(),
                score_digest: {
                    let mut d = ScoreDigest(common.0.clone());
                    d.values(&[i as f64, f64::from(u8::from(inc))]);
                    d.finish(score)
                },
                statistics: Default::default(),
                claimed_epsilon: None,
            })
            .collect())
    }

    /// The projection of the parameters on the canary direction, and the null coordinates.
    fn snapshot(&self, run: &DpSgd) -> Result<(f64, Tensor)> {
        let _g = tch::no_grad_guard();
        let params = run.parameters();
        let mut proj = 0.0;
        if let Some(dir) = &self.direction {
            for (p, d) in params.iter().zip(dir) {
                proj += f64::try_from(
                    p.f_to_kind(Kind::Double)?.f_view(-1)?.f_dot(&d.f_to_kind(Kind::Double)?.f_view(-1)?)?,
                )?;
            }
        }
        let nulls = if self.null_idx.numel() > 0 {
            params[0].f_view(-1)?.f_index_select(0, &self.null_idx)?.f_to_kind(Kind::Double)?
        } else {
            Tensor::f_zeros([0], (Kind::Double, self.ctx.device))?
        };
        Ok((proj, nulls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_seeds_differ_by_side_and_index() {
        let mut seen = std::collections::HashSet::new();
        for side in [Side::With, Side::Without] {
            for i in 0..1000 {
                assert!(seen.insert(run_seed(7, side, i)));
            }
        }
        assert_ne!(run_seed(7, Side::With, 0), run_seed(8, Side::With, 0));
    }
}
