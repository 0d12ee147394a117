//! Verifying a signed certificate: format, signature, claims, artifacts. Each kind of failure
//! has its own exit code ([`VerifyFailure::exit_code`]).
use crate::accounting::ledger::LedgerEntry;
use crate::accounting::pld::PldAccountant;
use crate::accounting::{exact, rdp, Phase};
use crate::cert::canonical::{check_canonical_numbers, parse_strict};
use crate::cert::keys::{decode_lower_hex, load_public_key};
use crate::cert::schema::{Certificate, ClaimStatus, Epsilon, FORMAT};
use crate::cert::sign::{check_audits, mechanism_of, signed_message, SignedCertificate, SIGNATURE_ALGORITHM};
use crate::durable::sha256_file;
use std::path::{Component, Path, PathBuf};

/// Why a certificate was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyFailure {
    /// Exit code 2: an input cannot be read (missing file, bad JSON, unknown format or field,
    /// unreadable public key).
    #[error("{}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Exit code 3: the signature does not verify with the given public key (tampered content,
    /// wrong key, key id mismatch).
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Exit code 4: the certificate's claim does not hold (an epsilon below the recomputed bound,
    /// a mechanism that differs from the ledger, an audit that contradicts the claim).
    #[error("claim does not reproduce: {0}")]
    ClaimNotReproduced(String),
    /// Exit code 5: a released file (or the ledger) is missing or its hash differs.
    #[error("artifact {}: {reason}", path.display())]
    ArtifactMismatch {
        /// The file.
        path: PathBuf,
        /// Missing, or the hash differs.
        reason: String,
    },
}

