//! Building a certificate from a run folder, signing it, and writing it atomically.
//!
//! What the signature covers and why: [`proofs/cert/signing.md`](../../../proofs/cert/signing.md).
//! The signed message is `b"dpaudit-cert-v1\0"` followed by the RFC 8785 canonical JSON of the
//! certificate ([`signed_message`]).
use crate::accounting::pld::{Construction, PldAccountant};
use crate::accounting::{exact, rdp, validate_delta, Phase};
use crate::cert::canonical::canonical_json;
use crate::cert::keys::{load_secret_key_for_signing, SecretKey};
use crate::cert::schema::*;
use crate::durable::sha256_file;
use crate::error::{Error, Result};
use crate::noise_seeding::{NoiseSeeding, SEEDED_NOISE_WARNING};
use crate::run_folder::manifest::{ReleaseManifest, RunMetrics, RunSummary};
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Domain separator prefixed to the canonical JSON before signing.
pub const SIGNATURE_DOMAIN: &[u8] = b"dpaudit-cert-v1\0";
/// `signature.algorithm` of a signed certificate.
pub const SIGNATURE_ALGORITHM: &str = "ed25519";
/// The ledger's file name in a run folder (the trainer's).
pub const LEDGER_FILE: &str = crate::run_folder::LEDGER_FILE;
/// The metrics file in a run folder.
pub const METRICS_FILE: &str = crate::run_folder::METRICS_FILE;
/// The model file in a run folder (the default artifact).
pub const MODEL_FILE: &str = crate::run_folder::MODEL_FILE;

/// The file a certificate is stored in: the certificate and its detached signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCertificate {
    /// The certificate (the signed content).
    pub certificate: Certificate,
    /// The signature over [`signed_message`] of the certificate.
    pub signature: Signature,
}

/// An Ed25519 signature and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Always [`SIGNATURE_ALGORITHM`].
    pub algorithm: String,
    /// Key id of the signer (equals the certificate's `signer_key_id`).
    pub key_id: String,
    /// The 64-byte signature, lowercase hex.
    pub value: String,
}

/// What to certify, beyond the run folder.
#[derive(Debug, Clone, PartialEq)]
pub struct CertifyOptions {
    /// The delta of every epsilon, in (0, 1).
    pub delta: f64,
    /// What is released.
    pub kind: ArtifactKind,
    /// Released files, relative to the run folder; empty means `model.safetensors`.
    pub artifacts: Vec<PathBuf>,
    /// Audits run on the release (a `violated` verdict makes certification fail).
    pub audits: Vec<AuditRecord>,
    /// Certify a non-private run as an uncertified claim (epsilon `"infinity"`) instead of refusing.
    pub allow_uncertified: bool,
    /// Certify a run whose noise was seeded explicitly (reproducible noise) instead of refusing;
    /// the certificate then records `noise_seeding: seeded` and says it is not fit for release.
    pub allow_seeded_noise: bool,
    /// The tool's git commit; `None` means: build-time `DPAUDIT_GIT_COMMIT` if set, else
    /// `git rev-parse HEAD` in the crate's source folder, else `unknown`.
    pub git_commit: Option<String>,
}

impl CertifyOptions {
    /// A model release at `delta`, no audits, private runs only.
    pub fn model(delta: f64) -> Self {
        CertifyOptions {
            delta,
            kind: ArtifactKind::Model,
            artifacts: Vec::new(),
            audits: Vec::new(),
            allow_uncertified: false,
            allow_seeded_noise: false,
            git_commit: None,
        }
    }
}

