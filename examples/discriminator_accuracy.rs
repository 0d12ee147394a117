//! How well a classifier-conditioned DP-GAN's final discriminator reads digits: its accuracy on
//! a real dataset, as the argmax of its 10 real-class logits (the reading `gan sample --labels
//! discriminator` gives each released image). It puts a release's CAS beside the accuracy of the
//! private classifier that labelled it.
//!
//! `cargo run --release --example discriminator_accuracy -- RUN_DIR DATA_DIR [test|train]`
//! prints one JSON line: the run, the split, the examples read and the accuracy. The
//! discriminator is part of the run's private output (covered by its epsilon); the real data read
//! here is not released.
use dpaudit::data::{load_mnist_dir, Split};
use dpaudit::gan::release::{load_discriminator, load_generator, relabel_by_discriminator};
use std::path::PathBuf;
use tch::Device;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 3, "usage: discriminator_accuracy RUN_DIR DATA_DIR [test|train]");
    let run = PathBuf::from(&args[1]);
    let split = match args.get(3).map(String::as_str) {
        None | Some("test") => Split::Test,
        Some("train") => Split::Train,
        Some(other) => anyhow::bail!("split must be test or train, not {other}"),
    };
    let data = load_mnist_dir(&PathBuf::from(&args[2]), split, 10)?;
    let (_, info) = load_generator(&run, Device::Cpu)?;
    let d = load_discriminator(&run, &info, Device::Cpu)?;
    // The agreement of the discriminator's labels with the true ones is its accuracy.
    let (_, accuracy) = relabel_by_discriminator(&data, &d)?;
    println!(
        "{}",
        serde_json::json!({ "run": run.display().to_string(), "split": format!("{split:?}").to_lowercase(), "examples": data.len(), "accuracy": accuracy })
    );
    Ok(())
}
