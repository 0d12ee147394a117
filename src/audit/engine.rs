//! The audit engine: runs a spec's replays on all cores, keeps every finished run (one fsynced
//! line each in `runs.jsonl`, so an interrupted audit resumes without losing or redoing any),
//! splits the work into shards for batch systems (`--shard i/N`, then [`merge`]), and turns the
//! scores into `audit.json` ([`analyse`]).
use crate::accounting::calibration::EpsilonAccountant;
use crate::accounting::pld::PldAccountant;
use crate::accounting::rdp::RdpAccountant;
use crate::accounting::Phase;
use crate::audit::bounds::{
    best_threshold_bonferroni, epsilon_lower_bound, one_run_epsilon_lower, EpsilonLowerBound, Outcomes,
};
use crate::audit::gaussian::{epsilon_for_mu, ideal_lower_bound};
use crate::audit::power::{held_out_runs, AuditPlan, Procedure};
use crate::audit::replay::{ReplayContext, RunRecord, Side, Worker};
use crate::audit::spec::{AuditMode, AuditSpec, ClaimedEpsilon, ThresholdChoice};
use crate::durable::write_atomically;
use crate::error::{Error, Result};
use crate::experiment::{self, Experiment, Vocabulary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// The file of finished runs in an audit folder.
pub const RUNS_FILE: &str = crate::run_folder::RUNS_FILE;
/// The copy of the spec in an audit folder (with its digest), checked on resume and merge.
pub const SPEC_FILE: &str = crate::run_folder::SPEC_FILE;
/// The result.
pub const AUDIT_FILE: &str = crate::run_folder::AUDIT_FILE;

pub use crate::experiment::{Progress, Shard};

/// A replay audit is an experiment of the sharded runner ([`crate::experiment`]): its jobs are
/// the runs `(side, index)`, without and with the canary for each index; a shard holds both sides
/// of the indices congruent to its index (a one-run audit is one training no shard splits).
impl Experiment for AuditSpec {
    type Record = RunRecord;
    type Job = (Side, u64);
    const WORDS: Vocabulary = Vocabulary {
        experiment: "audit",
        folder: "audit folder",
        item: "run",
        shard_units: "run indices (each run with and without the canary)",
    };
    const ABSENT_SHARD_IS_WHOLE: bool = true;

    fn digest(&self) -> String {
        AuditSpec::digest(self)
    }

    fn validate(&self) -> Result<()> {
        AuditSpec::validate(self)
    }

    fn jobs(&self) -> Vec<(Side, u64)> {
        (0..self.attack.runs_per_side).flat_map(|i| [(Side::Without, i), (Side::With, i)]).collect()
    }

    fn shard_key(&self, (_, index): (Side, u64)) -> Option<u64> {
        (self.attack.mode != AuditMode::OneRun).then_some(index)
    }

    fn shard_keys(&self) -> u64 {
        total_runs(self).div_ceil(2)
    }

    fn job_of(r: &RunRecord) -> (Side, u64) {
        (r.side, r.index)
    }

    fn job_label((side, index): (Side, u64)) -> String {
        format!("{side:?} {index}")
    }

    /// The spec digest, a side and index the spec has, the seed the spec derives for them, a
    /// score digest and a finite score.
    fn check_record(&self, r: &RunRecord) -> std::result::Result<(), String> {
        let digest = AuditSpec::digest(self);
        let one_run = self.attack.mode == AuditMode::OneRun;
        let k = if one_run { self.attack.canaries } else { self.attack.runs_per_side };
        if r.spec_digest.is_empty() {
            return Err("has no spec digest (written by an older dpaudit, or by hand): it cannot be checked".into());
        }
        if r.spec_digest != digest {
            return Err(format!("belongs to spec {} not {}", short(&r.spec_digest), short(&digest)));
        }
        if r.index >= k {
            return Err(format!("index outside the spec's {k} runs per side"));
        }
        let want = if one_run {
            crate::audit::replay::run_seed(self.attack.seed, Side::With, 0)
        } else {
            crate::audit::replay::run_seed(self.attack.seed, r.side, r.index)
        };
        if r.seed != want {
            return Err(format!("seed {} is not the seed {want} the spec derives for this run", r.seed));
        }
        if r.score_digest.len() != 64 || !r.score_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("has no score digest: it cannot be checked by replay".into());
        }
        if !r.score.is_finite() {
            return Err(format!("score {} is not a finite number", r.score));
        }
        Ok(())
    }
}

/// Runs in the whole audit: 2K replays, or the one training of a one-run audit.
fn total_runs(spec: &AuditSpec) -> u64 {
    if spec.attack.mode == AuditMode::OneRun {
        1
    } else {
        2 * spec.attack.runs_per_side
    }
}

/// Checks every record against the spec it claims to belong to: the spec digest, a side and
/// index the spec has, the seed the spec derives for them, a score digest, no run twice, and
/// (for a shard folder) a run the shard owns. Records that fail cannot be checked by replay and
/// are refused.
///
/// # Errors
/// [`Error::Data`] naming the first bad record and why.
pub fn verify_records(spec: &AuditSpec, shard: Option<Shard>, runs: &[RunRecord], origin: &Path) -> Result<()> {
    experiment::verify_records(spec, shard, runs, origin)
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// How an audit's records were checked before analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordCheck {
    /// Every record names this spec, a run it has, the seed it derives for that run and a score
    /// digest; no run appears twice.
    pub fields_checked: bool,
    /// Records replayed (trained again from their seed) and found identical (score and score
    /// digest), chosen at random after the runs.
    pub replayed: Vec<(Side, u64)>,
    /// In words.
    pub note: String,
}

/// Replays `count` records chosen at random (from the operating system's entropy, so whoever
/// wrote the records cannot know which) and compares score and score digest.
///
/// # Errors
/// [`Error::Data`] for a record its replay does not reproduce; trainer and data errors.
pub fn replay_check(ctx: &ReplayContext, runs: &[RunRecord], count: usize, origin: &Path) -> Result<Vec<(Side, u64)>> {
    use rand::seq::SliceRandom;
    if count == 0 || runs.is_empty() {
        return Ok(Vec::new());
    }
    tch::set_num_threads(1);
    let worker = Worker::new(ctx)?;
    if ctx.spec().attack.mode == AuditMode::OneRun {
        let again = worker.one_run()?;
        for r in runs {
            let same = again.iter().any(|a| {
                a.side == r.side && a.index == r.index && a.score_digest == r.score_digest && a.score == r.score
            });
            if !same {
                return Err(Error::data(
                    origin,
                    format!(
                        "run record {:?} {}: its replay does not reproduce it (the one-run training was run again)",
                        r.side, r.index
                    ),
                ));
            }
        }
        return Ok(runs.iter().map(|r| (r.side, r.index)).collect());
    }
    let mut rng = rand::rngs::OsRng;
    let chosen: Vec<&RunRecord> = runs.choose_multiple(&mut rng, count).collect();
    let mut done = Vec::new();
    for r in chosen {
        let again = worker.run(r.side, r.index)?;
        if again.score_digest != r.score_digest || again.score != r.score {
            return Err(Error::data(
                origin,
                format!(
                    "run record {:?} {}: its replay from seed {} scored {} (digest {}), the record says {} (digest {}): the record was not produced by this spec's run",
                    r.side, r.index, r.seed, again.score, short(&again.score_digest), r.score, short(&r.score_digest)
                ),
            ));
        }
        done.push((r.side, r.index));
    }
    done.sort();
    Ok(done)
}

/// Reads the finished runs of an audit folder (a torn last line, from a crash, is ignored).
///
/// # Errors
/// I/O errors; [`Error::Data`] for a corrupt complete line.
pub fn read_runs(dir: &Path) -> Result<Vec<RunRecord>> {
    experiment::read_records(dir)
}

