//! The in-memory [`Dataset`] (u8 pixels in `n x channels x height x width` order, u8 labels) and
//! its loader for MNIST-format directories. CIFAR-10 and SVHN loaders live in their own modules and
//! build the same type.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::idx::{read_idx, write_idx, IdxArray};
pub use crate::durable::{sha256_file, sha256_hex};
use crate::error::{Error, Result};

/// Which half of a dataset's standard split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training set (MNIST: `train-*`; CIFAR-10: `data_batch_1..5.bin`; SVHN: `train_32x32`).
    Train,
    /// The test set (MNIST: `t10k-*`; CIFAR-10: `test_batch.bin`; SVHN: `test_32x32`).
    Test,
}

impl Split {
    /// The MNIST file-name prefix for this split: `train` or `t10k`.
    pub fn mnist_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// The shape of one example: channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageShape {
    /// Colour channels (1 for MNIST, 3 for CIFAR-10 and SVHN).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// Bytes per example (`channels * height * width`), or `None` on overflow.
    pub fn pixels(&self) -> Option<usize> {
        self.channels.checked_mul(self.height)?.checked_mul(self.width)
    }
}

/// A labelled image dataset held in memory: `n` examples of `channels x height x width` u8 pixels
/// (channel-major within an example, as in CIFAR-10's binary format and PyTorch's `NCHW`), one u8
/// label per example, every label below `classes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    name: String,
    shape: ImageShape,
    classes: usize,
    pixels: Vec<u8>,
    labels: Vec<u8>,
    source_files: Vec<PathBuf>,
}

impl Dataset {
    /// A dataset from its parts, validated.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if a dimension or `classes` is zero, `classes > 256`, the pixel
    /// buffer is not `labels.len()` examples of `shape`, or a label is `>= classes`.
    ///
    /// # Examples
    /// ```
    /// use dpaudit::data::{Dataset, ImageShape};
    /// let shape = ImageShape { channels: 1, height: 2, width: 2 };
    /// let d = Dataset::new("tiny", shape, 10, vec![0, 1, 2, 3, 4, 5, 6, 7], vec![3, 9]).unwrap();
    /// assert_eq!((d.len(), d.image(1), d.label(1)), (2, &[4u8, 5, 6, 7][..], 9));
    /// assert!(Dataset::new("bad", shape, 9, vec![0; 8], vec![3, 9]).is_err());
    /// ```
    pub fn new(
        name: impl Into<String>,
        shape: ImageShape,
        classes: usize,
        pixels: Vec<u8>,
        labels: Vec<u8>,
    ) -> Result<Self> {
        if shape.channels == 0 || shape.height == 0 || shape.width == 0 {
            return Err(Error::invalid("image shape", format!("{shape:?}"), "every dimension must be positive"));
        }
        if classes == 0 || classes > 256 {
            return Err(Error::invalid("number of classes", classes, "must be in 1..=256 (labels are u8)"));
        }
        let per =
            shape.pixels().ok_or_else(|| Error::invalid("image shape", format!("{shape:?}"), "too many pixels"))?;
        if labels.len().checked_mul(per) != Some(pixels.len()) {
            return Err(Error::invalid(
                "pixel buffer length",
                pixels.len(),
                format!(
                    "{} labels of {per} pixels each need {} bytes",
                    labels.len(),
                    labels.len() as u128 * per as u128
                ),
            ));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(Error::invalid("label", l, format!("example {i}: labels must be below {classes} classes")));
        }
        Ok(Dataset { name: name.into(), shape, classes, pixels, labels, source_files: Vec::new() })
    }

    /// Records the files this dataset was loaded from (for [`Dataset::source_sha256`]).
    pub fn with_source_files(mut self, files: Vec<PathBuf>) -> Self {
        self.source_files = files;
        self
    }

    /// The dataset's name (e.g. `mnist/train`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The shape of one example.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }
    /// The number of classes; every label is below it.
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// All pixels, `len() x channels x height x width`, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }
    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
    /// The files the dataset was read from (empty for one built in memory).
    pub fn source_files(&self) -> &[PathBuf] {
        &self.source_files
    }

