//! What a synthetic dataset is worth, on one fixed protocol (`dpaudit evaluate synthetic`).
//!
//! - **CAS** (classification accuracy score): a classifier trained only on the synthetic set; the
//!   epoch is selected on a validation split carved from the *real training* data (the last
//!   `validation_size` examples; DPImageBench 2025), never on the test set; the selected epoch's
//!   accuracy on the real test set is reported together with the protocol.
//! - **`fid_mnist_classifier`**: the Fréchet distance between Gaussian fits of real-test and
//!   synthetic features in the 128-dimensional penultimate layer of a CNN trained on the real
//!   training data. The seed report's method; *not* Inception-FID (no Inception weights here), so
//!   its values are not comparable with Inception-FID numbers.
//! - **Real-vs-fake accuracy**: a separate CNN trained to tell held-out real images (the first half
//!   of the real test set) from synthetic ones, tested on the other half against unseen synthetic
//!   images. 0.5 is perfect (indistinguishable).
//!
//! None of these classifiers is private: evaluation reads the real data in the clear, and its
//! numbers describe the synthetic data, they are not part of the DP release.
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::train::dpsgd::Examples;
use crate::train::optim::{warmed_up_decay, LrSchedule, Optimizer, OptimizerKind};
use crate::train::per_example::{per_example_cross_entropy, LayerSpec, Sequential};
use crate::train::streams::SeedStream;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

/// Evaluation settings.
#[derive(Debug, Clone, Serialize)]
pub struct EvalConfig {
    /// Epochs of the CAS classifier (the best on validation is kept).
    pub cas_epochs: u32,
    /// Decay of an exponential moving average of the CAS classifier's weights, updated after
    /// every step; when set, validation and test use the averaged weights (DPImageBench's
    /// classifiers keep such an average, decay 0.9999). `None`: the raw weights.
    pub cas_weight_average: Option<f64>,
    /// Real training examples carved off (from the end) for CAS's epoch selection.
    pub validation_size: usize,
    /// Epochs of the FID feature network on real training data.
    pub fid_epochs: u32,
    /// Epochs of the real-vs-fake classifier.
    pub real_vs_fake_epochs: u32,
    /// Mini-batch size of every classifier.
    pub batch_size: usize,
    /// Adam learning rate of every classifier.
    pub lr: f64,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            cas_epochs: 10,
            cas_weight_average: None,
            validation_size: 5000,
            fid_epochs: 2,
            real_vs_fake_epochs: 3,
            batch_size: 128,
            lr: 1e-3,
            seed: 0,
        }
    }
}

/// The CAS number with its protocol.
#[derive(Debug, Clone, Serialize)]
pub struct Cas {
    /// Accuracy on the real test set of the epoch selected on validation.
    pub test_accuracy: f64,
    /// The selected epoch (1-based).
    pub selected_epoch: u32,
    /// Validation accuracy per epoch.
    pub validation_accuracy: Vec<f64>,
    /// The protocol in words.
    pub protocol: String,
}

/// The evaluation report (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct SyntheticEvaluation {
    /// Classification accuracy score.
    pub cas: Cas,
    /// Fréchet distance in the MNIST classifier's feature space (not Inception-FID).
    pub fid_mnist_classifier: f64,
    /// How the FID was computed.
    pub fid_protocol: String,
    /// Test accuracy of the real-vs-fake classifier (0.5 is perfect).
    pub real_vs_fake_accuracy: f64,
    /// How it was computed.
    pub real_vs_fake_protocol: String,
    /// Synthetic examples read.
    pub synthetic_examples: usize,
    /// Settings.
    pub config: EvalConfig,
}

fn cnn_features() -> Vec<LayerSpec> {
    vec![
        LayerSpec::Conv2d { in_channels: 1, out_channels: 16, kernel: 5, stride: 1, padding: 2, bias: true },
        LayerSpec::Relu,
        LayerSpec::MaxPool2d { kernel: 2, stride: 2 },
        LayerSpec::Conv2d { in_channels: 16, out_channels: 32, kernel: 5, stride: 1, padding: 2, bias: true },
        LayerSpec::Relu,
        LayerSpec::MaxPool2d { kernel: 2, stride: 2 },
        LayerSpec::Flatten,
        LayerSpec::Linear { in_features: 32 * 7 * 7, out_features: 128, bias: true },
        LayerSpec::Relu,
    ]
}

