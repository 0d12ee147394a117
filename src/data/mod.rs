//! Datasets: reading and writing the IDX (MNIST) format, loading MNIST-format, CIFAR-10 and SVHN
//! datasets into a plain [`Dataset`], and fetching verified copies of MNIST and Fashion-MNIST.
//!
//! - [`idx`]: the IDX reader/writer (gzip or raw), validating every byte count.
//! - [`dataset`]: [`Dataset`], [`Split`], the MNIST-directory loader, SHA-256 helpers.
//! - [`cifar`]: CIFAR-10's binary batch format.
//! - [`svhn`]: SVHN's MATLAB v5 `.mat` files.
//! - [`pickle`]: a restricted pickle reader for numpy arrays (no code execution).
//! - [`fetch`]: download/convert/verify MNIST and Fashion-MNIST into a directory, atomically.
pub mod cifar;
pub mod dataset;
pub mod fetch;
pub mod idx;
pub mod pickle;
pub mod svhn;

pub use cifar::load_cifar10_dir;
pub use dataset::{
    check_mnist_file, load_mnist_dir, mnist_files, sha256_file, sha256_hex, write_mnist_dir, Dataset, ImageShape,
    MnistFile, Split,
};
pub use fetch::{fetch, verify_dir, DatasetName, FetchEvent, FetchOptions, FetchReport, FetchedFile, FileStatus};
pub use idx::{read_idx, write_idx, IdxArray};
pub use svhn::load_svhn_mat;
