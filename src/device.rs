//! Which device a command trains and evaluates on. Nothing in dpaudit picks a GPU by itself: the
//! default is the CPU, CUDA is used only when asked for (`cuda`, `cuda:N`) or allowed (`auto`),
//! and asking for a CUDA device that libtorch does not see is an [`Error::DeviceUnavailable`]
//! before any data is read or any privacy is spent.
//!
//! The library entry points that take a [`tch::Device`] (training runs, GAN runs, audit and
//! membership-inference contexts) call [`check_available`] first, so `Device::Cuda(0)` on a
//! machine without CUDA gives that one error, not a libtorch stack trace.
//!
//! Reproducibility: runs on the CPU with a seed are bit-reproducible; CUDA kernels (cuBLAS,
//! cuDNN reductions) need not be, so a replayed audit record is compared on the device the audit
//! ran on.
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;
use tch::Device;

/// A device as a user names it: `cpu`, `cuda` (= `cuda:0`), `cuda:N` or `auto` (CUDA device 0
/// when libtorch sees one, else the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// CUDA device 0 when available, else the CPU.
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    /// # Errors
    /// [`Error::InvalidParameter`] for anything but `cpu`, `cuda`, `cuda:N` and `auto`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid("device", s, "must be cpu, cuda, cuda:N (N = 0, 1, ...) or auto");
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "auto" => Ok(DeviceChoice::Auto),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                n.parse::<usize>().map(DeviceChoice::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Auto => f.write_str("auto"),
        }
    }
}

impl DeviceChoice {
    /// The libtorch device: `Auto` becomes CUDA device 0 when available, else the CPU.
    ///
    /// # Errors
    /// [`Error::DeviceUnavailable`] when a CUDA device is named that libtorch does not see.
    pub fn resolve(self) -> Result<Device> {
        let device = match self {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Cuda(n) => Device::Cuda(n),
            DeviceChoice::Auto if tch::Cuda::is_available() => Device::Cuda(0),
            DeviceChoice::Auto => Device::Cpu,
        };
        check_available(device)?;
        Ok(device)
    }
}

/// Refuses a device libtorch cannot use (a CUDA device on a machine without CUDA, or an index
/// beyond the devices present). The CPU is always available.
///
/// # Errors
/// [`Error::DeviceUnavailable`]; MPS and Vulkan are refused as [`Error::InvalidParameter`]
/// (dpaudit supports the CPU and CUDA).
pub fn check_available(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(n) => {
            let count = if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 };
            if n < count {
                Ok(())
            } else if count == 0 {
                Err(Error::DeviceUnavailable {
                    asked: name(device),
                    available: "no CUDA device is available (libtorch sees none)".into(),
                })
            } else {
                Err(Error::DeviceUnavailable {
                    asked: name(device),
                    available: format!("only {count} CUDA device(s) are available (cuda:0 to cuda:{})", count - 1),
                })
            }
        }
        other => Err(Error::invalid("device", format!("{other:?}"), "dpaudit runs on the CPU or on CUDA")),
    }
}

/// The device's name as recorded in metrics files: `cpu`, `cuda:N`.
pub fn name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The device recorded by metrics files written before dpaudit recorded one (all ran on the CPU
/// unless a GAN run found CUDA; those files cannot tell).
pub fn unrecorded() -> String {
    "unrecorded".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_forms_and_refuses_others() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        for bad in ["", "gpu", "CUDA", "cuda:", "cuda:-1", "cuda:+1", "cuda:x", "cuda:1:2", " cpu", "mps"] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(matches!(err, Error::InvalidParameter { name: "device", .. }), "{bad:?}: {err}");
        }
        for choice in [DeviceChoice::Cpu, DeviceChoice::Cuda(2), DeviceChoice::Auto] {
            assert_eq!(choice.to_string().parse::<DeviceChoice>().unwrap(), choice);
        }
    }

    #[test]
    fn cpu_always_resolves_and_auto_follows_libtorch() {
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
        let auto = DeviceChoice::Auto.resolve().unwrap();
        assert_eq!(auto, if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu });
        assert_eq!(name(Device::Cpu), "cpu");
        assert_eq!(name(Device::Cuda(1)), "cuda:1");
    }

    #[test]
    fn an_absent_cuda_device_is_a_typed_error() {
        // cuda:4096 exceeds every machine's device count, with or without CUDA.
        let err = DeviceChoice::Cuda(4096).resolve().unwrap_err();
        assert!(matches!(&err, Error::DeviceUnavailable { asked, .. } if asked == "cuda:4096"), "{err}");
        assert!(!err.to_string().contains('\n'));
        if !tch::Cuda::is_available() {
            let err = check_available(Device::Cuda(0)).unwrap_err();
            assert_eq!(err.to_string(), "cuda:0 was asked for, but no CUDA device is available (libtorch sees none)");
        }
    }
}
