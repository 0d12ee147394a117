//! Reading what a report is built from: the run folder (`metrics.json`, `ledger.jsonl`,
//! `model.safetensors`), audit folders (`audit.json`) and a certificate; then [`build`].
//!
//! The run folder is only read, never changed: a torn last ledger line (a crash mid-append) is
//! reported, not repaired. `audit.json` is read leniently, since older files lack fields; only
//! `epsilon_lower` and `verdict` are required.
use super::*;
use crate::accounting::ledger::{phases_of, LedgerEntry};
use crate::accounting::pld::PldAccountant;
use crate::accounting::{rdp, validate_delta, Phase};
use crate::cert::schema::rfc3339_utc;
use crate::cert::sign::{mechanism_of, privacy_of, SignedCertificate};
use crate::durable::sha256_file;
use crate::noise_seeding::{NoiseSeeding, SEEDED_NOISE_WARNING};
use serde::de::IgnoredAny;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fields of `metrics.json` a report uses, all optional (a report can be made from an older
/// or a hand-made run folder): [`crate::run_folder::manifest::RunSummary`].
pub use crate::run_folder::manifest::RunSummary as RunMetrics;

/// A run folder, read.
#[derive(Debug, Clone)]
pub struct RunFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its name (last path component).
    pub name: String,
    /// `metrics.json`, in the flat view every kind of run has.
    pub metrics: RunMetrics,
    /// `metrics.json`, typed by the command that wrote it.
    pub manifest: crate::run_folder::manifest::RunMetrics,
    /// SHA-256 of `metrics.json`.
    pub metrics_sha256: String,
    /// The ledger's complete lines.
    pub entries: Vec<LedgerEntry>,
    /// SHA-256 of `ledger.jsonl` (`None`: no ledger).
    pub ledger_sha256: Option<String>,
    /// Bytes of a torn last ledger line (not counted, not repaired).
    pub torn_ledger_bytes: usize,
    /// SHA-256 of `model.safetensors` (`None`: no model file).
    pub model_sha256: Option<String>,
}

impl RunFolder {
    /// Whether the run claims privacy: `private` in `metrics.json` (or its config); a run that
    /// does not say is taken as private exactly when its ledger has steps.
    pub fn private(&self) -> bool {
        self.metrics.private.unwrap_or(!self.entries.is_empty())
    }

    /// The injected fault, if the run had one.
    pub fn fault(&self) -> Option<String> {
        self.metrics.inject_fault.as_ref().map(|f| f.0.clone())
    }

    /// How the run's noise was seeded (`None`: not recorded), as `dpaudit cert sign` reads it.
    pub fn noise_seeding(&self) -> Option<NoiseSeeding> {
        crate::cert::sign::run_noise_seeding(&self.manifest, &self.entries)
    }

    /// What was trained, in words: the model's architecture, or the DP-GAN's design.
    pub fn model_description(&self) -> Option<String> {
        if let Some(design) = &self.metrics.design {
            let conditioning =
                self.metrics.config.conditioning.as_ref().map_or_else(String::new, |c| format!(", {c} conditioning"));
            return Some(format!("DP-GAN (design {design}{conditioning}; only the discriminator sees private data)"));
        }
        self.metrics.config.model.clone()
    }
}

/// Reads a run folder without changing it.
///
/// # Errors
/// A missing or unparsable `metrics.json`; an unreadable or corrupt ledger (a complete line that
/// does not parse, or steps out of sequence).
pub fn read_run(dir: &Path) -> Result<RunFolder> {
    let metrics_path = dir.join(crate::cert::sign::METRICS_FILE);
    let bytes = crate::durable::read_at_most(&metrics_path, crate::durable::MAX_CERTIFICATE_BYTES)
        .map_err(|e| Error::io(format!("reading {}", metrics_path.display()), e))?;
    let manifest = crate::run_folder::manifest::RunMetrics::parse(&bytes, &metrics_path)?;
    let metrics = manifest.summary();
    let metrics_sha256 = hex::encode(Sha256::digest(&bytes));
    let ledger_path = dir.join(crate::cert::sign::LEDGER_FILE);
    let (entries, ledger_sha256, torn_ledger_bytes) = if ledger_path.exists() {
        let s = crate::accounting::ledger::read_ledger(&ledger_path)?;
        (s.entries, Some(s.sha256), s.torn_bytes)
    } else {
        (Vec::new(), None, 0)
    };
    let model_path = dir.join(crate::cert::sign::MODEL_FILE);
    let model_sha256 = if model_path.exists() { Some(sha256_file(&model_path)?) } else { None };
    let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(RunFolder {
        dir: dir.to_path_buf(),
        name,
        metrics,
        manifest,
        metrics_sha256,
        entries,
        ledger_sha256,
        torn_ledger_bytes,
        model_sha256,
    })
}

/// `audit.json` as written by `dpaudit audit run`, every field optional but two.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct AuditFile {
    schema_version: Option<u32>,
    spec_name: Option<String>,
    spec: Option<Value>,
    claim: Option<AuditClaimFile>,
    threat_model: Option<String>,
    canary: Option<Value>,
    attack: Option<String>,
    runs_per_side: Option<u64>,
    confidence: Option<f64>,
    threshold_selection: Option<String>,
    epsilon_lower: Option<f64>,
    ideal_epsilon_lower: Option<f64>,
    verdict: Option<String>,
    verdict_reason: Option<String>,
    roc: Option<Vec<RocPoint>>,
    tpr_at_fpr: Option<BTreeMap<String, Option<f64>>>,
    tpr_at_fpr_notes: Option<BTreeMap<String, String>>,
    roc_positives: Option<u64>,
    roc_negatives: Option<u64>,
    plan: Option<crate::report::CouldShow>,
    notes: Option<Vec<String>>,
    gdp_estimate: Option<GdpSummary>,
    one_run: Option<Value>,
    runs: Option<Vec<IgnoredAny>>,
    wall_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct AuditClaimFile {
    epsilon: Option<f64>,
    delta: Option<f64>,
    source: Option<String>,
}