/// Builds the certificate of a training run folder (unsigned; `signer_key_id` is set from `key`).
///
/// Epsilons are recomputed from `ledger.jsonl` with the RDP and PLD accountants and the MPFR
/// oracle; the numbers in `metrics.json` are never used. `metrics.json` supplies only the
/// `private` flag, the training data hash, and the model hash it recorded (checked against the
/// file).
///
/// # Proof definition
/// Returns a certificate whose `privacy.verified_epsilon` is an upper bound on the epsilon at
/// `delta` of the composition of the ledger's steps (add/remove-one adjacency), or an error.
///
/// # Errors
/// [`Error::Inconsistent`] when `metrics.json`, `ledger.jsonl` and `checkpoint.json` disagree
/// ([`crate::run_folder::check_consistency`]: fault, noise multipliers, sampling rates, steps,
/// noise seeding). Refuses ([`Error::InvalidParameter`]) a run with an `inject_fault` field that is not null (in
/// `metrics.json` or its `config`), a non-private run unless `allow_uncertified`, a private run
/// whose noise was seeded explicitly or whose seeding is not recorded ([`run_noise_seeding`])
/// unless `allow_seeded_noise`, a ledger
/// step that is not Poisson-sampled, a ledger with a torn last line, fewer ledger steps than
/// `metrics.json` reports, a model whose hash differs from the recorded one, an audit with
/// verdict `violated` or a lower bound above the verified epsilon, and unsafe artifact paths.
/// [`Error::Io`] / [`Error::Data`] for missing or corrupt files.
pub fn certify_run(run_dir: &Path, options: &CertifyOptions, key: &SecretKey) -> Result<Certificate> {
    validate_delta(options.delta)?;
    let metrics_path = run_dir.join(METRICS_FILE);
    let (metrics, _) = RunMetrics::read(run_dir)?;
    let (ledger, entries) = read_ledger(run_dir)?;
    // The folder's files describe one run, before anything is taken from any of them.
    crate::run_folder::check_consistency(run_dir, &metrics, &entries)?;
    let summary = metrics.summary();
    if let Some(fault) = &summary.inject_fault {
        return Err(Error::invalid(
            "run",
            run_dir.display(),
            format!("was trained with an injected fault ({fault}); refusing to certify it"),
        ));
    }
    let private = summary.private.ok_or_else(|| Error::data(&metrics_path, "no boolean `private` field"))?;
    if !private && !options.allow_uncertified {
        return Err(Error::invalid(
            "run",
            run_dir.display(),
            "is not differentially private; refusing to certify it (it can only be signed as an uncertified claim)",
        ));
    }
    let training_data_sha256 = recorded_data_hash(&summary, &metrics_path)?;

    let ledger_path = run_dir.join(LEDGER_FILE);
    let noise_seeding = checked_noise_seeding(run_dir, &metrics, &entries, private, options)?;
    let phases: Vec<Phase> = crate::accounting::ledger::phases_of(&entries)?; // refuses non-Poisson steps
    if let Some(steps) = summary.steps {
        if private && (entries.len() as u64) < steps {
            return Err(Error::data(
                &ledger_path,
                format!("records {} steps but metrics.json reports {steps}; refusing to certify", entries.len()),
            ));
        }
    }
    if private && entries.is_empty() {
        return Err(Error::data(&ledger_path, "a private run must have a ledger with at least one noisy step"));
    }
    let external = match metrics.imported() {
        Some(p) => Some(checked_import(run_dir, p, &entries)?),
        None => None,
    };

    // Released files.
    // An abadi-pca model is applied to the DP-PCA projection: both are the release.
    let wanted: Vec<PathBuf> = if !options.artifacts.is_empty() {
        options.artifacts.clone()
    } else if run_dir.join(crate::run_folder::PCA_FILE).exists() {
        vec![PathBuf::from(MODEL_FILE), PathBuf::from(crate::run_folder::PCA_FILE)]
    } else {
        vec![PathBuf::from(MODEL_FILE)]
    };
    let mut files = Vec::new();
    for rel in &wanted {
        let path = relative_path_string(rel)?;
        let sha256 = sha256_file(&run_dir.join(rel))?;
        if path == MODEL_FILE {
            if let Some(recorded) = summary.model_sha256.as_deref() {
                if recorded != sha256 {
                    return Err(Error::data(run_dir.join(rel), "differs from the model the training run recorded (model_sha256 in metrics.json); refusing to certify"));
                }
            }
        }
        files.push(FileDigest { path, sha256 });
    }
    assemble(
        key,
        options,
        private,
        Artifact { kind: options.kind, files },
        training_data_sha256,
        ledger,
        &entries,
        &phases,
        noise_seeding,
        external,
    )
}

