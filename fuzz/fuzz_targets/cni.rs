//! CNI input (cni-plugin/src/cni/mod.rs): the `CNI_*` environment and the network config JSON
//! on stdin, exactly as `ambit-cni` receives them from the container runtime.
//!
//! Contract: never panics; the error JSON is valid JSON carrying the error's code and message and
//! a version the plugin speaks; an accepted ADD or CHECK has a prevResult object, an accepted
//! call a valid container id and the config's values; the ADD/CHECK result is a JSON object
//! carrying a cniVersion; the config parses the same alone as inside a call.
#![no_main]

use std::collections::HashMap;

use ambit_cni::cni::{self, Request, SUPPORTED_VERSIONS};
use libfuzzer_sys::fuzz_target;

/// The variables, in input order: one line each (an empty line leaves it unset, as the plugin
/// treats empty values), then stdin.
const VARIABLES: [&str; 5] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
];

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(VARIABLES.len() + 1, |&b| b == b'\n');
    let mut env = HashMap::new();
    for key in VARIABLES {
        let Some(value) = parts.next() else { break };
        // Non-UTF-8 values are refused before parsing (main.rs `cni_env`).
        let Ok(value) = std::str::from_utf8(value) else {
            return;
        };
        if !value.is_empty() {
            env.insert(key.to_owned(), value.to_owned());
        }
    }
    let stdin = parts.next().unwrap_or_default();
    let command = env.get("CNI_COMMAND").map(String::as_str);

    let version = cni::version_for_errors(stdin);
    assert!(SUPPORTED_VERSIONS.contains(&version.as_str()));
    match cni::parse(&env, stdin) {
        Err(error) => {
            let json: serde_json::Value =
                serde_json::from_str(&error.to_json(&version)).expect("error JSON is JSON");
            assert_eq!(json["code"], error.code);
            assert_eq!(json["msg"], error.msg.as_str());
            assert_eq!(json["cniVersion"], version.as_str());
            assert!(!error.msg.is_empty());
        }
        Ok(Request::Version) => {
            assert_eq!(command, Some("VERSION"));
            let json: serde_json::Value =
                serde_json::from_str(&cni::version_json()).expect("VERSION JSON");
            assert!(json.is_object());
        }
        Ok(Request::Status(config) | Request::Gc(config)) => {
            assert_eq!(cni::parse_config(stdin).as_ref(), Ok(&config));
        }
        Ok(Request::Add(call) | Request::Del(call) | Request::Check(call)) => {
            assert_eq!(cni::parse_config(stdin).as_ref(), Ok(&call.config));
            assert!(SUPPORTED_VERSIONS.contains(&call.config.cni_version.as_str()));
            assert!(!call.config.name.is_empty());
            assert!(!call.ifname.is_empty());
            let id = &call.container_id;
            assert!(
                id.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
                "container id {id:?} accepted"
            );
            if let Some(pod) = &call.pod {
                assert!(!pod.namespace.is_empty() && !pod.name.is_empty() && !pod.uid.is_empty());
            }
            if command != Some("DEL") {
                assert!(call.netns.is_some());
                assert!(call
                    .config
                    .prev_result
                    .as_ref()
                    .is_some_and(|p| p.is_object()));
                let result: serde_json::Value =
                    serde_json::from_str(&cni::pass_through(&call.config)).expect("result JSON");
                assert!(result.get("cniVersion").is_some_and(|v| v.is_string()));
            }
            let _ = cni::probe_sources(&call.config);
        }
    }
});
