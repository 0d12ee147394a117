//! The compliance report: one page that a data office's disclosure panel can read, built from a
//! training run folder, its audits and its certificate (`dpaudit report`).
//!
//! [`build`] gathers everything into a [`Report`] (the JSON format is that struct, serialised);
//! [`render`] writes it as one self-contained HTML file (inline SVG plots from `plotters`, no
//! network, no script), as Markdown, or as JSON; [`write_report`] writes atomically and refuses to
//! overwrite unless asked to.
//!
//! Nothing in `metrics.json` is trusted for privacy: every epsilon is recomputed from
//! `ledger.jsonl` (RDP, PLD and the MPFR oracle, as `dpaudit cert sign` does), and every hash from
//! the files. Numbers are shown rounded in the safe direction: upper bounds up, lower bounds down.
//!
//! - [`inputs`]: reading the run folder, `audit.json` files (leniently: older files lack fields)
//!   and certificates.
//! - [`plots`]: the SVG plots.
//! - [`html`], [`markdown`]: the two text renderings.
pub mod html;
pub mod inputs;
pub mod markdown;
pub mod plots;

use crate::audit::RocPoint;
use crate::cert::schema::{Epsilon, MechanismPhase};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `format` of a report in JSON.
pub const FORMAT: &str = "dpaudit-report-v1";
/// Points of the epsilon-over-steps curve (fewer when the run has fewer steps).
pub const DEFAULT_EPSILON_POINTS: usize = 50;
/// Delta used when neither the caller nor the run's `metrics.json` gives one.
pub const DEFAULT_DELTA: f64 = 1e-5;

/// How to write the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One self-contained HTML file.
    Html,
    /// Markdown (plots are left out; their data is in tables).
    Markdown,
    /// The [`Report`] as JSON.
    Json,
}

/// What to build a report from.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Run folders written by `dpaudit train`. The first is the release the report is about; the
    /// others only add points to the privacy–utility curve.
    pub runs: Vec<PathBuf>,
    /// Audit folders holding `audit.json`.
    pub audits: Vec<PathBuf>,
    /// A certificate (`dpaudit cert sign`) of the release.
    pub certificate: Option<PathBuf>,
    /// The signer's public key: when given, the certificate is verified against it and the run
    /// folder (signature and file hashes).
    pub public_key: Option<PathBuf>,
    /// Delta of the claim; `None`: the run's (from `metrics.json`), else [`DEFAULT_DELTA`].
    pub delta: Option<f64>,
    /// Points of the epsilon-over-steps curve.
    pub epsilon_points: usize,
    /// The command line that made the report, shown under "how to reproduce".
    pub command_line: Option<String>,
    /// A synthetic-data release folder (`dpaudit gan sample`: `release.json`, IDX files,
    /// `grid.png`) made from the first run: the report is then about that dataset.
    pub release: Option<PathBuf>,
    /// The JSON of `dpaudit attack nearest-neighbour --out FILE` on that release.
    pub nearest_neighbour: Option<PathBuf>,
    /// The JSON of `dpaudit evaluate synthetic --json` on that release (CAS, FID, real-vs-fake).
    pub evaluation: Option<PathBuf>,
}

impl ReportOptions {
    /// The `dpaudit report` command that builds this report into `out` (with `--force`, so that
    /// it runs as printed when `out` exists), arguments quoted for a POSIX shell.
    pub fn command_line(&self, out: &Path) -> String {
        let q = |p: &Path| inputs::shell_quote(&p.display().to_string());
        let mut w = vec!["dpaudit report".to_owned()];
        w.extend(self.runs.iter().map(|r| format!("--run {}", q(r))));
        w.extend(self.audits.iter().map(|a| format!("--audit {}", q(a))));
        if let Some(c) = &self.certificate {
            w.push(format!("--cert {}", q(c)));
        }
        if let Some(k) = &self.public_key {
            w.push(format!("--pubkey {}", q(k)));
        }
        if let Some(r) = &self.release {
            w.push(format!("--release {}", q(r)));
        }
        if let Some(n) = &self.nearest_neighbour {
            w.push(format!("--nearest-neighbour {}", q(n)));
        }
        if let Some(e) = &self.evaluation {
            w.push(format!("--evaluation {}", q(e)));
        }
        if let Some(d) = self.delta {
            w.push(format!("--delta {d:e}"));
        }
        w.push(format!("--out {} --force", q(out)));
        w.join(" ")
    }

