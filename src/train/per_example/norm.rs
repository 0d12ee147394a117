//! GroupNorm and LayerNorm: the affine map `z = x_hat * w + b` is elementwise, so the per-example
//! gradients are cheap to materialise: `g_w,i = sum (b_i * x_hat_i)`, `g_b,i = sum b_i`, summed over
//! the dimensions the parameter is broadcast along (spatial for GroupNorm, leading for LayerNorm).
use super::ParamSum;
use crate::error::Result;
use tch::Tensor;

/// GroupNorm: `xhat`, `b` are (B, C, ...); the parameters are (C,).
pub(crate) fn prepare_group(xhat: &Tensor, b: &Tensor) -> Result<(Tensor, Vec<ParamSum>)> {
    let dims: Vec<i64> = (2..xhat.dim() as i64).collect();
    prepare(xhat, b, &dims)
}

/// LayerNorm over `shape_len` trailing dimensions: `xhat`, `b` are (B, ..., *shape).
pub(crate) fn prepare_layer(xhat: &Tensor, b: &Tensor, shape_len: usize) -> Result<(Tensor, Vec<ParamSum>)> {
    let dims: Vec<i64> = (1..(xhat.dim() - shape_len) as i64).collect();
    prepare(xhat, b, &dims)
}

fn prepare(xhat: &Tensor, b: &Tensor, dims: &[i64]) -> Result<(Tensor, Vec<ParamSum>)> {
    let bx = b.f_mul(xhat)?;
    let (gw, gb) = if dims.is_empty() {
        (bx, b.shallow_clone())
    } else {
        (bx.f_sum_dim_intlist(dims, false, None)?, b.f_sum_dim_intlist(dims, false, None)?)
    };
    let sq = per_example_square_norm(&gw)?.f_add(&per_example_square_norm(&gb)?)?;
    Ok((sq, vec![ParamSum::PerExample(gw), ParamSum::PerExample(gb)]))
}

/// `|g_i|^2` for a (B, ...) tensor.
pub(crate) fn per_example_square_norm(g: &Tensor) -> Result<Tensor> {
    let batch = g.size()[0];
    Ok(g.f_reshape([batch, -1])?.f_square()?.f_sum_dim_intlist(1, false, None)?)
}
