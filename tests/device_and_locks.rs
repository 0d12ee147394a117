//! `--device` and folder locks, as a user of the built binary sees them: a CUDA device asked for
//! on a machine without one is a one-line error with exit 13 before anything is written; without
//! `--device` everything runs on the CPU and says so in metrics.json; a second process writing the
//! same run or audit folder is refused at once with exit 14, leaving the ledger and runs.jsonl as
//! they were.
use dpaudit::accounting::ledger::Ledger;
use dpaudit::folder_lock::FolderLock;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXIT_DEVICE_UNAVAILABLE: i32 = 13;
const EXIT_FOLDER_BUSY: i32 = 14;

fn dpaudit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny private logreg run on the fixture into `out` (about 20 steps).
fn train_args(out: &Path, epochs: &str) -> Vec<String> {
    [
        "train",
        "--dataset",
        "fixture",
        "--model",
        "logreg",
        "--epochs",
        epochs,
        "--lot-size",
        "100",
        "--noise-multiplier",
        "1.0",
        "--lr",
        "0.5",
        "--checkpoint-every",
        "5",
        "--seed",
        "5",
        "--threads",
        "1",
        "--json",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

const GAN_TINY: [&str; 16] = [
    "gan",
    "train",
    "--dataset",
    "fixture",
    "--noise-multiplier",
    "1.0",
    "--epochs",
    "0.04",
    "--lot-size",
    "40",
    "--n-critic",
    "2",
    "--z-dim",
    "8",
    "--g-width",
    "4",
];

#[test]
fn cuda_on_a_machine_without_it_is_one_line_and_exit_13_before_anything_is_written() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has CUDA, so --device cuda is not refused here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let spec = "audits/dirac-eps2.toml";
    let cases: Vec<Vec<String>> = vec![
        [train_args(&dir.path().join("train"), "1"), vec!["--device".into(), "cuda".into()]].concat(),
        GAN_TINY
            .iter()
            .map(|s| s.to_string())
            .chain(["--out".into(), p("gan"), "--device".into(), "cuda:0".into()])
            .collect(),
        ["audit", "run", spec, "--out", &p("audit"), "--device", "cuda"].map(String::from).to_vec(),
        ["gan", "sample", "--run", &p("gan"), "--count", "10", "--out", &p("release"), "--device", "cuda"]
            .map(String::from)
            .to_vec(),
        ["evaluate", "synthetic", "--synthetic", "x", "--real", "y", "--device", "cuda"].map(String::from).to_vec(),
        ["attack", "mia", "--target-config", "x.toml", "--out", &p("mia"), "--device", "cuda:1"]
            .map(String::from)
            .to_vec(),
        ["demo", "--tiny", "--out", &p("demo"), "--device", "cuda"].map(String::from).to_vec(),
    ];
    for args in &cases {
        let o = Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(args).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(EXIT_DEVICE_UNAVAILABLE), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err}");
        assert!(err.starts_with("error: cuda:") && err.contains("no CUDA device is available"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    // A malformed device is a usage error (clap's exit 2), naming the accepted forms.
    let o = dpaudit(&["train", "--device", "gpu", "--out", &p("x")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must be cpu, cuda, cuda:N (N = 0, 1, ...) or auto"), "{}", stderr(&o));
}

#[test]
fn without_device_train_and_gan_train_run_on_the_cpu_and_record_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(train_args(&out, "1")).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["device"], "cpu");
    assert!(m.get("cpu_only_routes_skipped").is_none(), "no CPU-only route is skipped on the CPU");

    let gan = dir.path().join("gan");
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(GAN_TINY)
        .args(["--d-width", "4", "--seed", "2", "--json", "--out"])
        .arg(&gan)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["device"], "cpu");
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gan.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(on_disk["device"], "cpu");
}

/// Waits until `path` holds at least `lines` lines, or `deadline` passes.
fn wait_for_lines(path: &Path, lines: usize, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0) >= lines {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_second_resume_on_a_folder_being_trained_is_refused_and_the_ledger_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let ledger = out.join("ledger.jsonl");
    // Process A: a long run (2,000 steps), killed once B has been refused.
    let mut a = Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(train_args(&out, "100"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for_lines(&ledger, 3, Duration::from_secs(120)), "process A never started training");
    // Process B: `--resume` on the same folder while A writes it.
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(train_args(&out, "100")).arg("--resume").output().unwrap();
    let still_running = a.try_wait().unwrap().is_none();
    let _ = a.kill();
    let _ = a.wait();
    assert!(still_running, "process A ended before B was tried; the test proves nothing");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_FOLDER_BUSY), "{err}");
    assert!(err.contains("another dpaudit process") && err.contains(&format!("(pid {})", a.id())), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A's ledger is whole: every line parses, steps numbered without gaps or repeats.
    let entries = Ledger::open(&ledger).expect("the ledger is intact").entries().to_vec();
    assert!(entries.len() >= 3);

    // A was killed (SIGKILL): the kernel released its lock, so the folder can be locked again.
    drop(FolderLock::acquire(&out).expect("released when its holder died"));
}

#[test]
fn a_lock_held_on_a_run_folder_refuses_train_resume_and_gan_train_without_touching_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(train_args(&out, "1")).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ledger_before = std::fs::read(out.join("ledger.jsonl")).unwrap();
    let lock = FolderLock::acquire(&out).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(train_args(&out, "2")).arg("--resume").output().unwrap();
    assert_eq!(o.status.code(), Some(EXIT_FOLDER_BUSY), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("(pid {})", std::process::id())), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("ledger.jsonl")).unwrap(), ledger_before, "ledger untouched");
    // gan train --force on a locked folder: refused before anything in it is removed.
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(GAN_TINY)
        .args(["--d-width", "4", "--force", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(EXIT_FOLDER_BUSY), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("ledger.jsonl")).unwrap(), ledger_before, "nothing removed");
    drop(lock);
    // Released: a resume of the run's own recipe runs (one of another recipe, such as 2 epochs,
    // is refused: tests/crash_resume.rs).
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(train_args(&out, "1")).arg("--resume").output().unwrap();
    assert!(o.status.success(), "released: the resume runs: {}", stderr(&o));
}

