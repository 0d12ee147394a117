//! Audits from scores produced anywhere (`dpaudit audit from-scores`): a CSV or JSON-lines file
//! of (side, score) rows, a dpaudit `runs.jsonl`, or two files of one score per line, turned into
//! the same `audit.json` as `audit run` by [`crate::audit::engine::analyse_scores`].
//!
//! Formats (the first non-blank line decides between JSON lines and CSV):
//! - CSV with a header naming `side` and `score`, optionally `index`, and any further columns
//!   as named statistics (larger means "canary in"): `side,score,index,param-change-norm`;
//! - JSON lines, `{"side": "with", "score": 1.5}` per line, optionally `"index"` and
//!   `"statistics": {"name": value, ...}` (a dpaudit `runs.jsonl` is such a file);
//! - two files, canary in and canary out, one score per line.
//!
//! Sides: `with`/`without`, `in`/`out`, `1`/`0` (canary in / out). Without an `index`, runs are
//! numbered per side in the order they appear; the `held-out` rule chooses on the lowest indices.
use crate::audit::engine::{analyse_scores, AnalysisSettings, AuditReport};
use crate::audit::replay::{RunRecord, Side};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// The largest score file read (256 MiB: some 10 million rows).
pub const MAX_SCORES_BYTES: u64 = 256 << 20;

/// Where the scores are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoresInput {
    /// One CSV or JSON-lines file with a side per row.
    Table(PathBuf),
    /// Canary-in scores and canary-out scores, one per line each.
    Pair {
        /// Canary in.
        with: PathBuf,
        /// Canary out.
        without: PathBuf,
    },
}

/// Parses a side: `with`/`without`, `in`/`out`, `1`/`0`.
pub fn parse_side(s: &str) -> Option<Side> {
    match s.trim().to_ascii_lowercase().as_str() {
        "with" | "in" | "1" => Some(Side::With),
        "without" | "out" | "0" => Some(Side::Without),
        _ => None,
    }
}

fn record(side: Side, index: u64, score: f64, statistics: BTreeMap<String, f64>) -> RunRecord {
    RunRecord {
        side,
        index,
        seed: 0,
        score,
        seconds: 0.0,
        applied_steps: 0,
        ledger_steps: 0,
        ledger_phases: Vec::new(),
        spec_digest: String::new(),
        score_digest: String::new(),
        statistics,
        claimed_epsilon: None,
    }
}

fn read_text(path: &Path) -> Result<(String, String)> {
    let bytes = crate::durable::read_at_most(path, MAX_SCORES_BYTES)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let text = String::from_utf8(bytes).map_err(|_| Error::data(path, "is not UTF-8 text"))?;
    Ok((text, digest))
}

fn finite(path: &Path, line: usize, what: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::data(path, format!("line {line}: {what} is {v}, not a finite number")))
    }
}

fn number(path: &Path, line: usize, what: &str, s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| Error::data(path, format!("line {line}: {what} `{}` is not a number", s.trim())))?;
    finite(path, line, what, v)
}

fn index_of(path: &Path, line: usize, s: &str) -> Result<u64> {
    s.trim()
        .parse()
        .map_err(|_| Error::data(path, format!("line {line}: index `{}` is not a whole number >= 0", s.trim())))
}

/// Rows as read: side, optional index, score, statistics, line number.
type Row = (Side, Option<u64>, f64, BTreeMap<String, f64>, usize);

fn parse_csv(path: &Path, text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| Error::data(path, "is empty"))?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    let find = |name: &str| cols.iter().position(|c| c.eq_ignore_ascii_case(name));
    let (side_col, score_col) = match (find("side"), find("score")) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(Error::data(
                path,
                format!("line 1: the CSV header must name `side` and `score` (it is `{}`)", header.trim()),
            ))
        }
    };
    let index_col = find("index");
    let mut seen = HashSet::new();
    for (i, c) in cols.iter().enumerate() {
        if c.is_empty() || !seen.insert(c.to_ascii_lowercase()) {
            return Err(Error::data(
                path,
                format!("line 1: column {} is {}", i + 1, if c.is_empty() { "unnamed" } else { "named twice" }),
            ));
        }
    }
    let mut rows = Vec::new();
    for (i, l) in lines {
        let line = i + 1;
        let fields: Vec<&str> = l.split(',').collect();
        if fields.len() != cols.len() {
            return Err(Error::data(
                path,
                format!("line {line}: {} fields, the header has {}", fields.len(), cols.len()),
            ));
        }
        let side = parse_side(fields[side_col]).ok_or_else(|| {
            Error::data(
                path,
                format!("line {line}: side `{}` is not with/without, in/out or 1/0", fields[side_col].trim()),
            )
        })?;
        let score = number(path, line, "score", fields[score_col])?;
        let index = index_col.map(|c| index_of(path, line, fields[c])).transpose()?;
        let mut stats = BTreeMap::new();
        for (c, name) in cols.iter().enumerate() {
            if c != side_col && c != score_col && Some(c) != index_col {
                stats.insert(name.clone(), number(path, line, &format!("statistic `{name}`"), fields[c])?);
            }
        }
        rows.push((side, index, score, stats, line));
    }
    Ok(rows)
}

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line = i + 1;
        let bad = |why: String| Error::data(path, format!("line {line}: {why}"));
        let v: serde_json::Value = serde_json::from_str(l).map_err(|e| bad(format!("not JSON ({e})")))?;
        let obj = v.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let side = match obj.get("side") {
            Some(serde_json::Value::String(s)) => parse_side(s),
            Some(serde_json::Value::Number(n)) => parse_side(&n.to_string()),
            Some(serde_json::Value::Bool(b)) => Some(if *b { Side::With } else { Side::Without }),
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "`side` is {}, not with/without, in/out or 1/0",
                obj.get("side").map_or("missing".into(), |s| s.to_string())
            ))
        })?;
        let score = obj.get("score").and_then(serde_json::Value::as_f64).ok_or_else(|| {
            bad(format!("`score` is {}, not a number", obj.get("score").map_or("missing".into(), |s| s.to_string())))
        })?;
        let score = finite(path, line, "score", score)?;
        let index = match obj.get("index") {
            None | Some(serde_json::Value::Null) => None,
            Some(x) => Some(x.as_u64().ok_or_else(|| bad(format!("`index` is {x}, not a whole number >= 0")))?),
        };
        let mut stats = BTreeMap::new();
        match obj.get("statistics") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(m)) => {
                for (k, x) in m {
                    let v = x.as_f64().ok_or_else(|| bad(format!("statistic `{k}` is {x}, not a number")))?;
                    stats.insert(k.clone(), finite(path, line, &format!("statistic `{k}`"), v)?);
                }
            }
            Some(x) => return Err(bad(format!("`statistics` is {x}, not an object of numbers"))),
        }
        rows.push((side, index, score, stats, line));
    }
    Ok(rows)
}

