//! Conv2d: the input unfolds into per-position patches `A_i` (L positions x D = C k k), the backprop
//! is `B_i` (O x L), and example i's weight gradient is `G_i = B_i A_i` (O x D).
//!
//! - materialised: one batched product (L O D per example; `G_i` kept transposed, D x O, the
//!   layout [`super::conv_direct`] writes too), then `|G_i|^2` and the clipped sum `c^T G` (O D
//!   each); memory B O D, plus the patches of one slice of the batch at a time
//!   ([`PATCH_CHUNK_BYTES`]);
//! - ghost: `|G_i|^2 = <A_i A_i^T, B_i^T B_i>` with two L x L Gram matrices (L^2 (O + D)), then the
//!   clipped sum as one product over all (example, position) pairs (L O D); memory B L^2.
//!
//! On f32 CPU tensors with AVX2 (O a multiple of 8, `k C` of 4) the materialised route computes
//! `G_i` and its norm straight from the input instead, without patches ([`super::conv_direct`]).
//!
//! [`NormMethod::Auto`] counts both and picks ghost only when `L^2 (O + D) < 2 O D` (the mixed rule
//! of Bu et al. 2023, counting the clipped sum too), or when the materialised gradients would
//! exceed [`MATERIALISE_BUDGET_BYTES`].
//!
//! The patches come from strided views of the (padded) input turned channels-last (`Tensor::unfold`
//! twice, one copy), so D is ordered (kh, kw, c): each copied run is `k C` contiguous values rather
//! than the `k` of a channels-first unfold, which on CPU makes the copy several times faster (for
//! tanh-cnn's second layer, 16 channels, 4x4: 0.2 ms against 1.0 ms for a lot of 256) and is
//! already in the (L, D) layout the batched products want. Gradients computed in that order are
//! put back in the weight's (O, C, k, k) order by [`to_weight_layout`], on the O D-sized results
//! only. Norms do not depend on the order.
use super::{conv_direct, NormMethod, ParamSum};
use crate::error::Result;
use tch::Tensor;

/// The most memory [`NormMethod::Auto`] lets one layer's materialised per-example gradients take.
pub const MATERIALISE_BUDGET_BYTES: i64 = 1 << 30;

/// The most memory one slice of unfolded patches takes on the materialised route (the batch is
/// unfolded in slices of this size; at least one example per slice).
pub const PATCH_CHUNK_BYTES: i64 = 2 << 20;

/// The padded input `a` (B, C, H, W) turned channels-last, (B, H + 2 p, W + 2 p, C): what
/// [`patches_channels_last`] unfolds.
pub(crate) fn padded_channels_last(a: &Tensor, padding: i64) -> Result<Tensor> {
    let padded =
        if padding > 0 { a.f_constant_pad_nd([padding, padding, padding, padding])? } else { a.shallow_clone() };
    Ok(padded.f_permute([0, 2, 3, 1])?.f_contiguous()?)
}

/// The patches of a square `kernel` over `nhwc` (B, H, W, C) from [`padded_channels_last`], as
/// (B, L, k k C) with L = H_out W_out and each row ordered (kh, kw, c).
pub(crate) fn patches_channels_last(nhwc: &Tensor, kernel: i64, stride: i64) -> Result<Tensor> {
    let size = nhwc.size();
    let (batch, channels) = (size[0], size[3]);
    let windows = nhwc.f_unfold(1, kernel, stride)?.f_unfold(2, kernel, stride)?; // (B, Ho, Wo, C, kh, kw)
    Ok(windows.f_permute([0, 1, 2, 4, 5, 3])?.f_reshape([batch, -1, kernel * kernel * channels])?)
}

/// The patches of `a` (B, C, H, W) for a square `kernel`, as (B, L, k k C), rows ordered
/// (kh, kw, c); see [`to_weight_layout`].
pub(crate) fn patches(a: &Tensor, kernel: i64, stride: i64, padding: i64) -> Result<Tensor> {
    patches_channels_last(&padded_channels_last(a, padding)?, kernel, stride)
}