/// A CNN classifier in two parts (features, head), one `VarStore`.
struct Classifier {
    _vs: nn::VarStore,
    features: Sequential,
    head: Sequential,
    params: Vec<Tensor>,
}

impl Classifier {
    fn new(device: Device, classes: i64, seed: u64) -> Result<Self> {
        let (vs, features, head) = crate::torch_rng::seeded(seed as i64, || -> Result<_> {
            let vs = nn::VarStore::new(device);
            let features = Sequential::new(&(vs.root() / "features"), &cnn_features())?;
            let head = Sequential::new(
                &(vs.root() / "head"),
                &[LayerSpec::Linear { in_features: 128, out_features: classes, bias: true }],
            )?;
            Ok((vs, features, head))
        })?;
        let params = features.parameters().into_iter().chain(head.parameters()).map(|(_, t)| t).collect();
        Ok(Classifier { _vs: vs, features, head, params })
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.features.forward(x)?)
    }

    /// One epoch of Adam on (x, y) in shuffled mini-batches; `average`, when given, is updated
    /// after every step.
    fn epoch(
        &self,
        opt: &mut Optimizer,
        x: &Tensor,
        y: &Tensor,
        batch: usize,
        rng: &mut ChaCha20Rng,
        mut average: Option<&mut WeightAverage>,
    ) -> Result<()> {
        let n = x.size()[0] as usize;
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(rng);
        for chunk in order.chunks(batch) {
            let idx = Tensor::f_from_slice(chunk)?.f_to(x.device())?;
            let (xb, yb) = (x.f_index_select(0, &idx)?, y.f_index_select(0, &idx)?);
            let loss = per_example_cross_entropy(&self.logits(&xb)?, &yb)?.f_mean(Kind::Float)?;
            if !loss.f_double_value(&[])?.is_finite() {
                return Err(Error::numerical("classifier loss", "not finite"));
            }
            let grads = Tensor::f_run_backward(&[&loss], &self.params, false, false)?;
            opt.step(&self.params, &grads)?;
            if let Some(a) = average.as_deref_mut() {
                a.update(&self.params)?;
            }
        }
        Ok(())
    }

    fn accuracy(&self, x: &Tensor, y: &Tensor) -> Result<f64> {
        let _g = tch::no_grad_guard();
        let n = x.size()[0];
        let mut correct = 0i64;
        let mut start = 0;
        while start < n {
            let len = 1000.min(n - start);
            let pred = self.logits(&x.f_narrow(0, start, len)?)?.f_argmax(-1, false)?;
            correct += i64::try_from(pred.f_eq_tensor(&y.f_narrow(0, start, len)?)?.f_sum(Kind::Int64)?)?;
            start += len;
        }
        Ok(if n == 0 { f64::NAN } else { correct as f64 / n as f64 })
    }

    fn features_of(&self, x: &Tensor) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let n = x.size()[0];
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let len = 1000.min(n - start);
            parts.push(self.features.forward(&x.f_narrow(0, start, len)?)?.f_to_kind(Kind::Double)?);
            start += len;
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    fn snapshot(&self) -> Result<Vec<Tensor>> {
        let _g = tch::no_grad_guard();
        Ok(self.params.iter().map(|p| p.f_detach_copy()).collect::<std::result::Result<_, _>>()?)
    }

    fn restore(&self, saved: &[Tensor]) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (p, s) in self.params.iter().zip(saved) {
            p.shallow_clone().f_copy_(s)?;
        }
        Ok(())
    }
}

/// An exponential moving average of weights with the usual warm-up: after `n` updates the decay
/// is `min(decay, (1 + n) / (10 + n))`, so early weights do not dominate.
struct WeightAverage {
    decay: f64,
    updates: u64,
    shadow: Vec<Tensor>,
}

