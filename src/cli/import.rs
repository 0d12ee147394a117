//! `dpaudit import`: a run trained elsewhere (Opacus, JAX, TF Privacy, an adapter of
//! `docs/external-trainers.md`) made into a run folder that `cert sign` and `report` accept.
use anyhow::{Context, Result};
use clap::Args;
use dpaudit::imported::{import_run, ImportOptions, ImportedData};
use dpaudit::train::noise::NoiseSeeding;
use std::path::PathBuf;

/// Arguments of `dpaudit import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The trained model (safetensors), as released.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// The trainer's privacy history: a claim.json of docs/external-trainers.md, or Opacus'
    /// accountant history as JSON (`json.dump(privacy_engine.accountant.history, f)`: one
    /// [noise_multiplier, sample_rate, steps] per phase).
    #[arg(long, value_name = "FILE")]
    pub history: PathBuf,
    /// The training data, an MNIST-format folder dpaudit reads and hashes.
    #[arg(long, value_name = "DIR", required_unless_present = "data_sha256", conflicts_with = "data_sha256")]
    pub data: Option<PathBuf>,
    /// The training data's SHA-256 as you computed it, when dpaudit cannot read the data
    /// (recorded as stated by you).
    #[arg(long, value_name = "HEX")]
    pub data_sha256: Option<String>,
    /// The trainer's name and version (default: the history's `library`).
    #[arg(long)]
    pub trainer: Option<String>,
    /// The clipping norm, when the history does not give `max_grad_norm`.
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// How the trainer drew its noise, when the history does not say: `csprng` (a cryptographic
    /// generator, e.g. Opacus with secure_mode=True) or `seeded`. Unstated is treated as seeded
    /// by `cert sign` (not fit for release).
    #[arg(long, value_parser = ["csprng", "seeded"])]
    pub noise: Option<String>,
    /// The new run folder (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `dpaudit import`.
pub fn run(args: &ImportArgs) -> Result<()> {
    let data = match (&args.data, &args.data_sha256) {
        (Some(dir), _) => {
            let d = dpaudit::data::load_mnist_dir(dir, dpaudit::data::Split::Train, 10)
                .with_context(|| format!("reading the training data in {}", dir.display()))?;
            ImportedData::Dataset { content_sha256: d.content_sha256(), name: d.name().to_owned(), examples: d.len() }
        }
        (None, Some(h)) => ImportedData::Sha256(h.clone()),
        (None, None) => anyhow::bail!("give the training data (--data) or its hash (--data-sha256)"),
    };
    let options = ImportOptions {
        trainer: args.trainer.clone(),
        clipping_norm: args.max_grad_norm,
        noise_seeding: match args.noise.as_deref() {
            Some("csprng") => Some(NoiseSeeding::Csprng),
            Some(_) => Some(NoiseSeeding::Seeded),
            None => None,
        },
    };
    let p = import_run(&args.model, &args.history, &data, &options, &args.out)
        .with_context(|| format!("importing {} into {}", args.model.display(), args.out.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"run": args.out, "imported": p}))?);
    } else {
        println!("imported a run trained by {} into {}", p.trainer, args.out.display());
        if let Some(c) = &p.trainer_claim {
            println!("  the trainer claims epsilon {} at delta {} ({} accountant)", c.epsilon, c.delta, c.accountant);
        }
        println!("  next: dpaudit cert sign --run {} --key KEY --out CERT", args.out.display());
    }
    Ok(())
}
