//! SVHN's cropped-digit files (`train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat`): MATLAB
//! level-5 MAT-files holding `X`, a `32 x 32 x 3 x N` uint8 array (column-major), and `y`, an
//! `N x 1` array of labels 1..=10 where 10 stands for the digit 0.
//!
//! This is a reader for exactly that subset of the MAT v5 format: little-endian files, numeric
//! (non-complex, non-sparse) matrices, stored plain or inside `miCOMPRESSED` (zlib) elements, with
//! any numeric storage type (MATLAB may store a double array compactly as bytes). Other variables
//! in the file are skipped; cell arrays, structs, sparse or complex matrices named `X` or `y` are
//! rejected. MAT v7.3 files (HDF5) are not supported and are reported as such.
use std::io::Read;
use std::path::Path;

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

use super::dataset::{Dataset, ImageShape};
use crate::error::{Error, Result};

/// SVHN's image shape.
pub const SVHN_SHAPE: ImageShape = ImageShape { channels: 3, height: 32, width: 32 };

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_DOUBLE: u32 = 9;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MX_DOUBLE_CLASS: u8 = 6;
const MX_UINT8_CLASS: u8 = 9;
/// Largest decompressed element accepted (SVHN's `extra` set is about 1.6 GB).
const MAX_ELEMENT: u64 = 4 << 30;

/// A numeric MATLAB matrix: dimensions and column-major values.
struct MatArray {
    dims: Vec<usize>,
    values: MatValues,
}

enum MatValues {
    U8(Vec<u8>),
    F64(Vec<f64>),
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::data(self.path, format!("MAT-file: {msg}"))
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| {
            self.err(format!(
                "truncated: element needs {n} bytes at offset {}, only {} remain",
                self.pos,
                self.b.len() - self.pos
            ))
        })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// Reads a data element's tag and payload; handles the small-element format and padding.
    fn element(&mut self, pad: bool) -> Result<(u32, &'a [u8])> {
        let t = self.u32()?;
        if t >> 16 != 0 {
            let n = (t >> 16) as usize;
            if n > 4 {
                return Err(self.err(format!("small data element claims {n} bytes (at most 4)")));
            }
            let data = self.take(4)?;
            return Ok((t & 0xffff, &data[..n]));
        }
        let n = self.u32()? as usize;
        let data = self.take(n)?;
        // Compressed elements are not padded; all others are, to 8 bytes.
        if pad && t != MI_COMPRESSED && !n.is_multiple_of(8) {
            let skip = (8 - n % 8).min(self.b.len() - self.pos);
            self.pos += skip;
        }
        Ok((t, data))
    }
}

fn numeric_values(ty: u32, data: &[u8], cur: &Cursor<'_>) -> Result<MatValues> {
    fn conv<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        data.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect()
    }
    let size = match ty {
        1 | 2 => 1,
        3 | 4 => 2,
        5..=7 => 4,
        9 | 12 | 13 => 8,
        _ => return Err(cur.err(format!("numeric data of MAT type {ty} is not supported"))),
    };
    if !data.len().is_multiple_of(size) {
        return Err(cur.err(format!("{} data bytes are not a multiple of the element size {size}", data.len())));
    }
    Ok(match ty {
        MI_UINT8 => MatValues::U8(data.to_vec()),
        MI_INT8 => MatValues::F64(data.iter().map(|&b| b as i8 as f64).collect()),
        3 => MatValues::F64(conv::<2>(data, |b| i16::from_le_bytes(b) as f64)),
        4 => MatValues::F64(conv::<2>(data, |b| u16::from_le_bytes(b) as f64)),
        5 => MatValues::F64(conv::<4>(data, |b| i32::from_le_bytes(b) as f64)),
        6 => MatValues::F64(conv::<4>(data, |b| u32::from_le_bytes(b) as f64)),
        7 => MatValues::F64(conv::<4>(data, |b| f32::from_le_bytes(b) as f64)),
        9 => MatValues::F64(conv::<8>(data, f64::from_le_bytes)),
        12 => MatValues::F64(conv::<8>(data, |b| i64::from_le_bytes(b) as f64)),
        _ => MatValues::F64(conv::<8>(data, |b| u64::from_le_bytes(b) as f64)),
    })
}

