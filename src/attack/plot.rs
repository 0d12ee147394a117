//! The ROC on log-log axes (FPR and TPR from 1e-4, or the data's resolution, to 1), where the
//! low-FPR region that matters for membership inference is visible (Carlini et al. 2022, Fig. 1).
//! Written as SVG with `plotters`.
use crate::attack::metrics::RocPoint;
use crate::error::{Error, Result};
use plotters::prelude::*;

/// One curve: its label and its ROC points.
#[derive(Debug, Clone)]
pub struct Curve<'a> {
    /// Legend text.
    pub label: String,
    /// The ROC.
    pub roc: &'a [RocPoint],
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Renders `curves` as a log-log ROC with the chance diagonal, as an SVG document. Axes start at
/// `min_rate` (points at 0 are drawn on the axis).
///
/// # Errors
/// [`Error::InvalidParameter`] for `min_rate` outside (0, 1); drawing errors.
pub fn roc_svg(title: &str, curves: &[Curve<'_>], min_rate: f64) -> Result<String> {
    if !(min_rate > 0.0 && min_rate < 1.0) {
        return Err(Error::invalid("smallest plotted rate", min_rate, "must be in (0, 1)"));
    }
    let draw_err = |e: &dyn std::fmt::Display| Error::numerical("ROC plot", e.to_string());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((min_rate..1.0f64).log_scale(), (min_rate..1.0f64).log_scale())
            .map_err(|e| draw_err(&e))?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(|e| draw_err(&e))?;
        let diag: Vec<(f64, f64)> =
            (0..=40).map(|i| 10f64.powf(min_rate.log10() * (1.0 - i as f64 / 40.0))).map(|v| (v, v)).collect();
        chart
            .draw_series(LineSeries::new(diag, BLACK.mix(0.4)))
            .map_err(|e| draw_err(&e))?
            .label("chance")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        for (i, c) in curves.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = c.roc.iter().map(|p| (p.fpr.max(min_rate), p.tpr.max(min_rate))).collect();
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                .map_err(|e| draw_err(&e))?
                .label(c.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_curve() {
        let roc = [RocPoint { fpr: 0.0, tpr: 0.0 }, RocPoint { fpr: 0.001, tpr: 0.1 }, RocPoint { fpr: 1.0, tpr: 1.0 }];
        let svg = roc_svg(
            "test",
            &[Curve { label: "loss".into(), roc: &roc }, Curve { label: "lira-online".into(), roc: &roc }],
            1e-4,
        )
        .unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("lira-online") && svg.contains("chance"),
            "{}",
            &svg[..200.min(svg.len())]
        );
        assert!(roc_svg("t", &[], 0.0).is_err());
    }
}
