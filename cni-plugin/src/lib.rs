//! The library half of `ambit-cni`: the CNI protocol parsing ([`cni`]), shared by the binary
//! (`main.rs`) and the fuzz targets in `fuzz/`, which feed it hostile environments and stdin.
#![forbid(unsafe_code)]

pub mod cni;
