//! `dpaudit account`: epsilon of a mechanism from every accountant, and calibration.
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use dpaudit_core::accounting::pld::{Discretization, PldAccountant};
use dpaudit_core::accounting::{self, calibration, exact, rdp, Phase};
use serde_json::json;

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Epsilon at a given delta for one or more phases of (sampling rate, noise multiplier, steps).
    ///
    /// Every figure printed names its accountant and the sampling scheme (Poisson), so it can be
    /// traced. RDP: Rényi DP at the best order (Mironov et al. 2019), converted with the tighter of
    /// the classic and the improved conversion. PLD: a pessimistic privacy loss distribution
    /// (never below the true epsilon), on a grid chosen from the problem unless
    /// --pld-discretization fixes it. --verify re-derives an upper bound with the 256-bit MPFR
    /// oracle and directed rounding. Every accountant asked for runs: those that succeed are
    /// printed, each failure is reported on stderr (and under `errors` with --json). Exit status:
    /// 0 when all succeeded, 3 when some but not all failed, 1 when all failed or the input is
    /// invalid.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier that keeps epsilon at or below a target for --steps, or (with
    /// --noise-multiplier) the most steps that do.
    Calibrate(CalibrateArgs),
}

#[derive(Args)]
pub struct MechanismArgs {
    /// Poisson sampling rate q = expected lot size / dataset size, in (0, 1].
    #[arg(long, allow_negative_numbers = true, short = 'q')]
    pub sampling_rate: Option<f64>,
    /// Noise multiplier sigma = noise standard deviation / clipping norm, > 0.
    #[arg(long, allow_negative_numbers = true, short = 's')]
    pub noise_multiplier: Option<f64>,
    /// Number of steps (noisy updates).
    #[arg(long, short = 't')]
    pub steps: Option<u64>,
    /// A phase "Q,SIGMA,STEPS"; repeat for heterogeneous composition (schedules, GANs, DP-PCA).
    #[arg(long = "phase", value_name = "Q,SIGMA,STEPS", value_parser = parse_phase)]
    pub phases: Vec<Phase>,
}

