//! A non-private baseline of dpaudit's conditional GAN, for comparing attacks on synthetic data
//! (issue 5, section 5: "run it on a non-private GAN and on the DP-GANs"). The same networks,
//! latents, optimiser (Adam 0.5 / 0.999) and losses as `dpaudit gan train`, but the discriminator
//! takes ordinary gradients of its mean losses on uniformly drawn batches: no clipping, no noise,
//! no ledger. It is deliberately NOT a `dpaudit gan train` design: its release carries no epsilon,
//! no `release.json` and cannot be certified.
//!
//! `cargo run --release --example nonprivate_gan -- TRAIN_DIR OUT_DIR STEPS [BATCH] [COUNT] [SEED]`
//! trains on TRAIN_DIR's training split (MNIST format) for STEPS discriminator and generator
//! steps (batch default 100, lr 2e-4 for both) and writes COUNT (default 2,000) labelled images to
//! OUT_DIR as MNIST-format IDX files plus `grid.png`, sampled exactly as `dpaudit gan sample`
//! does. Used by `benches/reproduce/nn_attack_gans.sh`.
use dpaudit::data::{load_mnist_dir, write_mnist_dir, Split};
use dpaudit::gan::dpgan::latents;
use dpaudit::gan::image::write_grid_png;
use dpaudit::gan::networks::{condition, Discriminator, Generator, CLASSES, FAKE, REAL};
use dpaudit::gan::release::generate;
use dpaudit::train::optim::{LrSchedule, Optimizer, OptimizerKind};
use dpaudit::train::per_example::{nonprivate_gradient, per_example_cross_entropy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: nonprivate_gan TRAIN_DIR OUT_DIR STEPS [BATCH] [COUNT] [SEED]";
    anyhow::ensure!(args.len() >= 4, "{usage}");
    let train_dir = PathBuf::from(&args[1]);
    let out = PathBuf::from(&args[2]);
    let steps: usize = args[3].parse()?;
    let batch: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let count: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let seed: u64 = args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(1);
    tch::set_num_threads(2);
    tch::manual_seed(seed as i64);
    let device = Device::Cpu;
    let data = load_mnist_dir(&train_dir, Split::Train, CLASSES as usize)?;
    let n = data.len();
    anyhow::ensure!(batch >= 1 && batch <= n, "batch must be in 1..={n}");
    let images = Tensor::f_from_slice(data.pixels())?
        .f_view([n as i64, 1, 28, 28])?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(255.0)?;
    let labels = Tensor::f_from_slice(&data.labels().iter().map(|&l| i64::from(l)).collect::<Vec<_>>())?;
    let (z_dim, width) = (64, 32);
    let g = Generator::new(device, z_dim, width)?;
    let d = Discriminator::new(device, width)?;
    let (g_params, d_params) = (g.parameters(), d.net.parameters().into_iter().map(|(_, t)| t).collect::<Vec<_>>());
    let adam = OptimizerKind::Adam { beta1: 0.5, beta2: 0.999, eps: 1e-8 };
    let mut g_opt = Optimizer::new(adam, 2e-4, LrSchedule::Constant, &g_params)?;
    let mut d_opt = Optimizer::new(adam, 2e-4, LrSchedule::Constant, &d_params)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let b = batch as i64;
    for step in 0..steps {
        // Discriminator: mean CE on a uniform batch of real images plus mean CE on as many fakes.
        let idx: Vec<i64> = (0..batch).map(|_| rng.gen_range(0..n) as i64).collect();
        let idx = Tensor::f_from_slice(&idx)?;
        let (real_x, real_y) = (images.f_index_select(0, &idx)?, labels.f_index_select(0, &idx)?);
        let (z, fake_y) = latents(&mut rng, b, z_dim, device)?;
        let fake_x = tch::no_grad(|| g.forward(&z, &fake_y, true))?.f_detach()?;
        let real = nonprivate_gradient(
            &d.net,
            &condition(&real_x, &real_y)?,
            &Tensor::f_full([b], REAL, (Kind::Int64, device))?,
        )?;
        let fake = nonprivate_gradient(
            &d.net,
            &condition(&fake_x, &fake_y)?,
            &Tensor::f_full([b], FAKE, (Kind::Int64, device))?,
        )?;
        let grads: Vec<Tensor> = real.gradients.iter().zip(&fake.gradients).map(|(r, f)| r + f).collect();
        d_opt.step(&d_params, &grads)?;
        // Generator: the non-saturating loss, as in DpGan::generator_step.
        let (z, y) = latents(&mut rng, b, z_dim, device)?;
        let logits = d.net.forward(&condition(&g.forward(&z, &y, true)?, &y)?)?;
        let loss = per_example_cross_entropy(&logits, &Tensor::f_full([b], REAL, (Kind::Int64, device))?)?
            .f_mean(Kind::Float)?;
        let grads = Tensor::f_run_backward(&[&loss], &g_params, false, false)?;
        g_opt.step(&g_params, &grads)?;
        if (step + 1) % 100 == 0 || step + 1 == steps {
            eprintln!(
                "step {}/{steps}: D real {:.3} fake {:.3}, G {:.3}",
                step + 1,
                real.loss_mean,
                fake.loss_mean,
                loss.f_double_value(&[])?
            );
        }
    }
    let synthetic = generate(&g, count, seed, 1.0)?;
    std::fs::create_dir_all(&out)?;
    write_mnist_dir(&out, Split::Train, &synthetic)?;
    let mut grid: Vec<&[u8]> = Vec::new();
    for label in 0..CLASSES as u8 {
        grid.extend((0..count).filter(|&i| synthetic.label(i) == label).take(10).map(|i| synthetic.image(i)));
    }
    write_grid_png(&out.join("grid.png"), &grid, 28, 10)?;
    eprintln!("wrote {count} images to {} (non-private: no epsilon)", out.display());
    Ok(())
}
