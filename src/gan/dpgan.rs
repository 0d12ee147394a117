//! The private GAN trainer: only the discriminator touches private data, and each of its steps on
//! real data is one Poisson-subsampled Gaussian step, recorded (fsynced) in the ledger before its
//! update is applied. Generator steps only read the discriminator: post-processing, free.
//!
//! One discriminator step (designs (a) and (b)):
//! 1. lot = Poisson(q) sample of the training set (its size varies, it may be empty);
//! 2. fakes `G(z, y)` with `z` from a seeded ChaCha20 stream and labels `y` uniform on 0..10 (never
//!    the private label distribution), detached from the generator;
//! 3. [`Design::RealOnly`] (a): the real examples' gradients of `CE(D(x, y), real)` are clipped per
//!    example to C and summed, noise N(0, sigma^2 C^2) is added, the sum is divided by the expected
//!    lot size `q N`; the gradient of the mean `CE(D(G(z), y), fake)` over a FIXED number
//!    `round(q N)` of fakes is added without noise (the seed report's fix, Opacus issue #418);
//!    [`Design::Joint`] (b): one fake per real example; each pair's joint gradient of
//!    `CE(D(x_i), real) + CE(D(G(z_i)), fake)` is clipped to C ([`clip_and_sum_grouped`]), summed,
//!    noised and divided by `q N` (Bie et al. 2023);
//! 4. the ledger records (Poisson, q, sigma, C) and fsyncs; only then
//! 5. the discriminator's optimiser applies the gradient.
//!
//! Every discriminator step is recorded, `n_critic` of them per generator step. Why (a) and (b)
//! are (epsilon, delta)-DP under the ledger's accounting: `proofs/gan/design_a_real_term.md` and
//! `proofs/gan/design_b_joint_clipping.md`.
use super::networks::{condition, Conditioning, Discriminator, Generator, CLASSES, FAKE, REAL};
use super::noise_layer::{NoiseLayerDiscriminator, CLAIMED_LABEL, NOISE_LAYER_LEDGER_LABEL};
use crate::accounting::ledger::Ledger;
use crate::accounting::SamplingScheme;
use crate::error::{Error, Result};
use crate::train::dpsgd::Examples;
use crate::train::mechanism::GaussianSum;
use crate::train::noise::{self, NoiseSeed};
use crate::train::optim::{LrSchedule, Optimizer, OptimizerKind};
use crate::train::per_example::{
    clip_and_sum, clip_and_sum_grouped, nonprivate_gradient, per_example_cross_entropy, ClipConfig, Sequential,
};
use crate::train::sampling::{PoissonSampler, SamplerState};
use crate::train::streams::RunStream;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Ledger label of a design (a) discriminator step.
pub const LEDGER_LABEL_REAL_ONLY: &str = "gan-discriminator-a-real-term";
/// Ledger label of a design (b) discriminator step.
pub const LEDGER_LABEL_JOINT: &str = "gan-discriminator-b-joint";

/// How the discriminator is made private.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Design {
    /// (a) clip and noise only the real-data term; the fake-data gradient is added without noise.
    RealOnly,
    /// (b) clip each (real, fake) pair's joint gradient, then noise (Bie et al. 2023).
    Joint,
    /// Triastcyn & Faltings 2018: a Gaussian noise layer inside the discriminator; its epsilon is
    /// [`CLAIMED_LABEL`].
    NoiseLayer,
}

impl Design {
    /// The ledger label of this design's discriminator steps.
    pub fn ledger_label(self) -> &'static str {
        match self {
            Design::RealOnly => LEDGER_LABEL_REAL_ONLY,
            Design::Joint => LEDGER_LABEL_JOINT,
            Design::NoiseLayer => NOISE_LAYER_LEDGER_LABEL,
        }
    }

    /// What the reported epsilon of this design is.
    pub fn epsilon_status(self) -> &'static str {
        match self {
            Design::RealOnly => "proven: proofs/gan/design_a_real_term.md (Poisson-subsampled Gaussian per discriminator step, composed by the accountant)",
            Design::Joint => "proven: proofs/gan/design_b_joint_clipping.md (Poisson-subsampled Gaussian per discriminator step, composed by the accountant)",
            Design::NoiseLayer => CLAIMED_LABEL,
        }
    }
}

impl std::fmt::Display for Design {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Design::RealOnly => "real-only",
            Design::Joint => "joint",
            Design::NoiseLayer => "noise-layer",
        })
    }
}

/// Everything that defines a GAN run (saved as `gan.json` beside the networks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanConfig {
    /// The privacy design.
    pub design: Design,
    /// Expected lot size L of a discriminator step; q = L / N.
    pub lot_size: f64,
    /// Noise multiplier sigma (of the noise layer for [`Design::NoiseLayer`]).
    pub noise_multiplier: f64,
    /// Clipping norm C of the per-example (or per-pair) gradients; for [`Design::NoiseLayer`], of
    /// the noise layer's activations.
    pub max_grad_norm: f64,
    /// Discriminator steps per generator step.
    pub n_critic: u32,
    /// Discriminator learning rate (Adam, betas 0.5 / 0.999).
    pub d_lr: f64,
    /// Generator learning rate (Adam, betas 0.5 / 0.999).
    pub g_lr: f64,
    /// Latent dimension.
    pub z_dim: i64,
    /// Generator width (channels of its last hidden layer).
    pub g_width: i64,
    /// Discriminator width (channels of its first conv).
    pub d_width: i64,
    /// Largest number of examples (or pairs) pushed through the discriminator at once.
    pub physical_batch: usize,
    /// Decay of an exponential moving average of the generator's variables (weights and
    /// BatchNorm statistics), updated after every generator step; when set, the average is the
    /// generator that is saved and released ([`DpGan::released_generator`]). `None`: the last
    /// iterate is released. Post-processing: it costs no privacy (`proofs/gan/`).
    #[serde(default)]
    pub g_ema: Option<f64>,
    /// How the discriminator learns the labels (designs (a) and (b); the noise-layer design uses
    /// label planes). Runs saved before this option existed used label planes.
    #[serde(default)]
    pub conditioning: Conditioning,
}

