//! A real Slurm cluster: a small audit submitted as a 4-task array job with the merge as a
//! dependent job (`jobs/slurm/submit-audit.sh`) gives exactly the `audit.json` of the unsharded run
//! of the same spec and seed, and a membership-inference experiment as a 3-task array
//! (`jobs/slurm/submit-mia.sh`) the `mia.json` of the unsharded one. The test starts a single-node cluster (munged, slurmctld, slurmd,
//! all state in a temporary folder) with `scripts/slurm/start-cluster.sh` and stops the daemons it
//! started, by PID, with `scripts/slurm/stop-cluster.sh`, also when an assertion fails.
//!
//! It needs root and the Debian packages slurm-wlm and munge (`scripts/setup.sh` installs them);
//! without them it prints why and passes without checking anything.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Shards of the array job.
const SHARDS: usize = 4;
/// Runs per side of the audit (2 x 40 logreg trainings of 4 steps: a few seconds).
const RUNS_PER_SIDE: usize = 40;

/// A white-box Dirac audit of correct DP-SGD on 100 fixture examples (the spec of tests/audit.rs).
fn spec_text() -> String {
    format!(
        r#"name = "slurm-array"
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
epsilon = 1.0
delta = 1e-5
[canary]
kind = "dirac"
norm = 1.0
[attack]
threat_model = "white-box"
runs_per_side = {RUNS_PER_SIDE}
threshold = "held-out"
seed = 17
"#
    )
}

/// A membership-inference experiment on the MNIST fixture: 2 targets and 4 shadow logreg models
/// (the spec of tests/attack_mia.rs).
fn mia_spec_text() -> String {
    format!(
        "name = \"slurm-mia\"\n[data]\ndataset = \"{}\"\npopulation = 200\n[target]\nmodel = \"logreg\"\nlot_size = 25\nepochs = 2\nprivate = false\noptimizer = \"momentum\"\nlr = 0.1\n[attack]\nshadows = 4\ntargets = 2\nseed = 3\n",
        repo().join("fixtures/mnist-small").display()
    )
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// PATH with the system administration folders, where Debian puts slurmctld, slurmd and munged.
fn search_path() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/local/sbin:/usr/sbin:/sbin")
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&search_path()).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (slurmd and munged need root)".into());
    }
    for program in ["slurmctld", "slurmd", "sbatch", "sinfo", "munged", "mungekey"] {
        if find_program(program).is_none() {
            return Some(format!("`{program}` not installed (scripts/setup.sh installs slurm-wlm and munge)"));
        }
    }
    None
}

/// The cluster's daemons; dropping it stops exactly the processes the start script recorded.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        // The guard exists before the start, so a start that fails halfway is cleaned up too.
        let cluster = Cluster { dir: dir.to_path_buf() };
        let out = cluster.command(repo().join("scripts/slurm/start-cluster.sh")).arg(dir).output().unwrap();
        assert!(out.status.success(), "the cluster did not start:\n{}", String::from_utf8_lossy(&out.stderr));
        cluster
    }

    /// A command with the client environment of this cluster (the start script's `env` file).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("PATH", search_path()).env("SLURM_CONF", self.dir.join("slurm.conf"));
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stopped = Command::new(repo().join("scripts/slurm/stop-cluster.sh"))
            .arg(&self.dir)
            .env("PATH", search_path())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            eprintln!("stopping the test cluster in {} failed: {stopped:?}", self.dir.display());
        }
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Fields that say when, where or how long, not what was found: they differ between any two
/// executions of the same audit and are left out of the comparison (matched by key name at any depth).
fn is_timing_or_place(key: &str) -> bool {
    key == "seconds"
        || key.ends_with("_seconds")
        || key.ends_with("_at")
        || matches!(key, "elapsed" | "timestamp" | "started" | "finished" | "host" | "hostname" | "pid")
}

fn without_timing(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !is_timing_or_place(k)).map(|(k, v)| (k.clone(), without_timing(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_timing).collect()),
        other => other.clone(),
    }
}

/// The JSON paths where `a` and `b` differ.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                differences(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

