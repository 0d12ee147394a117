//! Double-word ("double-double") arithmetic for the PLD accountant's low-frequency spectrum: a
//! real number is carried as an unevaluated sum `hi + lo` of two f64 with `|lo| <= ulp(hi) / 2`,
//! about 106 bits. Only what [`pld`](super::pld) needs: sums, products, complex products and
//! integer powers, each with a stated relative error bound in units of `u^2`, `u = 2^-53`.
//!
//! The algorithms and their bounds are those of Joldes, Muller and Popescu, *Tight and rigorous
//! error bounds for basic building blocks of double-word arithmetic*, ACM TOMS 44(2), 2017:
//! `AccurateDWPlusDW` (Algorithm 6, relative error `<= 3u^2 / (1 - 4u)`), `DWTimesFP3`
//! (Algorithm 9, `<= 2u^2`) and `DWTimesDW3` (Algorithm 12, `<= 5u^2`). The constants used by
//! the callers ([`ADD_REL`], [`MUL_REL`]) are rounded up from these. Proof of how they are
//! combined: `proofs/accounting/pld.md`, section 5b.
use rug::float::Round;
use rug::Float;

/// Unit roundoff of f64.
const U: f64 = f64::EPSILON / 2.0;
/// `u^2`.
pub(crate) const U2: f64 = U * U;
/// Relative error bound of [`Dw::add`], in units of `u^2` (published: `3 / (1 - 4u)`).
pub(crate) const ADD_REL: f64 = 4.0;
/// Relative error bound of [`Dw::mul`] and [`Dw::mul_f64`], in units of `u^2` (published: 5 and 2).
pub(crate) const MUL_REL: f64 = 6.0;
/// Error bound of [`CDw::mul`] relative to `|z| |w|`, in units of `u^2`: each part is
/// `ac - bd` (or `ad + bc`) with error `<= MUL_REL u^2 (|ac| + |bd|) + ADD_REL u^2 (1 + 7u^2) (|ac| + |bd|)`,
/// `|a||c| + |b||d| <= |z||w|` by Cauchy-Schwarz, and the two parts combine in quadrature
/// (`sqrt 2 (6 + 4.0001) < 15`); rounded up to 16.
pub(crate) const CMUL_REL: f64 = 1.5 * (MUL_REL + ADD_REL) + 1.0;

/// `a + b = s + e` exactly (Knuth's TwoSum).
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// `a + b = s + e` exactly when `|a| >= |b|` or `a = 0` (Dekker's Fast2Sum).
fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

/// `a b = p + e` exactly (with a fused multiply-add).
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

/// A double-word real `hi + lo`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dw {
    pub hi: f64,
    pub lo: f64,
}

impl Dw {
    pub const ZERO: Dw = Dw { hi: 0.0, lo: 0.0 };
    pub const ONE: Dw = Dw { hi: 1.0, lo: 0.0 };

    /// The value of an MPFR float, rounded to nearest twice (error `<= 2^-105 |x|` plus the
    /// float's own error).
    pub fn from_float(x: &Float) -> Dw {
        let hi = x.to_f64_round(Round::Nearest);
        let rest = Float::with_val(x.prec(), x - hi);
        Dw { hi, lo: rest.to_f64_round(Round::Nearest) }
    }

    /// `AccurateDWPlusDW`: relative error `<= ADD_REL u^2`.
    pub fn add(self, y: Dw) -> Dw {
        let (sh, sl) = two_sum(self.hi, y.hi);
        let (th, tl) = two_sum(self.lo, y.lo);
        let c = sl + th;
        let (vh, vl) = fast_two_sum(sh, c);
        let w = tl + vl;
        let (hi, lo) = fast_two_sum(vh, w);
        Dw { hi, lo }
    }

    /// `-x`, exact.
    pub fn neg(self) -> Dw {
        Dw { hi: -self.hi, lo: -self.lo }
    }

    /// `DWTimesDW3`: relative error `<= MUL_REL u^2`.
    pub fn mul(self, y: Dw) -> Dw {
        let (ch, cl1) = two_prod(self.hi, y.hi);
        let tl0 = self.lo * y.lo;
        let tl1 = self.hi.mul_add(y.lo, tl0);
        let cl2 = self.lo.mul_add(y.hi, tl1);
        let cl3 = cl1 + cl2;
        let (hi, lo) = fast_two_sum(ch, cl3);
        Dw { hi, lo }
    }

    /// `DWTimesFP3`: relative error `<= MUL_REL u^2`.
    pub fn mul_f64(self, y: f64) -> Dw {
        let (ch, cl1) = two_prod(self.hi, y);
        let cl3 = self.lo.mul_add(y, cl1);
        let (hi, lo) = fast_two_sum(ch, cl3);
        Dw { hi, lo }
    }
}

