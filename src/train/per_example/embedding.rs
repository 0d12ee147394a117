//! Embedding: example i's gradient is `G_i = sum_t e_{idx_it} b_it^T` (a V x d matrix that is zero
//! outside the rows it looked up). Ghost norm through equality of indices:
//! `|G_i|^2 = sum_{t, t'} [idx_it = idx_it'] <b_it, b_it'>` (cost T^2 d, never V d). The clipped sum
//! is one `index_add` of the weighted backprops.
use super::ParamSum;
use crate::error::Result;
use tch::Tensor;

pub(crate) fn prepare(idx: &Tensor, b: &Tensor, vocabulary: i64) -> Result<(Tensor, Vec<ParamSum>)> {
    let batch = idx.size()[0];
    let d = *b.size().last().unwrap_or(&1);
    let idx2 = idx.f_reshape([batch, -1])?;
    let b3 = b.f_reshape([batch, -1, d])?;
    let same = idx2.f_unsqueeze(2)?.f_eq_tensor(&idx2.f_unsqueeze(1)?)?.f_to_kind(b3.f_kind()?)?;
    let gb = b3.f_bmm(&b3.f_transpose(1, 2)?)?;
    let sq = same.f_mul(&gb)?.f_sum_dim_intlist([1i64, 2].as_slice(), false, None)?;
    Ok((sq, vec![ParamSum::Embedding { idx: idx2, b: b3, vocabulary }]))
}
