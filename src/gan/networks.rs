//! The conditional DCGAN-style networks for 28x28 one-channel images with 10 labels.
//!
//! - [`Generator`]: `(z, one-hot label)` -> linear -> 128 x 7 x 7 -> BatchNorm, ReLU ->
//!   transposed conv to 64 x 14 x 14 -> BatchNorm, ReLU -> transposed conv to 1 x 28 x 28 ->
//!   sigmoid (pixels in [0, 1], like [`crate::train::dpsgd::Examples`]). It never sees private
//!   data, so BatchNorm is allowed. Its own `VarStore`.
//! - The discriminator is a [`Sequential`] (so the per-example engine can clip it), conditioned by
//!   concatenating 10 one-hot label planes to the image: (B, 11, 28, 28) -> 2 logits (index
//!   [`REAL`] = real, [`FAKE`] = fake). A 2-logit cross-entropy is the binary cross-entropy of the
//!   logit difference, so the engine's cross-entropy loss is the GAN loss. No BatchNorm (GroupNorm),
//!   its own `VarStore`. Or, with [`Conditioning::Classifier`], the image alone -> 11 logits
//!   (real of label 0..9, or generated).
use crate::error::{Error, Result};
use crate::train::per_example::{LayerSpec, Sequential};
use tch::{nn, Device, Kind, Tensor};

/// Label classes.
pub const CLASSES: i64 = 10;
/// Image side.
pub const SIDE: i64 = 28;
/// The discriminator's class index for real data.
pub const REAL: i64 = 1;
/// The discriminator's class index for generated data.
pub const FAKE: i64 = 0;
/// Input channels of the discriminator: the image plus one plane per label.
pub const D_INPUT_CHANNELS: i64 = 1 + CLASSES;
/// BatchNorm's epsilon and running-statistics momentum in the generator (PyTorch's defaults).
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

fn conv(i: i64, o: i64) -> LayerSpec {
    LayerSpec::Conv2d { in_channels: i, out_channels: o, kernel: 4, stride: 2, padding: 1, bias: true }
}

/// The class index of "generated" for a [`Conditioning::Classifier`] discriminator (labels 0..10
/// are "real, of that label").
pub const CLASSIFIER_FAKE: i64 = CLASSES;

/// How the discriminator learns the labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Conditioning {
    /// The image with 10 one-hot label planes appended, two logits: real ([`REAL`]) or generated
    /// ([`FAKE`]).
    #[default]
    LabelPlanes,
    /// The image alone, 11 logits: real of label 0..9, or generated ([`CLASSIFIER_FAKE`]): the
    /// "K + 1 classes" discriminator of Salimans et al. 2016 (also Odena 2016). A real record
    /// (x, y) is trained towards class y, a generated one towards class 10, and the generator is
    /// trained to make `G(z, y)` read as real of label y, which ties its samples to their labels
    /// far more directly than label planes do.
    Classifier,
}

impl Conditioning {
    /// Input channels of the discriminator.
    pub fn input_channels(self) -> i64 {
        match self {
            Conditioning::LabelPlanes => D_INPUT_CHANNELS,
            Conditioning::Classifier => 1,
        }
    }

    /// Logits of the discriminator.
    pub fn outputs(self) -> i64 {
        match self {
            Conditioning::LabelPlanes => 2,
            Conditioning::Classifier => CLASSES + 1,
        }
    }

    /// The discriminator's input for images (B, 1, 28, 28) with labels (B,).
    ///
    /// # Errors
    /// Shape or label errors.
    pub fn input(self, images: &Tensor, labels: &Tensor) -> Result<Tensor> {
        match self {
            Conditioning::LabelPlanes => condition(images, labels),
            Conditioning::Classifier => {
                check_labels(labels)?;
                Ok(images.shallow_clone())
            }
        }
    }

