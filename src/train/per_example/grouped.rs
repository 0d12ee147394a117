//! Clipping per *group* of rows instead of per row: consecutive `k` rows of the batch form one
//! privacy unit, whose gradient is the sum of its rows' gradients and is clipped as a whole.
//!
//! The private GAN's design (b) (Bie et al. 2023, "Private GANs, revisited") needs it: the unit is
//! the pair (real example i, fake example i), whose discriminator loss is
//! `CE(D(x_i), real) + CE(D(G(z_i)), fake)`, and the pair's *joint* gradient is clipped.
//!
//! It reuses the engine's forward/backward ([`super::prepare`]): the backprop of row r only
//! depends on row r, so the group's gradient is the sum of the per-row terms, which for every
//! parameter form is a reshape:
//!
//! - materialised per-row gradients (B k, ...) sum to (B, ...) (Conv2d ones too, in their patch
//!   order);
//! - a Linear layer's rows `(a_it, b_it)` of the k rows of a group become the positions of one
//!   example (T becomes k T), so the Gram-matrix ghost norm and the weighted product apply as is;
//! - a Conv2d layer's positions of the k rows likewise become k L positions of one example;
//! - an Embedding's k T lookups become one example's lookups.
//!
//! The norms of the groups are then computed from the grouped forms (ghost or materialised,
//! whichever [`super::conv::prefer_ghost`] picks for the grouped sizes). Each layer is grouped as
//! soon as its rule has run ([`regroup`]), so only one layer's per-row forms exist at a time; a
//! Conv2d on the direct route ([`super::conv_direct`]) sums the k rows of a group inside its kernel
//! and returns the group's gradient and squared norm itself.
use super::{check_finite, conv, prepare, ClipConfig, ClippedBatch, NormMethod, ParamSum, Sequential, CLIP_STABILITY};
use crate::error::{Error, Result};
use tch::Tensor;

fn group(sum: &ParamSum, k: i64, groups: i64) -> Result<ParamSum> {
    Ok(match sum {
        ParamSum::PerExample(g) => {
            let mut shape = vec![groups, k];
            shape.extend_from_slice(&g.size()[1..]);
            ParamSum::PerExample(g.f_reshape(shape.as_slice())?.f_sum_dim_intlist(1, false, None)?)
        }
        ParamSum::ConvGradients { g, shape } => {
            let (d, o) = (g.size()[1], g.size()[2]);
            ParamSum::ConvGradients {
                g: g.f_reshape([groups, k, d, o])?.f_sum_dim_intlist(1, false, None)?,
                shape: shape.clone(),
            }
        }
        ParamSum::Rows { a, b } => {
            let p = b.size()[2];
            ParamSum::Rows { a: a.shallow_clone(), b: b.f_reshape([groups, -1, p])? }
        }
        ParamSum::Conv { cols, b, shape } => {
            let (l, d) = (cols.size()[1], cols.size()[2]);
            let o = b.size()[1];
            ParamSum::Conv {
                cols: cols.f_reshape([groups, k * l, d])?,
                b: b.f_reshape([groups, k, o, l])?.f_permute([0, 2, 1, 3])?.f_reshape([groups, o, k * l])?,
                shape: shape.clone(),
            }
        }
        ParamSum::Embedding { idx, b, vocabulary } => {
            let d = b.size()[2];
            ParamSum::Embedding {
                idx: idx.f_reshape([groups, -1])?,
                b: b.f_reshape([groups, -1, d])?,
                vocabulary: *vocabulary,
            }
        }
    })
}

/// Each group's squared gradient norm (G,) for one grouped parameter.
fn square_norms(sum: &ParamSum, method: NormMethod) -> Result<Tensor> {
    let flat_square = |g: &Tensor| -> Result<Tensor> {
        let n = g.size()[0];
        Ok(g.f_reshape([n, -1])?.f_square()?.f_sum_dim_intlist(1, false, None)?)
    };
    let pick = |batch: i64, positions: i64, outputs: i64, inputs: i64, t: &Tensor| -> Result<bool> {
        Ok(match method {
            NormMethod::Ghost => true,
            NormMethod::Materialise => false,
            NormMethod::Auto => {
                conv::prefer_ghost(batch, positions, outputs, inputs, t.f_kind()?.elt_size_in_bytes() as i64)
            }
        })
    };
    match sum {
        ParamSum::PerExample(g) | ParamSum::ConvGradients { g, .. } => flat_square(g),
        ParamSum::Rows { a, b } => {
            let (groups, t, p) = (b.size()[0], b.size()[1], b.size()[2]);
            let d = a.size()[1];
            let a3 = a.f_reshape([groups, t, d])?;
            if pick(groups, t, p, d, a)? {
                let ga = a3.f_bmm(&a3.f_transpose(1, 2)?)?;
                let gb = b.f_bmm(&b.f_transpose(1, 2)?)?;
                Ok(ga.f_mul(&gb)?.f_sum_dim_intlist([1i64, 2].as_slice(), false, None)?)
            } else {
                flat_square(&b.f_transpose(1, 2)?.f_bmm(&a3)?)
            }
        }
        ParamSum::Conv { cols, b, .. } => {
            let (groups, l, d) = (cols.size()[0], cols.size()[1], cols.size()[2]);
            let o = b.size()[1];
            if pick(groups, l, o, d, cols)? {
                let ga = cols.f_bmm(&cols.f_transpose(1, 2)?)?;
                let gb = b.f_transpose(1, 2)?.f_bmm(b)?;
                Ok(ga.f_mul(&gb)?.f_sum_dim_intlist([1i64, 2].as_slice(), false, None)?)
            } else {
                flat_square(&b.f_bmm(cols)?)
            }
        }
        ParamSum::Embedding { .. } => flat_square(&sum.per_example()?),
    }
}

