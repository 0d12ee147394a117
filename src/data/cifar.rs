//! CIFAR-10's binary format (`cifar-10-batches-bin`): each batch file is a sequence of 3,073-byte
//! records, one label byte (0..=9) followed by 3,072 pixel bytes (1,024 red, then green, then blue,
//! each 32 x 32 row-major). The training set is `data_batch_1.bin` .. `data_batch_5.bin`, the test
//! set `test_batch.bin`.
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, ImageShape, Split};
use super::idx::write_atomically;
use crate::error::{Error, Result};

/// CIFAR-10's image shape.
pub const CIFAR10_SHAPE: ImageShape = ImageShape { channels: 3, height: 32, width: 32 };
/// Bytes per CIFAR-10 record: one label byte and 3 x 32 x 32 pixels.
pub const CIFAR10_RECORD: usize = 1 + 3 * 32 * 32;
/// CIFAR-10's number of classes.
pub const CIFAR10_CLASSES: usize = 10;

/// The batch file names of a split, in load order.
pub fn cifar10_batch_names(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => {
            &["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
        }
        Split::Test => &["test_batch.bin"],
    }
}

/// Parses one CIFAR-10 binary batch, appending to `pixels` and `labels`; `path` names the file in
/// errors.
///
/// # Errors
/// [`Error::Data`] if the length is zero or not a multiple of 3,073 bytes (stating how many
/// complete records there are and how many bytes are left over), or a label is not below 10.
pub fn parse_cifar10_batch(bytes: &[u8], path: &Path, pixels: &mut Vec<u8>, labels: &mut Vec<u8>) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::data(path, "empty CIFAR-10 batch file"));
    }
    if !bytes.len().is_multiple_of(CIFAR10_RECORD) {
        return Err(Error::data(
            path,
            format!(
                "length {} is not a multiple of the {CIFAR10_RECORD}-byte CIFAR-10 record: {} complete records and {} bytes left over",
                bytes.len(),
                bytes.len() / CIFAR10_RECORD,
                bytes.len() % CIFAR10_RECORD
            ),
        ));
    }
    pixels.reserve(bytes.len() / CIFAR10_RECORD * (CIFAR10_RECORD - 1));
    for (i, rec) in bytes.chunks_exact(CIFAR10_RECORD).enumerate() {
        if rec[0] as usize >= CIFAR10_CLASSES {
            return Err(Error::data(path, format!("record {i} has label {}, not below {CIFAR10_CLASSES}", rec[0])));
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// Loads one split of a CIFAR-10 binary directory (`cifar-10-batches-bin`).
///
/// # Errors
/// [`Error::Data`] if a batch file is missing or malformed (see [`parse_cifar10_batch`]);
/// [`Error::Io`] if one cannot be read.
pub fn load_cifar10_dir(dir: &Path, split: Split) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut files = Vec::new();
    for name in cifar10_batch_names(split) {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::data(dir, format!("CIFAR-10 batch {name} is missing")));
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        parse_cifar10_batch(&bytes, &path, &mut pixels, &mut labels)?;
        files.push(path);
    }
    let name = match split {
        Split::Train => "cifar10/train",
        Split::Test => "cifar10/test",
    };
    Ok(Dataset::new(name, CIFAR10_SHAPE, CIFAR10_CLASSES, pixels, labels)?.with_source_files(files))
}

/// The CIFAR-10 binary records of a dataset (for writing fixtures or synthetic releases).
///
/// # Errors
/// [`Error::InvalidParameter`] if the dataset is not 3 x 32 x 32 with at most 10 classes.
pub fn encode_cifar10_batch(data: &Dataset) -> Result<Vec<u8>> {
    if data.shape() != CIFAR10_SHAPE || data.classes() > CIFAR10_CLASSES {
        return Err(Error::invalid(
            "dataset",
            data.name(),
            format!(
                "CIFAR-10 records hold 3x32x32 images and labels below 10; got {:?}, {} classes",
                data.shape(),
                data.classes()
            ),
        ));
    }
    let mut out = Vec::with_capacity(data.len() * CIFAR10_RECORD);
    for i in 0..data.len() {
        out.push(data.label(i));
        out.extend_from_slice(data.image(i));
    }
    Ok(out)
}

/// Writes a dataset as one CIFAR-10 batch file, atomically.
///
/// # Errors
/// As [`encode_cifar10_batch`], plus [`Error::Io`] if writing fails.
pub fn write_cifar10_batch(path: &Path, data: &Dataset) -> Result<PathBuf> {
    write_atomically(path, &encode_cifar10_batch(data)?)?;
    Ok(path.to_path_buf())
}
