//! The arbitrary-precision oracle: RDP of the Poisson-subsampled Gaussian and its epsilon, in MPFR
//! (`rug`) interval arithmetic with directed rounding.
//!
//! Every quantity is an [`Enclosure`] `[lo, hi]` of MPFR floats at [`ORACLE_PRECISION`] bits that
//! contains the exact real value: each operation rounds its lower end down (`Round::Down`) and its
//! upper end up (`Round::Up`), so the enclosure only ever widens. The only truncation (the
//! alternating tails of the fractional-order series) is enclosed by a proven error bound. Nothing
//! here is fast; it is the reference that tests, `dpaudit account epsilon --verify` and certificate
//! verification re-run.
//!
//! Proof: [`proofs/accounting/exact_oracle.md`](../../../proofs/accounting/exact_oracle.md).
use crate::accounting::conversion::Conversion;
use crate::accounting::rdp::RdpAccountant;
use crate::accounting::{validate_delta, validate_phases, Phase};
use crate::error::{Error, Result};
use rug::float::Round;
use rug::{Float, Integer};
use serde::{Deserialize, Serialize};

/// Working precision of the oracle, in bits.
pub const ORACLE_PRECISION: u32 = 256;

/// Terms of the Cohen–Rodriguez Villegas–Zagier acceleration for the alternating tails: the
/// truncation error is at most `S / T_40(3) < 1e-30 S`, and is enclosed, not neglected.
pub const ORACLE_TAIL_TERMS: usize = 40;

const P: u32 = ORACLE_PRECISION;

fn down<T>(v: T) -> Float
where
    Float: rug::ops::AssignRound<T, Round = Round, Ordering = std::cmp::Ordering>,
{
    Float::with_val_round(P, v, Round::Down).0
}

fn up<T>(v: T) -> Float
where
    Float: rug::ops::AssignRound<T, Round = Round, Ordering = std::cmp::Ordering>,
{
    Float::with_val_round(P, v, Round::Up).0
}

/// A closed interval `[lo, hi]` of MPFR floats known to contain an exact real number.
#[derive(Debug, Clone)]
pub struct Enclosure {
    /// Lower end (every operation producing it rounded down).
    pub lo: Float,
    /// Upper end (every operation producing it rounded up).
    pub hi: Float,
}

fn min2(a: Float, b: Float) -> Float {
    if a <= b {
        a
    } else {
        b
    }
}
fn max2(a: Float, b: Float) -> Float {
    if a >= b {
        a
    } else {
        b
    }
}

impl Enclosure {
    /// The exact value of an f64 (256 bits hold any f64 exactly).
    pub fn exact(x: f64) -> Self {
        let v = Float::with_val(P, x);
        Enclosure { lo: v.clone(), hi: v }
    }

    fn integer(n: &Integer) -> Self {
        // Integer -> float: lower end rounded down, upper end rounded up.
        Enclosure { lo: down(n), hi: up(n) }
    }

    fn add(&self, o: &Self) -> Self {
        // lo: round down; hi: round up.
        Enclosure { lo: down(&self.lo + &o.lo), hi: up(&self.hi + &o.hi) }
    }

    fn sub(&self, o: &Self) -> Self {
        // lo = lo - hi' rounded down; hi = hi - lo' rounded up.
        Enclosure { lo: down(&self.lo - &o.hi), hi: up(&self.hi - &o.lo) }
    }

    fn neg(&self) -> Self {
        // Exact.
        Enclosure { lo: Float::with_val(P, -&self.hi), hi: Float::with_val(P, -&self.lo) }
    }

    fn mul(&self, o: &Self) -> Self {
        // All four end products, each rounded down for the minimum and up for the maximum.
        let (a, b, c, d) = (&self.lo, &self.hi, &o.lo, &o.hi);
        let lo = min2(min2(down(a * c), down(a * d)), min2(down(b * c), down(b * d)));
        let hi = max2(max2(up(a * c), up(a * d)), max2(up(b * c), up(b * d)));
        Enclosure { lo, hi }
    }

    fn div(&self, o: &Self) -> Result<Self> {
        if !(o.lo > 0 || o.hi < 0) {
            return Err(Error::numerical("MPFR oracle", "division by an enclosure containing 0"));
        }
        // All four end quotients, rounded down for the minimum and up for the maximum.
        let (a, b, c, d) = (&self.lo, &self.hi, &o.lo, &o.hi);
        let lo = min2(min2(down(a / c), down(a / d)), min2(down(b / c), down(b / d)));
        let hi = max2(max2(up(a / c), up(a / d)), max2(up(b / c), up(b / d)));
        Ok(Enclosure { lo, hi })
    }