/// The certificate's record of an imported run, after checking that the folder's history file
/// is the one imported (its SHA-256) and that the ledger is exactly its transcription (every
/// step's sampling rate and noise multiplier, in order, and no step more or less).
fn checked_import(
    run_dir: &Path,
    p: &crate::imported::ImportedProvenance,
    entries: &[crate::accounting::ledger::LedgerEntry],
) -> Result<ExternalTraining> {
    let rel = relative_path_string(Path::new(&p.history_file))?;
    let path = run_dir.join(&rel);
    let sha256 = sha256_file(&path)?;
    if sha256 != p.history_sha256 {
        return Err(Error::data(
            &path,
            "differs from the history that was imported (its SHA-256 in metrics.json); refusing to certify",
        ));
    }
    let (history, _) = crate::imported::PrivacyHistory::load(&path)?;
    let mut expected = history.phases.iter().flat_map(|ph| (0..ph.steps).map(move |_| ph));
    for e in entries {
        match expected.next() {
            Some(ph)
                if e.sampling_rate == ph.sample_rate
                    && e.noise_multiplier == ph.noise_multiplier
                    && e.label == crate::imported::IMPORTED_LABEL => {}
            _ => {
                return Err(Error::data(
                    run_dir.join(LEDGER_FILE),
                    format!("step {} is not the transcription of {rel}; refusing to certify", e.step),
                ))
            }
        }
    }
    if expected.next().is_some() {
        return Err(Error::data(
            run_dir.join(LEDGER_FILE),
            format!("has fewer steps ({}) than {rel} ({}); refusing to certify", entries.len(), history.steps()),
        ));
    }
    Ok(ExternalTraining {
        trainer: p.trainer.clone(),
        history: FileDigest { path: rel, sha256 },
        trainer_claim: p.trainer_claim.as_ref().map(|c| TrainerClaimRecord {
            epsilon: c.epsilon,
            delta: c.delta,
            accountant: c.accountant.clone(),
        }),
        data_hash_source: p.data_hash_source.clone(),
    })
}

/// What a certificate of an imported run says in plain words: whose code trained it, what dpaudit
/// recomputed, which audits back the claim and what they could and could not have detected.
fn external_limitations(x: &ExternalTraining, privacy: &Privacy, audits: &[AuditRecord]) -> Vec<String> {
    let mut l = vec![format!(
        "The training code was not dpaudit's: the model was trained by {}. dpaudit did not run the training; it recomputed every epsilon from the privacy history the trainer reported ({}, SHA-256 {}) and cannot check that the training did what that history says.",
        x.trainer, x.history.path, x.history.sha256
    )];
    if let Some(c) = &x.trainer_claim {
        l.push(format!(
            "The trainer claimed epsilon {} at delta {} with its {} accountant; dpaudit's verified epsilon from the same history is {} at delta {}.",
            c.epsilon,
            c.delta,
            c.accountant,
            match privacy.verified_epsilon.epsilon {
                Epsilon::Finite(e) => format!("{e:.4}"),
                Epsilon::Infinity => "infinite".into(),
            },
            privacy.delta
        ));
    }
    if x.data_hash_source == "given" {
        l.push("The training data hash was stated by the importer; dpaudit did not read the training data.".into());
    }
    if audits.is_empty() {
        l.push("No audit backs this claim: nothing recorded here tested that the training code adds the noise, clips and samples as its history states.".into());
    } else {
        for a in audits {
            l.push(format!(
                "Audit \"{}\" backs the claim: lower bound {:.4} at confidence {}, verdict {}{}.",
                a.name,
                a.epsilon_lower_bound,
                a.confidence,
                serde_json::to_value(a.verdict).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                a.power.as_deref().map_or_else(String::new, |p| format!("; {p}"))
            ));
        }
    }
    l
}

