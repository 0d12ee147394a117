//! The command line as a user (or a script) sees it: JSON keys, traceable output, clear errors and
//! non-zero exit codes on impossible input.
use std::process::{Command, Output};

fn dpaudit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpaudit")).args(args).output().unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = dpaudit(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn account_epsilon_json_has_every_accountant_and_the_oracle() {
    let v = json(&[
        "account",
        "epsilon",
        "-q",
        "0.0042666667",
        "-s",
        "1.1",
        "-t",
        "10000",
        "-d",
        "1e-5",
        "--verify",
        "--json",
    ]);
    let rdp = v["rdp"]["epsilon"].as_f64().unwrap();
    let pld = v["pld"]["epsilon"].as_f64().unwrap();
    let verified = v["verified"]["epsilon"].as_f64().unwrap();
    assert!(v["rdp"]["order"].as_f64().unwrap() > 1.0);
    // Opacus and Google's RDP give 2.16159 here; Google's PLD 1.97797 (fixtures/golden).
    assert!((rdp - 2.161595).abs() < 1e-5, "rdp {rdp}");
    // The oracle's rigorous upper bound and the f64 accountant (which adds a safety margin) agree
    // to 1e-9; the f64 value is never below the oracle's beyond rounding.
    assert!((verified - rdp).abs() <= 1e-9 * rdp, "verified {verified} vs rdp {rdp}");
    assert!(rdp >= verified * (1.0 - 1e-12), "f64 {rdp} below the oracle {verified}");
    assert!(pld < rdp && pld > 1.97, "pld {pld}");
    assert_eq!(v["sampling"], "poisson");
    assert_eq!(v["phases"][0]["steps"], 10000);
}

#[test]
fn phases_compose_and_calibration_meets_its_target() {
    let one = json(&["account", "epsilon", "--phase", "0.01,1.0,500", "-d", "1e-5", "--accountant", "rdp", "--json"]);
    let two = json(&[
        "account",
        "epsilon",
        "--phase",
        "0.01,1.0,500",
        "--phase",
        "1,8,1",
        "-d",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]);
    assert!(two["rdp"]["epsilon"].as_f64().unwrap() > one["rdp"]["epsilon"].as_f64().unwrap());
    assert!(two.get("pld").is_none(), "--accountant rdp runs only RDP");
    let cal =
        json(&["account", "calibrate", "--target-epsilon", "2", "-q", "0.01", "-t", "1000", "-d", "1e-5", "--json"]);
    let eps = cal["epsilon"].as_f64().unwrap();
    assert!(eps <= 2.0 && eps > 1.99, "calibrated epsilon {eps}");
    assert_eq!(cal["accountant"], "rdp");
    let budget =
        json(&["account", "calibrate", "--target-epsilon", "2", "-q", "0.01", "-s", "1.0", "-d", "1e-5", "--json"]);
    let steps = budget["max_steps"].as_u64().unwrap();
    assert!(budget["epsilon"].as_f64().unwrap() <= 2.0);
    // One more step breaks the budget.
    let over = json(&[
        "account",
        "epsilon",
        "-q",
        "0.01",
        "-s",
        "1.0",
        "-t",
        &(steps + 1).to_string(),
        "-d",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]);
    assert!(over["rdp"]["epsilon"].as_f64().unwrap() > 2.0, "{steps} + 1 steps still within budget");
}

#[test]
fn account_epsilon_prints_every_accountant_that_succeeded() {
    // A fixed PLD grid too fine for sigma 0.5 (the per-step support needs too many points): PLD
    // fails, RDP still prints, the failure goes to stderr and the exit status is 3.
    let args = ["account", "epsilon", "-q", "1", "-s", "0.5", "-t", "10", "-d", "1e-5", "--pld-discretization", "1e-7"];
    let out = dpaudit(&args);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("RDP accountant:") && !stdout.contains("PLD accountant:"), "{stdout}");
    assert!(stderr.contains("PLD accountant") && stderr.contains("too many points"), "{stderr}");
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = dpaudit(&with_json);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["rdp"]["epsilon"].as_f64().unwrap() > 0.0);
    assert!(v.get("pld").is_none());
    assert!(v["errors"]["pld"].as_str().unwrap().contains("PLD accountant"), "{v}");
    // Only the failing accountant asked for: an error, exit 1.
    let mut only_pld = args.to_vec();
    only_pld.extend(["--accountant", "pld"]);
    assert_eq!(dpaudit(&only_pld).status.code(), Some(1));
    // The automatic grid answers the same problem, and says which grid it used.
    let v = json(&["account", "epsilon", "-q", "1", "-s", "0.5", "-t", "10", "-d", "1e-5", "--json"]);
    assert!(v["pld"]["epsilon"].as_f64().unwrap() > 0.0 && v.get("errors").is_none(), "{v}");
    assert_eq!(v["pld"]["discretization_choice"], "auto");
    assert!(v["pld"]["discretization"].as_f64().unwrap() > 0.0);
}

