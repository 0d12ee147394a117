//! Membership inference against a trainer dpaudit did not write (`[target] kind = "command"` in
//! the spec of `dpaudit attack mia`): the experiment of [`crate::attack::shadows`], each model
//! (target and shadows) one run of the external trainer of `docs/external-trainers.md`.
//!
//! dpaudit writes the population once into `datasets/population/` (the query folder of every
//! request), and model m's members into `datasets/model-m/` (the request's `data`), both as the
//! dataset folders of an audit; the trainer trains on `data` and writes
//! `population_logits.npy`, its final model's logits on every population example, from which
//! dpaudit computes the logit-scaled confidence `phi` in f64 (as [`crate::attack::mia::confidences`]
//! does for its own models) and the accuracies. A `claim.json` (optional) gives the privacy the
//! report accounts. Once mode and worker mode, timeouts, and failures are the audits'
//! ([`crate::audit::external`]): a failed model stops the experiment with an error naming the
//! model and the file; the models recorded before it are kept and running the same command again
//! resumes.
use crate::attack::shadows::{model_seed, select, MiaContext, ModelRecord, Progress, Shard};
use crate::audit::external::{
    dataset_files, program_exists, write_dataset_folder, RunRequest, TrainerClaim, TrainerConnection, DATASETS_DIR,
    PROTOCOL, WORK_DIR,
};
use crate::audit::spec::CommandTarget;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::experiment;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// The population's dataset folder (inside `datasets/`): every request's `query`.
pub const POPULATION_DIR: &str = "population";
/// What the trainer writes in its output folder: the final model's logits on the query folder's
/// examples, float32 or float64 `[n, classes]`.
pub const LOGITS_FILE: &str = "population_logits.npy";
/// Largest `population_logits.npy` read back.
const MAX_LOGITS_BYTES: u64 = 2 << 30;
/// Largest `claim.json` read back.
const MAX_CLAIM_BYTES: u64 = 16 << 20;

/// Writes `data` as a dataset folder (or checks the one already there).
fn write_folder(data: &Dataset, path: &Path) -> Result<()> {
    let shape = data.shape();
    write_dataset_folder(path, &dataset_files(data.pixels(), data.labels(), shape.height, shape.width, data.classes()))
}

/// Trains (or resumes) the shard's models with the external trainer `target` into `dir`,
/// `target.workers` at a time. Models already in `runs.jsonl` are skipped; each new one is
/// appended and fsynced as it finishes.
///
/// # Errors
/// A program that does not exist; a population that is not single-channel images; a folder
/// holding another spec's models; a failed model (the error names the model, the file and the
/// trainer's last stderr lines; models recorded before it are kept); I/O errors.
pub fn run_command_models(
    ctx: &MiaContext,
    target: &CommandTarget,
    dir: &Path,
    shard: Shard,
    progress: Progress<'_>,
    stop: &AtomicBool,
) -> Result<Vec<ModelRecord>> {
    if !program_exists(&target.argv[0]) {
        return Err(Error::invalid(
            "target.argv",
            &target.argv[0],
            "no such program (a path is taken from the current folder; a bare name is searched on PATH)",
        ));
    }
    if ctx.population().shape().channels != 1 {
        return Err(Error::invalid(
            "data.dataset",
            &ctx.spec().data.dataset,
            "external trainers get MNIST-format folders of single-channel images",
        ));
    }
    let (_lock, existing) = experiment::open_folder(ctx.spec(), dir, shard)?;
    let canonical = |sub: &str| -> Result<std::path::PathBuf> {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        p.canonicalize().map_err(|e| Error::io(format!("resolving {}", p.display()), e))
    };
    let datasets = canonical(DATASETS_DIR)?;
    let work = canonical(WORK_DIR)?;
    let query = datasets.join(POPULATION_DIR);
    write_folder(ctx.population(), &query)?;
    experiment::run_pending(
        ctx.spec(),
        dir,
        shard,
        target.workers,
        &existing,
        progress,
        stop,
        &|| Ok(TrainerConnection::default()),
        &|trainer, index| train_command_model(ctx, target, trainer, &datasets, &query, &work, index),
    )
}