/// A double-word complex number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CDw {
    pub re: Dw,
    pub im: Dw,
}

impl CDw {
    pub const ONE: CDw = CDw { re: Dw::ONE, im: Dw::ZERO };
    pub const ZERO: CDw = CDw { re: Dw::ZERO, im: Dw::ZERO };

    /// `exp(-2 pi i k / n)` from 200-bit MPFR values: error `<= 2^-104` in each part, so
    /// `<= 2 u^2` in modulus.
    pub fn unit_root(k: u64, n: u64) -> CDw {
        const PREC: u32 = 200;
        let mut angle = Float::with_val(PREC, rug::float::Constant::Pi) * 2u32;
        angle *= k;
        angle /= n;
        let (s, c) = angle.sin_cos(Float::new(PREC));
        CDw { re: Dw::from_float(&c), im: Dw::from_float(&s).neg() }
    }

    /// Complex sum, each part with relative error `<= ADD_REL u^2`.
    pub fn add(self, w: CDw) -> CDw {
        CDw { re: self.re.add(w.re), im: self.im.add(w.im) }
    }

    /// Complex product: error `<= CMUL_REL u^2 |z| |w|`.
    pub fn mul(self, w: CDw) -> CDw {
        let re = self.re.mul(w.re).add(self.im.mul(w.im).neg());
        let im = self.re.mul(w.im).add(self.im.mul(w.re));
        CDw { re, im }
    }

    /// Real scaling by an f64: each part with relative error `<= MUL_REL u^2`.
    pub fn scale(self, x: f64) -> CDw {
        CDw { re: self.re.mul_f64(x), im: self.im.mul_f64(x) }
    }

    /// `self^t` by binary exponentiation: at most `2 * 64` complex products.
    pub fn powu(self, mut t: u64) -> CDw {
        let mut result = CDw::ONE;
        let mut base = self;
        while t > 0 {
            if t & 1 == 1 {
                result = result.mul(base);
            }
            t >>= 1;
            if t > 0 {
                base = base.mul(base);
            }
        }
        result
    }

    /// Modulus, in f64 (relative error a few u; callers add their own margin).
    pub fn abs(self) -> f64 {
        (self.re.hi + self.re.lo).hypot(self.im.hi + self.im.lo)
    }

    /// Rounded to a pair of f64 (error `<= u` relative in each part, plus `2 u^2`).
    pub fn to_f64(self) -> (f64, f64) {
        (self.re.hi + self.re.lo, self.im.hi + self.im.lo)
    }
}

/// Relative error bound of [`CDw::powu`] with respect to the exact power of its (computed) input:
/// `(1 + CMUL_REL u^2)^(2t + 128) - 1`, bounded by `1.01 (2t + 128) CMUL_REL u^2` while that is
/// below 0.01 (always, for `t < 2^64`).
pub(crate) fn powu_rel_error(t: u64) -> f64 {
    1.01 * (2.0 * t as f64 + 128.0) * CMUL_REL * U2
}

#[cfg(test)]
mod test {
    use super::*;

    fn to_float(x: Dw) -> Float {
        Float::with_val(300, x.hi) + x.lo
    }

    #[test]
    fn operations_meet_their_bounds() {
        let xs = [1.0 / 3.0, -2.0 / 7.0, 1e-3 + 1e-20, 0.999_999_999_9];
        for &a in &xs {
            for &b in &xs {
                let x = Dw { hi: a, lo: a * 1e-17 };
                let y = Dw { hi: b, lo: -b * 3e-18 };
                let (fx, fy) = (to_float(x), to_float(y));
                let sum = Float::with_val(300, &fx + &fy);
                let err = (to_float(x.add(y)) - &sum).abs();
                assert!(err <= sum.clone().abs() * (ADD_REL * U2), "{a} + {b}");
                let prod = Float::with_val(300, &fx * &fy);
                let err = (to_float(x.mul(y)) - &prod).abs();
                assert!(err <= prod.clone().abs() * (MUL_REL * U2), "{a} * {b}");
            }
        }
    }

    #[test]
    fn unit_root_power_returns_to_one() {
        // w^n = 1 for w = exp(-2 pi i k / n); the power's error is within powu_rel_error.
        for (k, n) in [(1u64, 12u64), (5, 1024), (7, 98_304)] {
            let w = CDw::unit_root(k, n);
            let p = w.powu(n);
            let (re, im) = p.to_f64();
            let bound = powu_rel_error(n) + n as f64 * 3.0 * U2 + 4.0 * U;
            assert!((re - 1.0).abs() <= bound && im.abs() <= bound, "{k}/{n}: {re} {im}");
        }
    }
}