    /// A report on one run, nothing else.
    pub fn for_run(run: impl Into<PathBuf>) -> Self {
        ReportOptions {
            runs: vec![run.into()],
            audits: Vec::new(),
            certificate: None,
            public_key: None,
            delta: None,
            epsilon_points: DEFAULT_EPSILON_POINTS,
            command_line: None,
            release: None,
            nearest_neighbour: None,
            evaluation: None,
        }
    }
}

/// The whole report. Serialised, this is `--format json`; the HTML and Markdown renderings show
/// the same content.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`FORMAT`].
    pub format: String,
    /// The tool that wrote the report.
    pub generated_by: ToolInfo,
    /// When, RFC 3339 UTC.
    pub generated_at: String,
    /// The privacy claim, in numbers and in words.
    pub claim: Claim,
    /// What the audits say about the claim.
    pub verdict: OverallVerdict,
    /// The certificate, when one was given.
    pub certificate: Option<CertificateSummary>,
    /// The mechanism and how epsilon was computed.
    pub mechanism: MechanismSection,
    /// Epsilon (RDP accountant, the claim's) after each of up to [`DEFAULT_EPSILON_POINTS`] steps.
    pub epsilon_over_steps: Vec<EpsilonPoint>,
    /// Test accuracy, and the privacy–utility curve when several runs were given.
    pub utility: Utility,
    /// One entry per audit folder.
    pub audits: Vec<AuditSummary>,
    /// For a synthetic-data release (`release.json` from `dpaudit gan sample`): nearest-neighbour
    /// results and a sample grid. `None` for a model release.
    pub synthetic_data: Option<SyntheticData>,
    /// What the claim does not cover, in plain words.
    pub limitations: Vec<String>,
    /// Commands, versions and hashes to reproduce and check everything.
    pub reproduce: Reproduce,
    /// Anything odd found while building the report (a hash that differs, a torn ledger).
    pub warnings: Vec<String>,
}

/// A tool, its version and the git commit it was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolInfo {
    /// `dpaudit`.
    pub name: String,
    /// Crate version.
    pub version: String,
    /// Git commit, or `unknown`.
    pub git_commit: String,
}

/// The privacy claim of the release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claim {
    /// Whether the run was trained with DP at all.
    pub private: bool,
    /// `model` (or `synthetic dataset`).
    pub subject: String,
    /// The claimed epsilon: the one number a certificate of the run certifies
    /// (`privacy.verified_epsilon`: the RDP accountant's bound re-derived by the MPFR oracle), shown
    /// alike in the headline, the certificate box and the plot; `"infinity"` without privacy. The
    /// other accountants are listed in [`MechanismSection::epsilons`], not claimed.
    pub epsilon: Epsilon,
    /// The delta.
    pub delta: f64,
    /// Which accountant gave `epsilon` ([`inputs::CLAIM_ACCOUNTANT`]).
    pub accountant: String,
    /// The unit of privacy in words.
    pub adjacency: String,
    /// The claim as a sentence (epsilon rounded up, the accountant named).
    pub statement: String,
    /// How the noise was seeded: `csprng`, `seeded` (reproducible noise: NOT FIT FOR RELEASE, said
    /// in `statement`) or `not recorded`. The seed itself is never part of a report.
    pub noise_seeding: String,
    /// Set when the training code was not dpaudit's (a run made by `dpaudit import`): who trained
    /// it and the history epsilon was recomputed from, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_code: Option<String>,
}

/// The audits' overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictStatus {
    /// No audit was given.
    NotAudited,
    /// No audit contradicts the claim.
    Consistent,
    /// An audit's lower bound exceeds a claim (its own, or this report's).
    Violated,
    /// Every audit of the recipe was inconclusive: none could have refuted the claim.
    Inconclusive,
}

/// The audits' verdict, in words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverallVerdict {
    /// The status.
    pub status: VerdictStatus,
    /// One or two sentences for the first screen.
    pub statement: String,
}