/// Reads an audit: `dir/audit.json`, or `dir` itself when it is a file. `run` (the release) is
/// used to say whether the audit tested the same recipe, and `claimed_epsilon` (the report's) to
/// say whether the audit refutes it.
///
/// # Errors
/// An unreadable file, JSON that is not an audit, a missing `epsilon_lower` or `verdict`.
pub fn read_audit(dir: &Path, run: Option<&RunFolder>, claimed_epsilon: f64) -> Result<AuditSummary> {
    let path = if dir.is_file() { dir.to_path_buf() } else { dir.join("audit.json") };
    let bytes = crate::durable::read_at_most(&path, crate::durable::MAX_LEDGER_BYTES)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let a: AuditFile =
        serde_json::from_slice(&bytes).map_err(|e| Error::data(&path, format!("not an audit.json: {e}")))?;
    crate::run_folder::manifest::check_schema_version(a.schema_version.unwrap_or(1), &path)?;
    let epsilon_lower = a
        .epsilon_lower
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| Error::data(&path, "no `epsilon_lower` (a finite number >= 0)"))?;
    let verdict = a.verdict.clone().ok_or_else(|| Error::data(&path, "no `verdict`"))?;
    let target =
        a.spec.as_ref().and_then(|s| s.get("target")).map(crate::run_folder::manifest::AuditTargetRecord::from_value);
    let recipe = target.as_ref().map(|t| {
        let num = |x: Option<f64>| x.map_or_else(|| "?".to_owned(), |x| x.to_string());
        format!(
            "{} on {}, sigma = {}, C = {}, lot {}, {} steps",
            t.model.as_deref().unwrap_or("?"),
            t.dataset.as_deref().unwrap_or("?"),
            num(t.noise_multiplier),
            num(t.max_grad_norm),
            num(t.lot_size),
            num(t.steps)
        )
    });
    // The audit counts for the run when both record the same model, sigma and C (typed).
    let same_recipe_as_run = match (&target, run) {
        (Some(t), Some(r)) => t.same_mechanism_as(&r.metrics.config),
        _ => None,
    };
    let mut roc = a.roc.clone().unwrap_or_default();
    roc.retain(|p| p.fpr.is_finite() && p.tpr.is_finite());
    roc.sort_by(|x, y| x.fpr.total_cmp(&y.fpr).then(x.tpr.total_cmp(&y.tpr)));
    // The upper staircase: for each FPR, only the highest TPR.
    let mut staircase: Vec<RocPoint> = Vec::new();
    for p in roc {
        match staircase.last_mut() {
            Some(last) if last.fpr == p.fpr => last.tpr = last.tpr.max(p.tpr),
            _ => staircase.push(p),
        }
    }
    let canary = match &a.canary {
        Some(Value::Object(m)) => m.get("kind").and_then(Value::as_str).unwrap_or("unknown").to_owned(),
        Some(Value::String(s)) => s.clone(),
        _ => "unknown".into(),
    };
    Ok(AuditSummary {
        folder: if dir.is_file() {
            dir.parent().unwrap_or(Path::new(".")).display().to_string()
        } else {
            dir.display().to_string()
        },
        file: path.display().to_string(),
        name: a
            .spec_name
            .clone()
            .unwrap_or_else(|| dir.file_name().map_or_else(|| "audit".into(), |n| n.to_string_lossy().into_owned())),
        threat_model: a.threat_model.clone().unwrap_or_else(|| "unknown".into()),
        attack: a.attack.clone().unwrap_or_else(|| "unknown".into()),
        canary,
        recipe,
        same_recipe_as_run,
        claimed_epsilon: a.claim.as_ref().and_then(|c| c.epsilon),
        claimed_delta: a.claim.as_ref().and_then(|c| c.delta),
        claim_source: a.claim.as_ref().and_then(|c| c.source.clone()),
        runs_per_side: a.runs_per_side,
        confidence: a.confidence,
        threshold_selection: a.threshold_selection.clone(),
        epsilon_lower,
        ideal_epsilon_lower: a.ideal_epsilon_lower,
        verdict,
        verdict_reason: a.verdict_reason.clone().unwrap_or_default(),
        // An audit of another recipe says nothing about this run's epsilon.
        refutes_report_claim: epsilon_lower > claimed_epsilon && same_recipe_as_run != Some(false),
        tpr_at_fpr: a.tpr_at_fpr.clone().unwrap_or_default(),
        tpr_at_fpr_notes: a.tpr_at_fpr_notes.clone().unwrap_or_default(),
        roc_counts: a.roc_positives.zip(a.roc_negatives).filter(|&(p, n)| p > 0 && n > 0),
        could_show: a.plan,
        notes: a.notes.clone().unwrap_or_default(),
        gdp_estimate: a.gdp_estimate,
        one_run: a.one_run.clone().filter(|v| !v.is_null()),
        roc: staircase,
        runs_recorded: a.runs.as_ref().map_or(0, |r| r.len() as u64),
        wall_seconds: a.wall_seconds,
        sha256: hex::encode(Sha256::digest(&bytes)),
    })
}

/// The RDP and PLD epsilons of a run's ledger (`None` when it has no noisy steps).
fn accountant_epsilons(entries: &[LedgerEntry], delta: f64) -> Result<Option<(f64, f64)>> {
    if entries.is_empty() {
        return Ok(None);
    }
    let phases = phases_of(entries)?;
    Ok(Some((rdp::epsilon(&phases, delta)?.epsilon, PldAccountant::default().epsilon(&phases, delta)?.epsilon)))
}

/// The delta of the run's own epsilons in `metrics.json`.
fn run_delta(run: &RunFolder) -> Option<f64> {
    run.metrics.delta()
}

/// Epsilon (RDP accountant, the accountant of the report's claim) after up to `points` evenly
/// spaced prefixes of the ledger.
///
/// # Errors
/// As the RDP accountant; non-Poisson steps.
pub fn epsilon_over_steps(entries: &[LedgerEntry], delta: f64, points: usize) -> Result<Vec<EpsilonPoint>> {
    let n = entries.len();
    let points = points.min(n);
    let mut out = Vec::with_capacity(points);
    for i in 1..=points {
        let k = (i * n).div_ceil(points);
        if out.last().is_some_and(|p: &EpsilonPoint| p.step == k as u64) {
            continue;
        }
        let phases: Vec<Phase> = phases_of(&entries[..k])?;
        out.push(EpsilonPoint { step: k as u64, epsilon: rdp::epsilon(&phases, delta)?.epsilon });
    }
    Ok(out)
}

/// A word for a POSIX shell: as it is when it holds only safe characters, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn sq(p: &Path) -> String {
    shell_quote(&p.display().to_string())
}

/// Standard base64 (RFC 4648, with padding), by the `base64` crate.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A synthetic-data release folder, read: the report's section, the SHA-256 of each released
/// file (as found, and as `release.json` states it), and the ledger hash it names.
struct ReleaseFolder {
    section: SyntheticData,
    files: Vec<(String, String, Option<String>)>,
    ledger_sha256: Option<String>,
    release_json_sha256: String,
}

