//! ztunnel's access log as the scenarios read it: one `connection complete` line per
//! connection, split into its `key=value` fields (DESIGN §3).

/// One access-log line, split into its `key=value` fields (quotes removed).
#[derive(Debug, Clone, Default)]
pub struct AccessLine {
    pub raw: String,
    fields: Vec<(String, String)>,
}

impl AccessLine {
    pub fn parse(line: &str) -> AccessLine {
        let mut fields = Vec::new();
        let mut rest = line;
        while let Some(eq) = rest.find('=') {
            let key_start = rest[..eq].rfind(' ').map_or(0, |i| i + 1);
            let key = rest[key_start..eq].to_string();
            let after = &rest[eq + 1..];
            let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (
                    quoted[..end].to_string(),
                    quoted.get(end + 1..).unwrap_or(""),
                )
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            };
            fields.push((key, value));
            rest = remaining;
        }
        AccessLine {
            raw: line.to_string(),
            fields,
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn bytes(&self, key: &str) -> u64 {
        self.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}