/// Parses a `miMATRIX` payload; returns its name and, for numeric matrices, the array.
fn parse_matrix(payload: &[u8], path: &Path) -> Result<(String, Option<MatArray>)> {
    let mut c = Cursor { b: payload, pos: 0, path };
    if payload.is_empty() {
        return Ok((String::new(), None));
    }
    let (ft, flags) = c.element(true)?;
    if ft != MI_UINT32 || flags.len() < 8 {
        return Err(c.err("matrix without array flags"));
    }
    let class = flags[0];
    let complex = flags[1] & 0x08 != 0;
    let (dt, dims_b) = c.element(true)?;
    if dt != MI_INT32 || dims_b.len() % 4 != 0 {
        return Err(c.err("matrix without dimensions"));
    }
    let dims: Vec<usize> =
        dims_b.chunks_exact(4).map(|d| i32::from_le_bytes([d[0], d[1], d[2], d[3]]).max(0) as usize).collect();
    let (nt, name_b) = c.element(true)?;
    if nt != MI_INT8 && nt != MI_UINT8 {
        return Err(c.err("matrix without a name"));
    }
    let name = String::from_utf8_lossy(name_b).into_owned();
    if !(1..=15).contains(&class) || class <= 5 {
        // cell, struct, object, char, sparse: not numeric; skipped unless it is X or y
        return Ok((name, None));
    }
    if complex {
        return Err(c.err(format!("variable {name} is complex")));
    }
    let (ty, data) = c.element(true)?;
    let values = numeric_values(ty, data, &c)?;
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let got = match &values {
        MatValues::U8(v) => v.len(),
        MatValues::F64(v) => v.len(),
    };
    if count != Some(got) {
        return Err(c.err(format!("variable {name}: dimensions {dims:?} do not match its {got} values")));
    }
    Ok((name, Some(MatArray { dims, values })))
}

/// Reads the `X` and `y` variables of an SVHN-style MAT v5 file.
fn read_x_y(bytes: &[u8], path: &Path) -> Result<(MatArray, MatArray)> {
    if bytes.is_empty() {
        return Err(Error::data(path, "empty file"));
    }
    if bytes.len() < 128 {
        return Err(Error::data(path, format!("MAT-file header needs 128 bytes, found {}", bytes.len())));
    }
    if bytes.starts_with(b"MATLAB 7.3") || bytes.starts_with(b"\x89HDF") {
        return Err(Error::data(
            path,
            "MAT v7.3 (HDF5) files are not supported; re-save with -v7 or use the v5 SVHN files",
        ));
    }
    if !bytes.starts_with(b"MATLAB 5.0 MAT-file") {
        return Err(Error::data(path, "not a MATLAB 5.0 MAT-file (header text missing)"));
    }
    if &bytes[126..128] != b"IM" {
        return Err(Error::data(path, "big-endian MAT-files are not supported"));
    }
    let mut c = Cursor { b: bytes, pos: 128, path };
    let (mut x, mut y) = (None, None);
    while c.pos < bytes.len() && (x.is_none() || y.is_none()) {
        let (ty, payload) = c.element(true)?;
        let (name, arr) = match ty {
            MI_MATRIX => parse_matrix(payload, path)?,
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                ZlibDecoder::new(payload)
                    .take(MAX_ELEMENT + 1)
                    .read_to_end(&mut inflated)
                    .map_err(|e| c.err(format!("invalid zlib data in a compressed element: {e}")))?;
                let mut ic = Cursor { b: &inflated, pos: 0, path };
                let (ity, ipayload) = ic.element(false)?;
                if ity != MI_MATRIX {
                    continue;
                }
                parse_matrix(ipayload, path)?
            }
            _ => continue,
        };
        match name.as_str() {
            "X" => x = Some(arr.ok_or_else(|| c.err("variable X is not a numeric matrix"))?),
            "y" => y = Some(arr.ok_or_else(|| c.err("variable y is not a numeric matrix"))?),
            _ => {}
        }
    }
    match (x, y) {
        (Some(x), Some(y)) => Ok((x, y)),
        (None, _) => Err(Error::data(path, "MAT-file has no variable X")),
        (_, None) => Err(Error::data(path, "MAT-file has no variable y")),
    }
}