/// The utility section of a synthetic release, from `dpaudit evaluate synthetic --json`.
fn read_evaluation(path: &Path) -> Result<SyntheticUtility> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| Error::data(path, format!("not JSON: {e}")))?;
    let num = |x: Option<&Value>, what: &str| {
        x.and_then(Value::as_f64).ok_or_else(|| {
            Error::data(path, format!("no `{what}`: not the output of `dpaudit evaluate synthetic --json`"))
        })
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("not recorded").to_owned();
    Ok(SyntheticUtility {
        file: path.display().to_string(),
        cas: num(v.get("cas").and_then(|c| c.get("test_accuracy")), "cas.test_accuracy")?,
        cas_protocol: v
            .get("cas")
            .and_then(|c| c.get("protocol"))
            .and_then(Value::as_str)
            .unwrap_or("not recorded")
            .to_owned(),
        fid_mnist_classifier: num(v.get("fid_mnist_classifier"), "fid_mnist_classifier")?,
        fid_protocol: text("fid_protocol"),
        real_vs_fake_accuracy: num(v.get("real_vs_fake_accuracy"), "real_vs_fake_accuracy")?,
        real_vs_fake_protocol: text("real_vs_fake_protocol"),
    })
}

fn read_release(dir: &Path, nearest: Option<&Path>, evaluation: Option<&Path>) -> Result<ReleaseFolder> {
    let (v, bytes) = crate::run_folder::manifest::ReleaseManifest::read_with_bytes(dir)?;
    let epsilon_status = v.epsilon_status.clone();
    let mut files = Vec::new();
    for (name, sha) in &v.files {
        let actual = if dir.join(name).is_file() { Some(sha256_file(&dir.join(name))?) } else { None };
        files.push((name.clone(), sha.clone(), actual));
    }
    let grid = dir.join("grid.png");
    let sample_grid_png_base64 = if grid.is_file() {
        Some(base64(&std::fs::read(&grid).map_err(|e| Error::io(format!("reading {}", grid.display()), e))?))
    } else {
        None
    };
    let (nearest_neighbour, nearest_neighbour_flags) = match nearest {
        Some(p) => nearest_neighbour_rows(p)?,
        None => (Vec::new(), Vec::new()),
    };
    Ok(ReleaseFolder {
        section: SyntheticData {
            release: dir.display().to_string(),
            records: v.count as u64,
            design: v.design.clone(),
            epsilon_proven: epsilon_status.starts_with("proven"),
            epsilon_status,
            generator_sha256: v.generator_sha256.clone(),
            nearest_neighbour,
            nearest_neighbour_flags,
            sample_grid_png_base64,
            evaluation: evaluation.map(read_evaluation).transpose()?,
        },
        files,
        ledger_sha256: Some(v.ledger.sha256.clone()),
        release_json_sha256: hex::encode(Sha256::digest(&bytes)),
    })
}

/// The rows of the nearest-neighbour section, from `dpaudit attack nearest-neighbour --out`.
fn nearest_neighbour_rows(path: &Path) -> Result<(Vec<NearestNeighbourResult>, Vec<String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| Error::data(path, format!("not JSON: {e}")))?;
    let d = v.get("distances").ok_or_else(|| {
        Error::data(path, "no `distances`: not the output of `dpaudit attack nearest-neighbour --out`")
    })?;
    let num = |x: Option<&Value>| x.and_then(Value::as_f64);
    let mut rows = Vec::new();
    let mut push = |metric: &str, value: Option<f64>, note: &str| {
        if let Some(value) = value {
            rows.push(NearestNeighbourResult { metric: metric.into(), value, note: note.into() });
        }
    };
    let dist = v.get("distance").and_then(Value::as_str).unwrap_or("distance");
    push(&format!("median distance to the closest training record ({dist})"), num(d.get("dcr_synthetic_to_train").and_then(|x| x.get("median"))), "compare with the next row: similar values mean the generator is no closer to the training data than to unseen data");
    push(
        &format!("median distance to the closest holdout record ({dist})"),
        num(d.get("dcr_synthetic_to_holdout").and_then(|x| x.get("median"))),
        "records of the same distribution the generator never saw",
    );
    push(
        "smallest distance to a training record",
        num(d.get("dcr_synthetic_to_train").and_then(|x| x.get("min"))),
        "0 would mean a released record copies a training record",
    );
    push(
        "share of released records closer to a training record than to any holdout record",
        num(d.get("share_closer_to_train")),
        "about 0.5 when nothing is memorised",
    );
    push("one-sided p-value of that share (permutation test: random re-splits of the pooled training and holdout records)", num(d.get("share_p_value")), "small means closer to the training records than chance re-splits give");
    push(
        "released records that copy a training record byte for byte",
        num(d.get("exact_copies_of_train")),
        "should be 0",
    );
    push(
        "median NNDR (nearest over second-nearest training record)",
        num(d.get("nndr").and_then(|x| x.get("median"))),
        "low values mean a released record sits unusually close to one training record",
    );
    let metrics = v.get("attack").and_then(|a| a.get("metrics"));
    push(
        "GAN-Leaks membership attack: AUC (training against holdout records)",
        num(metrics.and_then(|m| m.get("auc"))),
        "0.5 is chance; evidence, not a bound",
    );
    let flags = d
        .get("flags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok((rows, flags))
}

fn finite(x: f64) -> Result<Epsilon> {
    Epsilon::from_f64(x).ok_or_else(|| Error::numerical("report epsilon", "NaN"))
}

fn method_rdp(detail: &Value) -> String {
    let order = detail.get("order").map_or_else(|| "?".into(), Value::to_string);
    let conversion = match detail.get("conversion").and_then(Value::as_str) {
        Some("improved") => "the improved conversion (Balle et al. 2020)",
        Some("classic") => "the classic conversion (Mironov 2017)",
        _ => "an RDP-to-DP conversion",
    };
    format!("Rényi DP of the Poisson-subsampled Gaussian composed over the ledger's steps, best order alpha = {order} of the default grid, converted to (epsilon, delta) with {conversion}")
}