    /// The pixels of example `i`.
    ///
    /// # Panics
    /// If `i >= len()` (an index bug in the caller, like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        // `new` checked that this product does not overflow.
        let per = self.shape.channels * self.shape.height * self.shape.width;
        &self.pixels[i * per..(i + 1) * per]
    }

    /// The label of example `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// How many examples carry each label (`classes()` entries).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0usize; self.classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// The SHA-256 (hex) of the dataset's content, independent of file format and compression:
    /// `b"dpaudit-dataset-v1\0"`, then `n, channels, height, width, classes` as u64 little-endian,
    /// then the pixels, then the labels. Two datasets with equal content hash equal.
    pub fn content_sha256(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"dpaudit-dataset-v1\0");
        for v in [self.len(), self.shape.channels, self.shape.height, self.shape.width, self.classes] {
            h.update((v as u64).to_le_bytes());
        }
        h.update(&self.pixels);
        h.update(&self.labels);
        hex::encode(h.finalize())
    }

    /// The SHA-256 (hex) of each file the dataset was loaded from, as stored on disk.
    ///
    /// # Errors
    /// [`Error::Io`] if a file can no longer be read.
    pub fn source_sha256(&self) -> Result<Vec<(PathBuf, String)>> {
        self.source_files.iter().map(|p| Ok((p.clone(), sha256_file(p)?))).collect()
    }
}

/// Finds `dir/stem.gz` or, failing that, `dir/stem`.
fn find_maybe_gz(dir: &Path, stem: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(stem);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(Error::data(dir, format!("neither {stem}.gz nor {stem} is present")))
}

/// The image and label file paths of an MNIST-format directory's split (`.gz` preferred when both
/// exist).
///
/// # Errors
/// [`Error::Data`] naming the directory if either file is missing.
pub fn mnist_files(dir: &Path, split: Split) -> Result<(PathBuf, PathBuf)> {
    let p = split.mnist_prefix();
    Ok((find_maybe_gz(dir, &format!("{p}-images-idx3-ubyte"))?, find_maybe_gz(dir, &format!("{p}-labels-idx1-ubyte"))?))
}

/// Loads one split of an MNIST-format directory (MNIST, Fashion-MNIST, or anything written by
/// [`write_mnist_dir`]): `{train,t10k}-images-idx3-ubyte[.gz]` and `{train,t10k}-labels-idx1-ubyte[.gz]`.
/// `classes` is 10 for MNIST and Fashion-MNIST.
///
/// # Errors
/// [`Error::Data`] if a file is missing or malformed (see [`crate::data::idx::parse_idx`]), the
/// images are not `n x height x width`, the labels not `n`, the counts differ, or a label is
/// `>= classes`; [`Error::Io`] if a file cannot be read.
///
/// # Examples
/// ```
/// use dpaudit::data::{load_mnist_dir, Split};
/// let d = load_mnist_dir("fixtures/mnist-small".as_ref(), Split::Test, 10).unwrap();
/// assert_eq!((d.len(), d.shape().height, d.shape().width), (500, 28, 28));
/// ```
pub fn load_mnist_dir(dir: &Path, split: Split, classes: usize) -> Result<Dataset> {
    let (img_path, lbl_path) = mnist_files(dir, split)?;
    let images = read_idx(&img_path)?;
    let labels = read_idx(&lbl_path)?;
    let (idims, pixels) = images.into_parts();
    let (ldims, labels) = labels.into_parts();
    if idims.len() != 3 {
        return Err(Error::data(&img_path, format!("expected 3 dimensions (n, rows, cols), found {idims:?}")));
    }
    if ldims.len() != 1 {
        return Err(Error::data(&lbl_path, format!("expected 1 dimension (n), found {ldims:?}")));
    }
    if idims[0] != ldims[0] {
        return Err(Error::data(
            &lbl_path,
            format!("{} labels but {} has {} images", ldims[0], img_path.display(), idims[0]),
        ));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
        return Err(Error::data(&lbl_path, format!("label {l} of example {i} is not below {classes} classes")));
    }
    if idims[1] == 0 || idims[2] == 0 {
        return Err(Error::data(&img_path, format!("empty image dimensions {idims:?}")));
    }
    let name = format!(
        "{}/{}",
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "mnist-format".into()),
        split.mnist_prefix()
    );
    let shape = ImageShape { channels: 1, height: idims[1], width: idims[2] };
    Dataset::new(name, shape, classes, pixels, labels)
        .map_err(|e| Error::data(dir, e.to_string()))
        .map(|d| d.with_source_files(vec![img_path, lbl_path]))
}

/// One MNIST-format IDX file, checked as [`load_mnist_dir`] checks it inside a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MnistFile {
    /// An images file: `n x rows x cols`, every dimension at least 1.
    Images {
        /// Examples, rows, columns.
        dims: [usize; 3],
    },
    /// A labels file: `n` labels, each below the class count.
    Labels {
        /// Labels.
        examples: usize,
        /// How many labels of each class.
        class_counts: Vec<usize>,
    },
}