impl Default for GanConfig {
    fn default() -> Self {
        GanConfig {
            design: Design::Joint,
            lot_size: 128.0,
            noise_multiplier: 1.0,
            max_grad_norm: 1.0,
            n_critic: 1,
            d_lr: 2e-4,
            g_lr: 2e-4,
            z_dim: 64,
            g_width: 32,
            d_width: 32,
            physical_batch: 512,
            g_ema: None,
            conditioning: Conditioning::LabelPlanes,
        }
    }
}

fn adam() -> OptimizerKind {
    OptimizerKind::Adam { beta1: 0.5, beta2: 0.999, eps: 1e-8 }
}

/// Checks a configuration against a training-set size; returns q.
///
/// # Errors
/// [`Error::InvalidParameter`] naming the bad parameter.
pub fn validate(config: &GanConfig, n: usize) -> Result<f64> {
    if !(config.noise_multiplier > 0.0 && config.noise_multiplier.is_finite()) {
        validate_all_but_noise(config, n)?;
        return Err(Error::invalid("noise multiplier", config.noise_multiplier, "must be a finite number > 0"));
    }
    validate_all_but_noise(config, n)
}

/// As [`validate`], without the noise multiplier: the checks made before sigma is calibrated (or
/// checked by [`crate::recipe::resolve_noise`]). Returns q.
///
/// # Errors
/// [`Error::InvalidParameter`] naming the bad parameter.
pub fn validate_all_but_noise(config: &GanConfig, n: usize) -> Result<f64> {
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
    if !(config.max_grad_norm > 0.0 && config.max_grad_norm.is_finite()) {
        return Err(Error::invalid("clipping norm", config.max_grad_norm, "must be a finite number > 0"));
    }
    if config.n_critic == 0 {
        return Err(Error::invalid("n_critic", 0, "must be at least 1"));
    }
    if config.physical_batch == 0 {
        return Err(Error::invalid("physical batch", 0, "must be at least 1"));
    }
    if let Some(decay) = config.g_ema {
        if !(decay > 0.0 && decay < 1.0) {
            return Err(Error::invalid("generator average decay", decay, "must lie strictly between 0 and 1"));
        }
    }
    if config.design == Design::NoiseLayer && config.conditioning != Conditioning::LabelPlanes {
        return Err(Error::invalid(
            "conditioning",
            "classifier",
            "the noise-layer design reproduces its paper's discriminator, which uses label planes",
        ));
    }
    if config.z_dim < 1 || config.g_width < 1 || config.d_width < 4 {
        return Err(Error::invalid(
            "network sizes",
            format!("z {} g {} d {}", config.z_dim, config.g_width, config.d_width),
            "need z_dim, g_width >= 1 and d_width >= 4",
        ));
    }
    Ok(q)
}

/// A private discriminator gradient, before the update.
#[derive(Debug)]
pub struct DiscriminatorGradient {
    /// `(noisy clipped sum) / (q N)` (+ the fake term for (a)), per variable in
    /// [`Sequential::parameters`] order.
    pub gradients: Vec<Tensor>,
    /// Sum of `CE(D(x), real)` over the real examples.
    pub real_loss_sum: f64,
    /// Sum of `CE(D(G(z)), fake)` over the fakes.
    pub fake_loss_sum: f64,
    /// Number of real examples in the lot.
    pub real_count: usize,
    /// Number of fakes.
    pub fake_count: usize,
    /// Fraction of clipping units (examples or pairs) whose gradient was clipped.
    pub clipped_fraction: f64,
}

fn zeros_like_params(d: &Sequential) -> Result<Vec<Tensor>> {
    Ok(d.parameters().iter().map(|(_, p)| p.f_zeros_like()).collect::<std::result::Result<_, _>>()?)
}

