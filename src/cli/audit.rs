//! `dpaudit audit ...`: run an audit spec (resumable, sharded), merge shards, the ideal bound.
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use dpaudit::audit::engine::{self, Shard};
use dpaudit::audit::external;
use dpaudit::audit::gaussian;
use dpaudit::audit::spec::{AuditSpec, ClaimedEpsilon, CommandMode};
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
    /// Before any training it computes what the procedure can show (its ceiling: the largest
    /// bound it can report with K runs per side; and the smallest epsilon it catches with
    /// probability 1/2 and 0.9) and refuses an audit whose ceiling does not exceed the claim,
    /// unless --allow-inconclusive. Records of an earlier run in --out are resumed only if they
    /// check (spec digest, seed, side, index, score digest); after the runs, --recheck of them,
    /// chosen at random, are trained again and must reproduce bit for bit.
    ///
    /// A spec with `[target] kind = "command"` audits a trainer dpaudit did not write
    /// (docs/external-trainers.md): dpaudit writes D, D' and the canary under datasets/ in --out,
    /// runs the command once per run (mode = "once") or feeds long-lived processes one request per
    /// line (mode = "worker"; the spec's `workers` replace --threads), and reads back
    /// model.safetensors and the optional initial and iterate parameters, scores.json and
    /// claim.json. A run that fails stops the audit with an error naming the run, the file and
    /// the trainer's last stderr lines; running the same command again resumes and retries it.
    /// --recheck reruns records only for a `deterministic = true` trainer.
    ///
    /// Exit status: 0 consistent, 1 error, 10 violated, 12 inconclusive (the procedure could not
    /// have refuted the claim).
    Run {
        /// The audit spec (TOML).
        spec: PathBuf,
        /// The audit folder (created; resumed if it holds runs of the same spec).
        #[arg(long)]
        out: PathBuf,
        /// Run only shard i of N (i/N, 0-based) for an array job; gather with `dpaudit audit merge`.
        /// Shard i runs both sides of every run index congruent to i mod N. `auto` takes i and N from
        /// a Slurm array task (SLURM_ARRAY_TASK_ID, _MIN, _COUNT); `auto/N` from a Kubernetes
        /// indexed Job (JOB_COMPLETION_INDEX) with N completions.
        #[arg(long, value_name = "i/N|auto|auto/N")]
        shard: Option<String>,
        /// Worker threads (default: all cores; an external trainer uses the spec's `workers`).
        #[arg(long)]
        threads: Option<usize>,
        /// Print audit.json to stdout instead of a summary.
        #[arg(long)]
        json: bool,
        /// Run an audit whose ceiling does not exceed the claim anyway; its verdict is
        /// `inconclusive` (exit 12), never `consistent`.
        #[arg(long)]
        allow_inconclusive: bool,
        /// Records replayed after the runs to check them (0 skips the check; a certificate then
        /// refuses to cite the audit). They are replayed on --device: records made on the CPU are
        /// bit-reproducible there, CUDA records only on the device that made them.
        #[arg(long, default_value_t = 2)]
        recheck: usize,
        #[command(flatten)]
        device: crate::cli::DeviceArg,
    },
    /// Gather shard folders into one and analyse them (all runs must be present). Refuses
    /// records that do not check (another spec's digest, a seed the spec does not derive for
    /// that side and index, a run outside the folder's shard, a run in two folders, no score
    /// digest) and shard indices outside their count; then replays --recheck records chosen at
    /// random, which must reproduce bit for bit (this needs the spec's data).
    ///
    /// Exit status: as `audit run`.
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
        /// Records replayed to check them (0 skips the check; a certificate then refuses to
        /// cite the audit), on --device (the device the shards ran on).
        #[arg(long, default_value_t = 2)]
        recheck: usize,
        #[command(flatten)]
        device: crate::cli::DeviceArg,
    },
    /// Analyse an audit folder as it stands, without training: the whole audit (printed; its
    /// audit.json is left as `audit run` or `audit merge` wrote it) or one shard's folder alone.
    /// A shard's report is a valid bound from its own runs, labelled "partial: shard i of N, k of K
    /// runs per side", written to the shard's audit.json; `cert sign` refuses to cite it.
    ///
    /// Exit status: as `audit run`.
    Analyse {
        /// The audit or shard folder (`spec.json` and `runs.jsonl`).
        dir: PathBuf,
        /// Print audit.json to stdout.
        #[arg(long)]
        json: bool,
    },
    /// Audit scores produced anywhere: the same epsilon lower bound, confidence, ideal bound, ROC
    /// and verdict as `audit run`, from a CSV (`side,score` header, optional `index` column,
    /// further columns are named statistics), JSON lines (`{"side": .., "score": ..}`, optional
    /// `index` and `statistics`; a dpaudit runs.jsonl is one), or two files of one score per
    /// line (--with, --without). Sides: with/without, in/out, 1/0; larger scores mean "canary
    /// in". On a dpaudit audit's runs.jsonl with its claim and rule it reproduces its audit.json
    /// bound exactly. Imported scores cannot be checked or replayed, so no certificate cites them.
    ///
    /// Exit status: as `audit run` (0 consistent, 1 error, 10 violated, 12 inconclusive).
    FromScores {
        /// A CSV or JSON-lines file of scores (or give --with and --without).
        #[arg(required_unless_present_all = ["with", "without"], conflicts_with_all = ["with", "without"])]
        scores: Option<PathBuf>,
        /// Canary-in scores, one per line.
        #[arg(long, requires = "without")]
        with: Option<PathBuf>,
        /// Canary-out scores, one per line.
        #[arg(long, requires = "with")]
        without: Option<PathBuf>,
        /// The claimed epsilon to test.
        #[arg(long)]
        epsilon: f64,
        /// The claimed delta.
        #[arg(long, short = 'd', allow_negative_numbers = true, default_value_t = 1e-5)]
        delta: f64,
        /// Confidence of the bound.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// How the threshold is chosen: held-out (chosen on the first runs of each side, bound on
        /// the rest), bonferroni (best of all thresholds, each at alpha / count) or from-claim
        /// (fixed from the claim; scores in N(0, 1) units of a Gaussian canary).
        #[arg(long, default_value = "held-out", value_parser = ["held-out", "bonferroni", "from-claim"])]
        threshold: String,
        /// held-out and --statistic select: the share of runs per side spent choosing.
        #[arg(long, default_value_t = 0.5)]
        held_out_fraction: f64,
        /// `select`: choose the statistic (score and every named statistic, each also negated) on
        /// the held-out runs, bound on the rest at alpha / candidates; or one name (`score`, a
        /// named statistic, `-NAME` for negated).
        #[arg(long)]
        statistic: Option<String>,
        /// Write audit.json into this folder (created; an existing audit.json is not overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print audit.json to stdout instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// What each threshold rule can show before any run, for every claim and K given: the
    /// from-claim threshold, the ceiling (largest bound reportable) of the rule used before issue
    /// 28 and of every rule now, and the smallest epsilon each catches with probability 1/2 and 0.9.
    Ceilings {
        /// Claimed epsilons (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        claims: Vec<f64>,
        /// Runs per side (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,5000")]
        runs: Vec<u64>,
        /// Delta.
        #[arg(long, short = 'd', allow_negative_numbers = true, default_value_t = 1e-5)]
        delta: f64,
        /// Confidence.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// Also compute the power of held-out and bonferroni (simulation; slower).
        #[arg(long)]
        power_all: bool,
        /// Print JSON instead of a table.
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
        #[arg(long, short = 'd', allow_negative_numbers = true, default_value_t = 1e-5)]
        delta: f64,
        /// Runs per side.
        #[arg(long)]
        runs: u64,
        /// Confidence.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// Print JSON (keys true_epsilon, delta, runs_per_side, confidence, mu,
        /// ideal_epsilon_lower, threshold, method) instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status of a violated audit.
pub const EXIT_VIOLATED: i32 = 10;
/// Exit status of an inconclusive audit (its procedure could not have refuted the claim).
pub const EXIT_INCONCLUSIVE: i32 = 12;

fn opt(e: Option<f64>) -> String {
    e.map_or_else(|| "none".into(), eps)
}

/// An epsilon for a message: four decimals, or scientific notation when huge (a claim of 1e308).
fn eps(e: f64) -> String {
    if e.abs() < 1e6 {
        format!("{e:.4}")
    } else {
        format!("{e:.4e}")
    }
}

fn print_plan(p: &dpaudit::audit::power::AuditPlan) {
    eprintln!(
        "plan ({}, claim {}, {} runs per side counted): ceiling {:.4} ({}); catches a Gaussian mechanism with probability 1/2 from epsilon {}, with 0.9 from {} ({})",
        p.rule,
        eps(p.claim_epsilon),
        p.counted_runs_per_side,
        p.ceiling,
        p.ceiling_meaning,
        opt(p.detectable_epsilon_50),
        opt(p.detectable_epsilon_90),
        p.power_method
    );
}

fn summarise(r: &engine::AuditReport, json: bool) -> Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        match &r.partial {
            Some(p) => println!("audit {}: {} ({})", r.spec_name, r.verdict.to_uppercase(), p.label),
            None => println!("audit {}: {}", r.spec_name, r.verdict.to_uppercase()),
        }
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
                "  epsilon lower bound: {:.4} at {:.0}% confidence ({} runs per side; a Gaussian mechanism at exactly the claimed epsilon would give {:.4} on average with this K{})",
                r.epsilon_lower,
                100.0 * r.confidence,
                r.runs_per_side,
                r.ideal_epsilon_lower,
                match f {
                    Some(f) if f <= 1.0 => format!(": reached {:.0}% of it", 100.0 * f),
                    Some(_) if r.verdict == "violated" => {
                        ": above it, as a mechanism leakier than the claim would be".to_string()
                    }
                    Some(_) => ": above it, see the notes".to_string(),
                    None => String::new(),
                }
            ),
        }
        println!(
            "  what it could show: ceiling {:.4} ({}); {}",
            r.plan.ceiling,
            r.plan.ceiling_meaning,
            match (r.plan.detectable_epsilon_50, r.plan.detectable_epsilon_90) {
                (None, _) => "it would not have caught any Gaussian mechanism with probability 1/2".to_string(),
                (a, b) => format!(
                    "it catches a Gaussian mechanism of epsilon {} with probability 1/2, of epsilon {} with 0.9 ({})",
                    opt(a),
                    opt(b),
                    r.plan.power_method
                ),
            }
        );
        println!("  threshold: {}", r.threshold_selection);
        if let Some(sel) = &r.statistic_selection {
            println!(
                "  statistic: {} decided, among {} candidates ({}), bound at alpha / {} = {:e}",
                sel.decided,
                sel.tests,
                sel.candidates.iter().map(|c| c.statistic.as_str()).collect::<Vec<_>>().join(", "),
                sel.tests,
                sel.alpha_per_test
            );
        } else if let Some(s) = &r.statistic {
            println!("  statistic: {s}");
        }
        if let Some(src) = &r.scores_source {
            println!("  scores: {src}");
        }
        let tpr = |key: &str| match r.tpr_at_fpr.get(key).copied().flatten() {
            Some(t) => format!("{t:.4}"),
            None => format!(
                "not measurable with K = {}",
                r.runs.iter().filter(|x| x.side == dpaudit::audit::replay::Side::Without).count()
            ),
        };
        println!("  TPR at FPR 1% / 0.1% / 0.01%: {} / {} / {}", tpr("0.01"), tpr("0.001"), tpr("0.0001"));
        println!(
            "  Gaussian-DP fit (an estimate, not a bound): mu = {:.4}, epsilon = {:.4}",
            r.gdp_estimate.mu, r.gdp_estimate.epsilon
        );
        for n in &r.notes {
            println!("  note: {n}");
        }
        println!(
            "  records: {} ({} replayed and reproduced)",
            if r.record_check.fields_checked { "every field checked" } else { "not checked" },
            r.record_check.replayed.len()
        );
        println!("  {} runs, {:.1} s of training ({:.1} s wall)", r.runs.len(), r.run_seconds, r.wall_seconds);
    }
    Ok(exit_code(&r.verdict))
}

