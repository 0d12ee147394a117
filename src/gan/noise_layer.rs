//! The seed paper's design (Triastcyn & Faltings 2018, "Generating Differentially Private
//! Datasets Using GANs"): a Gaussian noise layer inside the discriminator. The activations of the
//! discriminator's first block are clipped per example to L2 norm `C` and N(0, sigma^2 C^2) noise
//! is added to every coordinate; the rest of the discriminator, and the generator, only see the
//! noisy activations. The discriminator is then trained with ordinary (unclipped, un-noised)
//! gradients, and the paper accounts each discriminator step as one Poisson-subsampled Gaussian
//! step with the noise layer's sigma.
//!
//! **That epsilon is the method's authors' claim, not something dpaudit proves.** The layers
//! before the noise layer receive un-noised gradients computed from raw records, and their
//! weights shape what every later step (and the generator) sees, so the argument does not cover
//! them. dpaudit records the steps in the ledger with the label
//! [`NOISE_LAYER_LEDGER_LABEL`] and every epsilon it reports for this design carries
//! [`CLAIMED_LABEL`]. The noise comes from a seeded ChaCha20 stream, so a run replays exactly:
//! the audit (issue 3) can test the claim.
use super::networks::{discriminator_head, discriminator_tail};
use crate::error::{Error, Result};
use crate::train::noise;
use crate::train::per_example::Sequential;
use rand_chacha::ChaCha20Rng;
use tch::{nn, Device, Kind, Tensor};

/// The label every epsilon of the noise-layer design carries.
pub const CLAIMED_LABEL: &str = "claimed by the method's authors; not proven by dpaudit";
/// The ledger label of a noise-layer discriminator step (its epsilon is the claim).
pub const NOISE_LAYER_LEDGER_LABEL: &str = "gan-discriminator-noise-layer-claimed";

/// A discriminator with a Gaussian noise layer between its first block and the rest, in its own
/// `VarStore` (`head.*` and `tail.*`).
#[derive(Debug)]
pub struct NoiseLayerDiscriminator {
    /// Its variables.
    pub vs: nn::VarStore,
    /// Layers before the noise layer.
    pub head: Sequential,
    /// Layers after it.
    pub tail: Sequential,
    clip: f64,
    noise_multiplier: f64,
}

impl NoiseLayerDiscriminator {
    /// Builds the discriminator of [`super::networks::discriminator_specs`]`(width)` split at the
    /// noise layer, which clips activations to `clip` and adds noise of standard deviation
    /// `noise_multiplier * clip`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a clip or noise multiplier that is not finite and > 0.
    pub fn new(device: Device, width: i64, clip: f64, noise_multiplier: f64) -> Result<Self> {
        if !(clip > 0.0 && clip.is_finite()) {
            return Err(Error::invalid("noise-layer clip", clip, "must be a finite number > 0"));
        }
        if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
            return Err(Error::invalid("noise multiplier", noise_multiplier, "must be a finite number > 0"));
        }
        let vs = nn::VarStore::new(device);
        let head = Sequential::new(&(vs.root() / "head"), &discriminator_head(width))?;
        let tail = Sequential::new(&(vs.root() / "tail"), &discriminator_tail(width))?;
        Ok(NoiseLayerDiscriminator { vs, head, tail, clip, noise_multiplier })
    }

    /// Every trainable tensor (head then tail).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.head.parameters().into_iter().chain(self.tail.parameters()).map(|(_, t)| t).collect()
    }

    /// The noise layer: each row of `h` (B, ...) clipped to L2 norm `clip`, plus N(0, (sigma
    /// clip)^2) per coordinate from `rng`. Differentiable in `h` (the clip factor is treated as a
    /// function of `h`, as autograd does in the paper's implementation).
    ///
    /// # Errors
    /// libtorch errors; [`Error::Numerical`] for non-finite activations.
    pub fn noise_layer(&self, h: &Tensor, rng: &mut ChaCha20Rng) -> Result<Tensor> {
        let b = h.size()[0];
        let flat = h.f_reshape([b, -1])?;
        let norms = flat.f_square()?.f_sum_dim_intlist(1, true, None)?.f_sqrt()?;
        if !bool::try_from(norms.f_isfinite()?.f_all()?)? {
            return Err(Error::numerical("noise layer", "non-finite activations; no update made"));
        }
        let factor = norms.f_add_scalar(1e-6)?.f_reciprocal()?.f_mul_scalar(self.clip)?.f_clamp_max(1.0)?;
        let mut z = vec![0f32; flat.numel()];
        noise::gaussian(rng, self.noise_multiplier * self.clip, &mut z)?;
        let z = Tensor::f_from_slice(&z)?.f_view(flat.size().as_slice())?.f_to_kind(h.f_kind()?)?.f_to(h.device())?;
        Ok(flat.f_mul(&factor)?.f_add(&z)?.f_reshape(h.size().as_slice())?)
    }

    /// Logits (B, 2) of conditioned inputs (B, 11, 28, 28), through the noise layer.
    ///
    /// # Errors
    /// As [`NoiseLayerDiscriminator::noise_layer`].
    pub fn logits(&self, x: &Tensor, rng: &mut ChaCha20Rng) -> Result<Tensor> {
        let h = self.head.forward(x)?;
        let h = self.noise_layer(&h, rng)?;
        self.tail.forward(&h)
    }

    /// The clip of the noise layer.
    pub fn clip(&self) -> f64 {
        self.clip
    }

    /// The noise multiplier of the noise layer.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// The parameters' kind.
    pub fn kind(&self) -> Kind {
        self.vs.kind()
    }
}
