//! Privacy loss distribution (PLD) accountant for the Poisson-subsampled Gaussian mechanism under
//! add/remove adjacency, with heterogeneous composition over [`Phase`]s.
//!
//! Pipeline, per direction (remove, then add), each step proven in
//! [`proofs/accounting/pld.md`](../../../proofs/accounting/pld.md):
//!
//! 1. **Dominating discretisation** ("connect the dots", Doroshenko, Ghazi, Kamath, Kumar and
//!    Manurangsi 2022, Algorithm 1): the hockey-stick curve of one step is evaluated in closed
//!    form at the grid `eps_i = i h` and interpolated linearly in `e^eps`. The interpolant is the
//!    privacy curve of a pair of discrete distributions on the grid plus `+inf`, and it dominates
//!    the true pair (proof section 1).
//! 2. **Composition by FFT**: each phase's pmf is folded onto a circle of `N` points, transformed
//!    once (real-to-complex), raised pointwise to `steps`, multiplied across phases and
//!    transformed back: two FFTs per phase, whatever the number of steps (section 2).
//! 3. **Window and aliasing**: the circle covers a window `[A h, (A + N) h)` chosen by Chernoff
//!    bounds computed exactly from the discretised pmf; mass outside the window is bounded by the
//!    same Chernoff bounds and charged to delta twice (once as aliasing, once as missing mass)
//!    (section 3).
//! 4. **Mass at infinity**: the per-step truncated tail is charged to delta in full:
//!    `1 - prod_p (1 - p_inf,p)^(T_p) <= sum_p T_p p_inf,p` (section 4).
//! 5. **Floating-point error of the FFT route**, bounded from Higham's FFT error bound and the
//!    conditioning of the pointwise power, and added to delta (section 5).
//! 6. **Epsilon search**: exact inversion of the piecewise-linear-in-`e^eps` upper curve (section 6).
//!
//! Epsilon is the larger of the two directions' epsilons: the neighbouring datasets are fixed for
//! the whole run, so every step has the same direction.
// Negated comparisons (`!(x <= limit)`) are deliberate: they also reject NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
use super::{validate_delta, validate_phases, Phase};
use crate::error::{Error, Result};
use realfft::num_complex::Complex;
use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};
use statrs::function::erf::erfc;

/// Default grid width `h` of the privacy-loss discretisation (the same as Google's
/// `value_discretization_interval=1e-4` comparison point).
pub const DEFAULT_DISCRETIZATION: f64 = 1e-4;
/// Default target for the Chernoff bound on the composed mass outside the window, each side.
pub const DEFAULT_TAIL_MASS: f64 = 1e-15;
/// Smallest accepted grid width (memory: one step's support is `range / h` points).
pub const MIN_DISCRETIZATION: f64 = 1e-7;
/// Largest accepted grid width.
pub const MAX_DISCRETIZATION: f64 = 0.1;
/// Per-step truncation of the noise, in standard deviations: everything beyond is sent to
/// `+inf` (charged to delta in full) or rounded up to the lowest grid point (upward, safe).
/// `P(Z > 10) = 7.6e-24`.
const TRUNCATION_Z: f64 = 10.0;
/// Largest per-step support (points) and largest FFT window accepted; above them the accountant
/// returns [`Error::Numerical`] rather than allocating gigabytes.
const MAX_POINTS: usize = 1 << 25;
/// Unit roundoff of f64.
const U: f64 = f64::EPSILON / 2.0;
/// Assumed bound on the relative error of the FFT library's twiddle factors (rustfft computes
/// them with `sin`/`cos`, correctly rounded to within one ulp; we allow four).
const TWIDDLE_ERROR: f64 = 4.0 * U;
/// Multiplicative slack applied to every computed bound that is itself a floating-point sum of
/// positive terms (relative rounding error far below 1e-9).
const BOUND_SLACK: f64 = 1.0 + 1e-9;

/// Which neighbouring relation a bound is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The real dataset has one more example: `P = (1-q) N(0, s^2) + q N(1, s^2)`, `Q = N(0, s^2)`.
    Remove,
    /// The real dataset has one fewer example: `P = N(0, s^2)`, `Q = (1-q) N(0, s^2) + q N(1, s^2)`.
    Add,
}

impl Direction {
    /// The pair with `P` and `Q` swapped.
    fn reverse(self) -> Self {
        match self {
            Direction::Remove => Direction::Add,
            Direction::Add => Direction::Remove,
        }
    }
}

