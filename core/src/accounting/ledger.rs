//! The privacy ledger: an append-only `ledger.jsonl` with one line per noisy step, made durable
//! (fsync) *before* the step's noisy update is applied. Epsilon is always computed from the
//! ledger, never from a step counter kept elsewhere, so a crash can only over-count.
//!
//! Proof of the crash property: [`proofs/accounting/ledger.md`](../../../proofs/accounting/ledger.md).
use crate::accounting::{Phase, SamplingScheme};
use crate::error::{Error, Result};
use crate::noise_seeding::NoiseSeeding;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A ledger file as found, read without changing it: what certificates, reports and verifiers
/// read (only [`Ledger::open`], which continues a run, repairs a torn line, and it parses the
/// bytes with the same rule, [`parse_ledger`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSnapshot {
    /// The steps of the complete lines.
    pub entries: Vec<LedgerEntry>,
    /// SHA-256 of the file's bytes (torn tail included), lowercase hex.
    pub sha256: String,
    /// Bytes after the last newline: a line torn by a crash, never counted (see the proof).
    pub torn_bytes: usize,
}

/// Reads the ledger at `path` without changing it (at most [`crate::durable::MAX_LEDGER_BYTES`]).
///
/// # Errors
/// [`Error::Io`] when it cannot be read or is larger than the cap; [`Error::Data`] for a complete
/// line that is not an entry or steps out of sequence ([`parse_ledger`]).
pub fn read_ledger(path: &Path) -> Result<LedgerSnapshot> {
    let bytes = crate::durable::read_at_most(path, crate::durable::MAX_LEDGER_BYTES)
        .map_err(|e| Error::io(format!("reading ledger {}", path.display()), e))?;
    let (entries, complete) = parse_ledger(&bytes, path)?;
    Ok(LedgerSnapshot {
        entries,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        torn_bytes: bytes.len() - complete,
    })
}

/// The one parsing rule of a ledger's bytes: every complete line (ending in a newline) must be an
/// entry, steps numbered 1, 2, 3, ...; bytes after the last newline are a torn line (a crash
/// inside [`Ledger::record`], whose step was never applied) and are not parsed. Returns the
/// entries and the length of the complete part.
///
/// # Errors
/// [`Error::Data`] naming `path` and the line.
pub fn parse_ledger(bytes: &[u8], path: &Path) -> Result<(Vec<LedgerEntry>, usize)> {
    let complete = crate::durable::complete_lines_len(bytes);
    let mut entries = Vec::new();
    for (lineno, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let entry: LedgerEntry = serde_json::from_slice(line)
            .map_err(|e| Error::data(path, format!("line {}: not a ledger entry: {e}", lineno + 1)))?;
        if entry.step != entries.len() as u64 + 1 {
            return Err(Error::data(
                path,
                format!("line {}: step {} out of sequence (expected {})", lineno + 1, entry.step, entries.len() + 1),
            ));
        }
        entries.push(entry);
    }
    Ok((entries, complete))
}

/// One noisy step of a Gaussian mechanism on private data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// 1-based index of the step in this ledger.
    pub step: u64,
    /// How the step's examples were chosen.
    pub sampling: SamplingScheme,
    /// Sampling rate q (expected lot size / dataset size; 1 for a full-batch release).
    pub sampling_rate: f64,
    /// Noise multiplier sigma (noise standard deviation / sensitivity).
    pub noise_multiplier: f64,
    /// The clipping norm C (the sensitivity), for the record.
    pub clipping_norm: f64,
    /// What the step was (e.g. `dpsgd`, `dp-pca`, `discriminator`).
    pub label: String,
    /// How the step's noise was seeded (`csprng` or `seeded`); absent in ledgers written before
    /// dpaudit recorded it (read as unknown: see [`noise_seeding_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_seeding: Option<NoiseSeeding>,
}

/// An open, append-only ledger file (or, for audit replays, a ledger kept in memory).
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// `None` for [`Ledger::in_memory`].
    file: Option<File>,
    entries: Vec<LedgerEntry>,
    repaired_bytes: u64,
    /// Written into every entry [`Ledger::record`] appends.
    noise_seeding: Option<NoiseSeeding>,
}

