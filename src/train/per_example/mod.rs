//! The per-example gradient engine of DP-SGD, in the "book-keeping / ghost clipping" family
//! (Li et al. 2022; Bu et al. 2023): libtorch has no vmap, so per-example gradients are assembled
//! by hand from what one ordinary backward pass already computes.
//!
//! 1. The forward pass records each parameterised layer's input `a` and output `z`.
//! 2. One `run_backward` of the SUM of per-example losses with respect to the outputs `z` gives the
//!    backprops `b`; since example i's loss depends only on row i, row i of `b` is example i's
//!    backprop.
//! 3. Per layer, the per-example squared gradient norms come from `a` and `b` alone (ghost norms,
//!    or a materialised per-example gradient where that is cheaper); see [`linear`], [`conv`],
//!    [`norm`], [`embedding`].
//! 4. With `c_i = min(1, C / (|g_i| + 1e-6))`, each parameter's clipped sum `sum_i c_i g_i` is one
//!    weighted product of `a` and `c * b`; no per-example gradient is built unless its layer chose to.
//!
//! Everything runs on the device of the model and inputs (CPU or CUDA alike). A few routes exist
//! only for the CPU (the direct convolution kernel, AVX2/FMA on f32): on CUDA the engine takes the
//! general libtorch route instead, by design, with the same results up to rounding (the CUDA
//! variants of the equivalence tests check it). [`note_cpu_only_fallback`] says so once per
//! process on stderr, and [`cpu_only_fallbacks`] lists the routes skipped, for a run's metrics.
pub mod conv;
mod conv_direct;
pub mod embedding;
pub mod grouped;
mod intra_op;
pub mod layers;
pub mod linear;
pub mod norm;

pub use grouped::clip_and_sum_grouped;
pub use layers::{per_example_cross_entropy, LayerSpec, Sequential, NORM_EPS};

use crate::error::{Error, Result};
use layers::Record;
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// The CPU-only routes this process has skipped because its tensors were on another device.
static CPU_ONLY_FALLBACKS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// Records that the CPU-only `route` was skipped for tensors on `device` (a no-op on the CPU),
/// and the first time in this process for that route prints a one-line note on stderr.
pub fn note_cpu_only_fallback(route: &'static str, device: Device) {
    if device == Device::Cpu {
        return;
    }
    let mut seen = CPU_ONLY_FALLBACKS.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.contains(&route) {
        seen.push(route);
        eprintln!(
            "note: the per-example engine's {route} exists only for the CPU; on {} it uses the general libtorch route (by design, same results up to rounding)",
            crate::device::name(device)
        );
    }
}

/// The CPU-only routes of the per-example engine this process has skipped (empty on the CPU).
pub fn cpu_only_fallbacks() -> Vec<&'static str> {
    CPU_ONLY_FALLBACKS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The constant added to the norm in the clip factor `min(1, C / (|g_i| + CLIP_STABILITY))`
/// (Opacus' value), so an all-zero gradient gives a factor of 1 rather than a division by zero.
pub const CLIP_STABILITY: f64 = 1e-6;

/// How per-example norms of Linear (3-D input) and Conv2d layers are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormMethod {
    /// Per layer, whichever of [`NormMethod::Ghost`] and [`NormMethod::Materialise`] needs fewer
    /// FLOPs for the norms and the clipped sum together: ghost when `L^2 (p + D) < 2 p D` (L
    /// positions, p outputs, D inputs; Bu et al. 2023's rule), or when the materialised gradients
    /// would not fit [`conv::MATERIALISE_BUDGET_BYTES`].
    #[default]
    Auto,
    /// Gram-matrix ghost norms (memory B L^2; no per-example gradient).
    Ghost,
    /// Per-example gradients built with one batched product (memory B p D).
    Materialise,
}

/// Clipping settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipConfig {
    /// The clipping norm C (> 0, finite).
    pub max_norm: f64,
    /// Ghost or materialised norms per layer.
    pub norm_method: NormMethod,
}

impl ClipConfig {
    /// Clipping at `max_norm` with [`NormMethod::Auto`].
    pub fn new(max_norm: f64) -> Self {
        ClipConfig { max_norm, norm_method: NormMethod::Auto }
    }
}

