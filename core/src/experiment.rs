//! The one sharded experiment runner behind every experiment that trains many independent
//! models: the replay audit (`audit run` and `audit merge`, [`crate::audit::engine`], external
//! trainers included) and membership inference (`attack mia` and `attack merge`,
//! [`crate::attack::shadows`]). An experiment is a spec that lists its jobs ([`Experiment`]);
//! each job yields one record.
//!
//! An experiment folder holds `spec.json` (the spec, its digest and the shard whose records the
//! folder holds) and `runs.jsonl` (one JSON line per finished job). This module owns, for every
//! kind of experiment:
//! - **the spec check**: a folder holds the records of one spec and one shard; another spec's or
//!   another shard's run into it is refused, and a records file without its `spec.json` is
//!   never adopted;
//! - **the records file**: append-only, one line per finished job, fsynced before the job
//!   counts as done. A torn last line (a crash in the middle of an append) is never read, and is
//!   cut off before anything is appended after it: the privacy ledger's rule
//!   ([`crate::durable::complete_lines_len`], as [`crate::accounting::ledger::parse_ledger`]);
//! - **resume**: the jobs a folder already records are not run again;
//! - **shards**: `i/N`, `auto` and `auto/N` ([`Shard`]); shard i of N runs the jobs whose shard key
//!   is i modulo N;
//! - **the pool**: the pending jobs run on a number of threads, with progress; the first failure
//!   stops every worker after its current job, and the records written before it are kept;
//! - **merge**: shard folders gathered into one, refusing folders of another spec, a record in
//!   two folders and a record outside its folder's shard.
//!
//! Folder locks ([`crate::folder_lock`]) stay with the caller: [`open_folder`] takes the lock
//! and hands it back, to be held while [`run_pending`] appends.
use crate::durable::write_atomically;
use crate::error::{Error, Result};
use crate::folder_lock::FolderLock;
use crate::run_folder::{RUNS_FILE, SPEC_FILE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The words an experiment's messages use.
#[derive(Debug, Clone, Copy)]
pub struct Vocabulary {
    /// The experiment as a whole: `audit`, `experiment`.
    pub experiment: &'static str,
    /// Its folder: `audit folder`, `experiment folder`.
    pub folder: &'static str,
    /// What one job makes: `run`, `model`.
    pub item: &'static str,
    /// What shards split, after its count: `run indices (...)`, `models`.
    pub shard_units: &'static str,
}

/// A kind of experiment, implemented by its spec: the jobs it runs, the record each job yields
/// and how a record is checked against the spec.
pub trait Experiment: Serialize + DeserializeOwned + Clone {
    /// One finished job (a line of `runs.jsonl`).
    type Record: Serialize + DeserializeOwned;
    /// What identifies a job (and its record).
    type Job: Copy + Ord + Hash + Debug + Send + Sync;
    /// The words of this experiment's messages.
    const WORDS: Vocabulary;
    /// How a `spec.json` with no `shard` field is read: `true`, the whole experiment (audit
    /// folders have always recorded their shard, `null` for the whole audit); `false`, an
    /// unrecorded shard (membership-inference folders written before shards were recorded), so
    /// any shard may resume it and its records' shard is not checked.
    const ABSENT_SHARD_IS_WHOLE: bool;

    /// SHA-256 of the spec's JSON (unchanged by this module).
    fn digest(&self) -> String;
    /// Checks every value's domain.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the key.
    fn validate(&self) -> Result<()>;
    /// Every job of the whole experiment, in the order they run.
    fn jobs(&self) -> Vec<Self::Job>;
    /// The number that places a job in a shard (shard i of N owns the jobs whose key is i mod N);
    /// `None` for a job no shard splits (the one training of a one-run audit).
    fn shard_key(&self, job: Self::Job) -> Option<u64>;
    /// How many distinct shard keys the experiment has: the most shards it can be split into.
    fn shard_keys(&self) -> u64;
    /// The job a record is the outcome of.
    fn job_of(record: &Self::Record) -> Self::Job;
    /// The job in words (`Without 3`, `index 3`).
    fn job_label(job: Self::Job) -> String;
    /// Checks a record's own fields against the spec (not duplicates or shards, which
    /// [`verify_records`] checks).
    ///
    /// # Errors
    /// Why the record does not belong to this spec, in words.
    fn check_record(&self, record: &Self::Record) -> std::result::Result<(), String>;
}

/// Progress of [`run_pending`]: (jobs done in this shard, jobs in this shard).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// One job's work in [`run_pending`]: runs the job on a worker and returns its record.
pub type RunJob<'a, E, W> = &'a (dyn Fn(&mut W, <E as Experiment>::Job) -> Result<<E as Experiment>::Record> + Sync);

/// [`merge`]'s check of the gathered records, before anything is written.
pub type MergeCheck<'a, E> = &'a dyn Fn(&E, &[<E as Experiment>::Record]) -> Result<()>;

/// One shard of the work: the jobs whose shard key ([`Experiment::shard_key`]) is the shard's
/// index modulo the shard count (for an audit, both sides of a run index, so every shard holds
/// both sides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, 0-based.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Shard {
    /// The whole experiment.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/N`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `0 <= i < N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid("shard", s, "expected i/N with 0 <= i < N, e.g. 3/16");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard runs the jobs of shard key `key`: `key mod count = index`.
    pub fn owns(self, key: u64) -> bool {
        key % u64::from(self.count) == u64::from(self.index)
    }

    /// Parses a shard argument: `i/N`, `auto` (from the scheduler's environment, see
    /// [`Shard::from_scheduler`]) or `auto/N` (the same, with the count given, as a Kubernetes
    /// indexed Job needs).
    ///
    /// # Errors
    /// As [`Shard::parse`] and [`Shard::from_scheduler`].
    pub fn resolve(s: &str, var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        match s.trim() {
            "auto" => Shard::from_scheduler(var, None),
            t => match t.strip_prefix("auto/") {
                Some(n) => {
                    let count = n.trim().parse::<u32>().ok().filter(|&c| c > 0).ok_or_else(|| {
                        Error::invalid("shard", s, "expected auto/N with N a positive whole number, e.g. auto/16")
                    })?;
                    Shard::from_scheduler(var, Some(count))
                }
                None => Shard::parse(t),
            },
        }
    }

    /// The shard a batch scheduler assigns to this process, from its environment (`var` reads
    /// one variable): a Slurm array task (`SLURM_ARRAY_TASK_ID` counted from
    /// `SLURM_ARRAY_TASK_MIN`, out of `SLURM_ARRAY_TASK_COUNT`; the array must have step 1), or a
    /// Kubernetes indexed Job (`JOB_COMPLETION_INDEX`, out of `count`, which Kubernetes does not
    /// export). `count`, when given, must agree with Slurm's.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when neither scheduler's variables are set, when they are not
    /// numbers, when the array has a step other than 1, or when the index is not below the count.
    ///
    /// # Examples
    /// ```
    /// use dpaudit_core::experiment::Shard;
    /// let env = |k: &str| match k {
    ///     "SLURM_ARRAY_TASK_ID" => Some("5".to_string()),
    ///     "SLURM_ARRAY_TASK_MIN" => Some("4".to_string()),
    ///     "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
    ///     _ => None,
    /// };
    /// assert_eq!(Shard::from_scheduler(env, None)?, Shard { index: 1, count: 4 });
    /// # Ok::<(), dpaudit_core::Error>(())
    /// ```
    pub fn from_scheduler(var: impl Fn(&str) -> Option<String>, count: Option<u32>) -> Result<Self> {
        let number = |name: &'static str| -> Result<Option<u64>> {
            match var(name) {
                None => Ok(None),
                Some(v) => {
                    v.trim().parse::<u64>().map(Some).map_err(|_| Error::invalid(name, v, "must be a whole number"))
                }
            }
        };
        let (index, total) = if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            if let Some(step) = number("SLURM_ARRAY_TASK_STEP")? {
                if step != 1 {
                    return Err(Error::invalid(
                        "SLURM_ARRAY_TASK_STEP",
                        step,
                        "shards need a contiguous array (step 1), e.g. --array=0-15",
                    ));
                }
            }
            let total = number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::invalid("SLURM_ARRAY_TASK_COUNT", "unset", "Slurm sets it for array jobs (Slurm 17.02 or later)")
            })?;
            if let Some(c) = count {
                if u64::from(c) != total {
                    return Err(Error::invalid(
                        "shard count",
                        c,
                        format!("the Slurm array has {total} tasks (SLURM_ARRAY_TASK_COUNT)"),
                    ));
                }
            }
            (id.checked_sub(min), total)
        } else if let Some(i) = number("JOB_COMPLETION_INDEX")? {
            let total = count.map(u64::from).ok_or_else(|| {
                Error::invalid(
                    "shard count",
                    "missing",
                    "a Kubernetes indexed Job does not export its completions: give the count (auto/N)",
                )
            })?;
            (Some(i), total)
        } else {
            return Err(Error::invalid(
                "shard",
                "auto",
                "no scheduler index found (SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX); give i/N",
            ));
        };
        let ok = |v: u64| u32::try_from(v).ok();
        match (index, ok(total)) {
            (Some(i), Some(n)) if n > 0 && i < u64::from(n) => Ok(Shard { index: i as u32, count: n }),
            _ => Err(Error::invalid(
                "shard",
                format!("{index:?} of {total}"),
                "the scheduler's index is not below its task count",
            )),
        }
    }

    /// Checks that the shard owns at least one of the experiment's jobs (at most one shard per
    /// shard key).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `count` exceeds the experiment's shard keys.
    pub fn check_against<E: Experiment>(self, spec: &E) -> Result<()> {
        let keys = spec.shard_keys();
        if u64::from(self.count) > keys {
            let w = E::WORDS;
            return Err(Error::invalid(
                "shard",
                format!("{}/{}", self.index, self.count),
                format!(
                    "the {} has {keys} {}, so at most {keys} shards (a shard that owns no {} records nothing that can be checked)",
                    w.experiment, w.shard_units, w.item
                ),
            ));
        }
        Ok(())
    }
}