/// The report's claim sentence.
fn claim_statement(private: bool, fault: Option<&str>, epsilon: Epsilon, delta: f64, subject: &str) -> String {
    if !private {
        return format!("This {subject} was NOT trained with differential privacy: no privacy guarantee is claimed (epsilon is infinite).");
    }
    let eps = format_epsilon(epsilon);
    let verb = if subject == "model" { "trained" } else { "produced" };
    let base = format!(
        "This {subject} was {verb} with (ε = {eps}, δ = {})-differential privacy, per record (ε by the RDP accountant, verified by the MPFR oracle: the number its certificate certifies)",
        format_delta(delta)
    );
    if let Some(f) = fault {
        return format!("{base}, ACCORDING TO ITS LEDGER ONLY: the run was trained with a deliberately injected fault ({f}), so this number does not describe what was run and is not a valid guarantee.");
    }
    let factor = format_upper(epsilon.value().exp());
    format!("{base}: adding or removing any one training example changes the probability of any outcome by at most a factor of e^ε ≈ {factor}, except with probability at most δ = {}.", format_delta(delta))
}

fn overall_verdict(audits: &[AuditSummary], claim: &Claim) -> OverallVerdict {
    if audits.is_empty() {
        return OverallVerdict {
            status: VerdictStatus::NotAudited,
            statement: "No empirical audit was supplied: the claim rests on the accountants' proofs alone.".into(),
        };
    }
    // Audits of another recipe (model, sigma or C) are shown, but do not decide this verdict.
    let (relevant, other): (Vec<&AuditSummary>, Vec<&AuditSummary>) =
        audits.iter().partition(|a| a.same_recipe_as_run != Some(false));
    let other_note = match other.len() {
        0 => String::new(),
        k => {
            let violated = other.iter().filter(|a| a.verdict == "violated").count();
            format!(
                " {k} audit{} tested another recipe than this run's and {} not counted here{}.",
                if k == 1 { "" } else { "s" },
                if k == 1 { "is" } else { "are" },
                if violated > 0 { format!(" ({violated} of them violated its own claim)") } else { String::new() }
            )
        }
    };
    if relevant.is_empty() {
        return OverallVerdict { status: VerdictStatus::NotAudited, statement: format!("No audit of this run's recipe was supplied: the claim rests on the accountants' proofs alone.{other_note}") };
    }
    let violated: Vec<&&AuditSummary> =
        relevant.iter().filter(|a| a.verdict == "violated" || (claim.private && a.refutes_report_claim)).collect();
    if let Some(first) = violated.first() {
        let conf = first.confidence.map_or_else(String::new, |c| format!(" with {}% confidence", c * 100.0));
        return OverallVerdict {
            status: VerdictStatus::Violated,
            statement: format!(
                "REFUTED: {} of {} audits of this recipe contradict the privacy claim. Audit {} shows ε ≥ {}{conf}, which {}.{other_note}",
                violated.len(),
                relevant.len(),
                first.name,
                format_lower(first.epsilon_lower),
                if first.refutes_report_claim { format!("exceeds this report's ε = {}", format_epsilon(claim.epsilon)) } else { "exceeds the epsilon that audit tested".to_owned() }
            ),
        };
    }
    // An inconclusive audit could not have refuted the claim: it is no evidence either way.
    let (inconclusive, relevant): (Vec<&AuditSummary>, Vec<&AuditSummary>) =
        relevant.into_iter().partition(|a| a.verdict == "inconclusive");
    let inconclusive_note = match inconclusive.len() {
        0 => String::new(),
        k => format!(
            " {k} audit{} of this recipe {} inconclusive (its procedure could not have reported a bound above the claim) and {} not counted.",
            if k == 1 { "" } else { "s" },
            if k == 1 { "is" } else { "are" },
            if k == 1 { "is" } else { "are" }
        ),
    };
    if relevant.is_empty() {
        return OverallVerdict {
            status: VerdictStatus::Inconclusive,
            statement: format!("Inconclusive: no audit of this recipe could have refuted the claim with the runs it made.{inconclusive_note}{other_note}"),
        };
    }
    let other_note = format!("{inconclusive_note}{other_note}");
    let unknown = relevant.iter().filter(|a| a.same_recipe_as_run.is_none()).count();
    let n = relevant.len();
    let plural = if n == 1 { "" } else { "s" };
    let subject = match unknown {
        0 => format!("{n} audit{plural} of this recipe"),
        k if k == n => {
            format!("{n} audit{plural} that do{} not record the recipe tested", if n == 1 { "es" } else { "" })
        }
        k => format!("{n} audits ({k} of them not recording the recipe tested)"),
    };
    let best = relevant.iter().max_by(|a, b| a.epsilon_lower.total_cmp(&b.epsilon_lower)).expect("not empty");
    let ideal = match (best.could_show, best.ideal_epsilon_lower) {
        (Some(c), _) => format!(" ({})", c.words()),
        (None, Some(i)) => {
            format!(
                " (a Gaussian mechanism at exactly the claimed ε would give about {} with the same runs)",
                format_lower(i)
            )
        }
        _ => String::new(),
    };
    let conf = best.confidence.map_or_else(String::new, |c| format!(" at {}% confidence", c * 100.0));
    OverallVerdict {
        status: VerdictStatus::Consistent,
        statement: format!(
            "Consistent: {subject} found nothing that contradicts the claim. The largest lower bound is ε ≥ {}{conf}{ideal}. An audit can refute a claim but never prove it.{other_note}",
            format_lower(best.epsilon_lower)
        ),
    }
}

fn summarise_certificate(
    path: &Path,
    public_key: Option<&Path>,
    run: &RunFolder,
    released: &[String],
    artifacts_dir: &Path,
) -> Result<CertificateSummary> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let signed: SignedCertificate =
        serde_json::from_slice(&bytes).map_err(|e| Error::data(path, format!("not a dpaudit certificate: {e}")))?;
    let c = &signed.certificate;
    let covers_this_release = c.artifact.files.iter().any(|f| released.contains(&f.sha256));
    let ledger_matches = c.ledger.as_ref().map(|l| run.ledger_sha256.as_deref() == Some(l.sha256.as_str()));
    let (signature_verified, signature) = match public_key {
        Some(key) => match crate::cert::verify::verify(path, key, Some(artifacts_dir), false) {
            Ok(v) => (
                Some(true),
                format!(
                    "verified: Ed25519 signature by key {} checked with {}, and the SHA-256 of {} file(s) in {} match",
                    v.key_id,
                    key.display(),
                    v.artifacts_checked.len(),
                    artifacts_dir.display()
                ),
            ),
            Err(f) => (
                Some(false),
                format!("VERIFICATION FAILED (exit code {} of `dpaudit cert verify`): {f}", f.exit_code()),
            ),
        },
        None => (
            None,
            format!(
                "not checked by this report (no public key was given): check it with `dpaudit cert verify {} --artifacts {} --recompute` and `--pubkey` the signer's public key file",
                sq(path),
                sq(artifacts_dir)
            ),
        ),
    };
    Ok(CertificateSummary {
        path: path.display().to_string(),
        key_id: signed.signature.key_id.clone(),
        issued_at: c.issued_at.clone(),
        status: serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        tool: ToolInfo {
            name: c.tool.name.clone(),
            version: c.tool.version.clone(),
            git_commit: c.tool.git_commit.clone(),
        },
        verified_epsilon: c.privacy.verified_epsilon.epsilon,
        delta: c.privacy.delta,
        covers_this_release,
        ledger_matches,
        signature_verified,
        signature,
        noise_seeding: c.noise_seeding.map_or_else(|| "not recorded".to_owned(), |n| n.as_str().to_owned()),
    })
}

