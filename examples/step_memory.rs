//! Peak memory of one gradient step's work, private against non-private, on the benchmark's
//! workload (tanh-cnn, lot 256, 2 threads, seed 0; the same as `benches/per_example.rs`).
//!
//! `cargo run --release --example step_memory -- MODE STEPS` with MODE `private` (per-example
//! norms, clipping, clipped sum: [`clip_and_sum`]) or `nonprivate` ([`nonprivate_gradient`]).
//! Prints one JSON line: the process's peak resident set (`VmHWM`, Linux) after the set-up and
//! after the steps, and their difference, which is what the steps themselves needed at their peak.
//! Run each mode in its own process (the peak never goes down): `benches/peak_memory.sh`.
use dpaudit::train::models;
use dpaudit::train::per_example::{clip_and_sum, nonprivate_gradient, ClipConfig};
use tch::{nn, Device, Kind, Tensor};

/// `VmHWM` of this process in KiB, from `/proc/self/status`.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line in /proc/self/status")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: step_memory private|nonprivate STEPS";
    let mode = args.get(1).expect(usage).clone();
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
    tch::set_num_threads(2);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = models::build("tanh-cnn", &vs.root()).expect("tanh-cnn builds");
    let inputs = Tensor::rand([256, 1, 28, 28], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [256], (Kind::Int64, Device::Cpu));
    let config = ClipConfig::new(1.0);
    let before = peak_kib();
    let start = std::time::Instant::now();
    for _ in 0..steps {
        match mode.as_str() {
            "private" => drop(clip_and_sum(&model, &inputs, &labels, &config).expect("step")),
            "nonprivate" => drop(nonprivate_gradient(&model, &inputs, &labels).expect("step")),
            _ => panic!("{usage}"),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = peak_kib();
    println!(
        "{{\"mode\":\"{mode}\",\"steps\":{steps},\"peak_after_setup_kib\":{before},\"peak_kib\":{after},\"step_peak_kib\":{},\"samples_per_second\":{:.0}}}",
        after - before,
        (steps * 256) as f64 / seconds
    );
}