fn read_json(p: &Path) -> Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file Slurm wrote for the jobs, for failure messages.
fn job_logs(dir: &Path) -> String {
    let mut logs = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            logs += &format!("--- {}\n{}\n", p.display(), std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    logs
}

#[test]
fn audits_and_shadow_models_sharded_as_slurm_array_jobs_merge_into_the_unsharded_results() {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED slurm_cluster: this machine cannot run a Slurm cluster: {why}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // munged runs as the user munge, which must reach the cluster folder inside this one.
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let spec = root.path().join("spec.toml");
    std::fs::write(&spec, spec_text()).unwrap();
    let dpaudit = env!("CARGO_BIN_EXE_dpaudit");

    // The reference: one process, the whole spec.
    let whole = root.path().join("whole");
    let single = Command::new(dpaudit)
        .args(["audit", "run"])
        .arg(&spec)
        .arg("--out")
        .arg(&whole)
        .args(["--threads", "2"])
        .output()
        .unwrap();
    assert!(matches!(single.status.code(), Some(0 | 10)), "unsharded audit failed: {}", text(&single));

    // The same spec as a 4-task array job and a dependent merge job, on a real cluster.
    let cluster = Cluster::start(&root.path().join("cluster"));
    let out = root.path().join("array");
    let submitted = cluster
        .command(repo().join("jobs/slurm/submit-audit.sh"))
        .arg("--wait")
        .arg(&spec)
        .arg(&out)
        .arg(SHARDS.to_string())
        .env("DPAUDIT", dpaudit)
        .output()
        .unwrap();
    let logs = job_logs(&out.join("slurm-logs"));
    assert_eq!(
        submitted.status.code(),
        single.status.code(),
        "the merge job's exit status differs from the unsharded run's:\n{}\n{logs}",
        text(&submitted)
    );

    // Every array task ran its own shard under Slurm, and no shard ran every run.
    let mut total = 0;
    for i in 0..SHARDS {
        let runs = std::fs::read_to_string(out.join(format!("shard-{i}/runs.jsonl")))
            .unwrap_or_else(|e| panic!("shard {i}: {e}\n{logs}"));
        let n = runs.lines().filter(|l| !l.trim().is_empty()).count();
        // Each shard holds both sides, so it can be looked at alone.
        for side in ["\"with\"", "\"without\""] {
            assert!(
                runs.lines().any(|l| l.contains(&format!("\"side\":{side}"))),
                "shard {i} holds no run with side {side}"
            );
        }
        assert!(n > 0 && n < 2 * RUNS_PER_SIDE, "shard {i} holds {n} runs of {}", 2 * RUNS_PER_SIDE);
        total += n;
        assert!(
            out.join("slurm-logs")
                .read_dir()
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(&format!("_{i}.out"))),
            "no Slurm log of array task {i}:\n{logs}"
        );
    }
    assert_eq!(total, 2 * RUNS_PER_SIDE, "the shards do not partition the runs");

    // `record_check` names the records replayed after the runs, drawn from OS entropy on each
    // machine: which ones legitimately differs; that each process replayed some is checked.
    let drop_record_check = |mut v: Value| {
        let check = v.as_object_mut().and_then(|m| m.remove("record_check"));
        assert!(
            check.as_ref().and_then(|c| c["replayed"].as_array()).is_some_and(|r| !r.is_empty()),
            "no record replayed: {check:?}"
        );
        v
    };
    let reference = without_timing(&drop_record_check(read_json(&whole.join("audit.json"))));
    let merged = without_timing(&drop_record_check(read_json(&out.join("merged/audit.json"))));
    let mut diff = Vec::new();
    differences(&reference, &merged, "", &mut diff);
    assert!(diff.is_empty(), "merged audit.json differs from the unsharded one:\n{}", diff.join("\n"));
    assert!(reference.as_object().is_some_and(|m| m.len() > 5), "audit.json compared nothing: {reference}");

    // Membership inference: target and shadow models as a 3-task array, then `attack merge`.
    let mia_spec = root.path().join("mia.toml");
    std::fs::write(&mia_spec, mia_spec_text()).unwrap();
    let mia_whole = root.path().join("mia-whole");
    let single = Command::new(dpaudit)
        .args(["attack", "mia", "--target-config"])
        .arg(&mia_spec)
        .arg("--out")
        .arg(&mia_whole)
        .args(["--threads", "2"])
        .output()
        .unwrap();
    assert!(single.status.success(), "unsharded membership inference failed: {}", text(&single));
    let mia_out = root.path().join("mia-array");
    let submitted = cluster
        .command(repo().join("jobs/slurm/submit-mia.sh"))
        .arg("--wait")
        .arg(&mia_spec)
        .arg(&mia_out)
        .arg("3")
        .env("DPAUDIT", dpaudit)
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "membership inference through Slurm failed:\n{}\n{}",
        text(&submitted),
        job_logs(&mia_out.join("slurm-logs"))
    );
    let reference_mia = without_timing(&read_json(&mia_whole.join("mia.json")));
    let mut diff = Vec::new();
    differences(&reference_mia, &without_timing(&read_json(&mia_out.join("merged/mia.json"))), "", &mut diff);
    assert!(diff.is_empty(), "merged mia.json differs from the unsharded one:\n{}", diff.join("\n"));
    drop(cluster);
    eprintln!(
        "slurm_cluster: {SHARDS}-task array job + dependent merge == unsharded audit ({} runs, verdict {}); 3-task membership inference == unsharded",
        2 * RUNS_PER_SIDE,
        reference["verdict"]
    );
}
