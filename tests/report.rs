//! `dpaudit report` end to end on a real (tiny) training run: the first screen's claim, verdict and
//! key id; the sections; HTML and Markdown escaping; the same content in the three formats;
//! refusal to overwrite; lenient reading of older audit files; runs without privacy; a torn
//! ledger left untouched. The audits are the hand-made examples in `fixtures/report/`.
use dpaudit::accounting::ledger::phases_of;
use dpaudit::accounting::rdp;
use dpaudit::cert::sign::{sign_run, CertifyOptions};
use dpaudit::report::{self, format_upper, Format, ReportOptions, VerdictStatus};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The recipe of `fixtures/report/audit*.json`: logreg, q = 100 / 2000, sigma = 1.2, C = 1, 20 steps.
const RECIPE: [&str; 14] = [
    "--dataset",
    "fixture",
    "--model",
    "logreg",
    "--epochs",
    "1",
    "--lot-size",
    "100",
    "--max-grad-norm",
    "1",
    "--threads",
    "1",
    "--checkpoint-every",
    "0",
];

fn dpaudit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpaudit")).current_dir(ROOT).args(args).output().unwrap()
}

fn train(out: &Path, extra: &[&str]) {
    let mut args: Vec<&str> = vec!["train"];
    args.extend(RECIPE);
    args.extend(extra);
    let out_s = out.to_str().unwrap();
    args.extend(["--out", out_s]);
    let o = dpaudit(&args);
    assert!(o.status.success(), "dpaudit {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// One private run (sigma = 1.2, noise from the OS CSPRNG), with a key pair and a signed certificate, shared by the
/// tests of this file (trained once).
struct Shared {
    _dir: tempfile::TempDir,
    run: PathBuf,
    cert: PathBuf,
    pubkey: PathBuf,
    key_id: String,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("logreg-sigma1.2");
        train(&run, &["--noise-multiplier", "1.2"]);
        let keys = dpaudit::cert::keys::generate_keypair(&dir.path().join("keys")).unwrap();
        let cert = dir.path().join("cert.json");
        sign_run(&run, &CertifyOptions::model(1e-5), &keys.secret_key_path, &cert).unwrap();
        Shared { run, cert, pubkey: keys.public_key_path, key_id: keys.key_id, _dir: dir }
    })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(ROOT).join("fixtures/report").join(name)
}

fn options(s: &Shared, audits: &[PathBuf]) -> ReportOptions {
    let mut o = ReportOptions::for_run(&s.run);
    o.audits = audits.to_vec();
    o.certificate = Some(s.cert.clone());
    o.public_key = Some(s.pubkey.clone());
    o
}

/// The claim's epsilon, recomputed here independently of the report: the number a certificate
/// certifies, the MPFR oracle's RDP bound.
fn expected_epsilon(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("ledger.jsonl")).unwrap();
    let entries: Vec<dpaudit::accounting::ledger::LedgerEntry> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let phases = phases_of(&entries).unwrap();
    dpaudit::accounting::exact::verified_epsilon(&phases, 1e-5, &rdp::default_orders()).unwrap().epsilon
}

