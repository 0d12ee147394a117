//! Optimisers (SGD, momentum, Adam) and learning-rate schedules, applied to gradients that the
//! caller has already privatised. Their state is plain tensors so checkpoints can save it.
//!
//! The optimiser only post-processes the noisy gradient, so it has no effect on privacy.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// theta -= lr g
    Sgd,
    /// Heavy-ball momentum: v = m v + g; theta -= lr v.
    Momentum {
        /// The momentum coefficient m in [0, 1).
        momentum: f64,
    },
    /// Adam (Kingma & Ba 2015) with bias correction.
    Adam {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator stabiliser.
        eps: f64,
    },
}

/// How the learning rate changes with the step (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant,
    /// Multiply by `factor` every `every` steps.
    Step {
        /// Period in steps.
        every: u64,
        /// Multiplier per period.
        factor: f64,
    },
    /// Cosine decay from the base rate to `min_lr` over `total` steps.
    Cosine {
        /// Steps of the whole run.
        total: u64,
        /// Final rate.
        min_lr: f64,
    },
    /// Linear decay from the base rate to `end_lr` over `total` steps (Abadi et al. 2016).
    Linear {
        /// Steps of the whole run.
        total: u64,
        /// Final rate.
        end_lr: f64,
    },
}

impl LrSchedule {
    /// The learning rate at `step` for base rate `lr`.
    pub fn rate(&self, lr: f64, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant => lr,
            LrSchedule::Step { every, factor } => lr * factor.powi((step / every.max(1)).min(i32::MAX as u64) as i32),
            LrSchedule::Cosine { total, min_lr } => {
                let t = (step as f64 / total.max(1) as f64).min(1.0);
                min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            LrSchedule::Linear { total, end_lr } => {
                let t = (step as f64 / total.max(1) as f64).min(1.0);
                lr + (end_lr - lr) * t
            }
        }
    }
}

/// An optimiser over a fixed list of parameters.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    schedule: LrSchedule,
    /// Per parameter: [] (SGD), [velocity] (momentum) or [m, v] (Adam).
    state: Vec<Vec<Tensor>>,
    steps: u64,
}

