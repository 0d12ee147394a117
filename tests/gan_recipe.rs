//! `gan train` writes its recipe (the one `Recipe` type, with a `[gan]` table) to `recipe.toml`;
//! `gan train --config <run>/recipe.toml` with the run's seed trains the same generator, bit for
//! bit; and `gan train --resume` with another recipe is refused before the ledger changes.
use std::path::Path;
use std::process::{Command, Output};

/// 0.2 epochs of 2000 fixture examples at q = 40 / 2000: 10 discriminator steps, tiny networks.
fn gan_train(out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(["gan", "train"])
        .args(extra)
        .args(["--seed", "7", "--threads", "1", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

const FLAGS: &[&str] = &[
    "--dataset",
    "fixture",
    "--noise-multiplier",
    "1.0",
    "--epochs",
    "0.2",
    "--lot-size",
    "40",
    "--z-dim",
    "8",
    "--g-width",
    "4",
    "--d-width",
    "4",
    "--g-ema",
    "0.9",
];

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_gan_recipe_reproduces_its_run_and_a_resume_with_another_recipe_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    ok(&gan_train(&first, FLAGS));
    let recipe_path = first.join("recipe.toml");
    let recipe = dpaudit::recipe::Recipe::load(&recipe_path).unwrap();
    let gan = recipe.gan.expect("a [gan] table");
    assert_eq!((recipe.model.as_str(), gan.z_dim, gan.g_ema), ("dp-gan", 8, Some(0.9)));
    assert_eq!(recipe.privacy, dpaudit::recipe::Privacy::Gaussian { noise_multiplier: 1.0 });

    // The recipe alone (with the seed) trains the same generator.
    let again = tmp.path().join("again");
    ok(&gan_train(&again, &["--config", recipe_path.to_str().unwrap()]));
    let generator = |dir: &Path| std::fs::read(dir.join("generator.safetensors")).unwrap();
    assert!(generator(&first) == generator(&again), "the recipe trained another generator");
    assert_eq!(
        std::fs::read_to_string(again.join("recipe.toml")).unwrap(),
        std::fs::read_to_string(&recipe_path).unwrap()
    );

    // Resuming with another n_critic or sigma is refused, naming the field; the ledger is unchanged.
    let ledger = std::fs::read(first.join("ledger.jsonl")).unwrap();
    for (extra, field) in [(["--n-critic", "2"], "n_critic"), (["--noise-multiplier", "2.0"], "noise multiplier")] {
        let mut args = vec!["--config", recipe_path.to_str().unwrap(), "--resume"];
        args.extend(extra);
        let o = gan_train(&first, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "resumed with {extra:?}");
        assert!(err.contains(&format!("recipe.toml says {field}")), "{err}");
        assert_eq!(std::fs::read(first.join("ledger.jsonl")).unwrap(), ledger, "{extra:?}");
    }
    // The run's own recipe resumes (the finished run: nothing to redo).
    let mut args = vec!["--resume"];
    args.extend(FLAGS);
    ok(&gan_train(&first, &args));
    assert_eq!(std::fs::read(first.join("ledger.jsonl")).unwrap(), ledger);

    // `train --config` refuses a GAN recipe, before any data is read.
    let o = Command::new(env!("CARGO_BIN_EXE_dpaudit"))
        .args(["train", "--config", recipe_path.to_str().unwrap(), "--out"])
        .arg(tmp.path().join("not-a-gan"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("gan train --config"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
