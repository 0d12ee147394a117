//! The one Gaussian mechanism of the trainers: noise on a clipped sum, divided by the expected
//! lot size, recorded in the ledger before it is released. DP-SGD ([`crate::train::dpsgd`]) and
//! the DP-GAN discriminator ([`crate::gan::dpgan`]) both release their noisy gradients through
//! [`GaussianSum::release`], and the injected faults ([`Fault`]) act here and nowhere else.
//!
//! Why the release is (epsilon, delta)-DP under the ledger's accounting, and what exactly is
//! released: [`proofs/train/gaussian_sum.md`](../../../proofs/train/gaussian_sum.md).
use crate::accounting::ledger::Ledger;
use crate::accounting::SamplingScheme;
use crate::error::{Error, Result};
use crate::train::fault::Fault;
use crate::train::noise;
use rand_chacha::ChaCha20Rng;
use tch::Tensor;

/// Relative slack on the sensitivity: in f32, rounding can make a clipped contribution exceed C by
/// about 1e-7 relative (`proofs/train/clip_and_sum.md`), so the noise is scaled for
/// C (1 + CLIP_ROUNDING_SLACK); the effective noise multiplier is then at least the recorded one.
pub const CLIP_ROUNDING_SLACK: f64 = 1e-6;

/// The clipping norm that the `no-clip` fault uses: large enough to clip nothing, finite in f32.
const NO_CLIP_NORM: f64 = 1e30;

/// The Poisson-subsampled Gaussian mechanism on a clipped sum: it owns the noise multiplier
/// sigma, the clipping norm C, the sampling rate q, the expected lot size q N (the public
/// normaliser), the ledger label of its steps and the ChaCha20 stream of its noise.
///
/// The noisy value exists only inside [`GaussianSum::release`], which appends the step to the
/// ledger (fsynced) before it returns the value: no caller can obtain a noisy sum that is not
/// recorded (except under the injected fault [`Fault::LedgerUndercount`], whose runs certificates
/// refuse).
///
/// # Proof definition
/// Given a sum of per-unit contributions each of L2 norm at most C (the caller clips at
/// [`GaussianSum::clipping_norm`]; one unit is one example, or one (real, generated) pair of the
/// GAN's design (b)), [`GaussianSum::release`] returns `(sum + Z) / (q N)` with
/// `Z ~ N(0, (sigma C (1 + CLIP_ROUNDING_SLACK))^2 I)` drawn from the mechanism's own stream,
/// after recording `(Poisson, q, sigma, C, label)` in the ledger. Under add/remove adjacency the
/// sum has L2 sensitivity C, so with a Poisson lot of rate q each release is one
/// Poisson-subsampled Gaussian step of noise multiplier at least sigma, the step the ledger
/// records; dividing by the public `q N` is post-processing. If recording fails, nothing is
/// returned. See [`proofs/train/gaussian_sum.md`](../../../proofs/train/gaussian_sum.md); checked
/// by this module's tests and by `tests/gan.rs` (`private_step_equals_one_at_a_time_reference`).
#[derive(Debug, Clone)]
pub struct GaussianSum {
    noise_multiplier: f64,
    clipping_norm: f64,
    sampling_rate: f64,
    expected_lot: f64,
    label: &'static str,
    noise: ChaCha20Rng,
    fault: Option<Fault>,
}