    /// Class targets (B,) that say "real, with these labels".
    ///
    /// # Errors
    /// libtorch errors.
    pub fn real_targets(self, labels: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Conditioning::LabelPlanes => Tensor::f_full([labels.size()[0]], REAL, (Kind::Int64, labels.device()))?,
            Conditioning::Classifier => labels.f_to_kind(Kind::Int64)?,
        })
    }

    /// The class index that says "generated".
    pub fn fake_class(self) -> i64 {
        match self {
            Conditioning::LabelPlanes => FAKE,
            Conditioning::Classifier => CLASSIFIER_FAKE,
        }
    }

    /// Class targets (n,) that say "generated", on `device`.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn fake_targets(self, n: i64, device: Device) -> Result<Tensor> {
        Ok(Tensor::f_full([n], self.fake_class(), (Kind::Int64, device))?)
    }

    /// Per example, how much more the discriminator believes "real with label y" than
    /// "generated": `logit[real target] - logit[fake class]` for `logits` (B, outputs) and labels
    /// (B,).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn real_margin(self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let real = logits.f_gather(1, &self.real_targets(labels)?.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
        Ok(real.f_sub(&logits.f_select(1, self.fake_class())?)?)
    }

    /// Per example, how much more a [`Conditioning::Classifier`] discriminator believes "label y"
    /// than any other label, among its 10 real classes: `logit[y] - logsumexp_{k != y, k < 10}
    /// logit[k]` (the log-odds of y; the "generated" logit plays no part). Label planes have no
    /// class logits: an error.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for label planes; libtorch errors.
    pub fn label_margin(self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        if self != Conditioning::Classifier {
            return Err(Error::invalid(
                "ranking by label",
                "label-planes",
                "needs a discriminator with class logits (--conditioning classifier)",
            ));
        }
        let real = logits.f_narrow(1, 0, CLASSES)?;
        let y = labels.f_to_kind(Kind::Int64)?.f_unsqueeze(1)?;
        let own = real.f_gather(1, &y, false)?.f_squeeze_dim(1)?;
        let others = real.f_scatter_value(1, &y, f64::NEG_INFINITY)?.f_logsumexp(&[1i64][..], false)?;
        Ok(own.f_sub(&others)?)
    }
}

/// The discriminator's layers before the noise layer of the `noise-layer` design (and the first
/// block of the private discriminator): conv 11 -> `width`, 4x4 stride 2 (28 -> 14), tanh.
pub fn discriminator_head(width: i64) -> Vec<LayerSpec> {
    discriminator_head_for(width, Conditioning::LabelPlanes)
}

/// [`discriminator_head`] for a discriminator conditioned by `conditioning` (its input channels).
pub fn discriminator_head_for(width: i64, conditioning: Conditioning) -> Vec<LayerSpec> {
    vec![conv(conditioning.input_channels(), width), LayerSpec::Tanh]
}

/// The rest: conv `width` -> 2 `width` 4x4 stride 2 (14 -> 7), GroupNorm (8 groups), tanh,
/// flatten, linear to 2 logits.
pub fn discriminator_tail(width: i64) -> Vec<LayerSpec> {
    discriminator_tail_for(width, Conditioning::LabelPlanes)
}

/// [`discriminator_tail`] for a discriminator conditioned by `conditioning` (its logits).
pub fn discriminator_tail_for(width: i64, conditioning: Conditioning) -> Vec<LayerSpec> {
    vec![
        conv(width, 2 * width),
        LayerSpec::GroupNorm { groups: 8.min(2 * width), channels: 2 * width },
        LayerSpec::Tanh,
        LayerSpec::Flatten,
        LayerSpec::Linear { in_features: 2 * width * 7 * 7, out_features: conditioning.outputs(), bias: true },
    ]
}

/// The whole private discriminator: [`discriminator_head`] then [`discriminator_tail`].
pub fn discriminator_specs(width: i64) -> Vec<LayerSpec> {
    discriminator_specs_for(width, Conditioning::LabelPlanes)
}

