//! The library's one error type. The CLI adds context with `anyhow`; library code never panics on
//! user input (a panic in privacy code loses work and can leak).
use std::path::PathBuf;

/// Everything that can go wrong in dpaudit's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter outside its domain (q outside (0, 1], sigma <= 0, delta outside (0, 1), NaN...).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name as the user knows it (e.g. `sampling rate q`).
        name: &'static str,
        /// The offending value, as text.
        value: String,
        /// What the parameter must be.
        reason: String,
    },
    /// A data file that is truncated, corrupt or of the wrong shape.
    #[error("{}: {reason}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Two files of one folder disagree about a field that certificates and reports rely on
    /// (for example `metrics.json` and `ledger.jsonl` about the noise multiplier).
    #[error("{0}")]
    Inconsistent(Box<Inconsistency>),
    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What dpaudit was doing (names the file).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A numerical computation that cannot return a trustworthy value (overflow, no convergence).
    /// Privacy code returns this instead of a number that might be too small.
    #[error("numerical failure in {what}: {reason}")]
    Numerical {
        /// The computation.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// libtorch reported an error (shape mismatch, out of memory, unsupported operation...), as
    /// its text: the type is libtorch-free so that this crate never links libtorch.
    #[error("libtorch: {0}")]
    Torch(String),
    /// Fetching a dataset failed (network, archive layout, checksum).
    #[error("fetching {what} failed: {reason}")]
    Fetch {
        /// The dataset or file.
        what: String,
        /// Why.
        reason: String,
    },
    /// A CUDA device was asked for on a machine where libtorch sees no such device.
    #[error("{asked} was asked for, but {available}")]
    DeviceUnavailable {
        /// The device asked for (`cuda:0`, ...).
        asked: String,
        /// What libtorch sees (`no CUDA device is available`, `only 1 CUDA device(s) are available`).
        available: String,
    },
    /// Another process holds the folder's lock: it is writing the same run or audit folder.
    #[error("{} is being written by another dpaudit process{}; wait for it to finish, or use another folder", folder.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    FolderBusy {
        /// The folder.
        folder: PathBuf,
        /// The holder's process id, as recorded in the lock file (when it could be read).
        pid: Option<u32>,
    },
}

/// What two files of one folder say differently ([`Error::Inconsistent`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {first} says {field} {first_value} but {second} says {second_value}; the folder's files do not describe one run", folder.display())]
pub struct Inconsistency {
    /// The folder.
    pub folder: PathBuf,
    /// The field, in words (`noise multiplier`, `steps`, ...).
    pub field: &'static str,
    /// The first file (and where in it, e.g. `metrics.json`).
    pub first: String,
    /// What the first file says.
    pub first_value: String,
    /// The second file (and where in it, e.g. `ledger.jsonl step 7`).
    pub second: String,
    /// What the second file says.
    pub second_value: String,
}

/// `Result` with dpaudit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `?` on a libtorch call in the `dpaudit` crate. Inline, so that this crate's own object code
/// never refers to `tch` (the front binary, which needs no libtorch, then does not load it).
#[cfg(feature = "torch")]
impl From<tch::TchError> for Error {
    #[inline]
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e.to_string())
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn invalid(name: &'static str, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::InvalidParameter { name, value: value.to_string(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// Shorthand for [`Error::Data`].
    pub fn data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Data { path: path.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Numerical`].
    pub fn numerical(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Numerical { what, reason: reason.into() }
    }
}
