//! The layer types a private network is built from, and the sequential network that records what
//! the per-example gradient engine needs: each parameterised layer's input `a` and output `z`.
//!
//! tch's `nn::Sequential` hides activations, so the network is a plain list of [`LayerSpec`]s
//! whose parameters live in one `nn::VarStore` (built through an `nn::Path`), which can be saved as
//! safetensors.
use crate::error::{Error, Result};
use tch::{nn, Kind, Reduction, Tensor};

/// The epsilon inside GroupNorm, LayerNorm and BatchNorm (PyTorch's default).
pub const NORM_EPS: f64 = 1e-5;

/// One layer of a [`Sequential`] network. Every layer keeps the batch as dimension 0.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    /// `z = a W^T + b` over the last dimension; `a` is (B, in) or (B, ..., in).
    Linear {
        /// Input features (last dimension of `a`).
        in_features: i64,
        /// Output features.
        out_features: i64,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// 2-D convolution of (B, C, H, W) inputs, square kernel, dilation 1, one group.
    Conv2d {
        /// Input channels C.
        in_channels: i64,
        /// Output channels.
        out_channels: i64,
        /// Kernel side.
        kernel: i64,
        /// Stride.
        stride: i64,
        /// Zero padding on each side.
        padding: i64,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// Group normalisation over (B, C, ...) inputs with a per-channel affine map. Per-example.
    GroupNorm {
        /// Number of groups; must divide `channels`.
        groups: i64,
        /// Channels C (dimension 1 of the input).
        channels: i64,
    },
    /// Layer normalisation over the trailing `shape`, with an elementwise affine map. Per-example.
    LayerNorm {
        /// The normalised trailing shape.
        shape: Vec<i64>,
    },
    /// A lookup table: integer (B,) or (B, T) indices to (B, dim) or (B, T, dim) vectors.
    /// Only as the first layer (its input must be integer indices).
    Embedding {
        /// Number of rows (valid indices are 0..vocabulary).
        vocabulary: i64,
        /// Vector size.
        dim: i64,
    },
    /// Batch normalisation (batch statistics). It mixes the examples of a batch, so a single
    /// example's gradient is not defined: refused in private mode ([`Sequential::check_private`]).
    BatchNorm2d {
        /// Channels C.
        channels: i64,
    },
    /// Batch normalisation with *public-data* statistics (Davody et al. 2020): the per-channel mean
    /// and variance come from a batch of public examples ([`Sequential::set_public_batch`]), not
    /// from the private batch, and are constants for the gradient, so private examples never
    /// affect one another. Allowed in private mode; per-channel affine parameters as in GroupNorm.
    PublicBatchNorm2d {
        /// Channels C.
        channels: i64,
    },
    /// Elementwise tanh.
    Tanh,
    /// Elementwise max(0, x).
    Relu,
    /// Elementwise logistic function.
    Sigmoid,
    /// Max pooling over (B, C, H, W), square window, no padding.
    MaxPool2d {
        /// Window side.
        kernel: i64,
        /// Stride.
        stride: i64,
    },
    /// Average pooling over (B, C, H, W), square window, no padding.
    AvgPool2d {
        /// Window side.
        kernel: i64,
        /// Stride.
        stride: i64,
    },
    /// Flattens everything but the batch dimension.
    Flatten,
}

impl LayerSpec {
    /// Whether the layer has trainable parameters.
    pub fn has_parameters(&self) -> bool {
        matches!(
            self,
            LayerSpec::Linear { .. }
                | LayerSpec::Conv2d { .. }
                | LayerSpec::GroupNorm { .. }
                | LayerSpec::LayerNorm { .. }
                | LayerSpec::Embedding { .. }
                | LayerSpec::BatchNorm2d { .. }
                | LayerSpec::PublicBatchNorm2d { .. }
        )
    }

    fn validate(&self, index: usize) -> Result<()> {
        let positive = |name: &'static str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err(Error::invalid(name, v, format!("must be positive (layer {index}: {self:?})")))
            }
        };
        match self {
            LayerSpec::Linear { in_features, out_features, .. } => {
                positive("linear in_features", *in_features)?;
                positive("linear out_features", *out_features)
            }
            LayerSpec::Conv2d { in_channels, out_channels, kernel, stride, padding, .. } => {
                positive("conv in_channels", *in_channels)?;
                positive("conv out_channels", *out_channels)?;
                positive("conv kernel", *kernel)?;
                positive("conv stride", *stride)?;
                if *padding < 0 {
                    return Err(Error::invalid("conv padding", padding, "must be >= 0"));
                }
                Ok(())
            }
            LayerSpec::GroupNorm { groups, channels } => {
                positive("group norm groups", *groups)?;
                positive("group norm channels", *channels)?;
                if channels % groups != 0 {
                    return Err(Error::invalid(
                        "group norm groups",
                        groups,
                        format!("must divide channels = {channels}"),
                    ));
                }
                Ok(())
            }
            LayerSpec::LayerNorm { shape } => {
                if shape.is_empty() {
                    return Err(Error::invalid("layer norm shape", "[]", "must name at least one dimension"));
                }
                shape.iter().try_for_each(|&d| positive("layer norm shape", d))
            }
            LayerSpec::Embedding { vocabulary, dim } => {
                if index != 0 {
                    return Err(Error::invalid("embedding position", index, "an embedding must be the first layer"));
                }
                positive("embedding vocabulary", *vocabulary)?;
                positive("embedding dim", *dim)
            }
            LayerSpec::BatchNorm2d { channels } | LayerSpec::PublicBatchNorm2d { channels } => {
                positive("batch norm channels", *channels)
            }
            LayerSpec::MaxPool2d { kernel, stride } | LayerSpec::AvgPool2d { kernel, stride } => {
                positive("pool kernel", *kernel)?;
                positive("pool stride", *stride)
            }
            LayerSpec::Tanh | LayerSpec::Relu | LayerSpec::Sigmoid | LayerSpec::Flatten => Ok(()),
        }
    }
}