fn parse_column(path: &Path, text: &str, side: Side) -> Result<Vec<Row>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Ok((side, None, number(path, i + 1, "score", l)?, BTreeMap::new(), i + 1)))
        .collect()
}

/// Numbers the rows: their own indices (each side's unique) or, where no row has one, the order
/// of appearance per side.
fn into_records(path: &Path, rows: Vec<Row>) -> Result<Vec<RunRecord>> {
    let given = rows.iter().filter(|r| r.1.is_some()).count();
    if given != 0 && given != rows.len() {
        let line = rows.iter().find(|r| r.1.is_none()).map_or(0, |r| r.4);
        return Err(Error::data(
            path,
            format!("line {line}: no index, but other rows have one (give every row an index or none)"),
        ));
    }
    let mut next: BTreeMap<Side, u64> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for (side, index, score, stats, line) in rows {
        let index = index.unwrap_or_else(|| {
            let n = next.entry(side).or_insert(0);
            *n += 1;
            *n - 1
        });
        if !seen.insert((side, index)) {
            return Err(Error::data(path, format!("line {line}: run {side:?} {index} appears twice")));
        }
        out.push(record(side, index, score, stats));
    }
    for side in [Side::With, Side::Without] {
        if !out.iter().any(|r| r.side == side) {
            return Err(Error::data(
                path,
                format!(
                    "has no score {} the canary (side {})",
                    if side == Side::With { "with" } else { "without" },
                    if side == Side::With { "with/in/1" } else { "without/out/0" }
                ),
            ));
        }
    }
    Ok(out)
}

/// Reads the runs and a description of where they came from (file names and SHA-256).
///
/// # Errors
/// [`Error::Data`] for a malformed row (its line number and what is wrong), a side with no
/// scores, a non-finite score, a file over [`MAX_SCORES_BYTES`]; I/O errors.
pub fn read_scores(input: &ScoresInput) -> Result<(Vec<RunRecord>, String)> {
    match input {
        ScoresInput::Table(path) => {
            let (text, digest) = read_text(path)?;
            let first = text.lines().find(|l| !l.trim().is_empty()).ok_or_else(|| Error::data(path, "is empty"))?;
            let rows =
                if first.trim_start().starts_with('{') { parse_jsonl(path, &text)? } else { parse_csv(path, &text)? };
            Ok((into_records(path, rows)?, format!("{} (sha256 {digest})", path.display())))
        }
        ScoresInput::Pair { with, without } => {
            let (tw, dw) = read_text(with)?;
            let (to, dout) = read_text(without)?;
            let mut runs = Vec::new();
            for (path, text, side) in [(with, &tw, Side::With), (without, &to, Side::Without)] {
                let rows = parse_column(path, text, side)?;
                if rows.is_empty() {
                    return Err(Error::data(path, "has no score: every side needs scores"));
                }
                runs.extend(rows.into_iter().enumerate().map(|(i, r)| record(side, i as u64, r.2, r.3)));
            }
            Ok((runs, format!("{} (sha256 {dw}) with, {} (sha256 {dout}) without", with.display(), without.display())))
        }
    }
}

/// The audit report of scores produced anywhere: [`read_scores`], then
/// [`crate::audit::engine::analyse_scores`] with `settings`.
///
/// # Proof definition
/// As [`crate::audit::engine::analyse_scores`]: valid when the rows are independent outcomes of
/// the mechanism on D (canary out) and D' (canary in).
///
/// # Errors
/// As [`read_scores`] and [`crate::audit::engine::analyse_scores`].
pub fn audit_from_scores(input: &ScoresInput, settings: &AnalysisSettings) -> Result<AuditReport> {
    let (runs, source) = read_scores(input)?;
    analyse_scores(settings, &runs, &source)
}