/// The accountant of every report's claim, named in its headline: the number `dpaudit cert sign`
/// certifies (`privacy.verified_epsilon`).
pub const CLAIM_ACCOUNTANT: &str =
    "RDP accountant, re-derived by the MPFR oracle with every rounding upward (the ε a certificate certifies)";

/// `dpaudit train` flags that reproduce a run, from its `metrics.json` (best effort).
///
/// The command never carries a seed: a released run's noise seed must not be published, and
/// without one the noise is drawn afresh from the OS CSPRNG (the same recipe, not the same
/// numbers). It writes to `<run folder>-reproduced`, so that it runs as printed. `None` when the
/// training data's folder is not known (older runs trained on anything but the built-in names).
fn train_command(run: &RunFolder) -> Option<String> {
    let m = &run.metrics;
    let mut cmd = vec!["dpaudit train".to_owned()];
    match (m.train_data_dir.as_deref(), m.train_dataset.as_deref().map(|d| d.split('/').next().unwrap_or(d))) {
        (Some(dir), _) => cmd.push(format!("--data-dir {}", shell_quote(dir))),
        (None, Some("mnist-small")) => cmd.push("--dataset fixture".into()),
        (None, Some(d @ ("mnist" | "fashion-mnist"))) => cmd.push(format!("--dataset {d}")),
        (None, _) => return None,
    }
    let config = &run.metrics.config;
    if let Some(model) = &config.model {
        cmd.push(format!("--model {}", shell_quote(model)));
    }
    if let Some(e) = m.epochs {
        cmd.push(format!("--epochs {e}"));
    }
    if let Some(l) = config.lot_size {
        cmd.push(format!("--lot-size {l}"));
    }
    if run.private() {
        if let Some(s) = config.noise_multiplier {
            cmd.push(format!("--noise-multiplier {s}"));
        }
        if let Some(c) = config.max_grad_norm {
            cmd.push(format!("--max-grad-norm {c}"));
        }
    } else {
        cmd.push("--no-privacy".into());
    }
    if let Some(d) = run_delta(run) {
        cmd.push(format!("--delta {d}"));
    }
    if let Some(lr) = config.lr {
        cmd.push(format!("--lr {lr}"));
    }
    if let Some(opt) = &config.optimizer {
        cmd.push(format!("--optimizer {}", shell_quote(&opt.kind)));
        if let Some(mo) = opt.parameters.get("momentum").and_then(Value::as_f64) {
            cmd.push(format!("--momentum {mo}"));
        }
    }
    if let Some(schedule) = &config.schedule {
        cmd.push(format!("--schedule {}", shell_quote(&schedule.kind)));
    }
    if let Some(v) = m.validation_examples.filter(|&v| v > 0) {
        cmd.push(format!("--validation {v}"));
    }
    if let Some(d) = m.device.as_deref().filter(|&d| d != "cpu") {
        cmd.push(format!("--device {}", shell_quote(d)));
    }
    if let Some(d) = m.parameter_averaging {
        cmd.push(format!("--ema {d}"));
    }
    if let Some(f) = run.fault() {
        cmd.push(format!("--inject-fault {}", shell_quote(&f)));
    }
    cmd.push(format!("--out {}", sq(&reproduced(&run.dir))));
    Some(cmd.join(" "))
}

/// Where a command that reproduces `dir` writes: a sibling `<name>-reproduced`, so that it never
/// meets the original's files.
fn reproduced(dir: &Path) -> PathBuf {
    let name = dir.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}-reproduced"))
}

/// The spec file of an audit, when one can be found: `<name>.toml` beside the audit folder, or in
/// `audits/` (relative to where the report is read).
fn audit_spec_file(a: &AuditSummary) -> Option<PathBuf> {
    let file = format!("{}.toml", a.name);
    let beside = Path::new(&a.folder).parent().map(|p| p.join(&file));
    beside.into_iter().chain(std::iter::once(Path::new("audits").join(&file))).find(|p| p.is_file())
}

