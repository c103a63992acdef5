//! A chained CNI plugin for testing the harness's chaining: it appends each invocation
//! (command, CNI_* environment, config) as one JSON line to the file named by its config's
//! `recordFile`, passes `prevResult` through on ADD (as a chained plugin must), and fails the ADD
//! with a CNI error when its config has `"failAdd": true`.

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{json, Value};

fn main() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        return fail(&format!("reading stdin: {e}"));
    }
    let config: Value = match serde_json::from_str(&input) {
        Ok(config) => config,
        Err(e) => return fail(&format!("config is not JSON: {e}")),
    };
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let env: serde_json::Map<String, Value> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CNI_"))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if let Some(path) = config["recordFile"].as_str() {
        let line = json!({"command": command, "env": env, "config": config});
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(e) = written {
            return fail(&format!("recording to {path}: {e}"));
        }
    }
    match command.as_str() {
        "ADD" if config["failAdd"] == json!(true) => fail("refusing ADD as configured (failAdd)"),
        "ADD" => {
            let result = match config.get("prevResult") {
                Some(prev) => prev.clone(),
                None => json!({"cniVersion": config["cniVersion"]}),
            };
            println!("{result}");
            ExitCode::SUCCESS
        }
        "VERSION" => {
            println!(r#"{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}"#);
            ExitCode::SUCCESS
        }
        _ => ExitCode::SUCCESS,
    }
}

/// A CNI error on stdout, non-zero exit.
fn fail(message: &str) -> ExitCode {
    println!(
        "{}",
        json!({"cniVersion": "1.0.0", "code": 999, "msg": message})
    );
    ExitCode::FAILURE
}
