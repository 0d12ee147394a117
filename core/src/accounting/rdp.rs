//! Rényi DP (the moments accountant) of the Poisson-subsampled Gaussian mechanism, add/remove
//! adjacency (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism", below MTZ).
//!
//! The f64 path here is the fast one; [`crate::accounting::exact`] is the MPFR oracle it is tested
//! against (`tests/accounting_rdp.rs`). Proofs:
//! [`rdp_integer_orders.md`](../../../proofs/accounting/rdp_integer_orders.md),
//! [`rdp_fractional_orders.md`](../../../proofs/accounting/rdp_fractional_orders.md).
//!
//! With `s = 1/sigma^2`, `A_alpha = E_{z ~ N(0, sigma^2)}[(1 - q + q e^{(2z - 1)/(2 sigma^2)})^alpha]`
//! and the per-step RDP is `ln(A_alpha) / (alpha - 1)`.
use crate::accounting::conversion::{self, Conversion};
use crate::accounting::{validate_delta, validate_phases, Phase};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Number of terms of the Cohen–Rodriguez Villegas–Zagier acceleration used for the alternating
/// tails of the fractional-order series. With `Sigma_n` its accelerated sum and `d = T_n(3)`, the
/// tail `S` lies in `[Sigma_n d/(d+1), Sigma_n d/(d-1)]` (`T_22(3) > 5e16`); the end on the safe side
/// is used. Fewer terms are not enough: where the tail of A0 and that of the binomial weights nearly
/// cancel, their relative error is amplified by up to sigma^2 (n = 16 failed the oracle test at
/// sigma = 50, q = 1e-5, alpha = 1.01).
pub const TAIL_TERMS: usize = 22;

/// Base relative safety margin added to every f64 RDP value. The full margin is
/// `F64_RDP_MARGIN + f64::EPSILON * cond`, where `cond = (|positive| + |negative|) / |A - 1|` is the
/// condition number of the final cancellation in the fractional-order sum (1 for integer orders).
/// This margin is empirical (the raw f64 error measured against the MPFR oracle stays below
/// it over q in [1e-5, 1], sigma in [0.3, 50], orders in [1.01, 256]: `tests/accounting_rdp.rs`);
/// the rigorous bound is [`crate::accounting::exact`]'s.
pub const F64_RDP_MARGIN: f64 = 1e-11;

/// The default Rényi orders: the union of Opacus' `DEFAULT_ALPHAS` (`1 + x/10` for x in 1..100,
/// then 12..=63), Google `dp_accounting` 0.6's `DEFAULT_RDP_ORDERS` (`1 + x/10`, 11..=63, 128, 256,
/// 512, 1024) and its earlier defaults (1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5..=63, 128,
/// 256, 512), sorted. Each `1 + x/10` is computed exactly as the peers compute it, so the orders are
/// bit-identical to theirs.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend([1.25, 1.75, 2.25]);
    orders.extend((11..=63).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders.sort_by(f64::total_cmp);
    orders.dedup();
    orders
}

pub(crate) fn validate_order(order: f64) -> Result<()> {
    if order > 1.0 && order.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid("Rényi order alpha", order, "must be a finite number > 1"))
    }
}

/// Per-step RDP of the Poisson-subsampled Gaussian mechanism at one order.
///
/// Integer orders: the exact binomial expansion, summed in log space in a cancellation-free form
/// (`A - 1 = sum_{k>=2} C(a,k) q^k (1-q)^{a-k} expm1(k(k-1)/(2 sigma^2))`). Fractional orders: the MTZ
/// series split at `z0 = sigma^2 ln(1/q - 1) + 1/2`, whose alternating tails are summed with a
/// convergence acceleration that carries a rigorous error bound (no arbitrary stopping threshold).
/// `q = 1` gives exactly `order / (2 sigma^2)`.
///
/// # Proof definition
/// Returns a value at least the Rényi divergence of order `order` between the mechanism's outputs
/// on add/remove-adjacent datasets (both directions), up to f64 rounding that
/// [`F64_RDP_MARGIN`] covers, or an error. The oracle [`crate::accounting::exact`] returns a
/// rigorous enclosure of the same quantity. Proofs: `proofs/accounting/rdp_integer_orders.md`,
/// `proofs/accounting/rdp_fractional_orders.md`.
///
/// # Errors
/// [`Error::InvalidParameter`] for q outside (0, 1], sigma not finite and > 0, or an order that is
/// not finite and > 1; [`Error::Numerical`] if the sum cannot be evaluated (e.g. sigma so small that
/// every term overflows to a NaN).
///
/// # Examples
/// ```
/// use dpaudit_core::accounting::rdp::rdp_subsampled_gaussian;
/// assert_eq!(rdp_subsampled_gaussian(1.0, 2.0, 8.0).unwrap(), 1.0);
/// ```
pub fn rdp_subsampled_gaussian(q: f64, sigma: f64, order: f64) -> Result<f64> {
    validate_mechanism(q, sigma, order)?;
    rdp_unchecked(q, sigma, order)
}

