//! Conv2d per-example weight gradients computed directly from the input and the backprop, without
//! unfolding patches: `G_i[(kh, kw, c), o] = sum_{y, x} X_i[s y + kh, s x + kw, c] B_i[o, y, x]`,
//! with `X_i` the padded input channels-last, and `|G_i|^2` (bias included) taken while each tile
//! of `G_i` is still in registers.
//!
//! The patch route ([`super::conv`]) writes `L k^2 C` values per example before its batched
//! product reads them back; for tanh-cnn's first layer (L 196, k 8, C 1) that is 3.3 times the
//! input itself, and on CPU the copy cost more than the product (about 1.4 against 1.0 ms for a
//! lot of 256 on 2 threads). Here a register tile of outputs x inputs accumulates over the L
//! positions straight from the input (AVX2: 16 x 4, 8 fused multiply-adds per 2 loads and 4
//! broadcasts; AVX-512: 16 x 8, 8 per load and 8 broadcasts), so the arithmetic is the product's
//! and nothing is written but `G`, the bias gradients and the norms.
//!
//! Only f32 on x86-64 CPUs with AVX2 and FMA takes this route ([`available`]); the caller falls
//! back to the patch route otherwise (f64, CUDA, other CPUs, O not a multiple of 8). The work is
//! split over the examples between `tch::get_num_threads()` threads of libtorch's own pool
//! ([`intra_op`]).
//!
//! With a group size k > 1 (the private GAN's design (b), whose privacy unit is a pair of rows),
//! the k consecutive examples of a group accumulate into the same register tile, so the kernel
//! writes the group's gradient `sum_{r in group} G_r` and its squared norm directly: no per-row
//! gradients (k times the memory) to write, sum and square afterwards.
//!
//! Checked against the patch route (unit tests here) and, inside whole f32
//! networks, against the ghost route (`tests/per_example.rs`).
use super::intra_op;
use crate::error::{Error, Result};
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// Outputs per register tile (two 8-lane vectors).
const O_TILE: usize = 16;
/// Inputs per register tile.
const D_TILE: usize = 4;

/// Whether [`per_example_gradients`] can run for the input `a` (B, C, H, W) and backprop `b`
/// (B, O, Ho, Wo): both f32 on the CPU, O a multiple of 8, `k C` a multiple of [`D_TILE`], and a
/// CPU with AVX2 and FMA.
pub(crate) fn available(a: &Tensor, b: &Tensor, kernel: i64) -> bool {
    let (outputs, channels) = match (a.size().as_slice(), b.size().as_slice()) {
        ([_, c, _, _], [_, o, _, _]) => (*o, *c),
        _ => return false,
    };
    a.device() == Device::Cpu
        && b.device() == Device::Cpu
        && a.kind() == Kind::Float
        && b.kind() == Kind::Float
        && outputs % 8 == 0
        && (kernel * channels) % D_TILE as i64 == 0
        && cpu_has_avx2_fma()
}

/// The route's name in the per-example engine's CPU-only fallback note.
pub(crate) const ROUTE: &str = "direct convolution kernel (f32, AVX2/FMA)";

/// Notes, once per process, that this CPU-only route was skipped because `a` is not on the CPU.
pub(crate) fn note_fallback(a: &Tensor) {
    super::note_cpu_only_fallback(ROUTE, a.device());
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx2_fma() -> bool {
    false
}

/// Whether the 16-lane kernel can run (checked once; `std` caches the CPU's features).
#[cfg(target_arch = "x86_64")]
fn cpu_has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The output buffers, shared by the threads that write disjoint parts of them.
struct Outputs {
    grads: *mut f32,
    squares: *mut f32,
    /// Null when the layer has no bias.
    bias: *mut f32,
}

// SAFETY: the pointers are only dereferenced through disjoint per-thread slices (see
// `Outputs::slices`).
unsafe impl Sync for Outputs {}

/// One thread's share of the outputs (per group).
struct Share<'a> {
    grads: &'a mut [f32],
    squares: &'a mut [f32],
    bias: Option<&'a mut [f32]>,
}