/// One private discriminator gradient for designs (a) and (b): the lot's real images `real_x`
/// (B, 1, 28, 28) in [0, 1] with labels `real_y` (B,), generated images `fake_x` with labels
/// `fake_y`; the clipped sum is released by `mechanism` ([`GaussianSum::release`]: clipping norm
/// C, noise N(0, (sigma C (1 + CLIP_ROUNDING_SLACK))^2) per coordinate, divided by q N), which
/// records discriminator step `step` in `ledger` before the value exists outside it. `conditioning` says what the
/// discriminator's input and targets are ([`Conditioning`]): "real" is class [`REAL`] or the
/// record's label, "generated" class [`FAKE`] or 10.
///
/// - [`Design::RealOnly`]: any number of fakes (the caller must use a number that does not
///   depend on the private data); returns `(sum_i clip(g_real_i) + noise) / (q N) + mean_j g_fake_j`.
/// - [`Design::Joint`]: exactly one fake per real example (pair i = (real i, fake i)); returns
///   `(sum_i clip(g_real_i + g_fake_i) + noise) / (q N)`.
///
/// # Proof definition
/// Given the discriminator's current parameters and the fakes (both functions of earlier
/// releases and of randomness independent of the data), the noisy sum is a Gaussian mechanism of
/// L2 sensitivity C under add/remove of one training example; with Poisson sampling each call is
/// one Poisson-subsampled Gaussian step with noise multiplier sigma, recorded in `ledger` before
/// it is returned. See `proofs/gan/design_a_real_term.md`, `proofs/gan/design_b_joint_clipping.md`
/// and `proofs/train/gaussian_sum.md`; checked against a
/// one-example-at-a-time reference in `tests/gan.rs` (`private_step_equals_one_at_a_time_reference`).
///
/// # Errors
/// [`Error::InvalidParameter`] for [`Design::NoiseLayer`] or for (b) with unequal counts (nothing
/// recorded); ledger I/O, numerical and libtorch errors (no gradient is returned).
#[allow(clippy::too_many_arguments)]
pub fn private_discriminator_gradient(
    d: &Sequential,
    design: Design,
    conditioning: Conditioning,
    real_x: &Tensor,
    real_y: &Tensor,
    fake_x: &Tensor,
    fake_y: &Tensor,
    physical_batch: usize,
    mechanism: &mut GaussianSum,
    step: u64,
    ledger: &mut Ledger,
) -> Result<DiscriminatorGradient> {
    let clip = &ClipConfig::new(mechanism.clipping_norm());
    let physical = physical_batch.max(1) as i64;
    let b = real_x.size()[0];
    let f = fake_x.size()[0];
    let mut sums = zeros_like_params(d)?;
    let mut real_loss_sum = 0.0;
    let mut fake_loss_sum = 0.0;
    let mut clipped = 0i64;
    let add = |sums: &mut Vec<Tensor>, part: &[Tensor]| -> Result<()> {
        for (s, c) in sums.iter_mut().zip(part) {
            let _ = s.f_add_(c)?;
        }
        Ok(())
    };
    let mut fake_mean: Option<Vec<Tensor>> = None;
    match design {
        Design::RealOnly => {
            let mut start = 0;
            while start < b {
                let len = physical.min(b - start);
                let y = real_y.f_narrow(0, start, len)?;
                let x = conditioning.input(&real_x.f_narrow(0, start, len)?, &y)?;
                let t = conditioning.real_targets(&y)?;
                let batch = clip_and_sum(d, &x, &t, clip)?;
                add(&mut sums, &batch.clipped_sum)?;
                real_loss_sum += batch.loss_sum;
                clipped += i64::try_from(batch.clip_factors.f_lt(1.0)?.f_sum(Kind::Int64)?)?;
                start += len;
            }
            if f > 0 {
                let t = conditioning.fake_targets(f, fake_x.device())?;
                let g = nonprivate_gradient(d, &conditioning.input(fake_x, fake_y)?, &t)?;
                fake_loss_sum = g.loss_mean * f as f64;
                fake_mean = Some(g.gradients);
            }
        }
        Design::Joint => {
            if f != b {
                return Err(Error::invalid(
                    "fakes",
                    f,
                    format!("design (b) pairs one fake with each of the {b} real examples"),
                ));
            }
            let mut start = 0;
            while start < b {
                let len = physical.min(b - start);
                let yr = real_y.f_narrow(0, start, len)?;
                let xr = conditioning.input(&real_x.f_narrow(0, start, len)?, &yr)?;
                let xf = conditioning.input(&fake_x.f_narrow(0, start, len)?, &fake_y.f_narrow(0, start, len)?)?;
                // Rows 2i (real) and 2i + 1 (fake) form pair i.
                let rest = xr.size()[1..].to_vec();
                let mut shape = vec![2 * len];
                shape.extend_from_slice(&rest);
                let x = Tensor::f_stack(&[xr, xf.shallow_clone()], 1)?.f_reshape(shape.as_slice())?;
                let t = Tensor::f_stack(
                    &[conditioning.real_targets(&yr)?, conditioning.fake_targets(len, real_x.device())?],
                    1,
                )?
                .f_reshape([2 * len])?;
                let batch = clip_and_sum_grouped(d, &x, &t, 2, clip)?;
                add(&mut sums, &batch.clipped_sum)?;
                // Rows 2i + 1 are the fakes: their losses come from the same forward pass.
                let fl = batch.losses.f_reshape([len, 2])?.f_select(1, 1)?.f_sum(Kind::Double)?.f_double_value(&[])?;
                fake_loss_sum += fl;
                real_loss_sum += batch.loss_sum - fl;
                clipped += i64::try_from(batch.clip_factors.f_lt(1.0)?.f_sum(Kind::Int64)?)?;
                start += len;
            }
        }
        Design::NoiseLayer => {
            return Err(Error::invalid("design", "noise-layer", "has no clipped gradient; see gan::noise_layer"));
        }
    }
    let mut gradients = mechanism.release(&sums, step, ledger)?;
    if let Some(fm) = &fake_mean {
        // Design (a)'s generated-data term: no private data, added after the release.
        for (g, f) in gradients.iter_mut().zip(fm) {
            *g = g.f_add(f)?;
        }
    }
    Ok(DiscriminatorGradient {
        gradients,
        real_loss_sum,
        fake_loss_sum,
        real_count: b as usize,
        fake_count: f as usize,
        clipped_fraction: if b == 0 { 0.0 } else { clipped as f64 / b as f64 },
    })
}

