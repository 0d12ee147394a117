//! Collects the runs of a one-parameter-at-a-time sweep (`benches/reproduce/sweep_parameters.sh`,
//! Abadi et al. 2016, section 5) into `results.tsv` and `results.json`, and draws, for each
//! swept parameter, test accuracy (with validation accuracy) and epsilon (RDP and PLD) against the
//! parameter, the others held at the baseline, as one SVG (`plotters`) per parameter.
//!
//! Usage: `cargo run --release --example sweep_plots -- MANIFEST OUT_DIR`
//!
//! MANIFEST is a tab-separated file without header, one line per training run:
//! `parameter<TAB>value<TAB>seed<TAB>run folder[<TAB>baseline value]` (the folder holds
//! `metrics.json` of `dpaudit train`; the baseline value, when given, is drawn as a dashed line). Points are the mean over seeds; the thin bars span the seeds' minimum and
//! maximum.
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One training run of the sweep.
struct Run {
    parameter: String,
    value: f64,
    seed: u64,
    dir: String,
    baseline: Option<f64>,
    test_accuracy: f64,
    validation_accuracy: Option<f64>,
    epsilon_rdp: f64,
    epsilon_pld: f64,
    steps: u64,
    wall_seconds: f64,
}

fn epsilon(metrics: &Value, accountant: &str) -> Result<f64> {
    metrics["epsilons"]
        .as_array()
        .context("metrics.json has no epsilons")?
        .iter()
        .find(|e| e["accountant"] == accountant)
        .and_then(|e| e["epsilon"].as_f64())
        .with_context(|| format!("metrics.json has no finite {accountant} epsilon"))
}

fn read_run(line: &str) -> Result<Run> {
    let fields: Vec<&str> = line.split('\t').collect();
    let (parameter, value, seed, dir, baseline) = match fields[..] {
        [p, v, s, d] => (p, v, s, d, None),
        [p, v, s, d, b] => (p, v, s, d, Some(b.parse::<f64>().with_context(|| format!("baseline {b:?}"))?)),
        _ => bail!("manifest line {line:?}: want 4 or 5 tab-separated fields"),
    };
    let path = Path::new(dir).join("metrics.json");
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)?;
    Ok(Run {
        parameter: parameter.to_owned(),
        value: value.parse().with_context(|| format!("value {value:?}"))?,
        seed: seed.parse().with_context(|| format!("seed {seed:?}"))?,
        dir: dir.to_owned(),
        baseline,
        test_accuracy: metrics["test_accuracy"].as_f64().context("no test_accuracy")?,
        validation_accuracy: metrics["validation_accuracy"].as_f64(),
        epsilon_rdp: epsilon(&metrics, "rdp")?,
        epsilon_pld: epsilon(&metrics, "pld")?,
        steps: metrics["steps"].as_u64().context("no steps")?,
        wall_seconds: metrics["wall_seconds"].as_f64().unwrap_or(f64::NAN),
    })
}

/// Mean, minimum and maximum of each value's runs, by value.
fn summarise(runs: &[&Run], pick: impl Fn(&Run) -> Option<f64>) -> Vec<(f64, f64, f64, f64)> {
    let mut by_value: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
    for r in runs {
        if let Some(v) = pick(r) {
            by_value.entry(r.value.to_bits()).or_insert((r.value, Vec::new())).1.push(v);
        }
    }
    let mut out: Vec<(f64, f64, f64, f64)> = by_value
        .into_values()
        .map(|(x, ys)| {
            let mean = ys.iter().sum::<f64>() / ys.len() as f64;
            let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (x, mean, lo, hi)
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);

type Series = (&'static str, RGBColor, Vec<(f64, f64, f64, f64)>);

/// One panel: the chart on the left, its legend in a strip on the right (never over the data).
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    parameter: &str,
    y_desc: &str,
    series: &[Series],
    baseline: Option<f64>,
    log_x: bool,
    y_range: (f64, f64),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let mut xs: Vec<f64> = series.iter().flat_map(|s| s.2.iter().map(|p| p.0)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let (x_min, x_max) = (xs[0], xs[xs.len() - 1]);
    let (plot, legend) = area.split_horizontally(area.dim_in_pixel().0.saturating_sub(150));
    let mut builder = ChartBuilder::on(&plot);
    builder.margin(14).x_label_area_size(40).y_label_area_size(56);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .x_desc(parameter)
                .y_desc(y_desc)
                .x_label_formatter(&|v| format!("{v}"))
                .draw()
                .map_err(|e| err(&e))?;
            if let Some(b) = baseline {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(b, y_range.0), (b, y_range.1)],
                        6,
                        4,
                        BLACK.mix(0.5).stroke_width(1),
                    ))
                    .map_err(|e| err(&e))?;
            }
            for (_, colour, pts) in series {
                let colour = *colour;
                chart
                    .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), colour.stroke_width(2)))
                    .map_err(|e| err(&e))?;
                chart
                    .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, colour.filled())))
                    .map_err(|e| err(&e))?;
                chart
                    .draw_series(
                        pts.iter()
                            .filter(|p| p.3 > p.2)
                            .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], colour.stroke_width(1))),
                    )
                    .map_err(|e| err(&e))?;
            }
        }};
    }
    if log_x {
        // Ticks at the swept values themselves.
        body!(builder
            .build_cartesian_2d(
                (x_min * 0.8..x_max * 1.25).log_scale().with_key_points(xs.clone()),
                y_range.0..y_range.1
            )
            .map_err(|e| err(&e))?);
    } else {
        let pad = (x_max - x_min).max(1e-9) * 0.05;
        body!(builder.build_cartesian_2d(x_min - pad..x_max + pad, y_range.0..y_range.1).map_err(|e| err(&e))?);
    }
    let mut entries: Vec<(String, ShapeStyle)> =
        series.iter().map(|(label, colour, _)| (label.to_string(), colour.stroke_width(2))).collect();
    if baseline.is_some() {
        entries.push(("baseline (dashed)".to_owned(), BLACK.mix(0.5).stroke_width(1)));
    }
    if series.iter().any(|s| s.2.iter().any(|p| p.3 > p.2)) {
        entries.push(("bars: seeds' min-max".to_owned(), BLACK.mix(0.5).stroke_width(1)));
    }
    for (i, (label, style)) in entries.iter().enumerate() {
        let y = 40 + 22 * i as i32;
        legend.draw(&PathElement::new(vec![(4, y), (24, y)], *style)).map_err(|e| err(&e))?;
        legend.draw(&Text::new(label.clone(), (30, y - 7), ("sans-serif", 13))).map_err(|e| err(&e))?;
    }
    Ok(())
}