impl Outputs {
    /// Groups `range`'s gradients, squared norms and bias gradients.
    ///
    /// # Safety
    /// No two live results may cover the same group, and `range` must lie inside the groups.
    unsafe fn slices(&self, range: &Range<usize>, g_len: usize, o: usize) -> Share<'_> {
        let n = range.len();
        Share {
            grads: std::slice::from_raw_parts_mut(self.grads.add(range.start * g_len), n * g_len),
            squares: std::slice::from_raw_parts_mut(self.squares.add(range.start), n),
            bias: (!self.bias.is_null()).then(|| std::slice::from_raw_parts_mut(self.bias.add(range.start * o), n * o)),
        }
    }
}

/// The shapes one call works on.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Input height, width and channels, and the zero padding on each side.
    h: usize,
    w: usize,
    c: usize,
    p: usize,
    /// Padded input height and width.
    hp: usize,
    wp: usize,
    /// Kernel side and stride.
    k: usize,
    s: usize,
    /// Output height and width, output channels.
    ho: usize,
    wo: usize,
    o: usize,
}

impl Geometry {
    fn d(&self) -> usize {
        self.k * self.k * self.c
    }
    fn l(&self) -> usize {
        self.ho * self.wo
    }
}

/// What [`per_example_gradients`] returns, per group of `group` consecutive examples (per
/// example when `group` is 1); G = B / `group` groups.
pub(crate) struct DirectGradients {
    /// Per-group weight gradients (G, k k C, O), inputs in the patches' (kh, kw, c) order.
    pub grads: Tensor,
    /// Per-group bias gradients (G, O), when asked for.
    pub bias: Option<Tensor>,
    /// Each group's squared gradient norm over the weight and the bias (G,).
    pub squares: Tensor,
}

