//! The `/config_dump` view of a [`RouteTable`]: per Service port and audience, the matches in
//! the order a request tries them, each with the rule it leads to (filters, backends and why a
//! backend or filter cannot be used).

use serde::Serialize;

use super::port_routes::{EntryDump, PortRoutes};
use super::table::RouteTable;

/// Everything the table holds, sorted (services by namespace/name, then port, then audience).
#[derive(Debug, Serialize)]
pub struct RouteTableDump<'a> {
    pub rules: usize,
    pub ports: Vec<PortDump<'a>>,
}

/// The routes one audience gets on one Service port.
#[derive(Debug, Serialize)]
pub struct PortDump<'a> {
    /// `namespace/name`.
    pub service: String,
    pub port: u16,
    /// `None`: every client (producer routes); else the consumer namespace they are for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_namespace: Option<&'a str>,
    entries: Vec<EntryDump<'a>>,
}

impl RouteTable {
    pub fn dump(&self) -> RouteTableDump<'_> {
        let mut services: Vec<_> = self.services.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        let mut ports = Vec::new();
        for (service, entries) in services {
            for entry in entries {
                let audiences = entry.producer.iter().map(|routes| (None, routes)).chain(
                    entry
                        .consumers
                        .iter()
                        .map(|(ns, routes)| (Some(ns.as_str()), routes)),
                );
                for (client_namespace, routes) in audiences {
                    ports.push(port_dump(
                        service.to_string(),
                        entry.port,
                        client_namespace,
                        routes,
                    ));
                }
            }
        }
        RouteTableDump {
            rules: self.route_count(),
            ports,
        }
    }
}

fn port_dump<'a>(
    service: String,
    port: u16,
    client_namespace: Option<&'a str>,
    routes: &'a PortRoutes,
) -> PortDump<'a> {
    PortDump {
        service,
        port,
        client_namespace,
        entries: routes.dump(),
    }
}

impl Serialize for RouteTable {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.dump().serialize(serializer)
    }
}
