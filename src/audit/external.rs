//! External trainers: audits of training code dpaudit did not write (`[target] kind =
//! "command"`), following the protocol of `docs/external-trainers.md`.
//!
//! dpaudit writes the datasets D, D' (D plus the canary, last) and the canary alone into the
//! audit folder ([`write_datasets`]), runs the trainer once per run (`mode = "once"`: one process
//! per run; `mode = "worker"`: long-lived processes answering one JSON request per line), reads
//! back what it trained ([`read_run_outputs`]) and records the run's statistics in `runs.jsonl`
//! through the same resumable, sharded loop as dpaudit's own replays
//! ([`crate::audit::engine::run_pending`]).
//!
//! A run that fails (non-zero exit, timeout, `ok: false`, no model, non-finite parameters, a
//! malformed `claim.json` or `scores.json`) stops the audit with an error naming the run, the
//! file and the trainer's last stderr lines; its output folder is kept under `trainer-runs/` for
//! diagnosis. A failed run is never dropped (dropping failures would bias the bound); `--resume`
//! (running the same command again) retries it.
use crate::audit::engine::{load_audit_data, open_audit_folder, run_pending, ClaimReport, Progress, Shard};
use crate::audit::replay::{run_seed, spec_input_canary, RunRecord, Side};
use crate::audit::spec::{AuditSpec, CommandMode, CommandTarget};
use crate::data::Dataset;
use crate::durable::write_atomically;
use crate::error::{Error, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The protocol version dpaudit speaks (`"protocol"` in every request).
pub const PROTOCOL: u32 = 1;
/// The folder of the audit's datasets, inside the audit folder.
pub const DATASETS_DIR: &str = "datasets";
/// The folder of the runs' output folders, inside the audit folder.
pub const WORK_DIR: &str = "trainer-runs";
/// The trainer's last stderr lines quoted in an error.
const STDERR_LINES: usize = 20;
/// Largest output file read back (a model of 256 million f64 parameters).
const MAX_OUTPUT_BYTES: u64 = 2 << 30;
/// Largest `claim.json` or `scores.json` read back.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// The statistic `‖θ_T − θ_0‖` (from `initial.safetensors` and `model.safetensors`).
pub const PARAM_CHANGE_NORM: &str = "param-change-norm";
/// The statistic `max_t ‖θ_{t+1} − θ_t‖` (from `iterates.safetensors`).
pub const MAX_STEP_NORM: &str = "max-step-norm";
/// The statistic `Σ_t ‖θ_{t+1} − θ_t‖` (from `iterates.safetensors`).
pub const SUM_STEP_NORM: &str = "sum-step-norm";
/// The prefix of a statistic the trainer reported in `scores.json`.
pub const TRAINER_PREFIX: &str = "trainer:";

/// Everything an external audit's runs share: the spec, D and the canary.
#[derive(Debug, Clone)]
pub struct ExternalContext {
    spec: AuditSpec,
    target: CommandTarget,
    train: Dataset,
    /// The canary image (8-bit pixels, as both file formats hold it) and its label.
    canary: (Vec<u8>, u8),
    spec_digest: String,
}

impl ExternalContext {
    /// Loads the spec's data and builds its canary (the same draw as dpaudit's own input canaries,
    /// [`spec_input_canary`]; the out-of-distribution canary's pixels are rounded to 8 bits so that
    /// the IDX and NumPy files hold the same image).
    ///
    /// # Errors
    /// A built-in target; missing or corrupt data; a dataset that is not single-channel images.
    pub fn new(spec: &AuditSpec) -> Result<Self> {
        spec.validate()?;
        let target = spec
            .command()
            .ok_or_else(|| Error::invalid("target.kind", "built-in", "is not an external trainer"))?
            .clone();
        let program = &target.argv[0];
        if !program_exists(program) {
            return Err(Error::invalid(
                "target.argv",
                program,
                "no such program (a path is taken from the current folder; a bare name is searched on PATH)",
            ));
        }
        let (train, test) = load_audit_data(&target.dataset, target.train_examples)?;
        if train.shape().channels != 1 {
            return Err(Error::invalid(
                "target.dataset",
                &target.dataset,
                "external trainers get MNIST-format folders of single-channel images",
            ));
        }
        let (pixels, label) = spec_input_canary(spec, &train, &test)?.ok_or_else(|| {
            Error::invalid("canary.kind", format!("{:?}", spec.canary.kind), "is not an input canary")
        })?;
        let label = u8::try_from(label).map_err(|_| Error::invalid("canary.label", label, "must fit in a byte"))?;
        let pixels = pixels.iter().map(|&p| (f64::from(p) * 255.0).round().clamp(0.0, 255.0) as u8).collect();
        Ok(ExternalContext { spec: spec.clone(), target, train, canary: (pixels, label), spec_digest: spec.digest() })
    }

    /// The spec.
    pub fn spec(&self) -> &AuditSpec {
        &self.spec
    }

    /// The external trainer.
    pub fn target(&self) -> &CommandTarget {
        &self.target
    }

    /// Training examples per run on D.
    pub fn train_examples(&self) -> usize {
        self.train.len()
    }
}

/// Whether `program` names a file: a path (with a `/`) from the current folder, or a bare name on
/// `PATH`.
pub(crate) fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
    }
}