/// The exit status of a verdict.
pub fn exit_code(verdict: &str) -> i32 {
    match verdict {
        "violated" => EXIT_VIOLATED,
        "consistent" => 0,
        _ => EXIT_INCONCLUSIVE,
    }
}

fn recheck_into(
    ctx: &dpaudit::audit::replay::ReplayContext,
    report: &mut engine::AuditReport,
    count: usize,
    origin: &std::path::Path,
) -> Result<()> {
    let replayed = engine::replay_check(ctx, &report.runs, count, origin)?;
    report.record_check.note = if replayed.is_empty() {
        "every record's spec digest, side, index, seed and score digest checked; none replayed (--recheck 0)".into()
    } else {
        format!("every record's spec digest, side, index, seed and score digest checked; {} chosen at random after the runs were trained again and reproduced score and score digest exactly", replayed.len())
    };
    report.record_check.replayed = replayed;
    Ok(())
}

/// The record check of an audit of a non-deterministic external trainer.
const NOT_REPLAYED: &str = "every record's spec digest, side, index, seed and score digest checked for consistency; none replayed: the external trainer is not deterministic (target.deterministic = false), so its records cannot be reproduced by training again";

/// Prints the plan of an audit with a claim known before the runs, and refuses one that cannot
/// refute it unless `allow_inconclusive`.
fn check_plan(s: &AuditSpec, claim: f64, allow_inconclusive: bool) -> Result<()> {
    let plan = engine::audit_plan(s, claim, s.attack.confidence)?;
    print_plan(&plan);
    if !plan.can_refute && !allow_inconclusive {
        bail!(
            "this audit cannot refute its claim: with {} runs per side the {} rule can report at most {:.4}, not above the claimed epsilon {}; use more runs per side, or --allow-inconclusive to run it anyway (verdict `inconclusive`, exit {EXIT_INCONCLUSIVE})",
            plan.counted_runs_per_side, plan.rule, plan.ceiling, eps(claim)
        );
    }
    Ok(())
}