/// The whole private discriminator for `conditioning`.
pub fn discriminator_specs_for(width: i64, conditioning: Conditioning) -> Vec<LayerSpec> {
    let mut s = discriminator_head_for(width, conditioning);
    s.extend(discriminator_tail_for(width, conditioning));
    s
}

/// One-hot rows (B, 10) of `labels` (B,) int64, in `kind` on the labels' device.
///
/// # Errors
/// [`Error::InvalidParameter`] for labels outside 0..10; libtorch errors.
pub fn one_hot(labels: &Tensor, kind: Kind) -> Result<Tensor> {
    check_labels(labels)?;
    Ok(labels.f_one_hot(CLASSES)?.f_to_kind(kind)?)
}

/// [`Error::InvalidParameter`] unless every label lies in 0..10.
fn check_labels(labels: &Tensor) -> Result<()> {
    if labels.numel() > 0 {
        let (lo, hi) = (labels.f_min()?.f_int64_value(&[])?, labels.f_max()?.f_int64_value(&[])?);
        if lo < 0 || hi >= CLASSES {
            return Err(Error::invalid("labels", format!("range [{lo}, {hi}]"), "must lie in 0..10"));
        }
    }
    Ok(())
}

/// The discriminator's input: images (B, 1, 28, 28) with 10 label planes appended (plane y is all
/// ones for label y, the others zero): (B, 11, 28, 28).
///
/// # Errors
/// Shape or label errors.
pub fn condition(images: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let b = images.size()[0];
    let planes =
        one_hot(labels, images.f_kind()?)?.f_reshape([b, CLASSES, 1, 1])?.f_expand([b, CLASSES, SIDE, SIDE], false)?;
    Ok(Tensor::f_cat(&[images.shallow_clone(), planes], 1)?)
}

/// The conditional generator, with its own `VarStore`.
#[derive(Debug)]
pub struct Generator {
    vs: nn::VarStore,
    z_dim: i64,
    width: i64,
    fc_w: Tensor,
    fc_b: Tensor,
    bn: [(Tensor, Tensor, Tensor, Tensor); 2],
    ct1_w: Tensor,
    ct1_b: Tensor,
    ct2_w: Tensor,
    ct2_b: Tensor,
}