impl VerifyFailure {
    /// The CLI's exit code: 2 unreadable, 3 bad signature, 4 claim not reproduced, 5 artifact.
    pub fn exit_code(&self) -> i32 {
        match self {
            VerifyFailure::Unreadable { .. } => 2,
            VerifyFailure::BadSignature(_) => 3,
            VerifyFailure::ClaimNotReproduced(_) => 4,
            VerifyFailure::ArtifactMismatch { .. } => 5,
        }
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// The verified certificate.
    pub certificate: Certificate,
    /// The signer's key id (equal to the public key's).
    pub key_id: String,
    /// Files whose hashes were checked (empty without an artifacts folder).
    pub artifacts_checked: Vec<String>,
    /// With `recompute`: the oracle's epsilon re-derived from the recorded mechanism.
    pub recomputed_epsilon: Option<Epsilon>,
}

/// Verifies a certificate file: one call for `dpaudit cert verify`.
///
/// In order: the file parses (strictly: no duplicate keys, no unknown fields, every number in its
/// canonical RFC 8785 spelling; key order and whitespace are free) and has format
/// `dpaudit-cert-v1` (else code 2); its key ids match the public key and the Ed25519 signature
/// over `b"dpaudit-cert-v1\0"` + RFC 8785 JSON of the certificate verifies with `verify_strict`
/// (else 3); no audit is `violated` or above the certified epsilon (else 4); with
/// `artifacts_dir`, every listed file and the ledger exist there with the signed SHA-256
/// (else 5); with `recompute`, the MPFR oracle's epsilon re-derived from the recorded mechanism
/// is not above any stated RDP or verified epsilon, the PLD epsilon reproduces, and (with
/// `artifacts_dir`) the ledger's steps are the recorded mechanism (else 4).
///
/// # Errors
/// A [`VerifyFailure`] saying which check failed.
pub fn verify(
    cert_path: &Path,
    pubkey_path: &Path,
    artifacts_dir: Option<&Path>,
    recompute: bool,
) -> Result<VerifyReport, VerifyFailure> {
    let unreadable = |path: &Path, reason: String| VerifyFailure::Unreadable { path: path.to_path_buf(), reason };
    let bytes = crate::durable::read_at_most(cert_path, crate::durable::MAX_CERTIFICATE_BYTES)
        .map_err(|e| unreadable(cert_path, e.to_string()))?;
    let value = parse_strict(&bytes).map_err(|e| unreadable(cert_path, format!("not a JSON certificate: {e}")))?;
    check_canonical_numbers(&bytes).map_err(|e| unreadable(cert_path, e))?;
    let format = value.get("certificate").and_then(|c| c.get("format")).and_then(|f| f.as_str());
    if format != Some(FORMAT) {
        return Err(unreadable(cert_path, format!("format {format:?} is not {FORMAT}")));
    }
    let signed: SignedCertificate = serde_json::from_value(value.clone())
        .map_err(|e| unreadable(cert_path, format!("not a {FORMAT} certificate: {e}")))?;
    if signed.signature.algorithm != SIGNATURE_ALGORITHM {
        return Err(unreadable(
            cert_path,
            format!("signature algorithm {:?} is not {SIGNATURE_ALGORITHM}", signed.signature.algorithm),
        ));
    }
    let (public, key_id) = load_public_key(pubkey_path).map_err(|e| unreadable(pubkey_path, e.to_string()))?;

    // Signature.
    if signed.signature.key_id != key_id || signed.certificate.signer_key_id != key_id {
        return Err(VerifyFailure::BadSignature(format!(
            "signed by key {} (certificate says {}), but the public key given is {key_id}",
            signed.signature.key_id, signed.certificate.signer_key_id
        )));
    }
    let sig_bytes = decode_lower_hex(&signed.signature.value, 64)
        .map_err(|e| VerifyFailure::BadSignature(format!("signature value: {e}")))?;
    let sig =
        ed25519_dalek::Signature::from_slice(&sig_bytes).map_err(|e| VerifyFailure::BadSignature(e.to_string()))?;
    // Sign over the certificate exactly as read (every field, as parsed), not a re-serialisation.
    let raw_cert = value.get("certificate").expect("checked above");
    let msg = signed_message(raw_cert).map_err(|e| unreadable(cert_path, e.to_string()))?;
    public
        .verify_strict(&msg, &sig)
        .map_err(|_| VerifyFailure::BadSignature("the signature does not verify with this public key".into()))?;
    let cert = signed.certificate;

    // Claims that need no recomputation.
    check_audits(&cert.audits, cert.privacy.verified_epsilon.epsilon).map_err(VerifyFailure::ClaimNotReproduced)?;
    let phase_steps: u64 = cert.mechanism.phases.iter().map(|p| p.steps).sum();
    if phase_steps != cert.mechanism.steps {
        return Err(VerifyFailure::ClaimNotReproduced(format!(
            "mechanism lists {} steps but its phases hold {phase_steps}",
            cert.mechanism.steps
        )));
    }

    // Artifacts.
    let mut artifacts_checked = Vec::new();
    if let Some(dir) = artifacts_dir {
        for f in cert.artifact.files.iter().chain(cert.ledger.iter()) {
            let rel = safe_relative(&f.path).ok_or_else(|| {
                unreadable(cert_path, format!("artifact path {:?} is not relative to the run folder", f.path))
            })?;
            let path = dir.join(rel);
            if !path.is_file() {
                return Err(VerifyFailure::ArtifactMismatch { path, reason: "missing".into() });
            }
            let actual = sha256_file(&path)
                .map_err(|e| VerifyFailure::ArtifactMismatch { path: path.clone(), reason: e.to_string() })?;
            if actual != f.sha256 {
                return Err(VerifyFailure::ArtifactMismatch {
                    path,
                    reason: format!("SHA-256 {actual} differs from the certified {}", f.sha256),
                });
            }
            artifacts_checked.push(f.path.clone());
        }
    }

    let recomputed_epsilon = if recompute { Some(recompute_claims(&cert, artifacts_dir)?) } else { None };
    Ok(VerifyReport { certificate: cert, key_id, artifacts_checked, recomputed_epsilon })
}

fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// Relative slack allowed when a stated PLD epsilon is compared with its recomputation (the f64
/// PLD pipeline may differ in the last bits across machines; the PLD epsilon is informative,
/// the oracle's is the one held exactly).
const PLD_REPRODUCTION_SLACK: f64 = 1e-9;

fn recompute_claims(cert: &Certificate, artifacts_dir: Option<&Path>) -> Result<Epsilon, VerifyFailure> {
    let fail = VerifyFailure::ClaimNotReproduced;
    if let (Some(dir), Some(_)) = (artifacts_dir, &cert.ledger) {
        // Read-only (Ledger::open would repair a torn line in place; the hash was checked above).
        let path = dir.join(crate::cert::sign::LEDGER_FILE);
        let snapshot = crate::accounting::ledger::read_ledger(&path).map_err(|e| match e {
            crate::Error::Io { .. } => VerifyFailure::ArtifactMismatch { path: path.clone(), reason: e.to_string() },
            other => fail(format!("ledger: {other}")),
        })?;
        let entries: Vec<LedgerEntry> = snapshot.entries;
        let poisson = crate::accounting::ledger::phases_of(&entries).is_ok();
        if snapshot.torn_bytes > 0 || !poisson || mechanism_of(&entries) != cert.mechanism {
            return Err(fail("the ledger's steps are not the mechanism the certificate states".into()));
        }
    }
    match cert.status {
        ClaimStatus::UncertifiedClaim => {
            let all_infinite = cert.privacy.epsilons.iter().all(|e| e.epsilon == Epsilon::Infinity)
                && cert.privacy.verified_epsilon.epsilon == Epsilon::Infinity;
            if !all_infinite {
                return Err(fail("an uncertified claim states a finite epsilon".into()));
            }
            Ok(Epsilon::Infinity)
        }
        ClaimStatus::Certified => {
            let phases: Vec<Phase> = cert
                .mechanism
                .phases
                .iter()
                .map(|p| Phase::new(p.sampling_rate, p.noise_multiplier, p.steps))
                .collect::<crate::Result<_>>()
                .map_err(|e| fail(format!("recorded mechanism: {e}")))?;
            if cert.mechanism.sampling != "poisson" || cert.mechanism.adjacency != "add_remove_one" {
                return Err(fail("only Poisson sampling under add/remove-one adjacency can be recomputed".into()));
            }
            let delta = cert.privacy.delta;
            let oracle = exact::verified_epsilon(&phases, delta, &rdp::default_orders())
                .map_err(|e| fail(format!("oracle: {e}")))?;
            let stated = cert.privacy.verified_epsilon.epsilon.value();
            if stated < oracle.epsilon {
                return Err(fail(format!(
                    "verified epsilon {stated} is below the oracle's upper bound {}",
                    oracle.epsilon
                )));
            }
            let mut accountants = Vec::new();
            for e in &cert.privacy.epsilons {
                let stated = e.epsilon.value();
                match e.accountant.as_str() {
                    "rdp" => {
                        if stated < oracle.epsilon {
                            return Err(fail(format!(
                                "RDP epsilon {stated} is below the oracle's upper bound {}",
                                oracle.epsilon
                            )));
                        }
                    }
                    "pld" => {
                        let h = e
                            .method
                            .get("discretization")
                            .and_then(|v| v.as_f64())
                            .ok_or_else(|| fail("PLD epsilon without its discretization".into()))?;
                        let rounded_up = e.method.get("construction").and_then(|v| v.as_str()) == Some("rounded_up");
                        let acc = if rounded_up { PldAccountant::rounded_up(h) } else { PldAccountant::new(h) };
                        let mut acc = acc.map_err(|e| fail(e.to_string()))?;
                        if let Some(t) = e.method.get("tail_mass").and_then(|v| v.as_f64()) {
                            acc = acc.with_tail_mass(t).map_err(|e| fail(e.to_string()))?;
                        }
                        let again = acc.epsilon(&phases, delta).map_err(|e| fail(format!("PLD: {e}")))?.epsilon;
                        if stated < again * (1.0 - PLD_REPRODUCTION_SLACK) {
                            return Err(fail(format!("PLD epsilon {stated} is below its recomputation {again}")));
                        }
                    }
                    other => return Err(fail(format!("unknown accountant {other:?} in a certified claim"))),
                }
                accountants.push(e.accountant.as_str());
            }
            // An audit's lower bound above the rigorous upper bound contradicts the claim.
            check_audits(&cert.audits, Epsilon::Finite(oracle.epsilon)).map_err(fail)?;
            if !accountants.contains(&"rdp") {
                return Err(fail("a certified claim must state an RDP epsilon".into()));
            }
            Ok(Epsilon::Finite(oracle.epsilon))
        }
    }
}