/// The PLD accountant. See the module documentation for the method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PldAccountant {
    /// Grid width `h` of the privacy loss.
    discretization: f64,
    /// Target bound on the composed mass outside the FFT window, each side.
    tail_mass: f64,
}

impl Default for PldAccountant {
    /// `h = 1e-4`, tail mass `1e-15`.
    fn default() -> Self {
        PldAccountant { discretization: DEFAULT_DISCRETIZATION, tail_mass: DEFAULT_TAIL_MASS }
    }
}

/// Where the composed distribution was kept, and what each neglected part cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PldDirectionBound {
    /// The direction.
    pub direction: Direction,
    /// Epsilon for this direction (the smallest at which its upper delta curve is <= delta).
    pub epsilon: f64,
    /// Lowest privacy loss kept in the FFT window (`A h`).
    pub window_low: f64,
    /// One past the highest privacy loss kept (`(A + N) h`).
    pub window_high: f64,
    /// FFT size `N` (window points).
    pub window_points: usize,
    /// Chernoff bound on the composed (finite) mass above the window; charged twice to delta.
    pub upper_tail_mass: f64,
    /// Chernoff bound on the composed (finite) mass below the window; charged once to delta
    /// (aliasing), twice when epsilon falls below the window.
    pub lower_tail_mass: f64,
    /// Upper bound on the composed mass at `+inf`, charged to delta in full.
    pub infinity_mass: f64,
    /// Bound on the floating-point error of the FFT route and of the final sums.
    pub fft_error: f64,
    /// Sum of the terms above as charged to delta (`2 upper + lower + infinity + fft`).
    pub delta_charged: f64,
}

/// An epsilon from [`PldAccountant::epsilon`], with everything needed to trace it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PldEpsilon {
    /// The epsilon: the larger of the two directions', never below the true epsilon.
    pub epsilon: f64,
    /// The delta it was computed for.
    pub delta: f64,
    /// Grid width `h`.
    pub discretization: f64,
    /// The direction with the larger epsilon.
    pub worse_direction: Direction,
    /// Details for the remove direction.
    pub remove: PldDirectionBound,
    /// Details for the add direction.
    pub add: PldDirectionBound,
}

impl PldAccountant {
    /// An accountant with grid width `discretization` and the default tail mass.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `discretization` is in `[1e-7, 0.1]`.
    pub fn new(discretization: f64) -> Result<Self> {
        if !(MIN_DISCRETIZATION..=MAX_DISCRETIZATION).contains(&discretization) {
            return Err(Error::invalid(
                "PLD discretization",
                discretization,
                format!("must be in [{MIN_DISCRETIZATION}, {MAX_DISCRETIZATION}]"),
            ));
        }
        Ok(PldAccountant { discretization, tail_mass: DEFAULT_TAIL_MASS })
    }

    /// The same accountant with another target for the mass outside the window (each side).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `tail_mass` is in `[1e-300, 1e-6]`.
    pub fn with_tail_mass(self, tail_mass: f64) -> Result<Self> {
        if !(1e-300..=1e-6).contains(&tail_mass) {
            return Err(Error::invalid("PLD tail mass", tail_mass, "must be in [1e-300, 1e-6]"));
        }
        Ok(PldAccountant { tail_mass, ..self })
    }

    /// Grid width `h`.
    pub fn discretization(&self) -> f64 {
        self.discretization
    }

    /// Target bound on the composed mass outside the window, each side.
    pub fn tail_mass(&self) -> f64 {
        self.tail_mass
    }

    /// Epsilon of the composition of `phases` at `delta`.
    ///
    /// # Proof definition
    /// For valid `phases` and `delta` in (0, 1), returns `Ok(e)` where `e.epsilon >= 0` and the
    /// composition of the Poisson-subsampled Gaussian mechanisms of `phases` under add/remove
    /// adjacency is `(e.epsilon, delta)`-DP (for both directions), or returns an error.
    /// Proof: `proofs/accounting/pld.md`, theorem 7; checked by `tests/accounting_pld.rs`
    /// (`pld_dominates_exact_gaussian`, `pld_matches_google_golden`, `pld_below_crate_rdp`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid phases or delta; [`Error::Numerical`] when the
    /// grid or window would be too large, or when delta is not above the charged error terms.
    ///
    /// # Examples
    /// ```
    /// use dpaudit::accounting::{pld::PldAccountant, Phase};
    /// let phase = Phase::new(256.0 / 60_000.0, 1.1, 1_000)?;
    /// let eps = PldAccountant::default().epsilon(&[phase], 1e-5)?;
    /// assert!(eps.epsilon > 0.5 && eps.epsilon < 0.7);
    /// # Ok::<(), dpaudit::Error>(())
    /// ```
    pub fn epsilon(&self, phases: &[Phase], delta: f64) -> Result<PldEpsilon> {
        validate_phases(phases)?;
        validate_delta(delta)?;
        let tail = self.tail_mass.min(delta * 1e-6);
        let remove = self.compose(phases, Direction::Remove, tail)?.epsilon_bound(delta)?;
        let add = self.compose(phases, Direction::Add, tail)?.epsilon_bound(delta)?;
        let (epsilon, worse_direction) = if remove.epsilon >= add.epsilon {
            (remove.epsilon, Direction::Remove)
        } else {
            (add.epsilon, Direction::Add)
        };
        Ok(PldEpsilon { epsilon, delta, discretization: self.discretization, worse_direction, remove, add })
    }