/// Runs (or resumes) the shard's replays of `ctx`'s spec into `dir` on `threads` threads. Runs
/// already in `runs.jsonl` are skipped; each new run is appended and fsynced as it finishes. If
/// `stop` becomes true the workers finish their current run and return.
///
/// # Errors
/// A folder holding another spec's runs; trainer and I/O errors (runs finished before the error
/// are kept).
pub fn run_audit(
    ctx: &ReplayContext,
    dir: &Path,
    shard: Shard,
    threads: usize,
    progress: Progress<'_>,
    stop: &AtomicBool,
) -> Result<Vec<RunRecord>> {
    let (_lock, existing) = open_audit_folder(ctx.spec(), dir, shard)?;
    if ctx.spec().attack.mode == AuditMode::OneRun {
        // One training run: its canaries' records are written together, atomically.
        if !existing.is_empty() || shard.index != 0 {
            progress(1, 1);
            return Ok(existing);
        }
        progress(0, 1);
        tch::set_num_threads(threads.max(1) as i32);
        let records = Worker::new(ctx)?.one_run()?;
        experiment::write_records(dir, &records)?;
        progress(1, 1);
        return Ok(records);
    }
    // One libtorch thread per worker: the workers are the parallelism.
    tch::set_num_threads(1);
    run_pending(ctx.spec(), dir, shard, threads, &existing, progress, stop, &|| Worker::new(ctx), &|w, side, index| {
        w.run(side, index)
    })
}

/// Opens an audit folder for a shard's runs ([`experiment::open_folder`]): checks the shard
/// against the spec, creates the folder, writes or checks its `spec.json`, and reads and checks
/// the runs it already holds.
///
/// # Errors
/// As [`run_audit`].
pub(crate) fn open_audit_folder(
    spec: &AuditSpec,
    dir: &Path,
    shard: Shard,
) -> Result<(crate::folder_lock::FolderLock, Vec<RunRecord>)> {
    experiment::open_folder(spec, dir, shard)
}

/// Runs the shard's replays that `existing` lacks on `threads` workers (each made by
/// `new_worker` in its own thread, each run by `run_one`), appending each record to `runs.jsonl`
/// and fsyncing it as it finishes ([`experiment::run_pending`]). The first error stops every
/// worker after its current run; the runs recorded before it are kept.
///
/// # Errors
/// The first worker or run error; I/O errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_pending<W>(
    spec: &AuditSpec,
    dir: &Path,
    shard: Shard,
    threads: usize,
    existing: &[RunRecord],
    progress: Progress<'_>,
    stop: &AtomicBool,
    new_worker: &(dyn Fn() -> Result<W> + Sync),
    run_one: &(dyn Fn(&mut W, Side, u64) -> Result<RunRecord> + Sync),
) -> Result<Vec<RunRecord>> {
    experiment::run_pending(spec, dir, shard, threads, existing, progress, stop, new_worker, &|w, (side, index)| {
        run_one(w, side, index)
    })
}

/// Gathers the runs of several shard folders into `out` (which gets the spec and every run once).
/// Every folder's records are checked with [`verify_records`] against its spec and shard; a run
/// found in two folders, a shard index outside its count, or a shard count above the audit's
/// runs is refused.
///
/// # Errors
/// Folders of different specs, records that do not check, corrupt files, I/O errors.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(AuditSpec, Vec<RunRecord>)> {
    merge_checked(dirs, out, &|_, _| Ok(()))
}

/// [`merge`], with `check` run on the gathered records before anything is written to `out` (the
/// CLI replays a few of them there, so a refused merge leaves no folder of unchecked runs).
///
/// # Errors
/// As [`merge`], and `check`'s.
pub fn merge_checked(
    dirs: &[PathBuf],
    out: &Path,
    check: &dyn Fn(&AuditSpec, &[RunRecord]) -> Result<()>,
) -> Result<(AuditSpec, Vec<RunRecord>)> {
    experiment::merge(dirs, out, check)
}

/// Reads an audit folder's spec (checked against its digest), the shard its runs belong to
/// (`None`: the whole audit or a merged folder) and its runs.
///
/// # Errors
/// A missing or corrupt `spec.json` or `runs.jsonl`; a spec that does not match its digest.
pub fn read_folder(dir: &Path) -> Result<(AuditSpec, Option<Shard>, Vec<RunRecord>)> {
    experiment::read_folder(dir)
}

/// Analyses an audit folder as it stands: the whole audit ([`analyse`]) or, for a shard's
/// folder, that shard alone ([`analyse_shard`], a partial report).
///
/// # Errors
/// As [`read_folder`], [`analyse`] and [`analyse_shard`].
pub fn analyse_folder(dir: &Path) -> Result<AuditReport> {
    let (spec, shard, runs) = read_folder(dir)?;
    match shard {
        Some(s) if s != Shard::ALL => analyse_shard(&spec, s, &runs, 0.0),
        _ => analyse(&spec, &runs, 0.0),
    }
}

/// The claim an audit tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimReport {
    /// Claimed epsilon.
    pub epsilon: f64,
    /// Claimed delta.
    pub delta: f64,
    /// Where it comes from: `explicit`, or the accountant, sampling scheme and ledger phases.
    pub source: String,
}

/// The Gaussian-DP fit to the scores (Nasr et al. 2023). An estimate, not a bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GdpEstimate {
    /// (mean in - mean out) / pooled standard deviation.
    pub mu: f64,
    /// The epsilon of mu-GDP at the claim's delta.
    pub epsilon: f64,
    /// Always "estimate, not a bound".
    pub label: String,
}

/// White-box bookkeeping check: noisy updates the attacker saw against the steps the ledger holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerCheck {
    /// Most noisy updates applied by a run.
    pub applied_steps: u64,
    /// Fewest steps a run's ledger recorded.
    pub ledger_steps: u64,
    /// Whether every run's ledger counts every applied update.
    pub ok: bool,
}

/// The one-run audit's counts (Steinke, Nasr & Jagielski 2023).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneRunSummary {
    /// Canaries m (each included with probability 1/2).
    pub canaries: u64,
    /// Canaries included.
    pub included: u64,
    /// Guesses r (half "in" from the top scores, half "out" from the bottom).
    pub guesses: u64,
    /// Correct guesses v.
    pub correct: u64,
}

pub use crate::audit::RocPoint;

/// `audit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// The file's schema version ([`crate::run_folder::manifest::SCHEMA_VERSION`]; 1 when
    /// absent, in files written before dpaudit recorded it).
    #[serde(default = "crate::run_folder::manifest::unversioned")]
    pub schema_version: u32,
    /// dpaudit's version.
    pub tool_version: String,
    /// The spec's name.
    pub spec_name: String,
    /// SHA-256 of the spec's canonical JSON.
    pub spec_digest: String,
    /// The spec (`None` for scores imported with [`crate::audit::from_scores`], which ran no
    /// spec of dpaudit's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<AuditSpec>,
    /// Where imported scores came from (`audit from-scores`): the file(s) and their SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores_source: Option<String>,
    /// The statistic the bound is on: `score` (the run's own score) when absent, else a named
    /// statistic of the runs ([`RunRecord::statistics`]), `-` in front when negated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
    /// `attack.statistic = "select"`: every candidate, which one decided and the correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic_selection: Option<StatisticSelection>,
    /// A shard's folder analysed alone: a valid bound from part of the runs, never the audit's
    /// result (certificates refuse to cite it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialScope>,
    /// The claim tested.
    pub claim: ClaimReport,
    /// `white-box` or `black-box`.
    pub threat_model: String,
    /// The canary.
    pub canary: serde_json::Value,
    /// The statistic.
    pub attack: String,
    /// Runs per side counted in the bound.
    pub runs_per_side: u64,
    /// Runs per side spent choosing the threshold (held-out).
    pub selection_runs_per_side: u64,
    /// Confidence of the bound.
    pub confidence: f64,
    /// How the threshold was chosen, in words.
    pub threshold_selection: String,
    /// The threshold (a run is called "canary in" when its score is at least this).
    pub threshold: f64,
    /// The rigorous lower bound on epsilon.
    pub epsilon_lower: f64,
    /// Clopper–Pearson upper bounds behind it (replay audits).
    pub bound: Option<EpsilonLowerBound>,
    /// The one-run audit's counts (one-run audits).
    pub one_run: Option<OneRunSummary>,
    /// The bound a perfect test of a Gaussian mechanism with the claimed epsilon would reach
    /// from the same number of runs.
    pub ideal_epsilon_lower: f64,
    /// epsilon_lower / ideal_epsilon_lower (none when the ideal is 0 or not defined).
    pub fraction_of_ideal: Option<f64>,
    /// What this procedure could show, computed from the claim and K alone: its threshold
    /// (from-claim), its ceiling (the largest bound it can report) and its power (the smallest
    /// true epsilon it catches with probability 1/2 and 0.9).
    pub plan: AuditPlan,
    /// `violated`, `consistent`, or `inconclusive` (the procedure's ceiling does not exceed the
    /// claim, so no outcome could have refuted it).
    pub verdict: String,
    /// Why.
    pub verdict_reason: String,
    /// White-box: the ledger against the updates observed.
    pub ledger_check: Option<LedgerCheck>,
    /// The ROC of the statistic over all runs.
    pub roc: Vec<RocPoint>,
    /// Canary-in runs behind the ROC.
    #[serde(default)]
    pub roc_positives: u64,
    /// Canary-out runs behind the ROC (no FPR below 1 / this is measurable).
    #[serde(default)]
    pub roc_negatives: u64,
    /// TPR at FPR 1%, 0.1%, 0.01% (keys "0.01", "0.001", "0.0001"); `null` where the FPR is
    /// below 1 / (canary-out runs) and so cannot be measured (the reason in `tpr_at_fpr_notes`).
    pub tpr_at_fpr: BTreeMap<String, Option<f64>>,
    /// Why a TPR is `null`.
    #[serde(default)]
    pub tpr_at_fpr_notes: BTreeMap<String, String>,
    /// Explanations of numbers that could be read against the verdict (a bound above the ideal,
    /// a Gaussian-DP estimate above the claim).
    #[serde(default)]
    pub notes: Vec<String>,
    /// How the run records were checked.
    pub record_check: RecordCheck,
    /// The Gaussian-DP estimate.
    pub gdp_estimate: GdpEstimate,
    /// Every run.
    pub runs: Vec<RunRecord>,
    /// Sum of the runs' wall times.
    pub run_seconds: f64,
    /// Wall time of the audit command (0 after a merge).
    pub wall_seconds: f64,
}

