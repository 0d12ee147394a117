//! `dpaudit keygen` and `dpaudit cert verify`: what a data office needs to check a certificate,
//! with no libtorch. (Compiled into the `dpaudit` front binary and into `dpaudit-torch`.)
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

/// `dpaudit keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// Folder for dpaudit-cert.key (secret) and dpaudit-cert.pub (public); created if missing.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the key id and the two paths as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dpaudit cert verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The certificate file.
    pub cert: PathBuf,
    /// The signer's public key file.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// The folder holding the released files: check their SHA-256.
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Re-derive epsilon from the recorded mechanism with the MPFR oracle and refuse a claim
    /// below it.
    #[arg(long)]
    pub recompute: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `dpaudit keygen`.
pub fn keygen(args: &KeygenArgs) -> Result<i32> {
    let (out, json) = (&args.out, args.json);
    let k = dpaudit_core::cert::keys::generate_keypair(out)
        .with_context(|| format!("writing keys into {}", out.display()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "key_id": k.key_id, "public_key": k.public_key_path, "secret_key": k.secret_key_path,
            }))?
        );
        return Ok(0);
    }
    println!(
        "key id {}\n  public key: {}\n  secret key: {} (mode 0600; keep it private)",
        k.key_id,
        k.public_key_path.display(),
        k.secret_key_path.display()
    );
    Ok(0)
}

/// Runs `dpaudit cert verify`; returns its exit status (0 valid, 3-5 the failures of
/// [`dpaudit_core::cert::verify::VerifyFailure::exit_code`]).
pub fn verify(args: &VerifyArgs) -> Result<i32> {
    let VerifyArgs { cert, pubkey, artifacts, recompute, json } = args;
    match dpaudit_core::cert::verify::verify(cert, pubkey, artifacts.as_deref(), *recompute) {
        Ok(report) => {
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"valid": true, "key_id": report.key_id,
                    "artifacts_checked": report.artifacts_checked, "recomputed_epsilon": report.recomputed_epsilon,
                    "noise_seeding": report.certificate.noise_seeding,
                    "external_training": report.certificate.external_training}))?
                );
            } else {
                if report.certificate.noise_seeding == Some(dpaudit_core::noise_seeding::NoiseSeeding::Seeded) {
                    println!("warning: the certified run is {}", dpaudit_core::noise_seeding::SEEDED_NOISE_WARNING);
                }
                println!(
                    "valid: signature by key {}; {} artifact(s) checked{}",
                    report.key_id,
                    report.artifacts_checked.len(),
                    if *recompute { "; epsilon re-derived with the MPFR oracle and not below the claim" } else { "" }
                );
                if let Some(x) = &report.certificate.external_training {
                    println!(
                        "note: the training code was not dpaudit's ({}); its epsilon was recomputed from the history the trainer reported ({})",
                        x.trainer, x.history.path
                    );
                }
            }
            Ok(0)
        }
        Err(failure) => {
            eprintln!("invalid certificate: {failure}");
            Ok(failure.exit_code())
        }
    }
}
