//! Adversarial training with DP (the seed project's "DP + robust"): each example of a lot is
//! replaced by a projected-gradient-descent (PGD, Madry et al. 2018) adversarial example inside an
//! L-infinity ball around it before its gradient is clipped and noised.
//!
//! Privacy is unchanged: an example's adversarial version depends only on that example and the
//! current model (a post-processing of earlier noisy releases), so each example still contributes
//! one clipped gradient to the sum and the sensitivity stays C.
use crate::error::{Error, Result};
use crate::train::per_example::{per_example_cross_entropy, Sequential};
use rand::RngCore;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// PGD's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PgdConfig {
    /// Radius of the L-infinity ball, in pixel units of [0, 1] (e.g. 0.1).
    pub epsilon: f64,
    /// Gradient-sign steps.
    pub steps: u32,
    /// Step size (e.g. 2.5 epsilon / steps).
    pub step_size: f64,
}

impl PgdConfig {
    /// Validated parameters.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a radius outside (0, 1], no steps, or a step size that is not
    /// positive.
    pub fn new(epsilon: f64, steps: u32, step_size: f64) -> Result<Self> {
        if !(epsilon > 0.0 && epsilon <= 1.0) {
            return Err(Error::invalid("PGD radius", epsilon, "must be in (0, 1] (pixels are in [0, 1])"));
        }
        if steps == 0 {
            return Err(Error::invalid("PGD steps", 0, "must be at least 1"));
        }
        if !(step_size > 0.0 && step_size.is_finite()) {
            return Err(Error::invalid("PGD step size", step_size, "must be a finite number > 0"));
        }
        Ok(PgdConfig { epsilon, steps, step_size })
    }
}

/// Adversarial versions of `x` (pixels in [0, 1]) for labels `y`: a random start in the ball, then
/// `steps` ascent steps on each example's own loss, each projected back onto the ball and [0, 1].
/// The model's parameters are not touched (gradients are taken with respect to the inputs only).
/// The random start is drawn from `rng` (not from libtorch's process-wide generator), so a run
/// that derives `rng` from its seed and step replays the same starts after a resume.
///
/// # Errors
/// libtorch errors; [`Error::Numerical`] if the result is not finite.
pub fn pgd(model: &Sequential, x: &Tensor, y: &Tensor, cfg: &PgdConfig, rng: &mut ChaCha20Rng) -> Result<Tensor> {
    let lo = x.f_sub_scalar(cfg.epsilon)?.f_clamp_min(0.0)?;
    let hi = x.f_add_scalar(cfg.epsilon)?.f_clamp_max(1.0)?;
    // Uniform on [0, 1) with 24-bit resolution (exact in f32), then scaled to [-epsilon, epsilon).
    let unit: Vec<f32> = (0..x.numel()).map(|_| (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32).collect();
    let start = Tensor::f_from_slice(&unit)?
        .f_view(x.size().as_slice())?
        .f_to_kind(x.kind())?
        .f_to(x.device())?
        .f_mul_scalar(2.0 * cfg.epsilon)?
        .f_sub_scalar(cfg.epsilon)?;
    let mut adv = x.f_add(&start)?.f_clamp_tensor(Some(&lo), Some(&hi))?.f_detach()?;
    for _ in 0..cfg.steps {
        let a = adv.f_detach()?.f_set_requires_grad(true)?;
        let loss = per_example_cross_entropy(&model.forward(&a)?, y)?.f_sum(Kind::Float)?;
        let g = Tensor::f_run_backward(&[&loss], &[&a], false, false)?;
        let _guard = tch::no_grad_guard();
        adv =
            a.f_detach()?.f_add(&g[0].f_sign()?.f_mul_scalar(cfg.step_size)?)?.f_clamp_tensor(Some(&lo), Some(&hi))?;
    }
    if !bool::try_from(adv.f_isfinite()?.f_all()?)? {
        return Err(Error::numerical("PGD", "adversarial examples are not finite"));
    }
    Ok(adv.f_detach()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    /// A `name` model and `batch` uniform MNIST-shaped inputs, both from libtorch seeded with `seed`.
    fn seeded_model(
        seed: i64,
        name: &str,
        batch: i64,
    ) -> (nn::VarStore, crate::train::per_example::Sequential, Tensor) {
        crate::torch_rng::seeded(seed, || {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = crate::train::models::build(name, &vs.root()).unwrap();
            (vs, model, Tensor::rand([batch, 1, 28, 28], (Kind::Float, Device::Cpu)))
        })
    }

    #[test]
    fn stays_in_the_ball_and_raises_the_loss() {
        use rand::SeedableRng;
        let (_vs, model, x) = seeded_model(1, "logreg", 8);
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
        let cfg = PgdConfig::new(0.1, 10, 0.025).unwrap();
        let rng = || ChaCha20Rng::seed_from_u64(5);
        let adv = pgd(&model, &x, &y, &cfg, &mut rng()).unwrap();
        // The same stream gives the same examples; another stream, other random starts.
        assert!(adv.equal(&pgd(&model, &x, &y, &cfg, &mut rng()).unwrap()));
        let one_step = PgdConfig::new(0.1, 1, 1e-6).unwrap();
        let mut other = rng();
        other.set_stream(1);
        assert!(!pgd(&model, &x, &y, &one_step, &mut rng())
            .unwrap()
            .equal(&pgd(&model, &x, &y, &one_step, &mut other).unwrap()));
        let dist = f64::try_from(adv.f_sub(&x).unwrap().abs().max()).unwrap();
        assert!(dist <= 0.1 + 1e-6, "{dist}");
        assert!(f64::try_from(adv.min()).unwrap() >= 0.0 && f64::try_from(adv.max()).unwrap() <= 1.0);
        let loss = |t: &Tensor| {
            f64::try_from(per_example_cross_entropy(&model.forward(t).unwrap(), &y).unwrap().sum(Kind::Double)).unwrap()
        };
        assert!(loss(&adv) > loss(&x), "PGD must increase the loss");
        // The parameters received no gradient.
        for (_, p) in model.parameters() {
            assert!(!p.grad().defined() || f64::try_from(p.grad().abs().sum(Kind::Double)).unwrap() == 0.0);
        }
        assert!(PgdConfig::new(0.0, 1, 0.1).is_err() && PgdConfig::new(0.1, 0, 0.1).is_err());
    }

    #[test]
    fn each_example_is_perturbed_from_its_own_loss_alone() {
        use rand::SeedableRng;
        let (_vs, model, x) = seeded_model(2, "mlp", 6);
        let y = Tensor::from_slice(&[3i64, 1, 4, 1, 5, 9]);
        let cfg = PgdConfig::new(0.1, 5, 0.02).unwrap();
        let together = pgd(&model, &x, &y, &cfg, &mut ChaCha20Rng::seed_from_u64(8)).unwrap();
        // One at a time, drawing the starts from the same stream in the same order (example i
        // takes values i * 784 .. (i + 1) * 784 of it, as in the batch).
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let alone: Vec<Tensor> =
            (0..6).map(|i| pgd(&model, &x.narrow(0, i, 1), &y.narrow(0, i, 1), &cfg, &mut rng).unwrap()).collect();
        let alone = Tensor::cat(&alone, 0);
        let diff = f64::try_from(together.f_sub(&alone).unwrap().abs().max()).unwrap();
        assert!(diff < 1e-6, "batched and one-at-a-time PGD differ by {diff}");
        // And the perturbations are not trivial.
        assert!(f64::try_from(together.f_sub(&x).unwrap().abs().max()).unwrap() > 0.05);
    }
}
