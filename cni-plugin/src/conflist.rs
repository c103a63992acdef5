//! Editing a CNI network config in memory: parse, add or remove the
//! `ambit-cni` entry, print it back in the file's own style. No I/O here,
//! so every case is a unit test.
//!
//! What is preserved: every key and its order (serde_json `preserve_order`),
//! every other plugin untouched, the file's indentation (tabs, 2 or 4
//! spaces, or a single line) and its trailing newline. So a file printed in
//! the usual style (Go's `json.MarshalIndent`, `jq`) comes back
//! byte-identical after install + uninstall.

use serde_json::{Map, Value};

/// `type` of our entry in a plugin list.
pub const PLUGIN_TYPE: &str = "ambit-cni";

/// What a config file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A conflist: `{"name", "cniVersion", "plugins": [...]}`.
    List,
    /// A single plugin config (`.conf`): `{"name", "cniVersion", "type", …}`.
    Single,
}

/// A parsed config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub kind: Kind,
    pub value: Map<String, Value>,
    style: Style,
}

/// How the file was printed, to print it back the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Style {
    /// `None`: everything on one line.
    indent: Option<Vec<u8>>,
    trailing_newline: bool,
}

impl Style {
    fn of(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let body = text.trim_end();
        let indent = body.contains('\n').then(|| {
            body.lines()
                .skip(1)
                .map(|line| &line[..line.len() - line.trim_start().len()])
                .find(|ws| !ws.is_empty())
                .unwrap_or("  ")
                .as_bytes()
                .to_vec()
        });
        Self {
            indent,
            trailing_newline: text.ends_with('\n'),
        }
    }
}

/// Why a file cannot be used; the caller adds the path.
pub type Invalid = String;

impl Config {
    /// Parses a config file's bytes. `list_extension`: the name ends in
    /// `.conflist`, which must hold a list (libcni refuses anything else);
    /// `.conf` and `.json` files are judged by their content.
    pub fn parse(bytes: &[u8], list_extension: bool) -> Result<Self, Invalid> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(value) = value else {
            return Err("not a JSON object".to_owned());
        };
        let kind = match (value.get("plugins"), value.get("type")) {
            (Some(Value::Array(plugins)), _) => {
                for (i, plugin) in plugins.iter().enumerate() {
                    if plugin.get("type").and_then(Value::as_str).is_none() {
                        return Err(format!("plugins[{i}] has no \"type\" string"));
                    }
                }
                Kind::List
            }
            (Some(_), _) => return Err("\"plugins\" is not an array".to_owned()),
            (None, _) if list_extension => {
                return Err("a .conflist file without a \"plugins\" array".to_owned())
            }
            (None, Some(Value::String(_))) => Kind::Single,
            (None, _) => {
                return Err(
                    "neither a plugin list (\"plugins\") nor a plugin (\"type\")".to_owned(),
                )
            }
        };
        Ok(Self {
            kind,
            value,
            style: Style::of(bytes),
        })
    }

    /// `cniVersion`, if any.
    pub fn cni_version(&self) -> Option<&str> {
        self.value.get("cniVersion").and_then(Value::as_str)
    }

    fn plugins(&self) -> &[Value] {
        match self.value.get("plugins") {
            Some(Value::Array(plugins)) => plugins,
            _ => &[],
        }
    }

    /// Whether the list holds an `ambit-cni` entry.
    pub fn has_entry(&self) -> bool {
        self.plugins().iter().any(is_ours)
    }

    /// The `type`s of the plugins, in order (for logs and tests).
    pub fn plugin_types(&self) -> Vec<&str> {
        match self.kind {
            Kind::Single => self
                .value
                .get("type")
                .and_then(Value::as_str)
                .into_iter()
                .collect(),
            Kind::List => self
                .plugins()
                .iter()
                .filter_map(|p| p.get("type").and_then(Value::as_str))
                .collect(),
        }
    }

    /// This config with `entry` as its `ambit-cni` plugin, or `None` when
    /// it already is exactly that (nothing to write). A single plugin
    /// config becomes a list (its object kept whole as the first plugin,
    /// which libcni accepts: the list's name and version win). An existing
    /// entry is replaced where it stands (an operator may have placed it
    /// before e.g. `bandwidth` on purpose); duplicates are dropped;
    /// otherwise the entry goes last, after the primary CNI's plugins,
    /// whose `prevResult` it needs.
    pub fn with_entry(&self, entry: &Map<String, Value>) -> Option<Self> {
        let entry = Value::Object(entry.clone());
        let mut list = self.as_list();
        let ours: Vec<usize> = (0..list.plugins().len())
            .filter(|&i| is_ours(&list.plugins()[i]))
            .collect();
        if self.kind == Kind::List && ours.len() == 1 && list.plugins()[ours[0]] == entry {
            return None;
        }
        edit_plugins(&mut list.value, |plugins| match ours.split_first() {
            Some((&first, duplicates)) => {
                plugins[first] = entry;
                for &dup in duplicates.iter().rev() {
                    plugins.remove(dup);
                }
            }
            None => plugins.push(entry),
        });
        Some(list)
    }

    /// This config without any `ambit-cni` entry, or `None` if it has none.
    pub fn without_entry(&self) -> Option<Self> {
        if !self.has_entry() {
            return None;
        }
        let mut list = self.clone();
        edit_plugins(&mut list.value, |plugins| plugins.retain(|p| !is_ours(p)));
        Some(list)
    }

    /// A list is itself; a single plugin `P` becomes
    /// `{"cniVersion": P.cniVersion, "name": P.name, "plugins": [P]}`.
    fn as_list(&self) -> Self {
        if self.kind == Kind::List {
            return self.clone();
        }
        let mut list = Map::new();
        for key in ["cniVersion", "name"] {
            if let Some(value) = self.value.get(key) {
                list.insert(key.to_owned(), value.clone());
            }
        }
        list.insert(
            "plugins".to_owned(),
            Value::Array(vec![Value::Object(self.value.clone())]),
        );
        Self {
            kind: Kind::List,
            value: list,
            style: self.style.clone(),
        }
    }

    /// The file's new bytes, in the style it was read in.
    pub fn render(&self) -> Vec<u8> {
        let value = Value::Object(self.value.clone());
        let mut out = Vec::new();
        let written = match &self.style.indent {
            Some(indent) => {
                let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
                let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
                serde::Serialize::serialize(&value, &mut ser)
            }
            None => serde_json::to_writer(&mut out, &value),
        };
        // Serializing a Value into a Vec cannot fail (string keys, no I/O).
        debug_assert!(written.is_ok());
        if self.style.trailing_newline {
            out.push(b'\n');
        }
        out
    }
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// Runs `edit` on the `plugins` array of a list ([`Kind::List`] and
/// [`Config::as_list`] guarantee there is one).
fn edit_plugins(list: &mut Map<String, Value>, edit: impl FnOnce(&mut Vec<Value>)) {
    if let Some(Value::Array(plugins)) = list.get_mut("plugins") {
        edit(plugins);
    }
}