impl Generator {
    /// A freshly initialised generator (libtorch's process-wide generator draws the initial
    /// weights; build inside [`crate::torch_rng::seeded`] for a reproducible run, or hold
    /// [`crate::torch_rng::lock`] so the draw cannot disturb another thread's) with latent size `z_dim` and
    /// `width` channels in its last hidden layer (twice that in the first).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for non-positive sizes; libtorch errors.
    pub fn new(device: Device, z_dim: i64, width: i64) -> Result<Self> {
        if z_dim < 1 || width < 1 {
            return Err(Error::invalid("generator size", format!("z_dim {z_dim}, width {width}"), "must be positive"));
        }
        let vs = nn::VarStore::new(device);
        let p = vs.root();
        let w2 = 2 * width;
        let input = z_dim + CLASSES;
        let u = |fan_in: i64| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            nn::Init::Uniform { lo: -bound, up: bound }
        };
        let fc_w = (&p / "fc").f_var("weight", &[w2 * 49, input], u(input))?;
        let fc_b = (&p / "fc").f_var("bias", &[w2 * 49], u(input))?;
        let bn_layer = |name: &str, c: i64| -> Result<(Tensor, Tensor, Tensor, Tensor)> {
            Ok((
                (&p / name).f_var("weight", &[c], nn::Init::Const(1.0))?,
                (&p / name).f_var("bias", &[c], nn::Init::Const(0.0))?,
                (&p / name).f_zeros_no_train("running_mean", &[c])?,
                (&p / name).f_ones_no_train("running_var", &[c])?,
            ))
        };
        let bn = [bn_layer("bn0", w2)?, bn_layer("bn1", width)?];
        // Transposed convolutions: weight (in, out, k, k); PyTorch's fan-in is out * k * k.
        let ct1_w = (&p / "ct1").f_var("weight", &[w2, width, 4, 4], u(width * 16))?;
        let ct1_b = (&p / "ct1").f_var("bias", &[width], u(width * 16))?;
        let ct2_w = (&p / "ct2").f_var("weight", &[width, 1, 4, 4], u(16))?;
        let ct2_b = (&p / "ct2").f_var("bias", &[1], u(16))?;
        Ok(Generator { vs, z_dim, width, fc_w, fc_b, bn, ct1_w, ct1_b, ct2_w, ct2_b })
    }

    /// Latent dimension.
    pub fn z_dim(&self) -> i64 {
        self.z_dim
    }

    /// Width parameter.
    pub fn width(&self) -> i64 {
        self.width
    }

    /// The `VarStore` (save, load).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The `VarStore`, mutably (load).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The trainable tensors (in a fixed order).
    pub fn parameters(&self) -> Vec<Tensor> {
        let mut v = vec![self.fc_w.shallow_clone(), self.fc_b.shallow_clone()];
        for (w, b, _, _) in &self.bn {
            v.push(w.shallow_clone());
            v.push(b.shallow_clone());
        }
        v.extend([
            self.ct1_w.shallow_clone(),
            self.ct1_b.shallow_clone(),
            self.ct2_w.shallow_clone(),
            self.ct2_b.shallow_clone(),
        ]);
        v
    }

    /// Images (B, 1, 28, 28) in [0, 1] for latents `z` (B, z_dim) and labels (B,). `train`: batch
    /// statistics in BatchNorm (and running statistics updated); otherwise the running ones.
    ///
    /// # Errors
    /// Shape or label errors.
    pub fn forward(&self, z: &Tensor, labels: &Tensor, train: bool) -> Result<Tensor> {
        let b = z.size()[0];
        if z.size() != [b, self.z_dim] {
            return Err(Error::invalid(
                "latent batch",
                format!("{:?}", z.size()),
                format!("must be (B, {})", self.z_dim),
            ));
        }
        let x = Tensor::f_cat(&[z.shallow_clone(), one_hot(labels, z.f_kind()?)?], 1)?;
        let h = x.f_linear(&self.fc_w, Some(&self.fc_b))?.f_reshape([b, 2 * self.width, 7, 7])?;
        let bn = |h: &Tensor, i: usize| -> Result<Tensor> {
            let (w, bias, m, v) = &self.bn[i];
            Ok(h.f_batch_norm(Some(w), Some(bias), Some(m), Some(v), train, BN_MOMENTUM, BN_EPS, false)?.f_relu()?)
        };
        let h = bn(&h, 0)?;
        let h = upsample(&h, &self.ct1_w, &self.ct1_b)?;
        let h = bn(&h, 1)?;
        let h = upsample(&h, &self.ct2_w, &self.ct2_b)?;
        Ok(h.f_sigmoid()?)
    }
}

