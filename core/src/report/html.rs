//! The report as one self-contained HTML page: inline CSS and inline SVG plots, no script, and a
//! Content-Security-Policy that forbids loading anything, so the page cannot reach the network.
//! Every piece of text from the inputs goes through [`escape`].
use super::*;
use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;max-width:60rem;margin:0 auto;padding:1.5rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.claim{font-size:1.3rem;font-weight:600;background:#eef4fb;border-left:6px solid #1f77b4;padding:.8rem 1rem;margin:0 0 .8rem}
.verdict{font-size:1.1rem;padding:.7rem 1rem;border-left:6px solid #999;background:#f4f4f4;margin:0 0 .8rem}
.verdict-consistent{border-color:#2ca02c;background:#eef8ee}.verdict-violated{border-color:#d62728;background:#fcecec;font-weight:600}
.verdict-not_audited{border-color:#ff7f0e;background:#fff5e8}.verdict-inconclusive{border-color:#ff7f0e;background:#fff5e8}
.cert{padding:.5rem 1rem;border-left:6px solid #9467bd;background:#f5f1fa;margin:0 0 .8rem}
.warnings{border-left:6px solid #d62728;background:#fff3f3;padding:.5rem 1rem .5rem 2rem}
code,pre{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.88rem}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure.plot{margin:1rem 0}figure.plot svg{width:100%;max-width:52rem;height:auto;display:block}figcaption{font-size:.9rem;color:#444}
nav ol{columns:2;font-size:.95rem}.hash{word-break:break-all}footer{margin-top:3rem;color:#666;font-size:.85rem}
"#;

fn figure(out: &mut String, id: &str, svg: &str, caption: &str) {
    let _ = writeln!(
        out,
        "<figure class=\"plot\" id=\"{}\">{svg}<figcaption>{}</figcaption></figure>",
        escape(id),
        escape(caption)
    );
}

fn row(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "<tr><th scope=\"row\">{}</th><td>{}</td></tr>", escape(key), escape(value));
}

fn opt<T: std::fmt::Display>(x: Option<T>) -> String {
    x.map_or_else(|| "not recorded".to_owned(), |v| v.to_string())
}

/// Renders the report as HTML.
///
/// # Errors
/// A plot that cannot be drawn.
pub fn render(r: &Report) -> Result<String> {
    let mut o = String::with_capacity(256 * 1024);
    let title = r.title();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"generator\" content=\"{} {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&r.generated_by.name),
        escape(&r.generated_by.version),
        escape(&title)
    );

    // First screen.
    let _ = writeln!(o, "<header id=\"summary\">\n<h1>{}</h1>", escape(&title));
    let _ = writeln!(o, "<p id=\"claim\" class=\"claim\">{}</p>", escape(&r.claim.statement));
    let _ = writeln!(
        o,
        "<p id=\"verdict\" class=\"verdict verdict-{}\" data-status=\"{}\"><strong>Audits:</strong> {}</p>",
        status_name(r.verdict.status),
        status_name(r.verdict.status),
        escape(&r.verdict.statement)
    );
    match &r.certificate {
        Some(c) => {
            let _ = writeln!(
                o,
                "<p id=\"certificate\" class=\"cert\"><strong>Certificate:</strong> signed by key id <code id=\"key-id\">{}</code>, issued {}, status {}, certifies ε = <span id=\"certified-epsilon\">{}</span> at δ = {} ({}).{} Signature: {}</p>",
                escape(&c.key_id),
                escape(&c.issued_at),
                escape(&c.status),
                escape(&format_epsilon(c.verified_epsilon)),
                escape(&format_delta(c.delta)),
                escape(&certified_accountant(c, r)),
                escape(&certificate_noise_note(c, r.claim.training_code.is_some())),
                escape(&c.signature)
            );
        }
        None => {
            let _ = writeln!(o, "<p id=\"certificate\" class=\"cert\"><strong>Certificate:</strong> none was given (make one with <code>dpaudit cert sign</code>).</p>");
        }
    }
    if !r.warnings.is_empty() {
        o.push_str("<ul id=\"warnings\" class=\"warnings\">\n");
        for w in &r.warnings {
            let _ = writeln!(o, "<li>{}</li>", escape(w));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("<nav><ol><li><a href=\"#parameters\">Parameters and how ε was computed</a></li><li><a href=\"#epsilon-over-steps\">ε over training</a></li><li><a href=\"#utility\">Utility</a></li><li><a href=\"#audits\">Audits</a></li>");
    if r.synthetic_data.is_some() {
        o.push_str("<li><a href=\"#synthetic-data\">Synthetic data</a></li>");
    }
    o.push_str("<li><a href=\"#limitations\">Limitations</a></li><li><a href=\"#reproduce\">How to reproduce</a></li></ol></nav>\n</header>\n");

    // Parameters.
    let m = &r.mechanism;
    o.push_str("<section id=\"parameters\">\n<h2>Parameters and how ε was computed</h2>\n");
    let _ = writeln!(
        o,
        "<p>{}</p>",
        escape(&format!(
            "The claim is per record: {}. The accountant used for it: {}.",
            r.claim.adjacency, r.claim.accountant
        ))
    );
    o.push_str("<table id=\"mechanism\">\n");
    row(&mut o, "mechanism", "DP-SGD: per-example gradients clipped to norm C, summed, Gaussian noise of standard deviation sigma·C added (the subsampled Gaussian mechanism)");
    row(
        &mut o,
        "sampling scheme",
        &format!("{} (each example joins each step's lot independently with probability q)", m.sampling),
    );
    row(&mut o, "neighbouring datasets", &m.adjacency);
    row(
        &mut o,
        if r.claim.training_code.is_some() {
            "noisy steps (transcribed from the trainer's history)"
        } else {
            "noisy steps (from the ledger)"
        },
        &m.steps.to_string(),
    );
    row(&mut o, "how sigma was chosen", &m.noise_multiplier_source);
    if let Some(t) = &r.claim.training_code {
        row(&mut o, "training code", t);
    }
    row(&mut o, "noise generator", &noise_words(&r.claim.noise_seeding, r.claim.training_code.is_some()));
    row(&mut o, "δ", &format_delta(m.delta));
    row(&mut o, "model", &r.utility.model);
    row(&mut o, "training data", &format!("{} ({} examples)", r.utility.train_dataset, r.utility.train_examples));
    o.push_str("</table>\n");
    if !m.phases.is_empty() {
        o.push_str("<table id=\"phases\">\n<caption>Phases of the ledger (consecutive steps with equal parameters)</caption>\n<tr><th>label</th><th>sampling rate q</th><th>noise multiplier σ</th><th>clipping norm C</th><th>steps</th></tr>\n");
        for p in &m.phases {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&p.label),
                p.sampling_rate,
                p.noise_multiplier,
                p.clipping_norm,
                p.steps
            );
        }
        o.push_str("</table>\n");
    }
    if !m.epsilons.is_empty() {
        o.push_str("<table id=\"accountants\">\n<caption>ε at the report's δ from each accountant, recomputed from the ledger (all are upper bounds; shown rounded up). The claim is the MPFR oracle's row; the others are listed, not claimed.</caption>\n<tr><th>accountant</th><th>ε</th><th>claimed</th><th>how</th></tr>\n");
        for e in &m.epsilons {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&e.accountant),
                escape(&format_epsilon(e.epsilon)),
                if is_claimed_row(&e.accountant) { "yes" } else { "no" },
                escape(&e.method)
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("</section>\n");

    // Epsilon over steps.
    o.push_str("<section id=\"epsilon-over-steps\">\n<h2>ε over training</h2>\n");
    if r.epsilon_over_steps.is_empty() {
        o.push_str("<p>No noisy steps: the run was not private.</p>\n");
    } else {
        let finals: Vec<(String, f64)> = m
            .epsilons
            .iter()
            .filter(|e| e.accountant != "rdp" && !is_claimed_row(&e.accountant))
            .map(|e| (e.accountant.clone(), e.epsilon.value()))
            .collect();
        let svg = plots::epsilon_over_steps_svg(&r.epsilon_over_steps, &finals, r.claim.epsilon.value())?;
        figure(
            &mut o,
            "plot-epsilon",
            &svg,
            &format!(
                "ε of the claimed accountant (RDP) after each of {} points of the ledger, against the certified claim ε = {} (its final value re-derived by the MPFR oracle); markers: the final ε of accountants that are not claimed.",
                r.epsilon_over_steps.len(),
                format_epsilon(r.claim.epsilon)
            ),
        );
        o.push_str("<details><summary>The numbers</summary>\n<table id=\"epsilon-table\"><tr><th>step</th><th>ε (RDP)</th></tr>\n");
        for p in &r.epsilon_over_steps {
            let _ = writeln!(
                o,
                "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                p.step,
                escape(&format_upper(p.epsilon))
            );
        }
        o.push_str("</table></details>\n");
    }
    o.push_str("</section>\n");

    // Utility.
    let u = &r.utility;
    o.push_str("<section id=\"utility\">\n<h2>Utility</h2>\n");
    match &r.synthetic_data {
        Some(s) => match &s.evaluation {
            Some(e) => {
                let _ = writeln!(o, "<table id=\"synthetic-utility\"><caption>Utility of the released records (from {})</caption><tr><th>measure</th><th>value</th><th>how it was measured</th></tr>", escape(&e.file));
                for (k, v, how) in e.rows() {
                    let _ = writeln!(
                        o,
                        "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                        escape(k),
                        escape(&v),
                        escape(how)
                    );
                }
                o.push_str("</table>\n");
            }
            None => {
                let _ = writeln!(o, "<p id=\"synthetic-utility\">{}</p>", escape(&not_evaluated(s)));
            }
        },
        None => {
            let _ = writeln!(
                o,
                "<p id=\"test-accuracy\">Test accuracy of the released model: <strong>{}</strong>{}.</p>",
                escape(&fmt_acc(u.test_accuracy)),
                u.robust_test_accuracy.map_or_else(String::new, |a| format!(
                    "; under PGD adversarial examples: <strong>{}</strong>",
                    escape(&fmt_acc(a))
                ))
            );
        }
    }
    if u.runs.len() > 1 {
        let svg = plots::utility_svg(&u.runs)?;
        figure(
            &mut o,
            "plot-utility",
            &svg,
            "Each run given to the report; the released one is the large orange point.",
        );
    }
    if r.synthetic_data.is_some() {
        o.push_str("</section>\n");
    } else {
        o.push_str("<table id=\"runs\"><tr><th>run</th><th>released</th><th>ε</th><th>test accuracy</th></tr>\n");
        for p in &u.runs {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&p.run),
                if p.released { "yes" } else { "no" },
                escape(&format_epsilon(p.epsilon)),
                escape(&fmt_acc(p.test_accuracy))
            );
        }
        o.push_str("</table>\n</section>\n");
    }

    // Audits.
    o.push_str("<section id=\"audits\">\n<h2>Audits</h2>\n");
    let _ = writeln!(o, "<p>{}</p>", escape(&r.verdict.statement));
    if !r.audits.is_empty() {
        o.push_str("<p>An audit trains the recipe many times with and without a planted record (a canary) and asks how well an attacker tells the two apart. The rate at which it can is turned into a lower bound ε_lb on the true ε, valid at the stated confidence. If ε_lb exceeded the claimed ε, the claim would be false.</p>\n");
        let svg = plots::bounds_svg(&r.audits, r.claim.epsilon.value())?;
        figure(&mut o, "plot-bounds", &svg, "Blue: the lower bound each audit found. Grey: the ideal bound, the most a perfect attack could show with the same number of runs against a mechanism exactly at the audit's claimed ε.");
        for (i, a) in r.audits.iter().enumerate() {
            let _ =
                writeln!(o, "<article id=\"audit-{}\" class=\"audit\">\n<h3>{}</h3>\n<table>", i + 1, escape(&a.name));
            row(&mut o, "verdict", &format!("{}: {}", a.verdict, a.verdict_reason));
            row(
                &mut o,
                "ε lower bound (rounded down)",
                &format!(
                    "{}{}",
                    format_lower(a.epsilon_lower),
                    a.confidence.map_or_else(String::new, |c| format!(" at {}% confidence", c * 100.0))
                ),
            );
            row(
                &mut o,
                "ideal bound for this many runs",
                &a.ideal_epsilon_lower.map_or_else(|| "not recorded".into(), format_lower),
            );
            row(
                &mut o,
                "claim tested",
                &format!(
                    "ε = {}, δ = {} ({})",
                    a.claimed_epsilon.map_or_else(|| "?".into(), format_upper),
                    a.claimed_delta.map_or_else(|| "?".into(), format_delta),
                    a.claim_source.as_deref().unwrap_or("source not recorded")
                ),
            );
            row(&mut o, "contradicts this report's claim", if a.refutes_report_claim { "YES" } else { "no" });
            row(&mut o, "threat model", &a.threat_model);
            row(&mut o, "attack", &a.attack);
            row(&mut o, "canary", &a.canary);
            row(
                &mut o,
                "recipe audited",
                &format!(
                    "{}{}",
                    a.recipe.as_deref().unwrap_or("not recorded"),
                    match a.same_recipe_as_run {
                        Some(true) => " (the same model, σ and C as this run)",
                        Some(false) => " (NOT this run's recipe)",
                        None => "",
                    }
                ),
            );
            row(&mut o, "runs per side", &opt(a.runs_per_side));
            row(&mut o, "threshold selection", a.threshold_selection.as_deref().unwrap_or("not recorded"));
            row(&mut o, "TPR at low FPR", &a.tpr_words());
            if let Some(c) = &a.could_show {
                row(&mut o, "what it could show", &c.words());
            }
            for n in &a.notes {
                row(&mut o, "note", n);
            }
            if let Some(g) = &a.gdp_estimate {
                row(
                    &mut o,
                    "Gaussian-DP fit (an estimate, not a bound)",
                    &format!("μ = {:.3}, ε ≈ {:.3}", g.mu, g.epsilon),
                );
            }
            if let Some(one) = &a.one_run {
                row(&mut o, "one-run audit", &one.to_string());
            }
            row(&mut o, "wall time", &a.wall_seconds.map_or_else(|| "not recorded".into(), |s| format!("{s:.1} s")));
            o.push_str("</table>\n");
            if a.roc.is_empty() {
                o.push_str("<p>No ROC was recorded.</p>\n");
            } else {
                let svg = plots::roc_svg(a, r.claim.epsilon.value(), r.claim.delta)?;
                figure(&mut o, &format!("roc-{}", i + 1), &svg, "ROC on log-log axes: the low false-positive region, where attacks on single records matter, is visible. Red: the most any attack can reach if the claim holds.");
            }
            o.push_str("</article>\n");
        }
    }
    o.push_str("</section>\n");

    // Synthetic data.
    if let Some(s) = &r.synthetic_data {
        o.push_str("<section id=\"synthetic-data\">\n<h2>Synthetic data</h2>\n");
        let _ = writeln!(o, "<p>{} records released from {} by a private GAN of design {}; its epsilon is {}. Generator SHA-256 <code>{}</code>.</p>", s.records, escape(&s.release), escape(&s.design), escape(&s.epsilon_status), escape(&s.generator_sha256));
        for f in &s.nearest_neighbour_flags {
            let _ = writeln!(o, "<p class=\"warnings\">Flag: {}</p>", escape(f));
        }
        if !s.nearest_neighbour.is_empty() {
            o.push_str(
                "<table id=\"nearest-neighbour\"><tr><th>measure</th><th>value</th><th>how to read it</th></tr>\n",
            );
            for n in &s.nearest_neighbour {
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                    escape(&n.metric),
                    format_value(n.value),
                    escape(&n.note)
                );
            }
            o.push_str("</table>\n");
        }
        if let Some(png) = &s.sample_grid_png_base64 {
            let _ = writeln!(o, "<figure class=\"plot\" id=\"sample-grid\"><img alt=\"released samples\" style=\"image-rendering:pixelated;width:100%;max-width:32rem\" src=\"data:image/png;base64,{}\"><figcaption>Released samples (the release's grid.png: the first ten of each label, one label per row).</figcaption></figure>", escape(png));
        }
        o.push_str("</section>\n");
    }

    // Limitations.
    o.push_str("<section id=\"limitations\">\n<h2>Limitations</h2>\n<ul>\n");
    for l in &r.limitations {
        let _ = writeln!(o, "<li>{}</li>", escape(l));
    }
    o.push_str("</ul>\n</section>\n");

    // Reproduce.
    let rp = &r.reproduce;
    o.push_str("<section id=\"reproduce\">\n<h2>How to reproduce</h2>\n<ol>\n");
    for c in &rp.commands {
        let _ = writeln!(o, "<li>{}:<pre><code>{}</code></pre></li>", escape(&c.purpose), escape(&c.command));
    }
    o.push_str("</ol>\n<table id=\"versions\">\n");
    row(
        &mut o,
        "report written by",
        &format!("{} {} (git commit {})", r.generated_by.name, r.generated_by.version, r.generated_by.git_commit),
    );
    row(&mut o, "model trained by", &format!("dpaudit {}", rp.training_tool_version));
    if let Some(c) = &r.certificate {
        row(
            &mut o,
            "certificate issued by",
            &format!("{} {} (git commit {})", c.tool.name, c.tool.version, c.tool.git_commit),
        );
    }
    row(&mut o, "report written at", &r.generated_at);
    o.push_str("</table>\n<table id=\"hashes\"><tr><th>what</th><th>where</th><th>SHA-256</th></tr>\n");
    for h in &rp.hashes {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"hash\"><code>{}</code></td></tr>",
            escape(&h.what),
            escape(&h.path),
            escape(&h.sha256)
        );
    }
    o.push_str("</table>\n</section>\n");
    let _ = writeln!(o, "<footer>Written by {} {} ({}). Epsilons are upper bounds rounded up; audit lower bounds are rounded down. The same content is available with <code>--format json</code> and <code>--format markdown</code>.</footer>\n</body>\n</html>", escape(&r.generated_by.name), escape(&r.generated_by.version), escape(&r.generated_at));
    Ok(o)
}

/// Whether an accountant row of the mechanism table is the claimed one (the MPFR oracle's).
pub fn is_claimed_row(accountant: &str) -> bool {
    accountant == "mpfr oracle"
}

/// Which accountant a certificate's epsilon comes from, and whether it is the headline's.
pub fn certified_accountant(c: &CertificateSummary, r: &Report) -> String {
    if c.verified_epsilon == r.claim.epsilon {
        "RDP accountant, verified by the MPFR oracle: the same ε as the claim above".to_owned()
    } else {
        format!(
            "RDP accountant, verified by the MPFR oracle; NOT the ε of this report's claim ({}), which was recomputed from the run's ledger",
            format_epsilon(r.claim.epsilon)
        )
    }
}

/// What a certificate says about its run's noise, in plain words (empty for CSPRNG noise).
pub fn certificate_noise_note(c: &CertificateSummary, external: bool) -> String {
    match c.noise_seeding.as_str() {
        "csprng" if external => {
            " Noise: drawn by the trainer, stated at import to come from a cryptographic generator.".to_owned()
        }
        "csprng" => " Noise: from the operating system's CSPRNG.".to_owned(),
        "seeded" => format!(" The certified run is {}.", crate::noise_seeding::SEEDED_NOISE_WARNING),
        _ => " The certificate does not record how the run's noise was seeded (an older certificate).".to_owned(),
    }
}

/// The noise generator's seeding, in words.
pub fn noise_words(seeding: &str, external: bool) -> String {
    if external {
        return match seeding {
            "csprng" => "the trainer's own generator, stated at import to be cryptographic (dpaudit did not draw it)".to_owned(),
            "seeded" => format!("the trainer's own generator, stated at import to be seeded: {}", crate::noise_seeding::SEEDED_NOISE_WARNING),
            _ => "the trainer's own generator; the import does not say whether it was cryptographic, so it is treated as reproducible".to_owned(),
        };
    }
    match seeding {
        "csprng" => "Gaussian noise from a ChaCha20 stream seeded by the operating system's CSPRNG (so are the Poisson lots): nobody can regenerate it".to_owned(),
        "seeded" => format!("seeded explicitly: {}", crate::noise_seeding::SEEDED_NOISE_WARNING),
        _ => "not recorded (an older run)".to_owned(),
    }
}

/// The sentence of a synthetic release whose utility was not evaluated.
pub fn not_evaluated(s: &SyntheticData) -> String {
    format!(
        "The released records' utility (CAS, fid_mnist_classifier, real-vs-fake accuracy) was not evaluated for this report: run `dpaudit evaluate synthetic --synthetic {} --real DATA --json > evaluation.json` (DATA: the real MNIST-format folder) and give the file to `dpaudit report --evaluation`.",
        super::inputs::shell_quote(&s.release)
    )
}

/// The CSS class suffix and `data-status` of a verdict.
pub fn status_name(s: VerdictStatus) -> &'static str {
    match s {
        VerdictStatus::NotAudited => "not_audited",
        VerdictStatus::Consistent => "consistent",
        VerdictStatus::Violated => "violated",
        VerdictStatus::Inconclusive => "inconclusive",
    }
}

/// Accuracy as a percentage with two decimals (or "not recorded").
pub fn fmt_acc(a: f64) -> String {
    if a.is_finite() {
        format!("{:.2}%", a * 100.0)
    } else {
        "not recorded".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("ε = 2.0"), "ε = 2.0");
    }
}
