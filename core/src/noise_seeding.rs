//! How a run's noise was seeded: the one word that certificates, reports and the ledger carry
//! about whether a release's noise can be regenerated.
use serde::{Deserialize, Serialize};

/// How a run's noise was seeded, as recorded in its `metrics.json`, its ledger and its
/// certificate (`"csprng"` or `"seeded"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSeeding {
    /// From the operating system's CSPRNG: the noise cannot be regenerated.
    Csprng,
    /// From an explicit seed (`--seed`): anyone who knows the seed can regenerate the noise and
    /// subtract it. Fit for experiments, not for a release.
    Seeded,
}

impl NoiseSeeding {
    /// `csprng` or `seeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoiseSeeding::Csprng => "csprng",
            NoiseSeeding::Seeded => "seeded",
        }
    }
}

impl std::fmt::Display for NoiseSeeding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What certificates and reports say, in plain words, about a run whose noise was seeded.
pub const SEEDED_NOISE_WARNING: &str =
    "NOT FIT FOR RELEASE: its noise can be regenerated from the seed (the run was trained with an explicit --seed, so anyone who knows the seed can recompute the noise and subtract it; its epsilon then protects nothing)";