#[test]
fn html_report_has_the_claim_verdict_key_id_and_every_section() {
    let s = shared();
    let rep = report::build(&options(s, &[fixture("audit.json")])).unwrap();
    let html = report::render(&rep, Format::Html).unwrap();
    let eps = format_upper(expected_epsilon(&s.run));
    // First screen: the claim in words, the verdict, the key id, in that order.
    let claim = format!("This model was trained with (ε = {eps}, δ = 1e-5)-differential privacy, per record");
    let at = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("missing {needle:?}"));
    assert!(at("id=\"claim\"") < at(&claim));
    assert!(at(&claim) < at("id=\"verdict\""));
    assert!(at("data-status=\"consistent\"") < at(&format!("<code id=\"key-id\">{}</code>", s.key_id)));
    assert_eq!(rep.verdict.status, VerdictStatus::Consistent);
    assert_eq!(rep.certificate.as_ref().unwrap().signature_verified, Some(true), "{:?}", rep.certificate);
    assert!(rep.certificate.as_ref().unwrap().covers_this_release);
    assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
    for id in [
        "parameters",
        "phases",
        "accountants",
        "epsilon-over-steps",
        "plot-epsilon",
        "utility",
        "test-accuracy",
        "audits",
        "plot-bounds",
        "audit-1",
        "roc-1",
        "limitations",
        "reproduce",
        "hashes",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no element with id {id}");
    }
    // Parameters: q, sigma, C, steps; every accountant; the reproduce section's hashes.
    assert!(html.contains(
        "<td class=\"num\">0.05</td><td class=\"num\">1.2</td><td class=\"num\">1</td><td class=\"num\">20</td>"
    ));
    for acc in ["rdp", "pld", "mpfr oracle"] {
        assert!(html.contains(&format!("<tr><td>{acc}</td>")), "{acc}");
    }
    let model_sha = dpaudit::data::sha256_file(&s.run.join("model.safetensors")).unwrap();
    let ledger_sha = dpaudit::data::sha256_file(&s.run.join("ledger.jsonl")).unwrap();
    assert!(html.contains(&model_sha) && html.contains(&ledger_sha));
    assert!(html.contains("dpaudit account epsilon --phase 0.05,1.2,20 --delta 0.00001 --accountant all --verify"));
    assert!(html.contains("floating point") && html.contains("label privacy") && html.contains("Black-box audits"));
    // Self-contained: inline SVG from plotters, no script, nothing fetched.
    assert!(html.matches("<svg").count() >= 3);
    assert!(!html.contains("<script") && !html.contains(" src=") && !html.contains("url("));
    for (i, _) in html.match_indices("://") {
        let url: String = html[i.saturating_sub(4)..].chars().take(30).collect();
        assert!(
            url.starts_with("http://www.w3.org/2000/svg") || url.starts_with("http://www.w3.org/1999/xlink"),
            "external reference {url:?}"
        );
    }
}

#[test]
fn epsilon_curve_ends_at_the_ledgers_epsilon_and_never_decreases() {
    let s = shared();
    let rep = report::build(&ReportOptions::for_run(&s.run)).unwrap();
    let pts = &rep.epsilon_over_steps;
    assert_eq!(pts.len(), 20, "a point per step when there are fewer than 50 steps");
    assert_eq!(pts.last().unwrap().step, 20);
    let text = std::fs::read_to_string(s.run.join("ledger.jsonl")).unwrap();
    let entries: Vec<_> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(pts.last().unwrap().epsilon, rdp::epsilon(&phases_of(&entries).unwrap(), 1e-5).unwrap().epsilon);
    assert!(pts.windows(2).all(|w| w[0].epsilon <= w[1].epsilon && w[0].step < w[1].step));
    assert_eq!(rep.verdict.status, VerdictStatus::NotAudited);
    let few = report::inputs::epsilon_over_steps(&entries, 1e-5, 7).unwrap();
    assert_eq!(few.iter().map(|p| p.step).collect::<Vec<_>>(), vec![3, 6, 9, 12, 15, 18, 20]);
    // The plotted curve is the claimed accountant's: it ends at the certified claim, to the
    // f64 RDP accountant's rounding (never below the oracle), and never crosses it before.
    let claim = rep.claim.epsilon.value();
    assert_eq!(claim, expected_epsilon(&s.run));
    assert!((pts.last().unwrap().epsilon - claim).abs() <= 1e-9 * claim, "{} vs {claim}", pts.last().unwrap().epsilon);
    assert!(pts.iter().all(|p| p.epsilon <= claim * (1.0 + 1e-9)));
    assert!(rep.claim.statement.contains("RDP accountant, verified by the MPFR oracle"), "{}", rep.claim.statement);
}

/// One certified number: the headline, the certificate box and the plot's claim line show the
/// same epsilon (the certificate's), the accountant is named, the table lists the others; the
/// title says what the report is about once.
#[test]
fn headline_certificate_box_and_plot_show_one_certified_epsilon() {
    let s = shared();
    let rep = report::build(&options(s, &[])).unwrap();
    let c = rep.certificate.as_ref().unwrap();
    assert_eq!(rep.claim.epsilon, c.verified_epsilon);
    let eps = report::format_epsilon(rep.claim.epsilon);
    let html = report::render(&rep, Format::Html).unwrap();
    assert!(html.contains(&format!("certifies ε = <span id=\"certified-epsilon\">{eps}</span>")), "{html}");
    assert!(html.contains(&format!("certified claim ε = {eps}")), "the plot's claim line");
    assert!(html.contains("the same ε as the claim above"));
    let claimed: Vec<&str> = rep
        .mechanism
        .epsilons
        .iter()
        .filter(|e| report::html::is_claimed_row(&e.accountant))
        .map(|e| e.accountant.as_str())
        .collect();
    assert_eq!(claimed, ["mpfr oracle"]);
    assert!(rep.mechanism.epsilons.iter().any(|e| e.accountant == "pld"), "the others are listed");
    assert_eq!(rep.title(), "Privacy report: model logreg-sigma1.2");
    assert_eq!(rep.claim.noise_seeding, "csprng");
}

