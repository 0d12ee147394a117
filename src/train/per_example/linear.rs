//! Linear layers: ghost norms for 2-D inputs; ghost or materialised for (B, T, d) inputs.
//!
//! For example i with input rows `a_it` (d) and backprop rows `b_it` (p), the weight gradient is
//! `G_i = sum_t b_it a_it^T` and
//!
//! - 2-D input (T = 1): `|G_i|^2 = |a_i|^2 |b_i|^2` (no per-example tensor);
//! - T > 1, ghost: `|G_i|^2 = <A_i A_i^T, B_i B_i^T>` (two T x T Gram matrices, cost T^2 (d + p));
//! - T > 1, materialised: `G_i = B_i^T A_i` (cost T d p, then 2 d p for the norm and the sum).
//!
//! [`NormMethod::Auto`] decides as for Conv2d ([`super::conv::prefer_ghost`]).
use super::{NormMethod, ParamSum};
use crate::error::Result;
use tch::Tensor;

pub(crate) fn prepare(a: &Tensor, b: &Tensor, bias: bool, norm_method: NormMethod) -> Result<(Tensor, Vec<ParamSum>)> {
    let batch = a.size()[0];
    let d = *a.size().last().unwrap_or(&1);
    let p = *b.size().last().unwrap_or(&1);
    let mut sums = Vec::with_capacity(2);
    if a.dim() == 2 {
        let na = a.f_square()?.f_sum_dim_intlist(1, false, None)?;
        let nb = b.f_square()?.f_sum_dim_intlist(1, false, None)?;
        let mut sq = na.f_mul(&nb)?;
        sums.push(ParamSum::Rows { a: a.shallow_clone(), b: b.f_unsqueeze(1)? });
        if bias {
            sq = sq.f_add(&nb)?;
            sums.push(ParamSum::PerExample(b.shallow_clone()));
        }
        return Ok((sq, sums));
    }
    let a3 = a.f_reshape([batch, -1, d])?;
    let b3 = b.f_reshape([batch, -1, p])?;
    let t = a3.size()[1];
    let ghost = match norm_method {
        NormMethod::Ghost => true,
        NormMethod::Materialise => false,
        NormMethod::Auto => super::conv::prefer_ghost(batch, t, p, d, a.f_kind()?.elt_size_in_bytes() as i64),
    };
    let mut sq = if ghost {
        let ga = a3.f_bmm(&a3.f_transpose(1, 2)?)?;
        let gb = b3.f_bmm(&b3.f_transpose(1, 2)?)?;
        let sq = ga.f_mul(&gb)?.f_sum_dim_intlist([1i64, 2].as_slice(), false, None)?;
        sums.push(ParamSum::Rows { a: a3.f_reshape([-1, d])?, b: b3.shallow_clone() });
        sq
    } else {
        let g = b3.f_transpose(1, 2)?.f_bmm(&a3)?; // (B, p, d)
        let sq = g.f_square()?.f_sum_dim_intlist([1i64, 2].as_slice(), false, None)?;
        sums.push(ParamSum::PerExample(g));
        sq
    };
    if bias {
        let gb = b3.f_sum_dim_intlist(1, false, None)?; // (B, p)
        sq = sq.f_add(&gb.f_square()?.f_sum_dim_intlist(1, false, None)?)?;
        sums.push(ParamSum::PerExample(gb));
    }
    Ok((sq, sums))
}