/// Per-example gradients of a square-kernel Conv2d from its input `a` (B, C, H, W) and the
/// backprop `b` (B, O, Ho, Wo): the weight's (B, k k C, O), inputs in the patches' (kh, kw, c)
/// order as [`super::conv::to_weight_layout`] expects (after a transpose), the bias's (B, O) when
/// `bias`, and the squared norms over both; summed over each group of `group` consecutive
/// examples (the group's gradient) when `group` > 1. Padding is applied per example inside the
/// kernel, and both inputs are read in place when already channels-last (as after channels-last
/// pooling).
///
/// # Errors
/// [`Error::InvalidParameter`] if [`available`] is false for these tensors, the shapes disagree, or
/// the batch is not a multiple of `group` (>= 1).
pub(crate) fn per_example_gradients(
    a: &Tensor,
    b: &Tensor,
    kernel: i64,
    stride: i64,
    padding: i64,
    bias: bool,
    group: usize,
) -> Result<DirectGradients> {
    let (xs, bs) = (a.size(), b.size());
    let shapes_ok = xs.len() == 4
        && bs.len() == 4
        && xs[0] == bs[0]
        && group >= 1
        && xs[0] % group as i64 == 0
        && kernel >= 1
        && stride >= 1
        && padding >= 0
        && bs[2] >= 1
        && bs[3] >= 1;
    let geometry = shapes_ok.then(|| {
        let (h, w, p) = (xs[2] as usize, xs[3] as usize, padding as usize);
        Geometry {
            h,
            w,
            c: xs[1] as usize,
            p,
            hp: h + 2 * p,
            wp: w + 2 * p,
            k: kernel as usize,
            s: stride as usize,
            ho: bs[2] as usize,
            wo: bs[3] as usize,
            o: bs[1] as usize,
        }
    });
    // The backprop must be exactly the convolution's output: every read then stays inside the
    // padded input, and no position is left out.
    let fits = geometry
        .is_some_and(|g| g.k <= g.hp.min(g.wp) && g.ho == (g.hp - g.k) / g.s + 1 && g.wo == (g.wp - g.k) / g.s + 1);
    let g = match geometry {
        Some(g) if fits && available(a, b, kernel) => g,
        _ => {
            return Err(Error::invalid(
                "direct conv gradients",
                format!(
                    "input {xs:?} {:?}, backprop {bs:?} {:?}, kernel {kernel}, stride {stride}, padding {padding}",
                    a.kind(),
                    b.kind()
                ),
                format!("need f32 CPU tensors (B, C, H, W) and (B, O, Ho, Wo), B a multiple of the group size {group}, O a multiple of 8, k C a multiple of 4, AVX2 and FMA, and (Ho, Wo) the convolution's output size"),
            ))
        }
    };
    let batch = xs[0] as usize;
    let groups = batch / group;
    // (B, H, W, C) and (B, L, O): free when the tensors are channels-last already (or C is 1).
    let x = a.f_permute([0, 2, 3, 1])?.f_contiguous()?;
    let bt = b.f_permute([0, 2, 3, 1])?.f_contiguous()?;
    let opts = (Kind::Float, Device::Cpu);
    let grads = Tensor::f_empty([groups as i64, g.d() as i64, bs[1]], opts)?;
    let squares = Tensor::f_empty([groups as i64], opts)?;
    let bias_grads = if bias { Some(Tensor::f_empty([groups as i64, bs[1]], opts)?) } else { None };
    let (x_len, b_len, g_len) = (g.h * g.w * g.c, g.l() * g.o, g.d() * g.o);
    // SAFETY: `x` and `bt` are contiguous f32 CPU tensors of exactly these element counts, alive
    // and unchanged until the end of this function.
    let (xv, bv): (&[f32], &[f32]) = unsafe {
        (
            std::slice::from_raw_parts(x.data_ptr() as *const f32, batch * x_len),
            std::slice::from_raw_parts(bt.data_ptr() as *const f32, batch * b_len),
        )
    };
    // The outputs are freshly allocated contiguous f32 tensors, written only through `Outputs`.
    let out = Outputs {
        grads: grads.data_ptr() as *mut f32,
        squares: squares.data_ptr() as *mut f32,
        bias: bias_grads.as_ref().map_or(std::ptr::null_mut(), |t| t.data_ptr() as *mut f32),
    };
    let work = |range: Range<usize>| {
        // SAFETY: `parallel_for` gives each thread a disjoint range of groups; the buffers
        // outlive the call.
        let share = unsafe { out.slices(&range, g_len, g.o) };
        let rows = range.start * group..range.end * group;
        examples(g, group, &xv[rows.start * x_len..rows.end * x_len], &bv[rows.start * b_len..rows.end * b_len], share);
    };
    intra_op::parallel_for(groups, tch::get_num_threads().max(1) as usize, &work);
    Ok(DirectGradients { grads, bias: bias_grads, squares })
}