#[test]
fn impossible_input_is_a_clear_error_with_a_nonzero_exit() {
    for (args, needle) in [
        (vec!["account", "epsilon", "-q", "1.5", "-s", "1", "-t", "10", "-d", "1e-5"], "sampling rate"),
        (vec!["account", "epsilon", "-q", "0.1", "-s", "0", "-t", "10", "-d", "1e-5"], "noise multiplier"),
        (vec!["account", "epsilon", "-q", "0.1", "-s", "NaN", "-t", "10", "-d", "1e-5"], "noise multiplier"),
        // A negative number is a value, named in the error, not clap's "unexpected argument".
        (vec!["account", "epsilon", "-q", "0.1", "-s", "-1", "-t", "10", "-d", "1e-5"], "noise multiplier"),
        (vec!["account", "epsilon", "-q", "-0.1", "-s", "1", "-t", "10", "-d", "1e-5"], "sampling rate"),
        (vec!["account", "epsilon", "-q", "0.1", "-s", "1", "-t", "10", "-d", "-1e-5"], "delta"),
        (vec!["account", "calibrate", "--target-epsilon", "-1", "-q", "0.1", "-t", "10", "-d", "1e-5"], "epsilon"),
        (vec!["account", "epsilon", "-q", "0.1", "-s", "1", "-t", "10", "-d", "1"], "delta"),
        (vec!["account", "epsilon", "-q", "0.1", "-d", "1e-5"], "--noise-multiplier"),
        (vec!["account", "epsilon", "--phase", "0.1,1", "-d", "1e-5"], "Q,SIGMA,STEPS"),
        (
            vec!["account", "epsilon", "-q", "0.1", "-s", "1", "-t", "10", "-d", "1e-5", "--pld-discretization", "0.5"],
            "PLD discretization",
        ),
        (vec!["data", "info", "fixtures/does-not-exist"], "does-not-exist"),
    ] {
        let out = dpaudit(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(err.contains(needle), "{args:?}: error {err:?} should mention {needle:?}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn data_info_describes_the_fixture() {
    let v = json(&["data", "info", "fixtures/mnist-small", "--json"]);
    assert_eq!(v[0]["examples"], 2000);
    assert_eq!(v[1]["examples"], 500);
    assert_eq!(v[0]["height"], 28);
}

#[test]
fn train_reads_a_toml_config_and_the_command_line_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        "model = \"logreg\"\nepochs = 0.5\nlot_size = 200\nnoise_multiplier = 1.5\nseed = 3\noptimizer = \"sgd\"\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let v =
        json(&["train", "--config", cfg.to_str().unwrap(), "--epochs", "1", "--json", "--out", out.to_str().unwrap()]);
    assert_eq!(v["config"]["model"], "logreg");
    assert_eq!(v["epochs"], 1.0, "the command line overrides the file");
    assert_eq!(v["steps"], 10, "q = 200 / 2000, 1 epoch");
    assert_eq!(v["config"]["noise_multiplier"], 1.5);
    // An unknown key is an error naming it.
    std::fs::write(&cfg, "model = \"logreg\"\nnoise_multplier = 1.5\n").unwrap();
    let bad = dpaudit(&["train", "--config", cfg.to_str().unwrap(), "--out", dir.path().join("b").to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("noise-multplier"));
}

/// Every run folder holds its recipe (`recipe.toml`), and `train --config` of it with the run's
/// seed trains the same model bit for bit; metrics.json records how sigma was chosen as data.
#[test]
fn a_runs_recipe_toml_trains_the_same_model_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let f = first.to_str().unwrap();
    let v = json(&[
        "train",
        "--model",
        "logreg",
        "--lot-size",
        "200",
        "--epochs",
        "0.5",
        "--target-epsilon",
        "4",
        "--optimizer",
        "momentum",
        "--schedule",
        "cosine",
        "--lr",
        "0.2",
        "--seed",
        "7",
        "--json",
        "--out",
        f,
    ]);
    let p = &v["noise_multiplier_provenance"];
    assert_eq!((p["source"].as_str(), p["accountant"].as_str()), (Some("calibrated"), Some("rdp")), "{v}");
    assert_eq!(
        (p["target_epsilon"].as_f64(), p["delta"].as_f64(), p["steps"].as_u64()),
        (Some(4.0), Some(1e-5), Some(5))
    );
    assert!(p["epsilon"].as_f64().unwrap() <= 4.0, "{p}");
    assert!(v["noise_multiplier_source"].as_str().unwrap().starts_with("calibrated up front (RDP accountant"), "{v}");
    let recipe_file = first.join("recipe.toml");
    let recipe = dpaudit::recipe::Recipe::load(&recipe_file).unwrap();
    assert_eq!(
        recipe.privacy,
        dpaudit::recipe::Privacy::TargetEpsilon {
            epsilon: 4.0,
            accountant: dpaudit::recipe::CalibrationAccountant::Rdp
        }
    );
    let rerun = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let v = json(&[
            "train",
            "--config",
            recipe_file.to_str().unwrap(),
            "--seed",
            seed,
            "--json",
            "--out",
            out.to_str().unwrap(),
        ]);
        (out, v)
    };
    let (second, w) = rerun("second", "7");
    let model = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&first) == model(&second), "the same recipe and seed trained another model");
    assert_eq!(v["config"], w["config"]);
    assert_eq!(v["noise_multiplier_provenance"], w["noise_multiplier_provenance"]);
    assert_eq!(
        std::fs::read_to_string(second.join("recipe.toml")).unwrap(),
        std::fs::read_to_string(&recipe_file).unwrap()
    );
    // Another seed: another model (so the comparison above can fail).
    let (third, _) = rerun("third", "8");
    assert!(model(&first) != model(&third));
    // The recipe type refuses what it does not know, naming it.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&recipe_file).unwrap().replace("[privacy]", "noise_multplier = 1.5\n[privacy]"),
    )
    .unwrap();
    let r = dpaudit(&["train", "--config", bad.to_str().unwrap(), "--out", dir.path().join("b").to_str().unwrap()]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("noise_multplier"));
}