/// The absolute paths of an audit's datasets.
#[derive(Debug, Clone)]
pub struct DatasetPaths {
    /// D.
    pub without: PathBuf,
    /// D' = D plus the canary (last).
    pub with: PathBuf,
    /// The canary alone.
    pub canary: PathBuf,
}

/// A NumPy v1.0 `.npy` file: `descr` (e.g. `<f4`), the shape, then the raw little-endian data.
pub(crate) fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of
    // 64 and ended by a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// The files of one dataset folder: IDX images and labels, `x.npy`, `y.npy`, `dataset.json`.
pub(crate) fn dataset_files(
    pixels: &[u8],
    labels: &[u8],
    rows: usize,
    cols: usize,
    classes: usize,
) -> Vec<(&'static str, Vec<u8>)> {
    let n = labels.len();
    let be = |v: usize| (v as u32).to_be_bytes();
    let mut images = vec![0, 0, 8, 3];
    images.extend(be(n));
    images.extend(be(rows));
    images.extend(be(cols));
    images.extend(pixels);
    let mut idx_labels = vec![0, 0, 8, 1];
    idx_labels.extend(be(n));
    idx_labels.extend(labels);
    let x: Vec<u8> = pixels.iter().flat_map(|&p| (f32::from(p) / 255.0).to_le_bytes()).collect();
    let y: Vec<u8> = labels.iter().flat_map(|&l| i64::from(l).to_le_bytes()).collect();
    let json = serde_json::json!({"examples": n, "shape": [rows, cols], "classes": classes});
    vec![
        ("train-images-idx3-ubyte", images),
        ("train-labels-idx1-ubyte", idx_labels),
        ("x.npy", npy("<f4", &[n, rows, cols], &x)),
        ("y.npy", npy("<i8", &[n], &y)),
        ("dataset.json", format!("{json}\n").into_bytes()),
    ]
}