/// Groups of `group` examples one after another: `x` (n k, H, W, C), `b` (n k, L, O) into `out`
/// (n groups).
fn examples(g: Geometry, group: usize, x: &[f32], b: &[f32], out: Share<'_>) {
    let kernel = kernel_for(g);
    let (x_len, b_len, g_len) = (g.h * g.w * g.c, g.l() * g.o, g.d() * g.o);
    // One padded example per group member: a zero border written once, the interior overwritten
    // per example.
    let mut padded: Vec<Vec<f32>> =
        (0..group).map(|_| if g.p > 0 { vec![0.0f32; g.hp * g.wp * g.c] } else { Vec::new() }).collect();
    let Share { grads, squares, mut bias } = out;
    for (i, sq) in squares.iter_mut().enumerate() {
        let rows = i * group..(i + 1) * group;
        let mut xs: Vec<&[f32]> = Vec::with_capacity(group);
        for (r, buffer) in rows.clone().zip(padded.iter_mut()) {
            let xr = &x[r * x_len..(r + 1) * x_len];
            if g.p > 0 {
                let (row, prow) = (g.w * g.c, g.wp * g.c);
                for (y, src) in xr.chunks_exact(row).enumerate() {
                    let start = (y + g.p) * prow + g.p * g.c;
                    buffer[start..start + row].copy_from_slice(src);
                }
                xs.push(buffer);
            } else {
                xs.push(xr);
            }
        }
        let bs: Vec<&[f32]> = rows.clone().map(|r| &b[r * b_len..(r + 1) * b_len]).collect();
        let gi = &mut grads[i * g_len..(i + 1) * g_len];
        debug_assert!(
            xs.iter().all(|xi| xi.len() == g.hp * g.wp * g.c)
                && bs.iter().all(|bi| bi.len() == g.l() * g.o)
                && gi.len() == g.d() * g.o
        );
        // SAFETY: `kernel_for` picked a kernel whose CPU features are present and whose shape
        // conditions hold for `g`; the slices have the lengths it reads and writes, and `g` was
        // checked by `per_example_gradients` (the backprop is exactly the convolution's output).
        *sq = unsafe { kernel(g, &xs, &bs, gi) };
        if let Some(bias) = bias.as_deref_mut() {
            let bias_i = &mut bias[i * g.o..(i + 1) * g.o];
            bias_i.fill(0.0);
            for bi in &bs {
                for position in bi.chunks_exact(g.o) {
                    for (acc, v) in bias_i.iter_mut().zip(position) {
                        *acc += v;
                    }
                }
            }
            *sq += bias_i.iter().map(|v| v * v).sum::<f32>();
        }
    }
}

/// One group's gradient into `gi` (D, O), the sum over its members of the gradient from the
/// member's padded input `xs[m]` (Hp, Wp, C) and backprop `bs[m]` (L, O); returns its squared
/// norm. A group of one is one example.
///
/// # Safety
/// Only a kernel from [`kernel_for`] for the same geometry, at least one member, and slices of
/// those lengths.
type Kernel = unsafe fn(Geometry, &[&[f32]], &[&[f32]], &mut [f32]) -> f32;

