//! The IDX format (LeCun's MNIST files): a 4-byte magic `0x00 0x00 TYPE NDIMS`, `NDIMS` big-endian
//! `u32` dimensions, then the elements in row-major order. Files may be gzip-compressed; the reader
//! detects gzip by its magic bytes `1f 8b`, not by the file name.
//!
//! The reader validates everything against the bytes actually present: it never trusts a header's
//! element count for an allocation, and a truncated, padded or corrupt file gives an
//! [`Error::Data`] naming the file and what is wrong. Only unsigned-byte elements (type `0x08`) are
//! supported, which covers every dataset dpaudit uses.
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::{Error, Result};

/// The IDX element-type byte for unsigned bytes, the only one dpaudit reads.
pub const IDX_TYPE_U8: u8 = 0x08;
/// The most dimensions the reader accepts (MNIST uses 1 for labels and 3 for images).
pub const MAX_IDX_DIMS: usize = 8;
/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Upper bound on the buffer reserved up front for a gzip stream's contents; beyond it the buffer
/// grows only as decompressed bytes actually arrive (so a corrupt header cannot force a huge
/// allocation).
const MAX_UPFRONT_RESERVE: usize = 64 << 20;

/// An IDX array of unsigned bytes: its dimensions and its elements in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    dims: Vec<usize>,
    data: Vec<u8>,
}

impl IdxArray {
    /// An array with the given dimensions and row-major elements.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if there are no dimensions or more than [`MAX_IDX_DIMS`], a
    /// dimension does not fit in the format's `u32`, or `data.len()` is not the product of `dims`.
    ///
    /// # Examples
    /// ```
    /// use dpaudit::data::idx::IdxArray;
    /// let labels = IdxArray::new(vec![3], vec![7, 2, 1]).unwrap();
    /// assert_eq!(labels.dims(), &[3]);
    /// assert!(IdxArray::new(vec![2, 2], vec![0; 3]).is_err());
    /// ```
    pub fn new(dims: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        if dims.is_empty() || dims.len() > MAX_IDX_DIMS {
            return Err(Error::invalid(
                "IDX dimensions",
                format!("{dims:?}"),
                format!("need between 1 and {MAX_IDX_DIMS} dimensions"),
            ));
        }
        if let Some(d) = dims.iter().find(|&&d| u32::try_from(d).is_err()) {
            return Err(Error::invalid("IDX dimension", d, "must fit in a u32"));
        }
        let count = element_count(&dims);
        if count != Some(data.len()) {
            return Err(Error::invalid(
                "IDX data length",
                data.len(),
                format!("dimensions {dims:?} need {} elements", describe_count(count)),
            ));
        }
        Ok(IdxArray { dims, data })
    }

    /// The dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Consumes the array, returning dimensions and elements.
    pub fn into_parts(self) -> (Vec<usize>, Vec<u8>) {
        (self.dims, self.data)
    }

    /// The file's bytes (uncompressed IDX): header followed by the elements.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 4 * self.dims.len() + self.data.len());
        // `new` guarantees 1..=MAX_IDX_DIMS dimensions, each fitting in a u32.
        out.extend_from_slice(&[0, 0, IDX_TYPE_U8, self.dims.len() as u8]);
        for &d in &self.dims {
            out.extend_from_slice(&(d as u32).to_be_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }
}

fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn describe_count(count: Option<usize>) -> String {
    match count {
        Some(c) => c.to_string(),
        None => "more than usize::MAX".to_string(),
    }
}

fn type_name(t: u8) -> &'static str {
    match t {
        0x08 => "u8",
        0x09 => "i8",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Reads an IDX file, gzip-compressed or raw.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Data`] (naming the file) if it is not valid
/// gzip, or the IDX content is malformed: see [`parse_idx`].
///
/// # Examples
/// ```no_run
/// use dpaudit::data::idx::read_idx;
/// let labels = read_idx("data/mnist/t10k-labels-idx1-ubyte.gz".as_ref())?;
/// assert_eq!(labels.dims(), &[10_000]);
/// # Ok::<(), dpaudit::Error>(())
/// ```
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if is_gzip(&bytes) {
        parse_idx_stream(MultiGzDecoder::new(&bytes[..]), path, true)
    } else {
        parse_idx(&bytes, path)
    }
}

/// The decompressed bytes of a file that may be gzip-compressed (raw files are returned as is).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Data`] if it starts with the gzip magic but is
/// not valid gzip.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| Error::data(path, format!("invalid gzip data: {e}")))?;
    Ok(out)
}

