//! README's library quick start, the accountant part: `cargo run --release --example quick_start`.
//! `tests/readme_quick_start.rs` checks that README shows this code verbatim.
use dpaudit::accounting::calibration::noise_multiplier_for_epsilon;
use dpaudit::accounting::{pld::PldAccountant, rdp::RdpAccountant, Phase};

fn main() -> dpaudit::Result<()> {
    // 10,000 DP-SGD steps: Poisson sampling at rate 256/60,000, noise multiplier 1.1, delta 1e-5.
    let (q, steps, delta) = (256.0 / 60_000.0, 10_000, 1e-5);
    let phases = [Phase::new(q, 1.1, steps)?];
    let rdp = RdpAccountant::default().epsilon(&phases, delta)?;
    let pld = PldAccountant::default().epsilon(&phases, delta)?;
    println!("epsilon {:.4} (RDP, order {}) / {:.4} (PLD)", rdp.epsilon, rdp.order, pld.epsilon);
    // The smallest noise multiplier that keeps the same training within epsilon 1 (RDP).
    let sigma = noise_multiplier_for_epsilon(1.0, q, steps, delta, &RdpAccountant::default())?;
    println!("sigma {:.4} gives epsilon {:.4}", sigma.noise_multiplier, sigma.epsilon);
    Ok(())
}
