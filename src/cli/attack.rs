//! `dpaudit attack ...`: membership inference against a training recipe (loss threshold, LiRA
//! with shadow models; resumable, sharded) and nearest-neighbour attacks on synthetic data.
use anyhow::{Context, Result};
use clap::Subcommand;
use dpaudit::attack::plot::{roc_svg, Curve};
use dpaudit::attack::shadows::{self, MiaReport, MiaSpec};
use dpaudit::audit::engine::Shard;
use dpaudit::durable::write_atomically;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Attack subcommands.
#[derive(Subcommand)]
pub enum AttackCommand {
    /// Membership inference: train a target and N shadow models (the same recipe, each on a
    /// random half of a population), then attack the target with the loss threshold (Yeom et al.
    /// 2018) and LiRA offline and online (Carlini et al. 2022). Writes runs.jsonl (one fsynced
    /// line per model: re-running the same command resumes), mia.json (AUC, TPR at FPR 1%, 0.1%,
    /// 0.01%, the ROC, the DP ceiling on TPR for a private target) and roc.svg (log-log ROC).
    /// The figures are evidence, not a privacy bound.
    Mia {
        /// The experiment spec (TOML: [data], [target] recipe, [attack]; see
        /// `dpaudit::attack::shadows`). A `[target]` with kind = "command" is an external
        /// trainer (docs/external-trainers.md; its `workers` replace --threads).
        #[arg(long)]
        target_config: PathBuf,
        /// The experiment folder (created; resumed if it holds models of the same spec).
        #[arg(long)]
        out: PathBuf,
        /// Train only shard i of N (i/N, 0-based; model m belongs to shard m mod N); gather the
        /// shards with `dpaudit attack merge`. `auto` takes i and N from a Slurm array task, `auto/N`
        /// from a Kubernetes indexed Job (JOB_COMPLETION_INDEX) with N completions.
        #[arg(long, value_name = "i/N|auto|auto/N")]
        shard: Option<String>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        device: super::DeviceArg,
        /// Print mia.json to stdout instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Nearest-neighbour analyses of released synthetic images: distances to closest records
    /// (DCR synthetic->train against synthetic->holdout, the share closer to train, exact copies,
    /// NNDR: heuristics, not a privacy guarantee) and the GAN-Leaks membership attack (score:
    /// minus the distance to the nearest synthetic image; AUC, TPR at low FPR: evidence). Each
    /// folder is MNIST-format: its train-images-idx3-ubyte[.gz], or its t10k-images file when it
    /// has none; when --holdout names the same folder as --train, its t10k-images file. The
    /// holdout should be drawn like the training records (unused records of the same split):
    /// the comparisons with 1/2 and with chance assume it.
    /// Exit status: 0, or 11 when a heuristic flag is raised.
    NearestNeighbour {
        /// The released synthetic images.
        #[arg(long)]
        synthetic: PathBuf,
        /// The generator's training images.
        #[arg(long)]
        train: PathBuf,
        /// Images of the same distribution the generator never saw.
        #[arg(long)]
        holdout: PathBuf,
        /// Use at most the first N images of each set (distances cost N x N).
        #[arg(long, default_value_t = 10_000)]
        max_examples: usize,
        /// Also write the report to this file (JSON, atomically).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Gather the shard folders of `attack mia --shard` into one and analyse them.
    Merge {
        /// Shard folders.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// The merged experiment folder.
        #[arg(long)]
        out: PathBuf,
        /// Print mia.json to stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status of `attack nearest-neighbour` when a heuristic flag is raised.
pub const EXIT_FLAGGED: i32 = 11;

fn finish(
    ctx: &shadows::MiaContext,
    records: &[shadows::ModelRecord],
    out: &Path,
    wall: f64,
    json: bool,
) -> Result<()> {
    let report = shadows::analyse(ctx, records, wall)?;
    let path = shadows::write_report(out, &report)?;
    // The axes reach 0.01% FPR, or half the data's resolution when that is finer.
    let min_rate = (report.attacks[0].metrics.fpr_resolution / 2.0).clamp(1e-6, 1e-4);
    let curves: Vec<Curve<'_>> = report
        .attacks
        .iter()
        .map(|a| Curve { label: format!("{} (AUC {:.3})", a.attack, a.metrics.auc), roc: &a.metrics.roc })
        .collect();
    let svg = roc_svg(&format!("membership inference: {}", report.spec_name), &curves, min_rate)?;
    let svg_path = out.join("roc.svg");
    write_atomically(&svg_path, svg.as_bytes())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!("wrote {} and {}", path.display(), svg_path.display());
        summarise(&report);
    }
    Ok(())
}

fn summarise(r: &MiaReport) {
    println!(
        "membership inference: {} ({} population, {} models, {} target{})",
        r.spec_name,
        r.population,
        r.models,
        r.targets,
        if r.targets == 1 { "" } else { "s" }
    );
    if r.privacy.private {
        let e: Vec<String> = r.privacy.epsilons.iter().map(|e| format!("{} {:.3}", e.accountant, e.epsilon)).collect();
        let delta = r.privacy.epsilons.first().map_or(f64::NAN, |e| e.delta);
        println!("  target: {}; epsilon {} at delta = {delta:e}", r.privacy.mechanism, e.join(", "));
    } else {
        println!("  target: {}", r.privacy.mechanism);
    }
    println!(
        "  target accuracy: members {:.4}, non-members {:.4}",
        r.target_member_accuracy, r.target_non_member_accuracy
    );
    println!(
        "  {:<13} {:>7} {:>10} {:>10} {:>10}   (members / non-members; FPR resolution)",
        "attack", "AUC", "TPR@1%", "TPR@0.1%", "TPR@0.01%"
    );
    for a in &r.attacks {
        let t = |k: &str| {
            let x = &a.metrics.tpr_at_fpr[k];
            format!("{:.4}{}", x.tpr, if x.resolved { "" } else { "*" })
        };
        println!(
            "  {:<13} {:>7.4} {:>10} {:>10} {:>10}   ({} / {}; {:.1e})",
            a.attack,
            a.metrics.auc,
            t("0.01"),
            t("0.001"),
            t("0.0001"),
            a.metrics.members,
            a.metrics.non_members,
            a.metrics.fpr_resolution
        );
    }
    if r.attacks.iter().any(|a| a.metrics.tpr_at_fpr.values().any(|x| !x.resolved)) {
        println!("  * below the FPR resolution: the TPR at zero false positives");
    }
    if let Some(c) = r.attacks.first().and_then(|a| a.dp_tpr_ceiling.as_ref()) {
        println!(
            "  DP ceiling on any attack's TPR (e^eps FPR + delta): {:.4} / {:.4} / {:.4}",
            c["0.01"], c["0.001"], c["0.0001"]
        );
    }
    println!(
        "  evidence about this recipe, not a privacy bound; {:.1} s of training ({:.1} s wall)",
        r.training_seconds, r.wall_seconds
    );
}

/// Runs an attack subcommand.
///
/// # Errors
/// Bad specs, data, I/O.
/// Runs `dpaudit attack`; returns the exit status ([`EXIT_FLAGGED`] when a nearest-neighbour
/// heuristic flags copying).
pub fn run(cmd: AttackCommand) -> Result<i32> {
    let mut code = 0;
    run_with_status(cmd, &mut code)?;
    Ok(code)
}

fn run_with_status(cmd: AttackCommand, code: &mut i32) -> Result<()> {
    match cmd {
        AttackCommand::Mia { target_config, out, shard, threads, device, json } => {
            let start = std::time::Instant::now();
            let device = device.resolve()?;
            let spec = MiaSpec::load(&target_config).with_context(|| format!("loading {}", target_config.display()))?;
            let shard = match shard {
                Some(s) => Shard::resolve(&s, |k| std::env::var(k).ok())?,
                None => Shard::ALL,
            };
            let ctx = shadows::prepare(&spec)
                .with_context(|| format!("preparing the models of {}", target_config.display()))?
                .on_device(device)?;
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} models [{elapsed}<{eta}] {msg}")
                    .expect("valid template"),
            );
            bar.set_message(format!("{} ({threads} threads)", spec.name));
            let progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let stop = AtomicBool::new(false);
            let records = shadows::run_models(&ctx, &out, shard, threads, &progress, &stop)
                .with_context(|| format!("training the models into {}", out.display()))?;
            bar.finish_and_clear();
            if shard != Shard::ALL {
                eprintln!(
                    "shard {}/{} done: {} models in {}; gather the shards with `dpaudit attack merge`",
                    shard.index,
                    shard.count,
                    records.len(),
                    out.display()
                );
                return Ok(());
            }
            finish(&ctx, &records, &out, start.elapsed().as_secs_f64(), json)
        }
        AttackCommand::NearestNeighbour { synthetic, train, holdout, max_examples, out, json } => {
            use dpaudit::attack::nearest_neighbour::{analyse, load_images};
            let same = train.canonicalize().ok().is_some_and(|t| holdout.canonicalize().ok() == Some(t));
            let s = load_images(&synthetic, false).context("reading the synthetic images")?.truncate(max_examples);
            let t = load_images(&train, false).context("reading the training images")?.truncate(max_examples);
            let h = load_images(&holdout, same).context("reading the holdout images")?.truncate(max_examples);
            if same && h.path == t.path {
                anyhow::bail!("--train and --holdout name the same folder, which has no t10k-images file to hold out");
            }
            let r = analyse(&s, &t, &h)?;
            if let Some(path) = &out {
                write_atomically(path, &serde_json::to_vec_pretty(&r)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let d = &r.distances;
                println!(
                    "nearest neighbours: {} synthetic, {} train, {} holdout images ({})",
                    r.sizes.synthetic, r.sizes.train, r.sizes.holdout, r.distance
                );
                println!(
                    "distances (a heuristic, NOT a privacy guarantee; {} train and {} holdout records compared):",
                    d.compared, d.compared
                );
                println!(
                    "  DCR synthetic->train   median {:.4}, 5th percentile {:.4}, min {:.4}",
                    d.dcr_synthetic_to_train.median, d.dcr_synthetic_to_train.p5, d.dcr_synthetic_to_train.min
                );
                println!(
                    "  DCR synthetic->holdout median {:.4}, 5th percentile {:.4}, min {:.4}",
                    d.dcr_synthetic_to_holdout.median, d.dcr_synthetic_to_holdout.p5, d.dcr_synthetic_to_holdout.min
                );
                println!("  closer to train than to holdout: {:.1}% (one-sided permutation p = {:.1e} against re-splits of the pooled records)", 100.0 * d.share_closer_to_train, d.share_p_value);
                println!(
                    "  exact copies of training images: {}; NNDR median {:.3}, below {}: {:.1}%",
                    d.exact_copies_of_train,
                    d.nndr.median,
                    dpaudit::attack::nearest_neighbour::NNDR_LOW,
                    100.0 * d.share_nndr_below_half
                );
                for f in &d.flags {
                    println!("  FLAG: {f}");
                }
                let m = &r.attack.metrics;
                println!("membership attack (GAN-Leaks; evidence, not a bound): AUC {:.4}, TPR at FPR 1% / 0.1% / 0.01%: {:.4} / {:.4} / {:.4} ({} members, {} non-members)", m.auc, m.tpr_at_fpr["0.01"].tpr, m.tpr_at_fpr["0.001"].tpr, m.tpr_at_fpr["0.0001"].tpr, m.members, m.non_members);
            }
            if !r.distances.flags.is_empty() {
                *code = EXIT_FLAGGED;
            }
            Ok(())
        }
        AttackCommand::Merge { shards, out, json } => {
            let (spec, records) = shadows::merge(&shards, &out)?;
            let ctx = shadows::prepare(&spec).context("re-deriving the population and memberships")?;
            finish(&ctx, &records, &out, 0.0, json)
        }
    }
}