    fn exp(&self) -> Self {
        // exp is increasing: exp(lo) rounded down, exp(hi) rounded up.
        Enclosure { lo: down(self.lo.exp_ref()), hi: up(self.hi.exp_ref()) }
    }

    fn ln(&self) -> Result<Self> {
        if !(self.lo > 0) {
            return Err(Error::numerical("MPFR oracle", "logarithm of an enclosure reaching 0"));
        }
        // ln is increasing: ln(lo) rounded down, ln(hi) rounded up.
        Ok(Enclosure { lo: down(self.lo.ln_ref()), hi: up(self.hi.ln_ref()) })
    }

    fn sqrt(&self) -> Self {
        // sqrt is increasing on [0, inf): sqrt(lo) rounded down, sqrt(hi) rounded up.
        Enclosure { lo: down(self.lo.sqrt_ref()), hi: up(self.hi.sqrt_ref()) }
    }

    fn erfc(&self) -> Result<Self> {
        // erfc is decreasing: lower end = lower bound of erfc(hi), upper end = upper bound of
        // erfc(lo); each from MPFR's correctly rounded erfc (rounded down / up), or for arguments
        // >= CF_THRESHOLD from the enclosing Laplace continued fraction (MPFR is slow there).
        let lo = if self.hi >= CF_THRESHOLD { erfc_continued_fraction(&self.hi)?.lo } else { down(self.hi.erfc_ref()) };
        let hi = if self.lo >= CF_THRESHOLD { erfc_continued_fraction(&self.lo)?.hi } else { up(self.lo.erfc_ref()) };
        Ok(Enclosure { lo, hi })
    }

    fn abs(&self) -> Result<Self> {
        if self.lo >= 0 {
            Ok(self.clone())
        } else if self.hi <= 0 {
            Ok(self.neg())
        } else {
            Err(Error::numerical("MPFR oracle", "sign of a binomial coefficient not resolved"))
        }
    }

    fn scale_f64(&self, x: f64) -> Self {
        self.mul(&Enclosure::exact(x))
    }

    /// The ends as f64, rounded outward (lower end down, upper end up).
    pub fn to_f64_bounds(&self) -> (f64, f64) {
        (self.lo.to_f64_round(Round::Down), self.hi.to_f64_round(Round::Up))
    }

    /// Midpoint as f64 (for reporting).
    pub fn mid_f64(&self) -> f64 {
        let m = Float::with_val(P, &self.lo + &self.hi) / 2u32;
        m.to_f64()
    }
}

/// Arguments from which erfc is enclosed by its continued fraction rather than MPFR's `erfc`.
const CF_THRESHOLD: f64 = 4.0;

/// Encloses `erfc(x)` for `x >= CF_THRESHOLD` by Laplace's continued fraction
/// `sqrt(pi) e^{x^2} erfc(x) = 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + ...))))`. Its elements are
/// positive, so consecutive convergents bracket the value (proofs/accounting/exact_oracle.md,
/// Lemma 2): the enclosure is the hull of the enclosures of the n-th and (n+1)-th convergents, with
/// n doubled until the relative width is below 2^-160.
fn erfc_continued_fraction(x: &Float) -> Result<Enclosure> {
    let xe = Enclosure { lo: x.clone(), hi: x.clone() };
    let convergent = |n: usize| -> Result<Enclosure> {
        let mut t = xe.clone();
        for k in (1..=n).rev() {
            t = xe.add(&Enclosure::exact(k as f64 / 2.0).div(&t)?);
        }
        Enclosure::exact(1.0).div(&t)
    };
    let mut n = 32;
    loop {
        let (a, b) = (convergent(n)?, convergent(n + 1)?);
        let k = Enclosure { lo: min2(a.lo, b.lo), hi: max2(a.hi, b.hi) };
        let width = Float::with_val(P, &k.hi - &k.lo) / &k.lo;
        if width < Float::with_val(P, Float::i_exp(1, -160)) || n >= 1 << 14 {
            // pi enclosed by MPFR's constant rounded down / up.
            let pi = Enclosure { lo: down(rug::float::Constant::Pi), hi: up(rug::float::Constant::Pi) };
            let gauss = xe.mul(&xe).neg().exp();
            return Ok(gauss.div(&pi.sqrt())?.mul(&k));
        }
        n *= 2;
    }
}

