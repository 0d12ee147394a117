//! How well a score separates members from non-members: the ROC (as data), its area (AUC), the
//! true positive rate at fixed low false positive rates, and the best membership advantage.
//!
//! Convention: a **larger score means "member"**; an example is called a member when its score is
//! at least the threshold. Ties are handled as a group (every score equal to the threshold is
//! called the same way), so the ROC has one point per distinct score and the AUC gives tied
//! member/non-member pairs half credit (the Mann–Whitney U statistic).
//!
//! These are *empirical* rates on finitely many examples: evidence about an attack on one
//! trained model, not a bound on what any attack could do (`proofs/attack/metrics.md`).
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The false positive rates at which the TPR is reported: 1%, 0.1% and 0.01%.
pub const LOW_FPRS: [(&str, f64); 3] = [("0.01", 0.01), ("0.001", 0.001), ("0.0001", 0.0001)];

/// A point of the ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// False positive rate: non-members called members.
    pub fpr: f64,
    /// True positive rate: members called members.
    pub tpr: f64,
}

/// The TPR an attack reaches at a fixed FPR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TprAtFpr {
    /// The FPR asked for.
    pub fpr_target: f64,
    /// The largest TPR of a threshold whose empirical FPR is at most `fpr_target`.
    pub tpr: f64,
    /// That threshold's empirical FPR (at most `fpr_target`).
    pub fpr: f64,
    /// Members called members at that threshold.
    pub true_positives: u64,
    /// Non-members called members at that threshold.
    pub false_positives: u64,
    /// `false` when `fpr_target < 1 / non-members`: no false positive at all is allowed, so the
    /// figure is the TPR at an empirical FPR of 0, and says little about `fpr_target` itself.
    pub resolved: bool,
}

/// Everything measured about one attack's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackMetrics {
    /// Members scored.
    pub members: u64,
    /// Non-members scored.
    pub non_members: u64,
    /// Area under the ROC (0.5: chance; ties count half).
    pub auc: f64,
    /// The largest TPR - FPR over thresholds (Yeom et al. 2018's membership advantage).
    pub advantage: f64,
    /// TPR at FPR 1%, 0.1% and 0.01% (keys "0.01", "0.001", "0.0001").
    pub tpr_at_fpr: BTreeMap<String, TprAtFpr>,
    /// The smallest non-zero FPR these non-members can show: 1 / non-members.
    pub fpr_resolution: f64,
    /// The ROC, from (0, 0) to (1, 1), one point per distinct score.
    pub roc: Vec<RocPoint>,
}

fn check_scores(members: &[f64], non_members: &[f64]) -> Result<()> {
    if members.is_empty() || non_members.is_empty() {
        return Err(Error::invalid(
            "attack scores",
            format!("{} members, {} non-members", members.len(), non_members.len()),
            "need at least one member and one non-member",
        ));
    }
    if let Some(s) = members.iter().chain(non_members).find(|s| s.is_nan()) {
        return Err(Error::invalid("attack score", s, "every score must be a number (infinities are allowed)"));
    }
    Ok(())
}

/// (threshold, true positives, false positives) at each distinct score, from the largest score
/// down: calling members every example whose score is at least the threshold.
fn operating_points(members: &[f64], non_members: &[f64]) -> Vec<(f64, u64, u64)> {
    let mut all: Vec<(f64, bool)> =
        members.iter().map(|&s| (s, true)).chain(non_members.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let s = all[i].0;
        while i < all.len() && all[i].0 == s {
            if all[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        out.push((s, tp, fp));
    }
    out
}

/// The ROC of `members`' and `non_members`' scores (larger means member), from (0, 0) to (1, 1).
///
/// # Errors
/// [`Error::InvalidParameter`] for an empty side or a NaN score.
pub fn roc(members: &[f64], non_members: &[f64]) -> Result<Vec<RocPoint>> {
    check_scores(members, non_members)?;
    let (p, n) = (members.len() as f64, non_members.len() as f64);
    let mut pts = vec![RocPoint { fpr: 0.0, tpr: 0.0 }];
    pts.extend(
        operating_points(members, non_members)
            .into_iter()
            .map(|(_, tp, fp)| RocPoint { fpr: fp as f64 / n, tpr: tp as f64 / p }),
    );
    Ok(pts)
}

/// The area under the ROC: the probability that a random member scores above a random
/// non-member, ties counting one half (the Mann–Whitney U statistic divided by `|M| |N|`).
///
/// # Errors
/// As [`roc`].
pub fn auc(members: &[f64], non_members: &[f64]) -> Result<f64> {
    let pts = roc(members, non_members)?;
    // Trapezoids: a tie group moves diagonally and earns half its rectangle.
    Ok(pts.windows(2).map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0).sum())
}

/// The largest TPR among thresholds whose empirical FPR is at most `fpr_target`.
///
/// # Errors
/// As [`roc`]; [`Error::InvalidParameter`] for `fpr_target` outside [0, 1].
pub fn tpr_at_fpr(members: &[f64], non_members: &[f64], fpr_target: f64) -> Result<TprAtFpr> {
    check_scores(members, non_members)?;
    if !(0.0..=1.0).contains(&fpr_target) {
        return Err(Error::invalid("false positive rate", fpr_target, "must be in [0, 1]"));
    }
    let (p, n) = (members.len() as u64, non_members.len() as u64);
    let mut best = (0u64, 0u64);
    for (_, tp, fp) in operating_points(members, non_members) {
        // fp / n <= target, in integers to avoid rounding at the boundary (fp = target * n).
        if (fp as f64) <= fpr_target * n as f64 && tp > best.0 {
            best = (tp, fp);
        }
    }
    Ok(TprAtFpr {
        fpr_target,
        tpr: best.0 as f64 / p as f64,
        fpr: best.1 as f64 / n as f64,
        true_positives: best.0,
        false_positives: best.1,
        resolved: fpr_target * n as f64 >= 1.0,
    })
}

/// AUC, advantage, TPR at [`LOW_FPRS`] and the ROC of one attack's scores.
///
/// # Errors
/// As [`roc`].
pub fn attack_metrics(members: &[f64], non_members: &[f64]) -> Result<AttackMetrics> {
    let roc_points = roc(members, non_members)?;
    let auc = roc_points.windows(2).map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0).sum();
    let advantage = roc_points.iter().map(|p| p.tpr - p.fpr).fold(0.0, f64::max);
    let mut at = BTreeMap::new();
    for (key, f) in LOW_FPRS {
        at.insert(key.to_string(), tpr_at_fpr(members, non_members, f)?);
    }
    Ok(AttackMetrics {
        members: members.len() as u64,
        non_members: non_members.len() as u64,
        auc,
        advantage,
        tpr_at_fpr: at,
        fpr_resolution: 1.0 / non_members.len() as f64,
        roc: roc_points,
    })
}

