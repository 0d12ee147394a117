//! Membership inference: the loss attack on a model that memorised a tiny set, LiRA's Gaussian
//! scores on synthetic confidences, and clear errors on bad input. Every test is seeded and
//! deterministic; the thresholds are chosen many standard errors away from what the attack
//! reaches, so a correct implementation does not fail them by chance.
use dpaudit::attack::metrics::{attack_metrics, auc};
use dpaudit::attack::mia::{self, VarianceMode};
use dpaudit::data::{load_mnist_dir, Dataset, Split};
use dpaudit::train::dpsgd::{DpSgd, Examples, TrainConfig};
use dpaudit::train::optim::{LrSchedule, OptimizerKind};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};
use std::path::Path;
use tch::Device;

fn fixture() -> Dataset {
    load_mnist_dir(Path::new("fixtures/mnist-small"), Split::Train, 10).expect("fixture")
}

fn slice(d: &Dataset, from: usize, to: usize) -> Dataset {
    let per = d.shape().pixels().unwrap();
    Dataset::new(
        "slice",
        d.shape(),
        d.classes(),
        d.pixels()[from * per..to * per].to_vec(),
        d.labels()[from..to].to_vec(),
    )
    .unwrap()
}

fn config(private: bool) -> TrainConfig {
    TrainConfig {
        model: "mlp".into(),
        lot_size: 64.0,
        noise_multiplier: if private { 1.0 } else { f64::NAN },
        max_grad_norm: 1.0,
        physical_batch: 256,
        optimizer: OptimizerKind::Momentum { momentum: 0.9 },
        lr: 0.05,
        schedule: LrSchedule::Constant,
        private,
    }
}

/// 64 members memorised by a non-private MLP (full batch, 150 steps) against 64 held-out
/// fixture images. Under the null (no memorisation), the AUC of 64 + 64 scores has standard
/// deviation sqrt(129 / (12 * 64 * 64)) = 0.051; the bar of 0.75 is 4.9 of them above chance.
#[test]
fn loss_attack_beats_chance_on_a_memorised_set() {
    tch::set_num_threads(1);
    let data = fixture();
    let members = slice(&data, 0, 64);
    let non_members = slice(&data, 64, 128);
    let (xm, xn) = (
        Examples::from_dataset(&members, Device::Cpu).unwrap(),
        Examples::from_dataset(&non_members, Device::Cpu).unwrap(),
    );
    let mut run = DpSgd::ephemeral(config(false), 64, 7, Device::Cpu).unwrap();
    for _ in 0..150 {
        run.step(&xm).unwrap();
    }
    let a = mia::loss_attack(run.model(), &xm, &xn, 32).unwrap();
    assert!(a.member_accuracy > 0.99, "the model should have memorised its 64 examples: {}", a.member_accuracy);
    assert!(a.member_mean_loss < a.non_member_mean_loss, "{a:?}");
    assert!(a.metrics.auc > 0.75, "AUC {}", a.metrics.auc);
    assert!(a.mean_loss_threshold_advantage > 0.0);
    assert_eq!((a.metrics.members, a.metrics.non_members), (64, 64));
    // The ROC runs from (0, 0) to (1, 1).
    let (first, last) = (a.metrics.roc.first().unwrap(), a.metrics.roc.last().unwrap());
    assert_eq!((first.fpr, first.tpr, last.fpr, last.tpr), (0.0, 0.0, 1.0, 1.0));
}

