//! What both halves of the command line share: exit statuses and how an error chain is printed.
//! (This file is compiled into the `dpaudit` front binary and into `dpaudit-torch`.)

/// Exit status when the CUDA device asked for with `--device` is not available.
pub const EXIT_DEVICE_UNAVAILABLE: i32 = 13;
/// Exit status when another dpaudit process is writing the same run or audit folder.
pub const EXIT_FOLDER_BUSY: i32 = 14;

/// The exit status of a failed command: [`EXIT_DEVICE_UNAVAILABLE`] and [`EXIT_FOLDER_BUSY`] for
/// those two library errors anywhere in the chain, 1 otherwise.
pub fn exit_status_of(err: &anyhow::Error) -> i32 {
    match err.chain().find_map(|e| e.downcast_ref::<dpaudit_core::Error>()) {
        Some(dpaudit_core::Error::DeviceUnavailable { .. }) => EXIT_DEVICE_UNAVAILABLE,
        Some(dpaudit_core::Error::FolderBusy { .. }) => EXIT_FOLDER_BUSY,
        _ => 1,
    }
}

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
        let lib = dpaudit_core::Error::io("reading /x", io);
        let err = anyhow::Error::new(lib).context("reading /x");
        assert_eq!(error_chain(&err), "reading /x: No such file or directory (os error 2)");
        let err = anyhow::anyhow!("bad value").context("parsing the config c.toml");
        assert_eq!(error_chain(&err), "parsing the config c.toml: bad value");
    }
}
