//! Subcommand handlers of the `dpaudit` binary, one file per command group. Each is a thin layer:
//! parse, call the library, print (human text or `--json`); errors get context with `anyhow`.
pub mod attack;
pub mod audit;
pub mod demo;
pub mod gan;
pub mod import;
pub mod report;