/// Model `index`: its members as `datasets/model-<index>/`, one run of the trainer, its logits on
/// the population read back. Its dataset and output folders are deleted once it is recorded.
fn train_command_model(
    ctx: &MiaContext,
    target: &CommandTarget,
    trainer: &mut TrainerConnection,
    datasets: &Path,
    query: &Path,
    work: &Path,
    index: u64,
) -> Result<ModelRecord> {
    let start = Instant::now();
    let keep = &ctx.memberships()[index as usize];
    let members = select(ctx.population(), keep, "members")?;
    let data = datasets.join(format!("model-{index}"));
    write_folder(&members, &data)?;
    let seed = model_seed(ctx.spec().attack.seed, index);
    // The seed's top 53 bits: exact in JSON.
    let run = seed >> 11;
    let out = work.join(format!("model-{index}"));
    let json = serde_json::json!({
        "protocol": PROTOCOL,
        "run": run,
        "data": data.display().to_string(),
        "query": query.display().to_string(),
        "out": out.display().to_string(),
        "seed": seed,
        "options": target.options,
    });
    let label = format!("model {index} (run {run}, seed {seed}, {} members)", members.len());
    let req = RunRequest::other(run, seed, data.clone(), out, json, label);
    let stderr = trainer.train(target, &req)?;
    let logits_path = req.out().join(LOGITS_FILE);
    let population = ctx.population();
    let (phi, correct) = match population_confidences(&logits_path, population.labels(), population.classes()) {
        Ok(c) => c,
        Err(why) => return Err(trainer.output_failure(&req, &logits_path, why, stderr)),
    };
    let claim_path = req.out().join("claim.json");
    let claim = if claim_path.exists() {
        match read_claim(&claim_path) {
            Ok(c) => Some(c),
            Err(why) => return Err(trainer.output_failure(&req, &claim_path, why, stderr)),
        }
    } else {
        None
    };
    let acc = |inn: bool| {
        let (right, total) = correct
            .iter()
            .zip(keep)
            .filter(|(_, &k)| k == inn)
            .fold((0usize, 0usize), |(a, b), (&ok, _)| (a + usize::from(ok), b + 1));
        if total == 0 {
            f64::NAN
        } else {
            right as f64 / total as f64
        }
    };
    let ledger_phases: Vec<(f64, f64, u64)> = claim
        .as_ref()
        .map(|c| c.history.iter().map(|p| (p.sample_rate, p.noise_multiplier, p.steps)).collect())
        .unwrap_or_default();
    let record = ModelRecord {
        index,
        seed,
        train_examples: members.len() as u64,
        steps: ledger_phases.iter().map(|p| p.2).sum(),
        noise_multiplier: ledger_phases.first().map(|p| p.1),
        ledger_phases,
        member_accuracy: acc(true),
        non_member_accuracy: acc(false),
        seconds: start.elapsed().as_secs_f64(),
        phi,
        claim_delta: claim.map(|c| c.delta),
    };
    for folder in [req.out(), data.as_path()] {
        std::fs::remove_dir_all(folder).map_err(|e| Error::io(format!("removing {}", folder.display()), e))?;
    }
    Ok(record)
}

/// Reads and checks `claim.json`: a delta in (0, 1) and a history of valid Poisson-subsampled
/// Gaussian phases.
fn read_claim(path: &Path) -> std::result::Result<TrainerClaim, String> {
    let bytes = crate::durable::read_at_most(path, MAX_CLAIM_BYTES).map_err(|e| e.to_string())?;
    let claim: TrainerClaim = serde_json::from_slice(&bytes).map_err(|e| format!("malformed claim.json: {e}"))?;
    crate::accounting::validate_delta(claim.delta).map_err(|e| e.to_string())?;
    if claim.history.is_empty() {
        return Err("the history is empty".into());
    }
    for p in &claim.history {
        crate::accounting::Phase::new(p.sample_rate, p.noise_multiplier, p.steps).map_err(|e| e.to_string())?;
    }
    Ok(claim)
}

