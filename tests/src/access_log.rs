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

    /// The access lines of a ztunnel log (its other lines left out), in order.
    pub fn all_in(log: &str) -> Vec<AccessLine> {
        log.lines()
            .filter(|line| line.contains("access:") && line.contains("connection complete"))
            .map(AccessLine::parse)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_log_lines_fields_parse_and_only_access_lines_are_collected() {
        let log = concat!(
            "2026-12-04T21:59:43Z  INFO ztunnel::pod: pod enrolled: listening on 15001 pod=shop/a view_wait_ms=0.41 listeners_ms=0.73\n",
            "2026-12-04T21:59:44Z  INFO access: connection complete src.addr=10.1.0.2:4000 bytes_sent=12 duration=\"3ms\"\n",
        );
        let enrolled = AccessLine::parse(log.lines().next().unwrap_or_default());
        assert_eq!(enrolled.get("view_wait_ms"), Some("0.41"));
        assert_eq!(enrolled.get("listeners_ms"), Some("0.73"));
        let access = AccessLine::all_in(log);
        assert_eq!(access.len(), 1);
        assert_eq!(access[0].bytes("bytes_sent"), 12);
        assert_eq!(access[0].get("duration"), Some("3ms"));
    }
}
