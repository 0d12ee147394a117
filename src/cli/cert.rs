//! `dpaudit cert sign`: sign a run's or a release's certificate (`cert verify` is in `keys.rs`).
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use dpaudit::train::dpsgd::TrainConfig;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum CertCommand {
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
        /// Delta of the certified epsilons (default: the delta the run's metrics.json reports
        /// its epsilons at, else 1e-5; as `dpaudit report`).
        #[arg(long, short = 'd', allow_negative_numbers = true)]
        delta: Option<f64>,
        /// An audit folder (from `dpaudit audit run`) of this run's recipe, recorded in the
        /// certificate (repeatable). A violated audit, or one of another recipe, is refused.
        #[arg(long = "audit", value_name = "DIR")]
        audits: Vec<PathBuf>,
        /// Certify a run trained with an explicit --seed (reproducible noise). The certificate
        /// and any report of it then say in plain words that it is not fit for release: its
        /// noise can be regenerated from the seed.
        #[arg(long)]
        allow_seeded_noise: bool,
        /// Print what was signed as JSON (certificate path, key id, noise seeding, external
        /// training) instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Verify a certificate. Exit codes: 0 valid; 2 unreadable input; 3 bad signature or wrong
    /// key; 4 claim does not reproduce (or a violated audit); 5 artifact missing or mismatched.
    Verify(super::keys::VerifyArgs),
}

/// Adds the flag that overrides a refusal of seeded noise (library errors never name flags).
pub fn seeded_noise_hint(e: anyhow::Error) -> anyhow::Error {
    if e.chain().any(|c| c.to_string().contains("reproducible noise")) {
        e.context("to certify a run whose noise may be reproducible anyway (it is then marked not fit for release), give --allow-seeded-noise")
    } else {
        e
    }
}

/// `cert sign --json`: what was signed, for scripts.
fn print_signed(out: &Path, signed: &dpaudit::cert::SignedCertificate) -> Result<i32> {
    let c = &signed.certificate;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "certificate": out,
            "key_id": signed.signature.key_id,
            "status": c.status,
            "verified_epsilon": c.privacy.verified_epsilon.epsilon,
            "delta": c.privacy.delta,
            "noise_seeding": c.noise_seeding,
            "external_training": c.external_training,
            "artifacts": c.artifact.files,
        }))?
    );
    Ok(0)
}

/// `--delta`, else the delta the run's `metrics.json` reports its epsilons at, else
/// [`dpaudit::report::DEFAULT_DELTA`]: the same default as `dpaudit report`, so that a report and
/// the certificate it shows speak of one delta.
fn delta_of(run: &std::path::Path, delta: Option<f64>) -> Result<f64> {
    if let Some(d) = delta {
        return Ok(d);
    }
    let (metrics, _) = dpaudit::run_folder::manifest::RunMetrics::read(run)
        .with_context(|| format!("reading the delta of {}", run.display()))?;
    Ok(metrics.summary().delta().unwrap_or(dpaudit::report::DEFAULT_DELTA))
}

/// Runs `dpaudit cert`; returns the exit status (`cert verify`'s are documented on `Verify`).
pub fn run(cmd: CertCommand) -> Result<i32> {
    match cmd {
        CertCommand::Sign { run, release: Some(release), key, out, delta, audits, allow_seeded_noise, json } => {
            if !audits.is_empty() {
                bail!("--audit is for model runs; audits of a synthetic-data release are not recorded in its certificate yet");
            }
            let run = match run {
                Some(r) => r,
                None => dpaudit::gan::release::release_run_dir(&release)
                    .with_context(|| format!("finding the GAN run of {}", release.display()))?,
            };
            let mut opts = dpaudit::cert::sign::CertifyOptions::model(delta_of(&run, delta)?);
            opts.kind = dpaudit::cert::schema::ArtifactKind::SyntheticDataset;
            opts.allow_seeded_noise = allow_seeded_noise;
            let signed = dpaudit::cert::sign::sign_release(&release, &run, &opts, &key, &out)
                .with_context(|| format!("certifying the release {} of {}", release.display(), run.display()))
                .map_err(seeded_noise_hint)?;
            if json {
                return print_signed(&out, &signed);
            }
            println!(
                "signed {} with key {} (synthetic dataset {}, {} files)",
                out.display(),
                signed.signature.key_id,
                release.display(),
                signed.certificate.artifact.files.len()
            );
            Ok(0)
        }
        CertCommand::Sign { run, release: None, key, out, delta, audits, allow_seeded_noise, json } => {
            let run = run.context("--run is required")?;
            let mut opts = dpaudit::cert::sign::CertifyOptions::model(delta_of(&run, delta)?);
            opts.allow_seeded_noise = allow_seeded_noise;
            if !audits.is_empty() {
                let metrics_path = run.join(dpaudit::run_folder::METRICS_FILE);
                let (metrics, bytes) = dpaudit::run_folder::manifest::RunMetrics::read(&run)?;
                let imported = metrics.imported();
                for dir in &audits {
                    let report = dpaudit::audit::engine::read_report(dir)
                        .with_context(|| format!("reading the audit in {}", dir.display()))?;
                    let record = match imported {
                        Some(p) => {
                            let (history, _) = dpaudit::imported::PrivacyHistory::load(&run.join(&p.history_file))?;
                            report.cert_record_for_imported(&history)
                        }
                        None => {
                            let m: dpaudit::run_folder::manifest::TrainMetrics<TrainConfig> =
                                serde_json::from_slice(&bytes)
                                    .with_context(|| format!("the config in {}", metrics_path.display()))?;
                            report.cert_record_for(&m.config)
                        }
                    };
                    opts.audits.push(record.with_context(|| format!("recording the audit in {}", dir.display()))?);
                }
            }
            let signed = dpaudit::cert::sign::sign_run(&run, &opts, &key, &out)
                .with_context(|| format!("certifying {}", run.display()))
                .map_err(seeded_noise_hint)?;
            if json {
                return print_signed(&out, &signed);
            }
            println!("signed {} with key {}", out.display(), signed.signature.key_id);
            if signed.certificate.noise_seeding == Some(dpaudit::train::noise::NoiseSeeding::Seeded) {
                println!("  {}", dpaudit::train::noise::SEEDED_NOISE_WARNING);
            }
            Ok(0)
        }
        CertCommand::Verify(args) => super::keys::verify(&args),
    }
}
