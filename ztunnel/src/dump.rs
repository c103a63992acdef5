//! `/config_dump`: what this node agent believes, for an operator debugging a connection —
//! the workloads and services it knows, the policies (and those that could not be understood,
//! with why), the pods it proxies, and each certificate with its expiry.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::agent::Agent;

fn unix_seconds(time: Option<SystemTime>) -> Value {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| json!(d.as_secs()))
        .unwrap_or(Value::Null)
}

fn seconds_left(time: Option<SystemTime>) -> Value {
    time.map(|t| match t.duration_since(SystemTime::now()) {
        Ok(left) => json!(left.as_secs()),
        Err(_) => json!(0),
    })
    .unwrap_or(Value::Null)
}

pub fn config_dump(agent: &Agent) -> Value {
    let snapshot = agent.snapshot();
    let workloads: Vec<Value> = snapshot
        .workloads()
        .map(|w| {
            json!({
                "name": w.name,
                "namespace": w.namespace,
                "uid": w.uid,
                "node": w.node,
                "serviceAccount": w.service_account,
                "identity": agent.identity_of(w).map(|id| id.to_string()),
                "ips": w.ips,
                "ambient": w.ambient,
                "ready": w.ready,
            })
        })
        .collect();
    let services: Vec<Value> = snapshot
        .services()
        .map(|s| {
            let ports: Vec<Value> = s
                .ports
                .iter()
                .map(|p| {
                    let endpoints: Vec<String> = snapshot
                        .endpoints_for(s, p)
                        .iter()
                        .map(|e| e.addr.to_string())
                        .collect();
                    json!({"name": p.name, "port": p.port, "targetPort": format!("{:?}", p.target_port), "endpoints": endpoints})
                })
                .collect();
            json!({"name": s.name, "namespace": s.namespace, "vips": s.vips, "ports": ports})
        })
        .collect();
    let policies: Vec<Value> = snapshot
        .policies()
        .map(|p| {
            json!({
                "name": p.name,
                "namespace": p.namespace,
                "action": format!("{:?}", p.action),
                "selector": p.selector,
                "rules": p.rules.len(),
                // Set for a policy that could not be understood: why, and what it does meanwhile.
                "invalid": p.invalid.as_ref().map(ToString::to_string),
            })
        })
        .collect();
    // Enforced fail-closed until fixed (DESIGN §7): listed on their own so they stand out.
    let invalid_policies: Vec<Value> = snapshot
        .invalid_policies()
        .filter_map(|p| {
            let invalid = p.invalid.as_ref()?;
            Some(json!({
                "name": p.name,
                "namespace": p.namespace,
                "field": invalid.field,
                "problem": invalid.problem,
                "enforcedAs": invalid.enforced_as,
            }))
        })
        .collect();
    let enrolled: Vec<Value> = agent
        .enrolled()
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "namespace": p.namespace,
                "uid": p.uid,
                "identity": p.identity.to_string(),
                "netnsInode": p.netns.inode(),
            })
        })
        .collect();
    let certificates: Vec<Value> = agent
        .certificates
        .status()
        .iter()
        .map(|c| {
            json!({
                "identity": c.identity.to_string(),
                "notBefore": unix_seconds(c.not_before),
                "notAfter": unix_seconds(c.not_after),
                "expiresInSeconds": seconds_left(c.not_after),
                "nextRefresh": unix_seconds(c.next_refresh),
                "consecutiveFailures": c.consecutive_failures,
                "lastError": c.last_error,
            })
        })
        .collect();
    json!({
        "node": agent.config.node,
        "trustDomain": agent.config.trust_domain,
        "snapshotGeneration": snapshot.generation(),
        "manifestError": agent.source.last_error(),
        "enrolledPods": enrolled,
        "certificates": certificates,
        "liveInboundConnections": agent.proxy.connections.len(),
        "workloads": workloads,
        "services": services,
        "policies": policies,
        "invalidPolicies": invalid_policies,
    })
}
