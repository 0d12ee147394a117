//! `dpaudit report`: the compliance report of a run, its audits and its certificate.
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use dpaudit_core::report::{self, Format, ReportOptions};
use std::path::PathBuf;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatChoice {
    /// One self-contained HTML file (inline SVG plots, no network).
    Html,
    /// Markdown (plot data as tables).
    Markdown,
    /// JSON (the report's data structure).
    Json,
}

/// Arguments of `dpaudit report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run folder written by `dpaudit train`. Repeat it to add runs to the privacy–utility
    /// curve; the first one is the release the report is about.
    #[arg(long = "run", value_name = "DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// An audit folder holding audit.json (from `dpaudit audit run`); repeatable.
    #[arg(long = "audit", value_name = "DIR")]
    pub audits: Vec<PathBuf>,
    /// The release's certificate (from `dpaudit cert sign`): its key id goes on the first screen.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The signer's public key: verify the certificate (signature and file hashes) against it.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub pubkey: Option<PathBuf>,
    /// A synthetic-data release made from the (first) run (`dpaudit gan sample --out DIR`): the
    /// report is then about that dataset, with its sample grid.
    #[arg(long, value_name = "DIR")]
    pub release: Option<PathBuf>,
    /// Nearest-neighbour results on that release (`dpaudit attack nearest-neighbour --out FILE`).
    #[arg(long, value_name = "FILE", requires = "release")]
    pub nearest_neighbour: Option<PathBuf>,
    /// Utility of that release: the JSON of `dpaudit evaluate synthetic --json` (CAS,
    /// fid_mnist_classifier, real-vs-fake accuracy). Without it the report says they were not
    /// evaluated.
    #[arg(long, value_name = "FILE", requires = "release")]
    pub evaluation: Option<PathBuf>,
    /// Delta of the claim (default: the run's).
    #[arg(long, short = 'd', allow_negative_numbers = true)]
    pub delta: Option<f64>,
    /// Where to write the report.
    #[arg(long)]
    pub out: PathBuf,
    /// Output format (default: from --out's extension: .md or .markdown Markdown, .json JSON,
    /// anything else HTML).
    #[arg(long, value_enum)]
    pub format: Option<FormatChoice>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print what was written as JSON (keys report, bytes, claim, audits, certificate_key_id,
    /// warnings) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Builds, renders and writes the report.
///
/// # Errors
/// Unreadable inputs, an existing --out without --force, I/O errors.
pub fn run(args: &ReportArgs) -> Result<()> {
    let options = ReportOptions {
        runs: args.runs.clone(),
        audits: args.audits.clone(),
        certificate: args.cert.clone(),
        public_key: args.pubkey.clone(),
        delta: args.delta,
        epsilon_points: report::DEFAULT_EPSILON_POINTS,
        command_line: Some(command_line()),
        release: args.release.clone(),
        nearest_neighbour: args.nearest_neighbour.clone(),
        evaluation: args.evaluation.clone(),
    };
    if !args.force && args.out.exists() {
        anyhow::bail!("{} already exists; give --force to replace it", args.out.display());
    }
    let rep = report::build(&options).with_context(|| format!("building the report of {}", args.runs[0].display()))?;
    let format = match args.format {
        Some(FormatChoice::Html) => Format::Html,
        Some(FormatChoice::Markdown) => Format::Markdown,
        Some(FormatChoice::Json) => Format::Json,
        None => Format::from_path(&args.out),
    };
    let text = report::render(&rep, format).context("rendering the report")?;
    report::write_report(&args.out, &text, args.force).with_context(|| format!("writing {}", args.out.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "report": args.out,
                "bytes": text.len(),
                "claim": rep.claim.statement,
                "audits": rep.verdict.statement,
                "certificate_key_id": rep.certificate.as_ref().map(|c| c.key_id.clone()),
                "warnings": rep.warnings,
            }))?
        );
        return Ok(());
    }
    println!("wrote {} ({} bytes)", args.out.display(), text.len());
    println!("  {}", rep.claim.statement);
    println!("  audits: {}", rep.verdict.statement);
    if let Some(c) = &rep.certificate {
        println!("  certificate key id {}", c.key_id);
    }
    for w in &rep.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}

/// This invocation as a shell command line (arguments quoted for a POSIX shell), with `--force`
/// added so that it runs as printed once the report exists.
fn command_line() -> String {
    let mut args = std::env::args();
    let _ = args.next();
    let mut words: Vec<String> =
        std::iter::once("dpaudit".to_owned()).chain(args.map(|a| report::inputs::shell_quote(&a))).collect();
    if !words.iter().any(|w| w == "--force") {
        words.push("--force".into());
    }
    words.join(" ")
}