#[test]
fn loss_attack_refuses_bad_input() {
    tch::set_num_threads(1);
    let data = fixture();
    let xm = Examples::from_dataset(&slice(&data, 0, 8), Device::Cpu).unwrap();
    let empty = Examples::from_dataset(&slice(&data, 0, 0), Device::Cpu).unwrap();
    let run = DpSgd::ephemeral(config(false), 64, 1, Device::Cpu).unwrap();
    let e = mia::loss_attack(run.model(), &xm, &empty, 32).unwrap_err().to_string();
    assert!(e.contains("non-members"), "{e}");
    assert!(mia::loss_attack(run.model(), &xm, &xm, 0).is_err());
    // Images of another shape than the model's input: a libtorch error, not a panic.
    let wrong = Examples {
        images: tch::Tensor::zeros([4, 1, 10, 10], (tch::Kind::Float, Device::Cpu)),
        labels: tch::Tensor::zeros([4], (tch::Kind::Int64, Device::Cpu)),
    };
    assert!(mia::loss_attack(run.model(), &wrong, &xm, 32).is_err());
}

/// Synthetic LiRA: example i has its own difficulty b_i ~ N(0, 3^2); its confidence is
/// N(b_i + 2, 1) when trained on and N(b_i, 1) when not. Knowing b_i (what the shadows estimate),
/// the optimal test reaches AUC Phi(2 / sqrt 2) = 0.9214; the raw confidence (the loss attack)
/// only Phi(2 / sqrt(2 (1 + 9))) = 0.6726. With 2000 + 2000 examples the AUC's standard error is
/// about 0.005 (0.008 for the loss attack), so the tolerances below are at least 5 of them.
#[test]
fn lira_recovers_per_example_difficulty_on_synthetic_scores() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let n = 4000;
    let shadows = 64;
    let unit = Normal::new(0.0, 1.0).unwrap();
    let b: Vec<f64> = (0..n).map(|_| 3.0 * unit.sample(&mut rng)).collect();
    let target_in: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
    let draw = |inn: bool, i: usize, rng: &mut ChaCha20Rng| b[i] + if inn { 2.0 } else { 0.0 } + unit.sample(rng);
    let target: Vec<f64> = (0..n).map(|i| draw(target_in[i], i, &mut rng)).collect();
    let mut shadow_in = Vec::new();
    let mut shadow_phi = Vec::new();
    for s in 0..shadows {
        let keep: Vec<bool> = (0..n).map(|i| (i + s) % 2 == 0).collect();
        shadow_phi.push((0..n).map(|i| draw(keep[i], i, &mut rng)).collect::<Vec<f64>>());
        shadow_in.push(keep);
    }
    let split = |v: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let m = v.iter().zip(&target_in).filter(|(_, &k)| k).map(|(x, _)| *x).collect();
        let o = v.iter().zip(&target_in).filter(|(_, &k)| !k).map(|(x, _)| *x).collect();
        (m, o)
    };
    for mode in [VarianceMode::Global, VarianceMode::PerExample] {
        let s = mia::lira_scores(&target, &shadow_phi, &shadow_in, mode).unwrap();
        // The pooled standard deviations estimate the within-example noise, 1.
        assert!((s.global_sd.0 - 1.0).abs() < 0.02 && (s.global_sd.1 - 1.0).abs() < 0.02, "{:?}", s.global_sd);
        let (m, o) = split(&s.online);
        let online = auc(&m, &o).unwrap();
        assert!((online - 0.9214).abs() < 0.03, "{mode:?} online AUC {online}");
        let (m, o) = split(&s.offline);
        let offline = auc(&m, &o).unwrap();
        assert!((offline - 0.9214).abs() < 0.03, "{mode:?} offline AUC {offline}");
    }
    let (m, o) = split(&target);
    let raw = attack_metrics(&m, &o).unwrap();
    assert!((raw.auc - 0.6726).abs() < 0.04, "raw AUC {}", raw.auc);
    // An example with no IN shadow cannot be scored online: a clear error.
    let none_in: Vec<Vec<bool>> = shadow_in.iter().map(|k| k.iter().map(|_| false).collect()).collect();
    let e = mia::lira_scores(&target, &shadow_phi, &none_in, VarianceMode::Auto).unwrap_err().to_string();
    assert!(e.contains("IN"), "{e}");
    assert!(mia::lira_scores(&target[..10], &shadow_phi, &shadow_in, VarianceMode::Auto).is_err());
}

