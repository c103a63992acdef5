//! The Ambit mesh CA: its on-disk store, the authorisation of node agents, and the CSR API.

pub mod authz;
pub mod gateway_classes;
pub mod handler;
pub mod kube;
pub mod limits;
pub mod root_configmap;
pub mod server;
pub mod service;
pub mod store;
pub mod token_cache;
pub mod workloads;