/// `spec.json` as written.
#[derive(Serialize)]
struct SpecFileOut<'a, E> {
    digest: String,
    spec: &'a E,
    /// The shard the folder's records belong to (`None`: the whole experiment, or a merged folder).
    shard: Option<Shard>,
}

/// `spec.json` as read: `shard` is `None` when the field is absent, `Some(None)` when null.
#[derive(Deserialize)]
#[serde(bound = "E: DeserializeOwned")]
struct SpecFileIn<E> {
    digest: String,
    spec: E,
    #[serde(default, deserialize_with = "present")]
    shard: Option<Option<Shard>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<Shard>>, D::Error> {
    Option::<Shard>::deserialize(d).map(Some)
}

/// The shard whose records a folder holds, as its `spec.json` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FolderShard {
    /// `None`: the whole experiment (or a merged folder).
    Recorded(Option<Shard>),
    /// Written before this kind of experiment recorded its shard.
    Unrecorded,
}

impl FolderShard {
    /// The shard to check records against (none for the whole experiment or an unrecorded one).
    fn checked(self) -> Option<Shard> {
        match self {
            FolderShard::Recorded(s) => s,
            FolderShard::Unrecorded => None,
        }
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Reads a folder's `spec.json`, checking the spec against its digest.
fn read_spec_file<E: Experiment>(dir: &Path) -> Result<(E, FolderShard)> {
    let path = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let sf: SpecFileIn<E> = serde_json::from_str(&text).map_err(|e| Error::data(&path, e.to_string()))?;
    if sf.spec.digest() != sf.digest {
        return Err(Error::data(&path, "the spec does not match its digest"));
    }
    Ok((sf.spec, folder_shard::<E>(sf.shard)))
}

fn folder_shard<E: Experiment>(field: Option<Option<Shard>>) -> FolderShard {
    match field {
        Some(s) => FolderShard::Recorded(s),
        None if E::ABSENT_SHARD_IS_WHOLE => FolderShard::Recorded(None),
        None => FolderShard::Unrecorded,
    }
}

/// Writes `spec.json` for `spec` and `shard` in a new folder, or checks that the folder's holds
/// the same spec (digest) and shard.
fn check_or_write_spec<E: Experiment>(dir: &Path, spec: &E, shard: Option<Shard>) -> Result<()> {
    let w = E::WORDS;
    let folder = w.folder;
    let path = dir.join(SPEC_FILE);
    let digest = spec.digest();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let old: SpecFileIn<E> = serde_json::from_str(&text).map_err(|e| Error::data(&path, e.to_string()))?;
            if old.digest != digest || old.spec.digest() != digest {
                return Err(Error::invalid(
                    folder,
                    dir.display(),
                    format!(
                        "holds {}s of another spec (digest {} vs {digest}); use a new --out",
                        w.item,
                        short(&old.digest)
                    ),
                ));
            }
            match folder_shard::<E>(old.shard) {
                FolderShard::Recorded(old) if old != shard => {
                    let name = |s: Option<Shard>| {
                        s.map_or(format!("the whole {}", w.experiment), |s| format!("shard {}/{}", s.index, s.count))
                    };
                    Err(Error::invalid(
                        folder,
                        dir.display(),
                        format!("holds the {}s of {}, not of {}; use a new --out", w.item, name(old), name(shard)),
                    ))
                }
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let runs = dir.join(RUNS_FILE);
            if std::fs::metadata(&runs).is_ok_and(|m| m.len() > 0) {
                return Err(Error::invalid(
                    folder,
                    dir.display(),
                    format!(
                        "has a {RUNS_FILE} but no {SPEC_FILE}: {}s of unknown origin are not adopted; use a new --out",
                        w.item
                    ),
                ));
            }
            let json = serde_json::to_vec_pretty(&SpecFileOut { digest, spec, shard })
                .map_err(|e| Error::data(&path, e.to_string()))?;
            write_atomically(&path, &json)
        }
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// The one parsing rule of a records file's bytes: bytes after the last newline are a torn line
/// (a crash in the middle of an append, whose job never counted as done) and are not parsed;
/// every complete line that is not blank must be a record. Returns the records and the length of
/// the complete part.
fn parse_records<R: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<(Vec<R>, usize)> {
    let complete = crate::durable::complete_lines_len(bytes);
    let mut records = Vec::new();
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        records.push(serde_json::from_slice(line).map_err(|e| Error::data(path, format!("line {}: {e}", i + 1)))?);
    }
    Ok((records, complete))
}

/// Reads the records of a folder without changing it (a torn last line, from a crash, is not
/// read; none when there is no records file).
///
/// # Errors
/// I/O errors; [`Error::Data`] for a complete line that is not a record.
pub fn read_records<R: DeserializeOwned>(dir: &Path) -> Result<Vec<R>> {
    let path = dir.join(RUNS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    Ok(parse_records(&bytes, &path)?.0)
}

/// Reads the records of a folder to append after them: as [`read_records`], and a torn last line
/// is cut off (and the cut made durable) so that the next record starts on a line of its own.
fn read_and_repair<R: DeserializeOwned>(dir: &Path) -> Result<Vec<R>> {
    let path = dir.join(RUNS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let (records, complete) = parse_records(&bytes, &path)?;
    if complete < bytes.len() {
        let repair = |e| Error::io(format!("repairing {}", path.display()), e);
        let f = OpenOptions::new().write(true).open(&path).map_err(repair)?;
        f.set_len(complete as u64).map_err(repair)?;
        f.sync_all().map_err(repair)?;
    }
    Ok(records)
}

/// Checks records against the spec they claim to belong to: the spec's own check of each
/// ([`Experiment::check_record`]), no job twice and, for a shard's folder (`shard`), only jobs
/// the shard owns.
///
/// # Errors
/// [`Error::Data`] naming `origin`, the first bad record (1-based), its job and why.
pub fn verify_records<E: Experiment>(
    spec: &E,
    shard: Option<Shard>,
    records: &[E::Record],
    origin: &Path,
) -> Result<()> {
    let item = E::WORDS.item;
    let mut seen = HashSet::new();
    for (i, r) in records.iter().enumerate() {
        let job = E::job_of(r);
        let bad = |why: String| Error::data(origin, format!("{item} record {} ({}): {why}", i + 1, E::job_label(job)));
        spec.check_record(r).map_err(bad)?;
        if !seen.insert(job) {
            return Err(bad("appears twice".into()));
        }
        if let (Some(s), Some(key)) = (shard, spec.shard_key(job)) {
            if !s.owns(key) {
                return Err(bad(format!("is not a {item} of shard {}/{}", s.index, s.count)));
            }
        }
    }
    Ok(())
}

/// Opens a folder for a shard's jobs: checks the shard against the spec, takes the folder's lock
/// (creating the folder), writes or checks its `spec.json`, reads the records it already holds
/// (cutting off a torn last line) and checks them ([`verify_records`]). Hold the returned lock
/// while running the jobs.
///
/// # Errors
/// A shard that owns no job; a folder locked by another process, holding another spec's or
/// another shard's records, or records without a `spec.json`; records that do not check; I/O
/// errors.
pub fn open_folder<E: Experiment>(spec: &E, dir: &Path, shard: Shard) -> Result<(FolderLock, Vec<E::Record>)> {
    shard.check_against(spec)?;
    // One writer per folder, before runs.jsonl is read or appended to (creates the folder).
    let lock = FolderLock::acquire(dir)?;
    let shard_of_folder = (shard != Shard::ALL).then_some(shard);
    check_or_write_spec(dir, spec, shard_of_folder)?;
    let (_, recorded) = read_spec_file::<E>(dir)?;
    let existing = read_and_repair(dir)?;
    verify_records(spec, recorded.checked(), &existing, &dir.join(RUNS_FILE))?;
    Ok((lock, existing))
}

/// Runs the shard's jobs that `existing` lacks on `threads` workers (each made by `new_worker`
/// in its own thread, each job run by `run_one`), appending each record to `runs.jsonl` and
/// fsyncing it as it finishes; `progress` hears (done, total) at the start and after each job.
/// The first error stops every worker after its current job, and the records written before it
/// are kept. If `stop` becomes true the workers finish their current job and return. Call it
/// with the lock and records of [`open_folder`]. Returns every record of the folder.
///
/// # Errors
/// The first worker or job error; I/O errors.
#[allow(clippy::too_many_arguments)]
pub fn run_pending<E: Experiment, W>(
    spec: &E,
    dir: &Path,
    shard: Shard,
    threads: usize,
    existing: &[E::Record],
    progress: Progress<'_>,
    stop: &AtomicBool,
    new_worker: &(dyn Fn() -> Result<W> + Sync),
    run_one: RunJob<'_, E, W>,
) -> Result<Vec<E::Record>> {
    let done: HashSet<E::Job> = existing.iter().map(E::job_of).collect();
    let mine: Vec<E::Job> =
        spec.jobs().into_iter().filter(|&j| spec.shard_key(j).is_none_or(|k| shard.owns(k))).collect();
    let todo: Vec<E::Job> = mine.iter().copied().filter(|j| !done.contains(j)).collect();
    let total = mine.len() as u64;
    let finished = AtomicU64::new(total - todo.len() as u64);
    progress(finished.load(Ordering::Relaxed), total);
    let path = dir.join(RUNS_FILE);
    let file = Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?,
    );
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let threads = threads.clamp(1, todo.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut worker = match new_worker() {
                    Ok(w) => w,
                    Err(e) => {
                        first_error.lock().expect("lock").get_or_insert(e);
                        return;
                    }
                };
                loop {
                    if stop.load(Ordering::Relaxed) || first_error.lock().expect("lock").is_some() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&job) = todo.get(i) else { return };
                    let result = run_one(&mut worker, job).and_then(|rec| {
                        let mut line = serde_json::to_vec(&rec).map_err(|e| Error::data(&path, e.to_string()))?;
                        line.push(b'\n');
                        let mut f = file.lock().expect("lock");
                        f.write_all(&line)
                            .and_then(|()| f.sync_data())
                            .map_err(|e| Error::io(format!("appending to {}", path.display()), e))
                    });
                    if let Err(e) = result {
                        first_error.lock().expect("lock").get_or_insert(e);
                        return;
                    }
                    progress(finished.fetch_add(1, Ordering::Relaxed) + 1, total);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().expect("lock") {
        return Err(e);
    }
    read_records(dir)
}

/// Writes a folder's whole records file at once, atomically (a merge, or the records of one
/// training that yields several).
///
/// # Errors
/// I/O errors.
pub fn write_records<'a, R: Serialize + 'a>(dir: &Path, records: impl IntoIterator<Item = &'a R>) -> Result<()> {
    let mut bytes = Vec::new();
    for r in records {
        bytes.extend(serde_json::to_vec(r).map_err(|e| Error::data(dir, e.to_string()))?);
        bytes.push(b'\n');
    }
    write_atomically(&dir.join(RUNS_FILE), &bytes)
}

/// Reads a folder's spec (checked against its digest and validated), the shard its records belong
/// to (`None`: the whole experiment, a merged folder, or a folder that did not record it) and its
/// records (not checked).
///
/// # Errors
/// A missing or corrupt `spec.json` or `runs.jsonl`; a spec that does not match its digest or
/// does not validate.
pub fn read_folder<E: Experiment>(dir: &Path) -> Result<(E, Option<Shard>, Vec<E::Record>)> {
    let (spec, shard) = read_spec_file::<E>(dir)?;
    spec.validate()?;
    Ok((spec, shard.checked(), read_records(dir)?))
}

/// Gathers the records of several shard folders into `out`, which gets the spec and every record
/// once (ordered by job). Every folder's spec must match its digest and the first folder's, and
/// its records must check against it and its shard ([`verify_records`]); a record found in two
/// folders, a shard index outside its count, or a shard count above the experiment's shard keys
/// is refused. `check` runs on the gathered records before anything is written to `out`.
///
/// # Errors
/// Folders of different specs, records that do not check, corrupt files, I/O errors, and
/// `check`'s.
pub fn merge<E: Experiment>(dirs: &[PathBuf], out: &Path, check: MergeCheck<'_, E>) -> Result<(E, Vec<E::Record>)> {
    let item = E::WORDS.item;
    let mut spec: Option<E> = None;
    let mut records: BTreeMap<E::Job, E::Record> = BTreeMap::new();
    for d in dirs {
        let path = d.join(SPEC_FILE);
        let (folder_spec, shard) = read_spec_file::<E>(d)?;
        if spec.as_ref().is_some_and(|s| s.digest() != folder_spec.digest()) {
            return Err(Error::invalid("shard folder", d.display(), format!("holds {item}s of another spec")));
        }
        folder_spec.validate()?;
        if let Some(sh) = shard.checked() {
            if sh.count == 0 || sh.index >= sh.count {
                return Err(Error::data(&path, format!("shard {}/{} is outside its count", sh.index, sh.count)));
            }
            sh.check_against(&folder_spec).map_err(|e| Error::data(&path, e.to_string()))?;
        }
        let runs = d.join(RUNS_FILE);
        let folder_records: Vec<E::Record> = read_records(d)?;
        verify_records(&folder_spec, shard.checked(), &folder_records, &runs)?;
        for r in folder_records {
            let job = E::job_of(&r);
            if records.contains_key(&job) {
                return Err(Error::data(
                    &runs,
                    format!("{item} {} is also in another folder: each {item} belongs to one shard", E::job_label(job)),
                ));
            }
            records.insert(job, r);
        }
        spec.get_or_insert(folder_spec);
    }
    let spec = spec.ok_or_else(|| Error::invalid("shard folders", 0, "give at least one"))?;
    let records: Vec<E::Record> = records.into_values().collect();
    check(&spec, &records)?;
    let _lock = FolderLock::acquire(out)?;
    check_or_write_spec(out, &spec, None)?;
    write_records(out, &records)?;
    Ok((spec, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy experiment: `jobs` jobs, job j records `value = 10 j + salt` (the salt makes specs
    /// of different digests).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Toy {
        jobs: u64,
        salt: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct ToyRecord {
        job: u64,
        value: u64,
    }

    impl Experiment for Toy {
        type Record = ToyRecord;
        type Job = u64;
        const WORDS: Vocabulary =
            Vocabulary { experiment: "toy", folder: "toy folder", item: "job", shard_units: "jobs" };
        const ABSENT_SHARD_IS_WHOLE: bool = true;
        fn digest(&self) -> String {
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(serde_json::to_vec(self).unwrap()))
        }
        fn validate(&self) -> Result<()> {
            Ok(())
        }
        fn jobs(&self) -> Vec<u64> {
            (0..self.jobs).collect()
        }
        fn shard_key(&self, job: u64) -> Option<u64> {
            Some(job)
        }
        fn shard_keys(&self) -> u64 {
            self.jobs
        }
        fn job_of(r: &ToyRecord) -> u64 {
            r.job
        }
        fn job_label(job: u64) -> String {
            format!("#{job}")
        }
        fn check_record(&self, r: &ToyRecord) -> std::result::Result<(), String> {
            if r.job >= self.jobs {
                return Err("outside the spec".into());
            }
            if r.value != 10 * r.job + self.salt {
                return Err(format!("value {} is not the spec's", r.value));
            }
            Ok(())
        }
    }

    impl Toy {
        fn record(&self, job: u64) -> ToyRecord {
            ToyRecord { job, value: 10 * job + self.salt }
        }
    }

    /// The toy, of a kind whose folders once did not record their shard (as membership
    /// inference's).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(transparent)]
    struct LegacyToy(Toy);

    impl Experiment for LegacyToy {
        type Record = ToyRecord;
        type Job = u64;
        const WORDS: Vocabulary = Toy::WORDS;
        const ABSENT_SHARD_IS_WHOLE: bool = false;
        fn digest(&self) -> String {
            Experiment::digest(&self.0)
        }
        fn validate(&self) -> Result<()> {
            Ok(())
        }
        fn jobs(&self) -> Vec<u64> {
            self.0.jobs()
        }
        fn shard_key(&self, job: u64) -> Option<u64> {
            self.0.shard_key(job)
        }
        fn shard_keys(&self) -> u64 {
            self.0.shard_keys()
        }
        fn job_of(r: &ToyRecord) -> u64 {
            Toy::job_of(r)
        }
        fn job_label(job: u64) -> String {
            Toy::job_label(job)
        }
        fn check_record(&self, r: &ToyRecord) -> std::result::Result<(), String> {
            self.0.check_record(r)
        }
    }

    /// Runs `spec`'s shard in `dir` on `threads` threads, failing at job `fail_at`; returns the
    /// result and the jobs run, in order.
    fn go(
        spec: &Toy,
        dir: &Path,
        shard: Shard,
        threads: usize,
        fail_at: Option<u64>,
    ) -> (Result<Vec<ToyRecord>>, Vec<u64>) {
        let ran = Mutex::new(Vec::new());
        let result = open_folder(spec, dir, shard).and_then(|(_lock, existing)| {
            run_pending(
                spec,
                dir,
                shard,
                threads,
                &existing,
                &|_, _| {},
                &AtomicBool::new(false),
                &|| Ok(()),
                &|(), job| {
                    ran.lock().unwrap().push(job);
                    if Some(job) == fail_at {
                        return Err(Error::invalid("job", job, "fails on purpose"));
                    }
                    Ok(spec.record(job))
                },
            )
        });
        (result, ran.into_inner().unwrap())
    }

    fn jobs_of(records: &[ToyRecord]) -> Vec<u64> {
        let mut v: Vec<u64> = records.iter().map(|r| r.job).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_torn_last_line_is_not_read_and_is_cut_off_before_appending() {
        let spec = Toy { jobs: 4, salt: 1 };
        let dir = tempfile::tempdir().unwrap();
        go(&spec, dir.path(), Shard::ALL, 1, Some(2)).0.unwrap_err();
        let path = dir.path().join(RUNS_FILE);
        let whole = std::fs::read(&path).unwrap();
        // A crash in the middle of appending job 2's line: half of it, no newline.
        let line = serde_json::to_vec(&spec.record(2)).unwrap();
        let mut torn = whole.clone();
        torn.extend_from_slice(&line[..line.len() / 2]);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(jobs_of(&read_records::<ToyRecord>(dir.path()).unwrap()), vec![0, 1]);
        assert_eq!(std::fs::read(&path).unwrap(), torn, "reading changes nothing");
        // Opening to append cuts the torn bytes off, exactly.
        let (lock, existing) = open_folder(&spec, dir.path(), Shard::ALL).unwrap();
        drop(lock);
        assert_eq!(jobs_of(&existing), vec![0, 1]);
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        let (records, ran) = go(&spec, dir.path(), Shard::ALL, 1, None);
        assert_eq!(ran, vec![2, 3]);
        assert_eq!(records.unwrap(), (0..4).map(|j| spec.record(j)).collect::<Vec<_>>());
        // The ledger's rule: the complete part ends at the last newline, as for a ledger.
        for bytes in [&b""[..], b"{", b"{}\n", b"{}\n{\"a\"", b"\n\n"] {
            assert_eq!(
                parse_records::<serde_json::Value>(bytes, Path::new("x")).map(|r| r.1).unwrap(),
                bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
            );
        }
        // A complete line that is not a record is an error, never skipped.
        std::fs::write(&path, b"{\"job\":0,\"value\":1}\nnot json\n").unwrap();
        let e = read_records::<ToyRecord>(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn resume_runs_only_the_jobs_not_recorded() {
        let spec = Toy { jobs: 6, salt: 2 };
        let dir = tempfile::tempdir().unwrap();
        // Jobs 0 and 1 finish, job 2 fails.
        let (result, ran) = go(&spec, dir.path(), Shard::ALL, 1, Some(2));
        assert!(result.is_err());
        assert_eq!(ran, vec![0, 1, 2]);
        let (result, ran) = go(&spec, dir.path(), Shard::ALL, 3, None);
        let mut ran = ran;
        ran.sort_unstable();
        assert_eq!(ran, vec![2, 3, 4, 5]);
        assert_eq!(jobs_of(&result.unwrap()), (0..6).collect::<Vec<_>>());
        // Nothing left: nothing runs.
        let (result, ran) = go(&spec, dir.path(), Shard::ALL, 2, None);
        assert!(ran.is_empty());
        assert_eq!(result.unwrap().len(), 6);
        // A shard runs only its own jobs.
        let part = tempfile::tempdir().unwrap();
        let (result, ran) = go(&spec, part.path(), Shard { index: 1, count: 4 }, 2, None);
        let mut ran = ran;
        ran.sort_unstable();
        assert_eq!(ran, vec![1, 5]);
        assert_eq!(jobs_of(&result.unwrap()), vec![1, 5]);
        // Another spec, or another shard, in the same folder is refused before any job runs.
        let (result, ran) = go(&Toy { jobs: 6, salt: 3 }, dir.path(), Shard::ALL, 1, None);
        assert!(result.unwrap_err().to_string().contains("another spec"));
        assert!(ran.is_empty());
        let (result, ran) = go(&spec, part.path(), Shard { index: 2, count: 4 }, 1, None);
        assert!(result.unwrap_err().to_string().contains("shard 1/4, not of shard 2/4"));
        assert!(ran.is_empty());
    }

    #[test]
    fn a_failing_job_stops_the_run_and_keeps_the_records_before_it() {
        let spec = Toy { jobs: 40, salt: 0 };
        for threads in [1, 4] {
            let dir = tempfile::tempdir().unwrap();
            let (result, ran) = go(&spec, dir.path(), Shard::ALL, threads, Some(5));
            let e = result.unwrap_err().to_string();
            assert!(e.contains("fails on purpose"), "{e}");
            let kept: Vec<ToyRecord> = read_records(dir.path()).unwrap();
            // Every job that ran and did not fail is recorded, whole; the failed one is not.
            let mut expected: Vec<u64> = ran.iter().copied().filter(|&j| j != 5).collect();
            expected.sort_unstable();
            assert_eq!(jobs_of(&kept), expected, "{threads} threads");
            assert!(kept.iter().all(|r| *r == spec.record(r.job)));
            // One worker stops at the failure. (How many jobs other workers finish before they
            // see it depends on scheduling, so only the records are checked for them.)
            if threads == 1 {
                assert_eq!(ran, (0..=5).collect::<Vec<_>>());
            }
        }
        // A worker that cannot be made stops the run before any job.
        let dir = tempfile::tempdir().unwrap();
        let (_lock, existing) = open_folder(&spec, dir.path(), Shard::ALL).unwrap();
        let e = run_pending::<Toy, ()>(
            &spec,
            dir.path(),
            Shard::ALL,
            2,
            &existing,
            &|_, _| {},
            &AtomicBool::new(false),
            &|| Err(Error::invalid("worker", 0, "cannot start")),
            &|(), j| Ok(spec.record(j)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot start"));
        assert!(read_records::<ToyRecord>(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn merge_refuses_duplicates_foreign_specs_and_records_outside_their_shard() {
        let spec = Toy { jobs: 6, salt: 4 };
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("shard{i}"))).collect();
        for (i, d) in dirs.iter().enumerate() {
            go(&spec, d, Shard { index: i as u32, count: 3 }, 1, None).0.unwrap();
        }
        let ok = |_: &Toy, _: &[ToyRecord]| Ok(());
        let (merged_spec, records) = merge(&dirs, &root.path().join("all"), &ok).unwrap();
        assert_eq!(merged_spec, spec);
        assert_eq!(records, (0..6).map(|j| spec.record(j)).collect::<Vec<_>>());
        assert_eq!(read_folder::<Toy>(&root.path().join("all")).unwrap(), (spec.clone(), None, records));
        // The same folder twice.
        let twice = [dirs[0].clone(), dirs[0].clone()];
        let e = merge(&twice, &root.path().join("twice"), &ok).unwrap_err().to_string();
        assert!(e.contains("job #0 is also in another folder"), "{e}");
        assert!(!root.path().join("twice").exists(), "a refused merge writes nothing");
        // A folder of another spec.
        let other = root.path().join("other");
        go(&Toy { jobs: 6, salt: 5 }, &other, Shard { index: 1, count: 3 }, 1, None).0.unwrap();
        let e = merge(&[dirs[0].clone(), other], &root.path().join("foreign"), &ok).unwrap_err().to_string();
        assert!(e.contains("holds jobs of another spec"), "{e}");
        // A spec.json that does not match its digest.
        let forged = root.path().join("forged");
        std::fs::create_dir_all(&forged).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dirs[1].join(SPEC_FILE)).unwrap()).unwrap();
        v["spec"]["salt"] = 9.into();
        std::fs::write(forged.join(SPEC_FILE), v.to_string()).unwrap();
        std::fs::copy(dirs[1].join(RUNS_FILE), forged.join(RUNS_FILE)).unwrap();
        let e = merge(&[forged], &root.path().join("f"), &ok).unwrap_err().to_string();
        assert!(e.contains("does not match its digest"), "{e}");
        // A genuine record of the spec, but of shard 1, in shard 0's folder.
        let line = serde_json::to_string(&spec.record(1)).unwrap();
        let mut runs = std::fs::read_to_string(dirs[0].join(RUNS_FILE)).unwrap();
        runs.push_str(&line);
        runs.push('\n');
        std::fs::write(dirs[0].join(RUNS_FILE), runs).unwrap();
        let e = merge(&dirs[..1], &root.path().join("out"), &ok).unwrap_err().to_string();
        assert!(e.contains("job record 3 (#1): is not a job of shard 0/3"), "{e}");
        // The check runs before anything is written.
        let refuse = |_: &Toy, _: &[ToyRecord]| Err(Error::invalid("check", 0, "refused"));
        let e = merge(&dirs[1..], &root.path().join("checked"), &refuse).unwrap_err().to_string();
        assert!(e.contains("refused"));
        assert!(!root.path().join("checked").exists());
    }

    #[test]
    fn an_unrecorded_shard_is_read_by_the_kinds_rule() {
        let whole = serde_json::json!({ "digest": "d", "spec": 1 });
        let null = serde_json::json!({ "digest": "d", "spec": 1, "shard": null });
        let part = serde_json::json!({ "digest": "d", "spec": 1, "shard": { "index": 1, "count": 2 } });
        let field = |v: &serde_json::Value| serde_json::from_value::<SpecFileIn<u8>>(v.clone()).unwrap().shard;
        assert_eq!(field(&whole), None);
        assert_eq!(field(&null), Some(None));
        assert_eq!(field(&part), Some(Some(Shard { index: 1, count: 2 })));
        assert_eq!(folder_shard::<Toy>(None), FolderShard::Recorded(None));
    }

    #[test]
    fn a_folder_that_did_not_record_its_shard_resumes_under_any_shard() {
        // As membership inference wrote before shards were recorded: no `shard` in spec.json,
        // and records of two shards (any shard could resume any folder).
        let toy = Toy { jobs: 6, salt: 6 };
        let write_old_folder = |dir: &Path| {
            std::fs::create_dir_all(dir).unwrap();
            let spec_json = serde_json::json!({ "digest": Experiment::digest(&toy), "spec": toy });
            std::fs::write(dir.join(SPEC_FILE), spec_json.to_string()).unwrap();
            let lines: Vec<String> = [0, 1].iter().map(|&j| serde_json::to_string(&toy.record(j)).unwrap()).collect();
            std::fs::write(dir.join(RUNS_FILE), lines.join("\n") + "\n").unwrap();
        };
        let root = tempfile::tempdir().unwrap();
        let old = root.path().join("old");
        write_old_folder(&old);
        let spec_before = std::fs::read(old.join(SPEC_FILE)).unwrap();
        let legacy = LegacyToy(toy.clone());
        let shard = Shard { index: 1, count: 3 };
        let (lock, existing) = open_folder(&legacy, &old, shard).unwrap();
        let ran = Mutex::new(Vec::new());
        let records = run_pending(
            &legacy,
            &old,
            shard,
            1,
            &existing,
            &|_, _| {},
            &AtomicBool::new(false),
            &|| Ok(()),
            &|(), j| {
                ran.lock().unwrap().push(j);
                Ok(toy.record(j))
            },
        )
        .unwrap();
        drop(lock);
        assert_eq!(ran.into_inner().unwrap(), vec![4], "shard 1/3 owns 1 and 4; 1 was recorded");
        assert_eq!(jobs_of(&records), vec![0, 1, 4]);
        assert_eq!(std::fs::read(old.join(SPEC_FILE)).unwrap(), spec_before, "spec.json is left as it was");
        let (_, merged) = merge::<LegacyToy>(&[old], &root.path().join("merged"), &|_, _| Ok(())).unwrap();
        assert_eq!(jobs_of(&merged), vec![0, 1, 4]);
        // A kind whose absent shard means the whole experiment refuses to resume it as a shard.
        let whole = root.path().join("whole");
        write_old_folder(&whole);
        let e = open_folder(&toy, &whole, shard).unwrap_err().to_string();
        assert!(e.contains("holds the jobs of the whole toy, not of shard 1/3"), "{e}");
    }

    #[test]
    fn shards_partition_the_jobs() {
        for n in 1..6 {
            for key in 0..40 {
                let owners = (0..n).filter(|&s| Shard { index: s, count: n }.owns(key)).count();
                assert_eq!(owners, 1);
            }
        }
        assert!(Shard::parse("3/2").is_err() && Shard::parse("x").is_err() && Shard::parse("0/0").is_err());
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        let spec = Toy { jobs: 5, salt: 0 };
        assert!(Shard { index: 4, count: 5 }.check_against(&spec).is_ok());
        let e = Shard { index: 0, count: 6 }.check_against(&spec).unwrap_err().to_string();
        assert!(e.contains("the toy has 5 jobs, so at most 5 shards"), "{e}");
    }

    #[test]
    fn scheduler_shards_come_from_slurm_or_kubernetes() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let slurm =
            env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert_eq!(Shard::resolve("auto", slurm).unwrap(), Shard { index: 3, count: 4 });
        assert_eq!(Shard::resolve("auto/4", slurm).unwrap(), Shard { index: 3, count: 4 });
        assert!(Shard::resolve("auto/5", slurm).is_err(), "a count that disagrees with Slurm's");
        let offset =
            env(&[("SLURM_ARRAY_TASK_ID", "12"), ("SLURM_ARRAY_TASK_MIN", "10"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert_eq!(Shard::resolve("auto", offset).unwrap(), Shard { index: 2, count: 4 });
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        assert!(Shard::resolve("auto", stepped).is_err());
        let k8s = env(&[("JOB_COMPLETION_INDEX", "7")]);
        assert_eq!(Shard::resolve("auto/8", k8s).unwrap(), Shard { index: 7, count: 8 });
        assert!(Shard::resolve("auto", k8s).is_err(), "Kubernetes needs the count");
        assert!(Shard::resolve("auto/7", k8s).is_err(), "index 7 of 7");
        assert!(Shard::resolve("auto", env(&[])).is_err());
        assert!(Shard::resolve("auto", env(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "4")])).is_err());
        assert_eq!(Shard::resolve("1/3", env(&[])).unwrap(), Shard { index: 1, count: 3 });
    }
}