/// The discriminator of a run.
#[derive(Debug)]
pub enum AnyDiscriminator {
    /// Designs (a) and (b).
    Private(Discriminator),
    /// The noise-layer design.
    NoiseLayer(NoiseLayerDiscriminator),
}

impl AnyDiscriminator {
    /// Its `VarStore`.
    pub fn var_store(&self) -> &tch::nn::VarStore {
        match self {
            AnyDiscriminator::Private(d) => &d.vs,
            AnyDiscriminator::NoiseLayer(d) => &d.vs,
        }
    }

    /// Its `VarStore`, mutably.
    pub fn var_store_mut(&mut self) -> &mut tch::nn::VarStore {
        match self {
            AnyDiscriminator::Private(d) => &mut d.vs,
            AnyDiscriminator::NoiseLayer(d) => &mut d.vs,
        }
    }

    /// Every trainable tensor, in a fixed order.
    pub fn parameters(&self) -> Vec<Tensor> {
        match self {
            AnyDiscriminator::Private(d) => d.net.parameters().into_iter().map(|(_, t)| t).collect(),
            AnyDiscriminator::NoiseLayer(d) => d.parameters(),
        }
    }
}

/// What one discriminator step did.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DiscriminatorReport {
    /// Mean `CE(D(x), real)` over the lot's real examples (NaN for an empty lot).
    pub real_loss: f64,
    /// Mean `CE(D(G(z)), fake)` over the fakes (NaN if none).
    pub fake_loss: f64,
    /// Real examples in the lot.
    pub lot_size: usize,
    /// Fraction clipped.
    pub clipped_fraction: f64,
}

/// Files of a [`DpGan`] checkpoint, inside its checkpoint folder.
mod checkpoint_file {
    pub const GENERATOR: &str = "generator.safetensors";
    pub const GENERATOR_AVERAGE: &str = "generator-average.safetensors";
    pub const DISCRIMINATOR: &str = "discriminator.safetensors";
    pub const GENERATOR_OPTIMIZER: &str = "generator-optimizer.safetensors";
    pub const DISCRIMINATOR_OPTIMIZER: &str = "discriminator-optimizer.safetensors";
}

/// Everything of a [`DpGan`] that is not a tensor, for a checkpoint (the tensors are files in
/// the checkpoint folder, written by [`DpGan::write_checkpoint_files`]): the configuration, the
/// step counts and the position of every random stream, so that a resumed run draws exactly the
/// lots, noise and latents the uninterrupted run would have drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpGanState {
    /// The configuration.
    pub config: GanConfig,
    /// Training examples N.
    pub dataset_size: usize,
    /// Discriminator steps applied (each recorded in the ledger before its update).
    pub discriminator_steps: u64,
    /// Generator steps applied.
    pub generator_steps: u64,
    sampler: SamplerState,
    /// The mechanism's noise stream (`None` for the noise-layer design).
    noise_rng: Option<ChaCha20Rng>,
    latent_rng: ChaCha20Rng,
    noise_layer_rng: ChaCha20Rng,
}

/// The Gaussian mechanism of a clipped design's discriminator steps: (Poisson, q, sigma, C),
/// normalised by the expected lot size q N, recorded under the design's label.
fn gaussian_sum(
    config: &GanConfig,
    design: Design,
    sampler: &PoissonSampler,
    noise: ChaCha20Rng,
) -> Result<GaussianSum> {
    GaussianSum::new(
        config.noise_multiplier,
        config.max_grad_norm,
        sampler.sampling_rate(),
        sampler.expected_lot_size(),
        design.ledger_label(),
        noise,
    )
}

/// The generator, the discriminator and (with `config.g_ema`) the generator's moving average,
/// which starts as a copy of the generator; their weights come from libtorch's generator, which
/// the caller seeds or holds.
fn build_networks(config: &GanConfig, device: Device) -> Result<(Generator, AnyDiscriminator, Option<Generator>)> {
    let g = Generator::new(device, config.z_dim, config.g_width)?;
    let d = match config.design {
        Design::NoiseLayer => AnyDiscriminator::NoiseLayer(NoiseLayerDiscriminator::new(
            device,
            config.d_width,
            config.max_grad_norm,
            config.noise_multiplier,
        )?),
        _ => AnyDiscriminator::Private(Discriminator::with_conditioning(device, config.d_width, config.conditioning)?),
    };
    // The average starts as a copy of the generator (its own initial draw is overwritten).
    let average = match config.g_ema {
        None => None,
        Some(_) => {
            let mut a = Generator::new(device, config.z_dim, config.g_width)?;
            a.var_store_mut().copy(g.var_store())?;
            Some(a)
        }
    };
    Ok((g, d, average))
}

/// A private GAN in training.
#[derive(Debug)]
pub struct DpGan {
    config: GanConfig,
    q: f64,
    expected_lot: f64,
    generator: Generator,
    /// The moving average of the generator (when `config.g_ema` is set).
    average: Option<Generator>,
    discriminator: AnyDiscriminator,
    d_params: Vec<Tensor>,
    g_params: Vec<Tensor>,
    d_opt: Optimizer,
    g_opt: Optimizer,
    sampler: PoissonSampler,
    /// The Gaussian mechanism of designs (a) and (b), which owns the noise stream (`None` for the
    /// noise-layer design).
    mechanism: Option<GaussianSum>,
    latent_rng: ChaCha20Rng,
    noise_layer_rng: ChaCha20Rng,
    ledger: Ledger,
    d_steps: u64,
    g_steps: u64,
    dataset_size: usize,
}

