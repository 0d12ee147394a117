//! # dpaudit
//!
//! Train neural networks with differential privacy, then prove and test what that privacy is
//! worth. The command-line tool `dpaudit` is a thin layer over this library.
//!
//! - [`accounting`]: RDP and PLD accountants, cross-checked against an MPFR oracle.
//! - [`attack`]: membership inference (loss threshold, LiRA) and nearest-neighbour attacks.
//! - [`audit`]: empirical epsilon lower bounds from attack outcomes (Clopper–Pearson).
//! - [`data`]: IDX (MNIST-format) reading and dataset fetching.
//! - [`device`]: the CPU or a CUDA device, only when asked for.
//! - [`experiment`]: the one sharded experiment runner (audits, membership inference): spec check,
//!   fsynced records, resume, shards, the worker pool, merge.
//! - [`folder_lock`]: one writing process per run or audit folder.
//! - [`gan`]: the private GAN (DP-GAN) for synthetic data releases, and their evaluation.
//! - [`recipe`]: the training recipe (`recipe.toml`) and its resolver, which calibrates sigma once.
//! - [`run_folder`]: the names of every file in the folders dpaudit writes.
//! - [`report`]: the compliance report (HTML, Markdown, JSON) of a run, its audits and certificate.
//! - [`torch_rng`]: the lock on libtorch's process-wide random generator (seeded builds).
//! - [`train`]: DP-SGD's per-example gradients and clipping, models, noise, sampling.
#![warn(missing_docs)]
// `!(x > 0.0)` is how this crate refuses NaN along with out-of-range values; `x <= 0.0` would let
// NaN through, so the lint's suggestion is wrong here.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub use dpaudit_core::{
    accounting, cert, durable, error, experiment, folder_lock, imported, noise_seeding, report, run_folder,
};

pub mod attack;
pub mod audit;
pub mod data;
pub mod demo;
pub mod device;
pub mod gan;
pub mod recipe;
#[cfg(feature = "testing")]
pub mod testing;
pub mod torch_rng;
pub mod train;

pub use error::{Error, Result};
