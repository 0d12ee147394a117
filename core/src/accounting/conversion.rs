//! Rényi DP to (epsilon, delta)-DP.
//!
//! Two conversions, both valid for any order `alpha > 1`; [`rdp_to_epsilon`] takes the tighter and
//! says which won. Proof: [`proofs/accounting/rdp_to_dp_conversion.md`](../../../proofs/accounting/rdp_to_dp_conversion.md).
use crate::accounting::validate_delta;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which RDP to DP conversion produced an epsilon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    /// Mironov 2017, Proposition 3: `eps = rdp + ln(1/delta) / (alpha - 1)`.
    Classic,
    /// Balle et al. 2020, Theorem 21 (= Canonne, Kamath & Steinke 2020, Proposition 12; the formula
    /// of Opacus' `get_privacy_spent` and Google's `compute_epsilon`):
    /// `eps = rdp + ln((alpha - 1)/alpha) - (ln delta + ln alpha) / (alpha - 1)`.
    Improved,
}

/// The classic conversion, `rdp + ln(1/delta)/(alpha - 1)`, in plain f64 (no validation).
///
/// # Proof definition
/// For a mechanism that is `(alpha, rdp)`-RDP with `alpha > 1` and `delta` in (0, 1), returns (up to
/// f64 rounding) an `eps` such that the mechanism is `(eps, delta)`-DP.
pub fn epsilon_classic(rdp: f64, order: f64, delta: f64) -> f64 {
    rdp - delta.ln() / (order - 1.0)
}

/// The improved conversion, `rdp + ln((alpha-1)/alpha) - (ln delta + ln alpha)/(alpha - 1)`, written
/// as Google's `dp_accounting` writes it (`log1p(-1/alpha)`, `ln(delta * alpha)`), in plain f64.
///
/// # Proof definition
/// As [`epsilon_classic`].
pub fn epsilon_improved(rdp: f64, order: f64, delta: f64) -> f64 {
    rdp + (-1.0 / order).ln_1p() - (delta * order).ln() / (order - 1.0)
}

/// The tighter of [`epsilon_classic`] and [`epsilon_improved`], floored at 0 (an (eps, delta)
/// guarantee with eps < 0 implies the one with eps = 0), with the conversion that won.
///
/// # Proof definition
/// For a mechanism that is `(order, rdp)`-RDP, returns `(eps, which)` such that it is
/// `(eps, delta)`-DP (up to f64 rounding; [`crate::accounting::exact`] redoes this with directed
/// rounding), or an error.
///
/// # Errors
/// [`Error::InvalidParameter`] when `order <= 1` or is not finite, `rdp` is negative or NaN, or
/// `delta` is not in (0, 1).
pub fn rdp_to_epsilon(rdp: f64, order: f64, delta: f64) -> Result<(f64, Conversion)> {
    validate_delta(delta)?;
    if !(order > 1.0 && order.is_finite()) {
        return Err(Error::invalid("Rényi order alpha", order, "must be a finite number > 1"));
    }
    if !(rdp >= 0.0) {
        return Err(Error::invalid("Rényi divergence", rdp, "must be >= 0 (or +inf)"));
    }
    Ok(tighter(rdp, order, delta))
}

/// [`rdp_to_epsilon`] without validation, for callers that validated already.
pub(crate) fn tighter(rdp: f64, order: f64, delta: f64) -> (f64, Conversion) {
    let classic = epsilon_classic(rdp, order, delta);
    let improved = epsilon_improved(rdp, order, delta);
    let (eps, which) =
        if improved <= classic { (improved, Conversion::Improved) } else { (classic, Conversion::Classic) };
    (eps.max(0.0), which)
}