/// `t` (lead..., O, k k C), gradients with their inputs in the patches' (kh, kw, c) order, as a
/// contiguous (lead..., O, C, k, k) tensor in the weight's order; `shape` is the weight's
/// (O, C, k, k).
pub(crate) fn to_weight_layout(t: &Tensor, lead: &[i64], shape: &[i64]) -> Result<Tensor> {
    let (o, c, k) = (shape[0], shape[1], shape[2]);
    let n = lead.len() as i64;
    let mut split = lead.to_vec();
    split.extend_from_slice(&[o, k, k, c]);
    let mut order: Vec<i64> = (0..n).collect();
    order.extend_from_slice(&[n, n + 3, n + 1, n + 2]);
    let mut full = lead.to_vec();
    full.extend_from_slice(shape);
    Ok(t.f_reshape(split.as_slice())?.f_permute(order.as_slice())?.f_contiguous()?.f_reshape(full.as_slice())?)
}

/// Whether [`NormMethod::Auto`] takes the ghost route for `positions` L, `outputs` p, `inputs` D.
pub(crate) fn prefer_ghost(batch: i64, positions: i64, outputs: i64, inputs: i64, element_bytes: i64) -> bool {
    let ghost = positions.saturating_mul(positions).saturating_mul(outputs + inputs);
    let materialise_extra = 2 * outputs.saturating_mul(inputs);
    let memory = batch.saturating_mul(outputs).saturating_mul(inputs).saturating_mul(element_bytes);
    ghost < materialise_extra || memory > MATERIALISE_BUDGET_BYTES
}