/// What a certificate says, and whether it matches the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateSummary {
    /// The certificate file as given.
    pub path: String,
    /// The signer's key id.
    pub key_id: String,
    /// Time of issue.
    pub issued_at: String,
    /// `certified` or `uncertified_claim`.
    pub status: String,
    /// The tool that issued it.
    pub tool: ToolInfo,
    /// Its MPFR-verified epsilon.
    pub verified_epsilon: Epsilon,
    /// Its delta.
    pub delta: f64,
    /// Whether one of its artifacts has the SHA-256 of a released file (this run's
    /// `model.safetensors`, or a file of the synthetic-data release).
    pub covers_this_release: bool,
    /// Whether its ledger hash equals that of this run's `ledger.jsonl` (`None`: no ledger).
    pub ledger_matches: Option<bool>,
    /// `Some(true)`: signature and file hashes verified with the given public key;
    /// `Some(false)`: verification failed (see `signature`); `None`: no key given.
    pub signature_verified: Option<bool>,
    /// The verification outcome in words.
    pub signature: String,
    /// How the certified run's noise was seeded, as the certificate records it (`csprng`,
    /// `seeded`, or `not recorded` for older certificates).
    pub noise_seeding: String,
}

/// The mechanism and the accountants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MechanismSection {
    /// Sampling scheme of every step (`poisson`).
    pub sampling: String,
    /// Neighbouring datasets (`add_remove_one`).
    pub adjacency: String,
    /// Noisy steps in the ledger.
    pub steps: u64,
    /// Phases: consecutive steps with equal label, q, sigma and C.
    pub phases: Vec<MechanismPhase>,
    /// How sigma was chosen (from `metrics.json`).
    pub noise_multiplier_source: String,
    /// The delta of every epsilon.
    pub delta: f64,
    /// One row per accountant, recomputed from the ledger.
    pub epsilons: Vec<AccountantRow>,
}

/// One accountant's epsilon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountantRow {
    /// `rdp`, `pld` or `mpfr oracle (rdp)`.
    pub accountant: String,
    /// The epsilon (an upper bound).
    pub epsilon: Epsilon,
    /// How it was obtained, in words.
    pub method: String,
}

/// Epsilon after `step` steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpsilonPoint {
    /// Steps so far.
    pub step: u64,
    /// RDP epsilon of those steps at the report's delta (the claimed accountant).
    pub epsilon: f64,
}

/// Utility of the release, and of any comparison runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Utility {
    /// The model's architecture.
    pub model: String,
    /// The training set.
    pub train_dataset: String,
    /// Training examples.
    pub train_examples: u64,
    /// Test accuracy of the release.
    pub test_accuracy: f64,
    /// Test accuracy on PGD adversarial examples (adversarial runs).
    pub robust_test_accuracy: Option<f64>,
    /// Every run given (the release first): the privacy–utility curve.
    pub runs: Vec<UtilityPoint>,
}

/// One run on the privacy–utility curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UtilityPoint {
    /// The run folder's name.
    pub run: String,
    /// Whether it is the release.
    pub released: bool,
    /// Its epsilon (smallest accountant bound; `"infinity"` without privacy).
    pub epsilon: Epsilon,
    /// Its test accuracy.
    pub test_accuracy: f64,
}

