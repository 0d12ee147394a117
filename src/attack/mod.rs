//! Attacks on what a training run releases: membership inference against trained models
//! ([`mia`], [`shadows`]) and nearest-neighbour attacks on released synthetic data
//! ([`nearest_neighbour`]). Their figures are *evidence* about one recipe on one dataset, never a
//! privacy guarantee; a DP guarantee caps them (`TPR <= e^epsilon FPR + delta`), see
//! `proofs/attack/`.
//!
//! - [`metrics`]: ROC, AUC, TPR at low FPR;
//! - [`mia`]: the loss-threshold attack and LiRA's per-example Gaussian scores;
//! - [`shadows`]: the membership experiment: target and shadow models trained on random halves of
//!   a population, in parallel, resumable and sharded, analysed into `mia.json`;
//! - [`mia_command`]: the same experiment when an external trainer (a command) trains the models;
//! - [`nearest_neighbour`]: distances to closest records (a heuristic) and a GAN-Leaks-style
//!   membership attack (evidence), kept apart;
//! - [`plot`]: the log-log ROC as SVG.
pub mod metrics;
pub mod mia;
pub mod mia_command;
pub mod nearest_neighbour;
pub mod plot;
pub mod shadows;