/// A run trained with an explicit seed: its report says in plain words that it is not fit for
/// release, and prints the seed nowhere.
#[test]
fn a_seeded_run_is_marked_not_fit_for_release_and_its_seed_is_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("seeded");
    train(&run, &["--noise-multiplier", "1.2", "--seed", "424242"]);
    let rep = report::build(&ReportOptions::for_run(&run)).unwrap();
    assert_eq!(rep.claim.noise_seeding, "seeded");
    assert!(
        rep.claim.statement.ends_with("NOT FIT FOR RELEASE: its noise can be regenerated from the seed."),
        "{}",
        rep.claim.statement
    );
    for format in [Format::Html, Format::Markdown, Format::Json] {
        let text = report::render(&rep, format).unwrap();
        assert!(!text.contains("424242"), "{format:?} prints the seed");
        assert!(text.contains("NOT FIT FOR RELEASE"), "{format:?}");
    }
    // `cert sign` refuses it, naming the flag that overrides; with the flag, the certificate says so.
    let keys = dpaudit::cert::keys::generate_keypair(&dir.path().join("keys")).unwrap();
    let (key, cert) = (keys.secret_key_path.to_str().unwrap(), dir.path().join("cert.json"));
    let sign = ["cert", "sign", "--run", run.to_str().unwrap(), "--key", key, "--out", cert.to_str().unwrap()];
    let o = dpaudit(&sign);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--allow-seeded-noise"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!cert.exists());
    let o = dpaudit(&[&sign[..], &["--allow-seeded-noise"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut options = ReportOptions::for_run(&run);
    options.certificate = Some(cert);
    options.public_key = Some(keys.public_key_path);
    let rep = report::build(&options).unwrap();
    assert_eq!(rep.certificate.as_ref().unwrap().noise_seeding, "seeded");
    assert!(report::render(&rep, Format::Html).unwrap().contains("The certified run is NOT FIT FOR RELEASE"));
}

#[test]
fn a_violated_audit_of_this_recipe_refutes_the_claim_and_other_recipes_do_not_count() {
    let s = shared();
    let rep = report::build(&options(s, &[fixture("audit.json"), fixture("audit-violated.json")])).unwrap();
    assert_eq!(rep.verdict.status, VerdictStatus::Violated);
    assert!(rep.verdict.statement.starts_with("REFUTED"), "{}", rep.verdict.statement);
    assert!(rep.audits[1].refutes_report_claim && !rep.audits[0].refutes_report_claim);
    let html = report::render(&rep, Format::Html).unwrap();
    assert!(html.contains("data-status=\"violated\""));

    // The same violated audit, but of another noise multiplier: shown, not counted.
    let dir = tempfile::tempdir().unwrap();
    let mut v: Value = serde_json::from_slice(&std::fs::read(fixture("audit-violated.json")).unwrap()).unwrap();
    v["spec"]["target"]["noise_multiplier"] = 6.305.into();
    std::fs::write(dir.path().join("audit.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let rep = report::build(&options(s, &[fixture("audit.json"), dir.path().to_path_buf()])).unwrap();
    assert_eq!(rep.verdict.status, VerdictStatus::Consistent, "{}", rep.verdict.statement);
    assert_eq!(rep.audits[1].same_recipe_as_run, Some(false));
    assert!(!rep.audits[1].refutes_report_claim);
    assert!(
        rep.verdict.statement.contains("1 audit tested another recipe")
            && rep.verdict.statement.contains("violated its own claim"),
        "{}",
        rep.verdict.statement
    );
}

#[test]
fn audit_files_are_read_leniently_but_need_a_bound_and_a_verdict() {
    let s = shared();
    // The example is a real engine output in shape: the engine's own strict reader accepts it.
    dpaudit::audit::engine::read_report(&fixture("")).unwrap();
    let rep = report::build(&options(s, &[fixture("audit-minimal.json")])).unwrap();
    let a = &rep.audits[0];
    assert_eq!(
        (a.name.as_str(), a.epsilon_lower, a.same_recipe_as_run, a.claimed_epsilon),
        ("old-blackbox", 0.05, None, None)
    );
    assert_eq!(a.roc.len(), 4);
    report::render(&rep, Format::Html).unwrap();
    report::render(&rep, Format::Markdown).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (bad, why) in [
        (r#"{"verdict": "consistent"}"#, "epsilon_lower"),
        (r#"{"epsilon_lower": 0.1}"#, "verdict"),
        ("[1, 2]", "not an audit"),
        (r#"{"epsilon_lower": -1, "verdict": "x"}"#, "epsilon_lower"),
    ] {
        let p = dir.path().join("audit.json");
        std::fs::write(&p, bad).unwrap();
        let err = report::build(&options(s, &[p])).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn text_from_the_inputs_is_escaped_in_html_and_markdown() {
    let s = shared();
    let dir = tempfile::tempdir().unwrap();
    let evil = "<script>alert('x')</script> & \"q\" | *b* [l](javascript:x)";
    let mut v: Value = serde_json::from_slice(&std::fs::read(fixture("audit.json")).unwrap()).unwrap();
    v["spec_name"] = evil.into();
    v["attack"] = "<img src=x onerror=alert(1)>".into();
    v["verdict_reason"] = "a </td></tr></table><h1>x</h1>".into();
    // A folder name that would run a second command if pasted unquoted.
    let folder = dir.path().join("it's | *b* & q");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("audit.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let rep = report::build(&options(s, &[folder])).unwrap();
    let html = report::render(&rep, Format::Html).unwrap();
    assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("</table><h1>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let md = report::render(&rep, Format::Markdown).unwrap();
    // Outside code blocks (whose content Markdown shows literally), no markup from the inputs.
    let mut in_code = false;
    let prose: Vec<&str> = md
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code
        })
        .collect();
    for bad in ["<script", "<img", "[l](javascript", "</td>"] {
        assert!(
            !prose.iter().any(|l| l.contains(bad)),
            "markdown holds {bad:?}:\n{}",
            prose.iter().filter(|l| l.contains(bad)).copied().collect::<Vec<_>>().join("\n")
        );
    }
    // Commands are shell-quoted: pasting one runs no second command.
    assert!(md.contains("it'\\''s | *b* & q/audit.json' "), "{md}");
    assert!(
        md.contains("### &lt;script&gt;alert('x')&lt;/script&gt; &amp; \"q\" \\| \\*b\\* \\[l\\](javascript:x)"),
        "{md}"
    );
    // Every table row still has its two cells: no `|` from the inputs escaped the escaping.
    for line in md.lines().filter(|l| l.starts_with("| attack")) {
        assert_eq!(line.matches(" | ").count(), 1, "{line}");
    }
}

#[test]
fn markdown_and_json_carry_the_same_content_as_html() {
    let s = shared();
    let rep = report::build(&options(s, &[fixture("audit.json")])).unwrap();
    let html = report::render(&rep, Format::Html).unwrap();
    let md = report::render(&rep, Format::Markdown).unwrap();
    let json: Value = serde_json::from_str(&report::render(&rep, Format::Json).unwrap()).unwrap();
    assert_eq!(json["format"], "dpaudit-report-v1");
    assert_eq!(json["claim"]["statement"], rep.claim.statement.as_str());
    assert_eq!(json["verdict"]["status"], "consistent");
    assert_eq!(json["certificate"]["key_id"], s.key_id.as_str());
    assert_eq!(json["audits"][0]["epsilon_lower"], 0.1731);
    assert_eq!(json["epsilon_over_steps"].as_array().unwrap().len(), 20);
    assert_eq!(json["mechanism"]["phases"][0]["noise_multiplier"], 1.2);
    let md_esc = dpaudit::report::markdown::escape;
    let html_esc = dpaudit::report::html::escape;
    let mut items: Vec<String> = vec![rep.claim.statement.clone(), rep.verdict.statement.clone(), s.key_id.clone()];
    items.extend(rep.limitations.iter().cloned());
    items.extend(rep.reproduce.hashes.iter().map(|h| h.sha256.clone()));
    items.extend(rep.mechanism.epsilons.iter().map(|e| e.method.clone()));
    items.extend(rep.audits.iter().map(|a| a.verdict_reason.clone()));
    for item in &items {
        assert!(md.contains(&md_esc(item)), "markdown lacks {item:?}");
        assert!(html.contains(&html_esc(item)), "html lacks {item:?}");
    }
    for c in &rep.reproduce.commands {
        assert!(md.contains(&c.command) && html.contains(&html_esc(&c.command)), "{}", c.command);
    }
    for p in &rep.epsilon_over_steps {
        assert!(md.contains(&format!("| {} | {} |", p.step, format_upper(p.epsilon))));
    }
}

#[test]
fn the_cli_writes_atomically_and_refuses_to_overwrite_without_force() {
    let s = shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.html");
    let (run, cert, key, audit) =
        (s.run.to_str().unwrap(), s.cert.to_str().unwrap(), s.pubkey.to_str().unwrap(), fixture("audit.json"));
    let args = [
        "report",
        "--run",
        run,
        "--audit",
        audit.to_str().unwrap(),
        "--cert",
        cert,
        "--pubkey",
        key,
        "--out",
        out.to_str().unwrap(),
    ];
    let o = dpaudit(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&s.key_id) && stdout.contains("differential privacy"), "{stdout}");
    let first = std::fs::read(&out).unwrap();
    assert!(first.starts_with(b"<!DOCTYPE html>"));
    let o = dpaudit(&args);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already exists; give --force"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), first, "a refused run must leave the file as it was");
    // Without --format, the extension of --out decides.
    let other = tempfile::tempdir().unwrap();
    for (name, starts) in [("r.md", "# Privacy report"), ("r.json", "{")] {
        let path = other.path().join(name);
        let mut a = args.to_vec();
        *a.last_mut().unwrap() = path.to_str().unwrap();
        let o = dpaudit(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(starts), "{name}");
    }
    let mut forced = args.to_vec();
    forced.extend(["--force", "--format", "json"]);
    let o = dpaudit(&forced);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(v["reproduce"]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["command"].as_str().unwrap().starts_with("dpaudit report --run")));
    let md = dir.path().join("report.md");
    let o = dpaudit(&["report", "--run", run, "--format", "markdown", "--out", md.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&md).unwrap().starts_with("# Privacy report: model logreg-sigma1.2"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary files left behind");
    // --json prints what was written as JSON, as every command that prints a result does.
    let js = other.path().join("r-json.html");
    let o = dpaudit(&["report", "--run", run, "--out", js.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["report"].as_str(), js.to_str());
    assert_eq!(v["bytes"].as_u64(), Some(std::fs::metadata(&js).unwrap().len()));
    assert!(v["claim"].as_str().unwrap().contains("differential privacy"), "{v}");
    assert!(v["warnings"].is_array() && v["certificate_key_id"].is_null(), "{v}");
    // The library refuses too.
    assert!(report::write_report(&md, "x", false).is_err());
    report::write_report(&md, "x", true).unwrap();
    assert_eq!(std::fs::read_to_string(&md).unwrap(), "x");
}

#[test]
fn runs_without_privacy_claim_nothing_and_a_sweep_draws_the_privacy_utility_curve() {
    let s = shared();
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline");
    train(&baseline, &["--no-privacy", "--seed", "1"]);
    let noisier = dir.path().join("sigma4");
    train(&noisier, &["--noise-multiplier", "4", "--seed", "1"]);
    let rep = report::build(&ReportOptions::for_run(&baseline)).unwrap();
    assert!(
        !rep.claim.private && rep.claim.statement.contains("NOT trained with differential privacy"),
        "{}",
        rep.claim.statement
    );
    assert!(rep.epsilon_over_steps.is_empty());
    let json: Value = serde_json::from_str(&report::render(&rep, Format::Json).unwrap()).unwrap();
    assert_eq!(json["claim"]["epsilon"], "infinity");
    report::render(&rep, Format::Html).unwrap();

    let mut o = ReportOptions::for_run(&s.run);
    o.runs.extend([noisier.clone(), baseline.clone()]);
    let rep = report::build(&o).unwrap();
    let u = &rep.utility.runs;
    assert_eq!(u.len(), 3);
    assert!(u[0].released && !u[1].released && u[1].epsilon.value() < u[0].epsilon.value(), "{u:?}");
    assert!(u[2].epsilon.value().is_infinite());
    let html = report::render(&rep, Format::Html).unwrap();
    assert!(html.contains("id=\"plot-utility\"") && html.contains("no privacy:"));
}

#[test]
fn a_torn_ledger_is_reported_and_left_untouched_and_a_wrong_certificate_is_flagged() {
    let s = shared();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    for f in ["metrics.json", "ledger.jsonl", "model.safetensors"] {
        std::fs::copy(s.run.join(f), run.join(f)).unwrap();
    }
    let mut ledger = std::fs::read(run.join("ledger.jsonl")).unwrap();
    ledger.extend_from_slice(b"{\"step\":21,\"sampl");
    std::fs::write(run.join("ledger.jsonl"), &ledger).unwrap();
    let mut o = ReportOptions::for_run(&run);
    o.certificate = Some(s.cert.clone());
    o.public_key = Some(s.pubkey.clone());
    let rep = report::build(&o).unwrap();
    assert_eq!(std::fs::read(run.join("ledger.jsonl")).unwrap(), ledger, "the report must not repair the ledger");
    assert_eq!(rep.mechanism.steps, 20);
    assert!(rep.warnings.iter().any(|w| w.contains("torn line of 17 bytes")), "{:?}", rep.warnings);
    let c = rep.certificate.as_ref().unwrap();
    assert_eq!(c.ledger_matches, Some(false));
    assert_eq!(
        c.signature_verified,
        Some(false),
        "the ledger's hash differs, so verification against this folder fails"
    );
    assert!(rep.warnings.iter().any(|w| w.contains("another ledger")), "{:?}", rep.warnings);
}

#[test]
fn a_synthetic_data_release_gets_its_own_claim_sample_grid_and_nearest_neighbour_section() {
    let dir = tempfile::tempdir().unwrap();
    let (gan, rel, nn) = (dir.path().join("gan"), dir.path().join("release"), dir.path().join("nn.json"));
    for args in [
        vec![
            "gan",
            "train",
            "--dataset",
            "fixture",
            "--epochs",
            "1",
            "--lot-size",
            "100",
            "--noise-multiplier",
            "1",
            "--z-dim",
            "16",
            "--g-width",
            "16",
            "--d-width",
            "16",
            "--threads",
            "1",
            "--out",
            gan.to_str().unwrap(),
        ],
        vec![
            "gan",
            "sample",
            "--run",
            gan.to_str().unwrap(),
            "--count",
            "100",
            "--seed",
            "1",
            "--out",
            rel.to_str().unwrap(),
        ],
        vec![
            "attack",
            "nearest-neighbour",
            "--synthetic",
            rel.to_str().unwrap(),
            "--train",
            "fixtures/mnist-small",
            "--holdout",
            "fixtures/mnist-small",
            "--max-examples",
            "200",
            "--out",
            nn.to_str().unwrap(),
        ],
    ] {
        let o = dpaudit(&args);
        assert!(
            o.status.success() || args[0] == "attack" && o.status.code() == Some(11),
            "dpaudit {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut o = ReportOptions::for_run(&gan);
    o.release = Some(rel.clone());
    o.nearest_neighbour = Some(nn.clone());
    let rep = report::build(&o).unwrap();
    assert!(
        rep.claim.statement.starts_with("This synthetic dataset was produced with (ε = "),
        "{}",
        rep.claim.statement
    );
    assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
    let s = rep.synthetic_data.as_ref().unwrap();
    assert!(s.epsilon_proven && s.records == 100);
    assert_eq!(s.nearest_neighbour.len(), 8, "{:?}", s.nearest_neighbour);
    let html = report::render(&rep, Format::Html).unwrap();
    assert!(html.contains("id=\"synthetic-data\"") && html.contains("id=\"sample-grid\""));
    assert!(html.contains("src=\"data:image/png;base64,iVBORw0KGgo"), "the grid is embedded, not linked");
    assert!(rep.reproduce.hashes.iter().any(|h| h.what == "released file grid.png"));
    assert!(
        rep.reproduce.commands[0].command.starts_with("cat ")
            && rep.reproduce.commands[0].command.ends_with("gan.json"),
        "{:?}",
        rep.reproduce.commands[0]
    );
    let md = report::render(&rep, Format::Markdown).unwrap();
    assert!(md.contains("## Synthetic data") && md.contains("GAN-Leaks"));
    // What was trained, and the release's utility: said plainly when not evaluated, shown when
    // given; never a model's test accuracy.
    assert!(rep.utility.model.starts_with("DP-GAN (design joint"), "{}", rep.utility.model);
    assert_eq!(rep.title(), "Privacy report: synthetic dataset release");
    for text in [&html, &md] {
        assert!(text.contains("was not evaluated for this report") && !text.contains("not recorded"), "{text}");
    }
    let eval = dir.path().join("evaluation.json");
    std::fs::write(
        &eval,
        r#"{"cas": {"test_accuracy": 0.8123, "selected_epoch": 3, "protocol": "CAS protocol"},
            "fid_mnist_classifier": 12.5, "fid_protocol": "FID protocol",
            "real_vs_fake_accuracy": 0.61, "real_vs_fake_protocol": "RvF protocol", "synthetic_examples": 100}"#,
    )
    .unwrap();
    let mut with_eval = o.clone();
    with_eval.evaluation = Some(eval);
    let rep_eval = report::build(&with_eval).unwrap();
    let html_eval = report::render(&rep_eval, Format::Html).unwrap();
    assert!(html_eval.contains("81.23%") && html_eval.contains("12.50") && html_eval.contains("61.00%"));
    assert!(!html_eval.contains("was not evaluated"));
    assert!(report::build(&ReportOptions { evaluation: Some(dir.path().join("nn.json")), ..o.clone() }).is_err());
    // A released file changed after release.json was written is flagged.
    let mut grid = std::fs::read(rel.join("grid.png")).unwrap();
    grid.push(0);
    std::fs::write(rel.join("grid.png"), grid).unwrap();
    let rep = report::build(&o).unwrap();
    assert!(
        rep.warnings.iter().any(|w| w.contains("grid.png") && w.contains("not the one released")),
        "{:?}",
        rep.warnings
    );
    assert_eq!(dpaudit::report::inputs::base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
    assert_eq!(dpaudit::report::inputs::base64(b"ab"), "YWI=");
}

#[test]
fn roc_plots_have_clopper_pearson_bands_from_where_the_data_starts_and_explain_points_above_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("audit.json")).unwrap()).unwrap();
    v["roc_positives"] = 1000.into();
    v["roc_negatives"] = 1000.into();
    // TPR 0.05 at FPR 0.001 is above the claim's limit e^1.3087 * 0.001 + 1e-5 = 0.0037, while
    // the audit's bound (0.17) stays below the claim: finite-sample noise, and the plot says so.
    v["roc"][1]["tpr"] = 0.05.into();
    let path = dir.path().join("audit.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let claim = v["claim"]["epsilon"].as_f64().unwrap();
    let a = report::inputs::read_audit(&path, None, claim).unwrap();
    let (measured, bands) = report::plots::roc_with_bands(&a);
    assert!(measured.iter().all(|p| p.fpr >= 1e-3), "no point below FPR 1/1000");
    let bands = bands.unwrap();
    assert_eq!(bands.len(), measured.len());
    for ((f, lo, hi), p) in bands.iter().zip(&measured) {
        assert!(*f == p.fpr && *lo <= p.tpr && p.tpr <= *hi && lo < hi, "{f} {lo} {hi} {}", p.tpr);
    }
    let svg = report::plots::roc_svg(&a, claim, 1e-5).unwrap();
    assert!(svg.contains("Clopper"), "band legend");
    assert!(svg.contains("above the limit: finite-sample noise"), "the point above the limit is explained");
    // The same file without the counts (an older audit.json): no bands, and no crash.
    let mut old = v.clone();
    old.as_object_mut().unwrap().remove("roc_negatives");
    std::fs::write(&path, old.to_string()).unwrap();
    let a = report::inputs::read_audit(&path, None, claim).unwrap();
    assert!(report::plots::roc_with_bands(&a).1.is_none());
}
