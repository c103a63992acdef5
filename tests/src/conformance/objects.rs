//! mesh-base.yaml and a test's manifests turned into what the cluster-in-a-box can build:
//! Namespaces, Services, Deployments expanded into pods the way the ReplicaSet controller names
//! them, and the route documents written as they are.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::conformance::case::ManifestFile;
use crate::error::{HarnessError, Result};
use crate::manifests::Labels;

/// Placeholders of the data set and what they mean here (README: "must be substituted").
pub const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("{GATEWAY_CLASS_NAME}", "ambit-waypoint"),
    ("{GATEWAY_CONTROLLER_NAME}", "ambit.dev/waypoint-controller"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceDef {
    pub name: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortDef {
    pub name: String,
    pub port: u16,
    /// `targetPort`, or `port` when unset (as the API server defaults it).
    pub target_port: u16,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub selector: Labels,
    pub ports: Vec<PortDef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentDef {
    pub namespace: String,
    pub name: String,
    pub replicas: u32,
    pub template_labels: Labels,
    /// The first container's args (the echo app's flags).
    pub args: Vec<String>,
    /// The pod template as JSON: the input of the pod-template hash.
    pub template: String,
}

/// The workload objects of a manifest set; other kinds are left to [`route_documents`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaseObjects {
    pub namespaces: Vec<NamespaceDef>,
    pub services: Vec<ServiceDef>,
    pub deployments: Vec<DeploymentDef>,
}

/// The documents of a multi-document YAML text; empty documents are skipped.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)
            .map_err(|e| HarnessError::Invalid(format!("manifest YAML: {e}")))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn text(doc: &Value, pointer: &str) -> Option<String> {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn labels(doc: &Value, pointer: &str) -> Labels {
    doc.pointer(pointer)
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn port_number(value: &Value, what: &str) -> Result<u16> {
    value
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| HarnessError::Invalid(format!("{what}: {value} is not a port number")))
}

/// Namespaces, Services and Deployments of `yaml`; other kinds are ignored here.
pub fn parse_base(yaml: &str) -> Result<BaseObjects> {
    let mut objects = BaseObjects::default();
    for doc in yaml_documents(yaml)? {
        let name = text_or(&doc, "/metadata/name")?;
        let namespace = text(&doc, "/metadata/namespace").unwrap_or_else(|| "default".into());
        match doc.get("kind").and_then(Value::as_str) {
            Some("Namespace") => objects.namespaces.push(NamespaceDef {
                name,
                labels: labels(&doc, "/metadata/labels"),
            }),
            Some("Service") => objects.services.push(service(&doc, namespace, name)?),
            Some("Deployment") => objects.deployments.push(deployment(&doc, namespace, name)?),
            _ => {}
        }
    }
    Ok(objects)
}

fn text_or(doc: &Value, pointer: &str) -> Result<String> {
    text(doc, pointer)
        .ok_or_else(|| HarnessError::Invalid(format!("manifest without {pointer}: {doc}")))
}

fn service(doc: &Value, namespace: String, name: String) -> Result<ServiceDef> {
    let what = format!("Service {namespace}/{name}");
    let mut ports = Vec::new();
    for port in doc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let number = port_number(&port["port"], &what)?;
        let target_port = match port.get("targetPort") {
            None => number,
            // Named targetPorts would need the pod's container port names; the data has none.
            Some(value) => port_number(value, &format!("{what} targetPort"))?,
        };
        ports.push(PortDef {
            name: text(port, "/name").unwrap_or_default(),
            port: number,
            target_port,
            app_protocol: text(port, "/appProtocol"),
        });
    }
    Ok(ServiceDef {
        labels: labels(doc, "/metadata/labels"),
        selector: labels(doc, "/spec/selector"),
        namespace,
        name,
        ports,
    })
}

fn deployment(doc: &Value, namespace: String, name: String) -> Result<DeploymentDef> {
    let template = doc
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let args = template
        .pointer("/spec/containers/0/args")
        .and_then(Value::as_array)
        .map(|args| {
            args.iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let replicas = doc
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .map_or(Ok(1), u32::try_from)
        .map_err(|_| HarnessError::Invalid(format!("Deployment {namespace}/{name}: replicas")))?;
    Ok(DeploymentDef {
        template_labels: labels(&template, "/metadata/labels"),
        template: template.to_string(),
        args,
        replicas,
        namespace,
        name,
    })
}

/// The ports Istio's echo app opens for `args` (`--port`, `--grpc`, `--tcp`, `--tls`), with
/// its per-flag defaults (8080, 7070, 9090) when a flag is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoPorts {
    pub http: Vec<u16>,
    pub grpc: Vec<u16>,
    pub tcp: Vec<u16>,
    /// Ports `--tls` marks as TLS: not served (no mesh case dials them; see the report).
    pub tls: Vec<u16>,
}

impl EchoPorts {
    pub fn from_istio_args(args: &[String]) -> Result<EchoPorts> {
        let mut flags: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            let (key, value) = match flag.split_once('=') {
                Some((key, value)) => (key, value.to_string()),
                None => (flag, rest.next().cloned().unwrap_or_default()),
            };
            if ["port", "grpc", "tcp", "tls"].contains(&key) {
                for number in value.split(',') {
                    let port = number.trim().parse().map_err(|_| {
                        HarnessError::Invalid(format!("echo arg --{key}={value}: not a port"))
                    })?;
                    flags.entry(key).or_default().push(port);
                }
            }
        }
        let mut take =
            |key: &str, default: &[u16]| flags.remove(key).unwrap_or_else(|| default.to_vec());
        let tls = take("tls", &[]);
        let keep = |ports: Vec<u16>| -> Vec<u16> {
            ports.into_iter().filter(|p| !tls.contains(p)).collect()
        };
        Ok(EchoPorts {
            http: keep(take("port", &[8080])),
            grpc: keep(take("grpc", &[7070])),
            tcp: keep(take("tcp", &[9090])),
            tls,
        })
    }

    /// Every served port (for the Pod's container ports).
    pub fn served(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .http
            .iter()
            .chain(&self.grpc)
            .chain(&self.tcp)
            .copied()
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// `ambit-testapp mesh-echo …` arguments for pod `pod`.
    pub fn testapp_args(&self, pod: &str, namespace: &str, version: &str) -> Vec<String> {
        let mut args = vec!["mesh-echo".to_string(), "--pod".into(), pod.into()];
        args.extend([
            "--namespace".to_string(),
            namespace.into(),
            "--version".into(),
            version.into(),
        ]);
        for (flag, ports) in [
            ("--http", &self.http),
            ("--grpc", &self.grpc),
            ("--tcp", &self.tcp),
        ] {
            for port in ports {
                args.extend([flag.to_string(), port.to_string()]);
            }
        }
        args
    }
}

/// One pod of a Deployment, as the cluster-in-a-box will create it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub deployment: String,
    pub labels: Labels,
    pub node: usize,
    pub echo: EchoPorts,
}

/// The alphabet Kubernetes uses for generated name parts (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_hash(input: &str, len: usize) -> String {
    Sha256::digest(input.as_bytes())
        .iter()
        .take(len)
        .map(|b| SAFE_ALPHABET[*b as usize % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Pods for `deployments`: `<deployment>-<10-char template hash>-<5-char suffix>`, labelled
/// with the template labels plus `pod-template-hash`, spread round-robin over `nodes` in the
/// order given (so two single-replica Deployments land on different nodes). Names are
/// deterministic, so a rerun has the same pods. The upstream judge takes the Service from the
/// pod name (prefix, or the name minus its last two segments), which this naming keeps true.
pub fn expand_deployments(deployments: &[DeploymentDef], nodes: usize) -> Result<Vec<PodPlan>> {
    let mut pods = Vec::new();
    for deployment in deployments {
        let template_hash = safe_hash(
            &format!("{}/{}", deployment.namespace, deployment.template),
            10,
        );
        let echo = EchoPorts::from_istio_args(&deployment.args)?;
        let mut labels = deployment.template_labels.clone();
        labels.insert("pod-template-hash".into(), template_hash.clone());
        for replica in 0..deployment.replicas {
            let suffix = safe_hash(
                &format!("{}/{}/{replica}", deployment.name, template_hash),
                5,
            );
            pods.push(PodPlan {
                namespace: deployment.namespace.clone(),
                name: format!("{}-{template_hash}-{suffix}", deployment.name),
                deployment: deployment.name.clone(),
                labels: labels.clone(),
                node: pods.len() % nodes.max(1),
                echo: echo.clone(),
            });
        }
    }
    Ok(pods)
}

/// The documents of one of a test's manifest files, placeholders substituted. Workload kinds
/// are refused: mesh tests bring only routes, and a Service written here would have no VIP.
pub fn route_documents(file: &ManifestFile) -> Result<Vec<Value>> {
    let mut content = file.content.clone();
    for (placeholder, value) in SUBSTITUTIONS {
        content = content.replace(placeholder, value);
    }
    let docs = yaml_documents(&content)?;
    for doc in &docs {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        if ["Service", "Deployment", "Namespace", "Pod"].contains(&kind) {
            return Err(HarnessError::Invalid(format!(
                "{}: a {kind} in a test's own manifests is not supported by the mesh harness",
                file.path
            )));
        }
    }
    Ok(docs)
}