    /// Delta of the composition of `phases` at `epsilon`.
    ///
    /// # Proof definition
    /// For valid `phases` and finite `epsilon`, returns `Ok(d)` with `d` in `[0, 1]` and the
    /// composition `(epsilon, d)`-DP for both directions, or returns an error.
    /// Proof: `proofs/accounting/pld.md`, theorem 7; checked by `pld_delta_dominates_exact_gaussian`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid phases or a non-finite epsilon;
    /// [`Error::Numerical`] when the grid or window would be too large.
    pub fn delta(&self, phases: &[Phase], epsilon: f64) -> Result<f64> {
        validate_phases(phases)?;
        if !epsilon.is_finite() {
            return Err(Error::invalid("epsilon", epsilon, "must be finite"));
        }
        let mut worst: f64 = 0.0;
        for direction in [Direction::Remove, Direction::Add] {
            let composed = self.compose(phases, direction, self.tail_mass)?;
            worst = worst.max(composed.delta_upper(epsilon));
        }
        Ok(worst.min(1.0))
    }

    /// Composes one direction on a window of its own.
    fn compose(&self, phases: &[Phase], direction: Direction, tail: f64) -> Result<Composed> {
        let h = self.discretization;
        let pmfs = phases
            .iter()
            .map(|p| step_pmf(p.sampling_rate, p.noise_multiplier, direction, h))
            .collect::<Result<Vec<_>>>()?;
        let steps: Vec<f64> = phases.iter().map(|p| p.steps as f64).collect();
        let total_steps: f64 = steps.iter().sum();

        // Mass at +inf (section 4): 1 - prod (1 - p)^T <= sum T p (union bound), rounded up.
        let infinity_mass =
            (pmfs.iter().zip(&steps).map(|(pmf, &t)| t * pmf.infinity).sum::<f64>() * BOUND_SLACK).min(1.0);

        // Window from Chernoff bounds (section 3).
        let ln_tail = tail.ln();
        let (mut mean, mut var) = (0.0, 0.0);
        for (pmf, &t) in pmfs.iter().zip(&steps) {
            let (m, v) = pmf.mean_var(h);
            mean += t * m;
            var += t * v;
        }
        let sd = var.sqrt().max(h);
        let t0 = (2.0 * -ln_tail).sqrt() / sd;
        let cumulant = |t: f64| -> f64 {
            pmfs.iter().zip(&steps).map(|(pmf, &s)| if s == 0.0 { 0.0 } else { s * pmf.log_mgf(t) }).sum()
        };
        // Any t > 0 gives a valid bound; search a coarse grid of t around the Gaussian guess, then
        // refine around the best point.
        let high_at = |t: f64| (cumulant(t) - ln_tail) / t;
        let low_at = |t: f64| (ln_tail - cumulant(-t)) / t;
        let grid = |k: i32| t0 * 2f64.powf(f64::from(k) / 2.0);
        let (mut high, mut k_high) = (f64::INFINITY, 0);
        let (mut low, mut k_low) = (f64::NEG_INFINITY, 0);
        for k in (-10..=4).step_by(2) {
            // P(L >= l) <= exp(K(t) - t l): the tail is <= tail at l = (K(t) - ln tail) / t.
            let v = high_at(grid(k));
            if v < high {
                (high, k_high) = (v, k);
            }
            // P(L <= l) <= exp(K(-t) + t l): the tail is <= tail at l = (ln tail - K(-t)) / t.
            let v = low_at(grid(k));
            if v > low {
                (low, k_low) = (v, k);
            }
        }
        for k in [k_high - 1, k_high + 1] {
            high = high.min(high_at(grid(k)));
        }
        for k in [k_low - 1, k_low + 1] {
            low = low.max(low_at(grid(k)));
        }
        if !(high.is_finite() && low.is_finite()) {
            return Err(Error::numerical("PLD window", format!("non-finite Chernoff window [{low}, {high}]")));
        }
        let low = low.min(mean).min(high);
        let a = (low / h).floor();
        let b = (high / h).ceil();
        let width = b - a + 1.0;
        if !(width <= MAX_POINTS as f64) {
            return Err(Error::numerical(
                "PLD window",
                format!("{width} points needed (limit {MAX_POINTS}); use a coarser discretization"),
            ));
        }
        let n = fast_size((width as usize).max(16));
        if n > MAX_POINTS {
            return Err(Error::numerical("PLD window", format!("FFT size {n} above limit {MAX_POINTS}")));
        }
        let a = a as i64;
        // The window [a, a + n) is at least [low, high], so both tails are <= tail.
        let upper_tail_mass = tail * BOUND_SLACK;
        let lower_tail_mass = tail * BOUND_SLACK;

        // FFT composition (section 2) with its error bound (section 5).
        let mut planner = RealFftPlanner::<f64>::new();
        let forward = planner.plan_fft_forward(n);
        let inverse = planner.plan_fft_inverse(n);
        let bins = n / 2 + 1;
        let log2n = (n as f64).log2().ceil() + 1.0; // + 1 for realfft's post-processing pass
        let eta = TWIDDLE_ERROR + gamma(4) * (std::f64::consts::SQRT_2 + TWIDDLE_ERROR);
        let eps_fft = log2n * eta / (1.0 - log2n * eta);
        let mut log_abs = vec![0.0f64; bins];
        let mut angle = vec![0.0f64; bins];
        let mut zero = vec![false; bins];
        let mut input_error = 0.0; // sum_p T_p e1_p, e1_p = eps_fft ||X_p||_2
        let mut base: i128 = 0;
        let mut buffer = vec![0.0f64; n];
        let mut spectrum = forward.make_output_vec();
        for (pmf, &t) in pmfs.iter().zip(&steps) {
            if t == 0.0 {
                continue;
            }
            buffer.iter_mut().for_each(|v| *v = 0.0);
            for (i, &m) in pmf.mass.iter().enumerate() {
                buffer[i % n] += m;
            }
            let norm2: f64 = buffer.iter().map(|v| v * v).sum::<f64>().sqrt();
            let e1 = eps_fft * (n as f64).sqrt() * norm2 * BOUND_SLACK + U * pmf.total;
            input_error += t * e1;
            base += i128::from(pmf.lo) * i128::from(t as u64);
            forward
                .process(&mut buffer, &mut spectrum)
                .map_err(|e| Error::numerical("PLD forward FFT", e.to_string()))?;
            for (k, z) in spectrum.iter().enumerate() {
                let r = z.norm();
                if r == 0.0 {
                    zero[k] = true;
                } else {
                    log_abs[k] += t * r.ln();
                    angle[k] = (angle[k] + t * z.arg()).rem_euclid(std::f64::consts::TAU);
                }
            }
        }
        let input_error_total = input_error * input_error.exp();
        // Pointwise power; accumulate ||Y||_2^2 and the power's rounding error over the full
        // (conjugate-symmetric) spectrum.
        let n_phases = phases.len() as f64;
        let mut y_norm2 = 0.0;
        let mut pow_err2 = 0.0;
        for k in 0..bins {
            let weight = if k == 0 || (n.is_multiple_of(2) && k == bins - 1) { 1.0 } else { 2.0 };
            let y = if zero[k] { Complex::new(0.0, 0.0) } else { Complex::from_polar(log_abs[k].exp(), angle[k]) };
            let r = y.norm();
            // Relative error of exp(sum_p T_p ln r_p + i sum_p T_p theta_p): per phase, ln r is off
            // by <= u |ln r| + 2u and theta by <= 2 pi u, each times T_p; the products, the sums,
            // the reduction mod 2 pi, exp and from_polar add a few u each (proof section 5).
            let rel = 4.0 * U * ((-log_abs[k]).max(0.0) + 5.0 * total_steps + n_phases + 2.0);
            let e = r * rel * (1.0 + rel);
            y_norm2 += weight * r * r;
            pow_err2 += weight * e * e;
            spectrum[k] = y;
        }
        spectrum[0].im = 0.0;
        if n.is_multiple_of(2) {
            spectrum[bins - 1].im = 0.0;
        }
        let mut out = inverse.make_output_vec();
        inverse.process(&mut spectrum, &mut out).map_err(|e| Error::numerical("PLD inverse FFT", e.to_string()))?;
        let scale = 1.0 / n as f64;
        let n_i = n as i128;
        let shift = (i128::from(a) - base).rem_euclid(n_i) as usize;
        let y: Vec<f64> = (0..n).map(|k| out[(shift + k) % n] * scale).collect();
        let abs_sum: f64 = y.iter().map(|v| v.abs()).sum();
        // Section 5: |sum_k c_k (yhat_k - y_k)| <= ||c||_2 ||yhat - y||_2 <= sqrt(N) ||yhat - y||_2,
        // ||yhat - y||_2 <= (||dY||_2 + eps_fft ||Y||_2) / sqrt(N) + u ||y||_2; plus the final sums.
        let d_y = input_error_total + pow_err2.sqrt();
        let fft_error = (d_y * (1.0 + eps_fft)
            + eps_fft * y_norm2.sqrt()
            + U * (n as f64).sqrt() * abs_sum
            + 6.0 * (n as f64) * U * abs_sum)
            * BOUND_SLACK;
        if !fft_error.is_finite() || !abs_sum.is_finite() {
            return Err(Error::numerical("PLD composition", "non-finite FFT output"));
        }
        Ok(Composed { direction, h, a, y, infinity_mass, upper_tail_mass, lower_tail_mass, fft_error })
    }
}