/// Checks one step's parameters and a Rényi order (shared with the MPFR oracle).
pub(crate) fn validate_mechanism(q: f64, sigma: f64, order: f64) -> Result<()> {
    Phase { sampling_rate: q, noise_multiplier: sigma, steps: 1 }.validate()?;
    validate_order(order)
}

/// [`rdp_subsampled_gaussian`] without validation.
pub(crate) fn rdp_unchecked(q: f64, sigma: f64, order: f64) -> Result<f64> {
    if q == 1.0 {
        // The Gaussian mechanism: D_alpha(N(1, s^2) || N(0, s^2)) = alpha / (2 s^2), exactly as the
        // peers compute it (no margin: this is the closed form, one multiplication and division).
        return Ok(order / (2.0 * sigma * sigma));
    }
    let (log_a, cond) = if order.fract() == 0.0 && order <= 1e6 {
        (log_a_integer(q, sigma, order as u64), 1.0)
    } else {
        log_a_fractional(q, sigma, order)?
    };
    let rdp = log_a / (order - 1.0) * (1.0 + F64_RDP_MARGIN + f64::EPSILON * cond);
    if rdp.is_nan() || rdp < 0.0 {
        return Err(Error::numerical(
            "RDP of the subsampled Gaussian",
            format!("q = {q}, sigma = {sigma}, order = {order} gave {rdp}"),
        ));
    }
    Ok(rdp)
}

/// Streaming log-sum-exp of positive terms given by their logarithms.
#[derive(Clone, Copy)]
struct LogSum {
    max: f64,
    sum: f64,
}

impl LogSum {
    const EMPTY: LogSum = LogSum { max: f64::NEG_INFINITY, sum: 0.0 };

    fn add(&mut self, log_term: f64) {
        if log_term == f64::NEG_INFINITY {
            return;
        }
        if log_term <= self.max {
            self.sum += (log_term - self.max).exp();
        } else {
            self.sum = self.sum * (self.max - log_term).exp() + 1.0;
            self.max = log_term;
        }
    }

    fn ln(self) -> f64 {
        if self.sum == 0.0 {
            f64::NEG_INFINITY
        } else {
            self.max + self.sum.ln()
        }
    }
}

/// `ln(expm1(x))` for `x > 0`.
fn ln_expm1(x: f64) -> f64 {
    if x > 40.0 {
        x + (-(-x).exp()).ln_1p()
    } else {
        x.exp_m1().ln()
    }
}

/// `ln(1 + e^l)`.
fn ln1p_exp(l: f64) -> f64 {
    if l > 0.0 {
        l + (-l).exp().ln_1p()
    } else {
        l.exp().ln_1p()
    }
}

/// `ln A_alpha` for an integer order `a >= 2` and `q < 1`: `ln(1 + (A - 1))` with
/// `A - 1 = sum_{k=2}^{a} C(a,k) q^k (1-q)^{a-k} expm1(k(k-1) s / 2)`, all terms positive.
fn log_a_integer(q: f64, sigma: f64, a: u64) -> f64 {
    let lq = q.ln();
    let l1q = (-q).ln_1p();
    let half_s = 0.5 / (sigma * sigma);
    let af = a as f64;
    let mut log_binom = af.ln(); // ln C(a, 1)
    let mut acc = LogSum::EMPTY;
    for k in 2..=a {
        let kf = k as f64;
        log_binom += ((af - kf + 1.0) / kf).ln();
        acc.add(log_binom + kf * lq + (af - kf) * l1q + ln_expm1(kf * (kf - 1.0) * half_s));
    }
    ln1p_exp(acc.ln())
}