/// `audit run` of an external trainer (`[target] kind = "command"`).
#[allow(clippy::too_many_arguments)]
fn run_external(
    s: &AuditSpec,
    spec: &std::path::Path,
    out: &std::path::Path,
    shard: Shard,
    json: bool,
    allow_inconclusive: bool,
    recheck: usize,
    start: std::time::Instant,
) -> Result<i32> {
    let ctx = external::ExternalContext::new(s).with_context(|| format!("preparing the runs of {}", spec.display()))?;
    match s.claim.epsilon {
        ClaimedEpsilon::Explicit(claim) => check_plan(s, claim, allow_inconclusive)?,
        _ => eprintln!(
            "the claim comes from the trainer's runs (claim.json): what this audit can show is known after them"
        ),
    }
    let target = ctx.target();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs [{elapsed}<{eta}] {msg}").expect("valid template"),
    );
    bar.set_message(format!(
        "{} ({} per side, external trainer, {} {})",
        s.name,
        s.attack.runs_per_side,
        target.workers,
        if target.mode == CommandMode::Worker { "worker processes" } else { "processes at a time" }
    ));
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let stop = AtomicBool::new(false);
    let runs = external::run_external_audit(&ctx, out, shard, &progress, &stop)
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
    let mut report = engine::analyse(s, &runs, start.elapsed().as_secs_f64())?;
    if target.deterministic {
        let replayed = external::replay_check_external(&ctx, out, &report.runs, recheck, &out.join(engine::RUNS_FILE))?;
        report.record_check.note = if replayed.is_empty() {
            "every record's spec digest, side, index, seed and score digest checked; none replayed (--recheck 0)".into()
        } else {
            format!("every record's spec digest, side, index, seed and score digest checked; {} chosen at random after the runs were trained again by the (deterministic) external trainer and reproduced score and score digest exactly", replayed.len())
        };
        report.record_check.replayed = replayed;
    } else {
        report.record_check.note = NOT_REPLAYED.into();
        if !json {
            eprintln!("note: {NOT_REPLAYED}");
        }
    }
    let path = engine::write_report(out, &report)?;
    if !json {
        eprintln!("wrote {}", path.display());
    }
    summarise(&report, json)
}