/// What [`clip_and_sum`] returns for one batch.
#[derive(Debug)]
pub struct ClippedBatch {
    /// Each example's total gradient norm over all parameters, before clipping: (B,).
    pub norms: Tensor,
    /// Each example's clip factor `min(1, C / (|g_i| + CLIP_STABILITY))`: (B,).
    pub clip_factors: Tensor,
    /// `sum_i c_i g_i` for each variable, shaped like it, in [`Sequential::parameters`] order.
    pub clipped_sum: Vec<Tensor>,
    /// The sum of the per-example losses.
    pub loss_sum: f64,
    /// Each row's loss (B,), detached (for reports: the GAN's design (b) splits it into the real
    /// and the generated rows' losses without a second forward pass).
    pub losses: Tensor,
}

/// What [`nonprivate_gradient`] returns.
#[derive(Debug)]
pub struct NonPrivateStep {
    /// The gradient of the mean loss for each variable, in [`Sequential::parameters`] order.
    pub gradients: Vec<Tensor>,
    /// The mean loss over the batch.
    pub loss_mean: f64,
}

/// One parameter's pending clipped sum, in whatever form its layer left it.
#[derive(Debug)]
pub(crate) enum ParamSum {
    /// Per-example gradients (B, *shape): the clipped sum is `c^T G`.
    PerExample(Tensor),
    /// A Linear weight (p, d): `sum_{i,t} c_i b_it a_it^T` with `a` (B T, d) and `b` (B, T, p).
    Rows { a: Tensor, b: Tensor },
    /// A Conv2d weight's per-example gradients, transposed: (B, k k C, O), inputs in the
    /// patches' (kh, kw, c) order (see [`conv::to_weight_layout`]); `shape` is the weight's
    /// (O, C, k, k).
    ConvGradients { g: Tensor, shape: Vec<i64> },
    /// A Conv2d weight: `sum_{i,l} c_i b_il cols_il^T` with `cols` (B, L, D) in the patches'
    /// (kh, kw, c) order, `b` (B, O, L).
    Conv { cols: Tensor, b: Tensor, shape: Vec<i64> },
    /// An Embedding table (V, d): `index_add` of `c_i b_it` at rows `idx_it`.
    Embedding { idx: Tensor, b: Tensor, vocabulary: i64 },
}

impl ParamSum {
    /// `sum_i c_i g_i`, with `c` (B,).
    fn clipped_sum(&self, c: &Tensor) -> Result<Tensor> {
        let batch = c.size()[0];
        Ok(match self {
            ParamSum::PerExample(g) => {
                let shape: Vec<i64> = g.size()[1..].to_vec();
                c.f_unsqueeze(0)?.f_mm(&g.f_reshape([batch, -1])?)?.f_reshape(shape.as_slice())?
            }
            ParamSum::ConvGradients { g, shape } => {
                let summed = c.f_unsqueeze(0)?.f_mm(&g.f_reshape([batch, -1])?)?; // (1, D O)
                let summed = summed.f_reshape([-1, shape[0]])?.f_transpose(0, 1)?;
                conv::to_weight_layout(&summed, &[], shape)?
            }
            ParamSum::Rows { a, b } => {
                let p = b.size()[2];
                let cb = b.f_mul(&c.f_reshape([batch, 1, 1])?)?.f_reshape([-1, p])?;
                cb.f_transpose(0, 1)?.f_mm(a)?
            }
            ParamSum::Conv { cols, b, shape } => {
                let o = b.size()[1];
                let d = cols.size()[2];
                let cb = b.f_mul(&c.f_reshape([batch, 1, 1])?)?.f_permute([1, 0, 2])?.f_reshape([o, -1])?;
                conv::to_weight_layout(&cb.f_mm(&cols.f_reshape([-1, d])?)?, &[], shape)?
            }
            ParamSum::Embedding { idx, b, vocabulary } => {
                let d = b.size()[2];
                let cb = b.f_mul(&c.f_reshape([batch, 1, 1])?)?.f_reshape([-1, d])?;
                Tensor::f_zeros([*vocabulary, d], (cb.f_kind()?, cb.device()))?.f_index_add(
                    0,
                    &idx.f_reshape([-1])?,
                    &cb,
                )?
            }
        })
    }

    /// The per-example gradients (B, *shape), built explicitly (for tests and debugging).
    fn per_example(&self) -> Result<Tensor> {
        Ok(match self {
            ParamSum::PerExample(g) => g.shallow_clone(),
            ParamSum::Rows { a, b } => {
                let (batch, d) = (b.size()[0], a.size()[1]);
                b.f_transpose(1, 2)?.f_bmm(&a.f_reshape([batch, -1, d])?)?
            }
            ParamSum::ConvGradients { g, shape } => {
                conv::to_weight_layout(&g.f_transpose(1, 2)?, &[g.size()[0]], shape)?
            }
            ParamSum::Conv { cols, b, shape } => conv::to_weight_layout(&b.f_bmm(cols)?, &[b.size()[0]], shape)?,
            ParamSum::Embedding { idx, b, vocabulary } => {
                let (batch, t, d) = (b.size()[0], b.size()[1], b.size()[2]);
                let index = idx.f_unsqueeze(2)?.f_expand([batch, t, d], false)?;
                Tensor::f_zeros([batch, *vocabulary, d], (b.f_kind()?, b.device()))?.f_scatter_add(1, &index, b)?
            }
        })
    }
}