/// `ln(erfc(x) / 2)`, accurate in relative terms for large positive `x`.
pub(crate) fn ln_half_erfc(x: f64) -> f64 {
    if x < 26.0 {
        (0.5 * libm::erfc(x)).ln()
    } else {
        // erfc(x) = e^{-x^2}/(x sqrt(pi)) (1 - 1/(2x^2) + 3/(2x^2)^2 - 15/(2x^2)^3 + 105/(2x^2)^4
        // - 945/(2x^2)^5 + R), |R| <= 10395/(2x^2)^6 < 2e-15 for x >= 26 (the asymptotic series
        // of erfc encloses its value).
        let t = 1.0 / (2.0 * x * x);
        let series = 1.0 - t * (1.0 - 3.0 * t * (1.0 - 5.0 * t * (1.0 - 7.0 * t * (1.0 - 9.0 * t))));
        -x * x - (x * std::f64::consts::PI.sqrt()).ln() + series.ln() - std::f64::consts::LN_2
    }
}

/// The Cohen–Rodriguez Villegas–Zagier (2000) Algorithm 1 for `sum_{k>=0} (-1)^k a_k` where
/// `(a_k)` is a Hausdorff moment sequence, from the logarithms of its first [`TAIL_TERMS`] terms.
/// Returns `ln` of an upper (`upper = true`) or lower bound on the sum `S`, from the accelerated
/// partial sum `S_n`, which satisfies `|S - S_n| <= S / d`, `d = T_n(3)`.
fn ln_alternating_tail(log_terms: &[f64; TAIL_TERMS], upper: bool) -> f64 {
    let n = TAIL_TERMS as f64;
    let reference = log_terms[0];
    let mut d = (3.0 + 8f64.sqrt()).powi(TAIL_TERMS as i32);
    d = (d + 1.0 / d) / 2.0;
    let mut b = -1.0;
    let mut c = -d;
    let mut s = 0.0;
    for (k, &l) in log_terms.iter().enumerate() {
        let kf = k as f64;
        c = b - c;
        s += c * (l - reference).exp();
        b = (kf + n) * (kf - n) * b / ((kf + 0.5) * (kf + 1.0));
    }
    if s <= 0.0 {
        f64::NEG_INFINITY
    } else {
        // S <= S_n d/(d-1) (upper) and S >= S_n d/(d+1) (lower).
        let safe = if upper { d / (d - 1.0) } else { d / (d + 1.0) };
        reference + (s / d * safe).ln()
    }
}