/// `gamma_k = k u / (1 - k u)` (Higham's notation).
fn gamma(k: u32) -> f64 {
    let ku = f64::from(k) * U;
    ku / (1.0 - ku)
}

/// Smallest even `2^a 3^b >= n`.
fn fast_size(n: usize) -> usize {
    let mut best = usize::MAX;
    let mut p3 = 1usize;
    while p3 < 2 * n {
        let mut m = p3 * 2;
        while m < n {
            m *= 2;
        }
        best = best.min(m);
        p3 *= 3;
    }
    best
}

/// One step's dominating discretised PLD: mass at losses `(lo + i) h` and at `+inf`.
#[derive(Debug, Clone)]
struct StepPmf {
    lo: i64,
    mass: Vec<f64>,
    infinity: f64,
    total: f64,
    /// `(l_i, ln m_i)` for every positive mass, for the Chernoff bounds.
    log_support: Vec<(f64, f64)>,
}

impl StepPmf {
    /// Mean and variance of the finite part, normalised by its mass.
    fn mean_var(&self, h: f64) -> (f64, f64) {
        let (mut m0, mut m1) = (0.0, 0.0);
        for (i, &m) in self.mass.iter().enumerate() {
            m0 += m;
            m1 += m * (self.lo + i as i64) as f64 * h;
        }
        let mean = m1 / m0;
        let var: f64 = self
            .mass
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let d = (self.lo + i as i64) as f64 * h - mean;
                m * d * d
            })
            .sum::<f64>()
            / m0;
        (mean, var)
    }

    /// `ln sum_i m_i exp(t l_i)` over the finite part, computed with a max-shift (two passes over
    /// the precomputed `(l_i, ln m_i)`, one `exp` per point). Every positive mass is kept, so the
    /// value is not below the exact one by more than the rounding of the sum (covered by
    /// `BOUND_SLACK`).
    fn log_mgf(&self, t: f64) -> f64 {
        let top = self.log_support.iter().fold(f64::NEG_INFINITY, |acc, &(l, lm)| acc.max(lm + t * l));
        let sum: f64 = self.log_support.iter().map(|&(l, lm)| (lm + t * l - top).exp()).sum();
        top + (sum * BOUND_SLACK).ln()
    }
}