/// Key generation keeps its folder private whatever the umask, and refuses a folder others can write.
#[cfg(unix)]
#[test]
fn keygen_makes_a_private_folder_under_any_umask() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let keys = root.path().join("keys");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec \"$0\" keygen --out '{}'", keys.display()))
        .arg(env!("CARGO_BIN_EXE_dpaudit"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&keys.join("dpaudit-cert.key")), 0o600);
    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = dpaudit(&["keygen", "--out", open.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("others can replace its keys"), "{err}");
    assert!(!open.join("dpaudit-cert.key").exists());
}

/// Settings that cannot work are refused before the first step, leaving nothing that blocks a
/// rerun: an averaging decay of NaN (once an empty ledger), an absurd number of epochs (once 3e13
/// steps started).
#[test]
fn train_refuses_impossible_settings_before_any_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let base = ["train", "--model", "logreg", "--noise-multiplier", "1.5", "--lot-size", "200", "--out", o];
    for (extra, needle) in [
        (vec!["--epochs", "0.5", "--ema", "nan"], "parameter-average decay"),
        (vec!["--epochs", "1e12"], "at most 5000000"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let r = dpaudit(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(needle), "{extra:?}: {err}");
        assert!(!out.join("ledger.jsonl").exists(), "{extra:?} left a ledger");
    }
    // The same folder then trains normally.
    let r = dpaudit(&[&base[..], &["--epochs", "0.5", "--ema", "0.9"]].concat());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("ledger.jsonl").is_file());
}

/// An audit spec that asks for the impossible is refused before any training: a billion runs per
/// side (once a silent hang) and a claim of 1e308 (once every training ran, then it failed).
#[test]
fn audit_specs_that_cannot_work_are_refused_before_any_training() {
    let dir = tempfile::tempdir().unwrap();
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/audits/dirac-eps2.toml")).unwrap();
    for (from, to, needle) in [
        ("runs_per_side = 1000", "runs_per_side = 1000000000", "must be between 2 and 1000000"),
        ("epsilon = \"accountant\"", "epsilon = 1e308", "not above the claimed epsilon 1.0000e308"),
    ] {
        assert!(spec.contains(from), "{from}");
        let path = dir.path().join("spec.toml");
        std::fs::write(&path, spec.replacen(from, to, 1)).unwrap();
        let out = dir.path().join("audit");
        let r = dpaudit(&["audit", "run", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(needle), "{to}: {err}");
        assert!(!out.join("runs.jsonl").exists(), "{to}: runs were recorded");
    }
}

/// `--target-epsilon 1e300` calibrates sigma ~ 0.001, whose privacy loss per sampled step is about
/// 1 / (2 sigma^2) = 5e5: the PLD accountant once failed on it after training, leaving a ledger
/// and no metrics.json. Every accountant now answers for the planned schedule before the first
/// step, so the run trains and metrics.json has both epsilons; a schedule an accountant cannot
/// handle (sigma = 1e-160, losses beyond f64) is refused before the ledger exists.
#[test]
fn absurd_target_epsilon_trains_with_every_accountant_or_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let base = ["train", "--model", "logreg", "--lot-size", "200", "--epochs", "0.1", "--out", o];
    let v = json(&[&base[..], &["--target-epsilon", "1e300", "--json"]].concat());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["epsilons"], v["epsilons"]);
    assert!(metrics.get("accountant_errors").is_none(), "{metrics}");
    let sigma = v["config"]["noise_multiplier"].as_f64().unwrap();
    assert!(sigma < 0.01, "sigma {sigma}");
    let names: Vec<&str> =
        v["epsilons"].as_array().unwrap().iter().map(|e| e["accountant"].as_str().unwrap()).collect();
    assert_eq!(names, ["rdp", "pld"]);
    for e in v["epsilons"].as_array().unwrap() {
        // One step, sampled with probability 0.1 > delta: epsilon is at least about 1 / (2 sigma^2).
        let eps = e["epsilon"].as_f64().unwrap();
        assert!(eps.is_finite() && eps >= 0.9 / (2.0 * sigma * sigma), "{e}");
    }
    assert_eq!(v["epsilons"][1]["detail"]["construction"], "rounded_up");

    let refused = dir.path().join("refused");
    let r = dpaudit(&[
        "train",
        "--model",
        "logreg",
        "--lot-size",
        "200",
        "--epochs",
        "0.1",
        "--noise-multiplier",
        "1e-160",
        "--out",
        refused.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("planned schedule") && err.contains("astronomically"), "{err}");
    assert!(!refused.join("ledger.jsonl").exists());
}