fn claim_of(spec: &AuditSpec, runs: &[RunRecord]) -> Result<ClaimReport> {
    let delta = spec.claim.delta;
    match spec.claim.epsilon {
        ClaimedEpsilon::Explicit(e) => Ok(ClaimReport { epsilon: e, delta, source: "explicit (from the spec)".into() }),
        ClaimedEpsilon::Trainer(_) => crate::audit::external::trainer_claim(spec, runs),
        ClaimedEpsilon::Accountant(_) => {
            // The smallest ledger any run kept: the claim the recipe would have certified.
            let r = runs.iter().min_by_key(|r| r.ledger_steps).ok_or_else(|| Error::invalid("runs", 0, "no runs"))?;
            let phases: Vec<Phase> =
                r.ledger_phases.iter().map(|&(q, s, t)| Phase::new(q, s, t)).collect::<Result<_>>()?;
            let (eps, name) = if spec.claim.accountant == "rdp" {
                (RdpAccountant::default().epsilon_of(&phases, delta)?, "rdp")
            } else {
                (PldAccountant::default().epsilon_of(&phases, delta)?, "pld")
            };
            let desc: Vec<String> = phases
                .iter()
                .map(|p| format!("q = {}, sigma = {}, {} steps", p.sampling_rate, p.noise_multiplier, p.steps))
                .collect();
            Ok(ClaimReport {
                epsilon: eps,
                delta,
                source: format!("accountant: {name} on the replays' ledger (Poisson; {})", desc.join("; ")),
            })
        }
    }
}

fn outcomes(with: &[f64], without: &[f64], t: f64) -> Outcomes {
    Outcomes {
        false_negatives: with.iter().filter(|&&s| s < t).count() as u64,
        positives: with.len() as u64,
        false_positives: without.iter().filter(|&&s| s >= t).count() as u64,
        negatives: without.len() as u64,
    }
}

fn roc(with: &[f64], without: &[f64]) -> Vec<RocPoint> {
    let mut all: Vec<(f64, bool)> =
        with.iter().map(|&s| (s, true)).chain(without.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (p, n) = (with.len() as f64, without.len() as f64);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![RocPoint { fpr: 0.0, tpr: 0.0 }];
    let mut i = 0;
    while i < all.len() {
        let s = all[i].0;
        while i < all.len() && all[i].0 == s {
            if all[i].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push(RocPoint { fpr: fp / n, tpr: tp / p });
    }
    pts
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, v.sqrt())
}

/// The name of a run's own score among the statistics ([`RunRecord::score`]).
pub const SCORE: &str = "score";
/// `attack.statistic` (and `--statistic`) value that selects the statistic on held-out runs.
pub const SELECT: &str = "select";

/// The value of statistic `name` for a run: `score` ([`RunRecord::score`]), a key of
/// [`RunRecord::statistics`], or either with `-` in front (negated: smaller means "canary in").
/// `None` when the run lacks it.
pub fn statistic_value(r: &RunRecord, name: &str) -> Option<f64> {
    let (negated, base) = match name.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, name),
    };
    let v = if base == SCORE { Some(r.score) } else { r.statistics.get(base).copied() };
    v.map(|x| if negated { -x } else { x })
}

/// The values of statistic `name` for `runs`, in order.
///
/// # Errors
/// [`Error::InvalidParameter`] naming the runs that lack it (the first ten) or whose value is
/// not finite.
pub fn statistic_values(runs: &[&RunRecord], name: &str) -> Result<Vec<f64>> {
    let missing: Vec<String> = runs
        .iter()
        .filter(|r| statistic_value(r, name).is_none())
        .map(|r| format!("{:?} {}", r.side, r.index))
        .collect();
    if !missing.is_empty() {
        let shown = missing.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        let more = if missing.len() > 10 { format!(" and {} more", missing.len() - 10) } else { String::new() };
        return Err(Error::invalid("statistic", name, format!("missing from {} run(s): {shown}{more}", missing.len())));
    }
    let values: Vec<f64> = runs.iter().filter_map(|r| statistic_value(r, name)).collect();
    if let Some((r, v)) = runs.iter().zip(&values).find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(
            "statistic",
            name,
            format!("run {:?} {} has {v}, not a finite number", r.side, r.index),
        ));
    }
    Ok(values)
}

/// One candidate of a statistic selection and what it showed on the held-out runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    /// The statistic (`-` in front: negated).
    pub statistic: String,
    /// Its best Bonferroni bound on the held-out runs (the selection criterion; not a result).
    pub held_out_epsilon_lower: f64,
    /// The threshold that gave it.
    pub threshold: f64,
}

/// How `attack.statistic = "select"` chose the statistic ([`select_statistic`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticSelection {
    /// Every candidate: each statistic of the runs (and `score`), each in both directions, in the
    /// order tried (ties go to the first).
    pub candidates: Vec<CandidateResult>,
    /// The candidate that decided: the bound is on it.
    pub decided: String,
    /// m: the number of candidates (statistics times 2 directions). The bound's test runs at
    /// alpha / m.
    pub tests: u64,
    /// alpha / m.
    pub alpha_per_test: f64,
    /// Runs per side the choice was made on (the first of each side by index).
    pub held_out_runs_per_side: u64,
}

/// Part of an audit analysed alone: one shard's folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialScope {
    /// The shard (0-based).
    pub shard_index: u32,
    /// Shards in the audit.
    pub shard_count: u32,
    /// Runs per side this shard holds (k).
    pub runs_per_side: u64,
    /// Runs per side of the whole audit (K).
    pub audit_runs_per_side: u64,
    /// `partial: shard i of N, k of K runs per side` (i counted from 1).
    pub label: String,
}

/// The parts of an analysis that are not the scores: the claim tested, the confidence and how
/// the statistic and the threshold are chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSettings {
    /// The claim tested.
    pub claim: ClaimReport,
    /// Confidence of the bound, in (0, 1).
    pub confidence: f64,
    /// How the threshold is chosen (ignored with [`SELECT`], which always splits as `held-out`).
    pub threshold: ThresholdChoice,
    /// `held-out` and [`SELECT`]: the share of runs per side spent choosing.
    pub held_out_fraction: f64,
    /// `None` or `score`: each run's score; [`SELECT`]; or a statistic name (see [`statistic_value`]).
    pub statistic: Option<String>,
}