/// Writes one dataset folder atomically (a temporary folder, each file fsynced, renamed into
/// place), or checks that the folder already there holds exactly these files (a resumed audit).
pub(crate) fn write_dataset_folder(path: &Path, files: &[(&'static str, Vec<u8>)]) -> Result<()> {
    if path.exists() {
        for (name, bytes) in files {
            let p = path.join(name);
            let old = std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
            if &old != bytes {
                return Err(Error::data(
                    &p,
                    "differs from what the spec's data gives: the data changed since the audit started (or the file was edited); use a new audit folder",
                ));
            }
        }
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}-{:016x}", std::process::id(), rand::random::<u64>()));
    let result = (|| -> std::io::Result<()> {
        std::fs::create_dir(&tmp)?;
        for (file, bytes) in files {
            let mut f = std::fs::File::create(tmp.join(file))?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(parent).and_then(|d| d.sync_all())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

/// Writes `datasets/without-canary`, `datasets/with-canary` (the canary last) and
/// `datasets/canary` into the audit folder `dir` (once per audit: a resumed audit checks that
/// they are unchanged) and returns their absolute paths.
///
/// # Errors
/// I/O errors; dataset folders that differ from the spec's data.
pub fn write_datasets(ctx: &ExternalContext, dir: &Path) -> Result<DatasetPaths> {
    let root = dir.join(DATASETS_DIR);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let root = root.canonicalize().map_err(|e| Error::io(format!("resolving {}", root.display()), e))?;
    let shape = ctx.train.shape();
    let (rows, cols, classes) = (shape.height, shape.width, ctx.train.classes());
    let (cpx, clabel) = &ctx.canary;
    let paths = DatasetPaths {
        without: root.join("without-canary"),
        with: root.join("with-canary"),
        canary: root.join("canary"),
    };
    write_dataset_folder(&paths.without, &dataset_files(ctx.train.pixels(), ctx.train.labels(), rows, cols, classes))?;
    let mut px = ctx.train.pixels().to_vec();
    px.extend(cpx);
    let mut labels = ctx.train.labels().to_vec();
    labels.push(*clabel);
    write_dataset_folder(&paths.with, &dataset_files(&px, &labels, rows, cols, classes))?;
    write_dataset_folder(&paths.canary, &dataset_files(cpx, &[*clabel], rows, cols, classes))?;
    Ok(paths)
}

/// One run as the trainer sees it.
#[derive(Debug, Clone)]
pub(crate) struct RunRequest {
    /// The opaque run number (not the side).
    run: u64,
    side: Side,
    index: u64,
    seed: u64,
    data: PathBuf,
    out: PathBuf,
    json: serde_json::Value,
    /// The run as the user sees it in an error.
    label: String,
}

impl RunRequest {
    fn new(ctx: &ExternalContext, paths: &DatasetPaths, work: &Path, side: Side, index: u64) -> Self {
        let seed = run_seed(ctx.spec.attack.seed, side, index);
        // The seed's top 53 bits: opaque (it does not say the side) and exact in JSON.
        let run = seed >> 11;
        let data = if side == Side::With { paths.with.clone() } else { paths.without.clone() };
        let out = work.join(format!("run-{run}"));
        let json = serde_json::json!({
            "protocol": PROTOCOL,
            "run": run,
            "data": data.display().to_string(),
            "canary": paths.canary.display().to_string(),
            "out": out.display().to_string(),
            "seed": seed,
            "options": ctx.target.options,
        });
        // The run as the user sees it in an error (with the side the trainer is not told).
        let label = format!(
            "run {run} ({}, index {index}, seed {seed})",
            if side == Side::With { "with the canary" } else { "without the canary" }
        );
        RunRequest { run, side, index, seed, data, out, json, label }
    }

    /// A request of another experiment (membership inference: `label` names its model): the
    /// request `json` (with `"run"`, the opaque `run`), its dataset folder `data` and output
    /// folder `out`.
    pub(crate) fn other(
        run: u64,
        seed: u64,
        data: PathBuf,
        out: PathBuf,
        json: serde_json::Value,
        label: String,
    ) -> Self {
        RunRequest { run, side: Side::Without, index: 0, seed, data, out, json, label }
    }

    /// The run's output folder.
    pub(crate) fn out(&self) -> &Path {
        &self.out
    }

    /// The run as the user sees it in an error.
    fn label(&self) -> String {
        self.label.clone()
    }

    /// An error of this run about `file`.
    pub(crate) fn fail(&self, file: &Path, why: impl std::fmt::Display, stderr: &[String]) -> Error {
        let tail = if stderr.is_empty() {
            "the trainer wrote nothing on stderr".to_string()
        } else {
            format!("the trainer's last stderr lines:\n{}", stderr.join("\n"))
        };
        Error::data(
            file,
            format!(
                "external trainer, {}: {why} (its output folder {} is kept; running the same command again resumes and retries this run)\n{tail}",
                self.label(),
                self.out.display()
            ),
        )
    }
}

/// The last `n` lines of a text file (lossy UTF-8).
fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

/// Kills a child's whole process group (the trainer and anything it started).
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads
        // (started with process_group(0)); no memory is touched.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A run's command line in `once` mode, with the placeholders substituted.
fn once_argv(argv: &[String], req: &RunRequest, request_file: &Path) -> Vec<String> {
    argv.iter()
        .map(|a| {
            a.replace("{request}", &request_file.display().to_string())
                .replace("{data}", &req.data.display().to_string())
                .replace("{out}", &req.out.display().to_string())
                .replace("{seed}", &req.seed.to_string())
        })
        .collect()
}

/// Makes the run's empty output folder (a failed earlier try's folder is removed first).
pub(crate) fn fresh_out(req: &RunRequest) -> Result<()> {
    if req.out.exists() {
        std::fs::remove_dir_all(&req.out).map_err(|e| Error::io(format!("clearing {}", req.out.display()), e))?;
    }
    std::fs::create_dir_all(&req.out).map_err(|e| Error::io(format!("creating {}", req.out.display()), e))
}

/// Runs one request in `once` mode: `request.json` in the output folder, then `argv` with its
/// placeholders, stdout and stderr to `stdout.log` and `stderr.log` there, killed with its
/// process group after the timeout.
fn run_once(target: &CommandTarget, req: &RunRequest) -> Result<()> {
    use std::os::unix::process::CommandExt;
    fresh_out(req)?;
    let request_file = req.out.join("request.json");
    write_atomically(&request_file, format!("{}\n", req.json).as_bytes())?;
    let argv = once_argv(&target.argv, req, &request_file);
    let log = |name: &str| {
        let p = req.out.join(name);
        std::fs::File::create(&p).map_err(|e| Error::io(format!("creating {}", p.display()), e))
    };
    let stderr_path = req.out.join("stderr.log");
    let program = Path::new(&argv[0]);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log("stdout.log")?)
        .stderr(log("stderr.log")?)
        .process_group(0)
        .spawn()
        .map_err(|e| req.fail(program, format!("could not start {:?}: {e}", argv[0]), &[]))?;
    let deadline = Instant::now() + Duration::from_secs_f64(target.timeout_seconds);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(req.fail(
                    program,
                    format!("the trainer exited with {status}"),
                    &tail_lines(&stderr_path, STDERR_LINES),
                ))
            }
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                return Err(req.fail(
                    program,
                    format!("the run took longer than timeout_seconds = {} and was killed", target.timeout_seconds),
                    &tail_lines(&stderr_path, STDERR_LINES),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                kill_group(&mut child);
                return Err(Error::io(format!("waiting for the trainer of {}", req.label()), e));
            }
        }
    }
}

/// A long-lived trainer process (`mode = "worker"`).
struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerProcess {
    fn start(target: &CommandTarget) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&target.argv[0])
            .args(&target.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::data(&target.argv[0], format!("could not start the external trainer: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let stderr_pipe = child.stderr.take().expect("piped");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let sink = Arc::clone(&stderr);
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(l) = line else { return };
                let mut q = sink.lock().expect("lock");
                if q.len() == STDERR_LINES {
                    q.pop_front();
                }
                q.push_back(l);
            }
        });
        Ok(WorkerProcess { child, stdin, replies, stderr, stderr_thread: Some(stderr_thread) })
    }

    /// Ends the process (end of stdin, then a kill of its process group after a second) and
    /// returns its last stderr lines, read to the end.
    fn shut_down(mut self) -> Vec<String> {
        self.end();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let lines = self.stderr.lock().expect("lock").iter().cloned().collect();
        lines
    }

    /// End of stdin means exit; a process that does not exit within a second is killed.
    fn end(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Its children may still hold the pipes.
                kill_group(&mut self.child);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_group(&mut self.child);
    }

    /// Sends one request and waits for its reply; on failure, why (the caller shuts the process
    /// down and quotes its stderr).
    fn serve(&mut self, target: &CommandTarget, req: &RunRequest) -> std::result::Result<(), String> {
        let line = format!("{}\n", req.json);
        let sent = match self.stdin.as_mut() {
            Some(s) => s.write_all(line.as_bytes()).and_then(|()| s.flush()),
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        };
        if let Err(e) = sent {
            kill_group(&mut self.child);
            return Err(format!("the trainer process is gone (writing the request: {e})"));
        }
        let timeout = Duration::from_secs_f64(target.timeout_seconds);
        let reply = match self.replies.recv_timeout(timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group(&mut self.child);
                return Err(format!(
                    "no reply within timeout_seconds = {}: the trainer was killed",
                    target.timeout_seconds
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Give the process a moment to finish exiting, for its status.
                let deadline = Instant::now() + Duration::from_secs(2);
                let status = loop {
                    match self.child.try_wait() {
                        Ok(Some(s)) => break Some(s),
                        Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                        _ => break None,
                    }
                };
                kill_group(&mut self.child);
                let how = status.map_or_else(|| "closed its stdout".to_string(), |s| format!("exited with {s}"));
                return Err(format!("the trainer {how} before answering"));
            }
        };
        #[derive(Deserialize)]
        struct Reply {
            run: u64,
            ok: bool,
            #[serde(default)]
            error: Option<String>,
        }
        let r: Reply = serde_json::from_str(&reply).map_err(|e| {
            format!(
                "malformed reply on stdout {:?} ({e}); stdout must carry only reply lines, log to stderr",
                truncate(&reply)
            )
        })?;
        if r.run != req.run {
            return Err(format!("the reply names run {}, not {}", r.run, req.run));
        }
        if !r.ok {
            return Err(format!(
                "the trainer answered ok: false: {}",
                r.error.as_deref().unwrap_or("(no error given)")
            ));
        }
        Ok(())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.end();
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// One thread's connection to an external trainer: a worker process (started on first use,
/// restarted after a failed run) or nothing in `once` mode.
#[derive(Default)]
pub(crate) struct TrainerConnection {
    process: Option<WorkerProcess>,
}

impl TrainerConnection {
    /// Has the trainer run `req` (in a fresh output folder) and returns, in `once` mode, its last
    /// stderr lines.
    ///
    /// # Errors
    /// A trainer that could not start, failed, timed out or answered `ok: false` (the error
    /// names the run and quotes its stderr).
    pub(crate) fn train(&mut self, target: &CommandTarget, req: &RunRequest) -> Result<Vec<String>> {
        match target.mode {
            CommandMode::Once => {
                run_once(target, req)?;
                Ok(tail_lines(&req.out.join("stderr.log"), STDERR_LINES))
            }
            CommandMode::Worker => {
                fresh_out(req)?;
                if self.process.is_none() {
                    self.process = Some(WorkerProcess::start(target)?);
                }
                let p = self.process.as_mut().expect("started");
                if let Err(why) = p.serve(target, req) {
                    // A failed process is not reused: the next run starts a fresh one.
                    let stderr = self.process.take().map(WorkerProcess::shut_down).unwrap_or_default();
                    return Err(req.fail(Path::new(&target.argv[0]), why, &stderr));
                }
                Ok(Vec::new())
            }
        }
    }

    /// The error of a run whose output `file` is wrong: in worker mode the process is shut down
    /// (not reused) so that its stderr is read to the end; `stderr` is what [`Self::train`]
    /// returned.
    pub(crate) fn output_failure(
        &mut self,
        req: &RunRequest,
        file: &Path,
        why: impl std::fmt::Display,
        stderr: Vec<String>,
    ) -> Error {
        let stderr = match self.process.take() {
            Some(p) => p.shut_down(),
            None => stderr,
        };
        req.fail(file, why, &stderr)
    }
}

/// One thread's connection to the trainer, with the audit's datasets.
struct Runner<'a> {
    ctx: &'a ExternalContext,
    paths: &'a DatasetPaths,
    work: &'a Path,
    trainer: TrainerConnection,
}

impl Runner<'_> {
    /// Trains and scores one run; deletes its output folder once it is scored.
    fn run(&mut self, side: Side, index: u64) -> Result<RunRecord> {
        let start = Instant::now();
        let req = RunRequest::new(self.ctx, self.paths, self.work, side, index);
        let stderr = self.trainer.train(&self.ctx.target, &req)?;
        let outputs = match read_run_outputs(&self.ctx.spec, &req.out) {
            Ok(o) => o,
            Err(OutputError { file, why }) => return Err(self.trainer.output_failure(&req, &file, why, stderr)),
        };
        let record = outputs.into_record(self.ctx, &req, start.elapsed().as_secs_f64());
        std::fs::remove_dir_all(&req.out).map_err(|e| Error::io(format!("removing {}", req.out.display()), e))?;
        Ok(record)
    }
}

/// Runs (or resumes) the shard's runs of an external trainer into `dir`, with
/// `target.workers` processes (or processes at a time, in `once` mode) in parallel. Runs already
/// in `runs.jsonl` are skipped; each new run is appended and fsynced as it finishes.
///
/// # Errors
/// A folder holding another spec's runs; a failed run (the error names the run, the file and the
/// trainer's last stderr lines; runs recorded before it are kept); I/O errors.
pub fn run_external_audit(
    ctx: &ExternalContext,
    dir: &Path,
    shard: Shard,
    progress: Progress<'_>,
    stop: &AtomicBool,
) -> Result<Vec<RunRecord>> {
    let (_lock, existing) = open_audit_folder(&ctx.spec, dir, shard)?;
    let paths = write_datasets(ctx, dir)?;
    let work = dir.join(WORK_DIR);
    std::fs::create_dir_all(&work).map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
    let work = work.canonicalize().map_err(|e| Error::io(format!("resolving {}", work.display()), e))?;
    run_pending(
        &ctx.spec,
        dir,
        shard,
        ctx.target.workers,
        &existing,
        progress,
        stop,
        &|| Ok(Runner { ctx, paths: &paths, work: &work, trainer: TrainerConnection::default() }),
        &|r, side, index| r.run(side, index),
    )
}

/// Trains `count` records again, chosen at random (from the operating system's entropy), in the
/// audit folder `dir`, and compares score and score digest: only for a trainer declared
/// `deterministic`.
///
/// # Errors
/// A non-deterministic trainer; a record its rerun does not reproduce; run failures.
pub fn replay_check_external(
    ctx: &ExternalContext,
    dir: &Path,
    runs: &[RunRecord],
    count: usize,
    origin: &Path,
) -> Result<Vec<(Side, u64)>> {
    use rand::seq::SliceRandom;
    if count == 0 || runs.is_empty() {
        return Ok(Vec::new());
    }
    if !ctx.target.deterministic {
        return Err(Error::invalid(
            "target.deterministic",
            false,
            "records of a non-deterministic external trainer are checked for consistency but cannot be replayed",
        ));
    }
    let paths = write_datasets(ctx, dir)?;
    let work = dir.join(WORK_DIR);
    std::fs::create_dir_all(&work).map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
    let work = work.canonicalize().map_err(|e| Error::io(format!("resolving {}", work.display()), e))?;
    let mut runner = Runner { ctx, paths: &paths, work: &work, trainer: TrainerConnection::default() };
    let mut rng = rand::rngs::OsRng;
    let mut done = Vec::new();
    for r in runs.choose_multiple(&mut rng, count) {
        let again = runner.run(r.side, r.index)?;
        if again.score_digest != r.score_digest || again.score != r.score {
            return Err(Error::data(
                origin,
                format!(
                    "run record {:?} {}: the external trainer, run again from seed {}, scored {} (digest {}), the record says {} (digest {}): the trainer is not deterministic, or the record was not produced by this spec's run",
                    r.side, r.index, r.seed, again.score, &again.score_digest[..12], r.score, &r.score_digest[..r.score_digest.len().min(12)]
                ),
            ));
        }
        done.push((r.side, r.index));
    }
    done.sort();
    Ok(done)
}

/// What is wrong with one of a run's output files.
#[derive(Debug)]
pub struct OutputError {
    /// The file.
    pub file: PathBuf,
    /// What is wrong.
    pub why: String,
}

fn out_err(file: &Path, why: impl Into<String>) -> OutputError {
    OutputError { file: file.to_path_buf(), why: why.into() }
}

/// The float tensors of a safetensors file, sorted by name, as f64.
///
/// # Errors
/// A file that is missing, too large, not safetensors, or has a non-finite value.
pub fn read_float_tensors(path: &Path) -> std::result::Result<Vec<(String, Vec<f64>)>, OutputError> {
    use safetensors::tensor::Dtype;
    let bytes = crate::durable::read_at_most(path, MAX_OUTPUT_BYTES).map_err(|e| out_err(path, e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| out_err(path, format!("not a safetensors file ({e:?})")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            Dtype::F32 => {
                data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
            }
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
            _ => continue,
        };
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(out_err(path, format!("tensor {name:?} holds the non-finite value {bad}")));
        }
        out.push((name, values));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `claim.json`: the trainer's privacy claim for one run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TrainerClaim {
    /// The claimed epsilon.
    pub epsilon: f64,
    /// Its delta (must equal the spec's).
    pub delta: f64,
    /// The trainer's accountant (`rdp`, `prv`, `pld`, ...).
    pub accountant: String,
    /// The sampling scheme (`poisson`, ...).
    pub sampling: String,
    /// The mechanism as the trainer's accountant saw it, one entry per phase.
    pub history: Vec<ClaimPhase>,
    /// The library and version.
    #[serde(default)]
    pub library: Option<String>,
}

/// One phase of a trainer's privacy history.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ClaimPhase {
    /// Noise multiplier sigma.
    pub noise_multiplier: f64,
    /// Sampling rate q.
    pub sample_rate: f64,
    /// Steps.
    pub steps: u64,
}

/// What one run's output folder holds, read and checked.
#[derive(Debug, Clone)]
pub struct RunOutputs {
    /// Every float tensor of `model.safetensors`, sorted by name.
    pub parameters: Vec<(String, Vec<f64>)>,
    /// The run's statistics (`trainer:<name>`, `param-change-norm`, `max-step-norm`,
    /// `sum-step-norm`, as the files allow).
    pub statistics: BTreeMap<String, f64>,
    /// The run's `claim.json`, when it wrote one.
    pub claim: Option<TrainerClaim>,
    /// The statistic that scores the run ([`score_statistic`]).
    pub score: f64,
}

fn norm_of_difference(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let mut sum = 0.0;
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        if na != nb || va.len() != vb.len() {
            return None;
        }
        sum += va.iter().zip(vb).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
    }
    Some(sum.sqrt())
}

/// The name of the statistic that scores a run: `attack.statistic` when it names one; for
/// `"select"` or none, the first of the run's statistics in sorted name order (the selection
/// among all of them is made by the analysis, on held-out runs; `score` is only the default).
///
/// # Errors
/// A run without that statistic, or without any.
pub fn score_statistic<'a>(
    spec: &'a AuditSpec,
    statistics: &'a BTreeMap<String, f64>,
) -> std::result::Result<&'a str, String> {
    match spec.attack.statistic.as_deref() {
        Some(name) if name != "select" => {
            if statistics.contains_key(name) {
                Ok(name)
            } else {
                Err(format!(
                    "the spec's attack.statistic {name:?} is not among the run's statistics ({})",
                    statistics.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            }
        }
        _ => statistics.keys().next().map(String::as_str).ok_or_else(|| {
            "the run gave no statistic: write scores.json, or initial.safetensors or iterates.safetensors beside model.safetensors".to_string()
        }),
    }
}

/// Reads and checks one run's output folder `out` (`docs/external-trainers.md`): the model, the
/// optional initial parameters, iterates and scores, and `claim.json` (required when the claim's
/// epsilon is `"trainer"` or `"accountant"`; its delta must equal the spec's).
///
/// # Errors
/// The file that is missing or malformed, and why.
pub fn read_run_outputs(spec: &AuditSpec, out: &Path) -> std::result::Result<RunOutputs, OutputError> {
    use crate::audit::spec::ClaimedEpsilon;
    let model_path = out.join("model.safetensors");
    if !model_path.exists() {
        return Err(out_err(&model_path, "the trainer wrote no model.safetensors"));
    }
    let parameters = read_float_tensors(&model_path)?;
    if parameters.is_empty() {
        return Err(out_err(&model_path, "holds no float tensor"));
    }
    let mut statistics = BTreeMap::new();
    let initial_path = out.join("initial.safetensors");
    let initial = if initial_path.exists() { Some(read_float_tensors(&initial_path)?) } else { None };
    if let Some(init) = &initial {
        let d = norm_of_difference(&parameters, init).ok_or_else(|| {
            out_err(&initial_path, "does not hold the same tensors (names and sizes) as model.safetensors")
        })?;
        statistics.insert(PARAM_CHANGE_NORM.to_string(), d);
    }
    let iterates_path = out.join("iterates.safetensors");
    if iterates_path.exists() {
        let all = read_float_tensors(&iterates_path)?;
        let mut steps: BTreeMap<u64, Vec<(String, Vec<f64>)>> = BTreeMap::new();
        for (name, v) in all {
            let (step, param) = name
                .strip_prefix("step-")
                .and_then(|r| r.split_once('/'))
                .and_then(|(s, p)| Some((s.parse::<u64>().ok()?, p.to_string())))
                .ok_or_else(|| out_err(&iterates_path, format!("tensor {name:?} is not named step-NNNNNN/<name>")))?;
            steps.entry(step).or_default().push((param, v));
        }
        let mut previous = initial.clone();
        let (mut max, mut sum) = (0.0f64, 0.0f64);
        for (step, params) in &steps {
            if let Some(p) = &previous {
                let d = norm_of_difference(params, p).ok_or_else(|| {
                    out_err(&iterates_path, format!("step {step} does not hold the same tensors as the step before it"))
                })?;
                max = max.max(d);
                sum += d;
            }
            previous = Some(params.clone());
        }
        if steps.len() + usize::from(initial.is_some()) >= 2 {
            statistics.insert(MAX_STEP_NORM.to_string(), max);
            statistics.insert(SUM_STEP_NORM.to_string(), sum);
        }
    }
    let scores_path = out.join("scores.json");
    if scores_path.exists() {
        let bytes = crate::durable::read_at_most(&scores_path, MAX_JSON_BYTES)
            .map_err(|e| out_err(&scores_path, e.to_string()))?;
        let scores: BTreeMap<String, f64> = serde_json::from_slice(&bytes)
            .map_err(|e| out_err(&scores_path, format!("malformed: must be a JSON object of numbers ({e})")))?;
        for (name, v) in scores {
            if !v.is_finite() || name.is_empty() {
                return Err(out_err(&scores_path, format!("statistic {name:?} = {v} is not a named finite number")));
            }
            statistics.insert(format!("{TRAINER_PREFIX}{name}"), v);
        }
    }
    let claim_path = out.join("claim.json");
    let claim = if claim_path.exists() {
        let bytes = crate::durable::read_at_most(&claim_path, MAX_JSON_BYTES)
            .map_err(|e| out_err(&claim_path, e.to_string()))?;
        let c: TrainerClaim = serde_json::from_slice(&bytes)
            .map_err(|e| out_err(&claim_path, format!("malformed claim ({e}); see docs/external-trainers.md")))?;
        if !(c.epsilon >= 0.0 && c.epsilon.is_finite()) {
            return Err(out_err(&claim_path, format!("epsilon {} is not a finite number >= 0", c.epsilon)));
        }
        if c.delta != spec.claim.delta {
            return Err(out_err(
                &claim_path,
                format!("delta {} is not the spec's claim.delta {}", c.delta, spec.claim.delta),
            ));
        }
        for p in &c.history {
            crate::accounting::Phase::new(p.sample_rate, p.noise_multiplier, p.steps)
                .map_err(|e| out_err(&claim_path, format!("history entry {p:?}: {e}")))?;
        }
        Some(c)
    } else if matches!(spec.claim.epsilon, ClaimedEpsilon::Trainer(_) | ClaimedEpsilon::Accountant(_)) {
        return Err(out_err(
            &claim_path,
            "missing: the spec's claim.epsilon takes the claim from the trainer's claim.json",
        ));
    } else {
        None
    };
    let name = score_statistic(spec, &statistics).map_err(|why| out_err(out, why))?;
    let score = statistics[name];
    Ok(RunOutputs { parameters, statistics, claim, score })
}

impl RunOutputs {
    fn into_record(self, ctx: &ExternalContext, req: &RunRequest, seconds: f64) -> RunRecord {
        let phases: Vec<(f64, f64, u64)> = self
            .claim
            .as_ref()
            .map(|c| c.history.iter().map(|p| (p.sample_rate, p.noise_multiplier, p.steps)).collect())
            .unwrap_or_default();
        // dpaudit cannot see the trainer's steps: applied = ledger = the steps the claim reports.
        let steps = phases.iter().map(|p| p.2).sum();
        RunRecord {
            side: req.side,
            index: req.index,
            seed: req.seed,
            score: self.score,
            seconds,
            applied_steps: steps,
            ledger_steps: steps,
            ledger_phases: phases,
            spec_digest: ctx.spec_digest.clone(),
            score_digest: self.digest(),
            statistics: self.statistics,
            claimed_epsilon: self.claim.map(|c| c.epsilon),
        }
    }

    /// SHA-256 of the parameters (each tensor's name, a zero byte, its values as f64
    /// little-endian, in name order), then the statistics (name, zero byte, value), then the
    /// score.
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (name, v) in &self.parameters {
            h.update(name.as_bytes());
            h.update([0]);
            for x in v {
                h.update(x.to_le_bytes());
            }
        }
        for (name, v) in &self.statistics {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(v.to_le_bytes());
        }
        h.update(self.score.to_le_bytes());
        hex::encode(h.finalize())
    }
}