impl Ledger {
    /// Creates a new, empty ledger at `path`; refuses to overwrite an existing file.
    ///
    /// # Errors
    /// [`Error::Io`] if the file exists or cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating ledger {}", path.display()), e))?;
        sync_parent_dir(&path)?;
        Ok(Ledger { path, file: Some(file), entries: Vec::new(), repaired_bytes: 0, noise_seeding: None })
    }

    /// A ledger that lives only in memory: for audit replays, which train thousands of throwaway
    /// models whose epsilon is never certified. Nothing survives a crash, so never use it for a
    /// run whose privacy is reported; `dpaudit::train::dpsgd::DpSgd::new` always uses a file.
    pub fn in_memory() -> Self {
        Ledger {
            path: PathBuf::from("<memory>"),
            file: None,
            entries: Vec::new(),
            repaired_bytes: 0,
            noise_seeding: None,
        }
    }

    /// Opens an existing ledger to continue it (resume after a checkpoint or a crash).
    ///
    /// A torn final line (a crash in the middle of [`Ledger::record`]) is cut off: its fsync never
    /// returned, so its step's update was never applied (see the proof). Every complete line must
    /// parse and steps must be numbered 1, 2, 3, ... ; anything else is an error, never ignored.
    ///
    /// # Errors
    /// [`Error::Io`] on I/O failure, [`Error::Data`] for a corrupt ledger.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening ledger {}", path.display()), e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| Error::io(format!("reading ledger {}", path.display()), e))?;
        let (entries, complete) = parse_ledger(&bytes, &path)?;
        let repaired_bytes = (bytes.len() - complete) as u64;
        if repaired_bytes > 0 {
            file.set_len(complete as u64).map_err(|e| Error::io(format!("repairing ledger {}", path.display()), e))?;
            file.sync_all().map_err(|e| Error::io(format!("syncing ledger {}", path.display()), e))?;
        }
        file.seek(SeekFrom::End(0)).map_err(|e| Error::io(format!("seeking ledger {}", path.display()), e))?;
        Ok(Ledger { path, file: Some(file), entries, repaired_bytes, noise_seeding: None })
    }

    /// Appends one step and makes it durable (write, then `fsync`) before returning. Call it
    /// *before* applying the step's noisy update.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an invalid step; [`Error::Io`] if it could not be made
    /// durable, in which case the caller must not apply the update.
    pub fn record(
        &mut self,
        sampling: SamplingScheme,
        sampling_rate: f64,
        noise_multiplier: f64,
        clipping_norm: f64,
        label: &str,
    ) -> Result<&LedgerEntry> {
        Phase::new(sampling_rate, noise_multiplier, 1)?;
        if !(clipping_norm > 0.0 && clipping_norm.is_finite()) {
            return Err(Error::invalid("clipping norm C", clipping_norm, "must be a finite number > 0"));
        }
        let entry = LedgerEntry {
            step: self.entries.len() as u64 + 1,
            sampling,
            sampling_rate,
            noise_multiplier,
            clipping_norm,
            label: label.to_owned(),
            noise_seeding: self.noise_seeding,
        };
        if let Some(file) = self.file.as_mut() {
            let mut line = serde_json::to_vec(&entry).map_err(|e| Error::data(&self.path, e.to_string()))?;
            line.push(b'\n');
            file.write_all(&line).map_err(|e| Error::io(format!("appending to ledger {}", self.path.display()), e))?;
            file.sync_data().map_err(|e| Error::io(format!("syncing ledger {}", self.path.display()), e))?;
        }
        self.entries.push(entry);
        Ok(self.entries.last().expect("just pushed"))
    }

    /// Records `seeding` in every step appended from now on (the trainers set it from their run
    /// seed before their first step, and again after a resume).
    pub fn set_noise_seeding(&mut self, seeding: NoiseSeeding) {
        self.noise_seeding = Some(seeding);
    }

    /// Every recorded step.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// Number of recorded steps.
    pub fn steps(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Bytes of a torn final line that [`Ledger::open`] cut off (0 after a clean stop).
    pub fn repaired_bytes(&self) -> u64 {
        self.repaired_bytes
    }

    /// The ledger's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The steps as phases for the accountants: runs of consecutive steps with equal (q, sigma).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when a step was not Poisson-sampled: dpaudit's accountants
    /// cover only Poisson sampling and refuse to report a Poisson epsilon for anything else
    /// (Chua et al. 2024, "How Private are DP-SGD Implementations?").
    pub fn phases(&self) -> Result<Vec<Phase>> {
        phases_of(&self.entries)
    }
}

/// Run-length encodes ledger entries into phases (see [`Ledger::phases`]).
///
/// # Errors
/// As [`Ledger::phases`].
pub fn phases_of(entries: &[LedgerEntry]) -> Result<Vec<Phase>> {
    let mut phases: Vec<Phase> = Vec::new();
    for e in entries {
        if e.sampling != SamplingScheme::Poisson {
            return Err(Error::invalid(
                "sampling scheme",
                format!("{:?} (step {})", e.sampling, e.step),
                "only Poisson-sampled steps can be accounted; refusing to report a Poisson epsilon for them",
            ));
        }
        match phases.last_mut() {
            Some(p) if p.sampling_rate == e.sampling_rate && p.noise_multiplier == e.noise_multiplier => p.steps += 1,
            _ => phases.push(Phase::new(e.sampling_rate, e.noise_multiplier, 1)?),
        }
    }
    Ok(phases)
}

