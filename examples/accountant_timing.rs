//! Times dpaudit's accountants on one mechanism and prints one JSON line (epsilon and median
//! seconds per call), for `benches/compare_accountants.sh`, which interleaves it with the peers.
//!
//! Usage: cargo run --release --example accountant_timing -- Q SIGMA STEPS DELTA REPEATS
use dpaudit::accounting::{pld::PldAccountant, rdp, Phase};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn timed<F: FnMut() -> f64>(repeats: usize, inner: usize, mut f: F) -> (f64, f64) {
    let eps = f();
    let times = (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..inner {
                std::hint::black_box(f());
            }
            t0.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    (eps, median(times))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        return Err("usage: accountant_timing Q SIGMA STEPS DELTA REPEATS".into());
    }
    let (q, s, t, d, reps): (f64, f64, u64, f64, usize) =
        (args[0].parse()?, args[1].parse()?, args[2].parse()?, args[3].parse()?, args[4].parse()?);
    let phases = [Phase::new(q, s, t)?];
    rdp::epsilon(&phases, d)?; // fail early on bad input
    let (rdp_eps, rdp_sec) = timed(reps, 200, || rdp::epsilon(&phases, d).map(|r| r.epsilon).unwrap_or(f64::NAN));
    let pld = PldAccountant::default();
    let (pld_eps, pld_sec) = timed(reps, 1, || pld.epsilon(&phases, d).map(|r| r.epsilon).unwrap_or(f64::NAN));
    println!(
        "{}",
        serde_json::json!({"q": q, "sigma": s, "steps": t, "delta": d,
            "dpaudit_rdp": {"epsilon": rdp_eps, "seconds": rdp_sec},
            "dpaudit_pld": {"epsilon": pld_eps, "seconds": pld_sec}})
    );
    Ok(())
}
