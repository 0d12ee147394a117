//! The private GAN: a labelled synthetic dataset whose release is differentially private with
//! respect to the training set (DP-GAN), and what that dataset is worth.
//!
//! - [`networks`]: the conditional DCGAN-style generator (BatchNorm; never sees private data) and
//!   discriminator (GroupNorm; a [`crate::train::per_example::Sequential`]), one `VarStore` each.
//! - [`dpgan`]: the private discriminator step (designs (a) and (b)), the trainer; every
//!   discriminator step goes into the ledger before its update, generator steps are free.
//! - [`noise_layer`]: the seed paper's Gaussian noise layer (Triastcyn & Faltings 2018), whose
//!   epsilon is only *claimed*.
//! - [`run`]: `dpaudit gan train` (run folder, per-epoch losses and sample grids, metrics.json).
//! - [`release`]: `dpaudit gan sample` (IDX files, grid.png, release.json with provenance).
//! - [`evaluation`]: CAS, `fid_mnist_classifier`, real-vs-fake accuracy.
//! - [`image`]: sample grids as PNG.
//!
//! Proofs: `proofs/gan/design_a_real_term.md`, `proofs/gan/design_b_joint_clipping.md`.
pub mod dpgan;
pub mod evaluation;
pub mod image;
pub mod networks;
pub mod noise_layer;
pub mod release;
pub mod run;

pub use dpgan::{private_discriminator_gradient, Design, DpGan, GanConfig};