/// The per-example squared norms (B,) and pending sums of every parameterised layer.
struct Prepared {
    square_norms: Tensor,
    sums: Vec<ParamSum>,
    loss_sum: f64,
    losses: Tensor,
}

fn check_finite(t: &Tensor, what: &'static str) -> Result<()> {
    if t.f_is_floating_point()? && !bool::try_from(t.f_isfinite()?.f_all()?)? {
        return Err(Error::numerical(what, "contains NaN or infinity; no update made"));
    }
    Ok(())
}

fn check_batch(inputs: &Tensor, labels: &Tensor) -> Result<i64> {
    let batch = *inputs.size().first().unwrap_or(&0);
    if batch == 0 {
        return Err(Error::invalid("batch size", batch, "must be at least 1"));
    }
    if labels.size().first() != Some(&batch) {
        return Err(Error::invalid(
            "labels",
            format!("{:?}", labels.size()),
            format!("must have {batch} rows, one per input"),
        ));
    }
    check_finite(inputs, "inputs")?;
    Ok(batch)
}

/// The forward and backward pass and every layer's rule, with the squared norms and sums per
/// group of `group_size` consecutive rows (per row when 1; the caller has checked that it
/// divides the batch), each layer's results grouped as soon as its rule has run
/// ([`grouped::regroup`]) unless the rule grouped them itself.
fn prepare(
    model: &Sequential,
    inputs: &Tensor,
    labels: &Tensor,
    norm_method: NormMethod,
    group_size: i64,
) -> Result<Prepared> {
    model.check_private()?;
    let batch = check_batch(inputs, labels)?;
    let (logits, records) = model.forward_impl(inputs, true)?;
    if records.is_empty() {
        return Err(Error::invalid("layers", "none trainable", "the network has no parameters to train"));
    }
    let row_losses = per_example_cross_entropy(&logits, labels)?;
    let loss = row_losses.f_sum(None::<Kind>)?;
    let losses = row_losses.f_detach()?;
    drop(row_losses);
    let loss_sum = loss.f_double_value(&[])?;
    if !loss_sum.is_finite() {
        return Err(Error::numerical("loss", format!("sum over the batch is {loss_sum}; no update made")));
    }
    let zs: Vec<&Tensor> = records.iter().map(|r| &r.z).collect();
    let backprops = Tensor::f_run_backward(&[&loss], &zs, false, false)?;
    drop(zs);
    let _guard = tch::no_grad_guard();
    let mut square_norms = Tensor::f_zeros([batch / group_size.max(1)], (logits.f_kind()?, logits.device()))?;
    // The graph, the logits and the layer outputs are no longer needed: free them before the
    // per-layer work, and each layer's input and backprop as soon as its rule has used them
    // (what a rule keeps for the clipped sum it holds itself), so the step's peak memory is the
    // activations plus one layer's work buffers.
    drop((loss, logits));
    let mut sums = Vec::new();
    for (Record { layer, a, z }, b) in records.into_iter().zip(backprops) {
        drop(z);
        let (a, b) = (&a, &b);
        let l = &model.layers[layer];
        let has_bias = l.params.len() > 1;
        let per_row = |(sq, s): (Tensor, Vec<ParamSum>)| (sq, s, group_size == 1);
        let (sq, s, grouped) = match &l.spec {
            LayerSpec::Linear { .. } => per_row(linear::prepare(a, b, has_bias, norm_method)?),
            LayerSpec::Conv2d { stride, padding, .. } => {
                conv::prepare(a, b, &l.params[0].size(), *stride, *padding, has_bias, norm_method, group_size)?
            }
            // Public-statistics BatchNorm is, per example, a fixed normalisation followed by a
            // per-channel affine map: GroupNorm's rule applies to its recorded x_hat.
            LayerSpec::GroupNorm { .. } | LayerSpec::PublicBatchNorm2d { .. } => per_row(norm::prepare_group(a, b)?),
            LayerSpec::LayerNorm { shape } => per_row(norm::prepare_layer(a, b, shape.len())?),
            LayerSpec::Embedding { vocabulary, .. } => per_row(embedding::prepare(a, b, *vocabulary)?),
            other => {
                return Err(Error::invalid("layer", format!("{other:?}"), "has no per-example gradient rule"));
            }
        };
        let (sq, s) = if grouped { (sq, s) } else { grouped::regroup(s, batch, group_size, norm_method)? };
        square_norms = square_norms.f_add(&sq)?;
        sums.extend(s);
    }
    Ok(Prepared { square_norms, sums, loss_sum, losses })
}