impl AnalysisSettings {
    /// The settings a spec states, for the claim `claim`.
    pub fn of_spec(spec: &AuditSpec, claim: ClaimReport) -> Self {
        AnalysisSettings {
            claim,
            confidence: spec.attack.confidence,
            threshold: spec.attack.threshold,
            held_out_fraction: spec.attack.held_out_fraction,
            statistic: spec.attack.statistic.clone(),
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Error::invalid("confidence", self.confidence, "must be in (0, 1)"));
        }
        if !(self.held_out_fraction > 0.0 && self.held_out_fraction < 1.0) {
            return Err(Error::invalid("held-out fraction", self.held_out_fraction, "must be in (0, 1)"));
        }
        if !(self.claim.epsilon >= 0.0 && self.claim.epsilon.is_finite()) {
            return Err(Error::invalid("claimed epsilon", self.claim.epsilon, "must be a finite number >= 0"));
        }
        if !(self.claim.delta > 0.0 && self.claim.delta < 1.0) {
            return Err(Error::invalid("claimed delta", self.claim.delta, "must be in (0, 1)"));
        }
        Ok(())
    }
}

/// What the statistic and threshold rule decided, before the report is assembled.
struct Decision {
    threshold: f64,
    bound: EpsilonLowerBound,
    counted: u64,
    selection: u64,
    how: String,
    statistic: Option<String>,
    statistic_selection: Option<StatisticSelection>,
    plan: AuditPlan,
    /// The alpha the bound's test ran at (alpha / m after a selection): the ideal bound uses it.
    test_alpha: f64,
    /// The decided statistic over every run, canary in and out (ROC, Gaussian-DP fit).
    sw: Vec<f64>,
    so: Vec<f64>,
    one_run: Option<OneRunSummary>,
}

/// Chooses a statistic, its direction and its threshold on the first `held_out` runs of each
/// side, and bounds epsilon on the rest at alpha / m, m = 2 x the statistics (every key of the
/// runs' [`RunRecord::statistics`], and `score`).
///
/// `with` and `without` must be sorted by run index; every run must carry every statistic.
///
/// # Proof definition
/// If the mechanism is (epsilon, delta)-DP and the runs are independent, then with probability
/// at least `1 - alpha` over the runs, `epsilon >= ` the returned bound's `epsilon_lower`
/// (`proofs/audit/statistic_selection.md`; checked by `tests/audit_scores.rs`,
/// `selection_raises_false_alarms_below_alpha_on_null_scores`).
///
/// # Errors
/// [`Error::InvalidParameter`] for a statistic missing from a run or not finite, for fewer than 2 runs per side, `held_out` outside `1..` the smaller side, alpha or delta
/// outside (0, 1).
pub fn select_statistic(
    with: &[&RunRecord],
    without: &[&RunRecord],
    held_out: u64,
    delta: f64,
    alpha: f64,
) -> Result<(StatisticSelection, EpsilonLowerBound, f64)> {
    let k = with.len().min(without.len()) as u64;
    if k < 2 || held_out == 0 || held_out >= k {
        return Err(Error::invalid(
            "held-out runs",
            format!("{held_out} of {} with and {} without", with.len(), without.len()),
            "need at least 2 runs per side and 1 <= held-out < runs per side",
        ));
    }
    let mut names: Vec<String> = vec![SCORE.to_string()];
    let keys: std::collections::BTreeSet<&String> =
        with.iter().chain(without).flat_map(|r| r.statistics.keys()).collect();
    names.extend(keys.into_iter().filter(|n| n.as_str() != SCORE && !n.starts_with('-')).cloned());
    let candidates: Vec<String> = names.iter().flat_map(|n| [n.clone(), format!("-{n}")]).collect();
    let m = candidates.len() as u64;
    let h = held_out as usize;
    let mut results = Vec::with_capacity(candidates.len());
    let mut best: Option<usize> = None;
    for (i, c) in candidates.iter().enumerate() {
        let (vw, vo) = (statistic_values(with, c)?, statistic_values(without, c)?);
        let (b, t) = best_threshold_bonferroni(&vw[..h], &vo[..h], delta, alpha)?;
        results.push(CandidateResult { statistic: c.clone(), held_out_epsilon_lower: b.epsilon_lower, threshold: t });
        if best.is_none_or(|j| b.epsilon_lower > results[j].held_out_epsilon_lower) {
            best = Some(i);
        }
    }
    let chosen = results[best.expect("at least two candidates")].clone();
    let (vw, vo) = (statistic_values(with, &chosen.statistic)?, statistic_values(without, &chosen.statistic)?);
    let per_test = alpha / m as f64;
    let b = epsilon_lower_bound(&outcomes(&vw[h..], &vo[h..], chosen.threshold), delta, per_test)?;
    Ok((
        StatisticSelection {
            candidates: results,
            decided: chosen.statistic.clone(),
            tests: m,
            alpha_per_test: per_test,
            held_out_runs_per_side: held_out,
        },
        EpsilonLowerBound { confidence: 1.0 - alpha, ..b },
        chosen.threshold,
    ))
}

/// The statistic and threshold of a replay analysis (runs sorted by index).
fn decide(s: &AnalysisSettings, with: &[&RunRecord], without: &[&RunRecord]) -> Result<Decision> {
    s.validate()?;
    let (delta, alpha) = (s.claim.delta, 1.0 - s.confidence);
    let k = with.len().min(without.len()) as u64;
    if k < 2 {
        return Err(Error::invalid(
            "runs",
            format!("{} with and {} without the canary", with.len(), without.len()),
            "need at least 2 on each side",
        ));
    }
    let select = s.statistic.as_deref() == Some(SELECT);
    if select {
        let h = held_out_runs(k, s.held_out_fraction);
        let (sel, bound, t) = select_statistic(with, without, h, delta, alpha)?;
        let plan = crate::audit::power::plan(&Procedure::new(
            ThresholdChoice::HeldOut,
            k,
            s.held_out_fraction,
            s.claim.epsilon,
            delta,
            sel.alpha_per_test,
        )?)?;
        let (sw, so) = (statistic_values(with, &sel.decided)?, statistic_values(without, &sel.decided)?);
        let how = format!(
            "statistic, direction and threshold chosen on the first {h} runs per side among {} candidates ({} statistics, each also negated; the best Bonferroni bound there): {} >= {t:.4}; evaluated on the other {} runs per side at alpha / {}",
            sel.tests,
            sel.tests / 2,
            sel.decided,
            k - h,
            sel.tests
        );
        return Ok(Decision {
            threshold: t,
            bound,
            counted: k - h,
            selection: h,
            how,
            statistic: Some(sel.decided.clone()),
            test_alpha: sel.alpha_per_test,
            statistic_selection: Some(sel),
            plan,
            sw,
            so,
            one_run: None,
        });
    }
    let name = s.statistic.clone().filter(|n| n != SCORE);
    let (sw, so) = (
        statistic_values(with, name.as_deref().unwrap_or(SCORE))?,
        statistic_values(without, name.as_deref().unwrap_or(SCORE))?,
    );
    let (threshold, bound, counted, selection, how) = match s.threshold {
        ThresholdChoice::FromClaim => {
            let fc = crate::audit::power::from_claim_threshold(s.claim.epsilon, delta, k, alpha)?;
            let t = fc.threshold;
            let b = epsilon_lower_bound(&outcomes(&sw, &so, t), delta, alpha)?;
            let aim = fc.design_epsilon.map_or_else(
                || "with the highest ceiling (no threshold catches any Gaussian mechanism with probability 0.9 at this K)".to_string(),
                |e| format!("that catches the least leaky Gaussian mechanism with probability 0.9 (epsilon {e:.4}), exactly computed"),
            );
            (t, b, k, 0, format!("fixed before the runs from the claim and K: the threshold {aim}, t = {t:.4}"))
        }
        ThresholdChoice::HeldOut => {
            let h = held_out_runs(k, s.held_out_fraction);
            let hu = h as usize;
            let (_, t) = best_threshold_bonferroni(&sw[..hu], &so[..hu], delta, alpha)?;
            let b = epsilon_lower_bound(&outcomes(&sw[hu..], &so[hu..], t), delta, alpha)?;
            (t, b, k - h, h, format!("chosen on the first {h} runs per side (the best Bonferroni bound there), evaluated on the other {}", k - h))
        }
        ThresholdChoice::Bonferroni => {
            let (b, t) = best_threshold_bonferroni(&sw, &so, delta, alpha)?;
            (
                t,
                b,
                k,
                0,
                format!(
                    "the best of all {} thresholds between the scores, each tested at alpha / {}",
                    sw.len() + so.len(),
                    sw.len() + so.len()
                ),
            )
        }
    };
    let plan = crate::audit::power::plan(&Procedure::new(
        s.threshold,
        k,
        s.held_out_fraction,
        s.claim.epsilon,
        delta,
        alpha,
    )?)?;
    Ok(Decision {
        threshold,
        bound,
        counted,
        selection,
        how,
        statistic: name,
        statistic_selection: None,
        plan,
        test_alpha: alpha,
        sw,
        so,
        one_run: None,
    })
}