fn write_spec(dir: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("spec.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"cli-test\"\n[data]\ndataset = \"{}\"\npopulation = 200\n[target]\nmodel = \"logreg\"\nlot_size = 25\nepochs = 2\nprivate = false\noptimizer = \"momentum\"\nlr = 0.1\n{extra}[attack]\nshadows = 4\ntargets = 2\nseed = 3\n",
            std::env::current_dir().unwrap().join("fixtures/mnist-small").display()
        ),
    )
    .unwrap();
    p
}

/// The CLI end to end on the fixture: mia.json and roc.svg; re-running resumes without training
/// again; three shards merged give the very same report as one run.
#[test]
fn cli_runs_resumes_and_merges_shards() {
    let bin = env!("CARGO_BIN_EXE_dpaudit");
    let root = tempfile::tempdir().unwrap();
    let spec = write_spec(root.path(), "");
    let whole = root.path().join("whole");
    let run = |args: &[&str]| std::process::Command::new(bin).args(args).output().unwrap();
    let s = spec.to_str().unwrap();
    let o = run(&["attack", "mia", "--target-config", s, "--out", whole.to_str().unwrap(), "--threads", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> =
        report["attacks"].as_array().unwrap().iter().map(|a| a["attack"].as_str().unwrap()).collect();
    assert_eq!(names, ["loss", "lira-offline", "lira-online"]);
    assert!(std::fs::read_to_string(whole.join("roc.svg")).unwrap().starts_with("<svg"));
    let lines = std::fs::read_to_string(whole.join("runs.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5);
    // Resume: nothing is trained again (the file is unchanged).
    let o = run(&["attack", "mia", "--target-config", s, "--out", whole.to_str().unwrap()]);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(whole.join("runs.jsonl")).unwrap(), lines);
    let mut shards = Vec::new();
    for i in 0..3 {
        let d = root.path().join(format!("shard{i}"));
        let o =
            run(&["attack", "mia", "--target-config", s, "--out", d.to_str().unwrap(), "--shard", &format!("{i}/3")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        shards.push(d.to_str().unwrap().to_owned());
    }
    let merged = root.path().join("merged");
    let mut args = vec!["attack", "merge"];
    args.extend(shards[..2].iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap()]);
    let o = run(&args);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut args = vec!["attack", "merge"];
    args.extend(shards.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap(), "--json"]);
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["attacks"], report["attacks"]);
}

#[test]
fn cli_refuses_bad_specs_and_missing_data() {
    let bin = env!("CARGO_BIN_EXE_dpaudit");
    let root = tempfile::tempdir().unwrap();
    let run = |spec: &Path| {
        std::process::Command::new(bin)
            .args(["attack", "mia", "--target-config"])
            .arg(spec)
            .arg("--out")
            .arg(root.path().join("out"))
            .output()
            .unwrap()
    };
    let bad_key = write_spec(root.path(), "colour = \"blue\"\n");
    let e = String::from_utf8_lossy(&run(&bad_key).stderr).into_owned();
    assert!(e.contains("colour"), "{e}");
    let p = root.path().join("missing.toml");
    std::fs::write(&p, "name = \"m\"\n[data]\ndataset = \"/nonexistent/mnist\"\n[target]\nmodel = \"logreg\"\nlot_size = 10\nepochs = 1\nprivate = false\nlr = 0.1\n").unwrap();
    let o = run(&p);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/mnist"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = String::from_utf8_lossy(&run(&root.path().join("no-such-spec.toml")).stderr).into_owned();
    assert!(e.contains("no-such-spec.toml"), "{e}");
    // Too few shadows for LiRA, and a private recipe without its noise.
    std::fs::write(&p, "name = \"m\"\n[data]\ndataset = \"fixture\"\n[target]\nmodel = \"logreg\"\nlot_size = 10\nepochs = 1\nlr = 0.1\n").unwrap();
    assert!(String::from_utf8_lossy(&run(&p).stderr).contains("noise_multiplier or target_epsilon"));
}