/// A layer with its parameters (shallow handles onto the `VarStore`'s variables).
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) spec: LayerSpec,
    /// In order: weight, then bias when present.
    pub(crate) params: Vec<Tensor>,
    pub(crate) names: Vec<String>,
    /// PublicBatchNorm2d: the public batch's (mean, variance) per channel, shaped (1, C, 1, 1).
    pub(crate) public_stats: std::sync::Mutex<Option<(Tensor, Tensor)>>,
}

/// What the forward pass records for one parameterised layer.
#[derive(Debug)]
pub(crate) struct Record {
    /// Index into [`Sequential::layers`].
    pub(crate) layer: usize,
    /// The layer's input, detached (for GroupNorm/LayerNorm: the normalised input `x_hat`; for
    /// Embedding: the indices).
    pub(crate) a: Tensor,
    /// The layer's output, in the autograd graph.
    pub(crate) z: Tensor,
}

/// A feed-forward network: a list of layers whose parameters live in one `nn::VarStore`.
#[derive(Debug)]
pub struct Sequential {
    pub(crate) layers: Vec<Layer>,
}

fn uniform(bound: f64) -> nn::Init {
    nn::Init::Uniform { lo: -bound, up: bound }
}

impl Sequential {
    /// Builds the layers under `path`, initialised as PyTorch does (uniform in +-1/sqrt(fan_in) for
    /// Linear and Conv2d, ones and zeros for normalisation, N(0, 1) for Embedding). Variables are
    /// named `l{index}.weight` / `l{index}.bias` under `path`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an empty list or a layer with a non-positive size, a group
    /// count that does not divide the channels, or an embedding that is not the first layer;
    /// [`Error::Torch`] if libtorch fails to allocate.
    pub fn new(path: &nn::Path, specs: &[LayerSpec]) -> Result<Self> {
        if specs.is_empty() {
            return Err(Error::invalid("layers", 0, "a network needs at least one layer"));
        }
        let mut layers = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            spec.validate(i)?;
            let p = path / format!("l{i}");
            let mut params = Vec::new();
            let mut names = Vec::new();
            let mut add = |name: &str, t: Tensor| {
                names.push(format!("l{i}.{name}"));
                params.push(t);
            };
            match spec {
                LayerSpec::Linear { in_features, out_features, bias } => {
                    let bound = 1.0 / (*in_features as f64).sqrt();
                    add("weight", p.f_var("weight", &[*out_features, *in_features], uniform(bound))?);
                    if *bias {
                        add("bias", p.f_var("bias", &[*out_features], uniform(bound))?);
                    }
                }
                LayerSpec::Conv2d { in_channels, out_channels, kernel, bias, .. } => {
                    let bound = 1.0 / ((in_channels * kernel * kernel) as f64).sqrt();
                    add("weight", p.f_var("weight", &[*out_channels, *in_channels, *kernel, *kernel], uniform(bound))?);
                    if *bias {
                        add("bias", p.f_var("bias", &[*out_channels], uniform(bound))?);
                    }
                }
                LayerSpec::GroupNorm { channels, .. }
                | LayerSpec::BatchNorm2d { channels }
                | LayerSpec::PublicBatchNorm2d { channels } => {
                    add("weight", p.f_var("weight", &[*channels], nn::Init::Const(1.0))?);
                    add("bias", p.f_var("bias", &[*channels], nn::Init::Const(0.0))?);
                }
                LayerSpec::LayerNorm { shape } => {
                    add("weight", p.f_var("weight", shape, nn::Init::Const(1.0))?);
                    add("bias", p.f_var("bias", shape, nn::Init::Const(0.0))?);
                }
                LayerSpec::Embedding { vocabulary, dim } => {
                    add("weight", p.f_var("weight", &[*vocabulary, *dim], nn::Init::Randn { mean: 0.0, stdev: 1.0 })?);
                }
                _ => {}
            }
            layers.push(Layer { spec: spec.clone(), params, names, public_stats: std::sync::Mutex::new(None) });
        }
        Ok(Sequential { layers })
    }

    /// The layer specifications, in order.
    pub fn specs(&self) -> Vec<LayerSpec> {
        self.layers.iter().map(|l| l.spec.clone()).collect()
    }

    /// The trainable variables with their names (`l{index}.weight`, `l{index}.bias`), in the order
    /// the engine returns gradients. The tensors share storage with the `VarStore`.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .flat_map(|l| l.names.iter().cloned().zip(l.params.iter().map(Tensor::shallow_clone)))
            .collect()
    }

    /// Refuses layers that mix the examples of a batch (BatchNorm), whose per-example gradients
    /// are undefined.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the layer, with the alternatives.
    pub fn check_private(&self) -> Result<()> {
        for (i, l) in self.layers.iter().enumerate() {
            if let LayerSpec::BatchNorm2d { .. } = l.spec {
                return Err(Error::invalid(
                    "layer",
                    format!("{i} (BatchNorm2d)"),
                    "BatchNorm mixes the examples of a batch, so per-example gradients (and DP-SGD's \
                     clipping) are undefined; use GroupNorm (or LayerNorm) instead, or normalise \
                     with statistics from public data",
                ));
            }
        }
        Ok(())
    }

    /// Whether the network has [`LayerSpec::PublicBatchNorm2d`] layers (which need
    /// [`Sequential::set_public_batch`]).
    pub fn needs_public_batch(&self) -> bool {
        self.layers.iter().any(|l| matches!(l.spec, LayerSpec::PublicBatchNorm2d { .. }))
    }

    /// Runs the public batch `x` through the network (no gradient) and stores, at each
    /// [`LayerSpec::PublicBatchNorm2d`], the per-channel mean and variance of the public
    /// activations arriving there (each layer normalised by its own new statistics). Call it
    /// whenever the parameters change (every step): the statistics depend on the model, never on
    /// private data.
    ///
    /// # Errors
    /// [`Error::Torch`] on shape mismatches; [`Error::InvalidParameter`] for an empty batch.
    pub fn set_public_batch(&self, x: &Tensor) -> Result<()> {
        if x.size().first().copied().unwrap_or(0) < 2 {
            return Err(Error::invalid(
                "public batch",
                x.size().first().copied().unwrap_or(0),
                "needs at least 2 examples",
            ));
        }
        let _guard = tch::no_grad_guard();
        // Clear every layer first, then fill them in order (a layer's statistics depend on the
        // layers before it, normalised with their new statistics).
        for l in &self.layers {
            *l.public_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        let mut h = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            if let LayerSpec::PublicBatchNorm2d { .. } = l.spec {
                let mean = h.f_mean_dim(&[0i64, 2, 3][..], true, None::<Kind>)?;
                let var = h.f_sub(&mean)?.f_square()?.f_mean_dim(&[0i64, 2, 3][..], true, None::<Kind>)?;
                *l.public_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((mean.f_detach()?, var.f_detach()?));
            }
            h = self.forward_layer(i, &h)?;
        }
        Ok(())
    }

    fn forward_layer(&self, i: usize, h: &Tensor) -> Result<Tensor> {
        // Reuse forward_impl's per-layer code through a one-layer view.
        let l = &self.layers[i];
        let view = Sequential {
            layers: vec![Layer {
                spec: l.spec.clone(),
                params: l.params.iter().map(Tensor::shallow_clone).collect(),
                names: l.names.clone(),
                public_stats: std::sync::Mutex::new(
                    l.public_stats
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .as_ref()
                        .map(|(m, v)| (m.shallow_clone(), v.shallow_clone())),
                ),
            }],
        };
        Ok(view.forward_impl(h, false)?.0)
    }

    /// The network's output for `x` (train-mode semantics: BatchNorm uses batch statistics).
    ///
    /// # Errors
    /// [`Error::Torch`] on shape mismatches.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_impl(x, false)?.0)
    }

    /// The forward pass, recording each parameterised layer's input and output when `record`.
    pub(crate) fn forward_impl(&self, x: &Tensor, record: bool) -> Result<(Tensor, Vec<Record>)> {
        let mut h = x.shallow_clone();
        let mut records = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let w = l.params.first();
            let bias = l.params.get(1);
            let weight = || w.ok_or_else(|| Error::invalid("layer", i, "has no weight (internal invariant)"));
            let (a, z) = match &l.spec {
                LayerSpec::Linear { .. } => {
                    let z = h.f_linear(weight()?, bias)?;
                    (h, z)
                }
                LayerSpec::Conv2d { stride, padding, .. } => {
                    let z = h.f_conv2d(weight()?, bias, [*stride, *stride], [*padding, *padding], [1, 1], 1)?;
                    (h, z)
                }
                LayerSpec::GroupNorm { groups, .. } => {
                    let xhat = h.f_group_norm::<Tensor>(*groups, None, None, NORM_EPS, true)?;
                    let z = affine_channels(&xhat, &l.params[0], &l.params[1])?;
                    (xhat, z)
                }
                LayerSpec::LayerNorm { shape } => {
                    let xhat = h.f_layer_norm::<Tensor>(shape.as_slice(), None, None, NORM_EPS, true)?;
                    let z = xhat.f_mul(&l.params[0])?.f_add(&l.params[1])?;
                    (xhat, z)
                }
                LayerSpec::Embedding { .. } => {
                    let z = Tensor::f_embedding(&l.params[0], &h, -1, false, false)?;
                    (h, z)
                }
                LayerSpec::PublicBatchNorm2d { .. } => {
                    let stats = l.public_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let (mean, var) = stats.as_ref().ok_or_else(|| {
                        Error::invalid(
                            "public batch norm",
                            i,
                            "has no public statistics; call Sequential::set_public_batch first",
                        )
                    })?;
                    let xhat = h.f_sub(mean)?.f_div(&var.f_add_scalar(NORM_EPS)?.f_sqrt()?)?;
                    let z = affine_channels(&xhat, &l.params[0], &l.params[1])?;
                    (xhat, z)
                }
                LayerSpec::BatchNorm2d { .. } => {
                    let z =
                        h.f_batch_norm(Some(&l.params[0]), Some(&l.params[1]), None, None, true, 0.1, NORM_EPS, true)?;
                    (h, z)
                }
                LayerSpec::Tanh => {
                    h = h.f_tanh()?;
                    continue;
                }
                LayerSpec::Relu => {
                    h = h.f_relu()?;
                    continue;
                }
                LayerSpec::Sigmoid => {
                    h = h.f_sigmoid()?;
                    continue;
                }
                LayerSpec::MaxPool2d { kernel, stride } => {
                    h = channels_last_on_cpu(&h)?.f_max_pool2d(
                        [*kernel, *kernel],
                        [*stride, *stride],
                        [0, 0],
                        [1, 1],
                        false,
                    )?;
                    continue;
                }
                LayerSpec::AvgPool2d { kernel, stride } => {
                    h = h.f_avg_pool2d([*kernel, *kernel], [*stride, *stride], [0, 0], false, true, None)?;
                    continue;
                }
                LayerSpec::Flatten => {
                    h = h.f_flatten(1, -1)?;
                    continue;
                }
            };
            if record {
                records.push(Record { layer: i, a: a.f_detach()?, z: z.shallow_clone() });
            }
            h = z;
        }
        Ok((h, records))
    }
}