#[derive(Args)]
pub struct EpsilonArgs {
    #[command(flatten)]
    pub mechanism: MechanismArgs,
    /// Target delta, in (0, 1).
    #[arg(long, allow_negative_numbers = true, short = 'd')]
    pub delta: f64,
    /// Which accountant(s) to run.
    #[arg(long, value_enum, default_value_t = AccountantChoice::All)]
    pub accountant: AccountantChoice,
    /// PLD grid width: `auto` (chosen from the problem, a twentieth of the per-step privacy loss's
    /// standard deviation) or a fixed width in [1e-7, 0.1] such as 1e-4.
    #[arg(long, default_value = "auto", value_parser = parse_discretization)]
    pub pld_discretization: Discretization,
    /// Also compute a rigorous upper bound with the arbitrary-precision (MPFR) oracle.
    #[arg(long)]
    pub verify: bool,
    /// Print JSON (keys rdp.epsilon, rdp.order, pld.epsilon, pld.discretization,
    /// verified.epsilon; errors.<accountant> for each that failed).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// The epsilon not to exceed.
    #[arg(long, allow_negative_numbers = true)]
    pub target_epsilon: f64,
    /// Poisson sampling rate q, in (0, 1].
    #[arg(long, allow_negative_numbers = true, short = 'q')]
    pub sampling_rate: f64,
    /// Number of steps: find the noise multiplier for them.
    #[arg(long, short = 't', required_unless_present = "noise_multiplier", conflicts_with = "noise_multiplier")]
    pub steps: Option<u64>,
    /// Noise multiplier: find instead the most steps the budget allows with it.
    #[arg(long, allow_negative_numbers = true, short = 's')]
    pub noise_multiplier: Option<f64>,
    /// Target delta, in (0, 1).
    #[arg(long, allow_negative_numbers = true, short = 'd')]
    pub delta: f64,
    /// The accountant whose epsilon must stay at or below the target.
    #[arg(long, value_enum, default_value_t = SingleAccountant::Rdp)]
    pub accountant: SingleAccountant,
    /// PLD grid width (with --accountant pld): `auto` (chosen from the problem at each noise
    /// multiplier tried) or a fixed width in [1e-7, 0.1].
    #[arg(long, default_value = "auto", value_parser = parse_discretization)]
    pub pld_discretization: Discretization,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum AccountantChoice {
    Rdp,
    Pld,
    All,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum SingleAccountant {
    Rdp,
    Pld,
}

pub fn parse_phase(text: &str) -> Result<Phase, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [q, s, t] = parts.as_slice() else {
        return Err(format!("expected Q,SIGMA,STEPS (three comma-separated numbers), got {text:?}"));
    };
    let q: f64 = q.parse().map_err(|e| format!("sampling rate {q:?}: {e}"))?;
    let s: f64 = s.parse().map_err(|e| format!("noise multiplier {s:?}: {e}"))?;
    let t: u64 = t.parse().map_err(|e| format!("steps {t:?}: {e}"))?;
    Phase::new(q, s, t).map_err(|e| e.to_string())
}

impl MechanismArgs {
    fn phases(&self) -> Result<Vec<Phase>> {
        let mut phases = self.phases.clone();
        match (self.sampling_rate, self.noise_multiplier, self.steps) {
            (Some(q), Some(s), Some(t)) => phases.insert(0, Phase::new(q, s, t)?),
            (None, None, None) => {}
            _ => bail!(
                "give all three of --sampling-rate, --noise-multiplier and --steps (or use --phase Q,SIGMA,STEPS)"
            ),
        }
        if phases.is_empty() {
            bail!("no mechanism given: use --sampling-rate/--noise-multiplier/--steps or --phase Q,SIGMA,STEPS");
        }
        Ok(phases)
    }
}

pub fn describe_phases(phases: &[Phase]) -> serde_json::Value {
    json!(phases
        .iter()
        .map(|p| json!({"sampling_rate": p.sampling_rate, "noise_multiplier": p.noise_multiplier, "steps": p.steps}))
        .collect::<Vec<_>>())
}

/// `--pld-discretization`: `auto` or a grid width.
pub fn parse_discretization(s: &str) -> std::result::Result<Discretization, String> {
    s.parse::<Discretization>().map_err(|e| e.to_string())
}

/// Exit status of `account epsilon` when some, but not all, of the accountants asked for failed:
/// the others' results are printed, each failure is reported on stderr (and under `errors` in
/// JSON).
pub const EXIT_SOME_ACCOUNTANTS_FAILED: i32 = 3;

pub fn account_epsilon(args: &EpsilonArgs) -> Result<i32> {
    let phases = args.mechanism.phases()?;
    accounting::validate_delta(args.delta)?;
    let pld_accountant = PldAccountant::with_discretization(args.pld_discretization)?;
    let mut out = json!({
        "mechanism": "poisson_subsampled_gaussian",
        "sampling": "poisson",
        "adjacency": "add_or_remove_one",
        "delta": args.delta,
        "phases": describe_phases(&phases),
    });
    // Every accountant asked for runs; a failure of one does not hide the others' results.
    let mut errors = serde_json::Map::new();
    let mut record = |key: &str, name: &str, result: Result<serde_json::Value>| match result {
        Ok(v) => out[key] = v,
        Err(e) => {
            errors.insert(key.to_string(), json!(format!("{name}: {e:#}")));
        }
    };
    if args.accountant != AccountantChoice::Pld {
        record(
            "rdp",
            "RDP accountant",
            rdp::epsilon(&phases, args.delta).map_err(Into::into).and_then(|r| Ok(serde_json::to_value(r)?)),
        );
    }
    if args.accountant != AccountantChoice::Rdp {
        record(
            "pld",
            "PLD accountant",
            pld_accountant.epsilon(&phases, args.delta).map_err(Into::into).and_then(|p| Ok(serde_json::to_value(p)?)),
        );
    }
    if args.verify {
        record(
            "verified",
            "MPFR oracle",
            exact::verified_epsilon(&phases, args.delta, &rdp::default_orders())
                .map_err(Into::into)
                .and_then(|v| Ok(serde_json::to_value(v)?)),
        );
    }
    let asked = usize::from(args.accountant != AccountantChoice::Pld)
        + usize::from(args.accountant != AccountantChoice::Rdp)
        + usize::from(args.verify);
    let failed = errors.len();
    for message in errors.values() {
        eprintln!("error: {}", message.as_str().unwrap_or("?"));
    }
    if failed == asked {
        bail!("no accountant gave an epsilon");
    }
    if failed > 0 {
        out["errors"] = serde_json::Value::Object(errors);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("mechanism: Poisson-subsampled Gaussian, add/remove-one adjacency, delta = {:e}", args.delta);
        for (i, p) in phases.iter().enumerate() {
            println!("  phase {}: q = {}, sigma = {}, steps = {}", i + 1, p.sampling_rate, p.noise_multiplier, p.steps);
        }
        if let Some(r) = out.get("rdp") {
            println!(
                "RDP accountant:      epsilon = {:.6}  (order {}, {} conversion)",
                r["epsilon"].as_f64().unwrap_or(f64::NAN),
                r["order"],
                r["conversion"].as_str().unwrap_or("?")
            );
        }
        if let Some(p) = out.get("pld") {
            println!(
                "PLD accountant:      epsilon = {:.6}  (pessimistic; discretisation {:e}, {}{})",
                p["epsilon"].as_f64().unwrap_or(f64::NAN),
                p["discretization"].as_f64().unwrap_or(f64::NAN),
                match args.pld_discretization {
                    Discretization::Auto => "chosen automatically",
                    Discretization::Fixed(_) => "fixed",
                },
                if p["construction"] == "rounded_up" { "; losses rounded up to the grid" } else { "" }
            );
        }
        if let Some(v) = out.get("verified") {
            println!(
                "MPFR oracle (RDP):   epsilon <= {:.6}  (order {}, 256-bit, rounded up)",
                v["epsilon"].as_f64().unwrap_or(f64::NAN),
                v["order"]
            );
        }
    }
    Ok(if failed > 0 { EXIT_SOME_ACCOUNTANTS_FAILED } else { 0 })
}

pub fn account_calibrate(args: &CalibrateArgs) -> Result<()> {
    let rdp_accountant = rdp::RdpAccountant::default();
    let pld_accountant = PldAccountant::with_discretization(args.pld_discretization)?;
    let accountant: &dyn calibration::EpsilonAccountant = match args.accountant {
        SingleAccountant::Rdp => &rdp_accountant,
        SingleAccountant::Pld => &pld_accountant,
    };
    let name = accountant.name();
    let mut out = json!({
        "accountant": name, "sampling": "poisson", "target_epsilon": args.target_epsilon,
        "sampling_rate": args.sampling_rate, "delta": args.delta,
    });
    if args.accountant == SingleAccountant::Pld {
        out["pld_discretization"] = json!(args.pld_discretization.to_string());
    }
    let sentence = if let (Some(steps), None) = (args.steps, args.noise_multiplier) {
        let cal = calibration::noise_multiplier_for_epsilon(
            args.target_epsilon,
            args.sampling_rate,
            steps,
            args.delta,
            accountant,
        )
        .context("calibrating the noise multiplier")?;
        out["steps"] = json!(steps);
        out["noise_multiplier"] = json!(cal.noise_multiplier);
        out["epsilon"] = json!(cal.epsilon);
        format!("noise multiplier sigma = {:.6} gives epsilon = {:.6}", cal.noise_multiplier, cal.epsilon)
    } else {
        let sigma = args.noise_multiplier.unwrap_or(f64::NAN);
        let steps =
            calibration::max_steps_for_epsilon(args.target_epsilon, args.sampling_rate, sigma, args.delta, accountant)
                .context("finding the steps the budget allows")?;
        let achieved = if steps == 0 {
            0.0
        } else {
            accountant.epsilon_of(&[Phase::new(args.sampling_rate, sigma, steps)?], args.delta)?
        };
        out["noise_multiplier"] = json!(sigma);
        out["max_steps"] = json!(steps);
        out["epsilon"] = json!(achieved);
        format!("at most {steps} steps keep epsilon = {achieved:.6}")
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{sentence} <= {} ({name} accountant, Poisson sampling, q = {}, {}delta = {:e})",
            args.target_epsilon,
            args.sampling_rate,
            match (args.steps, args.noise_multiplier) {
                (Some(t), None) => format!("{t} steps, "),
                (_, s) => format!("sigma = {}, ", s.unwrap_or(f64::NAN)),
            },
            args.delta
        );
    }
    Ok(())
}

/// Runs `dpaudit account`; returns the exit status.
pub fn run(cmd: AccountCommand) -> Result<i32> {
    match cmd {
        AccountCommand::Epsilon(args) => account_epsilon(&args),
        AccountCommand::Calibrate(args) => account_calibrate(&args).map(|()| 0),
    }
}