impl WeightAverage {
    fn new(params: &[Tensor], decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::invalid("CAS weight-average decay", decay, "must be in [0, 1)"));
        }
        let _g = tch::no_grad_guard();
        let shadow = params.iter().map(|p| p.f_detach_copy()).collect::<std::result::Result<_, _>>()?;
        Ok(WeightAverage { decay, updates: 0, shadow })
    }

    fn update(&mut self, params: &[Tensor]) -> Result<()> {
        let _g = tch::no_grad_guard();
        let d = warmed_up_decay(self.decay, self.updates);
        for (s, p) in self.shadow.iter_mut().zip(params) {
            // s <- d s + (1 - d) p
            let _ = s.f_lerp_(p, 1.0 - d)?;
        }
        self.updates += 1;
        Ok(())
    }
}

fn adam(params: &[Tensor], lr: f64) -> Result<Optimizer> {
    Optimizer::new(OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }, lr, LrSchedule::Constant, params)
}

/// `trace(sqrt(A^(1/2) B A^(1/2)))` of symmetric PSD matrices (f64), through two
/// eigendecompositions; negative eigenvalues from rounding are set to zero.
fn trace_sqrt_product(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (la, va) = a.f_linalg_eigh("L")?;
    let sa = va.f_mul(&la.f_clamp_min(0.0)?.f_sqrt()?.f_unsqueeze(0)?)?.f_mm(&va.f_transpose(0, 1)?)?;
    let m = sa.f_mm(b)?.f_mm(&sa)?;
    let m = m.f_add(&m.f_transpose(0, 1)?)?.f_div_scalar(2.0)?;
    let (lm, _) = m.f_linalg_eigh("L")?;
    Ok(lm.f_clamp_min(0.0)?.f_sqrt()?.f_sum(Kind::Double)?.f_double_value(&[])?)
}

/// The Fréchet distance between Gaussian fits of two feature sets (N, d) in f64:
/// `|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^(1/2) S2 S1^(1/2))^(1/2))`.
///
/// # Errors
/// Fewer than 2 rows in either set; libtorch errors.
pub fn frechet_distance(f1: &Tensor, f2: &Tensor) -> Result<f64> {
    let stats = |f: &Tensor| -> Result<(Tensor, Tensor)> {
        let n = f.size()[0];
        if n < 2 {
            return Err(Error::invalid("feature rows", n, "need at least 2 for a covariance"));
        }
        let mu = f.f_mean_dim(0, false, Kind::Double)?;
        let c = f.f_sub(&mu)?;
        Ok((mu, c.f_transpose(0, 1)?.f_mm(&c)?.f_div_scalar((n - 1) as f64)?))
    };
    let (m1, s1) = stats(f1)?;
    let (m2, s2) = stats(f2)?;
    let d = m1.f_sub(&m2)?.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
    let tr = |s: &Tensor| -> Result<f64> { Ok(s.f_trace()?.f_double_value(&[])?) };
    Ok(d + tr(&s1)? + tr(&s2)? - 2.0 * trace_sqrt_product(&s1, &s2)?)
}

fn check_images(d: &Dataset, what: &'static str) -> Result<()> {
    let s = d.shape();
    if (s.channels, s.height, s.width) != (1, 28, 28) || d.classes() != 10 {
        return Err(Error::invalid(
            what,
            format!("{s:?}, {} classes", d.classes()),
            "must be 1 x 28 x 28 images with 10 labels (MNIST format)",
        ));
    }
    if d.len() < 4 {
        return Err(Error::invalid(what, d.len(), "needs at least 4 examples"));
    }
    Ok(())
}