/// Splits runs by side, each sorted by index.
fn by_side(runs: &[RunRecord]) -> (Vec<&RunRecord>, Vec<&RunRecord>) {
    let mut with: Vec<&RunRecord> = runs.iter().filter(|r| r.side == Side::With).collect();
    let mut without: Vec<&RunRecord> = runs.iter().filter(|r| r.side == Side::Without).collect();
    with.sort_by_key(|r| r.index);
    without.sort_by_key(|r| r.index);
    (with, without)
}

/// What a report says about where its runs came from.
struct ReportHead {
    spec: Option<AuditSpec>,
    spec_name: String,
    spec_digest: String,
    threat_model: String,
    canary: serde_json::Value,
    attack: String,
    scores_source: Option<String>,
}

impl ReportHead {
    fn of_spec(spec: &AuditSpec) -> Self {
        let white = spec.attack.threat_model == crate::audit::spec::ThreatModel::WhiteBox;
        ReportHead {
            spec: Some(spec.clone()),
            spec_name: spec.name.clone(),
            spec_digest: spec.digest(),
            threat_model: if white { "white-box" } else { "black-box" }.into(),
            canary: serde_json::to_value(&spec.canary).unwrap_or_default(),
            attack: if white {
                "update-projection (noise-weighted, all iterates)"
            } else {
                "canary-loss (final model)"
            }
            .into(),
            scores_source: None,
        }
    }
}

/// Turns a complete set of runs into the audit's result.
///
/// # Proof definition
/// The report's `epsilon_lower` is a lower bound on the epsilon of any (epsilon, delta)-DP
/// mechanism that produced the runs, at the report's confidence: `proofs/audit/bounds.md` for a
/// fixed statistic, `proofs/audit/statistic_selection.md` with `attack.statistic = "select"`,
/// `proofs/audit/one_run.md` for a one-run audit.
///
/// # Errors
/// Missing runs (the message says how many), invalid numbers, a named statistic missing from
/// runs (named).
pub fn analyse(spec: &AuditSpec, runs: &[RunRecord], wall_seconds: f64) -> Result<AuditReport> {
    verify_records(spec, None, runs, Path::new(RUNS_FILE))?;
    let one_run_mode = spec.attack.mode == AuditMode::OneRun;
    let k = if one_run_mode { spec.attack.canaries } else { spec.attack.runs_per_side };
    let kept: Vec<RunRecord> = runs.iter().filter(|r| r.index < k).cloned().collect();
    let (with, without) = by_side(&kept);
    if one_run_mode {
        if (with.len() + without.len()) as u64 != k || with.is_empty() || without.is_empty() {
            return Err(Error::invalid(
                "one-run records",
                with.len() + without.len(),
                format!("need {k} canaries, some in and some out"),
            ));
        }
    } else if with.len() as u64 != k || without.len() as u64 != k {
        return Err(Error::invalid(
            "audit runs",
            format!("{} with and {} without the canary", with.len(), without.len()),
            format!("need {k} of each; resume the audit or merge the missing shards"),
        ));
    }
    let claim = claim_of(spec, runs)?;
    let settings = AnalysisSettings::of_spec(spec, claim);
    let decision = if one_run_mode {
        one_run_decision(spec, &settings, &with, &without)?
    } else {
        decide(&settings, &with, &without)?
    };
    let ledger_check = (spec.attack.threat_model == crate::audit::spec::ThreatModel::WhiteBox).then(|| {
        let applied = runs.iter().map(|r| r.applied_steps).max().unwrap_or(0);
        let ledger = runs.iter().map(|r| r.ledger_steps).min().unwrap_or(0);
        LedgerCheck {
            applied_steps: applied,
            ledger_steps: ledger,
            ok: runs.iter().all(|r| r.ledger_steps >= r.applied_steps),
        }
    });
    assemble(ReportHead::of_spec(spec), &settings, decision, ledger_check, &with, &without, None, wall_seconds)
}

/// Analyses one shard's runs alone (`i` of `N`): a valid bound from those runs, labelled
/// `partial: shard i of N, k of K runs per side`, with the spec's claim, statistic and threshold
/// rule applied to the shard's runs (K replaced by the shard's k). The whole audit's result comes
/// only from [`merge`]; certificates refuse a partial report ([`AuditReport::cert_record_for`]).
///
/// # Proof definition
/// As [`analyse`]: the shard's runs are independent replays of the same mechanism, so the bound
/// holds at the stated confidence for the shard's runs alone.
///
/// # Errors
/// As [`verify_records`] for the shard; a shard missing some of its runs (resume it); a one-run
/// audit (one training, not sharded).
pub fn analyse_shard(spec: &AuditSpec, shard: Shard, runs: &[RunRecord], wall_seconds: f64) -> Result<AuditReport> {
    if spec.attack.mode == AuditMode::OneRun {
        return Err(Error::invalid(
            "shard",
            format!("{}/{}", shard.index, shard.count),
            "a one-run audit is one training: it has no shards to analyse alone",
        ));
    }
    verify_records(spec, Some(shard), runs, Path::new(RUNS_FILE))?;
    let big_k = spec.attack.runs_per_side;
    let owned = (0..big_k).filter(|&i| shard.owns(i)).count() as u64;
    let (with, without) = by_side(runs);
    if with.len() as u64 != owned || without.len() as u64 != owned {
        return Err(Error::invalid(
            "shard runs",
            format!("{} with and {} without the canary", with.len(), without.len()),
            format!("shard {}/{} owns {owned} of each; resume it with the same --shard", shard.index, shard.count),
        ));
    }
    let claim = claim_of(spec, runs)?;
    let settings = AnalysisSettings::of_spec(spec, claim);
    let decision = decide(&settings, &with, &without)?;
    let ledger_check = (spec.attack.threat_model == crate::audit::spec::ThreatModel::WhiteBox).then(|| LedgerCheck {
        applied_steps: runs.iter().map(|r| r.applied_steps).max().unwrap_or(0),
        ledger_steps: runs.iter().map(|r| r.ledger_steps).min().unwrap_or(0),
        ok: runs.iter().all(|r| r.ledger_steps >= r.applied_steps),
    });
    let label = format!("partial: shard {} of {}, {owned} of {big_k} runs per side", shard.index + 1, shard.count);
    let scope = PartialScope {
        shard_index: shard.index,
        shard_count: shard.count,
        runs_per_side: owned,
        audit_runs_per_side: big_k,
        label,
    };
    assemble(ReportHead::of_spec(spec), &settings, decision, ledger_check, &with, &without, Some(scope), wall_seconds)
}