/// How a run's noise was seeded, from its `metrics.json` and its ledger: `seeded` when either
/// says `seeded` (or, for runs written before `noise_seeding` was recorded, when `metrics.json`
/// has a non-null `seed`); `csprng` when `metrics.json` says `csprng` (or has `seed: null`) and no
/// ledger step says `seeded`; `None` (unknown) when nothing says.
///
/// Ledger steps without the field (older ledgers) do not make a run seeded by themselves: the
/// run-level record decides for them.
pub fn run_noise_seeding(
    metrics: &RunMetrics,
    entries: &[crate::accounting::ledger::LedgerEntry],
) -> Option<NoiseSeeding> {
    let summary = metrics.summary();
    let from_metrics = match summary.noise_seeding {
        Some(recorded) => recorded.known(),
        None => match summary.seed {
            Some(None) => Some(NoiseSeeding::Csprng),
            Some(Some(_)) => Some(NoiseSeeding::Seeded),
            None => None,
        },
    };
    if from_metrics == Some(NoiseSeeding::Seeded)
        || entries.iter().any(|e| e.noise_seeding == Some(NoiseSeeding::Seeded))
    {
        Some(NoiseSeeding::Seeded)
    } else {
        from_metrics
    }
}

/// The noise seeding a certificate records, or the refusal: a private run whose noise was seeded
/// explicitly, or whose seeding is not recorded (treated as seeded, for safety), is certified only
/// with `allow_seeded_noise`, and then recorded as `seeded`.
fn checked_noise_seeding(
    what: &Path,
    metrics: &RunMetrics,
    entries: &[crate::accounting::ledger::LedgerEntry],
    private: bool,
    options: &CertifyOptions,
) -> Result<Option<NoiseSeeding>> {
    if !private {
        return Ok(None);
    }
    match run_noise_seeding(metrics, entries) {
        Some(NoiseSeeding::Csprng) => Ok(Some(NoiseSeeding::Csprng)),
        _ if options.allow_seeded_noise => Ok(Some(NoiseSeeding::Seeded)),
        found => Err(Error::invalid(
            "run",
            what.display(),
            format!(
                "{} reproducible noise: anyone who knows the seed can regenerate its noise and subtract it; refusing to certify it for release",
                if found.is_some() {
                    "was trained with an explicit seed, i.e."
                } else if metrics.imported().is_some() {
                    "was trained elsewhere and nothing says how its noise was drawn (import it stating the noise source if it was a cryptographic generator), so it is taken as"
                } else {
                    "does not record how its noise was seeded (an older run), so it is taken as"
                }
            ),
        )),
    }
}

/// The certificate of checked inputs, shared by [`certify_run`] and [`certify_release`]: the
/// privacy claim from the ledger's `phases` (certified when `proven`, else an uncertified claim
/// with an infinite epsilon), the audits checked against it, and the tool's fixed parts.
#[allow(clippy::too_many_arguments)]
fn assemble(
    key: &SecretKey,
    options: &CertifyOptions,
    proven: bool,
    artifact: Artifact,
    training_data_sha256: String,
    ledger: Option<FileDigest>,
    entries: &[crate::accounting::ledger::LedgerEntry],
    phases: &[Phase],
    noise_seeding: Option<NoiseSeeding>,
    external: Option<ExternalTraining>,
) -> Result<Certificate> {
    let (status, privacy) = if proven {
        (ClaimStatus::Certified, privacy_of(phases, options.delta)?)
    } else {
        (ClaimStatus::UncertifiedClaim, uncertified_privacy(options.delta))
    };
    check_audits(&options.audits, privacy.verified_epsilon.epsilon)
        .map_err(|reason| Error::invalid("audit", "", reason))?;
    let external_lines = external.as_ref().map(|x| external_limitations(x, &privacy, &options.audits));
    Ok(Certificate {
        format: FORMAT.into(),
        tool: Tool {
            name: "dpaudit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: options.git_commit.clone().unwrap_or_else(tool_git_commit),
        },
        issued_at: rfc3339_utc(std::time::SystemTime::now()),
        signer_key_id: key.key_id().to_owned(),
        status,
        artifact,
        training_data_sha256,
        ledger,
        mechanism: mechanism_of(entries),
        privacy,
        audits: options.audits.clone(),
        limitations: {
            let mut l = Vec::new();
            if noise_seeding == Some(NoiseSeeding::Seeded) {
                l.push(format!("This release is {SEEDED_NOISE_WARNING}."));
            }
            l.extend(external_lines.into_iter().flatten());
            l.extend(standard_limitations());
            l
        },
        noise_seeding,
        external_training: external,
    })
}