/// Runs an audit subcommand; returns the exit status.
///
/// # Errors
/// Bad specs, data, I/O.
pub fn run(cmd: AuditCommand) -> Result<i32> {
    match cmd {
        AuditCommand::Run { spec, out, shard, threads, json, allow_inconclusive, recheck, device } => {
            let start = engine::now();
            let device = device.resolve()?;
            let s = AuditSpec::load(&spec).with_context(|| format!("loading audit spec {}", spec.display()))?;
            let shard = match shard {
                Some(x) => Shard::resolve(&x, |k| std::env::var(k).ok())?,
                None => Shard::ALL,
            };
            shard.check_against(&s)?;
            if s.command().is_some() {
                return run_external(&s, &spec, &out, shard, json, allow_inconclusive, recheck, start);
            }
            let ctx = engine::prepare(&s)
                .with_context(|| format!("preparing the runs of {}", spec.display()))?
                .on_device(device)?;
            if let Some(claim) = engine::expected_claim(&ctx)? {
                check_plan(&s, claim, allow_inconclusive)?;
            }
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
                    "shard {}/{} done: {} runs in {}; gather the shards with `dpaudit audit merge` (or `dpaudit audit analyse` this folder for a partial bound from this shard alone)",
                    shard.index,
                    shard.count,
                    runs.len(),
                    out.display()
                );
                return Ok(0);
            }
            let mut report = engine::analyse(&s, &runs, start.elapsed().as_secs_f64())?;
            recheck_into(&ctx, &mut report, recheck, &out.join(engine::RUNS_FILE))?;
            let path = engine::write_report(&out, &report)?;
            if !json {
                eprintln!("wrote {}", path.display());
            }
            summarise(&report, json)
        }
        AuditCommand::Merge { shards, out, json, recheck, device } => {
            let device = device.resolve()?;
            // The replays run before the merged folder is written: a refused merge leaves nothing.
            let replayed = std::cell::RefCell::new(None);
            let (s, runs) = engine::merge_checked(&shards, &out, &|s, runs| {
                let origin = PathBuf::from(
                    shards
                        .iter()
                        .map(|d| d.join(engine::RUNS_FILE).display().to_string())
                        .collect::<Vec<_>>()
                        .join(" + "),
                );
                match s.command() {
                    _ if recheck == 0 => {}
                    Some(c) if !c.deterministic => {}
                    Some(_) => {
                        // The external trainer runs again in the merged folder (its datasets and trainer-runs/).
                        let ctx = external::ExternalContext::new(s)?;
                        *replayed.borrow_mut() =
                            Some(external::replay_check_external(&ctx, &out, runs, recheck, &origin)?);
                    }
                    None => {
                        let ctx = engine::prepare(s)?.on_device(device)?;
                        *replayed.borrow_mut() = Some(engine::replay_check(&ctx, runs, recheck, &origin)?);
                    }
                }
                Ok(())
            })?;
            let mut report = engine::analyse(&s, &runs, 0.0)?;
            if s.command().is_some_and(|c| !c.deterministic) {
                report.record_check.note = NOT_REPLAYED.into();
                eprintln!("note: {NOT_REPLAYED}");
            }
            if let Some(r) = replayed.into_inner() {
                report.record_check.note = format!("every record's spec digest, side, index, seed and score digest checked; {} chosen at random were trained again and reproduced score and score digest exactly", r.len());
                report.record_check.replayed = r;
            }
            let path = engine::write_report(&out, &report)?;
            if !json {
                eprintln!("wrote {}", path.display());
            }
            summarise(&report, json)
        }
        AuditCommand::Analyse { dir, json } => {
            let report = engine::analyse_folder(&dir).with_context(|| format!("analysing {}", dir.display()))?;
            if report.partial.is_some() {
                let path = engine::write_report(&dir, &report)?;
                if !json {
                    eprintln!("wrote {}", path.display());
                }
            } else if !json {
                eprintln!("the whole audit, analysed again (its audit.json is left as written)");
            }
            summarise(&report, json)
        }
        AuditCommand::FromScores {
            scores,
            with,
            without,
            epsilon,
            delta,
            confidence,
            threshold,
            held_out_fraction,
            statistic,
            out,
            json,
        } => {
            use dpaudit::audit::from_scores::{audit_from_scores, ScoresInput};
            let input = match (scores, with, without) {
                (Some(f), None, None) => ScoresInput::Table(f),
                (None, Some(w), Some(o)) => ScoresInput::Pair { with: w, without: o },
                _ => bail!("give one scores file, or --with and --without"),
            };
            if let Some(dir) = &out {
                if dir.join(engine::AUDIT_FILE).exists() {
                    bail!("{} already holds an {}: give a new --out", dir.display(), engine::AUDIT_FILE);
                }
            }
            let rule: dpaudit::audit::spec::ThresholdChoice =
                serde_json::from_value(serde_json::Value::String(threshold.clone()))
                    .with_context(|| format!("--threshold {threshold}"))?;
            let settings = engine::AnalysisSettings {
                claim: engine::ClaimReport { epsilon, delta, source: "explicit (--epsilon, --delta)".into() },
                confidence,
                threshold: rule,
                held_out_fraction,
                statistic,
            };
            let report = audit_from_scores(&input, &settings).context("auditing the scores")?;
            if let Some(dir) = &out {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                let path = engine::write_report(dir, &report)?;
                if !json {
                    eprintln!("wrote {}", path.display());
                }
            }
            summarise(&report, json)
        }
        AuditCommand::Ideal { epsilon, delta, runs, confidence, json } => {
            let b = gaussian::ideal_lower_bound(epsilon, delta, runs, 1.0 - confidence)?;
            let mu = gaussian::mu_for_epsilon(epsilon, delta)?;
            const METHOD: &str = "threshold test on N(0,1) vs N(mu,1), expected error counts rounded, two-sided Clopper-Pearson, best of 4001 thresholds";
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "true_epsilon": epsilon, "delta": delta, "runs_per_side": runs, "confidence": confidence,
                        "mu": mu, "ideal_epsilon_lower": b.epsilon_lower, "threshold": b.threshold,
                        "method": METHOD
                    }))?
                );
            } else {
                println!(
                    "ideal epsilon lower bound {:.4} (confidence {confidence}) from {runs} runs per side against a Gaussian mechanism of true epsilon {epsilon} at delta = {delta:e} (mu = {mu:.4}; threshold {:.4})",
                    b.epsilon_lower, b.threshold
                );
                println!("  method: {METHOD}");
            }
            Ok(0)
        }
        AuditCommand::Ceilings { claims, runs, delta, confidence, power_all, json } => {
            ceilings(&claims, &runs, delta, confidence, power_all, json)
        }
    }
}