/// Standard normal upper tail `P(Z > z)`.
fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// `ln(exp(x) + exp(y))`.
fn log_add_exp(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

/// The privacy loss `ln(P(x) / Q(x))` of the remove pair: `ln(1 - q + q exp((2x - 1) / (2 s^2)))`;
/// the add pair's loss at the same `x` is its negative.
fn remove_loss(q: f64, s: f64, x: f64) -> f64 {
    let a = (2.0 * x - 1.0) / (2.0 * s * s);
    if q >= 1.0 {
        a
    } else {
        log_add_exp((-q).ln_1p(), q.ln() + a)
    }
}

/// The hockey-stick divergence `H_{e^eps}(P || Q)` of one step, in closed form (proof section 1).
fn step_delta(q: f64, s: f64, direction: Direction, eps: f64) -> f64 {
    let d = match direction {
        Direction::Remove => {
            // L > eps iff x > x*, x* = s^2 ln((e^eps - 1 + q) / q) + 1/2, when eps > ln(1 - q).
            let c = eps.exp_m1() + q;
            if c <= 0.0 {
                return -eps.exp_m1();
            }
            let x = s * s * (c / q).ln() + 0.5;
            q * normal_sf((x - 1.0) / s) - c * normal_sf(x / s)
        }
        Direction::Add => {
            // L > eps iff x < x*, x* = s^2 ln((e^-eps - 1 + q) / q) + 1/2, when eps < -ln(1 - q).
            let c = (-eps).exp_m1() + q;
            if c <= 0.0 {
                return 0.0;
            }
            let x = s * s * (c / q).ln() + 0.5;
            // Phi(x/s) - e^eps ((1-q) Phi(x/s) + q Phi((x-1)/s)) = e^eps (c Phi(x/s) - q Phi((x-1)/s)).
            eps.exp() * (c * normal_sf(-x / s) - q * normal_sf((1.0 - x) / s))
        }
    };
    d.clamp(0.0, 1.0)
}

/// The connect-the-dots pmf of one step (proof section 1).
fn step_pmf(q: f64, s: f64, direction: Direction, h: f64) -> Result<StepPmf> {
    let x_low = -TRUNCATION_Z * s;
    let x_high = 1.0 + TRUNCATION_Z * s;
    let (l_low, l_high) = match direction {
        Direction::Remove => (remove_loss(q, s, x_low), remove_loss(q, s, x_high)),
        Direction::Add => (-remove_loss(q, s, x_high), -remove_loss(q, s, x_low)),
    };
    let lo = (l_low / h).floor();
    let hi = (l_high / h).ceil();
    if !(lo.is_finite() && hi.is_finite() && hi - lo + 1.0 <= MAX_POINTS as f64) {
        return Err(Error::numerical(
            "PLD discretisation",
            format!("loss range [{l_low}, {l_high}] needs too many points at h = {h}"),
        ));
    }
    // At least three points, the top one at a positive loss (delta is used there).
    let (lo, hi) = (lo as i64, (hi as i64).max(lo as i64 + 2).max(1));
    let len = (hi - lo + 1) as usize;
    let eps_at = |i: usize| (lo + i as i64) as f64 * h;
    // delta(eps) where eps >= -h, and gamma(eps) = delta(eps) - (1 - e^eps) = e^eps delta_rev(-eps)
    // where eps <= h (proof section 1, lemma 2): both are then small and accurate, and adding the
    // linear function 1 - e^eps does not change any interior mass.
    let mut deltas = vec![f64::NAN; len];
    let mut gammas = vec![f64::NAN; len];
    for i in 0..len {
        let eps = eps_at(i);
        if eps >= -h {
            deltas[i] = step_delta(q, s, direction, eps);
        }
        if eps <= h {
            gammas[i] = eps.exp() * step_delta(q, s, direction.reverse(), -eps);
        }
    }
    if deltas.iter().chain(&gammas).any(|d| d.is_infinite()) {
        return Err(Error::numerical("PLD discretisation", "non-finite hockey-stick value"));
    }
    // Pessimistic monotone repair (only raises values): delta is non-increasing in eps, gamma is
    // non-decreasing.
    for i in (0..len - 1).rev() {
        if !deltas[i].is_nan() && !deltas[i + 1].is_nan() {
            deltas[i] = deltas[i].max(deltas[i + 1]);
        }
    }
    for i in 1..len {
        if !gammas[i].is_nan() && !gammas[i - 1].is_nan() {
            gammas[i] = gammas[i].max(gammas[i - 1]);
        }
    }
    let em1 = h.exp_m1();
    let eh = h.exp();
    let mut mass = vec![0.0; len];
    mass[0] = if eps_at(0) < 0.0 {
        -gammas[0] + (gammas[1] - gammas[0]) / em1
    } else {
        1.0 - deltas[0] + (deltas[1] - deltas[0]) / em1
    };
    for i in 1..len - 1 {
        let v = if eps_at(i) < 0.0 { &gammas } else { &deltas };
        mass[i] = ((v[i + 1] - v[i]) - eh * (v[i] - v[i - 1])) / em1;
    }
    mass[len - 1] = (deltas[len - 1] - deltas[len - 2]) / (-h).exp_m1();
    // Negative masses (rounding) are dropped: each term of the delta curve has a non-negative
    // coefficient, so dropping a negative mass only raises the curve.
    for m in &mut mass {
        if !(*m > 0.0) {
            *m = 0.0;
        }
    }
    let total: f64 = mass.iter().sum();
    if !(total <= 1.0 + 1e-6) {
        return Err(Error::numerical("PLD discretisation", format!("pmf mass {total} exceeds 1")));
    }
    let log_support = mass.iter().enumerate().filter(|(_, &m)| m > 0.0).map(|(i, &m)| (eps_at(i), m.ln())).collect();
    Ok(StepPmf { lo, mass, infinity: deltas[len - 1], total, log_support })
}

/// The composed finite part of one direction on its window, and the charged error terms.
struct Composed {
    direction: Direction,
    h: f64,
    /// Absolute grid index of window position 0.
    a: i64,
    /// Composed (aliased) mass at window positions.
    y: Vec<f64>,
    infinity_mass: f64,
    upper_tail_mass: f64,
    lower_tail_mass: f64,
    fft_error: f64,
}

impl Composed {
    fn charged(&self) -> f64 {
        (2.0 * self.upper_tail_mass + self.lower_tail_mass + self.infinity_mass + self.fft_error) * BOUND_SLACK
    }

    fn loss(&self, k: usize) -> f64 {
        (self.a + k as i64) as f64 * self.h
    }

    /// Upper bound on the composed delta at `eps` (proof theorem 7).
    fn delta_upper(&self, eps: f64) -> f64 {
        let mut sum = 0.0;
        for (k, &y) in self.y.iter().enumerate() {
            let l = self.loss(k);
            if l > eps {
                sum += y * -(eps - l).exp_m1();
            }
        }
        let below = if eps < self.loss(0) { self.lower_tail_mass } else { 0.0 };
        (sum + self.charged() + below).clamp(0.0, 1.0)
    }

    /// The smallest epsilon at which the upper delta curve is <= delta (proof section 6).
    fn epsilon_bound(&self, delta: f64) -> Result<PldDirectionBound> {
        let charged = self.charged();
        let target = delta - charged;
        if !(target > 0.0) {
            return Err(Error::numerical(
                "PLD epsilon",
                format!("delta {delta} is not above the charged error terms {charged}"),
            ));
        }
        // D_j = sum_{k > j} y_k (1 - e^{l_j - l_k}); D_{j-1} = (1 - e^-h) S_j + e^-h D_j with
        // S_j = sum_{k >= j} y_k.
        let n = self.y.len();
        let c1 = -(-self.h).exp_m1();
        let c2 = (-self.h).exp();
        let mut d_j = 0.0; // D_{n-1}
        let mut s_j = 0.0;
        let mut found = None;
        for j in (1..n).rev() {
            s_j += self.y[j];
            let d_prev = c1 * s_j + c2 * d_j;
            if d_prev > target {
                found = Some((j - 1, d_prev, d_j));
                break;
            }
            d_j = d_prev;
        }
        let epsilon = match found {
            // Whole window already below target: the window's bottom is a valid epsilon.
            None => self.loss(0),
            Some((j, d_lo, d_hi)) => {
                // Linear in e^eps on [l_j, l_{j+1}].
                let frac = ((d_lo - target) / (d_lo - d_hi)).clamp(0.0, 1.0);
                let eps = self.loss(j) + (frac * self.h.exp_m1()).ln_1p();
                // Round up: a few ulps for the interpolation, never past the next grid point.
                (eps + 8.0 * U * eps.abs() + 4.0 * f64::MIN_POSITIVE).min(self.loss(j + 1))
            }
        };
        if !epsilon.is_finite() {
            return Err(Error::numerical("PLD epsilon", "non-finite epsilon"));
        }
        let n_f = n as f64;
        Ok(PldDirectionBound {
            direction: self.direction,
            epsilon: epsilon.max(0.0),
            window_low: self.loss(0),
            window_high: (self.a as f64 + n_f) * self.h,
            window_points: n,
            upper_tail_mass: self.upper_tail_mass,
            lower_tail_mass: self.lower_tail_mass,
            infinity_mass: self.infinity_mass,
            fft_error: self.fft_error,
            delta_charged: charged,
        })
    }
}

impl crate::accounting::calibration::EpsilonAccountant for PldAccountant {
    fn epsilon_of(&self, phases: &[Phase], delta: f64) -> Result<f64> {
        Ok(self.epsilon(phases, delta)?.epsilon)
    }

    fn name(&self) -> &'static str {
        "pld"
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn fast_size_is_smooth_and_large_enough() {
        for n in [16, 17, 100, 1000, 98_305, 131_072] {
            let m = fast_size(n);
            assert!(m >= n && m.is_multiple_of(2));
            let mut r = m;
            while r.is_multiple_of(2) {
                r /= 2;
            }
            while r.is_multiple_of(3) {
                r /= 3;
            }
            assert_eq!(r, 1, "{m}");
        }
    }

    #[test]
    fn step_delta_q1_matches_gaussian_closed_form() {
        let s: f64 = 2.0;
        for eps in [-1.0, 0.0, 0.3, 1.0, 2.0] {
            let exact = normal_sf(eps * s - 1.0 / (2.0 * s)) - eps.exp() * normal_sf(eps * s + 1.0 / (2.0 * s));
            for dir in [Direction::Remove, Direction::Add] {
                let d = step_delta(1.0, s, dir, eps);
                assert!((d - exact).abs() <= 1e-14, "{dir:?} {eps}: {d} vs {exact}");
            }
        }
    }

    #[test]
    fn step_pmf_is_a_valid_dominating_pair() {
        let h = 1e-3;
        for (q, s) in [(0.01, 1.0), (0.3, 0.8), (1.0, 2.0)] {
            for dir in [Direction::Remove, Direction::Add] {
                let pmf = step_pmf(q, s, dir, h).unwrap();
                let p_mass = pmf.total + pmf.infinity;
                assert!((p_mass - 1.0).abs() < 1e-9, "{q} {s} {dir:?}: P mass {p_mass}");
                // Q mass of the finite part <= 1.
                let q_mass: f64 =
                    pmf.mass.iter().enumerate().map(|(i, m)| m * (-((pmf.lo + i as i64) as f64) * h).exp()).sum();
                assert!(q_mass <= 1.0 + 1e-9, "{q} {s} {dir:?}: Q mass {q_mass}");
                // The discrete curve dominates the true one at off-grid points.
                for eps in [0.05, 0.123_45, 0.5, 1.0] {
                    let disc: f64 = pmf.infinity
                        + pmf
                            .mass
                            .iter()
                            .enumerate()
                            .map(|(i, m)| m * (-(eps - (pmf.lo + i as i64) as f64 * h).exp_m1()).max(0.0))
                            .sum::<f64>();
                    let truth = step_delta(q, s, dir, eps);
                    assert!(disc >= truth - 1e-13, "{q} {s} {dir:?} eps {eps}: {disc} < {truth}");
                    assert!(disc <= truth + 1e-4, "{q} {s} {dir:?} eps {eps}: {disc} >> {truth}");
                }
            }
        }
    }

    #[test]
    fn fft_composition_matches_direct_convolution() {
        // Two steps of a coarse pmf: FFT result vs direct convolution, within the stated bound.
        let h = 1e-2;
        let acc = PldAccountant::new(h).unwrap();
        let phase = Phase::new(0.2, 1.0, 3).unwrap();
        let composed = acc.compose(&[phase], Direction::Remove, 1e-15).unwrap();
        let pmf = step_pmf(0.2, 1.0, Direction::Remove, h).unwrap();
        let mut conv = pmf.mass.clone();
        for _ in 1..3 {
            let mut next = vec![0.0; conv.len() + pmf.mass.len() - 1];
            for (i, a) in conv.iter().enumerate() {
                for (j, b) in pmf.mass.iter().enumerate() {
                    next[i + j] += a * b;
                }
            }
            conv = next;
        }
        let base = 3 * pmf.lo;
        let mut worst: f64 = 0.0;
        for (k, &y) in composed.y.iter().enumerate() {
            let idx = composed.a + k as i64 - base;
            let truth = if idx >= 0 && (idx as usize) < conv.len() { conv[idx as usize] } else { 0.0 };
            worst = worst.max((y - truth).abs());
        }
        // Sup-norm error <= 2-norm error <= the charged bound (plus the aliased mass <= tails).
        assert!(
            worst <= composed.fft_error + 2.0 * composed.upper_tail_mass + composed.lower_tail_mass,
            "{worst} vs {}",
            composed.fft_error
        );
        assert!(composed.fft_error < 1e-10, "{}", composed.fft_error);
    }
}