/// The training data's SHA-256 that a run's `metrics.json` recorded.
fn recorded_data_hash(metrics: &RunSummary, metrics_path: &Path) -> Result<String> {
    metrics
        .train_data_sha256
        .clone()
        .filter(|s| is_sha256_hex(s))
        .ok_or_else(|| Error::data(metrics_path, "no `train_data_sha256` (64 lowercase hex digits)"))
}

/// The ledger of a run folder, read-only (Ledger::open would repair a torn line in place, so the
/// bytes are checked first): its digest and entries; `(None, [])` when there is none.
fn read_ledger(run_dir: &Path) -> Result<(Option<FileDigest>, Vec<crate::accounting::ledger::LedgerEntry>)> {
    let ledger_path = run_dir.join(LEDGER_FILE);
    if !ledger_path.exists() {
        return Ok((None, Vec::new()));
    }
    let snapshot = crate::accounting::ledger::read_ledger(&ledger_path)?;
    if snapshot.torn_bytes > 0 {
        return Err(Error::data(
            &ledger_path,
            "ends with a torn line: the run did not finish cleanly; refusing to certify it",
        ));
    }
    Ok((Some(FileDigest { path: LEDGER_FILE.into(), sha256: snapshot.sha256 }), snapshot.entries))
}

/// Builds the certificate of a synthetic dataset released by `dpaudit gan sample` (unsigned).
///
/// `release_dir` holds `release.json` and the released files; `gan_run_dir` is the DP-GAN run
/// it was sampled from (its ledger and `metrics.json`). The certified files are every file
/// `release.json` lists plus `release.json` itself, hashed as found and checked against the
/// hashes `release.json` states; verify with `dpaudit cert verify --artifacts RELEASE_DIR`.
/// Sampling a trained generator is post-processing, so the release has the epsilon of the
/// discriminator's ledger (proofs/gan/).
///
/// # Proof definition
/// As [`certify_run`]: `privacy.verified_epsilon` is an upper bound on the epsilon at `delta` of
/// the composition of the GAN run's ledger steps, or an error.
///
/// # Errors
/// Refuses the noise-layer design (its epsilon is claimed, not proven) unless
/// `allow_uncertified`, in which case the certificate is an uncertified claim with an infinite
/// epsilon; a GAN run folder whose files disagree ([`Error::Inconsistent`]); a release whose generator hash or ledger hash is not the run's; a released file whose
/// hash differs from `release.json`; non-Poisson or torn ledgers; violated audits.
pub fn certify_release(
    release_dir: &Path,
    gan_run_dir: &Path,
    options: &CertifyOptions,
    key: &SecretKey,
) -> Result<Certificate> {
    validate_delta(options.delta)?;
    let release_path = release_dir.join(crate::run_folder::RELEASE_FILE);
    let release = ReleaseManifest::read(release_dir)?;
    let metrics_path = gan_run_dir.join(METRICS_FILE);
    let (metrics, _) = RunMetrics::read(gan_run_dir)?;
    let (ledger, entries) = read_ledger(gan_run_dir)?;
    crate::run_folder::check_consistency(gan_run_dir, &metrics, &entries)?;
    let summary = metrics.summary();
    let design = release.design.as_str();
    let run_design =
        summary.design.as_deref().ok_or_else(|| Error::data(&metrics_path, "no `design`: not a DP-GAN run folder"))?;
    if design != run_design {
        return Err(Error::invalid(
            "release",
            release_dir.display(),
            format!("was made by design {design}, but {} is a {run_design} run", gan_run_dir.display()),
        ));
    }
    let proven = matches!(design, "real-only" | "joint");
    if !proven && !options.allow_uncertified {
        return Err(Error::invalid("release", release_dir.display(), format!("comes from the {design} design, whose epsilon is claimed, not proven; refusing to certify it (it can only be signed as an uncertified claim)")));
    }
    let generator = gan_run_dir.join(crate::run_folder::GENERATOR_FILE);
    let generator_sha256 = sha256_file(&generator)?;
    for (what, v) in
        [("release.json", Some(&release.generator_sha256)), ("metrics.json", summary.generator_sha256.as_ref())]
    {
        if v.map(String::as_str) != Some(generator_sha256.as_str()) {
            return Err(Error::data(
                &generator,
                format!("differs from the generator {what} recorded; refusing to certify"),
            ));
        }
    }
    let training_data_sha256 = recorded_data_hash(&summary, &metrics_path)?;
    let noise_seeding = checked_noise_seeding(gan_run_dir, &metrics, &entries, proven, options)?;
    if Some(release.ledger.sha256.as_str()) != ledger.as_ref().map(|l| l.sha256.as_str()) {
        return Err(Error::data(
            gan_run_dir.join(LEDGER_FILE),
            "is not the ledger release.json names (by SHA-256): the release was not made from this run",
        ));
    }
    if entries.is_empty() {
        return Err(Error::data(
            gan_run_dir.join(LEDGER_FILE),
            "a private GAN run must have a ledger with at least one noisy step",
        ));
    }
    let phases: Vec<Phase> = crate::accounting::ledger::phases_of(&entries)?;
    let mut files = Vec::new();
    for (name, want) in &release.files {
        let path = relative_path_string(Path::new(name))?;
        let sha256 = sha256_file(&release_dir.join(name))?;
        if *want != sha256 {
            return Err(Error::data(
                release_dir.join(name),
                "differs from the hash release.json states: not the file released; refusing to certify",
            ));
        }
        files.push(FileDigest { path, sha256 });
    }
    files.push(FileDigest { path: "release.json".into(), sha256: sha256_file(&release_path)? });
    assemble(
        key,
        options,
        proven,
        Artifact { kind: ArtifactKind::SyntheticDataset, files },
        training_data_sha256,
        ledger,
        &entries,
        &phases,
        noise_seeding,
        None,
    )
}