/// Rigorous f64 bounds on the per-step RDP: `lower <= true RDP <= upper`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RdpBounds {
    /// Lower bound (rounded down to f64).
    pub lower: f64,
    /// Upper bound (rounded up to f64).
    pub upper: f64,
}

use crate::accounting::rdp::validate_mechanism;

/// An enclosure of the per-step RDP of the Poisson-subsampled Gaussian at one order.
///
/// # Proof definition
/// Returns `[lo, hi]` with `lo <= D_order <= hi`, where `D_order` is the exact Rényi divergence
/// of the mechanism under add/remove adjacency (the larger direction, MTZ Theorem 4), or an error.
/// Proof: `proofs/accounting/exact_oracle.md`.
///
/// # Errors
/// [`Error::InvalidParameter`] for invalid q, sigma or order; [`Error::Numerical`] if an
/// enclosure cannot be resolved (never seen for the documented parameter ranges).
pub fn rdp_enclosure(q: f64, sigma: f64, order: f64) -> Result<Enclosure> {
    validate_mechanism(q, sigma, order)?;
    let alpha = Enclosure::exact(order);
    let alpha_minus_1 = alpha.sub(&Enclosure::exact(1.0));
    let sig = Enclosure::exact(sigma);
    let two_sigma2 = sig.mul(&sig).scale_f64(2.0);
    if q == 1.0 {
        return alpha.div(&two_sigma2);
    }
    let a = if order.fract() == 0.0 && order <= 1e6 {
        a_integer(q, &two_sigma2, order as u64)?
    } else {
        a_fractional(q, sigma, order)?
    };
    a.ln()?.div(&alpha_minus_1)
}

/// [`rdp_enclosure`] rounded outward to f64.
///
/// # Errors
/// As [`rdp_enclosure`].
pub fn rdp_bounds(q: f64, sigma: f64, order: f64) -> Result<RdpBounds> {
    let (lower, upper) = rdp_enclosure(q, sigma, order)?.to_f64_bounds();
    Ok(RdpBounds { lower, upper })
}

/// `A_a = sum_{k=0}^{a} C(a,k) q^k (1-q)^{a-k} exp(k(k-1)/(2 sigma^2))`, exactly enclosed.
fn a_integer(q: f64, two_sigma2: &Enclosure, a: u64) -> Result<Enclosure> {
    let one = Enclosure::exact(1.0);
    let qe = Enclosure::exact(q);
    let ln_q = qe.ln()?;
    let ln_1mq = one.sub(&qe).ln()?;
    let mut sum = Enclosure::exact(0.0);
    for k in 0..=a {
        let binom = Enclosure::integer(&Integer::from(Integer::binomial_u(a as u32, k as u32)));
        let kf = k as f64;
        // k(k-1) is an exact integer in f64 for k <= 2^26.
        let quad = Enclosure::exact(kf * (kf - 1.0)).div(two_sigma2)?;
        let expo = ln_q.scale_f64(kf).add(&ln_1mq.scale_f64((a - k) as f64)).add(&quad);
        sum = sum.add(&binom.mul(&expo.exp()));
    }
    Ok(sum)
}

/// The integer polynomial `Q(x) = (P(-1) - P(x)) / (1 + x)` for `P(x) = T_n(1 - 2x)`, and
/// `d = P(-1) = T_n(3)` (proofs/accounting/rdp_fractional_orders.md, Lemma 3).
fn crvz_weights(n: usize) -> (Vec<Integer>, Integer) {
    // T_0 = 1, T_1 = 1 - 2x, T_{k+1} = 2 (1 - 2x) T_k - T_{k-1}, coefficients low to high.
    let mut prev: Vec<Integer> = vec![Integer::from(1)];
    let mut cur: Vec<Integer> = vec![Integer::from(1), Integer::from(-2)];
    for _ in 1..n {
        let mut next = vec![Integer::new(); cur.len() + 1];
        for (j, c) in cur.iter().enumerate() {
            next[j] += Integer::from(2 * c);
            next[j + 1] -= Integer::from(4 * c);
        }
        for (j, p) in prev.iter().enumerate() {
            next[j] -= p;
        }
        prev = cur;
        cur = next;
    }
    let p = if n == 0 { prev } else { cur };
    // d = P(-1).
    let mut d = Integer::new();
    for c in p.iter().rev() {
        d = Integer::from(-&d) + c;
    }
    // Synthetic division of P(x) - P(-1) by (x + 1): R with P(x) - P(-1) = (x + 1) R(x); Q = -R.
    let deg = p.len() - 1;
    let mut r = vec![Integer::new(); deg];
    let mut carry = Integer::new();
    for j in (1..=deg).rev() {
        carry = Integer::from(&p[j] - &carry);
        r[j - 1] = carry.clone();
    }
    let q: Vec<Integer> = r.into_iter().map(|c| -c).collect();
    (q, d)
}