/// Reads one IDX file of an MNIST-format folder and checks it alone: images must be
/// `n x rows x cols` with no zero dimension, labels `n` values below `classes`, and neither empty.
///
/// # Errors
/// [`Error::Data`] for anything else (naming the file); I/O errors.
pub fn check_mnist_file(path: &Path, classes: usize) -> Result<MnistFile> {
    let (dims, data) = read_idx(path)?.into_parts();
    match *dims.as_slice() {
        [n, rows, cols] => {
            if n == 0 || rows == 0 || cols == 0 {
                return Err(Error::data(path, format!("images of dimensions {dims:?}: none may be zero")));
            }
            Ok(MnistFile::Images { dims: [n, rows, cols] })
        }
        [n] => {
            if n == 0 {
                return Err(Error::data(path, "no labels"));
            }
            let mut class_counts = vec![0; classes];
            for (i, &l) in data.iter().enumerate() {
                match class_counts.get_mut(l as usize) {
                    Some(c) => *c += 1,
                    None => {
                        return Err(Error::data(
                            path,
                            format!("label {l} of example {i} is not below {classes} classes"),
                        ))
                    }
                }
            }
            Ok(MnistFile::Labels { examples: n, class_counts })
        }
        _ => {
            Err(Error::data(path, format!("expected images (n, rows, cols) or labels (n), found dimensions {dims:?}")))
        }
    }
}

/// Writes a single-channel dataset as one split of an MNIST-format directory (gzip-compressed IDX,
/// atomic writes), e.g. for releasing synthetic data. Returns the two paths written.
///
/// # Errors
/// [`Error::InvalidParameter`] if the dataset has more than one channel; [`Error::Io`] if writing
/// fails.
pub fn write_mnist_dir(dir: &Path, split: Split, data: &Dataset) -> Result<(PathBuf, PathBuf)> {
    let s = data.shape();
    if s.channels != 1 {
        return Err(Error::invalid("channels", s.channels, "the MNIST format holds one channel"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let p = split.mnist_prefix();
    let img = dir.join(format!("{p}-images-idx3-ubyte.gz"));
    let lbl = dir.join(format!("{p}-labels-idx1-ubyte.gz"));
    write_idx(&img, &IdxArray::new(vec![data.len(), s.height, s.width], data.pixels().to_vec())?, true)?;
    write_idx(&lbl, &IdxArray::new(vec![data.len()], data.labels().to_vec())?, true)?;
    Ok((img, lbl))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ImageShape = ImageShape { channels: 1, height: 1, width: 2 };

    #[test]
    fn new_validates_every_part() {
        assert!(Dataset::new("ok", SHAPE, 3, vec![1, 2, 3, 4], vec![0, 2]).is_ok());
        assert!(Dataset::new("len", SHAPE, 3, vec![1, 2, 3], vec![0, 2]).is_err());
        assert!(Dataset::new("label", SHAPE, 2, vec![1, 2, 3, 4], vec![0, 2]).is_err());
        assert!(Dataset::new("classes", SHAPE, 0, vec![], vec![]).is_err());
        assert!(Dataset::new("classes", SHAPE, 257, vec![], vec![]).is_err());
        let zero = ImageShape { channels: 1, height: 0, width: 2 };
        assert!(Dataset::new("shape", zero, 3, vec![], vec![]).is_err());
        let huge = ImageShape { channels: usize::MAX, height: 2, width: 2 };
        assert!(Dataset::new("overflow", huge, 3, vec![], vec![]).is_err());
    }

    #[test]
    fn content_hash_depends_on_content_and_shape_only() {
        let a = Dataset::new("a", SHAPE, 3, vec![1, 2, 3, 4], vec![0, 2]).unwrap();
        let b = Dataset::new("b", SHAPE, 3, vec![1, 2, 3, 4], vec![0, 2]).unwrap();
        assert_eq!(a.content_sha256(), b.content_sha256());
        let c = Dataset::new("c", SHAPE, 3, vec![1, 2, 3, 4], vec![0, 1]).unwrap();
        assert_ne!(a.content_sha256(), c.content_sha256());
        let transposed = ImageShape { channels: 1, height: 2, width: 1 };
        let d = Dataset::new("d", transposed, 3, vec![1, 2, 3, 4], vec![0, 2]).unwrap();
        assert_ne!(a.content_sha256(), d.content_sha256());
    }
}