/// Builds the report.
///
/// # Errors
/// No run given; missing or corrupt run files; a run folder whose `metrics.json`, ledger and
/// checkpoint disagree ([`crate::error::Error::Inconsistent`], from
/// [`crate::run_folder::check_consistency`]); a private run without ledger steps; non-Poisson
/// ledger steps; an unreadable audit or certificate; an invalid delta.
pub fn build(options: &ReportOptions) -> Result<Report> {
    let first = options.runs.first().ok_or_else(|| Error::invalid("runs", 0, "give at least one run folder"))?;
    let run = read_run(first)?;
    // What the report prints from metrics.json must be what the ledger and checkpoint say.
    crate::run_folder::check_consistency(&run.dir, &run.manifest, &run.entries)?;
    let others: Vec<RunFolder> = options.runs[1..].iter().map(|d| read_run(d)).collect::<Result<_>>()?;
    let delta = validate_delta(options.delta.or_else(|| run_delta(&run)).unwrap_or(DEFAULT_DELTA))?;
    let private = run.private();
    let fault = run.fault();
    let mut warnings = Vec::new();
    let release = match &options.release {
        Some(dir) => Some(read_release(dir, options.nearest_neighbour.as_deref(), options.evaluation.as_deref())?),
        None => {
            if options.evaluation.is_some() {
                return Err(Error::invalid(
                    "synthetic-data evaluation",
                    "given",
                    "needs the release it is about (--release DIR)",
                ));
            }
            if options.nearest_neighbour.is_some() {
                return Err(Error::invalid(
                    "nearest-neighbour results",
                    "given",
                    "need the release they are about (--release DIR)",
                ));
            }
            None
        }
    };
    if let Some(r) = &release {
        for (name, stated, actual) in &r.files {
            match actual {
                None => warnings.push(format!("{name}, listed in release.json, is missing from {}", r.section.release)),
                Some(a) if a != stated => warnings.push(format!(
                    "{name} in {} has SHA-256 {a}, but release.json states {stated}: the file is not the one released",
                    r.section.release
                )),
                _ => {}
            }
        }
        if r.ledger_sha256.is_some() && r.ledger_sha256 != run.ledger_sha256 {
            warnings.push(format!(
                "release.json names another ledger (SHA-256 {}) than {}'s: the release was not made from this run",
                r.ledger_sha256.as_deref().unwrap_or(""),
                run.dir.display()
            ));
        }
        if !r.section.epsilon_proven {
            warnings.push(format!("the release's epsilon is not proven: {}", r.section.epsilon_status));
        }
    }
    if run.torn_ledger_bytes > 0 {
        warnings.push(format!("ledger.jsonl ends with a torn line of {} bytes (a crash while recording a step whose update was then never applied); it is not counted, and the file was left as it is", run.torn_ledger_bytes));
    }
    if let (Some(recorded), Some(actual)) = (&run.metrics.model_sha256, &run.model_sha256) {
        if recorded != actual {
            warnings.push(format!("model.safetensors has SHA-256 {actual}, but the training run recorded {recorded}: the model file is not the one that was trained"));
        }
    }
    if run.model_sha256.is_none() && release.is_none() {
        warnings.push("the run folder has no model.safetensors".into());
    }
    if let Some(steps) = run.metrics.steps {
        if private && (run.entries.len() as u64) < steps {
            warnings.push(format!(
                "the ledger records {} steps but metrics.json reports {steps}: epsilon is computed from the ledger",
                run.entries.len()
            ));
        }
    }
    if let Some(f) = &fault {
        warnings
            .push(format!("the run was trained with an injected fault ({f}); `dpaudit cert sign` refuses such runs"));
    }
    if private && run.entries.is_empty() {
        return Err(Error::data(
            run.dir.join(crate::cert::sign::LEDGER_FILE),
            "a private run must have a ledger with at least one noisy step",
        ));
    }

    // How epsilon was computed, and the claim.
    let mechanism_steps = mechanism_of(&run.entries);
    let (epsilons, claim_epsilon, claim_accountant) = if private {
        let phases = phases_of(&run.entries)?;
        let p = privacy_of(&phases, delta)?;
        let mut rows = Vec::new();
        for e in &p.epsilons {
            let method = match e.accountant.as_str() {
                "rdp" => method_rdp(&e.method),
                "pld" => format!(
                    "privacy loss distribution of the same composition, discretised with h = {}, tail mass {}, pessimistic (never below the true epsilon), worse direction: {}",
                    e.method.get("discretization").map_or_else(|| "?".into(), Value::to_string),
                    e.method.get("tail_mass").map_or_else(|| "?".into(), Value::to_string),
                    e.method.get("worse_direction").and_then(Value::as_str).unwrap_or("?")
                ),
                _ => e.method.to_string(),
            };
            rows.push(AccountantRow { accountant: e.accountant.clone(), epsilon: e.epsilon, method });
        }
        let v = &p.verified_epsilon;
        rows.push(AccountantRow {
            accountant: "mpfr oracle".into(),
            epsilon: v.epsilon,
            method: format!(
                "the RDP bound re-derived with 256-bit MPFR arithmetic, every rounding directed upward (order {}, {} conversion): the rigorous upper bound a certificate holds the RDP claim to",
                v.order.map_or_else(|| "?".into(), |o| o.to_string()),
                v.conversion.and_then(|c| serde_json::to_value(c).ok()).and_then(|c| c.as_str().map(str::to_owned)).unwrap_or_default()
            ),
        });
        // The claim is the number a certificate certifies (`privacy.verified_epsilon`): the RDP
        // accountant's bound re-derived by the MPFR oracle. The other accountants are listed, not
        // claimed, so that the headline, the certificate and the plot show one number.
        (rows, v.epsilon, CLAIM_ACCOUNTANT.to_owned())
    } else {
        (Vec::new(), Epsilon::Infinity, "none (not private)".to_owned())
    };
    let noise_seeding = run.noise_seeding();
    let imported = run.manifest.imported().cloned();
    if private {
        match noise_seeding {
            Some(NoiseSeeding::Seeded) => warnings.push(format!("this release is {SEEDED_NOISE_WARNING}")),
            None if imported.is_some() => warnings.push("the import does not say how the trainer drew its noise: unless it was a cryptographic generator, its noise may be reproducible and it is not fit for release".into()),
            None => warnings.push("the run does not record how its noise was seeded (an older run): if it was trained with an explicit seed, its noise can be regenerated from the seed and it is not fit for release".into()),
            Some(NoiseSeeding::Csprng) => {}
        }
    }
    let subject = if release.is_some() { "synthetic dataset" } else { "model" };
    let claim = Claim {
        private,
        subject: subject.into(),
        epsilon: claim_epsilon,
        delta,
        accountant: claim_accountant,
        adjacency: "neighbouring datasets differ by adding or removing one training example".into(),
        statement: match &release {
            Some(r) if private && !r.section.epsilon_proven => format!(
                "This synthetic dataset comes with a CLAIMED, NOT PROVEN (ε = {}, δ = {}) (RDP accountant, verified by the MPFR oracle): {}. No differential-privacy guarantee is established for it.",
                format_epsilon(claim_epsilon),
                format_delta(delta),
                r.section.epsilon_status
            ),
            _ => claim_statement(private, fault.as_deref(), claim_epsilon, delta, subject),
        } + if private && noise_seeding == Some(NoiseSeeding::Seeded) {
            " NOT FIT FOR RELEASE: its noise can be regenerated from the seed."
        } else {
            ""
        } + &imported.as_ref().map_or_else(String::new, |p| {
            format!(
                " It was trained by {}, not by dpaudit: ε was recomputed by dpaudit's accountants from the privacy history the trainer reported{}; that the training followed this history is the trainer's word, tested only by the audits of its code listed here.",
                p.trainer,
                p.trainer_claim.as_ref().map_or_else(String::new, |c| format!(" (the trainer itself claimed ε = {} at δ = {} with its {} accountant)", c.epsilon, format_delta(c.delta), c.accountant))
            )
        }),
        noise_seeding: noise_seeding.map_or_else(|| "not recorded".to_owned(), |n| n.as_str().to_owned()),
        training_code: imported.as_ref().map(|p| {
            format!("{}, not dpaudit's (imported; privacy history {} with SHA-256 {})", p.trainer, p.history_file, p.history_sha256)
        }),
    };
    let mechanism = MechanismSection {
        sampling: mechanism_steps.sampling.clone(),
        adjacency: mechanism_steps.adjacency.clone(),
        steps: mechanism_steps.steps,
        phases: mechanism_steps.phases.clone(),
        noise_multiplier_source: run.metrics.noise_multiplier_source.clone().unwrap_or_else(|| "not recorded".into()),
        delta,
        epsilons,
    };
    let epsilon_over_steps =
        if private { epsilon_over_steps(&run.entries, delta, options.epsilon_points)? } else { Vec::new() };

    // Utility: the release, then the comparison runs.
    let mut utility_runs = vec![UtilityPoint {
        run: run.name.clone(),
        released: true,
        epsilon: claim_epsilon,
        test_accuracy: run.metrics.test_accuracy.unwrap_or(f64::NAN),
    }];
    for o in &others {
        let eps = match (o.private(), accountant_epsilons(&o.entries, delta)?) {
            (true, Some((r, _))) => finite(r)?,
            _ => Epsilon::Infinity,
        };
        utility_runs.push(UtilityPoint {
            run: o.name.clone(),
            released: false,
            epsilon: eps,
            test_accuracy: o.metrics.test_accuracy.unwrap_or(f64::NAN),
        });
    }
    let utility = Utility {
        model: run.model_description().unwrap_or_else(|| "not recorded".into()),
        train_dataset: run.metrics.train_dataset.clone().unwrap_or_else(|| "unknown".into()),
        train_examples: run.metrics.train_examples.unwrap_or(0) as u64,
        test_accuracy: run.metrics.test_accuracy.unwrap_or(f64::NAN),
        robust_test_accuracy: run.metrics.robust_test_accuracy,
        runs: utility_runs,
    };
    if run.metrics.test_accuracy.is_none() && release.is_none() {
        warnings.push("metrics.json has no test_accuracy".into());
    }

    let audits: Vec<AuditSummary> =
        options.audits.iter().map(|d| read_audit(d, Some(&run), claim_epsilon.value())).collect::<Result<_>>()?;
    let verdict = overall_verdict(&audits, &claim);
    let certificate = match &options.certificate {
        Some(p) => {
            let released: Vec<String> = match &release {
                Some(r) => r.files.iter().filter_map(|f| f.2.clone()).collect(),
                None => run.model_sha256.iter().cloned().collect(),
            };
            let artifacts_dir = options.release.clone().unwrap_or_else(|| run.dir.clone());
            Some(summarise_certificate(p, options.public_key.as_deref(), &run, &released, &artifacts_dir)?)
        }
        None => None,
    };
    if let Some(c) = &certificate {
        if !c.covers_this_release {
            warnings.push(format!(
                "the certificate {} names no file of this release (by SHA-256): it certifies another release",
                c.path
            ));
        }
        if c.ledger_matches == Some(false) {
            warnings.push(format!("the certificate {} was made from another ledger than this run's", c.path));
        }
    }

    let mut limitations = Vec::new();
    if let Some(p) = &imported {
        limitations.push(format!(
            "The training code was not dpaudit's ({}). dpaudit did not run the training: every ε here is recomputed from the privacy history the trainer reported ({}), and nothing here checks that the training did what that history says, except the audits of the training code listed in this report, within what each could detect.",
            p.trainer, p.history_file
        ));
    }
    if !private {
        limitations.push("The model was trained without differential privacy. Nothing below limits what it reveals about its training data.".to_owned());
    }
    limitations.extend(crate::cert::schema::standard_limitations());
    limitations.push("An audit trains the same recipe many times on the audit's own data with a planted canary; it tests the recipe and the code, not this particular run. A consistent audit cannot prove the claim; only a violated one is conclusive.".into());
    limitations.push("Nearest-neighbour and distance-to-closest-record (DCR) checks of synthetic data are diagnostics, not a privacy guarantee: a large distance does not mean a record is protected. Only the differential-privacy bound limits what can be learnt.".into());
    limitations.push("Test accuracy is measured on the dataset's test split; hyper-parameters chosen after looking at it make it an optimistic estimate.".into());

    // How to reproduce.
    let mut commands = if run.dir.join(crate::run_folder::GAN_FILE).is_file() {
        // A DP-GAN run: its `dpaudit gan train` command is not reconstructed yet.
        vec![ReproduceCommand {
            expected_exit: 0,
            purpose: "the DP-GAN's recorded training configuration (give the same values to `dpaudit gan train`)"
                .into(),
            command: format!("cat {}", sq(&run.dir.join(crate::run_folder::GAN_FILE))),
        }]
    } else {
        match train_command(&run) {
            Some(command) => vec![ReproduceCommand { expected_exit: 0,
                purpose: "train the same recipe again into a new folder (reconstructed from metrics.json; fresh noise from the OS CSPRNG, so the same recipe, not the same numbers)".into(),
                command,
            }],
            None => Vec::new(),
        }
    };
    if private {
        let phases: Vec<String> = phases_of(&run.entries)?
            .iter()
            .map(|p| format!("--phase {},{},{}", p.sampling_rate, p.noise_multiplier, p.steps))
            .collect();
        commands.push(ReproduceCommand {
            expected_exit: 0,
            purpose: "recompute epsilon from the ledger's mechanism with every accountant and the MPFR oracle".into(),
            command: format!("dpaudit account epsilon {} --delta {delta} --accountant all --verify", phases.join(" ")),
        });
    }
    let hash_command_at = commands.len();
    if let (Some(c), Some(key)) = (&certificate, &options.public_key) {
        commands.push(ReproduceCommand {
            expected_exit: 0,
            purpose: "verify the certificate: signature, file hashes, and epsilon recomputed with the MPFR oracle"
                .into(),
            command: format!(
                "dpaudit cert verify {} --pubkey {} --artifacts {} --recompute",
                shell_quote(&c.path),
                sq(key),
                sq(options.release.as_deref().unwrap_or(&run.dir))
            ),
        });
    }
    for a in &audits {
        if let Some(spec) = audit_spec_file(a) {
            // An audit that could not refute its claim is refused unless allowed; rerun as it ran.
            let (flag, expected_exit, ends) = match a.verdict.as_str() {
                "inconclusive" => (" --allow-inconclusive", 12, "; it ends inconclusive (exit 12), as it did"),
                "violated" => ("", 10, "; it ends violated (exit 10), as it did"),
                _ => ("", 0, ""),
            };
            commands.push(ReproduceCommand {
                expected_exit,
                purpose: format!(
                    "run audit {} again into a new folder (the spec it ran is also recorded inside {}){ends}",
                    a.name, a.file
                ),
                command: format!(
                    "dpaudit audit run {} --out {}{flag}",
                    sq(&spec),
                    sq(&reproduced(Path::new(&a.folder)))
                ),
            });
        }
    }
    if let Some(c) = &options.command_line {
        commands.push(ReproduceCommand {
            expected_exit: 0,
            purpose: "write this report again".into(),
            command: c.clone(),
        });
    }
    let mut hashes = Vec::new();
    if let Some(h) = &run.metrics.train_data_sha256 {
        hashes.push(FileHash {
            what: format!("training data ({})", run.metrics.train_dataset.as_deref().unwrap_or("?")),
            path: "content hash of pixels and labels, recorded by the training run".into(),
            sha256: h.clone(),
        });
    }
    if let Some(h) = &run.ledger_sha256 {
        hashes.push(FileHash {
            what: "privacy ledger".into(),
            path: run.dir.join(crate::cert::sign::LEDGER_FILE).display().to_string(),
            sha256: h.clone(),
        });
    }
    if let Some(h) = &run.model_sha256 {
        hashes.push(FileHash {
            what: "model".into(),
            path: run.dir.join(crate::cert::sign::MODEL_FILE).display().to_string(),
            sha256: h.clone(),
        });
    }
    hashes.push(FileHash {
        what: "training metrics".into(),
        path: run.dir.join(crate::cert::sign::METRICS_FILE).display().to_string(),
        sha256: run.metrics_sha256.clone(),
    });
    for a in &audits {
        hashes.push(FileHash { what: format!("audit {}", a.name), path: a.file.clone(), sha256: a.sha256.clone() });
    }
    if let Some(r) = &release {
        for (name, stated, _) in &r.files {
            hashes.push(FileHash {
                what: format!("released file {name}"),
                path: Path::new(&r.section.release).join(name).display().to_string(),
                sha256: stated.clone(),
            });
        }
        hashes.push(FileHash {
            what: "release description".into(),
            path: Path::new(&r.section.release).join("release.json").display().to_string(),
            sha256: r.release_json_sha256.clone(),
        });
    }
    if let Some(p) = &options.certificate {
        hashes.push(FileHash { what: "certificate".into(), path: p.display().to_string(), sha256: sha256_file(p)? });
    }
    // Every hashed file that exists, in one command (the training data's hash is of its content,
    // not of a file, and is left out).
    let files: Vec<String> =
        hashes.iter().filter(|h| Path::new(&h.path).is_file()).map(|h| shell_quote(&h.path)).collect();
    if !files.is_empty() {
        commands.insert(
            hash_command_at,
            ReproduceCommand {
                expected_exit: 0,
                purpose: "check the files' hashes against the table below".into(),
                command: format!("sha256sum {}", files.join(" ")),
            },
        );
    }

    Ok(Report {
        format: FORMAT.into(),
        generated_by: ToolInfo {
            name: "dpaudit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: crate::cert::sign::tool_git_commit(),
        },
        generated_at: rfc3339_utc(std::time::SystemTime::now()),
        claim,
        verdict,
        certificate,
        mechanism,
        epsilon_over_steps,
        utility,
        audits,
        synthetic_data: release.map(|r| r.section),
        limitations,
        reproduce: Reproduce {
            commands,
            training_tool_version: run.metrics.tool_version.clone().unwrap_or_else(|| "unknown".into()),
            hashes,
        },
        warnings,
    })
}