/// Encloses `S = sum_{k>=0} (-1)^k a_k` for a Hausdorff moment sequence `a_k >= 0` from
/// enclosures of `a_0..a_{n-1}`: `S in [Sigma/(d+1), Sigma/(d-1)]` with `Sigma = sum Q_k a_k`.
fn alternating_tail(terms: &[Enclosure], weights: &(Vec<Integer>, Integer)) -> Result<Enclosure> {
    let (q, d) = weights;
    let mut sigma = Enclosure::exact(0.0);
    for (qk, a) in q.iter().zip(terms) {
        sigma = sigma.add(&Enclosure::integer(qk).mul(a));
    }
    let d_plus = Enclosure::integer(&Integer::from(d + 1));
    let d_minus = Enclosure::integer(&Integer::from(d - 1));
    // Lower end: Sigma.lo / (d + 1), rounded down (and S >= 0); upper end Sigma.hi / (d - 1),
    // rounded up.
    let lo_q = Enclosure { lo: sigma.lo.clone(), hi: sigma.lo.clone() }.div(&d_plus)?.lo;
    let hi_q = Enclosure { lo: sigma.hi.clone(), hi: sigma.hi.clone() }.div(&d_minus)?.hi;
    let zero = Float::new(P);
    Ok(Enclosure { lo: max2(lo_q, zero), hi: hi_q })
}

/// `A_alpha = A0 + A1` by the MTZ series for a fractional order, with the alternating tails
/// enclosed (proofs/accounting/rdp_fractional_orders.md).
fn a_fractional(q: f64, sigma: f64, alpha: f64) -> Result<Enclosure> {
    let one = Enclosure::exact(1.0);
    let half = Enclosure::exact(0.5);
    let qe = Enclosure::exact(q);
    let ln_q = qe.ln()?;
    let ln_1mq = one.sub(&qe).ln()?;
    let sig = Enclosure::exact(sigma);
    let sigma2 = sig.mul(&sig);
    let two_sigma2 = sigma2.scale_f64(2.0);
    // z0 = sigma^2 ln(1/q - 1) + 1/2.
    let z0 = sigma2.mul(&one.div(&qe)?.sub(&one).ln()?).add(&half);
    let sqrt2_sigma = Enclosure::exact(2.0).sqrt().mul(&sig);
    let ae = Enclosure::exact(alpha);
    let head = alpha.ceil() as usize;
    let total = head + ORACLE_TAIL_TERMS;

    // |C(alpha, i)| by C(alpha, i+1) = C(alpha, i) (alpha - i) / (i + 1).
    let mut binom = Vec::with_capacity(total);
    let mut c = one.clone();
    for i in 0..total {
        binom.push(c.abs()?);
        let fi = Enclosure::exact(i as f64);
        c = c.mul(&ae.sub(&fi)).div(&Enclosure::exact((i + 1) as f64))?;
    }
    let quad = |x: &Enclosure| -> Result<Enclosure> { x.mul(&x.sub(&one)).div(&two_sigma2) };
    // A0 term i: |C| q^i (1-q)^{alpha-i} e^{i(i-1)/(2 s^2)} erfc((i - z0)/(sqrt2 s)) / 2.
    let a0_term = |i: usize| -> Result<Enclosure> {
        let fi = Enclosure::exact(i as f64);
        let j = ae.sub(&fi);
        let expo = ln_q.mul(&fi).add(&ln_1mq.mul(&j)).add(&quad(&fi)?);
        let tail_prob = fi.sub(&z0).div(&sqrt2_sigma)?.erfc()?.mul(&half);
        Ok(binom[i].mul(&expo.exp()).mul(&tail_prob))
    };
    // A1 term i (j = alpha - i): |C| q^j (1-q)^i e^{j(j-1)/(2 s^2)} erfc((z0 - j)/(sqrt2 s)) / 2.
    let a1_term = |i: usize| -> Result<Enclosure> {
        let fi = Enclosure::exact(i as f64);
        let j = ae.sub(&fi);
        let expo = ln_q.mul(&j).add(&ln_1mq.mul(&fi)).add(&quad(&j)?);
        let tail_prob = z0.sub(&j).div(&sqrt2_sigma)?.erfc()?.mul(&half);
        Ok(binom[i].mul(&expo.exp()).mul(&tail_prob))
    };
    let weights = crvz_weights(ORACLE_TAIL_TERMS);
    let mut sum = Enclosure::exact(0.0);
    for i in 0..head {
        sum = sum.add(&a0_term(i)?).add(&a1_term(i)?);
    }
    let t0: Vec<Enclosure> = (head..total).map(a0_term).collect::<Result<_>>()?;
    let t1: Vec<Enclosure> = (head..total).map(a1_term).collect::<Result<_>>()?;
    sum = sum.add(&alternating_tail(&t0, &weights)?).add(&alternating_tail(&t1, &weights)?);
    Ok(sum)
}

