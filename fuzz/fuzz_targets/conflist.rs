//! The node's CNI config files as the installer reads and rewrites them
//! (cni-plugin/src/conflist.rs): whatever the primary CNI (or an operator) wrote into
//! /etc/cni/net.d, `.conflist` or `.conf`.
//!
//! Input: the first byte's bit 0 says the file is named `.conflist`; the rest is the file.
//!
//! Contract: never panics; a `.conflist` parses only as a list; what is rendered parses back to
//! the same config and renders to the same bytes (so `--watch` never rewrites a file it already
//! wrote); installing the entry yields a list that holds it once, a second install is a no-op,
//! and uninstalling gives back the original plugins in order.
#![no_main]

use ambit_cni::conflist::{Config, Kind, PLUGIN_TYPE};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

fn entry() -> Map<String, Value> {
    match json!({"type": PLUGIN_TYPE, "enrollSocket": "/var/run/ambit/enroll.sock"}) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// Renders and parses back: the same config, and rendering is a fixpoint.
fn round_trip(config: &Config, list_extension: bool) -> Config {
    let rendered = config.render();
    let again = Config::parse(&rendered, list_extension || config.kind == Kind::List)
        .unwrap_or_else(|e| panic!("rendered config does not parse: {e}"));
    assert_eq!(again.kind, config.kind);
    assert_eq!(again.value, config.value);
    assert_eq!(
        again.render(),
        rendered,
        "rendering is not a fixpoint: the installer would rewrite the file on every pass"
    );
    again
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let list_extension = flags & 1 == 1;
    let Ok(config) = Config::parse(bytes, list_extension) else {
        return;
    };
    if list_extension {
        assert_eq!(config.kind, Kind::List);
    }
    round_trip(&config, list_extension);
    let _ = config.cni_version();
    let original: Vec<String> = config
        .plugin_types()
        .into_iter()
        .filter(|t| *t != PLUGIN_TYPE)
        .map(str::to_owned)
        .collect();

    let entry = entry();
    let installed = match config.with_entry(&entry) {
        Some(installed) => installed,
        None => {
            // Nothing to write: the list already holds exactly this entry, once.
            assert_eq!(config.kind, Kind::List);
            config.clone()
        }
    };
    assert_eq!(installed.kind, Kind::List);
    assert!(installed.has_entry());
    let ours = installed
        .plugin_types()
        .iter()
        .filter(|t| **t == PLUGIN_TYPE)
        .count();
    assert_eq!(ours, 1, "the entry is in the list {ours} times");
    assert!(
        installed.with_entry(&entry).is_none(),
        "a second install changes the file again"
    );
    let installed = round_trip(&installed, true);

    let removed = installed
        .without_entry()
        .expect("installed entry not found");
    assert!(!removed.has_entry());
    assert_eq!(
        removed.plugin_types(),
        original,
        "uninstall changed the other plugins"
    );
    round_trip(&removed, true);
});