/// Analyses scores produced anywhere ([`crate::audit::from_scores`]): runs with a side, an index
/// and a score (and any named statistics), no spec. The same computation as [`analyse`]: on the
/// runs of a dpaudit audit, with its claim and rule, it gives the same bound bit for bit.
///
/// # Proof definition
/// As [`analyse`], for runs that are independent outcomes of the mechanism on D and D'.
///
/// # Errors
/// Settings out of range, fewer than 2 runs per side, a missing or non-finite statistic.
pub fn analyse_scores(settings: &AnalysisSettings, runs: &[RunRecord], source: &str) -> Result<AuditReport> {
    let (with, without) = by_side(runs);
    let decision = decide(settings, &with, &without)?;
    let head = ReportHead {
        spec: None,
        spec_name: format!("from-scores {source}"),
        spec_digest: String::new(),
        threat_model: "unknown (scores imported)".into(),
        canary: serde_json::Value::Null,
        attack: "imported scores (larger means canary in)".into(),
        scores_source: Some(source.to_string()),
    };
    assemble(head, settings, decision, None, &with, &without, None, 0.0)
}

fn one_run_decision(
    spec: &AuditSpec,
    s: &AnalysisSettings,
    with: &[&RunRecord],
    without: &[&RunRecord],
) -> Result<Decision> {
    let (delta, alpha) = (s.claim.delta, 1.0 - s.confidence);
    let m = spec.attack.canaries;
    let mut ranked: Vec<&RunRecord> = with.iter().chain(without).copied().collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    let half = spec.attack.guesses / 2;
    let k_in = half.max(1) as usize;
    let k_out = (spec.attack.guesses - half) as usize;
    let correct = ranked[..k_in].iter().filter(|r| r.side == Side::With).count()
        + ranked[ranked.len() - k_out..].iter().filter(|r| r.side == Side::Without).count();
    let eps = one_run_epsilon_lower(m, (k_in + k_out) as u64, correct as u64, delta, alpha)?;
    let one_run = OneRunSummary {
        canaries: m,
        included: with.len() as u64,
        guesses: (k_in + k_out) as u64,
        correct: correct as u64,
    };
    let t = ranked[k_in - 1].score;
    Ok(Decision {
        threshold: t,
        bound: EpsilonLowerBound { epsilon_lower: eps, confidence: s.confidence, fpr_upper: f64::NAN, fnr_upper: f64::NAN },
        counted: 1,
        selection: 0,
        how: format!("one run, {m} canaries: the top {k_in} scores guessed in, the bottom {k_out} out (fixed in the spec); Steinke et al. 2023, Theorem 3.1"),
        statistic: None,
        statistic_selection: None,
        plan: audit_plan(spec, s.claim.epsilon, s.confidence)?,
        test_alpha: alpha,
        sw: with.iter().map(|r| r.score).collect(),
        so: without.iter().map(|r| r.score).collect(),
        one_run: Some(one_run),
    })
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    head: ReportHead,
    s: &AnalysisSettings,
    d: Decision,
    ledger_check: Option<LedgerCheck>,
    with: &[&RunRecord],
    without: &[&RunRecord],
    partial: Option<PartialScope>,
    wall_seconds: f64,
) -> Result<AuditReport> {
    let claim = s.claim.clone();
    let delta = claim.delta;
    let confidence = s.confidence;
    let Decision {
        threshold,
        bound,
        counted,
        selection,
        how,
        statistic,
        statistic_selection,
        plan,
        test_alpha,
        sw,
        so,
        one_run,
    } = d;
    let ideal = if one_run.is_some() {
        0.0
    } else {
        ideal_lower_bound(claim.epsilon, delta, counted, test_alpha)?.epsilon_lower
    };
    let mut reasons = Vec::new();
    if bound.epsilon_lower > claim.epsilon {
        reasons.push(format!(
            "the lower bound {:.4} exceeds the claimed epsilon {:.4} at {:.0}% confidence",
            bound.epsilon_lower,
            claim.epsilon,
            100.0 * confidence
        ));
    }
    if let Some(c) = ledger_check.as_ref().filter(|c| !c.ok) {
        reasons.push(format!("white-box: the runs applied {} noisy updates but a ledger recorded only {}, so the claim under-counts the mechanism", c.applied_steps, c.ledger_steps));
    }
    let (verdict, mut verdict_reason) = if !reasons.is_empty() {
        ("violated".to_string(), reasons.join("; "))
    } else if !plan.can_refute {
        (
            "inconclusive".to_string(),
            format!(
                "this procedure cannot refute the claim: the largest bound it can report ({}) is {:.4}, not above the claimed epsilon {:.4} (lower bound {:.4}); more runs, or a claim it can reach, are needed",
                match &one_run {
                    Some(o) => format!("{} guesses among {} canaries", o.guesses, o.canaries),
                    None => format!("{} runs per side", plan.counted_runs_per_side),
                },
                plan.ceiling,
                claim.epsilon,
                bound.epsilon_lower
            ),
        )
    } else {
        (
            "consistent".to_string(),
            format!(
                "the lower bound {:.4} does not exceed the claimed epsilon {:.4}; this does not prove the claim{}",
                bound.epsilon_lower,
                claim.epsilon,
                detectable_words(&plan)
            ),
        )
    };
    if let Some(p) = &partial {
        verdict_reason = format!(
            "{}: a bound from this shard's runs alone, not the audit's result (merge every shard for that); {verdict_reason}",
            p.label
        );
    }
    let roc_points = roc(&sw, &so);
    let mut tpr_at_fpr = BTreeMap::new();
    let mut tpr_at_fpr_notes = BTreeMap::new();
    for (key, f) in [("0.01", 0.01), ("0.001", 0.001), ("0.0001", 0.0001)] {
        if f * (so.len() as f64) < 1.0 {
            tpr_at_fpr.insert(key.to_string(), None);
            tpr_at_fpr_notes.insert(
                key.to_string(),
                format!(
                    "not measurable with {} canary-out runs: the smallest nonzero FPR they can show is 1/{}",
                    so.len(),
                    so.len()
                ),
            );
        } else {
            let tpr = roc_points.iter().filter(|p| p.fpr <= f).map(|p| p.tpr).fold(0.0, f64::max);
            tpr_at_fpr.insert(key.to_string(), Some(tpr));
        }
    }
    let ((mw, sdw), (mo, sdo)) = (mean_sd(&sw), mean_sd(&so));
    let pooled = ((sdw * sdw + sdo * sdo) / 2.0).sqrt();
    let mu = if pooled > 0.0 { ((mw - mo) / pooled).max(0.0) } else { f64::INFINITY };
    let gdp_eps =
        if mu.is_finite() { epsilon_for_mu(mu.min(1e3), delta).unwrap_or(f64::INFINITY) } else { f64::INFINITY };
    let mut notes = Vec::new();
    if verdict != "violated" && ideal > 0.0 && bound.epsilon_lower > ideal {
        notes.push(format!(
            "the lower bound {:.4} is above the ideal bound {:.4}, what a Gaussian mechanism at exactly the claimed epsilon gives on average with these runs: a mechanism at the claim does so about half the time by chance, so this is no evidence against the claim while the bound stays at or below it ({:.4})",
            bound.epsilon_lower, ideal, claim.epsilon
        ));
    }
    if verdict != "violated" && gdp_eps > claim.epsilon {
        notes.push(format!(
            "the Gaussian-DP fit to the scores puts epsilon at {}, above the claim {:.4}: a point estimate under a model of the scores, with sampling error, not a bound; the rigorous bound did not exceed the claim{}",
            if gdp_eps.is_finite() { format!("{gdp_eps:.4}") } else { "infinity".into() },
            claim.epsilon,
            match plan.detectable_epsilon_90 {
                Some(e) => format!("; this audit catches a Gaussian mechanism with probability 0.9 only from epsilon {e:.4}: more runs would sharpen both"),
                None => "; more runs would sharpen both".to_string(),
            }
        ));
    }
    let mut sorted_runs: Vec<RunRecord> = with.iter().chain(without).map(|r| (*r).clone()).collect();
    sorted_runs.sort_by_key(|r| (r.side, r.index));
    let imported = head.scores_source.is_some();
    Ok(AuditReport {
        schema_version: crate::run_folder::manifest::SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        spec_name: head.spec_name,
        spec_digest: head.spec_digest,
        spec: head.spec,
        scores_source: head.scores_source,
        statistic,
        statistic_selection,
        partial,
        claim,
        threat_model: head.threat_model,
        canary: head.canary,
        attack: head.attack,
        runs_per_side: counted,
        selection_runs_per_side: selection,
        confidence,
        threshold_selection: how,
        threshold,
        epsilon_lower: bound.epsilon_lower,
        bound: one_run.is_none().then_some(bound),
        one_run,
        ideal_epsilon_lower: ideal,
        fraction_of_ideal: (ideal > 0.0).then(|| bound.epsilon_lower / ideal),
        plan,
        verdict,
        verdict_reason,
        ledger_check,
        roc: roc_points,
        roc_positives: sw.len() as u64,
        roc_negatives: so.len() as u64,
        tpr_at_fpr,
        tpr_at_fpr_notes,
        notes,
        record_check: RecordCheck {
            fields_checked: !imported,
            replayed: Vec::new(),
            note: if imported {
                "imported scores: no record can be checked or replayed".into()
            } else {
                "every record's spec digest, side, index, seed and score digest checked; none replayed".into()
            },
        },
        gdp_estimate: GdpEstimate {
            mu: if mu.is_finite() { mu } else { 1e300 },
            epsilon: if gdp_eps.is_finite() { gdp_eps } else { 1e300 },
            label: "estimate, not a bound".into(),
        },
        run_seconds: sorted_runs.iter().map(|r| r.seconds).sum(),
        runs: sorted_runs,
        wall_seconds,
    })
}

