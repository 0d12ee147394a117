//! `dpaudit`, the one command users run. It starts in milliseconds because it does not link
//! libtorch: it runs the commands that need none itself (`account`, `keygen`, `cert verify`,
//! `report`) and hands every other command line, unchanged, to `dpaudit-torch` beside it (the
//! process is replaced with `exec`, so signals, exit statuses and `kill -9` reach the trainer).
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[path = "cli/account.rs"]
mod account;
#[path = "cli/common.rs"]
mod common;
#[path = "cli/keys.rs"]
mod keys;
#[path = "cli/report.rs"]
mod report;

/// The commands the front runs itself: the same argument types as `dpaudit-torch`'s.
#[derive(Parser)]
#[command(name = "dpaudit", version, about = "Train with differential privacy, then prove and test what the privacy is worth.", long_about = None)]
struct FrontCli {
    #[command(subcommand)]
    command: FrontCommand,
}

#[derive(Subcommand)]
enum FrontCommand {
    /// Privacy accounting for DP-SGD's Poisson-subsampled Gaussian mechanism.
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// Make an Ed25519 key pair for signing certificates (secret key file mode 0600).
    Keygen(keys::KeygenArgs),
    /// Signed privacy certificates: sign a run's release, verify a certificate.
    #[command(subcommand)]
    Cert(FrontCertCommand),
    /// The compliance report of a release (HTML, Markdown or JSON).
    Report(Box<report::ReportArgs>),
}

#[derive(Subcommand)]
enum FrontCertCommand {
    /// Verify a certificate. Exit codes: 0 valid; 2 unreadable input; 3 bad signature or wrong
    /// key; 4 claim does not reproduce (or a violated audit); 5 artifact missing or mismatched.
    Verify(keys::VerifyArgs),
}

/// Whether the front runs this command line itself.
fn runs_here(args: &[OsString]) -> bool {
    let word = |i: usize| args.get(i).and_then(|a| a.to_str());
    matches!(word(1), Some("account" | "keygen" | "report")) || (word(1) == Some("cert") && word(2) == Some("verify"))
}

fn main() {
    // Die quietly on a closed pipe (`dpaudit ... | head`), as command-line tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let result = if runs_here(&args) { run(FrontCli::parse_from(args)) } else { hand_over(&args[1..]) };
    match result {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {}", common::error_chain(&err));
            std::process::exit(common::exit_status_of(&err));
        }
    }
}

fn run(cli: FrontCli) -> Result<i32> {
    match cli.command {
        FrontCommand::Account(cmd) => account::run(cmd),
        FrontCommand::Keygen(args) => keys::keygen(&args),
        FrontCommand::Cert(FrontCertCommand::Verify(args)) => keys::verify(&args),
        FrontCommand::Report(args) => report::run(&args).map(|()| 0),
    }
}

/// Replaces this process with `dpaudit-torch` from the same folder, with the same arguments.
fn hand_over(args: &[OsString]) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().context("finding the dpaudit executable")?;
    let torch = me.with_file_name("dpaudit-torch");
    if !torch.is_file() {
        anyhow::bail!(
            "{} is missing: the commands that train need dpaudit-torch beside dpaudit (`cargo build` builds both)",
            torch.display()
        );
    }
    let err = std::process::Command::new(&torch)
        .arg0("dpaudit")
        .args(args)
        .env("DPAUDIT_BUILD_ID", env!("DPAUDIT_BUILD_ID"))
        .exec();
    Err(err).with_context(|| format!("starting {}", torch.display()))
}
