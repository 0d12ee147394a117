//! Throughput of one private step's gradient work (per-example norms, clipping, clipped sum)
//! against a non-private step (forward, backward of the mean loss) on the tanh CNN of Papernot et
//! al. 2021, lot 256, 2 threads, the same fixed random inputs (seed 0). Compare with
//! `peers/opacus_throughput.py` (Opacus on the same model and machine; `peers/setup.sh` installs it).
//!
//! `cargo bench --bench per_example`; throughput is reported in elements (examples) per second.
//! `DPAUDIT_BENCH_DEVICE=cuda` (or `cuda:N`, `auto`; default `cpu`) runs it on a GPU, the model and
//! the lot moved there after they are drawn on the CPU; each timing then waits for the device
//! (`cudaDeviceSynchronize`). `<bench binary> --bench nomatch` runs only the interleaved comparison
//! (what `scripts/gpu-check.sh` does).
//! After criterion's sequential groups, an interleaved comparison (modes alternate within each
//! round, median over rounds, as the Opacus anchor script does) prints samples/s per mode and the
//! private/non-private ratio: on a shared machine the sequential figures drift with other load.
//!
//! The private step allocates MBs of short-lived buffers (per-example gradients; conv patches on
//! the fallback route of `per_example::conv`); with glibc's default malloc these go back to the kernel each step and are faulted in
//! again, which costs more than the arithmetic. Run with
//! `MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000` (or jemalloc/tcmalloc,
//! as PyTorch recommends for CPU training) to measure the engine rather than the allocator.
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use dpaudit::train::models;
use dpaudit::train::per_example::{clip_and_sum, nonprivate_gradient, ClipConfig, NormMethod, Sequential};
use std::time::Duration;
use tch::{nn, Device, Kind, Tensor};

const LOT: i64 = 256;
const THREADS: i32 = 2;
const SEED: i64 = 0;

/// The device of `DPAUDIT_BENCH_DEVICE` (default: the CPU).
fn device() -> Device {
    let choice = std::env::var("DPAUDIT_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let choice: dpaudit::device::DeviceChoice = choice.parse().unwrap_or_else(|e| panic!("DPAUDIT_BENCH_DEVICE: {e}"));
    choice.resolve().unwrap_or_else(|e| panic!("DPAUDIT_BENCH_DEVICE: {e}"))
}

/// Waits for the work queued on `device` (a no-op on the CPU), so that a timing covers it.
fn wait_for(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// The benchmark's fixed workload: tanh-cnn and one random lot, same seed for every mode, drawn
/// on the CPU and then moved to the benchmark's device.
fn setup() -> (nn::VarStore, Sequential, Tensor, Tensor) {
    tch::set_num_threads(THREADS);
    tch::manual_seed(SEED);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = models::build("tanh-cnn", &vs.root()).expect("tanh-cnn builds");
    let inputs = Tensor::rand([LOT, 1, 28, 28], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [LOT], (Kind::Int64, Device::Cpu));
    let device = device();
    vs.set_device(device);
    (vs, model, inputs.to_device(device), labels.to_device(device))
}

fn per_example(c: &mut Criterion) {
    let (_vs, model, inputs, labels) = setup();
    let device = inputs.device();

    let mut group = c.benchmark_group("tanh-cnn-lot256");
    group.throughput(Throughput::Elements(LOT as u64));
    group.sample_size(30).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(6));
    group.bench_function("nonprivate", |b| {
        b.iter(|| {
            let g = nonprivate_gradient(&model, &inputs, &labels).expect("step");
            wait_for(device);
            g
        })
    });
    for (name, norm_method) in
        [("auto", NormMethod::Auto), ("ghost", NormMethod::Ghost), ("materialise", NormMethod::Materialise)]
    {
        let config = ClipConfig { max_norm: 1.0, norm_method };
        group.bench_with_input(BenchmarkId::new("private", name), &config, |b, config| {
            b.iter(|| {
                let out = clip_and_sum(&model, &inputs, &labels, config).expect("step");
                wait_for(device);
                out
            })
        });
    }
    group.finish();
}

/// Rounds of the interleaved comparison, and steps per mode in each round.
const ROUNDS: usize = 25;
const STEPS: usize = 4;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn interleaved() {
    let (_vs, model, inputs, labels) = setup();
    let device = inputs.device();
    let config = ClipConfig::new(1.0);
    let time = |f: &dyn Fn()| {
        f(); // warm-up
        wait_for(device);
        let start = std::time::Instant::now();
        for _ in 0..STEPS {
            f();
        }
        wait_for(device);
        (STEPS as f64 * LOT as f64) / start.elapsed().as_secs_f64()
    };
    let (mut nonprivate, mut private, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let n = time(&|| drop(nonprivate_gradient(&model, &inputs, &labels).expect("step")));
        let p = time(&|| drop(clip_and_sum(&model, &inputs, &labels, &config).expect("step")));
        nonprivate.push(n);
        private.push(p);
        ratio.push(p / n);
    }
    println!(
        "interleaved tanh-cnn lot {LOT} on {}, {THREADS} threads, {ROUNDS} rounds x {STEPS} steps: \
         non-private {:.0} samples/s, private (auto) {:.0} samples/s, median ratio {:.3}",
        dpaudit::device::name(device),
        median(nonprivate),
        median(private),
        median(ratio)
    );
}

criterion_group!(benches, per_example);

fn main() {
    benches();
    // `cargo test --all-targets` runs benches once in test mode (no `--bench` argument): skip the
    // long interleaved comparison there; `cargo bench` passes `--bench`.
    if std::env::args().any(|a| a == "--bench") {
        interleaved();
    }
    Criterion::default().configure_from_args().final_summary();
}