/// `x` (B, C, H, W) with channels-last strides (same shape and values) when it is on the CPU;
/// otherwise `x` itself. libtorch's CPU max-pooling has a vectorised kernel for channels-last
/// input only: for tanh-cnn's first pool (lot 256, 16 x 14 x 14, 2 threads) the forward takes
/// 0.5 ms against 4.6 ms, forward and backward 2.5 ms against 5.7 ms, conversion included. The
/// pooled output stays channels-last, which the next convolution accepts as is and which the
/// per-example engine's channels-last patches ([`super::conv`]) then need not copy.
fn channels_last_on_cpu(x: &Tensor) -> Result<Tensor> {
    if x.dim() != 4 || x.device() != tch::Device::Cpu {
        return Ok(x.shallow_clone());
    }
    Ok(x.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])?)
}

/// `x * w[c] + b[c]` along dimension 1 of a (B, C, ...) tensor.
fn affine_channels(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1i64; x.dim()];
    if x.dim() < 2 {
        return Err(Error::invalid("group norm input", format!("{:?}", x.size()), "must be (B, C, ...)"));
    }
    shape[1] = -1;
    Ok(x.f_mul(&w.f_reshape(shape.as_slice())?)?.f_add(&b.f_reshape(shape.as_slice())?)?)
}

/// The per-example cross-entropy losses (B,) of `logits` (B, K) against integer `labels` (B,).
///
/// # Errors
/// [`Error::InvalidParameter`] when the shapes disagree, the labels are not Int64 or lie outside
/// 0..K.
pub fn per_example_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let ls = logits.size();
    if ls.len() != 2 {
        return Err(Error::invalid("network output", format!("{ls:?}"), "must be (batch, classes) logits"));
    }
    if labels.size() != [ls[0]] {
        return Err(Error::invalid(
            "labels",
            format!("{:?}", labels.size()),
            format!("must be ({},) to match the batch", ls[0]),
        ));
    }
    if labels.f_kind()? != Kind::Int64 {
        return Err(Error::invalid("labels", format!("{:?}", labels.f_kind()?), "must be Int64 class indices"));
    }
    if ls[0] > 0 {
        let lo = labels.f_min()?.f_int64_value(&[])?;
        let hi = labels.f_max()?.f_int64_value(&[])?;
        if lo < 0 || hi >= ls[1] {
            return Err(Error::invalid("labels", format!("range [{lo}, {hi}]"), format!("must lie in 0..{}", ls[1])));
        }
    }
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::None, -100, 0.0)?)
}