/// The plan of `spec`'s procedure for a claim of `claim_epsilon` ([`crate::audit::power::plan`];
/// for a one-run audit: its ceiling, all guesses right, and no power figures).
///
/// # Errors
/// As [`crate::audit::power::plan`].
pub fn audit_plan(spec: &AuditSpec, claim_epsilon: f64, confidence: f64) -> Result<AuditPlan> {
    let a = &spec.attack;
    let alpha = 1.0 - confidence;
    if a.mode == AuditMode::OneRun {
        let r = a.guesses;
        let ceiling = one_run_epsilon_lower(a.canaries, r, r, spec.claim.delta, alpha)?;
        return Ok(AuditPlan {
            rule: "one-run".into(),
            claim_epsilon,
            counted_runs_per_side: 0,
            threshold: None,
            design_epsilon: None,
            ceiling,
            ceiling_meaning: format!("all {r} guesses right among {} canaries", a.canaries),
            can_refute: ceiling > claim_epsilon,
            detectable_epsilon_50: None,
            detectable_epsilon_90: None,
            power_method: "not computed for one-run audits".into(),
        });
    }
    crate::audit::power::plan(&Procedure::new(
        a.threshold,
        a.runs_per_side,
        a.held_out_fraction,
        claim_epsilon,
        spec.claim.delta,
        alpha,
    )?)
}

/// The claim an audit of `ctx`'s spec will test, known before any run: the explicit epsilon, or
/// the accountant's on the recipe (q = lot size / examples, sigma, steps). `None` for a DP-GAN
/// target with an accountant claim (its ledger is known only after a run).
///
/// # Errors
/// Accountant errors.
pub fn expected_claim(ctx: &ReplayContext) -> Result<Option<f64>> {
    let spec = ctx.spec();
    match spec.claim.epsilon {
        ClaimedEpsilon::Explicit(e) => Ok(Some(e)),
        ClaimedEpsilon::Trainer(_) => Ok(None),
        ClaimedEpsilon::Accountant(_) if spec.command().is_some() => Ok(None),
        ClaimedEpsilon::Accountant(_) if spec.built_in()?.gan.is_some() => Ok(None),
        ClaimedEpsilon::Accountant(_) => {
            let t = spec.built_in()?;
            let q = (t.lot_size / ctx.train_examples() as f64).min(1.0);
            let phases = [Phase::new(q, t.noise_multiplier, t.steps)?];
            Ok(Some(if spec.claim.accountant == "rdp" {
                RdpAccountant::default().epsilon_of(&phases, spec.claim.delta)?
            } else {
                PldAccountant::default().epsilon_of(&phases, spec.claim.delta)?
            }))
        }
    }
}

fn detectable_words(plan: &AuditPlan) -> String {
    match (plan.detectable_epsilon_50, plan.detectable_epsilon_90) {
        (Some(a), Some(b)) => format!(
            "; it would have caught a Gaussian mechanism of epsilon {a:.4} with probability 1/2 and of epsilon {b:.4} with probability 0.9"
        ),
        (Some(a), None) => format!(
            "; it would have caught a Gaussian mechanism of epsilon {a:.4} with probability 1/2, and no mechanism with probability 0.9"
        ),
        _ => String::new(),
    }
}

