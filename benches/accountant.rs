//! Accountant benchmarks. Each group is a self-contained `fn bench_*(c: &mut Criterion)` listed in
//! the one `criterion_group!` below; add new groups there.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dpaudit::accounting::pld::PldAccountant;
use dpaudit::accounting::rdp::RdpAccountant;
use dpaudit::accounting::Phase;

/// One RDP epsilon, single phase, default orders: MNIST-sized DP-SGD (q = 256/60000, sigma = 1.1,
/// 10_000 steps, delta = 1e-5). Target: >= 10x faster than Google dp_accounting's RDP (~0.25 ms).
fn bench_rdp(c: &mut Criterion) {
    let phases = [Phase { sampling_rate: 256.0 / 60000.0, noise_multiplier: 1.1, steps: 10_000 }];
    let mut group = c.benchmark_group("rdp");
    group.bench_function("epsilon_default_orders", |b| {
        b.iter(|| RdpAccountant::default().epsilon(black_box(&phases), black_box(1e-5)).unwrap())
    });
    let many = [
        Phase { sampling_rate: 0.01, noise_multiplier: 0.8, steps: 100 },
        Phase { sampling_rate: 256.0 / 60000.0, noise_multiplier: 1.1, steps: 10_000 },
        Phase { sampling_rate: 0.05, noise_multiplier: 2.0, steps: 1_000 },
    ];
    group.bench_function("epsilon_three_phases", |b| {
        b.iter(|| RdpAccountant::default().epsilon(black_box(&many), black_box(1e-5)).unwrap())
    });
    group.finish();
}

/// PLD epsilon at the automatic grid (the default) and at the fixed grid h = 1e-4: MNIST-sized
/// DP-SGD and a q = 0.01, sigma = 1 run, 10_000 steps, delta = 1e-5. Target: >= 3x faster than
/// Google dp_accounting's PLD at `value_discretization_interval=1e-4` (~0.33 s and ~0.6 s here,
/// `peer_epsilon.py`).
fn bench_pld(c: &mut Criterion) {
    let mut group = c.benchmark_group("pld");
    group.sample_size(20);
    for (grid, acc) in [("auto", PldAccountant::default()), ("h1e-4", PldAccountant::new(1e-4).unwrap())] {
        for (name, q, sigma) in
            [("epsilon_mnist_10000_steps", 256.0 / 60_000.0, 1.1), ("epsilon_q0.01_sigma1_10000_steps", 0.01, 1.0)]
        {
            let phases = [Phase { sampling_rate: q, noise_multiplier: sigma, steps: 10_000 }];
            group.bench_function(format!("{name}_{grid}"), |b| {
                b.iter(|| acc.epsilon(black_box(&phases), black_box(1e-5)).unwrap())
            });
        }
    }
    group.finish();
}

/// The MPFR oracle's verified epsilon (what `--verify` and certificate verification run).
fn bench_oracle(c: &mut Criterion) {
    let phases = [Phase { sampling_rate: 256.0 / 60000.0, noise_multiplier: 1.1, steps: 10_000 }];
    let orders = dpaudit::accounting::rdp::default_orders();
    let mut group = c.benchmark_group("oracle");
    group.sample_size(10);
    group.bench_function("verified_epsilon_mnist", |b| {
        b.iter(|| dpaudit::accounting::exact::verified_epsilon(black_box(&phases), black_box(1e-5), &orders).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_rdp, bench_pld, bench_oracle);
criterion_main!(benches);