/// A rigorously verified epsilon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VerifiedEpsilon {
    /// An upper bound on the epsilon of the composition at the order below, rounded up to f64.
    pub epsilon: f64,
    /// The Rényi order that gave it.
    pub order: f64,
    /// Which conversion gave it.
    pub conversion: Conversion,
}

/// Upper bound on the (epsilon, delta) of a composition at one order, from the enclosure of the
/// composed RDP: both conversions evaluated on enclosures; the smaller upper end, floored at 0.
fn epsilon_enclosure_at(phases: &[Phase], order: f64, delta: f64) -> Result<(Float, Conversion)> {
    let mut rdp = Enclosure::exact(0.0);
    for p in phases {
        if p.steps > 0 {
            let per_step = rdp_enclosure(p.sampling_rate, p.noise_multiplier, order)?;
            let steps = Enclosure::integer(&Integer::from(p.steps));
            rdp = rdp.add(&per_step.mul(&steps));
        }
    }
    let alpha = Enclosure::exact(order);
    let am1 = alpha.sub(&Enclosure::exact(1.0));
    let ln_delta = Enclosure::exact(delta).ln()?;
    // Classic: rdp - ln(delta)/(alpha - 1).
    let classic = rdp.sub(&ln_delta.div(&am1)?);
    // Improved: rdp + ln((alpha - 1)/alpha) - (ln delta + ln alpha)/(alpha - 1).
    let improved = rdp.add(&am1.div(&alpha)?.ln()?).sub(&ln_delta.add(&alpha.ln()?).div(&am1)?);
    let zero = Float::new(P);
    Ok(if improved.hi <= classic.hi {
        (max2(improved.hi, zero), Conversion::Improved)
    } else {
        (max2(classic.hi, zero), Conversion::Classic)
    })
}

/// A rigorous upper bound on the epsilon of a composition, rounded up to f64.
///
/// Only a few orders are evaluated in MPFR: the order the f64 accountant finds best over `orders`
/// and its two neighbours in the sorted grid. Any order gives a valid bound, so this choice
/// affects tightness only.
///
/// # Proof definition
/// Returns `(epsilon, order)` such that the composition of `phases` (Poisson-subsampled
/// Gaussian, add/remove adjacency) is `(epsilon, delta)`-DP, with every rounding directed
/// upward, or an error. Proof: `proofs/accounting/exact_oracle.md`.
///
/// # Errors
/// [`Error::InvalidParameter`] for invalid phases, delta or orders; [`Error::Numerical`] if an
/// enclosure cannot be resolved.
pub fn verified_epsilon(phases: &[Phase], delta: f64, orders: &[f64]) -> Result<VerifiedEpsilon> {
    validate_phases(phases)?;
    validate_delta(delta)?;
    let accountant = RdpAccountant::with_orders(orders)?;
    let grid = accountant.orders();
    let best = accountant.epsilon(phases, delta)?.order;
    let i = grid.iter().position(|&o| o == best).unwrap_or(0);
    let candidates = &grid[i.saturating_sub(1)..(i + 2).min(grid.len())];
    let mut result: Option<VerifiedEpsilon> = None;
    for &order in candidates {
        let (eps, conversion) = epsilon_enclosure_at(phases, order, delta)?;
        // The final rounding to f64 is upward.
        let epsilon = eps.to_f64_round(Round::Up);
        if result.is_none_or(|r| epsilon < r.epsilon) {
            result = Some(VerifiedEpsilon { epsilon, order, conversion });
        }
    }
    result.ok_or_else(|| Error::numerical("verified epsilon", "no order evaluated"))
}