/// The ROC thinned for storage and plotting: every point at FPR below 1% is kept (the region
/// that matters), above it at most about `keep` points spread evenly by index, plus (1, 1).
pub fn thin_roc(points: &[RocPoint], keep: usize) -> Vec<RocPoint> {
    let low: Vec<RocPoint> = points.iter().copied().filter(|p| p.fpr < 0.01).collect();
    let high: Vec<RocPoint> = points.iter().copied().filter(|p| p.fpr >= 0.01).collect();
    let step = (high.len() / keep.max(1)).max(1);
    let mut out = low;
    out.extend(high.iter().step_by(step).copied());
    if let (Some(last), Some(end)) = (out.last().copied(), points.last().copied()) {
        if last != end {
            out.push(end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_roc_and_auc() {
        // Members 0.9, 0.8, 0.4; non-members 0.7, 0.3. Pairs member > non-member: 0.9 beats both,
        // 0.8 beats both, 0.4 beats 0.3: 5 of 6.
        let m = [0.9, 0.8, 0.4];
        let n = [0.7, 0.3];
        assert!((auc(&m, &n).unwrap() - 5.0 / 6.0).abs() < 1e-15);
        let r = roc(&m, &n).unwrap();
        let expect = [(0.0, 0.0), (0.0, 1.0 / 3.0), (0.0, 2.0 / 3.0), (0.5, 2.0 / 3.0), (0.5, 1.0), (1.0, 1.0)];
        assert_eq!(r.len(), expect.len());
        for (p, (f, t)) in r.iter().zip(expect) {
            assert!((p.fpr - f).abs() < 1e-15 && (p.tpr - t).abs() < 1e-15, "{p:?}");
        }
        let t = tpr_at_fpr(&m, &n, 0.0).unwrap();
        assert_eq!((t.true_positives, t.false_positives), (2, 0));
        assert!(!t.resolved);
        let t = tpr_at_fpr(&m, &n, 0.5).unwrap();
        assert_eq!((t.true_positives, t.false_positives, t.resolved), (3, 1, true));
    }

    #[test]
    fn ties_count_half() {
        // All scores equal: AUC exactly 1/2, one diagonal segment.
        assert_eq!(auc(&[1.0, 1.0], &[1.0, 1.0, 1.0]).unwrap(), 0.5);
        // Member 1 vs non-members {1, 0}: one tie (1/2) and one win: 3/4.
        assert_eq!(auc(&[1.0], &[1.0, 0.0]).unwrap(), 0.75);
        // Perfect separation and its mirror.
        assert_eq!(auc(&[2.0, 3.0], &[0.0, 1.0]).unwrap(), 1.0);
        assert_eq!(auc(&[0.0, 1.0], &[2.0, 3.0]).unwrap(), 0.0);
    }

    #[test]
    fn tpr_at_fpr_never_exceeds_the_target() {
        // 1000 non-members 0..999, members 500..1499: at FPR <= 1% the threshold is 990 (10 false
        // positives: 990..999), catching the members 990..1499 = 510 of 1000.
        let n: Vec<f64> = (0..1000).map(f64::from).collect();
        let m: Vec<f64> = (500..1500).map(f64::from).collect();
        let t = tpr_at_fpr(&m, &n, 0.01).unwrap();
        assert_eq!((t.true_positives, t.false_positives), (510, 10));
        assert!(t.fpr <= 0.01 && t.resolved);
        let t = tpr_at_fpr(&m, &n, 0.001).unwrap();
        assert_eq!((t.true_positives, t.false_positives), (501, 1));
        let t = tpr_at_fpr(&m, &n, 0.0001).unwrap();
        assert_eq!((t.true_positives, t.false_positives, t.resolved), (500, 0, false));
        let a = attack_metrics(&m, &n).unwrap();
        assert!((a.advantage - 0.5).abs() < 1e-12, "{}", a.advantage);
        assert!((a.auc - 0.875).abs() < 1e-12, "{}", a.auc);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(roc(&[], &[1.0]).is_err());
        assert!(auc(&[1.0], &[]).is_err());
        assert!(auc(&[f64::NAN], &[1.0]).is_err());
        assert!(tpr_at_fpr(&[1.0], &[0.0], 1.5).is_err());
        // Infinite scores are ordered like any other.
        assert_eq!(auc(&[f64::INFINITY], &[f64::NEG_INFINITY]).unwrap(), 1.0);
    }
}