/// One call for `dpaudit cert sign --release`: as [`sign_run`], for [`certify_release`].
///
/// # Errors
/// As [`certify_release`], [`sign`] and [`write_signed`].
pub fn sign_release(
    release_dir: &Path,
    gan_run_dir: &Path,
    options: &CertifyOptions,
    secret_key_path: &Path,
    out: &Path,
) -> Result<SignedCertificate> {
    let key = load_secret_key_for_signing(secret_key_path, &[release_dir, gan_run_dir])?;
    let cert = certify_release(release_dir, gan_run_dir, options, &key)?;
    let signed = sign(&cert, &key)?;
    write_signed(out, &signed)?;
    Ok(signed)
}

/// Refuses audits whose verdict is `violated`, or whose lower bound exceeds the certified upper
/// bound (a contradiction whatever the verdict says), or that are malformed.
pub(crate) fn check_audits(audits: &[AuditRecord], certified: Epsilon) -> std::result::Result<(), String> {
    for a in audits {
        if a.verdict == Verdict::Violated {
            return Err(format!(
                "audit {:?} has verdict `violated` (lower bound {} at confidence {}): the privacy claim is false",
                a.name, a.epsilon_lower_bound, a.confidence
            ));
        }
        let well_formed = a.epsilon_lower_bound.is_finite()
            && a.epsilon_lower_bound >= 0.0
            && a.confidence > 0.0
            && a.confidence < 1.0;
        if !well_formed {
            return Err(format!("audit {:?}: lower bound must be finite and >= 0, confidence in (0, 1)", a.name));
        }
        if a.epsilon_lower_bound > certified.value() {
            return Err(format!(
                "audit {:?}: its lower bound {} exceeds the certified epsilon {}: the privacy claim is false",
                a.name,
                a.epsilon_lower_bound,
                certified.value()
            ));
        }
    }
    Ok(())
}

