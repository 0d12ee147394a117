//! Audits: experiments that try to refute a privacy claim and report an empirical epsilon lower
//! bound with its confidence.
//!
//! - [`spec`]: the audit specification (`audits/*.toml`);
//! - [`replay`]: one training run on D or D' (the canary in), scored by the attack's statistic;
//! - [`external`]: trainers dpaudit did not write, run as commands (`docs/external-trainers.md`);
//! - [`engine`]: all runs on all cores, resumable and sharded, and the analysis into `audit.json`;
//! - [`from_scores`]: audits from scores produced anywhere (CSV, JSON lines, two files);
//! - [`bounds`]: Clopper–Pearson lower bounds from attack outcomes;
//! - [`gaussian`]: the Gaussian mechanism's exact curve: the ideal bound, thresholds fixed from
//!   the claim, and the Gaussian-DP estimate;
//! - [`power`]: before any run, the threshold fixed from the claim, the largest bound each
//!   threshold rule can report (its ceiling) and the smallest epsilon it would catch.
pub use dpaudit_core::audit::{bounds, RocPoint};
pub mod engine;
pub mod external;
pub mod from_scores;
pub mod gaussian;
pub mod power;
pub mod replay;
pub mod spec;
