//! Ed25519 signing keys for certificates: generation from the OS CSPRNG, and the two key files.
//!
//! # File formats (JSON, one object, lowercase hex)
//! - Public key, `dpaudit-cert.pub`:
//!   `{"format":"dpaudit-ed25519-public-v1","key_id":"<32 hex>","public_key":"<64 hex>"}`
//! - Secret key, `dpaudit-cert.key`, created with mode 0600 (never readable by others, not even
//!   for a moment) and never overwritten:
//!   `{"format":"dpaudit-ed25519-secret-v1","key_id":"<32 hex>","secret_key":"<64 hex>"}` where
//!   `secret_key` is the 32-byte Ed25519 seed (RFC 8032 §5.1.5).
//!
//! The **key id** is the first 16 bytes (32 lowercase hex digits) of SHA-256 of the 32 public-key
//! bytes. It names a key; it is not what makes a signature trustworthy (the verifier checks the
//! signature with the public key it was given, and also that the ids agree).
//!
//! The secret key is never printed: [`SecretKey`]'s `Debug` shows only the key id, and no
//! function here returns its bytes.
use crate::error::{Error, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the public key that [`generate_keypair`] writes.
pub const PUBLIC_KEY_FILE: &str = "dpaudit-cert.pub";
/// File name of the secret key that [`generate_keypair`] writes.
pub const SECRET_KEY_FILE: &str = "dpaudit-cert.key";
/// `format` field of a public key file.
pub const PUBLIC_FORMAT: &str = "dpaudit-ed25519-public-v1";
/// `format` field of a secret key file.
pub const SECRET_FORMAT: &str = "dpaudit-ed25519-secret-v1";

/// What [`generate_keypair`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key id (first 16 bytes of SHA-256 of the public key, hex).
    pub key_id: String,
    /// The public key (32 bytes, hex).
    pub public_key: String,
    /// Where the public key was written.
    pub public_key_path: PathBuf,
    /// Where the secret key was written (mode 0600).
    pub secret_key_path: PathBuf,
}

/// A loaded secret key. `Debug` never shows the key material; the bytes are zeroed on drop
/// (`ed25519-dalek`'s `zeroize`).
pub struct SecretKey {
    signing: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SecretKey {
    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// A fresh key from the OS CSPRNG, in memory only (for tests and for callers that store keys
    /// their own way).
    pub fn generate() -> Self {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let key_id = key_id(&signing.verifying_key());
        SecretKey { signing, key_id }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyFile {
    format: String,
    key_id: String,
    public_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyFile {
    format: String,
    key_id: String,
    secret_key: String,
}

/// The key id of a public key: the first 16 bytes of its SHA-256, as 32 lowercase hex digits.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// Decodes lowercase hex of an exact length; uppercase is refused so that each byte string has
/// exactly one spelling.
pub(crate) fn decode_lower_hex(s: &str, bytes: usize) -> std::result::Result<Vec<u8>, String> {
    if s.len() != 2 * bytes || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("expected {} lowercase hex digits", 2 * bytes));
    }
    hex::decode(s).map_err(|e| e.to_string())
}

/// Generates an Ed25519 key pair from the OS CSPRNG and writes [`SECRET_KEY_FILE`] (mode 0600,
/// from creation) and [`PUBLIC_KEY_FILE`] into `dir` (created with mode 0700 if missing). Refuses
/// to overwrite either file.
///
/// # Errors
/// [`Error::Io`] if a key file already exists or cannot be written; [`Error::Data`] if `dir` is
/// writable by group or others.
pub fn generate_keypair(dir: &Path) -> Result<KeyInfo> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        // Private from creation, whatever the umask (under umask 000 a default folder is 0777).
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| Error::io(format!("creating key folder {}", dir.display()), e))?;
    #[cfg(unix)]
    {
        // Someone who can write the folder can swap the key files.
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(format!("reading key folder {}", dir.display()), e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(Error::data(
                dir,
                format!("key folder has mode {mode:o}: others can replace its keys; use a folder only you can write (chmod 700)"),
            ));
        }
    }
    let secret_path = dir.join(SECRET_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(Error::io(
                format!("writing key {}", p.display()),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "refusing to overwrite an existing key file"),
            ));
        }
    }
    let key = SecretKey::generate();
    let secret = SecretKeyFile {
        format: SECRET_FORMAT.into(),
        key_id: key.key_id.clone(),
        secret_key: hex::encode(key.signing.to_bytes()),
    };
    let mut secret_json = serde_json::to_vec(&secret).map_err(|e| Error::data(&secret_path, e.to_string()))?;
    drop(secret);
    secret_json.push(b'\n');
    let written = write_new_file(&secret_path, &secret_json, 0o600);
    secret_json.iter_mut().for_each(|b| *b = 0);
    written?;
    let public = PublicKeyFile {
        format: PUBLIC_FORMAT.into(),
        key_id: key.key_id.clone(),
        public_key: hex::encode(key.verifying_key().as_bytes()),
    };
    let mut public_json = serde_json::to_vec(&public).map_err(|e| Error::data(&public_path, e.to_string()))?;
    public_json.push(b'\n');
    if let Err(e) = write_new_file(&public_path, &public_json, 0o644) {
        // Do not leave half a key pair behind.
        let _ = std::fs::remove_file(&secret_path);
        return Err(e);
    }
    Ok(KeyInfo {
        key_id: key.key_id.clone(),
        public_key: public.public_key,
        public_key_path: public_path,
        secret_key_path: secret_path,
    })
}