fn ceilings(claims: &[f64], runs: &[u64], delta: f64, confidence: f64, power_all: bool, json: bool) -> Result<i32> {
    use dpaudit::audit::power::{self, Procedure};
    use dpaudit::audit::spec::ThresholdChoice;
    let alpha = 1.0 - confidence;
    let mut rows = Vec::new();
    if !json {
        println!("delta = {delta:e}, confidence = {confidence}; ceiling = the largest bound the rule can report (from-claim: no canary-in run below the threshold, the median count of N(0, 1) canary-out runs above it); eps50 / eps90 = smallest epsilon of a Gaussian mechanism reported `violated` with probability 1/2 / 0.9 (none: not even mu = 20)");
        println!(
            "{:>6} {:>6} | {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9}{}",
            "claim",
            "K",
            "old t",
            "old ceil",
            "new t",
            "aim eps",
            "new ceil",
            "eps50",
            "eps90",
            "held-out",
            "bonferr.",
            if power_all { "  held-out eps50/eps90  bonferroni eps50/eps90" } else { "" }
        );
    }
    for &claim in claims {
        for &k in runs {
            let old_t = power::claim_maximising_threshold(claim, delta, k, alpha)?;
            let old_ceiling = power::fixed_threshold_ceiling(old_t, delta, k, alpha)?;
            let new = power::plan(&Procedure::new(ThresholdChoice::FromClaim, k, 0.5, claim, delta, alpha)?)?;
            let mut adaptive = Vec::new();
            for rule in [ThresholdChoice::HeldOut, ThresholdChoice::Bonferroni] {
                let p = Procedure::new(rule, k, 0.5, claim, delta, alpha)?;
                adaptive.push(if power_all { power::plan(&p)? } else { power::ceiling_only(&p)? });
            }
            if json {
                rows.push(serde_json::json!({
                    "claim": claim, "runs_per_side": k,
                    "old_from_claim": {"threshold": old_t, "ceiling": old_ceiling},
                    "from_claim": new, "held_out": adaptive[0], "bonferroni": adaptive[1],
                }));
            } else {
                println!(
                    "{:>6} {:>6} | {:>9.4} {:>9.4} | {:>9.4} {:>9} {:>9.4} {:>9} {:>9} | {:>9.4} {:>9.4}{}",
                    claim,
                    k,
                    old_t,
                    old_ceiling,
                    new.threshold.unwrap_or(f64::NAN),
                    opt(new.design_epsilon),
                    new.ceiling,
                    opt(new.detectable_epsilon_50),
                    opt(new.detectable_epsilon_90),
                    adaptive[0].ceiling,
                    adaptive[1].ceiling,
                    if power_all {
                        format!(
                            "  {:>9}/{:<9}  {:>9}/{:<9}",
                            opt(adaptive[0].detectable_epsilon_50),
                            opt(adaptive[0].detectable_epsilon_90),
                            opt(adaptive[1].detectable_epsilon_50),
                            opt(adaptive[1].detectable_epsilon_90)
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(0)
}