/// One audit, as read from its `audit.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditSummary {
    /// The audit folder as given.
    pub folder: String,
    /// The `audit.json` read.
    pub file: String,
    /// The spec's name.
    pub name: String,
    /// `white-box` or `black-box`.
    pub threat_model: String,
    /// The statistic.
    pub attack: String,
    /// The canary's kind.
    pub canary: String,
    /// The recipe audited (model, sigma, C), when the spec says.
    pub recipe: Option<String>,
    /// Whether that recipe is this run's (model, sigma and C equal); `None` when unknown.
    pub same_recipe_as_run: Option<bool>,
    /// The claim the audit tested.
    pub claimed_epsilon: Option<f64>,
    /// Its delta.
    pub claimed_delta: Option<f64>,
    /// Where the audit's claim came from.
    pub claim_source: Option<String>,
    /// Runs per side (replay audits).
    pub runs_per_side: Option<u64>,
    /// Confidence of the lower bound.
    pub confidence: Option<f64>,
    /// How the threshold was chosen.
    pub threshold_selection: Option<String>,
    /// The rigorous lower bound on epsilon.
    pub epsilon_lower: f64,
    /// The most a perfect audit of this size could show against the claim.
    pub ideal_epsilon_lower: Option<f64>,
    /// `consistent`, `violated` (or whatever the file says).
    pub verdict: String,
    /// Why.
    pub verdict_reason: String,
    /// Whether this audit contradicts the report's claim: its lower bound is above it, and it did
    /// not audit another recipe.
    pub refutes_report_claim: bool,
    /// TPR at FPR (keys are the FPRs); `None` where the FPR is below 1 / (canary-out runs).
    pub tpr_at_fpr: BTreeMap<String, Option<f64>>,
    /// Why a TPR is `None`.
    pub tpr_at_fpr_notes: BTreeMap<String, String>,
    /// Canary-in and canary-out runs behind the ROC, when recorded.
    pub roc_counts: Option<(u64, u64)>,
    /// What the audit's procedure could show: (ceiling, epsilon caught with probability 1/2,
    /// with 0.9), when recorded.
    pub could_show: Option<CouldShow>,
    /// The audit's explanations of numbers that could be read against its verdict.
    pub notes: Vec<String>,
    /// The Gaussian-DP fit: an estimate, not a bound.
    pub gdp_estimate: Option<GdpSummary>,
    /// The one-run audit's counts, as in the file.
    pub one_run: Option<serde_json::Value>,
    /// The ROC's upper staircase (for each FPR, the highest TPR).
    pub roc: Vec<RocPoint>,
    /// Runs recorded in the file.
    pub runs_recorded: u64,
    /// Wall time of the audit, seconds.
    pub wall_seconds: Option<f64>,
    /// SHA-256 of `audit.json`.
    pub sha256: String,
}

impl AuditSummary {
    /// TPR at each low FPR, in words ("not measurable with K = N" where the FPR is below
    /// 1 / (canary-out runs)).
    pub fn tpr_words(&self) -> String {
        let v: Vec<String> = self
            .tpr_at_fpr
            .iter()
            .map(|(f, t)| match t {
                Some(t) => format!("TPR {t} at FPR {f}"),
                None => format!(
                    "TPR at FPR {f}: not measurable with K = {}",
                    self.roc_counts.map_or_else(|| "this many runs".to_string(), |(_, n)| n.to_string())
                ),
            })
            .collect();
        if v.is_empty() {
            "not recorded".into()
        } else {
            v.join("; ")
        }
    }
}

/// What an audit's procedure could have shown (`plan` in `audit.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CouldShow {
    /// The largest bound the procedure can report.
    pub ceiling: f64,
    /// The smallest epsilon of a Gaussian mechanism it reports `violated` with probability 1/2.
    pub detectable_epsilon_50: Option<f64>,
    /// The same with probability 0.9.
    pub detectable_epsilon_90: Option<f64>,
}

impl CouldShow {
    /// In words.
    pub fn words(&self) -> String {
        let e = |x: Option<f64>| x.map_or_else(|| "none".to_string(), |v| format!("ε = {v:.3}"));
        format!(
            "the largest bound this procedure can report is {:.3}; it catches a Gaussian mechanism with probability 1/2 from {}, with probability 0.9 from {}",
            self.ceiling,
            e(self.detectable_epsilon_50),
            e(self.detectable_epsilon_90)
        )
    }
}

/// The Gaussian-DP estimate of an audit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GdpSummary {
    /// mu.
    pub mu: f64,
    /// The epsilon of mu-GDP at the claim's delta.
    pub epsilon: f64,
}