/// Creates `path` (never overwriting), with `mode` from the moment it exists, writes and fsyncs.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let ctx = || format!("writing key {}", path.display());
    let mut f = opts.open(path).map_err(|e| Error::io(ctx(), e))?;
    f.write_all(bytes).map_err(|e| Error::io(ctx(), e))?;
    f.sync_all().map_err(|e| Error::io(ctx(), e))?;
    Ok(())
}

/// Loads a secret key file. On Unix, refuses a file that group or others may read or write
/// (like OpenSSH), so that a leaked-looking key is not used silently.
///
/// # Errors
/// [`Error::Io`] if unreadable, [`Error::Data`] for a bad format, wrong permissions or a key id
/// that does not match the key.
pub fn load_secret_key(path: &Path) -> Result<SecretKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta =
            std::fs::metadata(path).map_err(|e| Error::io(format!("reading secret key {}", path.display()), e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            if load_public_key(path).is_ok() {
                return Err(public_not_secret(path));
            }
            return Err(Error::data(
                path,
                format!("secret key file has mode {mode:o}; it must not be accessible by group or others (chmod 600)"),
            ));
        }
    }
    let mut bytes = crate::durable::read_at_most(path, crate::durable::MAX_KEY_BYTES)
        .map_err(|e| Error::io(format!("reading secret key {}", path.display()), e))?;
    let parsed: std::result::Result<SecretKeyFile, _> = serde_json::from_slice(&bytes);
    bytes.iter_mut().for_each(|b| *b = 0);
    let file = parsed.map_err(|_| {
        if load_public_key(path).is_ok() {
            public_not_secret(path)
        } else {
            Error::data(path, "not a dpaudit secret key file")
        }
    })?;
    if file.format != SECRET_FORMAT {
        return Err(Error::data(path, format!("format {:?} is not {SECRET_FORMAT}", file.format)));
    }
    let mut seed = decode_lower_hex(&file.secret_key, 32).map_err(|e| Error::data(path, format!("secret_key: {e}")))?;
    let mut arr = [0u8; 32];
    arr.copy_from_slice(&seed);
    seed.iter_mut().for_each(|b| *b = 0);
    let signing = SigningKey::from_bytes(&arr);
    arr.iter_mut().for_each(|b| *b = 0);
    let id = key_id(&signing.verifying_key());
    if id != file.key_id {
        return Err(Error::data(path, "key_id does not match the key"));
    }
    Ok(SecretKey { signing, key_id: id })
}

/// Loads the secret key for signing a certificate of the folders `certified`, after checking
/// where it lies: not a symbolic link (the file signed with is the file named), not in a folder
/// that group or others can write (they could swap it), and not inside a folder being certified
/// (it would be released with it). Then as [`load_secret_key`].
///
/// # Errors
/// [`Error::Data`] naming the key for each refusal; as [`load_secret_key`].
pub fn load_secret_key_for_signing(path: &Path, certified: &[&Path]) -> Result<SecretKey> {
    let link =
        std::fs::symlink_metadata(path).map_err(|e| Error::io(format!("reading secret key {}", path.display()), e))?;
    if link.file_type().is_symlink() {
        return Err(Error::data(path, "the secret key is a symbolic link; give the key file itself"));
    }
    let real =
        std::fs::canonicalize(path).map_err(|e| Error::io(format!("reading secret key {}", path.display()), e))?;
    #[cfg(unix)]
    if let Some(folder) = real.parent() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(folder)
            .map_err(|e| Error::io(format!("reading key folder {}", folder.display()), e))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o022 != 0 {
            return Err(Error::data(
                path,
                format!(
                    "the secret key's folder {} has mode {mode:o}: others can replace the key; keep it in a folder only you can write (chmod 700)",
                    folder.display()
                ),
            ));
        }
    }
    for dir in certified {
        if let Ok(d) = std::fs::canonicalize(dir) {
            if real.starts_with(&d) {
                return Err(Error::data(
                    path,
                    format!("the secret key lies inside {}, the folder being certified, and would be released with it; keep keys elsewhere", dir.display()),
                ));
            }
        }
    }
    load_secret_key(&real)
}