/// The widest kernel this CPU and these shapes allow, chosen once per call: AVX-512 for O a
/// multiple of 16 and `k C` of 8, AVX2 otherwise (which [`available`] has checked).
#[cfg(target_arch = "x86_64")]
fn kernel_for(g: Geometry) -> Kernel {
    if g.o.is_multiple_of(16) && (g.k * g.c).is_multiple_of(8) && cpu_has_avx512() {
        avx512::one_group
    } else {
        avx2::one_group
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn kernel_for(_: Geometry) -> Kernel {
    unreachable!("`available` is false off x86-64")
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Geometry, D_TILE, O_TILE};
    use std::arch::x86_64::*;

    /// A [`super::Kernel`].
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `xi` must hold Hp Wp C values, `bi` L O and `gi` D O, with
    /// `s (Ho - 1) + k <= Hp` and `s (Wo - 1) + k <= Wp` (checked by the caller), so that every
    /// pointer below stays inside its slice: the largest input offset read is
    /// `(s (Ho - 1) + k - 1) Wp C + s (Wo - 1) C + k C - 1 < Hp Wp C`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn one_group(g: Geometry, xs: &[&[f32]], bs: &[&[f32]], gi: &mut [f32]) -> f32 {
        let kc = g.k * g.c;
        let row = g.wp * g.c; // one padded input row, channels-last
        let mut sq = _mm256_setzero_ps();
        let mut o0 = 0;
        while o0 < g.o {
            // 16 outputs per tile, or 8 for the last one when O is an odd multiple of 8.
            let wide = g.o - o0 >= O_TILE;
            for kh in 0..g.k {
                let mut j = 0; // offset within the (kw, c) run of kernel row kh
                while j < kc {
                    let acc = group_tile(g, xs, bs, kh * row + j, o0, wide);
                    for (t, a) in acc.iter().enumerate() {
                        // G is (D, O): this column's outputs are contiguous.
                        let out = gi[(kh * kc + j + t) * g.o + o0..].as_mut_ptr();
                        _mm256_storeu_ps(out, a[0]);
                        sq = _mm256_fmadd_ps(a[0], a[0], sq);
                        if wide {
                            _mm256_storeu_ps(out.add(8), a[1]);
                            sq = _mm256_fmadd_ps(a[1], a[1], sq);
                        }
                    }
                    j += D_TILE;
                }
            }
            o0 += if wide { O_TILE } else { 8 };
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), sq);
        lanes.iter().sum()
    }

    /// The group's tile at input offset `x_offset` and output `o0` (16 outputs if `wide`, else
    /// 8): the first member's, then each further member's added.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_tile(
        g: Geometry,
        xs: &[&[f32]],
        bs: &[&[f32]],
        x_offset: usize,
        o0: usize,
        wide: bool,
    ) -> [[__m256; 2]; D_TILE] {
        let mut acc = [[_mm256_setzero_ps(); 2]; D_TILE];
        for (m, (x, b)) in xs.iter().zip(bs).enumerate() {
            let (x, b) = (x.as_ptr().add(x_offset), b.as_ptr().add(o0));
            let one = if wide { tile16(g, x, b) } else { tile8(g, x, b) };
            if m == 0 {
                acc = one;
                continue;
            }
            for (a, t) in acc.iter_mut().zip(one) {
                a[0] = _mm256_add_ps(a[0], t[0]);
                a[1] = _mm256_add_ps(a[1], t[1]);
            }
        }
        acc
    }

    /// `sum_{y, x} b[y, x, 0..16] x[s y, s x, 0..4]` over the output positions, as 4 columns of 16.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile16(g: Geometry, x: *const f32, b: *const f32) -> [[__m256; 2]; D_TILE] {
        let (mut a0, mut a1, mut a2, mut a3) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut a4, mut a5, mut a6, mut a7) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let (row, step) = (g.wp * g.c, g.s * g.c);
        for y in 0..g.ho {
            let mut xp = x.add(g.s * y * row);
            let mut bp = b.add(y * g.wo * g.o);
            for _ in 0..g.wo {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                let x0 = _mm256_broadcast_ss(&*xp);
                a0 = _mm256_fmadd_ps(b0, x0, a0);
                a1 = _mm256_fmadd_ps(b1, x0, a1);
                let x1 = _mm256_broadcast_ss(&*xp.add(1));
                a2 = _mm256_fmadd_ps(b0, x1, a2);
                a3 = _mm256_fmadd_ps(b1, x1, a3);
                let x2 = _mm256_broadcast_ss(&*xp.add(2));
                a4 = _mm256_fmadd_ps(b0, x2, a4);
                a5 = _mm256_fmadd_ps(b1, x2, a5);
                let x3 = _mm256_broadcast_ss(&*xp.add(3));
                a6 = _mm256_fmadd_ps(b0, x3, a6);
                a7 = _mm256_fmadd_ps(b1, x3, a7);
                xp = xp.add(step);
                bp = bp.add(g.o);
            }
        }
        [[a0, a1], [a2, a3], [a4, a5], [a6, a7]]
    }

    /// As [`tile16`] for 8 outputs (the upper 8 of each column are zero).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile8(g: Geometry, x: *const f32, b: *const f32) -> [[__m256; 2]; D_TILE] {
        let (mut a0, mut a1, mut a2, mut a3) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let (row, step) = (g.wp * g.c, g.s * g.c);
        for y in 0..g.ho {
            let mut xp = x.add(g.s * y * row);
            let mut bp = b.add(y * g.wo * g.o);
            for _ in 0..g.wo {
                let b0 = _mm256_loadu_ps(bp);
                a0 = _mm256_fmadd_ps(b0, _mm256_broadcast_ss(&*xp), a0);
                a1 = _mm256_fmadd_ps(b0, _mm256_broadcast_ss(&*xp.add(1)), a1);
                a2 = _mm256_fmadd_ps(b0, _mm256_broadcast_ss(&*xp.add(2)), a2);
                a3 = _mm256_fmadd_ps(b0, _mm256_broadcast_ss(&*xp.add(3)), a3);
                xp = xp.add(step);
                bp = bp.add(g.o);
            }
        }
        let z = _mm256_setzero_ps();
        [[a0, z], [a1, z], [a2, z], [a3, z]]
    }
}