/// Reads an audit folder's `audit.json`.
///
/// # Errors
/// I/O errors; [`Error::Data`] for a file that is not an audit report.
pub fn read_report(dir: &Path) -> Result<AuditReport> {
    let path = dir.join(AUDIT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let report: AuditReport = serde_json::from_str(&text).map_err(|e| Error::data(&path, e.to_string()))?;
    crate::run_folder::manifest::check_schema_version(report.schema_version, &path)?;
    Ok(report)
}

impl AuditReport {
    /// The certificate's record of this audit, after checking that it audited the recipe of the
    /// run being certified (same model, noise multiplier and clipping norm as its `metrics.json`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the audited recipe differs from the run's.
    pub fn cert_record_for(
        &self,
        run_config: &crate::train::dpsgd::TrainConfig,
    ) -> Result<crate::cert::schema::AuditRecord> {
        if let Some(p) = &self.partial {
            return Err(Error::invalid(
                "audit",
                &self.spec_name,
                format!("its report is {}: one shard's bound is not the audit's result; cite the folder `dpaudit audit merge` writes from every shard", p.label),
            ));
        }
        let spec = self.spec.as_ref().ok_or_else(|| {
            Error::invalid(
                "audit",
                &self.spec_name,
                "its scores were imported (audit from-scores): it names no recipe dpaudit ran and none of its runs can be replayed, so it cannot be cited",
            )
        })?;
        let t = spec.built_in()?;
        let audited = crate::recipe::Mechanism::from(&t.recipe()?.train_config(t.noise_multiplier, t.steps));
        let trained = crate::recipe::Mechanism::from(run_config);
        if audited != trained {
            return Err(Error::invalid(
                "audit",
                &self.spec_name,
                format!("audited {audited}, but the run trained {trained}: an audit certifies only the recipe it ran"),
            ));
        }
        self.check_records()?;
        let how = match &self.one_run {
            Some(o) => format!("one-run audit ({} canaries, {} guesses)", o.canaries, o.guesses),
            None => format!("replay audit ({} runs per side)", self.runs_per_side),
        };
        Ok(crate::cert::schema::AuditRecord {
            name: format!(
                "{}: {how} of the recipe, {} canary, {}",
                self.spec_name,
                serde_json::to_value(spec.canary.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                match &self.statistic {
                    Some(st) => format!("{} (statistic {st})", self.attack),
                    None => self.attack.clone(),
                }
            ),
            threat_model: self.threat_model.clone(),
            epsilon_lower_bound: self.epsilon_lower,
            confidence: self.confidence,
            verdict: self.cert_verdict(),
            power: Some(self.power_statement()),
        })
    }

    /// The certificate's record of this audit for a run trained elsewhere ([`crate::imported`]),
    /// after checking that the audited runs used the noise multipliers of the imported history
    /// (an audit backs only the mechanism it ran) and that the records check.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the noise multipliers differ; as [`Self::check_records`].
    pub fn cert_record_for_imported(
        &self,
        history: &crate::imported::PrivacyHistory,
    ) -> Result<crate::cert::schema::AuditRecord> {
        let sigmas = |it: &mut dyn Iterator<Item = f64>| {
            let mut v: Vec<f64> = it.collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        };
        if self.spec.as_ref().is_some_and(|s| s.command().is_none()) {
            return Err(Error::invalid(
                "audit",
                &self.spec_name,
                "audited dpaudit's own trainer, not the training code of this imported run: audit that code with [target] kind = \"command\"",
            ));
        }
        let audited = sigmas(&mut self.runs.iter().flat_map(|r| r.ledger_phases.iter().map(|p| p.1)));
        let imported = sigmas(&mut history.phases.iter().map(|p| p.noise_multiplier));
        if audited != imported {
            return Err(Error::invalid(
                "audit",
                &self.spec_name,
                format!(
                    "audited runs with noise multipliers {audited:?}, but the imported history has {imported:?}: an audit backs only the mechanism it ran"
                ),
            ));
        }
        self.check_records()?;
        Ok(crate::cert::schema::AuditRecord {
            name: format!(
                "{}: replay audit ({} runs per side) of the training code, {}",
                self.spec_name, self.runs_per_side, self.attack
            ),
            threat_model: self.threat_model.clone(),
            epsilon_lower_bound: self.epsilon_lower,
            confidence: self.confidence,
            verdict: self.cert_verdict(),
            power: Some(self.power_statement()),
        })
    }

    /// The verdict as a certificate records it (anything but `violated` or `consistent` is
    /// `inconclusive`).
    fn cert_verdict(&self) -> crate::cert::schema::Verdict {
        use crate::cert::schema::Verdict;
        match self.verdict.as_str() {
            "violated" => Verdict::Violated,
            "consistent" => Verdict::Consistent,
            _ => Verdict::Inconclusive,
        }
    }

    /// What this audit could and could not have detected, in words, from its plan: the largest
    /// bound it could report, and the epsilons of a Gaussian mechanism it reports as `violated`
    /// with probability 1/2 and 0.9.
    pub fn power_statement(&self) -> String {
        let p = &self.plan;
        let at =
            |e: Option<f64>| e.map_or_else(|| "no epsilon up to about 280".to_owned(), |e| format!("epsilon {e:.2}"));
        format!(
            "with {} runs per side counted, it could report at most epsilon {:.2} ({}), so it could refute only claims below that; it catches a leakier Gaussian mechanism with probability 1/2 from {} and 0.9 from {}; it cannot detect leaks smaller than its ceiling, nor leaks its canary and statistic do not expose",
            p.counted_runs_per_side,
            p.ceiling,
            p.rule,
            at(p.detectable_epsilon_50),
            at(p.detectable_epsilon_90)
        )
    }

    /// Checks that this report is what its own records give: the spec matches its digest, every
    /// record checks ([`verify_records`]), at least one record was replayed when the audit was
    /// run or merged, and analysing the records again reproduces the bound and the verdict.
    ///
    /// # Errors
    /// [`Error::Data`] saying what does not check.
    pub fn check_records(&self) -> Result<()> {
        let origin = Path::new(AUDIT_FILE);
        if let Some(p) = &self.partial {
            return Err(Error::data(origin, format!("it is {}, not a whole audit", p.label)));
        }
        let spec = self
            .spec
            .as_ref()
            .ok_or_else(|| Error::data(origin, "its scores were imported: no spec to check them against"))?;
        if spec.digest() != self.spec_digest {
            return Err(Error::data(origin, "the spec does not match its digest"));
        }
        verify_records(spec, None, &self.runs, origin)?;
        if self.record_check.replayed.is_empty() {
            return Err(Error::data(
                origin,
                "none of its run records was replayed when it was run or merged: it cannot be cited",
            ));
        }
        let again = analyse(spec, &self.runs, 0.0)?;
        if again.epsilon_lower != self.epsilon_lower || again.verdict != self.verdict {
            return Err(Error::data(
                origin,
                format!(
                    "its runs give epsilon_lower {} and verdict {}, but it says {} and {}",
                    again.epsilon_lower, again.verdict, self.epsilon_lower, self.verdict
                ),
            ));
        }
        Ok(())
    }
}

/// Writes `audit.json` atomically.
///
/// # Errors
/// I/O errors.
pub fn write_report(dir: &Path, report: &AuditReport) -> Result<PathBuf> {
    let path = dir.join(AUDIT_FILE);
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::data(&path, e.to_string()))?;
    write_atomically(&path, &json)?;
    Ok(path)
}

/// The data folder a spec's `target.dataset` names: `fixture` (the bundled MNIST subset,
/// `fixtures/mnist-small`), `mnist` (`data/mnist`), `fashion-mnist` (`data/fashion-mnist`), or a path.
pub fn dataset_dir(dataset: &str) -> PathBuf {
    match dataset {
        "fixture" => PathBuf::from("fixtures/mnist-small"),
        "mnist" => PathBuf::from("data/mnist"),
        "fashion-mnist" => PathBuf::from("data/fashion-mnist"),
        other => PathBuf::from(other),
    }
}

/// Loads the spec's data (cut to `train_examples`) and prepares its runs.
///
/// # Errors
/// Missing or corrupt data; a canary that does not fit the model or data; a command target
/// (prepared by [`crate::audit::external::ExternalContext::new`]).
pub fn prepare(spec: &AuditSpec) -> Result<ReplayContext> {
    let target = spec.built_in()?;
    let (train, test) = load_audit_data(&target.dataset, target.train_examples)?;
    if target.lot_size > train.len() as f64 {
        return Err(Error::invalid(
            "target.lot_size",
            target.lot_size,
            format!("exceeds the {} training examples", train.len()),
        ));
    }
    ReplayContext::new(spec, train, &test)
}

/// An audit's training set D (the first `train_examples` of `dataset`'s training split) and its
/// test split (which supplies the mislabelled canary).
///
/// # Errors
/// Missing or corrupt data; more examples asked for than the training split has.
pub fn load_audit_data(
    dataset: &str,
    train_examples: Option<usize>,
) -> Result<(crate::data::Dataset, crate::data::Dataset)> {
    use crate::data::{load_mnist_dir, Dataset, Split};
    let dir = dataset_dir(dataset);
    let train = load_mnist_dir(&dir, Split::Train, 10)?;
    let test = load_mnist_dir(&dir, Split::Test, 10)?;
    let train = match train_examples {
        Some(n) if n < train.len() => {
            let per = train.shape().pixels().unwrap_or(0);
            Dataset::new(
                format!("{} (first {n})", train.name()),
                train.shape(),
                train.classes(),
                train.pixels()[..n * per].to_vec(),
                train.labels()[..n].to_vec(),
            )?
        }
        Some(n) if n > train.len() => {
            return Err(Error::invalid(
                "target.train_examples",
                n,
                format!("the training set has only {} examples", train.len()),
            ));
        }
        _ => train,
    };
    Ok((train, test))
}

/// Wall-clock helper for the CLI.
pub fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_of(file: &str) -> AuditSpec {
        AuditSpec::load(Path::new(file)).unwrap()
    }

    #[test]
    fn shards_partition_the_runs() {
        let spec = spec_of("audits/dirac-eps2.toml");
        let jobs = spec.jobs();
        assert_eq!(jobs.len() as u64, 2 * spec.attack.runs_per_side);
        for n in 1..6 {
            for &job in &jobs {
                let key = spec.shard_key(job).unwrap();
                let owners = (0..n).filter(|&s| Shard { index: s, count: n }.owns(key)).count();
                assert_eq!(owners, 1);
            }
        }
    }

    #[test]
    fn every_shard_holds_both_sides_of_its_indices() {
        let spec = spec_of("audits/dirac-eps2.toml");
        let k = spec.attack.runs_per_side;
        assert_eq!(spec.shard_keys(), k);
        for i in 0..k {
            assert_eq!(spec.shard_key((Side::With, i)), Some(i));
            assert_eq!(spec.shard_key((Side::Without, i)), Some(i));
        }
        for n in 1..6u32 {
            for s in 0..n {
                let shard = Shard { index: s, count: n };
                assert!((0..k).any(|i| shard.owns(i)), "{s}/{n} owns nothing");
            }
        }
        // A one-run audit is one training: no shard splits it.
        let one = spec_of("audits/one-run-eps8.toml");
        assert_eq!(one.shard_keys(), 1);
        assert_eq!(one.shard_key((Side::With, 3)), None);
        assert!(Shard { index: 0, count: 2 }.check_against(&one).is_err());
    }

    #[test]
    fn roc_runs_from_origin_to_one() {
        let r = roc(&[3.0, 2.0], &[1.0, 2.0]);
        assert_eq!(r.first().unwrap().fpr, 0.0);
        let last = r.last().unwrap();
        assert_eq!((last.fpr, last.tpr), (1.0, 1.0));
    }
}
