//! Membership inference against a trained classifier: was this example in the training set?
//!
//! - **Loss threshold** (Yeom et al. 2018): members tend to have a lower loss, so the score is
//!   minus the example's cross-entropy loss on the target model. Threshold-free metrics (ROC, AUC,
//!   TPR at low FPR) are reported rather than one threshold.
//! - **LiRA** (Carlini et al. 2022, "Membership Inference Attacks From First Principles"): shadow
//!   models trained by the same trainer on random halves of a population give, for every example,
//!   the distribution of its *logit-scaled confidence* `phi = log(p / (1 - p))` (p: the model's
//!   probability of the true label) when it is in the training set and when it is out. Each is
//!   fitted by a Gaussian ([`fit_gaussian`]); the target's `phi` is scored by the likelihood ratio
//!   (online: IN and OUT fits) or by how far it lies above the OUT fit (offline: OUT fits only).
//!
//! Every score follows the convention of [`crate::attack::metrics`]: larger means "member".
//! The figures are evidence about one recipe, not bounds (`proofs/attack/mia.md`).
use crate::attack::metrics::{attack_metrics, AttackMetrics};
use crate::error::{Error, Result};
use crate::train::dpsgd::Examples;
use crate::train::per_example::Sequential;
use serde::{Deserialize, Serialize};
use tch::Kind;

/// The smallest standard deviation a Gaussian fit may have: confidences that saturate (the same
/// `phi` in every shadow) would otherwise give a zero variance and an infinite likelihood ratio.
pub const SD_FLOOR: f64 = 1e-6;

/// Per-example outputs of a model: the logit-scaled confidence of the true label and whether the
/// prediction is right.
#[derive(Debug, Clone, PartialEq)]
pub struct Confidences {
    /// `phi_i = z_{i,y} - logsumexp_{j != y} z_{i,j} = log(p_i / (1 - p_i))`, computed from the
    /// logits in f64 so that it does not saturate when `p_i` rounds to 1.
    pub phi: Vec<f64>,
    /// Whether the argmax of the logits is the label.
    pub correct: Vec<bool>,
}

/// The logit-scaled confidence of each example's label, in batches of `batch`.
///
/// # Errors
/// [`Error::InvalidParameter`] for `batch = 0` or a model without at least two outputs;
/// libtorch errors (shape mismatches between the model and the data).
pub fn confidences(model: &Sequential, data: &Examples, batch: usize) -> Result<Confidences> {
    if batch == 0 {
        return Err(Error::invalid("batch", 0, "must be at least 1"));
    }
    let _guard = tch::no_grad_guard();
    let n = data.len() as i64;
    let mut phi = Vec::with_capacity(n as usize);
    let mut correct = Vec::with_capacity(n as usize);
    let mut start = 0i64;
    while start < n {
        let len = (batch as i64).min(n - start);
        let x = data.images.f_narrow(0, start, len)?;
        let y = data.labels.f_narrow(0, start, len)?.f_unsqueeze(1)?;
        let z = model.forward(&x)?.f_to_kind(Kind::Double)?;
        let size = z.size();
        if size.len() != 2 || size[1] < 2 {
            return Err(Error::invalid(
                "model output",
                format!("{size:?}"),
                "must be (batch, classes) logits with at least 2 classes",
            ));
        }
        let zy = z.f_gather(1, &y, false)?;
        let others = z.f_scatter_value(1, &y, f64::NEG_INFINITY)?.f_logsumexp(&[1i64][..], true)?;
        let p = Vec::<f64>::try_from(zy.f_sub(&others)?.f_view(-1)?)?;
        let right = Vec::<bool>::try_from(z.f_argmax(1, true)?.f_eq_tensor(&y)?.f_view(-1)?)?;
        phi.extend(p);
        correct.extend(right);
        start += len;
    }
    if let Some(v) = phi.iter().find(|v| v.is_nan()) {
        return Err(Error::numerical("logit-scaled confidence", format!("the model gave {v} (NaN logits)")));
    }
    Ok(Confidences { phi, correct })
}

/// The cross-entropy loss `-log p` from the logit-scaled confidence: `softplus(-phi)`, without
/// overflow or cancellation.
pub fn loss_from_confidence(phi: f64) -> f64 {
    if phi > 0.0 {
        (-phi).exp().ln_1p()
    } else {
        -phi + phi.exp().ln_1p()
    }
}

/// The loss attack's score of an example: minus its loss (larger means member).
pub fn loss_score(phi: f64) -> f64 {
    -loss_from_confidence(phi)
}