/// The layer's squared norms and pending sums, per example; or, on the direct route when `group`
/// > 1, already per group of `group` consecutive examples (the returned flag says which: `true`
/// > when the results are per group, always so for `group` 1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    a: &Tensor,
    b: &Tensor,
    weight_shape: &[i64],
    stride: i64,
    padding: i64,
    bias: bool,
    norm_method: NormMethod,
    group: i64,
) -> Result<(Tensor, Vec<ParamSum>, bool)> {
    let batch = a.size()[0];
    let (o, k) = (weight_shape[0], weight_shape[2]);
    let l: i64 = b.size()[2..].iter().product();
    // (B, O, L), a copy when `b` is channels-last (as it is after channels-last pooling); only
    // the ghost and patch routes need it.
    let bm = || b.f_reshape([batch, o, l]);
    let dd = weight_shape[1] * k * k;
    let element_bytes = a.f_kind()?.elt_size_in_bytes() as i64;
    let ghost = match norm_method {
        NormMethod::Ghost => true,
        NormMethod::Materialise => false,
        NormMethod::Auto => prefer_ghost(batch, l, o, dd, element_bytes),
    };
    let mut sums = Vec::with_capacity(2);
    let mut sq = if ghost {
        let cols = patches(a, k, stride, padding)?; // (B, L, D)
        let ga = cols.f_bmm(&cols.f_transpose(1, 2)?)?; // (B, L, L)
        let bm = bm()?;
        let gb = bm.f_transpose(1, 2)?.f_bmm(&bm)?;
        let sq = ga.f_mul(&gb)?.f_sum_dim_intlist([1i64, 2].as_slice(), false, None)?;
        sums.push(ParamSum::Conv { cols, b: bm, shape: weight_shape.to_vec() });
        sq
    } else if conv_direct::available(a, b, k) {
        // f32 on an AVX2 CPU: gradients, bias gradients and norms straight from the input, no
        // patches, summed per group in the kernel.
        let direct = conv_direct::per_example_gradients(a, b, k, stride, padding, bias, group as usize)?;
        sums.push(ParamSum::ConvGradients { g: direct.grads, shape: weight_shape.to_vec() });
        if let Some(gb) = direct.bias {
            sums.push(ParamSum::PerExample(gb));
        }
        return Ok((direct.squares, sums, true));
    } else {
        conv_direct::note_fallback(a);
        // The patches are the step's largest buffer (L D per example, often several times the
        // gradient's O D): unfold them a slice of the batch at a time, each slice's gradients
        // written straight into G, so only one slice's patches exist at once.
        let rows = (PATCH_CHUNK_BYTES / (l * dd * element_bytes).max(1)).clamp(1, batch);
        let bm = bm()?;
        let nhwc = padded_channels_last(a, padding)?;
        let g = Tensor::f_empty([batch, dd, o], (a.f_kind()?, a.device()))?; // (B, D, O)
        let mut start = 0;
        while start < batch {
            let n = rows.min(batch - start);
            let cols = patches_channels_last(&nhwc.f_narrow(0, start, n)?, k, stride)?; // (n, L, D)
                                                                                        // G_i^T = A_i^T B_i^T, (D, O) as the direct route lays it out.
            let _slice_of_g = cols
                .f_transpose(1, 2)?
                .f_bmm_out(&g.f_narrow(0, start, n)?, &bm.f_narrow(0, start, n)?.f_transpose(1, 2)?)?;
            start += n;
        }
        // |G_i|^2 by a reduction, without a squared copy of G.
        let sq = g.f_norm_scalaropt_dim(2, [1i64, 2].as_slice(), false)?.f_square()?;
        sums.push(ParamSum::ConvGradients { g, shape: weight_shape.to_vec() });
        sq
    };
    if bias {
        let gb = b.f_sum_dim_intlist([2i64, 3].as_slice(), false, None)?; // (B, O)
        sq = sq.f_add(&gb.f_square()?.f_sum_dim_intlist(1, false, None)?)?;
        sums.push(ParamSum::PerExample(gb));
    }
    Ok((sq, sums, group == 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn patches_equal_libtorch_im2col_in_channels_last_order() {
        for (kernel, stride, padding) in [(8, 2, 3), (4, 2, 0), (3, 1, 1), (1, 1, 0), (2, 3, 2)] {
            let a = crate::torch_rng::seeded(kernel, || Tensor::rand([3, 2, 9, 9], (Kind::Double, Device::Cpu)));
            let ours = patches(&a, kernel, stride, padding).unwrap();
            let columns = a.im2col([kernel, kernel], [1, 1], [padding, padding], [stride, stride]); // (B, C k k, L), rows ordered (c, kh, kw)
            let l = columns.size()[2];
            let theirs = columns.reshape([3, 2, kernel, kernel, l]).permute([0, 4, 2, 3, 1]).reshape([3, l, -1]);
            assert_eq!(ours.size(), theirs.size());
            assert!(ours.equal(&theirs), "kernel {kernel} stride {stride} padding {padding}");
        }
    }

    #[test]
    fn sliced_materialisation_equals_the_ghost_route() {
        // 4,608 KiB of f64 patches per example: the materialised route unfolds one example at a time.
        let (batch, channels, out) = (5, 64, 3);
        // Drawn under the generator's lock: other tests of this process draw meanwhile.
        let (a, b, c) = crate::torch_rng::seeded(5, || {
            (
                Tensor::randn([batch, channels, 32, 32], (Kind::Double, Device::Cpu)),
                Tensor::randn([batch, out, 32, 32], (Kind::Double, Device::Cpu)),
                Tensor::rand([batch], (Kind::Double, Device::Cpu)),
            )
        });
        let shape = [out, channels, 3, 3];
        assert!(PATCH_CHUNK_BYTES / (1024 * channels * 9 * 8) < batch);
        let (sq_m, sums_m, _) = prepare(&a, &b, &shape, 1, 1, true, NormMethod::Materialise, 1).unwrap();
        let (sq_g, sums_g, _) = prepare(&a, &b, &shape, 1, 1, true, NormMethod::Ghost, 1).unwrap();
        assert!(sq_m.allclose(&sq_g, 1e-10, 1e-10, false));
        for (m, g) in sums_m.iter().zip(&sums_g) {
            let (pm, pg) = (m.per_example().unwrap(), g.per_example().unwrap());
            assert!(pm.allclose(&pg, 1e-10, 1e-10, false));
            let (m, g) = (m.clipped_sum(&c).unwrap(), g.clipped_sum(&c).unwrap());
            assert!(m.allclose(&g, 1e-10, 1e-10, false));
        }
    }

    #[test]
    fn auto_rule_matches_the_flop_count() {
        // tanh-cnn: conv1 (L 196, O 16, D 64) and conv2 (L 25, O 32, D 256) materialise.
        assert!(!prefer_ghost(256, 196, 16, 64, 4));
        assert!(!prefer_ghost(256, 25, 32, 256, 4));
        // A late, wide layer: L 4, O 512, D 4608 -> ghost.
        assert!(prefer_ghost(256, 4, 512, 4608, 4));
        // Too big to materialise -> ghost whatever the FLOPs.
        assert!(prefer_ghost(1 << 20, 1, 64, 64, 4));
    }
}