/// The error for a public key given where the secret key is needed.
fn public_not_secret(path: &Path) -> Error {
    Error::data(
        path,
        "this is a dpaudit public key; signing needs the secret key file (mode 600) that key generation wrote beside it",
    )
}

/// Loads a public key file; returns the key and its id (checked against the key).
///
/// # Errors
/// [`Error::Io`] if unreadable, [`Error::Data`] for a bad format, an invalid curve point or a key
/// id that does not match the key.
pub fn load_public_key(path: &Path) -> Result<(VerifyingKey, String)> {
    let bytes = crate::durable::read_at_most(path, crate::durable::MAX_KEY_BYTES)
        .map_err(|e| Error::io(format!("reading public key {}", path.display()), e))?;
    let file: PublicKeyFile =
        serde_json::from_slice(&bytes).map_err(|e| Error::data(path, format!("not a dpaudit public key file: {e}")))?;
    if file.format != PUBLIC_FORMAT {
        return Err(Error::data(path, format!("format {:?} is not {PUBLIC_FORMAT}", file.format)));
    }
    let raw = decode_lower_hex(&file.public_key, 32).map_err(|e| Error::data(path, format!("public_key: {e}")))?;
    let arr: [u8; 32] = raw.try_into().expect("length checked");
    let key = VerifyingKey::from_bytes(&arr)
        .map_err(|e| Error::data(path, format!("public_key is not a valid Ed25519 point: {e}")))?;
    if key.is_weak() {
        return Err(Error::data(path, "public_key is a weak (small-order) point"));
    }
    let id = key_id(&key);
    if id != file.key_id {
        return Err(Error::data(path, "key_id does not match the key"));
    }
    Ok((key, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_files_round_trip_with_private_mode_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let info = generate_keypair(dir.path()).unwrap();
        assert_eq!(info.key_id.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&info.secret_key_path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let secret = load_secret_key(&info.secret_key_path).unwrap();
        let (public, id) = load_public_key(&info.public_key_path).unwrap();
        assert_eq!((secret.key_id(), id.as_str()), (info.key_id.as_str(), info.key_id.as_str()));
        assert_eq!(secret.verifying_key(), public);
        let debug = format!("{secret:?}");
        let secret_hex = hex::encode(secret.signing_key().to_bytes());
        assert!(!debug.contains(&secret_hex) && debug.contains(&info.key_id));
        assert!(generate_keypair(dir.path()).is_err(), "must not overwrite a key pair");
        assert_eq!(load_secret_key(&info.secret_key_path).unwrap().key_id(), info.key_id);
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_secret_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let info = generate_keypair(dir.path()).unwrap();
        std::fs::set_permissions(&info.secret_key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(load_secret_key(&info.secret_key_path), Err(Error::Data { .. })));
    }

    #[test]
    fn a_public_key_given_as_the_secret_key_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let info = generate_keypair(dir.path()).unwrap();
        // Whatever its mode: as written (0644 under the usual umask) and private.
        for mode in [0o644, 0o600] {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&info.public_key_path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            let e = load_secret_key(&info.public_key_path).unwrap_err().to_string();
            assert!(e.contains("this is a dpaudit public key") && !e.contains("has mode"), "mode {mode:o}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_signing_key_must_be_a_private_file_outside_the_certified_folders() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let keys = root.path().join("keys");
        let run = root.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let info = generate_keypair(&keys).unwrap();
        assert!(load_secret_key_for_signing(&info.secret_key_path, &[&run]).is_ok());
        let refused = |p: &Path, why: &str| {
            let e = load_secret_key_for_signing(p, &[&run]).unwrap_err().to_string();
            assert!(e.contains(why), "{why:?}: {e}");
        };
        let link = root.path().join("link.key");
        std::os::unix::fs::symlink(&info.secret_key_path, &link).unwrap();
        refused(&link, "symbolic link");
        let inside = run.join("dpaudit-cert.key");
        std::fs::copy(&info.secret_key_path, &inside).unwrap();
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        refused(&inside, "the folder being certified");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o777)).unwrap();
        refused(&info.secret_key_path, "others can replace the key");
    }

    #[test]
    fn hex_must_be_lowercase_and_exact_length() {
        assert!(decode_lower_hex("00ff", 2).is_ok());
        assert!(decode_lower_hex("00FF", 2).is_err());
        assert!(decode_lower_hex("00f", 2).is_err());
    }
}
