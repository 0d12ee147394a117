//! Cross-checks between what a run folder's files say: `metrics.json`, `ledger.jsonl` and
//! `checkpoint.json` must describe one run. Certificates and reports recompute epsilon from the
//! ledger alone, but they also print and certify what `metrics.json` says (its fault, its noise
//! seeding, its recipe): a folder whose files disagree is refused rather than described by
//! whichever file was read last.
use super::manifest::{CheckpointRecord, RecordedSeeding, RunMetrics, DP_PCA_LEDGER_LABEL};
use crate::accounting::ledger::{noise_seeding_of, LedgerEntry};
use crate::accounting::SamplingScheme;
use crate::error::{Error, Inconsistency, Result};
use std::path::Path;

/// Checks that `metrics` (the folder's `metrics.json`), `entries` (its ledger's complete lines)
/// and the folder's `checkpoint.json` (when there is one) agree on:
///
/// - the injected fault (`metrics.json` against `checkpoint.json`);
/// - the noise multiplier and sampling rate of every ledger step: against the configuration's
///   noise multiplier and `sampling_rate` of `metrics.json` (a DP-PCA step against
///   `pca.noise_multiplier` and q = 1), and against the phases `metrics.json` read back from
///   the ledger;
/// - the number of steps: `metrics.json`'s `steps` equals `checkpoint.json`'s, the ledger holds
///   at least that many steps (more when a crash lost updates after their steps were
///   recorded, which over-counts and is safe), and `metrics.json`'s phases cover exactly the
///   ledger's steps;
/// - the noise seeding: `metrics.json` against the seeding the ledger's steps record, and a
///   checkpoint that resumes with seeded noise against a `metrics.json` that says `csprng`.
///
/// Fields a file does not record (older or hand-made files) are not compared. With a recorded
/// injected fault the count of ledger steps is not compared (`ledger-undercount` records half
/// of them on purpose; such runs are never certified).
///
/// # Errors
/// [`Error::Inconsistent`] naming both files and the field at the first disagreement;
/// [`Error::Io`] / [`Error::Data`] for an unreadable `checkpoint.json`.
pub fn check_consistency(dir: &Path, metrics: &RunMetrics, entries: &[LedgerEntry]) -> Result<()> {
    let m = metrics.summary();
    // `checkpoint.json` of a `train` run; a GAN run's checkpoint has its own format (its
    // networks' state), which this does not compare.
    let checkpoint = match metrics {
        RunMetrics::Train(_) => CheckpointRecord::read(dir)?,
        RunMetrics::Gan(_) | RunMetrics::Imported(_) => None,
    };
    let mismatch = |field: &'static str, first: &str, first_value: String, second: String, second_value: String| {
        Err(Error::Inconsistent(Box::new(Inconsistency {
            folder: dir.to_path_buf(),
            field,
            first: first.to_owned(),
            first_value,
            second,
            second_value,
        })))
    };
    let or_none =
        |f: &Option<super::manifest::RecordedFault>| f.as_ref().map_or_else(|| "none".into(), |f| f.to_string());
    const METRICS: &str = super::METRICS_FILE;
    const LEDGER: &str = super::LEDGER_FILE;
    const CHECKPOINT: &str = super::CHECKPOINT_POINTER;

    // Injected fault.
    if let Some(c) = &checkpoint {
        if c.fault != m.inject_fault {
            return mismatch("injected fault", METRICS, or_none(&m.inject_fault), CHECKPOINT.into(), or_none(&c.fault));
        }
    }

    // Noise multiplier and sampling rate of every step, against the configuration.
    for e in entries {
        let (sigma, q) = if e.label == DP_PCA_LEDGER_LABEL {
            (m.pca_noise_multiplier, m.pca_noise_multiplier.map(|_| 1.0))
        } else {
            (m.config.noise_multiplier, m.sampling_rate)
        };
        if let Some(s) = sigma.filter(|&s| s != e.noise_multiplier) {
            let what = if e.label == DP_PCA_LEDGER_LABEL { "DP-PCA noise multiplier" } else { "noise multiplier" };
            return mismatch(
                what,
                METRICS,
                s.to_string(),
                format!("{LEDGER} step {}", e.step),
                e.noise_multiplier.to_string(),
            );
        }
        if let Some(q) = q.filter(|&q| q != e.sampling_rate) {
            return mismatch(
                "sampling rate",
                METRICS,
                q.to_string(),
                format!("{LEDGER} step {}", e.step),
                e.sampling_rate.to_string(),
            );
        }
    }

    // The phases metrics.json read back from the ledger, step by step.
    if let Some(phases) = &m.phases {
        if entries.iter().all(|e| e.sampling == SamplingScheme::Poisson) {
            let mut expected = phases.iter().flat_map(|p| (0..p.steps).map(move |_| p));
            for e in entries {
                let Some(p) = expected.next() else {
                    let total: u64 = phases.iter().map(|p| p.steps).sum();
                    return mismatch(
                        "steps",
                        &format!("{METRICS} phases"),
                        total.to_string(),
                        LEDGER.into(),
                        entries.len().to_string(),
                    );
                };
                let at = || format!("{LEDGER} step {}", e.step);
                if p.noise_multiplier != e.noise_multiplier {
                    return mismatch(
                        "noise multiplier",
                        &format!("{METRICS} phases"),
                        p.noise_multiplier.to_string(),
                        at(),
                        e.noise_multiplier.to_string(),
                    );
                }
                if p.sampling_rate != e.sampling_rate {
                    return mismatch(
                        "sampling rate",
                        &format!("{METRICS} phases"),
                        p.sampling_rate.to_string(),
                        at(),
                        e.sampling_rate.to_string(),
                    );
                }
            }
            if expected.next().is_some() {
                let total: u64 = phases.iter().map(|p| p.steps).sum();
                return mismatch(
                    "steps",
                    &format!("{METRICS} phases"),
                    total.to_string(),
                    LEDGER.into(),
                    entries.len().to_string(),
                );
            }
        }
    }

    // Number of steps.
    // All of the ledger's steps (DP-PCA's included), as certificates have always compared them.
    let ledger_steps = entries.len() as u64;
    let private = m.private.unwrap_or(!entries.is_empty());
    if let (Some(steps), Some(c)) = (m.steps, &checkpoint) {
        if steps != c.steps {
            return mismatch("steps", METRICS, steps.to_string(), CHECKPOINT.into(), c.steps.to_string());
        }
    }
    if private && m.inject_fault.is_none() {
        if let Some(steps) = m.steps.filter(|&s| ledger_steps < s) {
            return mismatch("steps", METRICS, steps.to_string(), LEDGER.into(), format!("{ledger_steps} steps"));
        }
        if let Some(c) = checkpoint.as_ref().filter(|c| c.config.private != Some(false) && ledger_steps < c.steps) {
            return mismatch("steps", CHECKPOINT, c.steps.to_string(), LEDGER.into(), format!("{ledger_steps} steps"));
        }
    }

    // Noise seeding.
    if let (Some(recorded), Some(from_ledger)) = (m.noise_seeding, noise_seeding_of(entries)) {
        if recorded.known() != Some(from_ledger) {
            return mismatch(
                "noise seeding",
                METRICS,
                recorded.as_str().into(),
                LEDGER.into(),
                from_ledger.as_str().into(),
            );
        }
    }
    if let (Some(RecordedSeeding::Csprng), Some(crate::noise_seeding::NoiseSeeding::Seeded)) =
        (m.noise_seeding, checkpoint.as_ref().and_then(|c| c.noise_seeding))
    {
        return mismatch("noise seeding", METRICS, "csprng".into(), CHECKPOINT.into(), "seeded".into());
    }
    Ok(())
}