impl Optimizer {
    /// A fresh optimiser for `params`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a non-positive learning rate or coefficients out of range.
    pub fn new(kind: OptimizerKind, lr: f64, schedule: LrSchedule, params: &[Tensor]) -> Result<Self> {
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::invalid("learning rate", lr, "must be a finite number > 0"));
        }
        let buffers = match kind {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Momentum { momentum } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(Error::invalid("momentum", momentum, "must be in [0, 1)"));
                }
                1
            }
            OptimizerKind::Adam { beta1, beta2, eps } => {
                if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps > 0.0) {
                    return Err(Error::invalid(
                        "Adam coefficients",
                        format!("{beta1}, {beta2}, {eps}"),
                        "need 0 <= beta < 1 and eps > 0",
                    ));
                }
                2
            }
        };
        let state = params
            .iter()
            .map(|p| (0..buffers).map(|_| p.f_zeros_like()).collect::<std::result::Result<Vec<_>, _>>())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Optimizer { kind, lr, schedule, state, steps: 0 })
    }

    /// Applies one update with `grads` (same order and shapes as the parameters).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the counts differ; [`Error::Torch`] on shape mismatches.
    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor]) -> Result<()> {
        if params.len() != grads.len() || params.len() != self.state.len() {
            return Err(Error::invalid("gradients", grads.len(), format!("expected {} tensors", self.state.len())));
        }
        let _guard = tch::no_grad_guard();
        let lr = self.schedule.rate(self.lr, self.steps);
        self.steps += 1;
        for ((p, g), s) in params.iter().zip(grads).zip(self.state.iter_mut()) {
            let mut p = p.shallow_clone();
            match self.kind {
                OptimizerKind::Sgd => {
                    let _ = p.f_sub_(&g.f_mul_scalar(lr)?)?;
                }
                OptimizerKind::Momentum { momentum } => {
                    let v = &mut s[0];
                    let _ = v.f_mul_scalar_(momentum)?;
                    let _ = v.f_add_(g)?;
                    let _ = p.f_sub_(&v.f_mul_scalar(lr)?)?;
                }
                OptimizerKind::Adam { beta1, beta2, eps } => {
                    let t = self.steps as i32;
                    let _ = s[0].f_mul_scalar_(beta1)?;
                    let _ = s[0].f_add_(&g.f_mul_scalar(1.0 - beta1)?)?;
                    let _ = s[1].f_mul_scalar_(beta2)?;
                    let _ = s[1].f_add_(&g.f_square()?.f_mul_scalar(1.0 - beta2)?)?;
                    let m_hat = s[0].f_div_scalar(1.0 - beta1.powi(t))?;
                    let v_hat = s[1].f_div_scalar(1.0 - beta2.powi(t))?;
                    let _ = p.f_sub_(&m_hat.f_div(&v_hat.f_sqrt()?.f_add_scalar(eps)?)?.f_mul_scalar(lr)?)?;
                }
            }
        }
        Ok(())
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The state tensors with stable names (`{index}.{buffer}`), for a checkpoint.
    pub fn named_state(&self) -> Vec<(String, Tensor)> {
        self.state
            .iter()
            .enumerate()
            .flat_map(|(i, bufs)| bufs.iter().enumerate().map(move |(j, t)| (format!("{i}.{j}"), t.shallow_clone())))
            .collect()
    }

    /// Restores the state saved by [`Optimizer::named_state`] after `steps` updates.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when a buffer is missing or has the wrong shape.
    pub fn load_state(&mut self, named: &[(String, Tensor)], steps: u64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (i, bufs) in self.state.iter_mut().enumerate() {
            for (j, buf) in bufs.iter_mut().enumerate() {
                let key = format!("{i}.{j}");
                let src = named
                    .iter()
                    .find(|(k, _)| *k == key)
                    .ok_or_else(|| Error::invalid("optimizer checkpoint", &key, "buffer missing"))?;
                if src.1.size() != buf.size() {
                    return Err(Error::invalid(
                        "optimizer checkpoint",
                        &key,
                        format!("shape {:?}, expected {:?}", src.1.size(), buf.size()),
                    ));
                }
                buf.f_copy_(&src.1)?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// The decay of a moving average of parameters after `t` updates: `min(decay, (1 + t) / (10 + t))`,
/// so early, poor iterates are forgotten quickly (the warm-up of TensorFlow's
/// `ExponentialMovingAverage` with `num_updates`; De et al. 2022). Shared by DP-SGD's `--ema`, the
/// GAN's `--g-ema` and the CAS classifier's `--cas-weight-average`.
pub fn warmed_up_decay(decay: f64, t: u64) -> f64 {
    decay.min((1.0 + t as f64) / (10.0 + t as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn quadratic_descent(kind: OptimizerKind, lr: f64) -> f64 {
        // minimise |p - 3|^2 / 2: gradient p - 3.
        let p = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let mut opt = Optimizer::new(kind, lr, LrSchedule::Constant, &[p.shallow_clone()]).unwrap();
        for _ in 0..300 {
            let g = &p - 3.0;
            opt.step(&[p.shallow_clone()], &[g]).unwrap();
        }
        (&p - 3.0).abs().max().double_value(&[])
    }

    #[test]
    fn every_rule_converges_on_a_quadratic() {
        assert!(quadratic_descent(OptimizerKind::Sgd, 0.1) < 1e-4);
        assert!(quadratic_descent(OptimizerKind::Momentum { momentum: 0.9 }, 0.05) < 1e-3);
        assert!(quadratic_descent(OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }, 0.1) < 1e-2);
    }

    #[test]
    fn schedules() {
        assert_eq!(LrSchedule::Constant.rate(0.1, 1000), 0.1);
        assert!((LrSchedule::Step { every: 10, factor: 0.5 }.rate(1.0, 25) - 0.25).abs() < 1e-12);
        assert!((LrSchedule::Cosine { total: 100, min_lr: 0.0 }.rate(1.0, 50) - 0.5).abs() < 1e-12);
        assert!((LrSchedule::Linear { total: 100, end_lr: 0.0 }.rate(1.0, 100)).abs() < 1e-12);
    }

    #[test]
    fn state_round_trips() {
        let p = Tensor::ones([3], (Kind::Float, Device::Cpu));
        let kind = OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut a = Optimizer::new(kind, 0.1, LrSchedule::Constant, &[p.shallow_clone()]).unwrap();
        a.step(&[p.shallow_clone()], &[Tensor::ones([3], (Kind::Float, Device::Cpu))]).unwrap();
        let q = Tensor::ones([3], (Kind::Float, Device::Cpu));
        let mut b = Optimizer::new(kind, 0.1, LrSchedule::Constant, &[q.shallow_clone()]).unwrap();
        b.load_state(&a.named_state(), a.steps()).unwrap();
        assert_eq!(b.steps(), 1);
        assert!(b.named_state()[0].1.allclose(&a.named_state()[0].1, 0.0, 0.0, false));
        assert!(Optimizer::new(OptimizerKind::Sgd, -1.0, LrSchedule::Constant, &[]).is_err());
    }
}