/// `ln A_alpha` for a fractional order by the MTZ series (see the module and the proof file), and
/// the condition number of its final cancellation.
// `i` is the binomial index of the series' terms, not only a position in `log_binom`.
#[allow(clippy::needless_range_loop)]
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> Result<(f64, f64)> {
    let lq = q.ln();
    let l1q = (-q).ln_1p();
    let half_s = 0.5 / (sigma * sigma);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let inv_scale = 1.0 / (std::f64::consts::SQRT_2 * sigma);
    let head = alpha.ceil() as usize; // n0: terms 0..n0 are positive, the rest alternate
    let c = |x: f64| x * (x - 1.0) * half_s;

    // The binomial coefficients |C(alpha, i)| by their ratio recurrence, in log space.
    let total = head + TAIL_TERMS;
    let mut log_binom = Vec::with_capacity(total);
    let mut lb = 0.0;
    for i in 0..total {
        log_binom.push(lb);
        let fi = i as f64;
        lb += ((alpha - fi) / (fi + 1.0)).abs().ln();
    }
    // A0 terms: |C(a,i)| q^i (1-q)^{a-i} e^{c(i)} Phi((z0 - i)/sigma); A1 terms: |C(a,i)| q^{a-i}
    // (1-q)^i e^{c(a-i)} Phi((a - i - z0)/sigma).
    let log_a0_term = |i: usize| {
        let fi = i as f64;
        log_binom[i] + fi * lq + (alpha - fi) * l1q + c(fi) + ln_half_erfc((fi - z0) * inv_scale)
    };
    let log_a1_term = |i: usize| {
        let fi = i as f64;
        let j = alpha - fi;
        log_binom[i] + j * lq + fi * l1q + c(j) + ln_half_erfc((z0 - j) * inv_scale)
    };
    let tail = |f: &dyn Fn(usize) -> f64, upper: bool| {
        let mut logs = [0.0; TAIL_TERMS];
        for (m, l) in logs.iter_mut().enumerate() {
            *l = f(head + m);
        }
        ln_alternating_tail(&logs, upper)
    };

    let mut positive = LogSum::EMPTY;
    for i in 0..head {
        positive.add(log_a1_term(i));
    }
    positive.add(tail(&log_a1_term, true));
    positive.add(tail(&log_a0_term, true));

    if q > 0.5 {
        // A = A0 + A1 directly (A - 1 is not small here: no cancellation against 1 to avoid).
        for i in 0..head {
            positive.add(log_a0_term(i));
        }
        let log_a = positive.ln();
        // ln A from A ~ 1 loses A/(A - 1) in relative terms.
        if !(log_a > 0.0) {
            return Err(Error::numerical(
                "fractional-order RDP series",
                format!("ln A came out {log_a} <= 0 at q = {q}, sigma = {sigma}, alpha = {alpha}"),
            ));
        }
        let cond = 1.0 / -(-log_a).exp_m1();
        return Ok((log_a, cond));
    }
    // q <= 1/2: sum_i C(a,i) q^i (1-q)^{a-i} = 1, so the head of A0 minus 1 is
    // sum_{i<n0} w_i expm1(c_i) - sum_{i<n0} w_i e^{c_i} Phi((i - z0)/sigma) - W with W the
    // alternating tail of the w_i: A - 1 = positive - negative, with no O(1) cancellation.
    let mut negative = LogSum::EMPTY;
    for i in 0..head {
        let fi = i as f64;
        let log_w = log_binom[i] + fi * lq + (alpha - fi) * l1q;
        if i >= 2 {
            positive.add(log_w + ln_expm1(c(fi)));
        }
        negative.add(log_w + c(fi) + ln_half_erfc((z0 - fi) * inv_scale));
    }
    negative.add(tail(
        &|i: usize| {
            let fi = i as f64;
            log_binom[i] + fi * lq + (alpha - fi) * l1q
        },
        false,
    ));
    let (lp, ln_) = (positive.ln(), negative.ln());
    if !(lp > ln_) {
        return Err(Error::numerical("fractional-order RDP series", format!(
            "A - 1 came out <= 0 (ln positive part {lp}, ln negative part {ln_}) at q = {q}, sigma = {sigma}, alpha = {alpha}"
        )));
    }
    let ratio = (ln_ - lp).exp();
    let log_a_minus_1 = lp + (-ratio).ln_1p();
    let cond = (1.0 + ratio) / (1.0 - ratio);
    Ok((ln1p_exp(log_a_minus_1), cond))
}

/// RDP of a composition of phases at one order: `sum_p steps_p * rdp(q_p, sigma_p, order)`
/// (Mironov 2017, Proposition 1: RDP composes additively at each order).
///
/// # Proof definition
/// Returns an upper bound (up to f64 rounding covered by [`F64_RDP_MARGIN`]) on the Rényi
/// divergence of order `order` of the composition, or an error.
///
/// # Errors
/// As [`rdp_subsampled_gaussian`], and for an empty list of phases.
pub fn rdp_composed(phases: &[Phase], order: f64) -> Result<f64> {
    validate_phases(phases)?;
    validate_order(order)?;
    composed_unchecked(phases, order)
}

fn composed_unchecked(phases: &[Phase], order: f64) -> Result<f64> {
    let mut total = 0.0;
    for p in phases {
        if p.steps > 0 {
            total += p.steps as f64 * rdp_unchecked(p.sampling_rate, p.noise_multiplier, order)?;
        }
    }
    Ok(total)
}

/// An epsilon from the RDP accountant, with how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RdpEpsilon {
    /// The epsilon (at least the true one of the composition, for the given delta).
    pub epsilon: f64,
    /// The Rényi order that gave it.
    pub order: f64,
    /// The composed RDP at that order.
    pub rdp: f64,
    /// Which conversion gave it.
    pub conversion: Conversion,
}

/// The RDP accountant over a fixed, sorted grid of orders.
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        RdpAccountant { orders: default_orders() }
    }
}

