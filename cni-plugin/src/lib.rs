//! The library half of `ambit-cni`: the parsing of its outside input — the CNI protocol
//! ([`cni`]) and the node's CNI config files the installer edits ([`conflist`]) — shared by the
//! binary (`main.rs`) and the fuzz targets in `fuzz/`, which feed them hostile input.
#![forbid(unsafe_code)]

pub mod cni;
pub mod conflist;
