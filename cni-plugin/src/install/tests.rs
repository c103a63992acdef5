#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Map, Value};

use super::conflist::{Config, Kind};

const CALICO: &str = include_str!("../../tests/conflists/10-calico.conflist");
const FLANNEL: &str = include_str!("../../tests/conflists/10-flannel.conflist");
const CONTAINERD: &str = include_str!("../../tests/conflists/10-containerd-net.conflist");
const SINGLE: &str = include_str!("../../tests/conflists/10-mynet.conf");

fn entry(socket: &str) -> Map<String, Value> {
    let Value::Object(map) = json!({"type": "ambit-cni", "enrollSocket": socket}) else {
        unreachable!()
    };
    map
}

fn keys(value: &Map<String, Value>) -> Vec<&str> {
    value.keys().map(String::as_str).collect()
}

#[test]
fn entry_goes_last_and_everything_else_stays() {
    let config = Config::parse(CALICO.as_bytes(), true).unwrap();
    assert_eq!(config.kind, Kind::List);
    let new = config.with_entry(&entry("/run/e.sock")).unwrap();
    assert_eq!(
        new.plugin_types(),
        ["calico", "bandwidth", "portmap", "ambit-cni"]
    );
    // Key order of the file and of each plugin is kept (not sorted).
    assert_eq!(keys(&new.value), ["name", "cniVersion", "plugins"]);
    let calico = new.value["plugins"][0].as_object().unwrap();
    assert_eq!(keys(calico)[..3], ["type", "log_level", "log_file_path"]);
    assert_eq!(
        new.value["plugins"][3],
        json!({"type": "ambit-cni", "enrollSocket": "/run/e.sock"})
    );
}

#[test]
fn install_then_uninstall_gives_back_the_same_bytes() {
    for original in [CALICO, FLANNEL] {
        let config = Config::parse(original.as_bytes(), true).unwrap();
        let installed = config.with_entry(&entry("/s")).unwrap().render();
        let reread = Config::parse(&installed, true).unwrap();
        assert!(reread.has_entry());
        // Already right: nothing to do.
        assert_eq!(reread.with_entry(&entry("/s")), None);
        let removed = reread.without_entry().unwrap().render();
        assert_eq!(String::from_utf8(removed).unwrap(), original);
        assert_eq!(config.without_entry(), None);
    }
}

#[test]
fn numbers_of_other_plugins_survive_a_rewrite_exactly() {
    // Regression (fuzz/conflist): this 129-digit number was read as 1.999999999999999e128 and
    // written back as such, which reads as 1.9999999999999994e128: every rewrite changed it.
    let big = format!("19999999999999991{}", "9".repeat(112));
    let original = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","plugins":[{{"type":"bridge","mtu":{big},"x":0.30000000000000004}}]}}"#
    );
    let config = Config::parse(original.as_bytes(), true).unwrap();
    let rendered = config.render();
    assert_eq!(Config::parse(&rendered, true).unwrap(), config);
    let installed = config.with_entry(&entry("/s")).unwrap();
    let uninstalled = installed.without_entry().unwrap();
    assert_eq!(uninstalled.value, config.value);
    assert_eq!(uninstalled.render(), rendered);
}

#[test]
fn style_follows_the_file() {
    let tabs = Config::parse(FLANNEL.as_bytes(), true).unwrap();
    let out = String::from_utf8(tabs.with_entry(&entry("/s")).unwrap().render()).unwrap();
    assert!(
        out.contains("\n\t\t{\n\t\t\t\"type\": \"ambit-cni\""),
        "{out}"
    );
    assert!(out.ends_with("}\n"));

    let compact = br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]}"#;
    let config = Config::parse(compact, true).unwrap();
    let out = config.with_entry(&entry("/s")).unwrap().render();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"ambit-cni","enrollSocket":"/s"}]}"#
    );

    // Hand-formatted files come back pretty-printed with their indent.
    let config = Config::parse(CONTAINERD.as_bytes(), true).unwrap();
    let out = String::from_utf8(config.with_entry(&entry("/s")).unwrap().render()).unwrap();
    assert!(
        out.starts_with("{\n  \"cniVersion\": \"1.0.0\",\n"),
        "{out}"
    );
}

#[test]
fn existing_entry_is_replaced_in_place_and_duplicates_dropped() {
    let text = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "bridge"},
        {"type": "ambit-cni", "enrollSocket": "/old", "logLevel": "debug"},
        {"type": "portmap"},
        {"type": "ambit-cni"},
    ]})
    .to_string();
    let config = Config::parse(text.as_bytes(), true).unwrap();
    let new = config.with_entry(&entry("/new")).unwrap();
    assert_eq!(new.plugin_types(), ["bridge", "ambit-cni", "portmap"]);
    assert_eq!(
        new.value["plugins"][1],
        json!({"type": "ambit-cni", "enrollSocket": "/new"})
    );
    // A duplicate alone is reason enough to rewrite.
    let text = json!({"plugins": [{"type": "ambit-cni"}, {"type": "ambit-cni"}]}).to_string();
    let config = Config::parse(text.as_bytes(), true).unwrap();
    let mut only_type = Map::new();
    only_type.insert("type".into(), "ambit-cni".into());
    let new = config.with_entry(&only_type).unwrap();
    assert_eq!(new.plugin_types(), ["ambit-cni"]);
}

#[test]
fn single_plugin_config_becomes_a_list() {
    let config = Config::parse(SINGLE.as_bytes(), false).unwrap();
    assert_eq!(config.kind, Kind::Single);
    assert_eq!(config.cni_version(), Some("0.4.0"));
    let new = config.with_entry(&entry("/s")).unwrap();
    assert_eq!(new.kind, Kind::List);
    assert_eq!(keys(&new.value), ["cniVersion", "name", "plugins"]);
    assert_eq!(new.value["cniVersion"], "0.4.0");
    assert_eq!(new.value["name"], "mynet");
    assert_eq!(new.plugin_types(), ["bridge", "ambit-cni"]);
    // The original object is the first plugin, unchanged.
    let original: Value = serde_json::from_str(SINGLE).unwrap();
    assert_eq!(new.value["plugins"][0], original);
    let out = String::from_utf8(new.render()).unwrap();
    assert!(out.starts_with("{\n    \"cniVersion\""), "{out}");
    // Uninstalling leaves the list with just the original plugin.
    let back = new.without_entry().unwrap();
    assert_eq!(back.plugin_types(), ["bridge"]);
}

#[test]
fn unusable_files_are_named_errors() {
    let cases: [(&[u8], bool, &str); 8] = [
        (b"{not json", true, "not valid JSON"),
        (b"", false, "not valid JSON"),
        (b"[1, 2]", false, "not a JSON object"),
        (br#"{"plugins": {}}"#, true, "\"plugins\" is not an array"),
        (
            br#"{"plugins": [{"type": "a"}, {"name": "b"}]}"#,
            true,
            "plugins[1] has no \"type\"",
        ),
        (br#"{"plugins": ["x"]}"#, true, "plugins[0]"),
        (
            br#"{"type": "bridge"}"#,
            true,
            ".conflist file without a \"plugins\" array",
        ),
        (br#"{"name": "n"}"#, false, "neither a plugin list"),
    ];
    for (bytes, list_ext, expected) in cases {
        let err = Config::parse(bytes, list_ext).unwrap_err();
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
    }
    // A list in a .conf or .json file is read by its content.
    let list = Config::parse(br#"{"plugins": [{"type": "a"}]}"#, false).unwrap();
    assert_eq!(list.kind, Kind::List);
}
