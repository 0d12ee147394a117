//! # dpaudit-core
//!
//! The layers of [dpaudit](https://crates.io/crates/dpaudit) that need no libtorch: a data office
//! verifies a certificate, recomputes an epsilon or renders a report with this crate alone. The
//! `dpaudit` crate re-exports every module under the same path (`dpaudit_core::accounting`, ...).
//!
//! - [`accounting`]: RDP and PLD accountants, cross-checked against an MPFR oracle; the ledger.
//! - [`audit`]: Clopper–Pearson bounds of attack outcomes and ROC points.
//! - [`cert`]: Ed25519-signed privacy certificates (domain-separated signing, distinct exit codes).
//! - [`durable`]: atomic, fsynced writes and size-capped reads.
//! - [`error`]: the one error type.
//! - [`experiment`]: the one sharded experiment runner (audits, membership inference).
//! - [`folder_lock`]: one writing process per run or audit folder.
//! - [`imported`]: runs trained elsewhere, with their imported privacy history.
//! - [`noise_seeding`]: whether a run's noise can be regenerated.
//! - [`report`]: the compliance report (HTML, Markdown, JSON).
//! - [`run_folder`]: the names of every file in the folders dpaudit writes.
#![warn(missing_docs)]
// `!(x > 0.0)` is how this crate refuses NaN along with out-of-range values; `x <= 0.0` would let
// NaN through, so the lint's suggestion is wrong here.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod accounting;
pub mod audit;
pub mod cert;
pub mod durable;
pub mod error;
pub mod experiment;
pub mod folder_lock;
pub mod imported;
pub mod noise_seeding;
pub mod report;
pub mod run_folder;

pub use error::{Error, Result};
