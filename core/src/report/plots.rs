//! The report's plots, as SVG documents drawn with `plotters` (SVG backend; text is escaped by
//! the backend). Each function returns a complete `<svg>` element for inlining into HTML.
use super::{format_delta, format_lower, format_upper, AuditSummary, EpsilonPoint, UtilityPoint};
use crate::error::{Error, Result};
use plotters::prelude::*;

/// Plot size in pixels (the HTML scales them to the page width).
pub const SIZE: (u32, u32) = (640, 400);
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(120, 120, 120);
const FONT: &str = "sans-serif";

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::numerical("report plot", e.to_string())
}

/// Epsilon of the claimed accountant (RDP) against training steps, with the claim (its
/// MPFR-verified final value, the certified epsilon) as a dashed line and the final epsilon of
/// each accountant that is not claimed as a marker.
///
/// # Errors
/// Fewer than one point; drawing errors.
pub fn epsilon_over_steps_svg(points: &[EpsilonPoint], finals: &[(String, f64)], claim: f64) -> Result<String> {
    let last = points.last().ok_or_else(|| Error::invalid("epsilon curve", 0, "needs at least one point"))?;
    let max_eps = points
        .iter()
        .map(|p| p.epsilon)
        .chain(finals.iter().map(|f| f.1))
        .chain(std::iter::once(claim))
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max);
    let x_max = last.step.max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Privacy spent over training (ε at the report's δ)", (FONT, 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max * 1.02, 0.0..(max_eps * 1.12).max(1e-3))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("training steps")
            .y_desc("ε (upper bound)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(draw_err)?;
        let mut curve: Vec<(f64, f64)> = vec![(0.0, 0.0)];
        curve.extend(points.iter().map(|p| (p.step as f64, p.epsilon)));
        chart
            .draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))
            .map_err(draw_err)?
            .label("RDP accountant (claimed)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, claim), (x_max * 1.02, claim)], 6, 4, GREY.stroke_width(1)))
            .map_err(draw_err)?
            .label(format!("certified claim ε = {}", format_upper(claim)))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY));
        for (i, (name, eps)) in finals.iter().enumerate() {
            let colour = [ORANGE, GREEN, RED][i % 3];
            chart
                .draw_series(std::iter::once(Circle::new((last.step as f64, *eps), 5, colour.filled())))
                .map_err(draw_err)?
                .label(format!("{name} (not claimed): {}", format_upper(*eps)))
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(GREY)
            .background_style(WHITE.mix(0.9))
            .label_font((FONT, 13))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// An audit's ROC on log-log axes, with the chance line and the limit that (ε, δ)-DP puts on any
/// attack (TPR ≤ e^ε FPR + δ) for the report's claim.
///
/// # Errors
/// An audit without ROC points; drawing errors.
pub fn roc_svg(audit: &AuditSummary, claim_epsilon: f64, claim_delta: f64) -> Result<String> {
    if audit.roc.is_empty() {
        return Err(Error::invalid("ROC", &audit.name, "has no points"));
    }
    // Axes from the data's resolution (1 / runs per side), at most 1e-4, up to 1.
    let resolution = audit.runs_per_side.filter(|&k| k > 0).map_or(1e-3, |k| 1.0 / k as f64);
    let min_rate = resolution.clamp(1e-6, 1e-2) / 2.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("ROC of audit {} (log-log)", audit.name), (FONT, 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((min_rate..1.0f64).log_scale(), (min_rate..1.0f64).log_scale())
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(draw_err)?;
        let grid: Vec<f64> = (0..=60).map(|i| 10f64.powf(min_rate.log10() * (1.0 - f64::from(i) / 60.0))).collect();
        chart
            .draw_series(DashedLineSeries::new(
                grid.iter().map(|&v| (v, v)).collect::<Vec<_>>(),
                6,
                4,
                GREY.stroke_width(1),
            ))
            .map_err(draw_err)?
            .label("chance (TPR = FPR)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY));
        if claim_epsilon.is_finite() {
            let limit: Vec<(f64, f64)> =
                grid.iter().map(|&f| (f, (claim_epsilon.exp() * f + claim_delta).min(1.0))).collect();
            chart
                .draw_series(LineSeries::new(limit, RED.stroke_width(1)))
                .map_err(draw_err)?
                .label(format!(
                    "limit under the claim: TPR ≤ e^{} FPR + {}",
                    format_upper(claim_epsilon),
                    format_delta(claim_delta)
                ))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        // Where the data ends: no FPR below 1 / (canary-out runs) is measured, so the curve and
        // its bands start there instead of being clamped onto the axis.
        let (measured, bands) = roc_with_bands(audit);
        let pts: Vec<(f64, f64)> = measured.iter().map(|p| (p.fpr, p.tpr.clamp(min_rate, 1.0))).collect();
        chart
            .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
            .map_err(draw_err)?
            .label(format!("attack: {}", audit.attack))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        if let Some(bands) = bands {
            let lower: Vec<(f64, f64)> = bands.iter().map(|b| (b.0, b.1.clamp(min_rate, 1.0))).collect();
            let upper: Vec<(f64, f64)> = bands.iter().map(|b| (b.0, b.2.clamp(min_rate, 1.0))).collect();
            for (i, side) in [lower, upper].into_iter().enumerate() {
                let series = chart
                    .draw_series(DashedLineSeries::new(side, 4, 3, BLUE.mix(0.5).stroke_width(1)))
                    .map_err(draw_err)?;
                if i == 0 {
                    series.label(format!(
                        "95% Clopper–Pearson band of the TPR (from FPR 1/{}, where the data starts)",
                        audit.roc_counts.map_or(0, |c| c.1)
                    ));
                    series.legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.mix(0.5)));
                }
            }
        }
        if claim_epsilon.is_finite() {
            let above = measured.iter().filter(|p| p.tpr > claim_epsilon.exp() * p.fpr + claim_delta).count();
            if above > 0 {
                let why = if audit.epsilon_lower > claim_epsilon {
                    format!(
                        "evidence against the claim: the audit's bound {:.3} exceeds ε = {}",
                        audit.epsilon_lower,
                        format_upper(claim_epsilon)
                    )
                } else {
                    format!(
                        "finite-sample noise: the audit's bound, which accounts for it, is {:.3}, not above ε = {}",
                        audit.epsilon_lower,
                        format_upper(claim_epsilon)
                    )
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{above} empirical point{} above the limit: {why}", if above == 1 { "" } else { "s" }),
                        (min_rate * 1.5, 0.6),
                        (FONT, 12).into_font().color(&RED),
                    )))
                    .map_err(draw_err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(GREY)
            .background_style(WHITE.mix(0.9))
            .label_font((FONT, 13))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The ROC points that can be measured (FPR 0 or at least 1 / canary-out runs; the FPR-0 points
/// are dropped, being off a log axis) and, when the counts are recorded, the two-sided 95%
/// Clopper–Pearson interval of each point's TPR as (FPR, lower, upper).
#[allow(clippy::type_complexity)]
pub fn roc_with_bands(audit: &AuditSummary) -> (Vec<crate::audit::RocPoint>, Option<Vec<(f64, f64, f64)>>) {
    let measured: Vec<crate::audit::RocPoint> = audit.roc.iter().copied().filter(|p| p.fpr > 0.0).collect();
    let bands = audit.roc_counts.map(|(positives, negatives)| {
        measured
            .iter()
            .filter(|p| p.fpr * negatives as f64 >= 1.0 - 1e-9)
            .filter_map(|p| {
                let k = (p.tpr * positives as f64).round() as u64;
                let upper = crate::audit::bounds::clopper_pearson_upper(k, positives, 0.025).ok()?;
                let lower = 1.0
                    - crate::audit::bounds::clopper_pearson_upper(positives - k.min(positives), positives, 0.025)
                        .ok()?;
                Some((p.fpr, lower, upper))
            })
            .collect()
    });
    (measured, bands)
}

/// Each audit's lower bound ε_lb beside the ideal bound for its size (the most a perfect audit
/// could show), with the report's claim as a dashed line.
///
/// # Errors
/// No audits; drawing errors.
pub fn bounds_svg(audits: &[AuditSummary], claim_epsilon: f64) -> Result<String> {
    if audits.is_empty() {
        return Err(Error::invalid("audits", 0, "none to plot"));
    }
    let n = audits.len();
    let top = audits
        .iter()
        .flat_map(|a| [Some(a.epsilon_lower), a.ideal_epsilon_lower, a.claimed_epsilon])
        .flatten()
        .chain(std::iter::once(claim_epsilon))
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.6; // room above the bars for the legend
    let names: Vec<String> = audits.iter().map(|a| a.name.clone()).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Audit lower bounds against the ideal and the claim", (FONT, 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.max(2))
            .x_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("ε")
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(audits.iter().enumerate().filter_map(|(i, a)| {
                a.ideal_epsilon_lower.map(|ideal| {
                    Rectangle::new([(i as f64 - 0.35, 0.0), (i as f64 + 0.35, ideal)], GREY.mix(0.25).filled())
                })
            }))
            .map_err(draw_err)?
            .label("ideal bound for this many runs")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], GREY.mix(0.25).filled()));
        chart
            .draw_series(audits.iter().enumerate().map(|(i, a)| {
                let colour = if a.verdict == "violated" || a.refutes_report_claim { RED } else { BLUE };
                Rectangle::new([(i as f64 - 0.2, 0.0), (i as f64 + 0.2, a.epsilon_lower)], colour.filled())
            }))
            .map_err(draw_err)?
            .label("ε_lb found (at the audit's confidence)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], BLUE.filled()));
        chart
            .draw_series(audits.iter().enumerate().filter_map(|(i, a)| {
                a.claimed_epsilon
                    .map(|c| PathElement::new(vec![(i as f64 - 0.35, c), (i as f64 + 0.35, c)], BLACK.stroke_width(2)))
            }))
            .map_err(draw_err)?
            .label("ε the audit tested")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart
            .draw_series(audits.iter().enumerate().filter_map(|(i, a)| {
                a.claimed_epsilon.map(|c| {
                    Text::new(
                        format!("tested {}", format_upper(c)),
                        (i as f64 - 0.33, c + top * 0.035),
                        (FONT, 12).into_font().color(&BLACK),
                    )
                })
            }))
            .map_err(draw_err)?;
        chart
            .draw_series(audits.iter().enumerate().map(|(i, a)| {
                let y = a.epsilon_lower.max(a.ideal_epsilon_lower.unwrap_or(0.0));
                Text::new(
                    format!("ε_lb {}", format_lower(a.epsilon_lower)),
                    (i as f64 - 0.33, y + top * 0.035),
                    (FONT, 12).into_font().color(&BLACK),
                )
            }))
            .map_err(draw_err)?;
        if claim_epsilon.is_finite() {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(-0.5, claim_epsilon), (n as f64 - 0.5, claim_epsilon)],
                    6,
                    4,
                    RED.stroke_width(1),
                ))
                .map_err(draw_err)?
                .label(format!("this report's claim ε = {}", format_upper(claim_epsilon)))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(GREY)
            .background_style(WHITE.mix(0.9))
            .label_font((FONT, 13))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Test accuracy against epsilon over the runs given (the privacy–utility curve); runs without
/// privacy are a dashed horizontal line.
///
/// # Errors
/// No run with a finite accuracy; drawing errors.
pub fn utility_svg(runs: &[UtilityPoint]) -> Result<String> {
    let usable: Vec<&UtilityPoint> = runs.iter().filter(|r| r.test_accuracy.is_finite()).collect();
    if usable.is_empty() {
        return Err(Error::invalid("runs", 0, "none with a test accuracy"));
    }
    let mut private: Vec<(f64, f64, bool)> = usable
        .iter()
        .filter(|r| r.epsilon.value().is_finite())
        .map(|r| (r.epsilon.value(), r.test_accuracy, r.released))
        .collect();
    private.sort_by(|a, b| a.0.total_cmp(&b.0));
    let baselines: Vec<f64> =
        usable.iter().filter(|r| !r.epsilon.value().is_finite()).map(|r| r.test_accuracy).collect();
    let x_max = private.iter().map(|p| p.0).fold(1.0f64, f64::max) * 1.1;
    let y_min = usable.iter().map(|r| r.test_accuracy).fold(1.0f64, f64::min);
    let y_lo = (y_min - 0.05).clamp(0.0, 1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Privacy–utility: test accuracy against ε", (FONT, 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, y_lo..1.0)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("ε (smallest accountant bound)")
            .y_desc("test accuracy")
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(private.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), BLUE.stroke_width(2)))
            .map_err(draw_err)?
            .label("DP runs")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(private.iter().map(|p| {
                Circle::new((p.0, p.1), if p.2 { 7 } else { 4 }, if p.2 { ORANGE.filled() } else { BLUE.filled() })
            }))
            .map_err(draw_err)?;
        for b in baselines {
            chart
                .draw_series(DashedLineSeries::new(vec![(0.0, b), (x_max, b)], 6, 4, GREY.stroke_width(1)))
                .map_err(draw_err)?
                .label(format!("no privacy: {b:.4}"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(GREY)
            .background_style(WHITE.mix(0.9))
            .label_font((FONT, 13))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}