/// The claim of an audit whose `claim.epsilon` is `"trainer"`: the largest epsilon any run's
/// `claim.json` claimed (the most generous reading for the trainer: D and D' may give slightly
/// different claims, e.g. through Opacus' sample rate 1/|D|), with the spread and dpaudit's own
/// PLD recomputation from that run's history shown in `source`.
///
/// # Errors
/// A run without a claimed epsilon, or no runs.
pub fn trainer_claim(spec: &AuditSpec, runs: &[RunRecord]) -> Result<ClaimReport> {
    use crate::accounting::calibration::EpsilonAccountant;
    let mut top: Option<&RunRecord> = None;
    let mut low = f64::INFINITY;
    for r in runs {
        let e = r.claimed_epsilon.ok_or_else(|| {
            Error::data(
                crate::audit::engine::RUNS_FILE,
                format!("run record {:?} {} has no claimed epsilon, but claim.epsilon = \"trainer\"", r.side, r.index),
            )
        })?;
        low = low.min(e);
        if top.and_then(|t| t.claimed_epsilon).is_none_or(|t| e > t) {
            top = Some(r);
        }
    }
    let top = top.ok_or_else(|| Error::invalid("runs", 0, "no runs"))?;
    let eps = top.claimed_epsilon.unwrap_or(f64::NAN);
    let desc: Vec<String> =
        top.ledger_phases.iter().map(|(q, s, t)| format!("q = {q}, sigma = {s}, {t} steps")).collect();
    let recomputed = top
        .ledger_phases
        .iter()
        .map(|&(q, s, t)| crate::accounting::Phase::new(q, s, t))
        .collect::<Result<Vec<_>>>()
        .and_then(|p| crate::accounting::pld::PldAccountant::default().epsilon_of(&p, spec.claim.delta));
    Ok(ClaimReport {
        epsilon: eps,
        delta: spec.claim.delta,
        source: format!(
            "the trainer's own claim (claim.json): the largest of the {} runs' claims, which ranged from {low} to {eps}; its history ({}) gives epsilon {} by dpaudit's PLD accountant (Poisson)",
            runs.len(),
            if desc.is_empty() { "empty".to_string() } else { desc.join("; ") },
            match recomputed {
                Ok(e) => format!("{e:.4}"),
                Err(e) => format!("that could not be computed ({e})"),
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_are_aligned_and_parseable() {
        let f = npy("<f4", &[2, 3, 4], &[0u8; 96]);
        assert_eq!(&f[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([f[8], f[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&f[10..10 + hl]).unwrap();
        assert!(header.contains("'shape': (2, 3, 4)") && header.ends_with('\n'));
        assert_eq!(f.len(), 10 + hl + 96);
        let y = npy("<i8", &[5], &[0u8; 40]);
        let hl = u16::from_le_bytes([y[8], y[9]]) as usize;
        assert!(std::str::from_utf8(&y[10..10 + hl]).unwrap().contains("'shape': (5,)"));
    }

    /// A safetensors file of (name, dtype, raw little-endian bytes), written by hand.
    fn safetensors_file(tensors: &[(&str, &str, Vec<u8>, usize)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data: Vec<u8> = Vec::new();
        for (name, dtype, raw, n) in tensors {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": [n], "data_offsets": [data.len(), data.len() + raw.len()]}),
            );
            data.extend(raw);
        }
        let mut h = serde_json::Value::Object(header).to_string().into_bytes();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        out
    }

    #[test]
    fn every_float_dtype_is_read_sorted_by_name_and_integers_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let f16: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let bf16: Vec<u8> = [1.0f32, 3.0].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        let f64s: Vec<u8> = [0.1f64].iter().flat_map(|x| x.to_le_bytes()).collect();
        let f32s: Vec<u8> = [0.25f32].iter().flat_map(|x| x.to_le_bytes()).collect();
        let ints: Vec<u8> = [7i64].iter().flat_map(|x| x.to_le_bytes()).collect();
        let file = safetensors_file(&[
            ("z.half", "F16", f16, 2),
            ("b.brain", "BF16", bf16, 2),
            ("d.double", "F64", f64s, 1),
            ("a.float", "F32", f32s, 1),
            ("count", "I64", ints, 1),
        ]);
        std::fs::write(&p, file).unwrap();
        let t = read_float_tensors(&p).unwrap();
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.float", "b.brain", "d.double", "z.half"]);
        assert_eq!(t[0].1, vec![0.25]);
        assert_eq!(t[1].1, vec![1.0, 3.0]);
        assert_eq!(t[2].1, vec![0.1]);
        assert_eq!(t[3].1, vec![1.5, -2.0]);
        let nan: Vec<u8> = [f32::NAN].iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(&p, safetensors_file(&[("w", "F32", nan, 1)])).unwrap();
        let e = read_float_tensors(&p).unwrap_err();
        assert!(e.why.contains("non-finite"), "{}", e.why);
        std::fs::write(&p, b"not a safetensors file").unwrap();
        assert!(read_float_tensors(&p).unwrap_err().why.contains("not a safetensors file"));
    }

    #[test]
    fn differences_of_mismatched_tensors_are_refused() {
        let a = vec![("w".to_string(), vec![3.0, 4.0])];
        let b = vec![("w".to_string(), vec![0.0, 0.0])];
        assert_eq!(norm_of_difference(&a, &b), Some(5.0));
        assert_eq!(norm_of_difference(&a, &[("v".to_string(), vec![0.0, 0.0])]), None);
        assert_eq!(norm_of_difference(&a, &[("w".to_string(), vec![0.0])]), None);
    }
}
