//! The report as Markdown: the same sections as the HTML page, with each plot's data as a table.
//! Text from the inputs is escaped so that it cannot start markup or break a table.
use super::html::{
    certificate_noise_note, certified_accountant, fmt_acc, is_claimed_row, noise_words, not_evaluated, status_name,
};
use super::*;
use std::fmt::Write as _;

/// Escapes text for Markdown (inline text and table cells): backslash-escapes the punctuation
/// that starts markup, the table separator `|`, and `<`/`>`/`&` as HTML entities (Markdown
/// passes raw HTML through). Newlines become spaces.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Text for a fenced code block: a fence longer than any run of backticks inside.
fn fenced(s: &str) -> String {
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}sh\n{s}\n{fence}")
}

/// Renders the report as Markdown.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", escape(&r.title()));
    let _ = writeln!(o, "**Claim.** {}\n", escape(&r.claim.statement));
    let _ = writeln!(o, "**Audits ({}).** {}\n", status_name(r.verdict.status), escape(&r.verdict.statement));
    match &r.certificate {
        Some(c) => {
            let _ = writeln!(
                o,
                "**Certificate.** Key id `{}`, issued {}, status {}, certifies ε = {} at δ = {} ({}).{} Signature: {}\n",
                c.key_id.replace('`', ""),
                escape(&c.issued_at),
                escape(&c.status),
                format_epsilon(c.verified_epsilon),
                format_delta(c.delta),
                escape(&certified_accountant(c, r)),
                escape(&certificate_noise_note(c, r.claim.training_code.is_some())),
                escape(&c.signature)
            );
        }
        None => o.push_str("**Certificate.** None was given.\n\n"),
    }
    if !r.warnings.is_empty() {
        o.push_str("**Warnings.**\n\n");
        for w in &r.warnings {
            let _ = writeln!(o, "- {}", escape(w));
        }
        o.push('\n');
    }

    let m = &r.mechanism;
    o.push_str("## Parameters and how ε was computed\n\n");
    let _ = writeln!(
        o,
        "The claim is per record: {}. The accountant used for it: {}.\n",
        escape(&r.claim.adjacency),
        escape(&r.claim.accountant)
    );
    o.push_str("| parameter | value |\n|---|---|\n");
    for (k, v) in [
        ("sampling scheme", m.sampling.clone()),
        ("neighbouring datasets", m.adjacency.clone()),
        (
            if r.claim.training_code.is_some() {
                "noisy steps (transcribed from the trainer's history)"
            } else {
                "noisy steps (from the ledger)"
            },
            m.steps.to_string(),
        ),
        ("how sigma was chosen", m.noise_multiplier_source.clone()),
        ("training code", r.claim.training_code.clone().unwrap_or_else(|| "dpaudit's trainer".into())),
        ("noise generator", noise_words(&r.claim.noise_seeding, r.claim.training_code.is_some())),
        ("δ", format_delta(m.delta)),
        ("model", r.utility.model.clone()),
        ("training data", format!("{} ({} examples)", r.utility.train_dataset, r.utility.train_examples)),
    ] {
        let _ = writeln!(o, "| {} | {} |", escape(k), escape(&v));
    }
    o.push('\n');
    if !m.phases.is_empty() {
        o.push_str("| label | q | σ | C | steps |\n|---|---|---|---|---|\n");
        for p in &m.phases {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                escape(&p.label),
                p.sampling_rate,
                p.noise_multiplier,
                p.clipping_norm,
                p.steps
            );
        }
        o.push('\n');
    }
    if !m.epsilons.is_empty() {
        o.push_str("| accountant | ε (upper bound, rounded up) | claimed | how |\n|---|---|---|---|\n");
        for e in &m.epsilons {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                escape(&e.accountant),
                format_epsilon(e.epsilon),
                if is_claimed_row(&e.accountant) { "yes" } else { "no" },
                escape(&e.method)
            );
        }
        o.push('\n');
    }

    o.push_str("## ε over training\n\n");
    if r.epsilon_over_steps.is_empty() {
        o.push_str("No noisy steps: the run was not private.\n\n");
    } else {
        let _ = writeln!(
            o,
            "ε of the claimed accountant (RDP) over the ledger; the certified claim is ε = {}.\n",
            format_epsilon(r.claim.epsilon)
        );
        o.push_str("| step | ε (RDP) |\n|---|---|\n");
        for p in &r.epsilon_over_steps {
            let _ = writeln!(o, "| {} | {} |", p.step, format_upper(p.epsilon));
        }
        o.push('\n');
    }

    let u = &r.utility;
    o.push_str("## Utility\n\n");
    match &r.synthetic_data {
        Some(s) => match &s.evaluation {
            Some(e) => {
                let _ = writeln!(o, "Utility of the released records (from {}):\n", escape(&e.file));
                o.push_str("| measure | value | how it was measured |\n|---|---|---|\n");
                for (k, v, how) in e.rows() {
                    let _ = writeln!(o, "| {} | {} | {} |", escape(k), escape(&v), escape(how));
                }
                o.push('\n');
            }
            None => {
                let _ = writeln!(o, "{}\n", escape(&not_evaluated(s)));
            }
        },
        None => {
            let _ = writeln!(
                o,
                "Test accuracy of the released model: **{}**{}.\n",
                fmt_acc(u.test_accuracy),
                u.robust_test_accuracy
                    .map_or_else(String::new, |a| format!("; under PGD adversarial examples: **{}**", fmt_acc(a)))
            );
            o.push_str("| run | released | ε | test accuracy |\n|---|---|---|---|\n");
            for p in &u.runs {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    escape(&p.run),
                    if p.released { "yes" } else { "no" },
                    format_epsilon(p.epsilon),
                    fmt_acc(p.test_accuracy)
                );
            }
            o.push('\n');
        }
    }

    o.push_str("## Audits\n\n");
    let _ = writeln!(o, "{}\n", escape(&r.verdict.statement));
    for a in &r.audits {
        let _ = writeln!(o, "### {}\n", escape(&a.name));
        o.push_str("| | |\n|---|---|\n");
        let rows = [
            ("verdict", format!("{}: {}", a.verdict, a.verdict_reason)),
            (
                "ε lower bound (rounded down)",
                format!(
                    "{}{}",
                    format_lower(a.epsilon_lower),
                    a.confidence.map_or_else(String::new, |c| format!(" at {}% confidence", c * 100.0))
                ),
            ),
            (
                "ideal bound for this many runs",
                a.ideal_epsilon_lower.map_or_else(|| "not recorded".into(), format_lower),
            ),
            (
                "claim tested",
                format!(
                    "ε = {}, δ = {} ({})",
                    a.claimed_epsilon.map_or_else(|| "?".into(), format_upper),
                    a.claimed_delta.map_or_else(|| "?".into(), format_delta),
                    a.claim_source.as_deref().unwrap_or("source not recorded")
                ),
            ),
            ("contradicts this report's claim", if a.refutes_report_claim { "YES".into() } else { "no".into() }),
            ("threat model", a.threat_model.clone()),
            ("attack", a.attack.clone()),
            ("canary", a.canary.clone()),
            (
                "recipe audited",
                format!(
                    "{}{}",
                    a.recipe.as_deref().unwrap_or("not recorded"),
                    match a.same_recipe_as_run {
                        Some(true) => " (the same model, σ and C as this run)",
                        Some(false) => " (NOT this run's recipe)",
                        None => "",
                    }
                ),
            ),
            ("runs per side", a.runs_per_side.map_or_else(|| "not recorded".into(), |k| k.to_string())),
            ("threshold selection", a.threshold_selection.clone().unwrap_or_else(|| "not recorded".into())),
            ("TPR at low FPR", a.tpr_words()),
            ("what it could show", a.could_show.map_or_else(|| "not recorded".into(), |c| c.words())),
            ("notes", if a.notes.is_empty() { "none".into() } else { a.notes.join(" ") }),
            (
                "Gaussian-DP fit (an estimate, not a bound)",
                a.gdp_estimate
                    .map_or_else(|| "not recorded".into(), |g| format!("μ = {:.3}, ε ≈ {:.3}", g.mu, g.epsilon)),
            ),
            ("ROC points (upper staircase)", a.roc.len().to_string()),
        ];
        for (k, v) in rows {
            let _ = writeln!(o, "| {} | {} |", escape(k), escape(&v));
        }
        o.push('\n');
    }

    if let Some(s) = &r.synthetic_data {
        o.push_str("## Synthetic data\n\n");
        let _ = writeln!(
            o,
            "{} records released from {} by a private GAN of design {}; its epsilon is {}. Generator SHA-256 `{}`.\n",
            s.records,
            escape(&s.release),
            escape(&s.design),
            escape(&s.epsilon_status),
            s.generator_sha256.replace('`', "")
        );
        for f in &s.nearest_neighbour_flags {
            let _ = writeln!(o, "- Flag: {}", escape(f));
        }
        if !s.nearest_neighbour_flags.is_empty() {
            o.push('\n');
        }
        if !s.nearest_neighbour.is_empty() {
            o.push_str("| measure | value | how to read it |\n|---|---|---|\n");
            for n in &s.nearest_neighbour {
                let _ = writeln!(o, "| {} | {} | {} |", escape(&n.metric), format_value(n.value), escape(&n.note));
            }
            o.push('\n');
        }
    }

    o.push_str("## Limitations\n\n");
    for l in &r.limitations {
        let _ = writeln!(o, "- {}", escape(l));
    }
    o.push('\n');

    let rp = &r.reproduce;
    o.push_str("## How to reproduce\n\n");
    for (i, c) in rp.commands.iter().enumerate() {
        let _ = writeln!(o, "{}. {}:\n\n{}\n", i + 1, escape(&c.purpose), fenced(&c.command));
    }
    let _ = writeln!(
        o,
        "Report written by {} {} (git commit {}) at {}; model trained by dpaudit {}.\n",
        escape(&r.generated_by.name),
        escape(&r.generated_by.version),
        escape(&r.generated_by.git_commit),
        escape(&r.generated_at),
        escape(&rp.training_tool_version)
    );
    o.push_str("| what | where | SHA-256 |\n|---|---|---|\n");
    for h in &rp.hashes {
        let _ = writeln!(o, "| {} | {} | `{}` |", escape(&h.what), escape(&h.path), h.sha256.replace('`', ""));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_table_bars_and_html() {
        assert_eq!(escape("a|b *c* <x> [l](u)"), "a\\|b \\*c\\* &lt;x&gt; \\[l\\](u)");
        assert_eq!(fenced("echo ```"), "````sh\necho ```\n````");
    }
}
