//! Subcommand handlers of the `dpaudit` binary, one file per command group. Each is a thin layer:
//! parse, call the library, print (human text or `--json`); errors get context with `anyhow`.
pub mod attack;
pub mod audit;
pub mod demo;
pub mod gan;
pub mod import;
pub mod report;

/// An error and its causes on one line, each said once: a cause whose text is already part of
/// what was printed is skipped, and a context that the next cause repeats and extends is replaced
/// by it (`reading F` then `reading F: No such file` prints once).
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.iter().any(|o| o.contains(&text)) {
            continue;
        }
        match out.last_mut() {
            Some(last) if text.starts_with(last.as_str()) => *last = text,
            _ => out.push(text),
        }
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let lib = dpaudit::Error::io("reading /x", io);
        let err = anyhow::Error::new(lib).context("reading /x");
        assert_eq!(error_chain(&err), "reading /x: No such file or directory (os error 2)");
        let err = anyhow::anyhow!("bad value").context("parsing the config c.toml");
        assert_eq!(error_chain(&err), "parsing the config c.toml: bad value");
    }
}