/// What the loss-threshold attack measured on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossAttack {
    /// Mean cross-entropy loss of the members.
    pub member_mean_loss: f64,
    /// Mean cross-entropy loss of the non-members.
    pub non_member_mean_loss: f64,
    /// Accuracy on the members (training accuracy).
    pub member_accuracy: f64,
    /// Accuracy on the non-members (held-out accuracy).
    pub non_member_accuracy: f64,
    /// Yeom et al.'s fixed threshold: call "member" every example whose loss is at most the mean
    /// member loss. Its TPR - FPR (an attacker who knows the training loss gets this).
    pub mean_loss_threshold_advantage: f64,
    /// ROC, AUC and TPR at low FPR of the score "minus the loss".
    pub metrics: AttackMetrics,
}

/// The loss-threshold attack (Yeom et al. 2018) on `model` with its training examples `members`
/// and held-out examples `non_members`.
///
/// # Errors
/// Empty sets; model/data mismatches (libtorch); NaN outputs.
pub fn loss_attack(model: &Sequential, members: &Examples, non_members: &Examples, batch: usize) -> Result<LossAttack> {
    if members.is_empty() || non_members.is_empty() {
        return Err(Error::invalid(
            "membership sets",
            format!("{} members, {} non-members", members.len(), non_members.len()),
            "need at least one of each",
        ));
    }
    let cm = confidences(model, members, batch)?;
    let cn = confidences(model, non_members, batch)?;
    loss_attack_from_confidences(&cm, &cn)
}

/// [`loss_attack`] from confidences already computed.
///
/// # Errors
/// Empty sets.
pub fn loss_attack_from_confidences(members: &Confidences, non_members: &Confidences) -> Result<LossAttack> {
    let sm: Vec<f64> = members.phi.iter().map(|&p| loss_score(p)).collect();
    let sn: Vec<f64> = non_members.phi.iter().map(|&p| loss_score(p)).collect();
    let metrics = attack_metrics(&sm, &sn)?;
    let mean = |v: &[f64]| -v.iter().sum::<f64>() / v.len() as f64;
    let acc = |c: &[bool]| c.iter().filter(|&&b| b).count() as f64 / c.len() as f64;
    let member_mean_loss = mean(&sm);
    let t = -member_mean_loss;
    let tpr = sm.iter().filter(|&&s| s >= t).count() as f64 / sm.len() as f64;
    let fpr = sn.iter().filter(|&&s| s >= t).count() as f64 / sn.len() as f64;
    Ok(LossAttack {
        member_mean_loss,
        non_member_mean_loss: mean(&sn),
        member_accuracy: acc(&members.correct),
        non_member_accuracy: acc(&non_members.correct),
        mean_loss_threshold_advantage: tpr - fpr,
        metrics,
    })
}

/// A Gaussian fitted to samples: their mean and sample standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianFit {
    /// The sample mean.
    pub mean: f64,
    /// The sample standard deviation (divisor n - 1); 0 for a single sample.
    pub sd: f64,
    /// Number of samples.
    pub n: usize,
}

/// Fits a Gaussian to `xs` by its sample mean and standard deviation (divisor n - 1).
///
/// # Errors
/// [`Error::InvalidParameter`] for no samples or a non-finite one.
pub fn fit_gaussian(xs: &[f64]) -> Result<GaussianFit> {
    if xs.is_empty() {
        return Err(Error::invalid("samples", 0, "a Gaussian fit needs at least one"));
    }
    if let Some(x) = xs.iter().find(|x| !x.is_finite()) {
        return Err(Error::invalid("sample", x, "must be finite"));
    }
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let ss: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
    let sd = if n > 1 { (ss / (n - 1) as f64).sqrt() } else { 0.0 };
    Ok(GaussianFit { mean, sd, n })
}

/// How LiRA's standard deviations are estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VarianceMode {
    /// Per-example when there are at least 64 shadow models, global below (Carlini et al.
    /// recommend a global variance for few shadows: per-example variances from a handful of
    /// samples are too noisy).
    #[default]
    Auto,
    /// Each example's own IN and OUT standard deviations (an example with fewer than two
    /// samples on a side uses the global one there).
    PerExample,
    /// One standard deviation per side, pooled over examples from the deviations about each
    /// example's own mean: `sqrt(sum_i sum_s (phi_is - mean_i)^2 / sum_i (n_i - 1))`.
    Global,
}

/// LiRA's two scores for each example of a target model.
#[derive(Debug, Clone, PartialEq)]
pub struct LiraScores {
    /// Online: `log N(phi; mu_in, sd_in^2) - log N(phi; mu_out, sd_out^2)`.
    pub online: Vec<f64>,
    /// Offline: `(phi - mu_out) / sd_out`, a monotone function of the one-sided p-value
    /// `Pr[Z >= phi]`, `Z ~ N(mu_out, sd_out^2)` (so the same ROC, without underflow).
    pub offline: Vec<f64>,
    /// The standard deviations used for examples without their own: (IN, OUT).
    pub global_sd: (f64, f64),
    /// Whether per-example standard deviations were used.
    pub per_example_variance: bool,
}