/// CLI consistency: `-d` is `--delta`, `-s` `--noise-multiplier`, `-t` `--steps` (and `-q`
/// `--sampling-rate`) on every command that has the long flag, each taking a negative number
/// such as -1 as its value.
#[test]
fn short_flags_mean_the_same_on_every_command_that_has_the_long_flag() {
    for (command, shorts) in [
        (
            vec!["account", "epsilon"],
            vec!["-q, --sampling-rate", "-s, --noise-multiplier", "-t, --steps", "-d, --delta"],
        ),
        (
            vec!["account", "calibrate"],
            vec!["-q, --sampling-rate", "-s, --noise-multiplier", "-t, --steps", "-d, --delta"],
        ),
        (vec!["train"], vec!["-s, --noise-multiplier", "-t, --steps", "-d, --delta"]),
        (vec!["gan", "train"], vec!["-s, --noise-multiplier", "-d, --delta"]),
        (vec!["audit", "from-scores"], vec!["-d, --delta"]),
        (vec!["audit", "ceilings"], vec!["-d, --delta"]),
        (vec!["audit", "ideal"], vec!["-d, --delta"]),
        (vec!["cert", "sign"], vec!["-d, --delta"]),
        (vec!["report"], vec!["-d, --delta"]),
    ] {
        let out = dpaudit(&[&command[..], &["--help"]].concat());
        let help = String::from_utf8_lossy(&out.stdout);
        for s in shorts {
            assert!(help.contains(s), "{command:?} --help lacks {s:?}:\n{help}");
        }
    }
    // A negative value after a short flag is the flag's value, refused by name before any data is
    // read (not clap's "unexpected argument").
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("run");
    for (flags, needle) in [(["-s", "-1", "-d", "1e-5"], "noise multiplier"), (["-s", "1", "-d", "-1"], "delta")] {
        let base = ["train", "--model", "logreg", "--lot-size", "200", "-t", "2", "--out", o.to_str().unwrap()];
        let r = dpaudit(&[&base[..], &flags[..]].concat());
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(needle), "train {flags:?}: {err}");
        assert!(!o.join("ledger.jsonl").exists());
    }
    // `-d` is `--delta` on `audit ideal` too.
    let long = json(&["audit", "ideal", "--epsilon", "2", "--runs", "100", "--delta", "1e-3", "--json"]);
    let short = json(&["audit", "ideal", "--epsilon", "2", "--runs", "100", "-d", "1e-3", "--json"]);
    assert_eq!(long, short);
    assert_eq!(long["delta"].as_f64(), Some(1e-3));
}

/// `audit ideal` prints a summary, and with `--json` the JSON it always printed before.
#[test]
fn audit_ideal_prints_a_summary_or_json() {
    let out = dpaudit(&["audit", "ideal", "--epsilon", "4", "--runs", "1000"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ideal epsilon lower bound ") && text.contains("1000 runs per side"), "{text}");
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err(), "{text}");
    let v = json(&["audit", "ideal", "--epsilon", "4", "--runs", "1000", "--json"]);
    let bound = v["ideal_epsilon_lower"].as_f64().unwrap();
    assert!(bound > 0.0 && bound < 4.0, "{v}");
    assert!(text.contains(&format!("{bound:.4}")), "{text} vs {v}");
}