/// The epsilons of a composition at `delta`: RDP, PLD and the MPFR oracle.
pub(crate) fn privacy_of(phases: &[Phase], delta: f64) -> Result<Privacy> {
    let r = rdp::epsilon(phases, delta)?;
    let pld = PldAccountant::default();
    let p = pld.epsilon(phases, delta)?;
    let v = exact::verified_epsilon(phases, delta, &rdp::default_orders())?;
    let eps = |x: f64| Epsilon::from_f64(x).ok_or_else(|| Error::numerical("certificate epsilon", "NaN"));
    Ok(Privacy {
        delta,
        epsilons: vec![
            AccountantEpsilon {
                accountant: "rdp".into(),
                epsilon: eps(r.epsilon)?,
                method: serde_json::json!({ "order": r.order, "rdp": finite_or_null(r.rdp), "conversion": r.conversion, "orders": "default grid (accounting::rdp::default_orders)" }),
            },
            AccountantEpsilon {
                accountant: "pld".into(),
                epsilon: eps(p.epsilon)?,
                method: {
                    let mut m = serde_json::json!({ "discretization": p.discretization, "discretization_choice": p.discretization_choice.to_string(), "tail_mass": pld.tail_mass(), "worse_direction": p.worse_direction, "pessimistic": true });
                    // Recorded only when not connect-the-dots, so other certificates are unchanged.
                    if p.construction != Construction::ConnectTheDots {
                        m["construction"] = serde_json::json!(p.construction.to_string());
                    }
                    m
                },
            },
        ],
        verified_epsilon: VerifiedClaim {
            epsilon: eps(v.epsilon)?,
            order: Some(v.order),
            conversion: Some(v.conversion),
        },
    })
}

fn finite_or_null(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::json!("infinity")
    }
}

fn uncertified_privacy(delta: f64) -> Privacy {
    Privacy {
        delta,
        epsilons: vec![AccountantEpsilon {
            accountant: "none".into(),
            epsilon: Epsilon::Infinity,
            method: serde_json::json!("the run was not differentially private"),
        }],
        verified_epsilon: VerifiedClaim { epsilon: Epsilon::Infinity, order: None, conversion: None },
    }
}

/// Groups ledger entries into runs with equal label, q, sigma and clipping norm.
pub(crate) fn mechanism_of(entries: &[crate::accounting::ledger::LedgerEntry]) -> Mechanism {
    let mut phases: Vec<MechanismPhase> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for e in entries {
        if !labels.contains(&e.label) {
            labels.push(e.label.clone());
        }
        match phases.last_mut() {
            Some(p)
                if p.label == e.label
                    && p.sampling_rate == e.sampling_rate
                    && p.noise_multiplier == e.noise_multiplier
                    && p.clipping_norm == e.clipping_norm =>
            {
                p.steps += 1
            }
            _ => phases.push(MechanismPhase {
                label: e.label.clone(),
                sampling_rate: e.sampling_rate,
                noise_multiplier: e.noise_multiplier,
                clipping_norm: e.clipping_norm,
                steps: 1,
            }),
        }
    }
    Mechanism {
        sampling: "poisson".into(),
        adjacency: "add_remove_one".into(),
        steps: entries.len() as u64,
        phases,
        labels,
    }
}

