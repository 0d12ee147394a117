//! `dpaudit-torch`: the half of the `dpaudit` command that links libtorch. The front binary
//! `dpaudit` (`src/main.rs`) runs the commands that need no libtorch itself and hands every other
//! command line to this one unchanged; it parses it and hands each command group to its module
//! in `cli/`, which calls the library and returns the exit status.
use anyhow::Result;
use clap::{Parser, Subcommand};

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
    Account(cli::account::AccountCommand),
    /// Datasets: fetch real data, inspect files.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Train a model with DP-SGD (or the non-private baseline) into a run folder.
    ///
    /// Writes model.safetensors, ledger.jsonl (one fsynced line per noisy step, written before the
    /// step's update), metrics.json (test accuracy, epsilon from each accountant with delta, all
    /// parameters, wall time, SHA-256 of the data and the model) and a checkpoint. With
    /// --target-epsilon, sigma is calibrated once, up front, with the RDP accountant, so that the
    /// epsilon after all the epochs is at most the target. --resume continues an interrupted run
    /// and its ledger.
    Train(Box<cli::train::TrainArgs>),
    /// Make an Ed25519 key pair for signing certificates (secret key file mode 0600).
    Keygen(cli::keys::KeygenArgs),
    /// Signed privacy certificates: sign a run's release, verify a certificate.
    #[command(subcommand)]
    Cert(cli::cert::CertCommand),
    /// Audits: try to refute a privacy claim by experiment.
    ///
    /// Replays on adjacent datasets with a canary give an epsilon lower bound with its confidence
    /// and a verdict.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Private GANs (DP-GAN): train one, sample a labelled synthetic release with its provenance.
    #[command(subcommand)]
    Gan(cli::gan::GanCommand),
    /// Utility of released synthetic data (CAS, fid_mnist_classifier, real-vs-fake accuracy).
    #[command(subcommand)]
    Evaluate(cli::gan::EvaluateCommand),
    /// The compliance report of a release (HTML, Markdown or JSON).
    ///
    /// The claim in words, the audits' verdict, the certificate's key id, how epsilon was computed, epsilon over training, utility, audit ROCs,
    /// limitations and how to reproduce. One self-contained HTML file (or --format markdown|json),
    /// written atomically; refuses to overwrite without --force.
    Report(Box<cli::report::ReportArgs>),
    /// The whole pre-release audit in one command, on the bundled data.
    ///
    /// On the bundled data (or real MNIST with --full): DP-SGD to a target epsilon; every accountant from the ledger; a white-box replay
    /// audit and a loss-threshold membership inference; a DP-GAN and a synthetic release with its
    /// nearest-neighbour screen; a signed, verified certificate per release; the HTML compliance
    /// reports. Prints where everything is; demo.json lists every path and number.
    Demo(Box<cli::demo::DemoArgs>),
    /// Import a model trained elsewhere (Opacus, JAX, TF Privacy) with its privacy history.
    ///
    /// Makes a run folder that `cert sign` and `report` can certify and report. Epsilon is then
    /// recomputed from the history by dpaudit's accountants; the certificate and the report say
    /// that the training code was not dpaudit's.
    Import(Box<cli::import::ImportArgs>),
    /// Attacks: membership inference and nearest-neighbour attacks (evidence, not bounds).
    ///
    /// Membership inference against a training recipe (loss threshold, LiRA with shadow models)
    /// and nearest-neighbour attacks on released synthetic data.
    #[command(subcommand)]
    Attack(cli::attack::AttackCommand),
}

fn main() {
    // Die quietly on a closed pipe (`dpaudit ... | head`), as command-line tools do, instead of
    // panicking on the next print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(stale) = check_same_build() {
        eprintln!("error: {stale}");
        std::process::exit(2);
    }
    let args = match cli::train::expand_train_config(std::env::args_os().collect())
        .and_then(cli::gan::expand_gan_train_config)
    {
        Ok(a) => a,
        Err(err) => {
            eprintln!("error: {}", cli::error_chain(&err));
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {}", cli::error_chain(&err));
            std::process::exit(cli::exit_status_of(&err));
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Account(cmd) => cli::account::run(cmd),
        Command::Data(cmd) => cli::data::run(cmd),
        Command::Train(args) => cli::train::train(&args).map(|()| 0),
        Command::Attack(cmd) => cli::attack::run(cmd),
        Command::Gan(cmd) => cli::gan::run(cmd).map(|()| 0),
        Command::Evaluate(cmd) => cli::gan::run_evaluate(cmd).map(|()| 0),
        Command::Report(args) => cli::report::run(&args).map(|()| 0),
        Command::Import(args) => cli::import::run(&args).map(|()| 0),
        Command::Demo(args) => cli::demo::run(&args).map(|()| 0),
        Command::Audit(cmd) => cli::audit::run(cmd),
        Command::Keygen(args) => cli::keys::keygen(&args),
        Command::Cert(cmd) => cli::cert::run(cmd),
    }
}

/// The front binary passes its build id in this variable; a `dpaudit-torch` from another build
/// (the front rebuilt alone, as `cargo run` does) refuses to run instead of running old code.
const BUILD_ID_VARIABLE: &str = "DPAUDIT_BUILD_ID";

fn check_same_build() -> std::result::Result<(), String> {
    match std::env::var(BUILD_ID_VARIABLE) {
        Ok(front) if front != env!("DPAUDIT_BUILD_ID") => Err(format!(
            "this dpaudit-torch ({}) is from another build than the dpaudit that called it; run `cargo build` (it builds both binaries)",
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()
        )),
        _ => Ok(()),
    }
}