impl GaussianSum {
    /// The mechanism with noise multiplier `noise_multiplier` (sigma), clipping norm
    /// `clipping_norm` (C), Poisson sampling rate `sampling_rate` (q), normaliser `expected_lot`
    /// (q N), recorded under `label`, drawing its noise from `noise`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for sigma, C or q N not finite and > 0, or q outside (0, 1].
    pub fn new(
        noise_multiplier: f64,
        clipping_norm: f64,
        sampling_rate: f64,
        expected_lot: f64,
        label: &'static str,
        noise: ChaCha20Rng,
    ) -> Result<Self> {
        if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
            return Err(Error::invalid("noise multiplier", noise_multiplier, "must be a finite number > 0"));
        }
        if !(clipping_norm > 0.0 && clipping_norm.is_finite()) {
            return Err(Error::invalid("clipping norm", clipping_norm, "must be a finite number > 0"));
        }
        if !(sampling_rate > 0.0 && sampling_rate <= 1.0) {
            return Err(Error::invalid("sampling rate q", sampling_rate, "must be in (0, 1]"));
        }
        if !(expected_lot > 0.0 && expected_lot.is_finite()) {
            return Err(Error::invalid("expected lot size", expected_lot, "must be a finite number > 0"));
        }
        Ok(GaussianSum { noise_multiplier, clipping_norm, sampling_rate, expected_lot, label, noise, fault: None })
    }

    /// Injects a deliberate bug (see [`Fault`]) into every later release; `None` removes it.
    /// For testing audits only.
    pub fn set_fault(&mut self, fault: Option<Fault>) {
        self.fault = fault;
    }

    /// The norm the caller must clip each unit's contribution to: C, or, under
    /// [`Fault::NoClip`], a norm so large that nothing is clipped.
    pub fn clipping_norm(&self) -> f64 {
        if self.fault == Some(Fault::NoClip) {
            NO_CLIP_NORM
        } else {
            self.clipping_norm
        }
    }

    /// The public normaliser q N.
    pub fn expected_lot(&self) -> f64 {
        self.expected_lot
    }

    /// The noise stream (its seed and position go into checkpoints).
    pub fn noise_stream(&self) -> &ChaCha20Rng {
        &self.noise
    }

    /// The standard deviation of the noise per coordinate: sigma C (1 + CLIP_ROUNDING_SLACK)
    /// (divided by q N under [`Fault::NoiseOnMean`]).
    fn noise_std(&self) -> f64 {
        let std = self.noise_multiplier * self.clipping_norm * (1.0 + CLIP_ROUNDING_SLACK);
        if self.fault == Some(Fault::NoiseOnMean) {
            std / self.expected_lot
        } else {
            std
        }
    }

    /// Releases step `step` (1-based; the faults that act on some steps only count with it):
    /// draws the noise, adds it to `clipped_sum` (one tensor per parameter, each clipped
    /// contribution of norm at most [`GaussianSum::clipping_norm`]), divides by q N, records the
    /// step in `ledger` and only then returns `(clipped_sum + noise) / (q N)`.
    ///
    /// # Proof definition
    /// As [`GaussianSum`]: the value returned is one Poisson-subsampled Gaussian step of
    /// sensitivity C and noise multiplier at least sigma, recorded in `ledger` before it is
    /// returned; on any error nothing is returned (and nothing is recorded if the error comes
    /// before the record).
    ///
    /// # Errors
    /// Ledger I/O errors (nothing is returned); libtorch errors.
    pub fn release(&mut self, clipped_sum: &[Tensor], step: u64, ledger: &mut Ledger) -> Result<Vec<Tensor>> {
        let std = self.noise_std();
        let skip_noise = self.fault.is_some_and(|f| f.skips_noise(step));
        let mut noisy = Vec::with_capacity(clipped_sum.len());
        for s in clipped_sum {
            if skip_noise {
                noisy.push(s.f_div_scalar(self.expected_lot)?);
                continue;
            }
            let mut z = vec![0f32; s.numel()];
            noise::gaussian(&mut self.noise, std, &mut z)?;
            let z = Tensor::f_from_slice(&z)?.f_view(s.size().as_slice())?.f_to_kind(s.f_kind()?)?.f_to(s.device())?;
            noisy.push(s.f_add(&z)?.f_div_scalar(self.expected_lot)?);
        }
        // The privacy cost is durable before the noisy value can influence anything.
        if self.fault.is_none_or(|f| f.records(step)) {
            ledger.record(
                SamplingScheme::Poisson,
                self.sampling_rate,
                self.noise_multiplier,
                self.clipping_norm,
                self.label,
            )?;
        }
        Ok(noisy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::noise::NoiseSeed;
    use crate::train::streams::RunStream;
    use rand::SeedableRng;
    use tch::Kind;

    fn mechanism(seed: u64) -> GaussianSum {
        let rng = ChaCha20Rng::from_seed(NoiseSeed::Explicit(seed).to_bytes(RunStream::Noise));
        GaussianSum::new(0.8, 0.5, 0.1, 4.0, "test", rng).unwrap()
    }

    fn sums() -> Vec<Tensor> {
        vec![Tensor::from_slice(&[1.0f32, -2.0, 0.5]), Tensor::from_slice(&[0.25f32, 3.0]).view([1, 2])]
    }

    /// `(sum + z) / L` with z drawn one parameter after the other from the same stream.
    fn reference(seed: u64, std: f64) -> Vec<Tensor> {
        let mut rng = ChaCha20Rng::from_seed(NoiseSeed::Explicit(seed).to_bytes(RunStream::Noise));
        sums()
            .iter()
            .map(|s| {
                let mut z = vec![0f32; s.numel()];
                noise::gaussian(&mut rng, std, &mut z).unwrap();
                (s + Tensor::from_slice(&z).view(s.size().as_slice())) / 4.0
            })
            .collect()
    }

    fn same(a: &[Tensor], b: &[Tensor]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.size() == y.size() && x.equal(y))
    }

    #[test]
    fn release_adds_scaled_noise_divides_and_records_first() {
        let mut m = mechanism(3);
        let mut ledger = Ledger::in_memory();
        let out = m.release(&sums(), 1, &mut ledger).unwrap();
        assert!(same(&out, &reference(3, 0.8 * 0.5 * (1.0 + CLIP_ROUNDING_SLACK))));
        assert_eq!(ledger.steps(), 1);
        let e = &ledger.entries()[0];
        assert_eq!((e.sampling_rate, e.noise_multiplier, e.clipping_norm, e.label.as_str()), (0.1, 0.8, 0.5, "test"));
        assert_eq!(m.clipping_norm(), 0.5);
        assert_eq!(out[1].kind(), Kind::Float);
    }

    #[test]
    fn faults_act_on_the_one_mechanism() {
        let mut ledger = Ledger::in_memory();
        let mut m = mechanism(3);
        m.set_fault(Some(Fault::NoiseOnMean));
        let out = m.release(&sums(), 1, &mut ledger).unwrap();
        assert!(same(&out, &reference(3, 0.8 * 0.5 * (1.0 + CLIP_ROUNDING_SLACK) / 4.0)));
        let mut m = mechanism(3);
        m.set_fault(Some(Fault::SkipNoise(2)));
        let _ = m.release(&sums(), 1, &mut ledger).unwrap();
        let plain: Vec<Tensor> = sums().iter().map(|s| s / 4.0).collect();
        assert!(same(&m.release(&sums(), 2, &mut ledger).unwrap(), &plain));
        let mut m = mechanism(3);
        m.set_fault(Some(Fault::LedgerUndercount));
        let before = ledger.steps();
        let _ = m.release(&sums(), 1, &mut ledger).unwrap();
        let _ = m.release(&sums(), 2, &mut ledger).unwrap();
        assert_eq!(ledger.steps(), before + 1, "the undercount fault records every other step");
        let mut m = mechanism(3);
        m.set_fault(Some(Fault::NoClip));
        assert!(m.clipping_norm() > 1e29);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let rng = || ChaCha20Rng::from_seed([0; 32]);
        assert!(GaussianSum::new(0.0, 1.0, 0.1, 1.0, "x", rng()).is_err());
        assert!(GaussianSum::new(1.0, f64::INFINITY, 0.1, 1.0, "x", rng()).is_err());
        assert!(GaussianSum::new(1.0, 1.0, 1.5, 1.0, "x", rng()).is_err());
        assert!(GaussianSum::new(1.0, 1.0, 0.1, 0.0, "x", rng()).is_err());
    }
}
