//! The parts of an audit that need no training: the Clopper–Pearson bounds of attack outcomes
//! and the ROC points `audit.json` records. The audit engine (`dpaudit::audit`) builds on them.
pub mod bounds;

use serde::{Deserialize, Serialize};

/// A point of the ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// False positive rate.
    pub fpr: f64,
    /// True positive rate.
    pub tpr: f64,
}