const AUDIT_SPEC: &str = r#"
name = "lock-test"
[target]
dataset = "fixture"
train_examples = 100
model = "logreg"
lot_size = 100
steps = 4
noise_multiplier = 4.0
max_grad_norm = 1.0
lr = 1.0
[claim]
epsilon = 2.0
delta = 1e-5
[canary]
kind = "dirac"
norm = 1.0
[attack]
threat_model = "white-box"
runs_per_side = 4
threshold = "held-out"
seed = 11
"#;

fn rows(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("runs.jsonl")).map(|t| t.lines().map(String::from).collect()).unwrap_or_default()
}

#[test]
fn a_second_audit_run_on_a_folder_being_written_is_refused_without_duplicate_rows() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, AUDIT_SPEC).unwrap();
    let out = dir.path().join("audit");
    let run = |out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_dpaudit"))
            .args(["audit", "run"])
            .arg(&spec)
            .arg("--out")
            .arg(out)
            .args(["--allow-inconclusive", "--threads", "1", "--recheck", "0"])
            .output()
            .unwrap()
    };
    let lock = FolderLock::acquire(&out).unwrap();
    let o = run(&out);
    assert_eq!(o.status.code(), Some(EXIT_FOLDER_BUSY), "{}", stderr(&o));
    assert!(stderr(&o).contains(&out.display().to_string()), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "only the lock file: no spec, no runs");
    drop(lock);
    let o = run(&out);
    assert!(o.status.code() == Some(0) || o.status.code() == Some(12), "{}", stderr(&o));
    let first = rows(&out);
    assert_eq!(first.len(), 8, "4 runs per side");
    let _lock = FolderLock::acquire(&out).unwrap();
    let o = run(&out);
    assert_eq!(o.status.code(), Some(EXIT_FOLDER_BUSY), "{}", stderr(&o));
    assert_eq!(rows(&out), first, "no row added, none duplicated");
    let keys: std::collections::HashSet<(String, u64)> = first
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["side"].to_string(), v["index"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(keys.len(), 8, "every (side, index) once");
}

/// `Device::Cuda(0)` through the library's entry points on a machine without CUDA: the typed
/// error, before any folder is created (not a libtorch stack trace).
#[test]
fn cuda_through_the_library_without_cuda_is_a_typed_error_at_every_entry_point() {
    use dpaudit::data::{load_mnist_dir, Split};
    use dpaudit::gan::dpgan::GanConfig;
    use dpaudit::gan::run::{train_gan, GanRunSpec};
    use dpaudit::train::dpsgd::TrainConfig;
    use dpaudit::train::optim::{LrSchedule, OptimizerKind};
    use dpaudit::train::run::{train_run, RunSpec};
    use dpaudit::Error;
    use tch::Device;
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has CUDA, so Device::Cuda(0) is not refused here");
        return;
    }
    let unavailable = |r: Result<(), Error>, what: &str| match r {
        Err(Error::DeviceUnavailable { asked, .. }) => assert_eq!(asked, "cuda:0", "{what}"),
        Err(other) => panic!("{what}: expected DeviceUnavailable, got {other}"),
        Ok(()) => panic!("{what}: accepted cuda:0 without CUDA"),
    };
    let fixture = Path::new("fixtures/mnist-small");
    let train = load_mnist_dir(fixture, Split::Train, 10).unwrap();
    let test = load_mnist_dir(fixture, Split::Test, 10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = RunSpec {
        config: TrainConfig {
            model: "logreg".into(),
            lot_size: 100.0,
            noise_multiplier: 1.0,
            max_grad_norm: 1.0,
            physical_batch: 256,
            optimizer: OptimizerKind::Sgd,
            lr: 0.5,
            schedule: LrSchedule::Constant,
            private: true,
        },
        epochs: 1.0,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(1),
        checkpoint_every: 5,
        resume: false,
        inject_fault: None,
        adversarial: None,
        public_batch: None,
        pca_noise_multiplier: None,
        pca_whiten: false,
        validation: 0,
        parameter_averaging: None,
    };
    let out = dir.path().join("run");
    unavailable(train_run(&spec, &train, &test, &out, Device::Cuda(0), &mut |_, _, _| {}).map(|_| ()), "train_run");
    let gan_spec = GanRunSpec {
        config: GanConfig { lot_size: 16.0, z_dim: 8, g_width: 4, d_width: 4, ..GanConfig::default() },
        epochs: 0.1,
        delta: 1e-5,
        target_epsilon: None,
        seed: Some(1),
        force: false,
        resume: false,
        checkpoint_every: 0,
    };
    unavailable(train_gan(&gan_spec, &train, &out, Device::Cuda(0), &mut |_, _, _| {}).map(|_| ()), "train_gan");
    let audit_spec = dpaudit::audit::spec::AuditSpec::from_toml(AUDIT_SPEC, Path::new("lock-test.toml")).unwrap();
    let ctx = dpaudit::audit::engine::prepare(&audit_spec).unwrap();
    unavailable(ctx.on_device(Device::Cuda(0)).map(|_| ()), "ReplayContext::on_device");
    assert!(!out.exists(), "refused before the run folder was created");
}
