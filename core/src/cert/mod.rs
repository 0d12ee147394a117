//! Signed privacy certificates.
//!
//! A certificate states what was released (file hashes), by which mechanism (the ledger's steps),
//! and what its privacy is worth (epsilons recomputed from the ledger, and the MPFR oracle's
//! rigorous bound), with the audits run and the limitations in plain words. It is signed with
//! Ed25519 over `b"dpaudit-cert-v1\0"` followed by its RFC 8785 canonical JSON.
//! What the signature covers and why: [`proofs/cert/signing.md`](../../../proofs/cert/signing.md).
//!
//! One call per CLI command:
//! - `dpaudit keygen`: [`keys::generate_keypair`].
//! - `dpaudit cert sign`: [`sign::sign_run`] (or [`sign::certify_run`] + [`sign::sign`] +
//!   [`sign::write_signed`]).
//! - `dpaudit cert verify`: [`verify::verify`], exiting with [`verify::VerifyFailure::exit_code`].
//!
//! - [`canonical`]: RFC 8785 canonical JSON and a strict (no duplicate keys) parser.
//! - [`keys`]: key generation and the key files.
//! - [`schema`]: the certificate, format `dpaudit-cert-v1`.
//! - [`sign`]: building a certificate from a run folder, signing, atomic writing.
//! - [`verify`]: verification with distinct failure codes.
pub mod canonical;
pub mod keys;
pub mod schema;
pub mod sign;
pub mod verify;

pub use keys::{generate_keypair, KeyInfo, SecretKey};
pub use schema::{ArtifactKind, AuditRecord, Certificate, Epsilon, Verdict};
pub use sign::{certify_run, sign, sign_run, write_signed, CertifyOptions, SignedCertificate};
pub use verify::{verify, VerifyFailure, VerifyReport};