/// A synthetic-data release (DP-GAN), from its `release.json`, with the nearest-neighbour
/// results when given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyntheticData {
    /// The release folder.
    pub release: String,
    /// Records released.
    pub records: u64,
    /// The private GAN's design.
    pub design: String,
    /// Whether its epsilon is proven or only claimed (the noise-layer design), in words.
    pub epsilon_status: String,
    /// Whether `epsilon_status` says the epsilon is proven.
    pub epsilon_proven: bool,
    /// SHA-256 of the generator the records come from.
    pub generator_sha256: String,
    /// Nearest-neighbour (distance to closest record) results: diagnostics, not guarantees.
    pub nearest_neighbour: Vec<NearestNeighbourResult>,
    /// Heuristic flags raised by the nearest-neighbour analysis.
    pub nearest_neighbour_flags: Vec<String>,
    /// The release's `grid.png` (samples, one label per row), base64.
    pub sample_grid_png_base64: Option<String>,
    /// Utility of the released records (`dpaudit evaluate synthetic --json`); `None`: not
    /// evaluated, and the report says so.
    pub evaluation: Option<SyntheticUtility>,
}

/// The utility of a synthetic release, from `dpaudit evaluate synthetic --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyntheticUtility {
    /// The file read.
    pub file: String,
    /// CAS: test accuracy on the real test set of a classifier trained on the synthetic records.
    pub cas: f64,
    /// How CAS was measured.
    pub cas_protocol: String,
    /// Fréchet distance in the feature space of an MNIST classifier (not Inception-FID).
    pub fid_mnist_classifier: f64,
    /// How it was measured.
    pub fid_protocol: String,
    /// Accuracy of a classifier telling real from synthetic records (0.5 is perfect).
    pub real_vs_fake_accuracy: f64,
    /// How it was measured.
    pub real_vs_fake_protocol: String,
}

impl SyntheticUtility {
    /// The report's rows: measure, value as printed, how it was measured.
    pub fn rows(&self) -> [(&'static str, String, &str); 3] {
        [
            (
                "CAS: real test accuracy of a classifier trained on the synthetic records",
                html::fmt_acc(self.cas),
                &self.cas_protocol,
            ),
            (
                "fid_mnist_classifier (not Inception-FID; lower is closer)",
                format_value(self.fid_mnist_classifier),
                &self.fid_protocol,
            ),
            (
                "real-vs-fake accuracy (0.5 is perfect)",
                html::fmt_acc(self.real_vs_fake_accuracy),
                &self.real_vs_fake_protocol,
            ),
        ]
    }
}

/// One nearest-neighbour statistic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearestNeighbourResult {
    /// What was measured.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// How to read it.
    pub note: String,
}

/// How to reproduce and check the report's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reproduce {
    /// The commands, each with what it does.
    pub commands: Vec<ReproduceCommand>,
    /// The tool that wrote the training run (from `metrics.json`).
    pub training_tool_version: String,
    /// The files, with their SHA-256.
    pub hashes: Vec<FileHash>,
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReproduceCommand {
    /// What it is for.
    pub purpose: String,
    /// The command line.
    pub command: String,
    /// The exit status it should end with: 0, or an audit's verdict status (10 violated,
    /// 12 inconclusive) when it reruns an audit that ended so.
    pub expected_exit: i32,
}

/// A file (or data content) and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileHash {
    /// What it is.
    pub what: String,
    /// Its path (or how the hash was taken).
    pub path: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

impl Report {
    /// The page's title: `Privacy report: model`, or with the run's (or release's) folder name
    /// when it says more than the subject does (`Privacy report: model mnist-eps3`).
    pub fn title(&self) -> String {
        let name = match &self.synthetic_data {
            Some(s) => Path::new(&s.release)
                .file_name()
                .map_or_else(|| s.release.clone(), |n| n.to_string_lossy().into_owned()),
            None => self.utility.runs.first().map_or_else(String::new, |u| u.run.clone()),
        };
        let subject = &self.claim.subject;
        if name.is_empty() || subject.to_lowercase().contains(&name.to_lowercase()) {
            format!("Privacy report: {subject}")
        } else {
            format!("Privacy report: {subject} {name}")
        }
    }
}

impl Format {
    /// The format a file name asks for: `.md` / `.markdown` Markdown, `.json` JSON, anything
    /// else HTML.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("md" | "markdown") => Format::Markdown,
            Some("json") => Format::Json,
            _ => Format::Html,
        }
    }
}