fn pooled_sd(groups: &[Vec<f64>]) -> f64 {
    let (mut ss, mut dof) = (0.0, 0usize);
    for g in groups.iter().filter(|g| g.len() > 1) {
        let m = g.iter().sum::<f64>() / g.len() as f64;
        ss += g.iter().map(|x| (x - m).powi(2)).sum::<f64>();
        dof += g.len() - 1;
    }
    if dof == 0 {
        SD_FLOOR
    } else {
        (ss / dof as f64).sqrt().max(SD_FLOOR)
    }
}

fn log_normal_pdf(x: f64, mean: f64, sd: f64) -> f64 {
    -sd.ln() - 0.5 * ((x - mean) / sd).powi(2)
}

/// LiRA scores of a target model's examples. `target_phi[i]` is example i's logit-scaled
/// confidence on the target; `shadow_phi[s][i]` on shadow model s; `shadow_in[s][i]` whether
/// shadow s trained on example i.
///
/// # Errors
/// [`Error::InvalidParameter`] for shapes that do not match, non-finite confidences, or an
/// example with no IN or no OUT shadow (LiRA needs both; train more shadows).
pub fn lira_scores(
    target_phi: &[f64],
    shadow_phi: &[Vec<f64>],
    shadow_in: &[Vec<bool>],
    mode: VarianceMode,
) -> Result<LiraScores> {
    let n = target_phi.len();
    if shadow_phi.is_empty() || shadow_phi.len() != shadow_in.len() {
        return Err(Error::invalid(
            "shadow models",
            format!("{} confidences, {} memberships", shadow_phi.len(), shadow_in.len()),
            "need at least one, and one membership per shadow",
        ));
    }
    if let Some(s) = shadow_phi.iter().position(|v| v.len() != n) {
        return Err(Error::invalid(
            "shadow confidences",
            s,
            format!("every shadow must score the target's {n} examples"),
        ));
    }
    if shadow_in.iter().any(|v| v.len() != n) {
        return Err(Error::invalid(
            "shadow memberships",
            "wrong length",
            format!("every shadow must say which of the {n} examples it trained on"),
        ));
    }
    if let Some(x) = target_phi.iter().chain(shadow_phi.iter().flatten()).find(|x| !x.is_finite()) {
        return Err(Error::invalid("confidence", x, "must be finite"));
    }
    let mut ins = Vec::with_capacity(n);
    let mut outs = Vec::with_capacity(n);
    for i in 0..n {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (phi, keep) in shadow_phi.iter().zip(shadow_in) {
            if keep[i] {
                a.push(phi[i]);
            } else {
                b.push(phi[i]);
            }
        }
        if a.is_empty() || b.is_empty() {
            return Err(Error::invalid(
                "shadow models",
                format!("example {i}: {} IN, {} OUT", a.len(), b.len()),
                "LiRA needs at least one IN and one OUT shadow per example; train more shadows",
            ));
        }
        ins.push(a);
        outs.push(b);
    }
    let global = (pooled_sd(&ins), pooled_sd(&outs));
    let per_example = match mode {
        VarianceMode::Auto => shadow_phi.len() >= 64,
        VarianceMode::PerExample => true,
        VarianceMode::Global => false,
    };
    let mut online = Vec::with_capacity(n);
    let mut offline = Vec::with_capacity(n);
    for i in 0..n {
        let fi = fit_gaussian(&ins[i])?;
        let fo = fit_gaussian(&outs[i])?;
        let sd_in = if per_example && fi.n > 1 { fi.sd.max(SD_FLOOR) } else { global.0 };
        let sd_out = if per_example && fo.n > 1 { fo.sd.max(SD_FLOOR) } else { global.1 };
        let x = target_phi[i];
        online.push(log_normal_pdf(x, fi.mean, sd_in) - log_normal_pdf(x, fo.mean, sd_out));
        offline.push((x - fo.mean) / sd_out);
    }
    Ok(LiraScores { online, offline, global_sd: global, per_example_variance: per_example })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_from_confidence_is_softplus() {
        for phi in [-40.0, -3.0, 0.0, 0.5, 3.0, 40.0] {
            let p = 1.0 / (1.0 + f64::exp(-phi));
            let direct = -f64::ln(p);
            assert!((loss_from_confidence(phi) - direct).abs() <= 1e-12 * direct.max(1e-300) + 1e-15, "{phi}");
        }
        // No saturation: a very confident member still has a positive, ordered loss.
        assert!(loss_from_confidence(50.0) > loss_from_confidence(60.0) && loss_from_confidence(60.0) > 0.0);
    }

    #[test]
    fn gaussian_fit_of_known_samples() {
        let f = fit_gaussian(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(f.mean, 2.5);
        assert!((f.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(fit_gaussian(&[7.0]).unwrap().sd, 0.0);
        assert!(fit_gaussian(&[]).is_err() && fit_gaussian(&[f64::NAN]).is_err());
    }
}
