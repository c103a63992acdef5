//! The Ambit mesh CA: its on-disk store, the authorisation of node agents, and the CSR API.

pub mod authz;
pub mod gateway_classes;
pub mod kube;
pub mod root_configmap;
pub mod server;
pub mod store;
pub mod workloads;