/// The header of a NumPy `.npy` file: its dtype, whether Fortran-ordered, its shape, and where
/// the data start.
fn npy_header(bytes: &[u8]) -> std::result::Result<(String, bool, Vec<usize>, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a NumPy .npy file (no \\x93NUMPY magic)".into());
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes.get(start..start + len).ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let after = |key: &str| -> std::result::Result<&str, String> {
        let at = header.find(&format!("'{key}'")).ok_or_else(|| format!("the .npy header has no '{key}'"))?;
        let rest = &header[at + key.len() + 2..];
        Ok(rest.trim_start().trim_start_matches(':').trim_start())
    };
    let descr = after("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or("malformed 'descr'")?.to_string();
    let fortran = after("fortran_order")?.starts_with("True");
    let shape = after("shape")?;
    let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("malformed 'shape'")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("malformed 'shape' ({inner})")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((descr, fortran, shape, start + len))
}

/// The logit-scaled confidence of each population example's label, `phi_i = z_{i,y} -
/// logsumexp_{j != y} z_{i,j}` (in f64), and whether the argmax is the label, from the trainer's
/// `population_logits.npy`: little-endian float32 or float64, C order, `[labels.len(), classes]`,
/// every value finite.
fn population_confidences(
    path: &Path,
    labels: &[u8],
    classes: usize,
) -> std::result::Result<(Vec<f64>, Vec<bool>), String> {
    if !path.exists() {
        return Err(format!("the trainer wrote no {LOGITS_FILE} (the request names a query folder)"));
    }
    let bytes = crate::durable::read_at_most(path, MAX_LOGITS_BYTES).map_err(|e| e.to_string())?;
    let (descr, fortran, shape, start) = npy_header(&bytes)?;
    let n = labels.len();
    if fortran {
        return Err("is Fortran-ordered; write it in C order".into());
    }
    if shape != [n, classes] {
        return Err(format!(
            "has shape {shape:?}, expected [{n}, {classes}] (one row of logits per population example)"
        ));
    }
    let data = &bytes[start..];
    let values: Vec<f64> = match descr.as_str() {
        "<f4" if data.len() == n * classes * 4 => {
            data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        "<f8" if data.len() == n * classes * 8 => {
            data.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
        }
        "<f4" | "<f8" => return Err(format!("holds {} data bytes, not what its shape {shape:?} needs", data.len())),
        other => return Err(format!("has dtype {other:?}; write float32 (<f4) or float64 (<f8)")),
    };
    let mut phi = Vec::with_capacity(n);
    let mut correct = Vec::with_capacity(n);
    for (i, (row, &y)) in values.chunks_exact(classes).zip(labels).enumerate() {
        if let Some(v) = row.iter().find(|v| !v.is_finite()) {
            return Err(format!("row {i} holds the non-finite logit {v}"));
        }
        let y = usize::from(y);
        let others = row.iter().enumerate().filter(|&(j, _)| j != y).map(|(_, &z)| z);
        let top = others.clone().fold(f64::NEG_INFINITY, f64::max);
        let lse = top + others.map(|z| (z - top).exp()).sum::<f64>().ln();
        phi.push(row[y] - lse);
        // The first largest logit, as argmax picks it.
        let argmax = row.iter().enumerate().fold(0, |best, (j, &z)| if z > row[best] { j } else { best });
        correct.push(argmax == y);
    }
    Ok((phi, correct))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_npy(dir: &Path, descr: &str, shape: &[usize], data: &[u8]) -> std::path::PathBuf {
        let p = dir.join(LOGITS_FILE);
        std::fs::write(&p, crate::audit::external::npy(descr, shape, data)).unwrap();
        p
    }

    /// phi is the label's logit minus the log-sum-exp of the others; a wrong shape, dtype or a
    /// NaN is refused with the reason.
    #[test]
    fn confidences_from_logits_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let rows: [[f64; 3]; 2] = [[2.0, 0.0, 1.0], [0.5, 0.5, -1.0]];
        let f8: Vec<u8> = rows.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        let p = write_npy(dir.path(), "<f8", &[2, 3], &f8);
        let (phi, correct) = population_confidences(&p, &[0, 2], 3).unwrap();
        let want0 = 2.0 - (0f64.exp() + 1f64.exp()).ln();
        let want1 = -1.0 - (0.5f64.exp() * 2.0).ln();
        assert!((phi[0] - want0).abs() < 1e-12 && (phi[1] - want1).abs() < 1e-12, "{phi:?}");
        assert_eq!(correct, vec![true, false]);
        let f4: Vec<u8> = rows.iter().flatten().flat_map(|&v| (v as f32).to_le_bytes()).collect();
        let p = write_npy(dir.path(), "<f4", &[2, 3], &f4);
        assert_eq!(population_confidences(&p, &[0, 2], 3).unwrap().1, vec![true, false]);
        let refused = |descr: &str, shape: &[usize], data: &[u8], why: &str| {
            let p = write_npy(dir.path(), descr, shape, data);
            let e = population_confidences(&p, &[0, 2], 3).unwrap_err();
            assert!(e.contains(why), "expected {why:?}: {e}");
        };
        refused("<f8", &[3], &f8[..24], "has shape [3], expected [2, 3]");
        refused("<f8", &[2, 3], &f8[..40], "data bytes");
        refused("<i8", &[2, 3], &f8, "dtype");
        let mut nan = f8.clone();
        nan[8..16].copy_from_slice(&f64::NAN.to_le_bytes());
        refused("<f8", &[2, 3], &nan, "row 0 holds the non-finite logit NaN");
        let e = population_confidences(&dir.path().join("none.npy"), &[0], 3).unwrap_err();
        assert!(e.contains("wrote no population_logits.npy"), "{e}");
    }
}