/// Loads an SVHN cropped-digits MAT-file into a [`Dataset`] of `3 x 32 x 32` images, channel-major
/// like CIFAR-10, with labels 0..=9 (SVHN's label 10 becomes 0).
///
/// # Errors
/// [`Error::Data`] naming the file if it is not a little-endian MAT v5 file, lacks `X` or `y`, `X`
/// is not `32 x 32 x 3 x N` with values in 0..=255, `y` does not hold `N` labels in 1..=10, or any
/// element is truncated or corrupt; [`Error::Io`] if it cannot be read.
pub fn load_svhn_mat(path: &Path) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let (x, y) = read_x_y(&bytes, path)?;
    if x.dims.len() != 4 || x.dims[..3] != [32, 32, 3] {
        return Err(Error::data(path, format!("X has dimensions {:?}, expected 32 x 32 x 3 x N", x.dims)));
    }
    let n = x.dims[3];
    let ylen = y.dims.iter().product::<usize>();
    if ylen != n || y.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(Error::data(path, format!("y has dimensions {:?}, expected {n} x 1", y.dims)));
    }
    let mut labels = Vec::with_capacity(n);
    let yv: Vec<f64> = match y.values {
        MatValues::U8(v) => v.into_iter().map(f64::from).collect(),
        MatValues::F64(v) => v,
    };
    for (i, &v) in yv.iter().enumerate() {
        if !(1.0..=10.0).contains(&v) || v.fract() != 0.0 {
            return Err(Error::data(path, format!("label {i} is {v}, expected an integer in 1..=10")));
        }
        labels.push((v as u8) % 10);
    }
    let src: Vec<u8> = match x.values {
        MatValues::U8(v) => v,
        MatValues::F64(v) => v
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                if (0.0..=255.0).contains(&p) && p.fract() == 0.0 {
                    Ok(p as u8)
                } else {
                    Err(Error::data(path, format!("pixel {i} of X is {p}, not an integer in 0..=255")))
                }
            })
            .collect::<Result<_>>()?,
    };
    // Column-major X[r, c, ch, k] is at r + 32 c + 1024 ch + 3072 k; we store [k][ch][r][c].
    let mut pixels = vec![0u8; src.len()];
    for k in 0..n {
        for ch in 0..3 {
            let base = 3072 * k + 1024 * ch;
            for r in 0..32 {
                for c in 0..32 {
                    pixels[base + 32 * r + c] = src[base + r + 32 * c];
                }
            }
        }
    }
    let name = format!("svhn/{}", path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned()));
    Ok(Dataset::new(name, SVHN_SHAPE, 10, pixels, labels)?.with_source_files(vec![path.to_path_buf()]))
}

fn push_element(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (8 - data.len() % 8) % 8, 0);
}

fn matrix_element(name: &str, class: u8, dims: &[usize], ty: u32, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_element(&mut body, MI_UINT32, &[class, 0, 0, 0, 0, 0, 0, 0]);
    let d: Vec<u8> = dims.iter().flat_map(|&d| (d as i32).to_le_bytes()).collect();
    push_element(&mut body, MI_INT32, &d);
    push_element(&mut body, MI_INT8, name.as_bytes());
    push_element(&mut body, ty, data);
    let mut el = Vec::new();
    push_element(&mut el, MI_MATRIX, &body);
    el
}

/// Encodes a `3 x 32 x 32`, 10-class dataset as an SVHN-style MAT v5 file (`X` uint8, `y` double
/// with 0 written as 10), with each variable zlib-compressed if `compress`. Used for fixtures,
/// tests and synthetic releases; [`load_svhn_mat`] reads it back exactly.
///
/// # Errors
/// [`Error::InvalidParameter`] if the dataset is not `3 x 32 x 32` with at most 10 classes or has
/// more than `i32::MAX` examples; [`Error::Io`] if compression fails.
pub fn encode_svhn_mat(data: &Dataset, compress: bool) -> Result<Vec<u8>> {
    if data.shape() != SVHN_SHAPE || data.classes() > 10 || data.len() > i32::MAX as usize / 3072 {
        return Err(Error::invalid("dataset", data.name(), "SVHN files hold 3x32x32 images with labels below 10"));
    }
    let n = data.len();
    let mut x = vec![0u8; n * 3072];
    let px = data.pixels();
    for k in 0..n {
        for ch in 0..3 {
            let base = 3072 * k + 1024 * ch;
            for r in 0..32 {
                for c in 0..32 {
                    x[base + r + 32 * c] = px[base + 32 * r + c];
                }
            }
        }
    }
    let y: Vec<u8> =
        data.labels().iter().flat_map(|&l| (if l == 0 { 10.0f64 } else { l as f64 }).to_le_bytes()).collect();
    let mut out = Vec::with_capacity(128 + x.len() + y.len() + 256);
    let mut header = b"MATLAB 5.0 MAT-file, written by dpaudit".to_vec();
    header.resize(116, b' ');
    out.extend_from_slice(&header);
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&[0x00, 0x01]);
    out.extend_from_slice(b"IM");
    for el in [
        matrix_element("X", MX_UINT8_CLASS, &[32, 32, 3, n], MI_UINT8, &x),
        matrix_element("y", MX_DOUBLE_CLASS, &[n, 1], MI_DOUBLE, &y),
    ] {
        if compress {
            use std::io::Write;
            let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
            z.write_all(&el).map_err(|e| Error::io("compressing a MAT-file element", e))?;
            let zd = z.finish().map_err(|e| Error::io("compressing a MAT-file element", e))?;
            out.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
            out.extend_from_slice(&(zd.len() as u32).to_le_bytes());
            out.extend_from_slice(&zd);
        } else {
            out.extend_from_slice(&el);
        }
    }
    Ok(out)
}
