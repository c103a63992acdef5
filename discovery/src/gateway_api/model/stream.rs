//! TLSRoute and TCPRoute: whole connections to weighted backends, by SNI (TLS) or by listener
//! (TCP).

use serde::Serialize;

use super::{BackendRef, ParentRef, Rejection};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub parent_refs: Vec<ParentRef>,
    /// SNI names, `*.example.com` for a wildcard.
    pub hostnames: Vec<String>,
    /// Empty when `rejected`.
    pub rules: Vec<StreamRule>,
    pub rejected: Option<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub parent_refs: Vec<ParentRef>,
    /// Empty when `rejected`.
    pub rules: Vec<StreamRule>,
    pub rejected: Option<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRule {
    pub name: Option<String>,
    /// Never empty (the schema requires backends for stream routes).
    pub backends: Vec<BackendRef>,
}