/// The same tiles with 16-lane vectors: 16 outputs x 8 inputs per tile (one load and 8
/// broadcasts feed 8 fused multiply-adds), for O a multiple of 16 and `k C` a multiple of 8.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Geometry;
    use std::arch::x86_64::*;

    /// A [`super::Kernel`].
    ///
    /// # Safety
    /// AVX-512F must be available, `O % 16 == 0`, `k C % 8 == 0`, and the slices and shapes as
    /// for [`super::avx2::one_group`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn one_group(g: Geometry, xs: &[&[f32]], bs: &[&[f32]], gi: &mut [f32]) -> f32 {
        let kc = g.k * g.c;
        let row = g.wp * g.c;
        let mut sq = _mm512_setzero_ps();
        for o0 in (0..g.o).step_by(16) {
            for kh in 0..g.k {
                for j in (0..kc).step_by(8) {
                    // The group's tile: the first member's, then each further member's added.
                    let mut acc = tile(g, xs[0].as_ptr().add(kh * row + j), bs[0].as_ptr().add(o0));
                    for m in 1..xs.len() {
                        let more = tile(g, xs[m].as_ptr().add(kh * row + j), bs[m].as_ptr().add(o0));
                        for (a, b) in acc.iter_mut().zip(more) {
                            *a = _mm512_add_ps(*a, b);
                        }
                    }
                    for (t, a) in acc.iter().enumerate() {
                        let out = gi[(kh * kc + j + t) * g.o + o0..].as_mut_ptr();
                        _mm512_storeu_ps(out, *a);
                        sq = _mm512_fmadd_ps(*a, *a, sq);
                    }
                }
            }
        }
        _mm512_reduce_add_ps(sq)
    }

    /// `sum_{y, x} b[y, x, 0..16] x[s y, s x, 0..8]` over the output positions, as 8 columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile(g: Geometry, x: *const f32, b: *const f32) -> [__m512; 8] {
        let z = _mm512_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5, mut a6, mut a7) = (z, z, z, z, z, z, z, z);
        let (row, step) = (g.wp * g.c, g.s * g.c);
        for y in 0..g.ho {
            let mut xp = x.add(g.s * y * row);
            let mut bp = b.add(y * g.wo * g.o);
            for _ in 0..g.wo {
                let bv = _mm512_loadu_ps(bp);
                a0 = _mm512_fmadd_ps(bv, _mm512_set1_ps(*xp), a0);
                a1 = _mm512_fmadd_ps(bv, _mm512_set1_ps(*xp.add(1)), a1);
                a2 = _mm512_fmadd_ps(bv, _mm512_set1_ps(*xp.add(2)), a2);
                a3 = _mm512_fmadd_ps(bv, _mm512_set1_ps(*xp.add(3)), a3);
                a4 = _mm512_fmadd_ps(bv, _mm512_set1_ps(*xp.add(4)), a4);
                a5 = _mm512_fmadd_ps(bv, _mm512_set1_ps(*xp.add(5)), a5);
                a6 = _mm512_fmadd_ps(bv, _mm512_set1_ps(*xp.add(6)), a6);
                a7 = _mm512_fmadd_ps(bv, _mm512_set1_ps(*xp.add(7)), a7);
                xp = xp.add(step);
                bp = bp.add(g.o);
            }
        }
        [a0, a1, a2, a3, a4, a5, a6, a7]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::per_example::conv::patches;

    /// The patch route's per-example gradients (B, O, D) in the same (kh, kw, c) order.
    fn reference(a: &Tensor, b: &Tensor, kernel: i64, stride: i64, padding: i64) -> Tensor {
        let batch = a.size()[0];
        let cols = patches(&a.to_kind(Kind::Double), kernel, stride, padding).unwrap();
        let o = b.size()[1];
        b.to_kind(Kind::Double).reshape([batch, o, -1]).bmm(&cols)
    }

    #[test]
    fn equals_the_patch_route() {
        if !cpu_has_avx2_fma() {
            eprintln!("skipped: no AVX2/FMA on this CPU");
            return;
        }
        // (B, C, H, O, kernel, stride, padding): tanh-cnn's two layers, an O of 8 and of 24
        // (an 8-wide last tile), stride 1 and 3, channels-last backprops.
        for (batch, c, h, o, k, s, p) in [
            (5, 1, 28, 16, 8, 2, 3),
            (3, 16, 13, 32, 4, 2, 0),
            (4, 4, 9, 8, 3, 1, 1),
            (2, 2, 11, 24, 2, 3, 2),
            (7, 3, 6, 40, 4, 1, 0),
            (3, 16, 9, 16, 1, 1, 1),
            (3, 16, 9, 16, 3, 2, 2),
        ] {
            let ho = (h + 2 * p - k) / s + 1;
            // Seeded under the generator's lock: other tests of this process draw meanwhile.
            let (a, mut b) = crate::torch_rng::seeded(batch, || {
                (
                    Tensor::randn([batch, c, h, h], (Kind::Float, Device::Cpu)),
                    Tensor::randn([batch, o, ho, ho], (Kind::Float, Device::Cpu)),
                )
            });
            if o == 32 {
                b = b.contiguous().permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
            }
            assert!(available(&a, &b, k), "case {batch} {c} {h} {o} {k} {s} {p}");
            // The input channels-last in one case, as after channels-last pooling.
            let a_in = if c == 16 {
                a.contiguous().permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
            } else {
                a.shallow_clone()
            };
            let got = per_example_gradients(&a_in, &b, k, s, p, true, 1).unwrap();
            let want = reference(&a, &b, k, s, p);
            let diff = (got.grads.transpose(1, 2).to_kind(Kind::Double) - &want).abs().max().double_value(&[]);
            let scale = want.abs().max().double_value(&[]);
            assert!(diff <= 1e-5 * scale, "case {batch} {c} {h} {o} {k} {s} {p}: {diff} vs {scale}");
            let want_bias = b.to_kind(Kind::Double).sum_dim_intlist([2i64, 3].as_slice(), false, None);
            let bias = got.bias.expect("bias asked for").to_kind(Kind::Double);
            assert!(bias.allclose(&want_bias, 1e-5, 1e-4, false), "case {batch} {c} {h} {o} {k} {s} {p}: bias");
            let want_sq = want.square().sum_dim_intlist([1i64, 2].as_slice(), false, None)
                + want_bias.square().sum_dim_intlist(1, false, None);
            let rel = ((got.squares.to_kind(Kind::Double) - &want_sq).abs() / &want_sq).max().double_value(&[]);
            assert!(rel <= 1e-5, "case {batch} {c} {h} {o} {k} {s} {p}: squares off by {rel}");
        }
    }

    #[test]
    fn groups_sum_their_members() {
        if !cpu_has_avx2_fma() {
            eprintln!("skipped: no AVX2/FMA on this CPU");
            return;
        }
        // The GAN discriminator's second layer (16 -> 32 here, AVX-512 tiles where present), an
        // 8-wide last tile (AVX2), groups of 2 and 3.
        for (batch, c, h, o, k, s, p, group) in
            [(6, 16, 14, 32, 4, 2, 1, 2), (6, 2, 9, 24, 2, 1, 0, 3), (4, 1, 28, 16, 4, 2, 1, 2)]
        {
            let ho = (h + 2 * p - k) / s + 1;
            let (a, b) = crate::torch_rng::seeded(batch + group, || {
                (
                    Tensor::randn([batch, c, h, h], (Kind::Float, Device::Cpu)),
                    Tensor::randn([batch, o, ho, ho], (Kind::Float, Device::Cpu)),
                )
            });
            let got = per_example_gradients(&a, &b, k, s, p, true, group as usize).unwrap();
            let groups = batch / group;
            let want = reference(&a, &b, k, s, p); // (B, O, D)
            let want = want.reshape([groups, group, o, -1]).sum_dim_intlist(1, false, None);
            let diff = (got.grads.transpose(1, 2).to_kind(Kind::Double) - &want).abs().max().double_value(&[]);
            let scale = want.abs().max().double_value(&[]);
            assert!(diff <= 1e-5 * scale, "case {batch} {c} {h} {o} {k} {s} {p} / {group}: {diff} vs {scale}");
            let want_bias = b
                .to_kind(Kind::Double)
                .sum_dim_intlist([2i64, 3].as_slice(), false, None)
                .reshape([groups, group, o])
                .sum_dim_intlist(1, false, None);
            let bias = got.bias.expect("bias asked for").to_kind(Kind::Double);
            assert!(bias.allclose(&want_bias, 1e-5, 1e-4, false), "case {batch} / {group}: bias");
            let want_sq = want.square().sum_dim_intlist([1i64, 2].as_slice(), false, None)
                + want_bias.square().sum_dim_intlist(1, false, None);
            let rel = ((got.squares.to_kind(Kind::Double) - &want_sq).abs() / &want_sq).max().double_value(&[]);
            assert!(rel <= 1e-5, "case {batch} / {group}: squares off by {rel}");
        }
        // A batch that the group size does not divide is refused.
        let a = Tensor::zeros([5, 16, 14, 14], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([5, 32, 7, 7], (Kind::Float, Device::Cpu));
        assert!(per_example_gradients(&a, &b, 4, 2, 1, true, 2).is_err());
        assert!(per_example_gradients(&a, &b, 4, 2, 1, true, 0).is_err());
    }

    #[test]
    fn refuses_what_it_cannot_compute() {
        let a = Tensor::ones([2, 1, 8, 8], (Kind::Double, Device::Cpu));
        let b = Tensor::ones([2, 8, 3, 3], (Kind::Double, Device::Cpu));
        assert!(!available(&a, &b, 4));
        assert!(!available(&a.to_kind(Kind::Float), &b, 4), "f64 backprop");
        assert!(per_example_gradients(&a, &b, 4, 2, 0, false, 1).is_err());
        // O not a multiple of 8.
        let a = a.to_kind(Kind::Float);
        let b = Tensor::ones([2, 6, 3, 3], (Kind::Float, Device::Cpu));
        assert!(per_example_gradients(&a, &b, 4, 2, 0, false, 1).is_err());
        // A backprop that is not the convolution's output: larger, or smaller, than it.
        let b = Tensor::ones([2, 8, 5, 5], (Kind::Float, Device::Cpu));
        assert!(per_example_gradients(&a, &b, 4, 2, 0, false, 1).is_err());
        assert_eq!(per_example_gradients(&a, &b, 4, 2, 2, false, 1).is_ok(), cpu_has_avx2_fma());
        assert!(per_example_gradients(&a, &b, 4, 1, 2, false, 1).is_err());
        // Batch sizes that disagree.
        let b = Tensor::ones([3, 8, 3, 3], (Kind::Float, Device::Cpu));
        assert!(per_example_gradients(&a, &b, 4, 2, 0, false, 1).is_err());
    }
}
