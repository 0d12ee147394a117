//! The folders dpaudit writes and reads, and the names of every file in them, in one place: a
//! training run (`dpaudit train`), a DP-GAN run (`dpaudit gan train`), a synthetic release
//! (`dpaudit gan sample`), an imported run (`dpaudit import`), an audit (`dpaudit audit run`) and
//! a membership-inference experiment (`dpaudit attack mia`).
//!
//! Other modules name files only through these constants, so a certificate verifier, a report or
//! a user's own code reads a folder without linking the code that wrote it. The ledger of any of
//! them is read, without changing it, by [`crate::accounting::ledger::read_ledger`].
//!
//! The manifests (`metrics.json`, `release.json`) are typed and versioned in [`manifest`]; what
//! a run folder's files say is cross-checked by [`check_consistency`].

/// A run's metrics (`metrics.json`): parameters, accuracy, epsilons, hashes of data and model.
pub const METRICS_FILE: &str = "metrics.json";
/// A training run's recipe (`dpaudit train --config` reads it back to train the same recipe).
pub const RECIPE_FILE: &str = "recipe.toml";
/// The privacy ledger: one fsynced JSON line per noisy step, written before the step's update.
pub const LEDGER_FILE: &str = "ledger.jsonl";
/// A trained classifier's parameters (the default released artifact).
pub const MODEL_FILE: &str = "model.safetensors";
/// The DP-PCA projection of an `abadi-pca` run (released with the model).
pub const PCA_FILE: &str = "pca.safetensors";
/// The pointer to the latest complete checkpoint of a training run.
pub const CHECKPOINT_POINTER: &str = "checkpoint.json";
/// A DP-GAN's generator parameters.
pub const GENERATOR_FILE: &str = "generator.safetensors";
/// A DP-GAN's discriminator parameters.
pub const DISCRIMINATOR_FILE: &str = "discriminator.safetensors";
/// A DP-GAN run's configuration and design.
pub const GAN_FILE: &str = "gan.json";
/// A synthetic release's manifest (its files, their hashes, the run it came from).
pub const RELEASE_FILE: &str = "release.json";
/// An imported run's privacy history, as the external trainer reported it (kept verbatim).
pub const HISTORY_FILE: &str = "privacy-history.json";
/// An audit's or membership-inference experiment's spec and digest.
pub const SPEC_FILE: &str = "spec.json";
/// An audit's or membership-inference experiment's run records (one fsynced JSON line each).
pub const RUNS_FILE: &str = "runs.jsonl";
/// An audit's analysis (`dpaudit audit run`).
pub const AUDIT_FILE: &str = "audit.json";
/// A membership-inference experiment's analysis (`dpaudit attack mia`).
pub const MIA_REPORT_FILE: &str = "mia.json";

pub mod consistency;
pub mod manifest;

pub use consistency::check_consistency;
