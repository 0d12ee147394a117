//! Durable file writes: a crash (kill -9, power loss) leaves either the old file or the complete
//! new one, never half of one. Used for datasets, checkpoints, metrics and certificates. And
//! bounded reads: a file given by a user (`/dev/zero`, a huge or endless file) is read up to a
//! limit, never until memory runs out.
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically: a uniquely named temporary file in the same folder
/// (created exclusively), `fsync`, rename over `path`, then `fsync` of the folder. On failure the
/// temporary file is removed.
///
/// # Errors
/// [`Error::Io`] naming the file if any step fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| Error::invalid("output path", path.display(), "must name a file"))?;
    let tmp =
        dir.join(format!(".{}.tmp-{}-{:016x}", name.to_string_lossy(), std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir).and_then(|d| d.sync_all())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

/// `fsync`s a file that was written by another library (libtorch's safetensors writer).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

/// The torn-line rule of dpaudit's append-only JSON-lines files (the privacy ledger, experiment
/// records): the length of the complete part, up to and including the last newline. The bytes
/// after it are a line torn by a crash in the middle of an append, never read as a line.
pub fn complete_lines_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// Largest certificate accepted (a real one is a few kilobytes).
pub const MAX_CERTIFICATE_BYTES: u64 = 16 << 20;
/// Largest key file accepted (a real one is under 200 bytes).
pub const MAX_KEY_BYTES: u64 = 64 << 10;
/// Largest ledger accepted (one line of about 250 bytes per noisy step: 4 million steps).
pub const MAX_LEDGER_BYTES: u64 = 1 << 30;

/// Reads the whole of `path`, refusing anything larger than `limit` bytes (including endless
/// files such as `/dev/zero`) after reading at most `limit + 1` bytes.
///
/// # Errors
/// The I/O error of opening or reading; [`std::io::ErrorKind::InvalidData`] when the file holds
/// more than `limit` bytes.
pub fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes, the most accepted for this file"),
        ));
    }
    Ok(bytes)
}

/// The SHA-256 (lowercase hex) of a file's bytes as stored (compressed files are not decompressed).
///
/// # Errors
/// [`Error::Io`] naming the file if it cannot be read.
///
/// # Examples
/// ```
/// let path = std::env::temp_dir().join(format!("dpaudit-doc-sha-{}", std::process::id()));
/// std::fs::write(&path, b"abc").unwrap();
/// assert_eq!(
///     dpaudit_core::durable::sha256_file(&path).unwrap(),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(hex::encode(h.finalize()))
}

/// The SHA-256 (lowercase hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomically(&dir.path().join("missing/a"), b"x").is_err());
    }
}