/// Parses uncompressed IDX bytes; `path` is only used in error messages.
///
/// # Errors
/// [`Error::Data`] naming `path` when: the file is empty or shorter than its header; the magic's
/// first two bytes are not zero; the element type is not `0x08` (u8); there are no dimensions or
/// more than [`MAX_IDX_DIMS`]; the product of the dimensions overflows; the element bytes after the
/// header are fewer (truncated) or more (trailing bytes) than the dimensions say.
///
/// # Examples
/// ```
/// use dpaudit::data::idx::parse_idx;
/// let bytes = [0, 0, 8, 1, 0, 0, 0, 2, 5, 9];
/// let a = parse_idx(&bytes, "labels".as_ref()).unwrap();
/// assert_eq!((a.dims(), a.data()), (&[2usize][..], &[5u8, 9][..]));
/// let err = parse_idx(&bytes[..9], "labels".as_ref()).unwrap_err();
/// assert!(err.to_string().contains("expected 2 element bytes after the header, found 1"));
/// ```
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    parse_idx_stream(bytes, path, false)
}

/// Parses IDX from a reader. Allocation is bounded by the bytes actually read, never by the header.
fn parse_idx_stream<R: Read>(mut reader: R, path: &Path, gzip: bool) -> Result<IdxArray> {
    let read_err = |e: std::io::Error| {
        if gzip {
            Error::data(path, format!("invalid gzip data: {e}"))
        } else {
            Error::io(format!("reading {}", path.display()), e)
        }
    };
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(read_err)?;
    if got == 0 {
        return Err(Error::data(path, "empty file (no IDX header)"));
    }
    if got < 4 {
        return Err(Error::data(path, format!("truncated IDX magic: {got} of 4 bytes")));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(Error::data(
            path,
            format!(
                "not an IDX file: magic number {:02x} {:02x} {:02x} {:02x} does not start with 00 00",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != IDX_TYPE_U8 {
        return Err(Error::data(
            path,
            format!(
                "IDX element type 0x{:02x} ({}) is not supported; dpaudit reads only unsigned bytes (0x08)",
                magic[2],
                type_name(magic[2])
            ),
        ));
    }
    let ndims = magic[3] as usize;
    if ndims == 0 || ndims > MAX_IDX_DIMS {
        return Err(Error::data(
            path,
            format!("IDX header has {ndims} dimensions; expected between 1 and {MAX_IDX_DIMS}"),
        ));
    }
    let mut dim_bytes = vec![0u8; 4 * ndims];
    let got = read_up_to(&mut reader, &mut dim_bytes).map_err(read_err)?;
    if got < dim_bytes.len() {
        return Err(Error::data(
            path,
            format!("truncated IDX header: {ndims} dimensions need {} bytes, found {got}", 4 * ndims),
        ));
    }
    let dims: Vec<usize> =
        dim_bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected = element_count(&dims).ok_or_else(|| {
        Error::data(path, format!("IDX dimensions {dims:?} overflow: their product exceeds usize::MAX"))
    })?;
    // Read at most one byte past the expected count, so trailing bytes are detected without reading
    // (or decompressing) an unbounded amount.
    let limit = expected.checked_add(1).map_or(u64::MAX, |l| l as u64);
    let mut data = Vec::with_capacity(expected.min(MAX_UPFRONT_RESERVE));
    reader.by_ref().take(limit).read_to_end(&mut data).map_err(read_err)?;
    if data.len() < expected {
        return Err(Error::data(
            path,
            format!(
                "truncated: expected {expected} element bytes after the header, found {} (dimensions {dims:?})",
                data.len()
            ),
        ));
    }
    if data.len() > expected {
        let extra = 1 + count_remaining(&mut reader).map_err(read_err)?;
        return Err(Error::data(
            path,
            format!("{extra} trailing bytes after the {expected} element bytes that dimensions {dims:?} describe"),
        ));
    }
    Ok(IdxArray { dims, data })
}

fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn count_remaining<R: Read>(reader: &mut R) -> std::io::Result<u64> {
    std::io::copy(reader, &mut std::io::sink())
}

/// The IDX file bytes for `array`, gzip-compressed (deterministic: no name or timestamp in the gzip
/// header) if `gzip` is true.
///
/// # Errors
/// [`Error::Io`] only if compression fails (it writes to memory, so in practice never).
pub fn encode_idx(array: &IdxArray, gzip: bool) -> Result<Vec<u8>> {
    let raw = array.to_bytes();
    if !gzip {
        return Ok(raw);
    }
    gzip_bytes(&raw)
}

/// Gzip-compresses bytes at the default level, with an empty header (no name, mtime 0).
///
/// # Errors
/// [`Error::Io`] only if the in-memory compression fails.
pub fn gzip_bytes(raw: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(raw.len() / 3), Compression::default());
    enc.write_all(raw).map_err(|e| Error::io("gzip-compressing IDX data", e))?;
    enc.finish().map_err(|e| Error::io("gzip-compressing IDX data", e))
}

/// Writes `array` to `path` as IDX, gzip-compressed if `gzip`. The write is atomic: a temporary
/// file in the same directory is written, synced and renamed, so `path` never holds a partial file.
///
/// # Errors
/// [`Error::Io`] naming the file if writing, syncing or renaming fails.
///
/// # Examples
/// ```
/// use dpaudit::data::idx::{read_idx, write_idx, IdxArray};
/// let dir = std::env::temp_dir().join(format!("dpaudit-doc-idx-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("labels-idx1-ubyte.gz");
/// let a = IdxArray::new(vec![3], vec![1, 2, 3]).unwrap();
/// write_idx(&path, &a, true).unwrap();
/// assert_eq!(read_idx(&path).unwrap(), a);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_idx(path: &Path, array: &IdxArray, gzip: bool) -> Result<()> {
    write_atomically(path, &encode_idx(array, gzip)?)
}

pub use crate::durable::write_atomically;

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("t.idx")
    }

    #[test]
    fn parses_a_small_image_array() {
        let a = IdxArray::new(vec![2, 2, 3], (0..12).collect()).unwrap();
        let b = parse_idx(&a.to_bytes(), p()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn gzip_stream_round_trip() {
        let a = IdxArray::new(vec![4], vec![9, 8, 7, 6]).unwrap();
        let gz = encode_idx(&a, true).unwrap();
        assert!(is_gzip(&gz));
        let b = parse_idx_stream(MultiGzDecoder::new(&gz[..]), p(), true).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn header_claiming_huge_size_does_not_allocate_it() {
        // 4 dims of 0xffff: 1.8e19 elements; overflows on 32-bit, and on 64-bit must fail quickly
        // as truncated rather than reserving the claimed size.
        let bytes = [0, 0, 8, 4, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 1];
        let err = parse_idx(&bytes, p()).unwrap_err().to_string();
        assert!(err.contains("found 1"), "{err}");
    }

    #[test]
    fn new_rejects_oversized_dimension() {
        if usize::BITS > 32 {
            assert!(IdxArray::new(vec![1 << 33], vec![]).is_err());
        }
    }
}