/// Evaluates `synthetic` against the real `train` and `test` sets (see the module documentation).
/// `on_stage` is told what is running.
///
/// # Errors
/// Datasets of the wrong shape or too small, a validation split that leaves no real training
/// data; numerical and libtorch errors.
pub fn evaluate_synthetic(
    synthetic: &Dataset,
    train: &Dataset,
    test: &Dataset,
    config: &EvalConfig,
    device: Device,
    on_stage: &mut dyn FnMut(&str),
) -> Result<SyntheticEvaluation> {
    crate::device::check_available(device)?;
    check_images(synthetic, "synthetic set")?;
    check_images(train, "real training set")?;
    check_images(test, "real test set")?;
    if config.validation_size == 0 || config.validation_size >= train.len() {
        return Err(Error::invalid(
            "validation size",
            config.validation_size,
            format!("must be in 1..{} (the real training set size)", train.len()),
        ));
    }
    if config.batch_size == 0 || config.cas_epochs == 0 {
        return Err(Error::invalid(
            "classifier settings",
            format!("batch {}, epochs {}", config.batch_size, config.cas_epochs),
            "must be positive",
        ));
    }
    let syn = Examples::from_dataset(synthetic, device)?;
    let real = Examples::from_dataset(train, device)?;
    let tst = Examples::from_dataset(test, device)?;
    let n_train = train.len() as i64;
    let v = config.validation_size as i64;
    let (val_x, val_y) = (real.images.f_narrow(0, n_train - v, v)?, real.labels.f_narrow(0, n_train - v, v)?);
    // Each classifier shuffles from its own stream of the seed, so one's settings (say, the CAS
    // epochs) cannot change another's numbers.
    let mut rng = SeedStream::EvaluationCas.rng(config.seed);

    // CAS.
    on_stage("CAS: training a classifier on the synthetic set");
    let clf = Classifier::new(device, 10, config.seed)?;
    let mut opt = adam(&clf.params, config.lr)?;
    let mut average = config.cas_weight_average.map(|d| WeightAverage::new(&clf.params, d)).transpose()?;
    let mut val_acc = Vec::new();
    let mut best: Option<(f64, u32, Vec<Tensor>)> = None;
    for e in 1..=config.cas_epochs {
        clf.epoch(&mut opt, &syn.images, &syn.labels, config.batch_size, &mut rng, average.as_mut())?;
        // Validate the weights that would be reported: the average's, when kept.
        let raw = match &average {
            Some(a) => {
                let raw = clf.snapshot()?;
                clf.restore(&a.shadow)?;
                Some(raw)
            }
            None => None,
        };
        let a = clf.accuracy(&val_x, &val_y)?;
        val_acc.push(a);
        if best.as_ref().is_none_or(|(b, _, _)| a > *b) {
            best = Some((a, e, clf.snapshot()?));
        }
        if let Some(raw) = raw {
            clf.restore(&raw)?;
        }
    }
    let (_, selected_epoch, saved) = best.ok_or_else(|| Error::invalid("CAS epochs", 0, "must be positive"))?;
    clf.restore(&saved)?;
    let cas = Cas {
        test_accuracy: clf.accuracy(&tst.images, &tst.labels)?,
        selected_epoch,
        validation_accuracy: val_acc,
        protocol: format!(
            "CNN (conv16-conv32 5x5 with max-pooling, fc128, ReLU) trained only on the {} synthetic examples for {} epochs (Adam lr {}, batch {}, seed {}{}); epoch selected by accuracy on a validation split of the last {} real training examples; accuracy of that epoch on the {} real test examples (DPImageBench 2025 protocol)",
            synthetic.len(),
            config.cas_epochs,
            config.lr,
            config.batch_size,
            config.seed,
            config.cas_weight_average.map_or(String::new(), |d| format!("; validated and tested with a moving average of its weights, decay {d}")),
            v,
            test.len()
        ),
    };

    // FID in the feature space of a classifier trained on real training data (validation split excluded).
    on_stage("FID: training the MNIST feature classifier on real data");
    let fid_net = Classifier::new(device, 10, config.seed.wrapping_add(1))?;
    let mut opt = adam(&fid_net.params, config.lr)?;
    let mut fid_rng = SeedStream::EvaluationFid.rng(config.seed);
    let (fx, fy) = (real.images.f_narrow(0, 0, n_train - v)?, real.labels.f_narrow(0, 0, n_train - v)?);
    for _ in 0..config.fid_epochs {
        fid_net.epoch(&mut opt, &fx, &fy, config.batch_size, &mut fid_rng, None)?;
    }
    let feature_acc = fid_net.accuracy(&tst.images, &tst.labels)?;
    let k = (test.len() as i64).min(synthetic.len() as i64);
    let fid = frechet_distance(
        &fid_net.features_of(&tst.images.f_narrow(0, 0, k)?)?,
        &fid_net.features_of(&syn.images.f_narrow(0, 0, k)?)?,
    )?;
    let fid_protocol = format!(
        "Frechet distance between Gaussian fits of the 128-d penultimate ReLU features of a CNN trained for {} epochs on the first {} real training examples (its real test accuracy: {:.4}), over the first {k} real test images and the first {k} synthetic images; NOT Inception-FID",
        config.fid_epochs, n_train - v, feature_acc
    );

    // Real vs fake.
    on_stage("real-vs-fake: training a classifier to tell real from synthetic");
    let half = k / 2;
    let nt = test.len() as i64;
    let rvf_train_x = Tensor::f_cat(&[tst.images.f_narrow(0, 0, half)?, syn.images.f_narrow(0, 0, half)?], 0)?;
    let rvf_test_x = Tensor::f_cat(
        &[tst.images.f_narrow(0, nt - half, half)?, syn.images.f_narrow(0, synthetic.len() as i64 - half, half)?],
        0,
    )?;
    let labels = Tensor::f_cat(
        &[Tensor::f_ones([half], (Kind::Int64, device))?, Tensor::f_zeros([half], (Kind::Int64, device))?],
        0,
    )?;
    let rvf = Classifier::new(device, 2, config.seed.wrapping_add(2))?;
    let mut opt = adam(&rvf.params, config.lr)?;
    let mut rvf_rng = SeedStream::EvaluationRealVsFake.rng(config.seed);
    for _ in 0..config.real_vs_fake_epochs {
        rvf.epoch(&mut opt, &rvf_train_x, &labels, config.batch_size, &mut rvf_rng, None)?;
    }
    let real_vs_fake_accuracy = rvf.accuracy(&rvf_test_x, &labels)?;
    let real_vs_fake_protocol = format!(
        "CNN trained {} epochs on {half} real test images (the first) vs {half} synthetic images (the first), tested on {half} other real test images (the last) vs {half} other synthetic images (the last); 0.5 is perfect",
        config.real_vs_fake_epochs
    );
    Ok(SyntheticEvaluation {
        cas,
        fid_mnist_classifier: fid,
        fid_protocol,
        real_vs_fake_accuracy,
        real_vs_fake_protocol,
        synthetic_examples: synthetic.len(),
        config: config.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_average_follows_the_warmed_up_decay() {
        let p = Tensor::from_slice(&[0.0f64]);
        let mut avg = WeightAverage::new(std::slice::from_ref(&p), 0.5).unwrap();
        let mut expected = 0.0;
        for (n, v) in [1.0f64, 2.0, 3.0, 4.0, 5.0].into_iter().enumerate() {
            let _ = p.shallow_clone().fill_(v);
            avg.update(std::slice::from_ref(&p)).unwrap();
            let d = 0.5f64.min((1.0 + n as f64) / (10.0 + n as f64));
            expected = d * expected + (1.0 - d) * v;
            let got = avg.shadow[0].double_value(&[0]);
            assert!((got - expected).abs() < 1e-12, "update {n}: {got} against {expected}");
        }
        // Early updates follow the weights closely (decay 0.1, 0.18, ...), later ones at 0.5.
        assert!((expected - 4.3).abs() < 0.3, "{expected}");
        for bad in [1.0, -0.1, f64::NAN] {
            assert!(WeightAverage::new(std::slice::from_ref(&p), bad).is_err(), "decay {bad} accepted");
        }
    }
}
