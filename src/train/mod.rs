//! Training with differential privacy: per-example gradients and clipping, models, noise, lot
//! sampling and DP-PCA.
pub mod adversarial;
pub mod dpsgd;
pub mod fault;
pub mod mechanism;
pub mod models;
pub mod noise;
pub mod optim;
pub mod pca;
pub mod per_example;
pub mod run;
pub mod sampling;
pub mod scattering;
pub mod streams;
