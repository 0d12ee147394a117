//! Deliberate bugs for testing audits (`--inject-fault`). Each reproduces a class of real DP-SGD
//! implementation errors; an audit of a run with one of them should come out `violated`. A run
//! with an injected fault records it in `metrics.json`, and `dpaudit cert sign` refuses to certify
//! it.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Fault {
    /// Per-example gradients are summed without clipping (sensitivity unbounded).
    NoClip,
    /// The noise is scaled as if it were added to the lot's *mean* (sigma C / L), then the sum is
    /// divided by L again: the noise is L times too small (TF-Privacy issue #153).
    NoiseOnMean,
    /// Every k-th step adds no noise at all.
    SkipNoise(u64),
    /// Only every other step is written to the ledger, so epsilon is computed from half the steps.
    LedgerUndercount,
}

impl Fault {
    /// Whether step `step` (1-based) adds noise.
    pub fn skips_noise(self, step: u64) -> bool {
        matches!(self, Fault::SkipNoise(k) if step.is_multiple_of(k))
    }

    /// Whether step `step` (1-based) is recorded in the ledger.
    pub fn records(self, step: u64) -> bool {
        !matches!(self, Fault::LedgerUndercount) || step % 2 == 1
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NoClip => write!(f, "no-clip"),
            Fault::NoiseOnMean => write!(f, "noise-on-mean"),
            Fault::SkipNoise(k) => write!(f, "skip-noise:{k}"),
            Fault::LedgerUndercount => write!(f, "ledger-undercount"),
        }
    }
}

impl FromStr for Fault {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid("fault", s, "expected no-clip, noise-on-mean, skip-noise:K (K >= 1) or ledger-undercount")
        };
        Ok(match s {
            "no-clip" => Fault::NoClip,
            "noise-on-mean" => Fault::NoiseOnMean,
            "ledger-undercount" => Fault::LedgerUndercount,
            _ => match s.strip_prefix("skip-noise:") {
                Some(k) => match k.parse::<u64>() {
                    Ok(k) if k >= 1 => Fault::SkipNoise(k),
                    _ => return Err(bad()),
                },
                None => return Err(bad()),
            },
        })
    }
}

impl From<Fault> for String {
    fn from(f: Fault) -> String {
        f.to_string()
    }
}

impl TryFrom<String> for Fault {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_nonsense() {
        for f in [Fault::NoClip, Fault::NoiseOnMean, Fault::SkipNoise(3), Fault::LedgerUndercount] {
            assert_eq!(f.to_string().parse::<Fault>().unwrap(), f);
            let j = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<Fault>(&j).unwrap(), f);
        }
        for s in ["", "skip-noise:0", "skip-noise:x", "noclip"] {
            assert!(s.parse::<Fault>().is_err(), "{s}");
        }
        assert!(Fault::SkipNoise(2).skips_noise(4) && !Fault::SkipNoise(2).skips_noise(3));
        assert!(Fault::LedgerUndercount.records(1) && !Fault::LedgerUndercount.records(2));
        assert!(Fault::NoClip.records(2));
    }
}