/// Builds the report (see [`inputs::build`]).
///
/// # Errors
/// Missing or corrupt run files, an unreadable audit or certificate, a ledger the accountants
/// refuse (non-Poisson steps).
pub fn build(options: &ReportOptions) -> Result<Report> {
    inputs::build(options)
}

/// Renders a report in `format`.
///
/// # Errors
/// A plot that cannot be drawn; JSON serialisation errors.
pub fn render(report: &Report, format: Format) -> Result<String> {
    match format {
        Format::Html => html::render(report),
        Format::Markdown => Ok(markdown::render(report)),
        Format::Json => {
            let mut s =
                serde_json::to_string_pretty(report).map_err(|e| Error::numerical("report JSON", e.to_string()))?;
            s.push('\n');
            Ok(s)
        }
    }
}

/// Writes a rendered report atomically ([`crate::durable::write_atomically`]). Refuses to replace
/// an existing file unless `force`.
///
/// # Errors
/// [`Error::InvalidParameter`] when `path` exists and `force` is false; I/O errors.
pub fn write_report(path: &Path, content: &str, force: bool) -> Result<()> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::invalid("output", path.display(), "already exists; give --force to replace it"));
    }
    crate::durable::write_atomically(path, content.as_bytes())
}

/// An upper bound shown to about three significant digits, rounded up (never shown below the
/// number). `infinity` for an infinite epsilon.
pub fn format_upper(x: f64) -> String {
    format_directed(x, true)
}

/// A lower bound shown to about three significant digits, rounded down (never shown above the
/// number).
pub fn format_lower(x: f64) -> String {
    format_directed(x, false)
}

fn format_directed(x: f64, up: bool) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "infinity".into() } else { "-infinity".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let decimals = (2 - x.abs().log10().floor() as i32).clamp(0, 8);
    let scale = 10f64.powi(decimals);
    // The nearest decimal first (so that 0.3 prints as 0.300), then the directed one if the
    // nearest lies on the wrong side.
    let nearest = (x * scale).round() / scale;
    let shown = match (up, nearest >= x, nearest <= x) {
        (true, true, _) | (false, _, true) => nearest,
        (true, false, _) => (x * scale).ceil() / scale,
        (false, _, false) => (x * scale).floor() / scale,
    };
    format!("{shown:.prec$}", prec = decimals as usize)
}

/// A measurement (not a bound) to four significant digits; integers as they are.
pub fn format_value(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else {
        let decimals = (3 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{x:.decimals$}")
    }
}

/// Delta in short scientific form (`1e-5`).
pub fn format_delta(delta: f64) -> String {
    format!("{delta:e}")
}

/// An epsilon upper bound for display.
pub fn format_epsilon(e: Epsilon) -> String {
    format_upper(e.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_file_name_chooses_the_format() {
        assert_eq!(Format::from_path(Path::new("x.md")), Format::Markdown);
        assert_eq!(Format::from_path(Path::new("dir/x.MARKDOWN")), Format::Markdown);
        assert_eq!(Format::from_path(Path::new("x.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("x.html")), Format::Html);
        assert_eq!(Format::from_path(Path::new("report")), Format::Html);
    }

    #[test]
    fn directed_formatting_never_crosses_the_number() {
        assert_eq!(format_upper(1.999_999_033), "2.00");
        assert_eq!(format_upper(1.673_955_5), "1.68");
        assert_eq!(format_lower(1.673_955_5), "1.67");
        assert_eq!(format_upper(0.3), "0.300");
        assert_eq!(format_lower(0.268_228), "0.268");
        assert_eq!(format_upper(0.268_228), "0.269");
        assert_eq!(format_upper(123.4), "124");
        assert_eq!(format_upper(f64::INFINITY), "infinity");
        assert_eq!(format_delta(1e-5), "1e-5");
        for &x in &[0.001_234_5, 0.5, 2.0, 7.999_999, 9.990_1, 42.42, 1e-9, 3.0e4] {
            assert!(format_upper(x).parse::<f64>().unwrap() >= x, "{x}");
            assert!(format_lower(x).parse::<f64>().unwrap() <= x, "{x}");
        }
    }
}
