//! `dpaudit audit ...`: run an audit spec (resumable, sharded), merge shards, the ideal bound.
use anyhow::{Context, Result};
use clap::Subcommand;
use dpaudit::audit::engine::{self, Shard};
use dpaudit::audit::gaussian;
use dpaudit::audit::spec::AuditSpec;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// Audit subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Run an audit spec (audits/*.toml): K trainings on D and K on D' (D plus the canary), each
    /// from its own seed, scored by the attack; writes runs.jsonl (one fsynced line per finished
    /// run: re-running the same command resumes without losing or redoing any) and audit.json
    /// (epsilon lower bound with its confidence, the verdict against the claim, the ideal bound
    /// for the same K, ROC, TPR at low FPR, the Gaussian-DP estimate, every run and seed).
    ///
    /// Exit status: 0 consistent, 1 error, 10 violated.
    Run {
        /// The audit spec (TOML).
        spec: PathBuf,
        /// The audit folder (created; resumed if it holds runs of the same spec).
        #[arg(long)]
        out: PathBuf,
        /// Run only shard i of N (i/N, 0-based) for an array job; gather with `dpaudit audit merge`.
        #[arg(long, value_name = "i/N")]
        shard: Option<String>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print audit.json to stdout instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Gather shard folders into one and analyse them (all runs must be present).
    Merge {
        /// Shard folders written by `audit run --shard`.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// The merged audit folder.
        #[arg(long)]
        out: PathBuf,
        /// Print audit.json to stdout.
        #[arg(long)]
        json: bool,
    },
    /// The lower bound a perfect test of a Gaussian mechanism with a true epsilon reaches from K
    /// runs per side (the most any audit of that size can show).
    Ideal {
        /// The true epsilon.
        #[arg(long)]
        epsilon: f64,
        /// Delta.
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// Runs per side.
        #[arg(long)]
        runs: u64,
        /// Confidence.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
    },
}

/// Exit status of a violated audit.
pub const EXIT_VIOLATED: i32 = 10;

fn summarise(r: &engine::AuditReport, json: bool) -> Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        println!("audit {}: {}", r.spec_name, r.verdict.to_uppercase());
        println!("  {}", r.verdict_reason);
        println!("  claim: epsilon = {:.4}, delta = {:e} ({})", r.claim.epsilon, r.claim.delta, r.claim.source);
        match (&r.one_run, r.fraction_of_ideal) {
            (Some(o), _) => println!(
                "  epsilon lower bound: {:.4} at {:.0}% confidence (one run: {} of {} guesses right, {} canaries, {} included)",
                r.epsilon_lower,
                100.0 * r.confidence,
                o.correct,
                o.guesses,
                o.canaries,
                o.included
            ),
            (None, f) => println!(
                "  epsilon lower bound: {:.4} at {:.0}% confidence ({} runs per side; a perfect test of a Gaussian mechanism at the claimed epsilon would reach {:.4} with this K{})",
                r.epsilon_lower,
                100.0 * r.confidence,
                r.runs_per_side,
                r.ideal_epsilon_lower,
                f.map_or(String::new(), |f| format!(": achieved {:.0}% of it", 100.0 * f))
            ),
        }
        println!("  threshold: {}", r.threshold_selection);
        println!(
            "  TPR at FPR 1% / 0.1% / 0.01%: {:.4} / {:.4} / {:.4}",
            r.tpr_at_fpr["0.01"], r.tpr_at_fpr["0.001"], r.tpr_at_fpr["0.0001"]
        );
        println!(
            "  Gaussian-DP fit (an estimate, not a bound): mu = {:.4}, epsilon = {:.4}",
            r.gdp_estimate.mu, r.gdp_estimate.epsilon
        );
        println!("  {} runs, {:.1} s of training ({:.1} s wall)", r.runs.len(), r.run_seconds, r.wall_seconds);
    }
    Ok(if r.verdict == "violated" { EXIT_VIOLATED } else { 0 })
}

/// Runs an audit subcommand; returns the exit status.
///
/// # Errors
/// Bad specs, data, I/O.
pub fn run(cmd: AuditCommand) -> Result<i32> {
    match cmd {
        AuditCommand::Run { spec, out, shard, threads, json } => {
            let start = engine::now();
            let s = AuditSpec::load(&spec).with_context(|| format!("loading audit spec {}", spec.display()))?;
            let shard = match shard {
                Some(x) => Shard::parse(&x)?,
                None => Shard::ALL,
            };
            let ctx = engine::prepare(&s).with_context(|| format!("preparing the runs of {}", spec.display()))?;
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} runs [{elapsed}<{eta}] {msg}")
                    .expect("valid template"),
            );
            bar.set_message(format!("{} ({} per side, {threads} threads)", s.name, s.attack.runs_per_side));
            let progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let stop = AtomicBool::new(false);
            let runs = engine::run_audit(&ctx, &out, shard, threads, &progress, &stop)
                .with_context(|| format!("running the audit into {}", out.display()))?;
            bar.finish_and_clear();
            if shard != Shard::ALL {
                eprintln!(
                    "shard {}/{} done: {} runs in {}; gather the shards with `dpaudit audit merge`",
                    shard.index,
                    shard.count,
                    runs.len(),
                    out.display()
                );
                return Ok(0);
            }
            let report = engine::analyse(&s, &runs, start.elapsed().as_secs_f64())?;
            let path = engine::write_report(&out, &report)?;
            if !json {
                eprintln!("wrote {}", path.display());
            }
            summarise(&report, json)
        }
        AuditCommand::Merge { shards, out, json } => {
            let (s, runs) = engine::merge(&shards, &out)?;
            let report = engine::analyse(&s, &runs, 0.0)?;
            let path = engine::write_report(&out, &report)?;
            if !json {
                eprintln!("wrote {}", path.display());
            }
            summarise(&report, json)
        }
        AuditCommand::Ideal { epsilon, delta, runs, confidence } => {
            let b = gaussian::ideal_lower_bound(epsilon, delta, runs, 1.0 - confidence)?;
            let mu = gaussian::mu_for_epsilon(epsilon, delta)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "true_epsilon": epsilon, "delta": delta, "runs_per_side": runs, "confidence": confidence,
                    "mu": mu, "ideal_epsilon_lower": b.epsilon_lower, "threshold": b.threshold,
                    "method": "threshold test on N(0,1) vs N(mu,1), expected error counts rounded, two-sided Clopper-Pearson, best of 4001 thresholds"
                }))?
            );
            Ok(0)
        }
    }
}