impl DpGan {
    /// A new run over a training set of `dataset_size` examples, recording into `ledger` (a file
    /// for a run whose privacy is reported; [`Ledger::in_memory`] for tests and audit replays).
    /// Every random choice comes from `seed` ([`NoiseSeed::Secure`]: the OS CSPRNG).
    ///
    /// # Errors
    /// Invalid configuration; libtorch errors.
    pub fn new(
        config: GanConfig,
        dataset_size: usize,
        ledger: Ledger,
        seed: NoiseSeed,
        device: Device,
    ) -> Result<Self> {
        Self::with_initialisation(config, dataset_size, ledger, seed, seed, device)
    }

    /// As [`DpGan::new`], with the networks' initial weights drawn from `init` instead of `seed`
    /// (audits fix the initialisation across replays: the privacy guarantee holds for every
    /// initialisation, and a fixed one removes variance that would hide the canary).
    ///
    /// # Errors
    /// As [`DpGan::new`].
    pub fn with_initialisation(
        config: GanConfig,
        dataset_size: usize,
        ledger: Ledger,
        seed: NoiseSeed,
        init: NoiseSeed,
        device: Device,
    ) -> Result<Self> {
        let q = validate(&config, dataset_size)?;
        let init = init.to_bytes(RunStream::Initialisation);
        let (generator, discriminator, average) =
            crate::torch_rng::seeded_by_key(&init, || build_networks(&config, device))?;
        if let AnyDiscriminator::Private(d) = &discriminator {
            d.net.check_private()?;
        }
        let sampler = PoissonSampler::new(dataset_size, q, seed.to_bytes(RunStream::Sampling))?;
        Self::assemble(
            config,
            q,
            (generator, discriminator, average),
            sampler,
            Some(ChaCha20Rng::from_seed(seed.to_bytes(RunStream::Noise))),
            (
                ChaCha20Rng::from_seed(seed.to_bytes(RunStream::GanLatents)),
                ChaCha20Rng::from_seed(seed.to_bytes(RunStream::GanNoiseLayer)),
            ),
            ledger,
            dataset_size,
        )
    }