impl RdpAccountant {
    /// An accountant over the given orders (sorted and deduplicated here).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an empty list or an order that is not finite and > 1.
    pub fn with_orders(orders: &[f64]) -> Result<Self> {
        if orders.is_empty() {
            return Err(Error::invalid("Rényi orders", "[]", "at least one order is needed"));
        }
        orders.iter().try_for_each(|&o| validate_order(o))?;
        let mut orders = orders.to_vec();
        orders.sort_by(f64::total_cmp);
        orders.dedup();
        Ok(RdpAccountant { orders })
    }

    /// The orders, sorted.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Epsilon of a composition for `delta`, minimised over the accountant's orders by a bracketing
    /// search: a binary search on the slope over the integer orders (cheap: no erfc), then over the
    /// stretch of the grid between the best integer's integer neighbours (where the fractional
    /// orders are). Any order gives a valid bound, so the search affects tightness only, never
    /// validity; in practice `eps(alpha)` is unimodal and the search finds the grid minimum
    /// (checked against [`RdpAccountant::epsilon_all_orders`] in the tests).
    ///
    /// # Proof definition
    /// Returns an `epsilon` such that the composition of `phases` is `(epsilon, delta)`-DP (up to the
    /// f64 rounding covered by [`F64_RDP_MARGIN`]), or an error.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid phases or delta; [`Error::Numerical`] as
    /// [`rdp_subsampled_gaussian`].
    pub fn epsilon(&self, phases: &[Phase], delta: f64) -> Result<RdpEpsilon> {
        validate_phases(phases)?;
        validate_delta(delta)?;
        let orders = &self.orders;
        let mut memo: Vec<Option<RdpEpsilon>> = vec![None; orders.len()];
        let mut eval = |i: usize| -> Result<RdpEpsilon> {
            if let Some(e) = memo[i] {
                return Ok(e);
            }
            let e = epsilon_at(phases, orders[i], delta)?;
            memo[i] = Some(e);
            Ok(e)
        };
        // Integer orders are cheap (no erfc): search them first, then only the stretch of the grid
        // between the best integer's integer neighbours, where the fractional orders are.
        let integers: Vec<usize> = (0..orders.len()).filter(|&i| orders[i].fract() == 0.0).collect();
        let (lo, hi) = if integers.len() >= 2 {
            let best = slope_search(0, integers.len() - 1, |k| eval(integers[k]))?;
            let lo = if best == 0 { 0 } else { integers[best - 1] };
            let hi = if best + 1 == integers.len() { orders.len() - 1 } else { integers[best + 1] };
            (lo, hi)
        } else {
            (0, orders.len() - 1)
        };
        let best = slope_search(lo, hi, &mut eval)?;
        eval(best)
    }

    /// As [`RdpAccountant::epsilon`], but evaluating every order (slower; the reference for the
    /// search).
    ///
    /// # Errors
    /// As [`RdpAccountant::epsilon`].
    pub fn epsilon_all_orders(&self, phases: &[Phase], delta: f64) -> Result<RdpEpsilon> {
        validate_phases(phases)?;
        validate_delta(delta)?;
        let mut best: Option<RdpEpsilon> = None;
        for &order in &self.orders {
            let e = epsilon_at(phases, order, delta)?;
            if best.is_none_or(|b| e.epsilon < b.epsilon) {
                best = Some(e);
            }
        }
        Ok(best.expect("orders is never empty"))
    }
}

/// Binary search on the slope over `lo..=hi`: the index of a local minimum of `f` (the minimum if
/// `f` is unimodal there). Any index is a valid answer; this only makes it tight.
fn slope_search(mut lo: usize, mut hi: usize, mut f: impl FnMut(usize) -> Result<RdpEpsilon>) -> Result<usize> {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if f(mid)?.epsilon <= f(mid + 1)?.epsilon {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

fn epsilon_at(phases: &[Phase], order: f64, delta: f64) -> Result<RdpEpsilon> {
    let rdp = composed_unchecked(phases, order)?;
    let (epsilon, conversion) = conversion::tighter(rdp, order, delta);
    Ok(RdpEpsilon { epsilon, order, rdp, conversion })
}

/// Epsilon of a composition with the default orders ([`RdpAccountant::default`]).
///
/// # Proof definition
/// As [`RdpAccountant::epsilon`].
///
/// # Errors
/// As [`RdpAccountant::epsilon`].
pub fn epsilon(phases: &[Phase], delta: f64) -> Result<RdpEpsilon> {
    RdpAccountant::default().epsilon(phases, delta)
}
