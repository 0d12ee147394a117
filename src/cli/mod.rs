//! Subcommand handlers of the `dpaudit` command (the `dpaudit-torch` binary, which the front
//! `dpaudit` hands every command that needs libtorch), one file per command group. Each is a thin layer:
//! parse, call the library, print (human text or `--json`); errors get context with `anyhow`.
pub mod account;
pub mod attack;
pub mod audit;
pub mod cert;
pub mod common;
pub mod data;
pub mod demo;
pub mod gan;
pub mod import;
pub mod keys;
pub mod report;
pub mod train;

use dpaudit::device::DeviceChoice;

pub use common::{error_chain, exit_status_of};

/// `--device`, shared by every command that trains or evaluates a model.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DeviceArg {
    /// Where to train and evaluate: cpu (the default), cuda (= cuda:0), cuda:N, or auto (CUDA
    /// device 0 when libtorch sees one, else the CPU). Nothing runs on a GPU unless asked; a CUDA
    /// device that is not available is refused (exit 13). Recorded in metrics.json.
    #[arg(long, value_name = "cpu|cuda|cuda:N|auto", default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
}

impl DeviceArg {
    /// The libtorch device.
    ///
    /// # Errors
    /// A CUDA device libtorch does not see.
    pub fn resolve(self) -> anyhow::Result<tch::Device> {
        Ok(self.device.resolve()?)
    }
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse::<DeviceChoice>().map_err(|e| e.to_string())
}