    /// The one place a [`DpGan`] is put together, fresh ([`DpGan::with_initialisation`]) or from a
    /// checkpoint ([`DpGan::from_checkpoint`]): the networks' parameters, fresh Adam optimisers
    /// and, for the Gaussian designs, the one noise mechanism on `noise`; no step taken yet.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: GanConfig,
        q: f64,
        (generator, discriminator, average): (Generator, AnyDiscriminator, Option<Generator>),
        sampler: PoissonSampler,
        noise: Option<ChaCha20Rng>,
        (latent_rng, noise_layer_rng): (ChaCha20Rng, ChaCha20Rng),
        ledger: Ledger,
        dataset_size: usize,
    ) -> Result<Self> {
        let d_params = discriminator.parameters();
        let g_params = generator.parameters();
        let d_opt = Optimizer::new(adam(), config.d_lr, LrSchedule::Constant, &d_params)?;
        let g_opt = Optimizer::new(adam(), config.g_lr, LrSchedule::Constant, &g_params)?;
        let mechanism = match (config.design, noise) {
            (Design::NoiseLayer, _) => None,
            (design, Some(noise)) => Some(gaussian_sum(&config, design, &sampler, noise)?),
            (_, None) => return Err(Error::invalid("noise stream", "none", "a Gaussian design needs one")),
        };
        Ok(DpGan {
            expected_lot: sampler.expected_lot_size(),
            config,
            q,
            generator,
            average,
            discriminator,
            d_params,
            g_params,
            d_opt,
            g_opt,
            sampler,
            mechanism,
            latent_rng,
            noise_layer_rng,
            ledger,
            d_steps: 0,
            g_steps: 0,
            dataset_size,
        })
    }

    /// Writes the networks (the generator, its moving average if any, the discriminator) and
    /// both optimisers' state as safetensors files in `folder` (which must exist), each fsynced,
    /// and returns the rest of the state; [`DpGan::from_checkpoint`] reads them back.
    ///
    /// # Errors
    /// I/O and libtorch errors.
    pub fn write_checkpoint_files(&self, folder: &Path) -> Result<DpGanState> {
        use checkpoint_file as f;
        self.generator.var_store().save(folder.join(f::GENERATOR))?;
        self.discriminator.var_store().save(folder.join(f::DISCRIMINATOR))?;
        Tensor::write_safetensors(&self.g_opt.named_state(), folder.join(f::GENERATOR_OPTIMIZER))?;
        Tensor::write_safetensors(&self.d_opt.named_state(), folder.join(f::DISCRIMINATOR_OPTIMIZER))?;
        let mut written = vec![f::GENERATOR, f::DISCRIMINATOR, f::GENERATOR_OPTIMIZER, f::DISCRIMINATOR_OPTIMIZER];
        if let Some(average) = &self.average {
            average.var_store().save(folder.join(f::GENERATOR_AVERAGE))?;
            written.push(f::GENERATOR_AVERAGE);
        }
        for name in written {
            crate::durable::sync_file(&folder.join(name))?;
        }
        Ok(DpGanState {
            config: self.config.clone(),
            dataset_size: self.dataset_size,
            discriminator_steps: self.d_steps,
            generator_steps: self.g_steps,
            sampler: self.sampler.state(),
            noise_rng: self.mechanism.as_ref().map(|m| m.noise_stream().clone()),
            latent_rng: self.latent_rng.clone(),
            noise_layer_rng: self.noise_layer_rng.clone(),
        })
    }

    /// Rebuilds a run from a checkpoint written by [`DpGan::write_checkpoint_files`] in `folder`,
    /// recording into `ledger` (the run's ledger, opened for appending).
    ///
    /// # Proof definition
    /// The ledger must hold at least as many steps as the checkpoint's discriminator steps (a
    /// ledger that holds fewer has lost recorded privacy cost: an error). Steps the ledger holds
    /// beyond the checkpoint (recorded, then lost in a crash before the next checkpoint) stay
    /// counted and are taken again, recorded again: an over-count, which is safe (the contract of
    /// [`crate::train::dpsgd::DpSgd::resume`]).
    ///
    /// # Errors
    /// [`Error::Data`] for a ledger that holds fewer steps than the checkpoint or for missing or
    /// mismatched files; invalid configuration; libtorch errors.
    pub fn from_checkpoint(state: DpGanState, folder: &Path, ledger: Ledger, device: Device) -> Result<Self> {
        use checkpoint_file as f;
        if ledger.steps() < state.discriminator_steps {
            return Err(Error::data(
                ledger.path(),
                format!(
                    "holds {} steps but the checkpoint is at discriminator step {}",
                    ledger.steps(),
                    state.discriminator_steps
                ),
            ));
        }
        let config = state.config;
        let q = validate(&config, state.dataset_size)?;
        // The initial draws are overwritten by the checkpoint; held so they cannot disturb a
        // seeded build on another thread.
        let (mut generator, mut discriminator, mut average) = {
            let _rng = crate::torch_rng::lock();
            build_networks(&config, device)?
        };
        generator.var_store_mut().load(folder.join(f::GENERATOR))?;
        discriminator.var_store_mut().load(folder.join(f::DISCRIMINATOR))?;
        if let Some(a) = average.as_mut() {
            a.var_store_mut().load(folder.join(f::GENERATOR_AVERAGE))?;
        }
        if config.design != Design::NoiseLayer && state.noise_rng.is_none() {
            return Err(Error::data(folder, "the checkpoint has no noise stream"));
        }
        let sampler = PoissonSampler::resume(state.dataset_size, q, state.sampler)?;
        let mut gan = Self::assemble(
            config,
            q,
            (generator, discriminator, average),
            sampler,
            state.noise_rng,
            (state.latent_rng, state.noise_layer_rng),
            ledger,
            state.dataset_size,
        )?;
        gan.d_opt.load_state(
            &Tensor::read_safetensors(folder.join(f::DISCRIMINATOR_OPTIMIZER))?,
            state.discriminator_steps,
        )?;
        gan.g_opt.load_state(&Tensor::read_safetensors(folder.join(f::GENERATOR_OPTIMIZER))?, state.generator_steps)?;
        gan.d_steps = state.discriminator_steps;
        gan.g_steps = state.generator_steps;
        Ok(gan)
    }

    /// Number of fakes per step for design (a) and per generator step: `round(q N)`, at least 1
    /// (public: it depends on q and N only).
    pub fn fixed_fake_count(&self) -> i64 {
        (self.expected_lot.round() as i64).max(1)
    }

    /// `n` latents and uniform labels from the run's latent stream.
    fn latents(&mut self, n: i64) -> Result<(Tensor, Tensor)> {
        latents(&mut self.latent_rng, n, self.config.z_dim, self.d_params[0].device())
    }

    /// One discriminator step on `data` (recorded in the ledger before its update).
    ///
    /// # Errors
    /// Data of the wrong size; numerical errors (nothing recorded or applied); ledger I/O errors
    /// (nothing applied).
    pub fn discriminator_step(&mut self, data: &Examples) -> Result<DiscriminatorReport> {
        if data.len() != self.dataset_size {
            return Err(Error::invalid("training set", data.len(), format!("expected {} examples", self.dataset_size)));
        }
        let lot = self.sampler.next_lot();
        let idx: Vec<i64> = lot.iter().map(|&i| i as i64).collect();
        let device = self.d_params[0].device();
        let idx = Tensor::f_from_slice(&idx)?.f_to(device)?;
        let real_x = data.images.f_index_select(0, &idx)?;
        let real_y = data.labels.f_index_select(0, &idx)?;
        let fakes = match self.config.design {
            Design::Joint => lot.len() as i64,
            _ => self.fixed_fake_count(),
        };
        let (z, fake_y) = self.latents(fakes)?;
        let fake_x = {
            let _g = tch::no_grad_guard();
            // Design (b): each fake must be a function of its own latent alone (its pair is the
            // unit of privacy), so BatchNorm uses its running statistics, not the statistics of a
            // batch whose size is the private lot size. Design (a) and the noise layer use a
            // fixed number of fakes, so batch statistics are fine.
            let batch_statistics = self.config.design != Design::Joint;
            self.generator.forward(&z, &fake_y, batch_statistics)?.f_detach()?
        };
        let step = self.d_steps + 1;
        let (grads, report) = match (&self.discriminator, self.mechanism.as_mut()) {
            (AnyDiscriminator::Private(d), Some(mechanism)) => {
                // Recorded in the ledger by the mechanism before the gradient exists here.
                let g = private_discriminator_gradient(
                    &d.net,
                    self.config.design,
                    self.config.conditioning,
                    &real_x,
                    &real_y,
                    &fake_x,
                    &fake_y,
                    self.config.physical_batch,
                    mechanism,
                    step,
                    &mut self.ledger,
                )?;
                let report = DiscriminatorReport {
                    real_loss: if g.real_count == 0 { f64::NAN } else { g.real_loss_sum / g.real_count as f64 },
                    fake_loss: if g.fake_count == 0 { f64::NAN } else { g.fake_loss_sum / g.fake_count as f64 },
                    lot_size: g.real_count,
                    clipped_fraction: g.clipped_fraction,
                };
                (g.gradients, report)
            }
            (AnyDiscriminator::Private(_), None) => {
                return Err(Error::invalid(
                    "design",
                    self.config.design,
                    "a clipped design needs its Gaussian mechanism",
                ))
            }
            (AnyDiscriminator::NoiseLayer(d), _) => {
                // The paper's training: ordinary gradients of the mean losses, through the noise layer.
                let xr = condition(&real_x, &real_y)?;
                let xf = condition(&fake_x, &fake_y)?;
                let lr = d.logits(&xr, &mut self.noise_layer_rng)?;
                let lf = d.logits(&xf, &mut self.noise_layer_rng)?;
                let tr = Tensor::f_full([xr.size()[0]], REAL, (Kind::Int64, device))?;
                let tf = Tensor::f_full([xf.size()[0]], FAKE, (Kind::Int64, device))?;
                let real_losses = per_example_cross_entropy(&lr, &tr)?;
                let fake_losses = per_example_cross_entropy(&lf, &tf)?;
                let real_sum = real_losses.f_sum(Kind::Float)?;
                let fake_mean = fake_losses.f_mean(Kind::Float)?;
                // The real term is divided by the expected lot size, as in the private designs.
                let loss = real_sum.f_div_scalar(self.expected_lot)?.f_add(&fake_mean)?;
                let rs = real_sum.f_double_value(&[])?;
                let fm = fake_mean.f_double_value(&[])?;
                if !(rs.is_finite() && fm.is_finite()) {
                    return Err(Error::numerical("discriminator loss", "not finite; no update made"));
                }
                let grads = Tensor::f_run_backward(&[&loss], &self.d_params, false, false)?;
                // The noise-layer step (its epsilon is claimed, not proven): recorded before its
                // update is applied.
                self.ledger.record(
                    SamplingScheme::Poisson,
                    self.q,
                    self.config.noise_multiplier,
                    self.config.max_grad_norm,
                    self.config.design.ledger_label(),
                )?;
                let n = lot.len();
                (
                    grads,
                    DiscriminatorReport {
                        real_loss: if n == 0 { f64::NAN } else { rs / n as f64 },
                        fake_loss: fm,
                        lot_size: n,
                        clipped_fraction: f64::NAN,
                    },
                )
            }
        };
        self.d_opt.step(&self.d_params, &grads)?;
        self.d_steps += 1;
        Ok(report)
    }

    /// One generator step (post-processing of the discriminator: no ledger entry): the
    /// non-saturating loss `mean CE(D(G(z, y), y), real)` over `round(q N)` fakes ("real" is
    /// class y for [`Conditioning::Classifier`]).
    ///
    /// # Errors
    /// Numerical and libtorch errors (no update made).
    pub fn generator_step(&mut self) -> Result<f64> {
        let n = self.fixed_fake_count();
        let (z, y) = self.latents(n)?;
        let conditioning = self.config.conditioning;
        let x = conditioning.input(&self.generator.forward(&z, &y, true)?, &y)?;
        let logits = match &self.discriminator {
            AnyDiscriminator::Private(d) => d.net.forward(&x)?,
            AnyDiscriminator::NoiseLayer(d) => d.logits(&x, &mut self.noise_layer_rng)?,
        };
        let t = conditioning.real_targets(&y)?;
        let loss = per_example_cross_entropy(&logits, &t)?.f_mean(Kind::Float)?;
        let value = loss.f_double_value(&[])?;
        if !value.is_finite() {
            return Err(Error::numerical("generator loss", "not finite; no update made"));
        }
        let grads = Tensor::f_run_backward(&[&loss], &self.g_params, false, false)?;
        self.g_opt.step(&self.g_params, &grads)?;
        self.update_average()?;
        self.g_steps += 1;
        Ok(value)
    }

    /// The decay used by the moving average at generator step `t` (0-based):
    /// `min(decay, (1 + t) / (10 + t))`, so early, poor iterates are forgotten quickly (the warm-up
    /// of TensorFlow's `ExponentialMovingAverage` with `num_updates`).
    pub fn average_decay(decay: f64, t: u64) -> f64 {
        crate::train::optim::warmed_up_decay(decay, t)
    }

    /// `average <- d average + (1 - d) generator` over every variable of the generator's
    /// `VarStore` (trainable or not), with d from [`DpGan::average_decay`].
    fn update_average(&mut self) -> Result<()> {
        let (Some(average), Some(decay)) = (&self.average, self.config.g_ema) else {
            return Ok(());
        };
        let d = Self::average_decay(decay, self.g_steps);
        let live = self.generator.var_store().variables();
        let _g = tch::no_grad_guard();
        for (name, mut avg) in average.var_store().variables() {
            let current = live
                .get(&name)
                .ok_or_else(|| Error::invalid("generator variable", name.clone(), "missing from the live generator"))?;
            let _scaled = avg.f_mul_scalar_(d)?;
            let _averaged = avg.f_add_(&current.f_mul_scalar(1.0 - d)?)?;
        }
        Ok(())
    }

    /// The discriminator's "real" margin `logit[REAL] - logit[FAKE]` (for
    /// [`Conditioning::Classifier`]: `logit[y] - logit[10]`, [`Conditioning::real_margin`]) on
    /// images `x` with labels `y`, per example, without gradients. For the noise-layer design the noise layer is drawn
    /// `draws` times from `rng` and the margins averaged (any function of the trained
    /// discriminator is post-processing of the training, so this is a fair audit statistic).
    ///
    /// # Errors
    /// libtorch errors; `draws == 0`.
    pub fn real_margin(&self, x: &Tensor, y: &Tensor, draws: usize, rng: &mut ChaCha20Rng) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let conditioning = self.config.conditioning;
        let xc = conditioning.input(x, y)?;
        let margin = |logits: Tensor| -> Result<Tensor> { conditioning.real_margin(&logits, y) };
        match &self.discriminator {
            AnyDiscriminator::Private(d) => margin(d.net.forward(&xc)?),
            AnyDiscriminator::NoiseLayer(d) => {
                if draws == 0 {
                    return Err(Error::invalid("noise draws", 0, "must be at least 1"));
                }
                let mut sum = margin(d.logits(&xc, rng)?)?;
                for _ in 1..draws {
                    sum = sum.f_add(&margin(d.logits(&xc, rng)?)?)?;
                }
                Ok(sum.f_div_scalar(draws as f64)?)
            }
        }
    }

    /// The gradient, with respect to the discriminator's parameters (in
    /// [`AnyDiscriminator::parameters`] order), of the mean real margin on `x, y` (averaged over
    /// `draws` noise-layer draws for that design): the direction in which training on `x` as a
    /// real record would move the discriminator.
    ///
    /// # Errors
    /// libtorch errors; `draws == 0`.
    pub fn margin_gradient(&self, x: &Tensor, y: &Tensor, draws: usize, rng: &mut ChaCha20Rng) -> Result<Vec<Tensor>> {
        if draws == 0 {
            return Err(Error::invalid("noise draws", 0, "must be at least 1"));
        }
        let conditioning = self.config.conditioning;
        let xc = conditioning.input(x, y)?;
        let margin =
            |logits: Tensor| -> Result<Tensor> { Ok(conditioning.real_margin(&logits, y)?.f_mean(Kind::Float)?) };
        let total = match &self.discriminator {
            AnyDiscriminator::Private(d) => margin(d.net.forward(&xc)?)?,
            AnyDiscriminator::NoiseLayer(d) => {
                let mut sum = margin(d.logits(&xc, rng)?)?;
                for _ in 1..draws {
                    sum = sum.f_add(&margin(d.logits(&xc, rng)?)?)?;
                }
                sum.f_div_scalar(draws as f64)?
            }
        };
        Ok(Tensor::f_run_backward(&[&total], &self.d_params, false, false)?)
    }

    /// `n_critic` discriminator steps, then one generator step. Returns the discriminator
    /// reports and the generator loss.
    ///
    /// # Errors
    /// As [`DpGan::discriminator_step`] and [`DpGan::generator_step`].
    pub fn round(&mut self, data: &Examples) -> Result<(Vec<DiscriminatorReport>, f64)> {
        let mut reports = Vec::with_capacity(self.config.n_critic as usize);
        for _ in 0..self.config.n_critic {
            reports.push(self.discriminator_step(data)?);
        }
        Ok((reports, self.generator_step()?))
    }

    /// The generator being trained (the last iterate).
    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    /// The generator a release uses: the moving average when `config.g_ema` is set, otherwise
    /// the last iterate.
    pub fn released_generator(&self) -> &Generator {
        self.average.as_ref().unwrap_or(&self.generator)
    }

    /// The discriminator.
    pub fn discriminator(&self) -> &AnyDiscriminator {
        &self.discriminator
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Discriminator steps taken (each one recorded in the ledger).
    pub fn discriminator_steps(&self) -> u64 {
        self.d_steps
    }

    /// Generator steps taken.
    pub fn generator_steps(&self) -> u64 {
        self.g_steps
    }

    /// The sampling rate q.
    pub fn sampling_rate(&self) -> f64 {
        self.q
    }

    /// The configuration.
    pub fn config(&self) -> &GanConfig {
        &self.config
    }
}

/// `n` latents N(0, I) of size `z_dim` and labels uniform on 0..10, from `rng`.
///
/// # Errors
/// libtorch errors.
pub fn latents(rng: &mut ChaCha20Rng, n: i64, z_dim: i64, device: Device) -> Result<(Tensor, Tensor)> {
    let mut z = vec![0f32; (n * z_dim) as usize];
    noise::gaussian(rng, 1.0, &mut z)?;
    let labels: Vec<i64> = (0..n).map(|_| rng.gen_range(0..CLASSES)).collect();
    Ok((Tensor::f_from_slice(&z)?.f_view([n, z_dim])?.f_to(device)?, Tensor::f_from_slice(&labels)?.f_to(device)?))
}