/// How the noise of a ledger's steps was seeded, taken together: `Some(Seeded)` when any step
/// says `seeded`; `Some(Csprng)` when every step says `csprng`; `None` (unknown) when no step says
/// `seeded` but some say nothing (ledgers written before dpaudit recorded it). An empty ledger is
/// unknown.
pub fn noise_seeding_of(entries: &[LedgerEntry]) -> Option<NoiseSeeding> {
    if entries.iter().any(|e| e.noise_seeding == Some(NoiseSeeding::Seeded)) {
        Some(NoiseSeeding::Seeded)
    } else if !entries.is_empty() && entries.iter().all(|e| e.noise_seeding == Some(NoiseSeeding::Csprng)) {
        Some(NoiseSeeding::Csprng)
    } else {
        None
    }
}

fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("syncing folder {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reopens_and_compresses_into_phases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::create(&path).unwrap();
        for _ in 0..3 {
            l.record(SamplingScheme::Poisson, 0.01, 1.1, 1.0, "dpsgd").unwrap();
        }
        l.record(SamplingScheme::Poisson, 1.0, 4.0, 1.0, "dp-pca").unwrap();
        drop(l);
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.steps(), 4);
        l.record(SamplingScheme::Poisson, 1.0, 4.0, 1.0, "dp-pca").unwrap();
        let phases = l.phases().unwrap();
        assert_eq!(phases, vec![Phase::new(0.01, 1.1, 3).unwrap(), Phase::new(1.0, 4.0, 2).unwrap()]);
        assert!(Ledger::create(&path).is_err(), "create must not overwrite a ledger");
    }

    #[test]
    fn torn_last_line_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::create(&path).unwrap();
        l.record(SamplingScheme::Poisson, 0.01, 1.1, 1.0, "dpsgd").unwrap();
        drop(l);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"step\":2,\"sampl").unwrap();
        drop(f);
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!((l.steps(), l.repaired_bytes()), (1, 16));
        l.record(SamplingScheme::Poisson, 0.01, 1.1, 1.0, "dpsgd").unwrap();
        assert_eq!(Ledger::open(&path).unwrap().steps(), 2);
    }

    #[test]
    fn corrupt_or_out_of_sequence_lines_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        std::fs::write(&path, "not json\n").unwrap();
        assert!(matches!(Ledger::open(&path), Err(Error::Data { .. })));
        let e = LedgerEntry {
            step: 2,
            sampling: SamplingScheme::Poisson,
            sampling_rate: 0.1,
            noise_multiplier: 1.0,
            clipping_norm: 1.0,
            label: "x".into(),
            noise_seeding: None,
        };
        std::fs::write(&path, format!("{}\n", serde_json::to_string(&e).unwrap())).unwrap();
        assert!(matches!(Ledger::open(&path), Err(Error::Data { .. })));
    }

    #[test]
    fn noise_seeding_is_recorded_per_step_and_older_lines_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        // A line as written before the field existed.
        std::fs::write(
            &path,
            "{\"step\":1,\"sampling\":\"poisson\",\"sampling_rate\":0.01,\"noise_multiplier\":1.1,\"clipping_norm\":1.0,\"label\":\"dpsgd\"}\n",
        )
        .unwrap();
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.entries()[0].noise_seeding, None);
        assert_eq!(noise_seeding_of(l.entries()), None, "unknown: older line");
        l.set_noise_seeding(NoiseSeeding::Csprng);
        l.record(SamplingScheme::Poisson, 0.01, 1.1, 1.0, "dpsgd").unwrap();
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.entries()[1].noise_seeding, Some(NoiseSeeding::Csprng));
        assert_eq!(noise_seeding_of(l.entries()), None, "one step of unknown seeding keeps the whole unknown");
        assert_eq!(noise_seeding_of(&l.entries()[1..]), Some(NoiseSeeding::Csprng));
        let mut seeded = l.entries()[1].clone();
        seeded.noise_seeding = Some(NoiseSeeding::Seeded);
        assert_eq!(noise_seeding_of(&[l.entries()[1].clone(), seeded]), Some(NoiseSeeding::Seeded));
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"noise_seeding\":\"csprng\""));
    }

    #[test]
    fn non_poisson_steps_are_refused_by_the_accountants() {
        let e = LedgerEntry {
            step: 1,
            sampling: SamplingScheme::Shuffled,
            sampling_rate: 0.1,
            noise_multiplier: 1.0,
            clipping_norm: 1.0,
            label: "x".into(),
            noise_seeding: None,
        };
        assert!(phases_of(&[e]).is_err());
    }

    #[test]
    fn invalid_steps_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::create(dir.path().join("l.jsonl")).unwrap();
        assert!(l.record(SamplingScheme::Poisson, 0.0, 1.0, 1.0, "x").is_err());
        assert!(l.record(SamplingScheme::Poisson, 0.1, f64::NAN, 1.0, "x").is_err());
        assert!(l.record(SamplingScheme::Poisson, 0.1, 1.0, -1.0, "x").is_err());
        assert_eq!(l.steps(), 0);
    }
}
