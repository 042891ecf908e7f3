//! Which device the model runs on: `cpu` (always available) or `cuda[:N]` (only in builds with
//! the `cuda` cargo feature). The forward pass is device-generic: the few host-side kernels
//! (RoPE, causal softmax in attention, SiLU; see `decoder.rs` and `attention.rs`) copy their input
//! to host memory and the result back, so on a GPU they are correct, only not GPU-fast.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// A device named on the command line (`--device`) or by `$HINDSIGHT_DEVICE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// CUDA GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device '{s}' (cpu, cuda, cuda:N)")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// `$HINDSIGHT_DEVICE` if set (and valid), else the CPU.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("HINDSIGHT_DEVICE") {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(DeviceSpec::Cpu),
        }
    }

    /// Opens the device. A CUDA device in a build without the `cuda` feature is a clear error.
    pub fn open(self) -> crate::error::Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => open_cuda(n),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> crate::error::Result<Device> {
    Ok(Device::new_cuda(n)?)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> crate::error::Result<Device> {
    Err(crate::error::Error::Model {
        path: format!("cuda:{n}").into(),
        message: "this hindsight was built without GPU support; rebuild with \
                  `cargo build --release --features cuda` (needs the CUDA toolkit) or use --device cpu"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_cuda_without_the_feature() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("CUDA:2".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(2)));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!(DeviceSpec::Cpu.open().is_ok());
        #[cfg(not(feature = "cuda"))]
        {
            let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