/// One private step's gradient work: per-example gradient norms, clip factors and the clipped sum
/// `sum_i min(1, C / (|g_i| + 1e-6)) g_i` per variable, for the summed cross-entropy loss of
/// `model(inputs)` against `labels`. No noise is added (that is the caller's next step).
///
/// # Proof definition
/// Each example's contribution `c_i g_i` to every returned sum has total L2 norm (over all
/// variables) at most `max_norm`, so adding or removing one example changes `clipped_sum` by at
/// most `max_norm` in L2: the sensitivity the Gaussian mechanism of DP-SGD needs. Checked against a
/// one-example-at-a-time autograd loop in `tests/per_example.rs`; derivation in
/// `proofs/train/clip_and_sum.md`.
///
/// # Errors
/// - [`Error::InvalidParameter`]: `max_norm` not finite and positive, a BatchNorm layer, an empty
///   batch, labels of the wrong shape, kind or range.
/// - [`Error::Numerical`]: NaN or infinity in the inputs, the loss or the gradient norms (nothing
///   is returned, so no update can be made from it).
/// - [`Error::Torch`]: shape mismatches between the inputs and the network, device mismatches.
pub fn clip_and_sum(model: &Sequential, inputs: &Tensor, labels: &Tensor, config: &ClipConfig) -> Result<ClippedBatch> {
    if !(config.max_norm.is_finite() && config.max_norm > 0.0) {
        return Err(Error::invalid("clipping norm C", config.max_norm, "must be finite and positive"));
    }
    let prepared = prepare(model, inputs, labels, config.norm_method, 1)?;
    let _guard = tch::no_grad_guard();
    // Ghost norms are sums of products that can round to a tiny negative number.
    let norms = prepared.square_norms.f_clamp_min(0.0)?.f_sqrt()?;
    check_finite(&norms, "per-example gradient norms")?;
    let clip_factors =
        norms.f_add_scalar(CLIP_STABILITY)?.f_reciprocal()?.f_mul_scalar(config.max_norm)?.f_clamp_max(1.0)?;
    let clipped_sum = prepared.sums.iter().map(|s| s.clipped_sum(&clip_factors)).collect::<Result<Vec<_>>>()?;
    Ok(ClippedBatch { norms, clip_factors, clipped_sum, loss_sum: prepared.loss_sum, losses: prepared.losses })
}

/// Every example's unclipped gradient, materialised: one (B, *shape) tensor per variable in
/// [`Sequential::parameters`] order, plus the summed loss. Memory grows as B times the model size;
/// meant for tests and debugging, not training.
///
/// # Errors
/// As [`clip_and_sum`].
pub fn per_example_gradients(model: &Sequential, inputs: &Tensor, labels: &Tensor) -> Result<(Vec<Tensor>, f64)> {
    let prepared = prepare(model, inputs, labels, NormMethod::Ghost, 1)?;
    let _guard = tch::no_grad_guard();
    let grads = prepared.sums.iter().map(ParamSum::per_example).collect::<Result<Vec<_>>>()?;
    Ok((grads, prepared.loss_sum))
}

/// The non-private counterpart of [`clip_and_sum`], sharing its forward pass: the gradient of the
/// mean cross-entropy loss by one ordinary backward pass.
///
/// # Errors
/// As [`clip_and_sum`], except that BatchNorm is allowed.
pub fn nonprivate_gradient(model: &Sequential, inputs: &Tensor, labels: &Tensor) -> Result<NonPrivateStep> {
    check_batch(inputs, labels)?;
    let (logits, _) = model.forward_impl(inputs, false)?;
    let loss = per_example_cross_entropy(&logits, labels)?.f_mean(None::<Kind>)?;
    let loss_mean = loss.f_double_value(&[])?;
    if !loss_mean.is_finite() {
        return Err(Error::numerical("loss", format!("mean over the batch is {loss_mean}; no update made")));
    }
    let params: Vec<Tensor> = model.parameters().into_iter().map(|(_, t)| t).collect();
    let gradients = Tensor::f_run_backward(&[&loss], &params, false, false)?;
    Ok(NonPrivateStep { gradients, loss_mean })
}