fn prepare_grouped(
    model: &Sequential,
    inputs: &Tensor,
    labels: &Tensor,
    group_size: i64,
    method: NormMethod,
) -> Result<(Tensor, Vec<ParamSum>, f64, Tensor)> {
    let rows = *inputs.size().first().unwrap_or(&0);
    if group_size < 1 {
        return Err(Error::invalid("group size", group_size, "must be at least 1"));
    }
    if rows % group_size != 0 {
        return Err(Error::invalid("batch size", rows, format!("must be a multiple of the group size {group_size}")));
    }
    let prepared = prepare(model, inputs, labels, method, group_size)?;
    Ok((prepared.square_norms, prepared.sums, prepared.loss_sum, prepared.losses))
}

/// One layer's per-row sums `sums` of a batch of `rows` rows, grouped by `k` consecutive rows,
/// and each group's squared norm (G,) over them.
pub(super) fn regroup(sums: Vec<ParamSum>, rows: i64, k: i64, method: NormMethod) -> Result<(Tensor, Vec<ParamSum>)> {
    let _guard = tch::no_grad_guard();
    let groups = rows / k;
    let sums = sums.iter().map(|s| group(s, k, groups)).collect::<Result<Vec<_>>>()?;
    let mut sq: Option<Tensor> = None;
    for s in &sums {
        let n = square_norms(s, method)?;
        sq = Some(match sq {
            Some(total) => total.f_add(&n)?,
            None => n,
        });
    }
    let sq = match sq {
        Some(sq) => sq,
        None => return Err(Error::invalid("layer", "without parameters", "has nothing to group")),
    };
    Ok((sq, sums))
}

/// [`super::clip_and_sum`] with the privacy unit a group of `group_size` consecutive rows: rows
/// `g k .. g k + k - 1` (k = `group_size`) form group g, whose gradient `G_g` is the sum of its
/// rows' gradients of the summed cross-entropy loss. Returns, per variable,
/// `sum_g min(1, C / (|G_g| + 1e-6)) G_g`, and `norms` / `clip_factors` per group.
///
/// With `group_size == 1` it computes what [`super::clip_and_sum`] does.
///
/// # Proof definition
/// Each group's contribution `c_g G_g` to every returned sum has total L2 norm (over all
/// variables) at most `max_norm`, so adding or removing one group changes `clipped_sum` by at
/// most `max_norm` in L2. Checked against a one-group-at-a-time autograd loop in `tests/gan.rs`
/// (`grouped_clip_and_sum_equals_one_pair_at_a_time`); used by design (b) of
/// `proofs/gan/design_b_joint_clipping.md`.
///
/// # Errors
/// As [`super::clip_and_sum`], and [`Error::InvalidParameter`] for a group size below 1 or a
/// batch that is not a multiple of it.
pub fn clip_and_sum_grouped(
    model: &Sequential,
    inputs: &Tensor,
    labels: &Tensor,
    group_size: i64,
    config: &ClipConfig,
) -> Result<ClippedBatch> {
    if !(config.max_norm.is_finite() && config.max_norm > 0.0) {
        return Err(Error::invalid("clipping norm C", config.max_norm, "must be finite and positive"));
    }
    let (sq, sums, loss_sum, losses) = prepare_grouped(model, inputs, labels, group_size, config.norm_method)?;
    let _guard = tch::no_grad_guard();
    let norms = sq.f_clamp_min(0.0)?.f_sqrt()?;
    check_finite(&norms, "per-group gradient norms")?;
    let clip_factors =
        norms.f_add_scalar(CLIP_STABILITY)?.f_reciprocal()?.f_mul_scalar(config.max_norm)?.f_clamp_max(1.0)?;
    let clipped_sum = sums.iter().map(|s| s.clipped_sum(&clip_factors)).collect::<Result<Vec<_>>>()?;
    Ok(ClippedBatch { norms, clip_factors, clipped_sum, loss_sum, losses })
}

/// Every group's unclipped gradient, materialised: one (G, *shape) tensor per variable (for tests).
///
/// # Errors
/// As [`clip_and_sum_grouped`].
pub fn per_group_gradients(
    model: &Sequential,
    inputs: &Tensor,
    labels: &Tensor,
    group_size: i64,
) -> Result<(Vec<Tensor>, f64)> {
    let (_, sums, loss_sum, _) = prepare_grouped(model, inputs, labels, group_size, NormMethod::Ghost)?;
    let _guard = tch::no_grad_guard();
    Ok((sums.iter().map(ParamSum::per_example).collect::<Result<Vec<_>>>()?, loss_sum))
}