/// A path relative to the run folder as a `/`-separated string; refuses absolute paths and `..`.
pub(crate) fn relative_path_string(rel: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str().ok_or_else(|| Error::invalid("artifact path", rel.display(), "must be UTF-8"))?.to_owned(),
            ),
            Component::CurDir => {}
            _ => {
                return Err(Error::invalid(
                    "artifact path",
                    rel.display(),
                    "must be relative to the run folder, without `..`",
                ))
            }
        }
    }
    if parts.is_empty() {
        return Err(Error::invalid("artifact path", rel.display(), "is empty"));
    }
    Ok(parts.join("/"))
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The git commit dpaudit was built from (`DPAUDIT_GIT_COMMIT` at build time, else the checkout
/// it was built in), or `unknown`; certificates and reports record it.
pub fn tool_git_commit() -> String {
    if let Some(c) = option_env!("DPAUDIT_GIT_COMMIT") {
        return c.to_owned();
    }
    std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into())
}

/// The exact bytes a signature covers: [`SIGNATURE_DOMAIN`] then the RFC 8785 canonical JSON of
/// `cert` (as a JSON value).
///
/// # Errors
/// [`Error::InvalidParameter`] if the certificate holds a non-finite number or an unsafe integer.
pub fn signed_message(cert: &serde_json::Value) -> Result<Vec<u8>> {
    let mut msg = SIGNATURE_DOMAIN.to_vec();
    msg.extend_from_slice(canonical_json(cert)?.as_bytes());
    Ok(msg)
}

/// Signs a certificate.
///
/// # Errors
/// [`Error::InvalidParameter`] if the certificate's `signer_key_id` is not `key`'s, its format is
/// not [`FORMAT`], or it holds a number JSON cannot carry.
pub fn sign(cert: &Certificate, key: &SecretKey) -> Result<SignedCertificate> {
    if cert.signer_key_id != key.key_id() {
        return Err(Error::invalid(
            "signer_key_id",
            &cert.signer_key_id,
            format!("is not the signing key's id {}", key.key_id()),
        ));
    }
    if cert.format != FORMAT {
        return Err(Error::invalid("certificate format", &cert.format, format!("must be {FORMAT}")));
    }
    let value = serde_json::to_value(cert).map_err(|e| Error::invalid("certificate", "", e.to_string()))?;
    let msg = signed_message(&value)?;
    let sig = key.signing_key().sign(&msg);
    Ok(SignedCertificate {
        certificate: cert.clone(),
        signature: Signature {
            algorithm: SIGNATURE_ALGORITHM.into(),
            key_id: key.key_id().to_owned(),
            value: hex::encode(sig.to_bytes()),
        },
    })
}

/// Writes a signed certificate to `path` (as [`crate::cert::canonical::canonical_json_pretty`]:
/// sorted keys, canonical numbers, indented) atomically: a temporary file in the same folder,
/// written and fsynced, renamed over `path`, then the folder fsynced. A crash leaves either no
/// certificate or the whole one, never half of it. Refuses to overwrite an existing file.
///
/// # Errors
/// [`Error::Io`] if `path` exists or on any I/O failure (the temporary file is removed).
pub fn write_signed(path: &Path, signed: &SignedCertificate) -> Result<()> {
    if path.exists() {
        return Err(Error::io(
            format!("writing certificate {}", path.display()),
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "refusing to overwrite"),
        ));
    }
    let value = serde_json::to_value(signed).map_err(|e| Error::invalid("certificate", "", e.to_string()))?;
    let bytes = crate::cert::canonical::canonical_json_pretty(&value)?.into_bytes();
    crate::durable::write_atomically(path, &bytes)
}

/// One call for `dpaudit cert sign`: loads the secret key, certifies the run, signs, and writes
/// the certificate atomically to `out`.
///
/// # Errors
/// As [`crate::cert::keys::load_secret_key_for_signing`], [`certify_run`], [`sign`] and
/// [`write_signed`].
pub fn sign_run(
    run_dir: &Path,
    options: &CertifyOptions,
    secret_key_path: &Path,
    out: &Path,
) -> Result<SignedCertificate> {
    let key = load_secret_key_for_signing(secret_key_path, &[run_dir])?;
    let cert = certify_run(run_dir, options, &key)?;
    let signed = sign(&cert, &key)?;
    write_signed(out, &signed)?;
    Ok(signed)
}