/// The plot of one parameter: accuracy above, epsilon below.
fn parameter_svg(parameter: &str, runs: &[&Run]) -> Result<String> {
    let test = summarise(runs, |r| Some(r.test_accuracy));
    let validation = summarise(runs, |r| r.validation_accuracy);
    let rdp = summarise(runs, |r| Some(r.epsilon_rdp));
    let pld = summarise(runs, |r| Some(r.epsilon_pld));
    let values: Vec<f64> = test.iter().map(|p| p.0).collect();
    let log_x = values.iter().all(|&v| v > 0.0)
        && values.last().copied().unwrap_or(1.0) / values.first().copied().unwrap_or(1.0) >= 10.0;
    let baseline = runs.iter().find_map(|r| r.baseline);
    let eps_max = rdp.iter().chain(&pld).map(|p| p.3).fold(0.0f64, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let root = root
            .titled(&format!("Effect of {parameter} (others at the baseline)"), ("sans-serif", 18))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (top, bottom) = root.split_vertically(360);
        let mut accuracy: Vec<Series> = vec![("test accuracy", BLUE, test)];
        if !validation.is_empty() {
            accuracy.push(("validation accuracy", ORANGE, validation));
        }
        draw_panel(&top, parameter, "accuracy", &accuracy, baseline, log_x, (0.0, 1.0))?;
        draw_panel(
            &bottom,
            parameter,
            "epsilon (delta = 1e-5)",
            &[("RDP", GREEN, rdp), ("PLD", RED, pld)],
            baseline,
            log_x,
            (0.0, (eps_max * 1.15).max(0.1)),
        )?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(svg)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [manifest, out] = &args[..] else {
        bail!("usage: sweep_plots MANIFEST OUT_DIR");
    };
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {manifest}"))?;
    let runs: Vec<Run> = text.lines().filter(|l| !l.trim().is_empty()).map(read_run).collect::<Result<_>>()?;
    if runs.is_empty() {
        bail!("{manifest} lists no runs");
    }
    std::fs::create_dir_all(out)?;
    let mut tsv = String::from("parameter\tvalue\tseed\ttest_accuracy\tvalidation_accuracy\tepsilon_rdp\tepsilon_pld\tsteps\twall_seconds\trun\n");
    let mut json = Vec::new();
    for r in &runs {
        let val = r.validation_accuracy.map_or("".to_owned(), |v| format!("{v:.4}"));
        writeln!(
            tsv,
            "{}\t{}\t{}\t{:.4}\t{}\t{:.4}\t{:.4}\t{}\t{:.2}\t{}",
            r.parameter,
            r.value,
            r.seed,
            r.test_accuracy,
            val,
            r.epsilon_rdp,
            r.epsilon_pld,
            r.steps,
            r.wall_seconds,
            r.dir
        )?;
        json.push(serde_json::json!({
            "parameter": r.parameter, "value": r.value, "seed": r.seed, "test_accuracy": r.test_accuracy,
            "validation_accuracy": r.validation_accuracy, "epsilon_rdp": r.epsilon_rdp, "epsilon_pld": r.epsilon_pld,
            "delta": 1e-5, "steps": r.steps, "wall_seconds": r.wall_seconds, "run": r.dir,
        }));
    }
    std::fs::write(Path::new(out).join("results.tsv"), tsv)?;
    std::fs::write(Path::new(out).join("results.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    let mut parameters: Vec<&str> = Vec::new();
    for r in &runs {
        if !parameters.contains(&r.parameter.as_str()) {
            parameters.push(&r.parameter);
        }
    }
    println!("parameter\tvalue\tmean test accuracy\tmean validation accuracy\tepsilon RDP\tepsilon PLD");
    for p in parameters {
        let these: Vec<&Run> = runs.iter().filter(|r| r.parameter == p).collect();
        let file = Path::new(out).join(format!("{p}.svg"));
        std::fs::write(&file, parameter_svg(p, &these)?)?;
        let test = summarise(&these, |r| Some(r.test_accuracy));
        let validation = summarise(&these, |r| r.validation_accuracy);
        let rdp = summarise(&these, |r| Some(r.epsilon_rdp));
        let pld = summarise(&these, |r| Some(r.epsilon_pld));
        for (i, t) in test.iter().enumerate() {
            let v = validation.get(i).map_or("".to_owned(), |v| format!("{:.4}", v.1));
            println!("{p}\t{}\t{:.4}\t{v}\t{:.3}\t{:.3}", t.0, t.1, rdp[i].1, pld[i].1);
        }
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}