/// The generator's transposed convolution, 4x4, stride 2, padding 1 (H x W -> 2H x 2W), of `h`
/// (B, C, H, W) with weight `w` (C, O, 4, 4) and bias `b` (O,): the same function as
/// `conv_transpose2d`, computed on the CPU along a faster route than libtorch's default for these
/// shapes (2 threads, a lot of 128; medians in BENCHMARKS.md):
///
/// - O >= 8 (the first, 64 -> 32 channels): the same libtorch call on a channels-last copy of
///   `h`, which oneDNN runs about twice as fast as on channels-first;
/// - O < 8 (the last, 32 -> 1): `W^T h` as one batched product into the (O k k, H W) columns,
///   then `col2im` adds each column into its 4 x 4 window of the output (about 3 times faster).
///
/// Both are differentiable (the generator step backpropagates through them). Other devices keep
/// `conv_transpose2d`. Checked against it, values and gradients, in the tests below.
fn upsample(h: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    const STRIDE: i64 = 2;
    const PADDING: i64 = 1;
    let (c, o, k) = (w.size()[0], w.size()[1], w.size()[2]);
    if h.device() != Device::Cpu || h.dim() != 4 {
        return Ok(h.f_conv_transpose2d(w, Some(b), [STRIDE, STRIDE], [PADDING, PADDING], [0, 0], 1, [1, 1])?);
    }
    if o >= 8 {
        let nhwc = h.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])?;
        return Ok(nhwc.f_conv_transpose2d(w, Some(b), [STRIDE, STRIDE], [PADDING, PADDING], [0, 0], 1, [1, 1])?);
    }
    let size = h.size();
    let (batch, height, width) = (size[0], size[2], size[3]);
    let columns =
        w.f_reshape([c, o * k * k])?.f_transpose(0, 1)?.f_matmul(&h.f_reshape([batch, c, height * width])?)?; // (B, O k k, H W)
    let out_h = (height - 1) * STRIDE - 2 * PADDING + k;
    let out_w = (width - 1) * STRIDE - 2 * PADDING + k;
    let y = columns.f_col2im([out_h, out_w], [k, k], [1, 1], [PADDING, PADDING], [STRIDE, STRIDE])?;
    Ok(y.f_add(&b.f_reshape([1, o, 1, 1])?)?)
}

/// A discriminator built from `specs` in its own `VarStore`.
#[derive(Debug)]
pub struct Discriminator {
    /// Its variables.
    pub vs: nn::VarStore,
    /// The network.
    pub net: Sequential,
    /// What its input and logits mean.
    pub conditioning: Conditioning,
}

impl Discriminator {
    /// Builds [`discriminator_specs`]`(width)` on `device` (label planes).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn new(device: Device, width: i64) -> Result<Self> {
        Self::with_conditioning(device, width, Conditioning::LabelPlanes)
    }

    /// Builds [`discriminator_specs_for`]`(width, conditioning)` on `device`.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn with_conditioning(device: Device, width: i64, conditioning: Conditioning) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let net = Sequential::new(&vs.root(), &discriminator_specs_for(width, conditioning))?;
        Ok(Discriminator { vs, net, conditioning })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsample_equals_conv_transpose_values_and_gradients() {
        // The generator's two shapes (64 -> 32 on 7 x 7, channels-last route; 32 -> 1 on 14 x 14,
        // col2im route) and an odd one; f64 so that the comparison is tight.
        for (c, o, side) in [(64, 32, 7), (32, 1, 14), (3, 2, 5)] {
            let opts = (Kind::Double, Device::Cpu);
            // Drawn under the generator's lock: other tests of this process draw meanwhile.
            let (h, w, b, r) = crate::torch_rng::seeded(c, || {
                let r = Tensor::randn([3, o, 2 * side, 2 * side], opts);
                (
                    Tensor::randn([3, c, side, side], opts),
                    Tensor::randn([c, o, 4, 4], opts),
                    Tensor::randn([o], opts),
                    r,
                )
            });
            let (h, w, b) = (h.set_requires_grad(true), w.set_requires_grad(true), b.set_requires_grad(true));
            let ours = upsample(&h, &w, &b).unwrap();
            let theirs = h.conv_transpose2d(&w, Some(&b), [2, 2], [1, 1], [0, 0], 1, [1, 1]);
            assert_eq!(ours.size(), vec![3, o, 2 * side, 2 * side]);
            assert!(ours.allclose(&theirs, 1e-10, 1e-10, false), "values, {c} -> {o}");
            let g_ours =
                Tensor::run_backward(&[ours.f_mul(&r).unwrap().sum(Kind::Double)], &[&h, &w, &b], false, false);
            let g_theirs =
                Tensor::run_backward(&[theirs.f_mul(&r).unwrap().sum(Kind::Double)], &[&h, &w, &b], false, false);
            for (a, t) in g_ours.iter().zip(&g_theirs) {
                assert!(a.allclose(t, 1e-9, 1e-9, false), "gradients, {c} -> {o}");
            }
        }
    }
}
