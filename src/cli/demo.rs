//! `dpaudit demo`: the one-command pre-release audit ([`dpaudit::demo`]), with progress bars.
use anyhow::{Context, Result};
use clap::Args;
use dpaudit::data;
use dpaudit::demo::{run_demo, DemoConfig, DemoObserver};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Mutex;

/// `dpaudit demo` options.
#[derive(Args)]
pub struct DemoArgs {
    /// Run on real MNIST (60,000 training images; fetched into --data-dir if missing) instead of
    /// the bundled 2,000-image fixture.
    #[arg(long)]
    full: bool,
    /// The MNIST-format folder (default: fixtures/mnist-small, or data/mnist with --full).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The output folder (must not exist or be empty; default: runs/demo-YYYYMMDD-HHMMSS).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of every training and of the audit.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads for the audit (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The smallest setting that still runs every step (seconds; what the test suite runs).
    #[arg(long, conflicts_with = "full")]
    tiny: bool,
    #[command(flatten)]
    device: super::DeviceArg,
    /// Print demo.json (every path and number) instead of the summary.
    #[arg(long)]
    json: bool,
}

struct Bars {
    multi: MultiProgress,
    current: Mutex<Option<ProgressBar>>,
}

impl DemoObserver for Bars {
    fn stage(&self, index: usize, total: usize, title: &str) {
        let mut cur = self.current.lock().expect("not poisoned");
        if let Some(bar) = cur.take() {
            bar.finish_and_clear();
        }
        // Printed through suspend, not MultiProgress::println, so the lines also appear when stderr
        // is not a terminal (CI logs), where the bars themselves are hidden.
        self.multi.suspend(|| eprintln!("== {index}/{total} {title}"));
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("   {bar:30} {pos}/{len} [{elapsed}<{eta}] {msg}").expect("valid template"),
        );
        *cur = Some(bar);
    }
    fn progress(&self, done: u64, total: u64, message: &str) {
        if let Some(bar) = self.current.lock().expect("not poisoned").as_ref() {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(message.to_owned());
        }
    }
    fn note(&self, line: &str) {
        self.multi.suspend(|| eprintln!("   {line}"));
    }
}

fn timestamp() -> String {
    // YYYYMMDD-HHMMSS in UTC from the RFC 3339 time the certificates use.
    let t = dpaudit::cert::schema::rfc3339_utc(std::time::SystemTime::now());
    t.chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect::<String>().replace('T', "-")
}

/// Runs `dpaudit demo`.
///
/// # Errors
/// Whatever a step reports, with context.
pub fn run(a: &DemoArgs) -> Result<()> {
    let device = a.device.resolve()?;
    let mut config = if a.full {
        let dir = a.data_dir.clone().unwrap_or_else(|| PathBuf::from("data/mnist"));
        if data::load_mnist_dir(&dir, data::Split::Test, 10).is_err() {
            eprintln!("fetching MNIST into {} (verified by SHA-256)", dir.display());
            data::fetch(data::DatasetName::Mnist, &dir, &data::FetchOptions::default())
                .with_context(|| format!("fetching MNIST into {}", dir.display()))?;
        }
        DemoConfig::full(dir)
    } else if a.tiny {
        DemoConfig::tiny(a.data_dir.clone().unwrap_or_else(|| PathBuf::from("fixtures/mnist-small")))
    } else {
        let mut c = DemoConfig::fixture();
        if let Some(d) = &a.data_dir {
            c.data_dir = d.clone();
        }
        c
    };
    config.seed = a.seed;
    config.device = device;
    if let Some(t) = a.threads {
        config.threads = t.max(1);
    }
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("demo-{}", timestamp())));
    let bars = Bars { multi: MultiProgress::new(), current: Mutex::new(None) };
    let s = run_demo(&config, &out, &bars).with_context(|| format!("running the demo into {}", out.display()))?;
    if let Some(bar) = bars.current.lock().expect("not poisoned").take() {
        bar.finish_and_clear();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let eps = |v: &[dpaudit::demo::DemoEpsilon]| {
        v.iter().map(|e| format!("{} {:.4}", e.accountant, e.epsilon)).collect::<Vec<_>>().join(", ")
    };
    println!();
    println!("pre-release audit done in {:.0} s; everything is in {}", s.wall_seconds, out.display());
    println!(
        "  model            {}  test accuracy {:.4}; epsilon at delta {:e}: {}",
        s.model_run.display(),
        s.test_accuracy,
        s.config.delta,
        eps(&s.epsilons)
    );
    println!(
        "  audit            {}  {} (epsilon >= {:.4}; at most {:.4} is reachable with K = {})",
        s.audit.display(),
        s.audit_verdict,
        s.audit_epsilon_lower,
        s.audit_ideal_epsilon_lower,
        s.config.audit_runs_per_side
    );
    println!(
        "  membership inf.  {}  loss threshold: AUC {:.4}, TPR at 1% FPR {:.4}",
        s.membership_inference.display(),
        s.mia_auc,
        s.mia_tpr_at_1pct
    );
    println!(
        "  synthetic data   {}  from {} (epsilon {}){}",
        s.release.display(),
        s.gan_run.display(),
        eps(&s.gan_epsilons),
        if s.nearest_neighbour_flags.is_empty() {
            String::new()
        } else {
            format!(
                "; nearest-neighbour screen flags: {} (GAN-Leaks AUC {:.4})",
                s.nearest_neighbour_flags.len(),
                s.gan_leaks_auc
            )
        }
    );
    println!("  certificates     {} and {} (keys in {}; check with `dpaudit cert verify CERT --pubkey {}/dpaudit-cert.pub --artifacts DIR --recompute`)", s.model_certificate.display(), s.release_certificate.display(), s.keys.display(), s.keys.display());
    println!("  reports          {} and {}", s.model_report.display(), s.release_report.display());
    println!("  every path and number: {}", out.join("demo.json").display());
    Ok(())
}