#[cfg(test)]
mod tests {
    /// An audit counts for a run only when the typed model, sigma and C of its target equal the
    /// run's; one that differs in any of them does not count (and cannot refute the run's claim),
    /// and one whose target lacks them is unknown.
    #[test]
    fn an_audit_of_another_model_sigma_or_clipping_norm_does_not_count_for_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        std::fs::write(
            run_dir.join("metrics.json"),
            br#"{"tool_version": "0.1.0", "test_accuracy": 0.5, "private": true, "sampling": "poisson", "steps": 20,
                "sampling_rate": 0.05, "noise_multiplier_source": "given", "epochs": 1, "wall_seconds": 1,
                "train_dataset": "d", "train_examples": 2000,
                "config": {"model": "logreg", "lot_size": 100, "noise_multiplier": 1.2, "max_grad_norm": 1},
                "train_data_sha256": "", "model_sha256": ""}"#,
        )
        .unwrap();
        let run = super::read_run(&run_dir).unwrap();
        let audit = |name: &str, target: serde_json::Value| {
            let path = dir.path().join(format!("{name}.json"));
            let file = serde_json::json!({
                "spec": {"target": target}, "epsilon_lower": 5.0, "verdict": "violated",
            });
            std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
            // The report claims epsilon 1: an audit of this run's mechanism at 5 refutes it.
            super::read_audit(&path, Some(&run), 1.0).unwrap()
        };
        let same = serde_json::json!({"model": "logreg", "noise_multiplier": 1.2, "max_grad_norm": 1.0,
            "lot_size": 100.0, "steps": 20, "dataset": "fixture"});
        let a = audit("same", same.clone());
        assert_eq!((a.same_recipe_as_run, a.refutes_report_claim), (Some(true), true));
        assert_eq!(a.recipe.as_deref(), Some("logreg on fixture, sigma = 1.2, C = 1, lot 100, 20 steps"));
        for (field, value) in [
            ("noise_multiplier", serde_json::json!(1.1)),
            ("max_grad_norm", serde_json::json!(2.0)),
            ("model", serde_json::json!("mlp")),
        ] {
            let mut target = same.clone();
            target[field] = value;
            let a = audit(field, target);
            assert_eq!(a.same_recipe_as_run, Some(false), "an audit with another {field} counted");
            assert!(!a.refutes_report_claim, "an audit with another {field} refuted the run's claim");
        }
        let mut unknown = same.clone();
        unknown.as_object_mut().unwrap().remove("noise_multiplier");
        assert_eq!(audit("unknown", unknown).same_recipe_as_run, None);
        // An external trainer's target records none of the three.
        let external = serde_json::json!({"kind": "command", "argv": ["train"]});
        assert_eq!(audit("external", external).same_recipe_as_run, None);
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
