//! Which Service a query name can mean, seen from one pod.
//!
//! A pod's resolv.conf (Kubernetes' `ClusterFirst`) has the search path
//! `<ns>.svc.<domain> svc.<domain> <domain>` with `ndots:5`, so the resolver tries a short
//! name with each suffix appended before trying it as is. Like Istio's DNS proxy we answer
//! every spelling that can reach a Service on that path — the FQDN
//! `<svc>.<ns>.svc.<domain>`, and `<svc>.<ns>.svc`, `<svc>.<ns>`, `<svc>` (same namespace)
//! bare or with any search suffix appended — so a short name resolves on the first try
//! instead of after NXDOMAIN round trips to the upstream. A name no Service matches is not
//! ours and goes upstream unchanged.

/// The search path of one pod: its namespace and the cluster domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchPath {
    namespace: String,
    domain: Vec<String>,
    /// `<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`, as labels.
    suffixes: Vec<Vec<String>>,
}

/// A Service a name may refer to: `(namespace, name)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl SearchPath {
    /// `domain` as given on the command line (`cluster.local`, trailing dot optional).
    pub fn new(namespace: &str, domain: &str) -> SearchPath {
        let namespace = namespace.to_ascii_lowercase();
        let domain: Vec<String> = domain
            .split('.')
            .filter(|label| !label.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        let svc_domain: Vec<String> = std::iter::once("svc".to_owned())
            .chain(domain.iter().cloned())
            .collect();
        let ns_svc_domain: Vec<String> = std::iter::once(namespace.clone())
            .chain(svc_domain.iter().cloned())
            .collect();
        SearchPath {
            namespace,
            suffixes: vec![ns_svc_domain, svc_domain, domain.clone()],
            domain,
        }
    }

    /// The Services `labels` (the query name, lower-case, without the root) may mean, most
    /// specific first and without duplicates. Empty when the name cannot be a Service.
    pub fn candidates(&self, labels: &[String]) -> Vec<ServiceRef> {
        let mut forms: Vec<&[String]> = vec![labels];
        for suffix in &self.suffixes {
            if labels.len() > suffix.len() && labels.ends_with(suffix) {
                forms.push(&labels[..labels.len() - suffix.len()]);
            }
        }
        let mut found: Vec<ServiceRef> = Vec::new();
        for form in forms {
            if let Some(candidate) = self.interpret(form) {
                if !found.contains(&candidate) {
                    found.push(candidate);
                }
            }
        }
        found
    }

    /// One spelling of a Service name, once any search suffix is removed.
    fn interpret(&self, form: &[String]) -> Option<ServiceRef> {
        let service = |name: &String, namespace: &String| ServiceRef {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        match form {
            [name, namespace, svc, rest @ ..] if svc == "svc" && rest == self.domain.as_slice() => {
                Some(service(name, namespace))
            }
            [name, namespace, svc] if svc == "svc" => Some(service(name, namespace)),
            [name, namespace] => Some(service(name, namespace)),
            [name] => Some(service(name, &self.namespace)),
            _ => None,
        }
    }
}

/// The labels of a wire-format name, lower-cased (DNS names compare case-insensitively, and
/// resolvers may randomise case), without the root.
pub(crate) fn lower_labels(name: &hickory_proto::rr::Name) -> Vec<String> {
    name.iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Vec<String> {
        name.trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn refs(list: &[(&str, &str)]) -> Vec<ServiceRef> {
        list.iter()
            .map(|(ns, name)| ServiceRef {
                namespace: (*ns).into(),
                name: (*name).into(),
            })
            .collect()
    }

    #[test]
    fn spellings_seen_from_a_pod_in_shop() {
        let path = SearchPath::new("shop", "cluster.local");
        // (query name, services it may mean, most specific first)
        let table: &[(&str, &[(&str, &str)])] = &[
            // The FQDN, and the same name reached through each search suffix.
            ("cart.shop.svc.cluster.local.", &[("shop", "cart")]),
            ("cart.other.svc.cluster.local", &[("other", "cart")]),
            // `cart` + `shop.svc.cluster.local` (first search suffix).
            ("cart.shop.svc.cluster.local", &[("shop", "cart")]),
            // `cart.other` + the first suffix: tried first by the resolver (ndots:5).
            ("cart.other.shop.svc.cluster.local", &[("other", "cart")]),
            // `cart.other.svc` + `shop.svc.cluster.local`.
            (
                "cart.other.svc.shop.svc.cluster.local",
                &[("other", "cart")],
            ),
            // `cart.other` + `cluster.local`.
            ("cart.other.cluster.local", &[("other", "cart")]),
            // Bare spellings (clients that do not use the search path).
            ("cart", &[("shop", "cart")]),
            ("cart.other", &[("other", "cart")]),
            ("cart.other.svc", &[("other", "cart")]),
            // `cart` + `svc.cluster.local`: the pod's own namespace; or `cart.svc` +
            // `cluster.local`, should a namespace be called `svc`.
            (
                "cart.svc.cluster.local",
                &[("shop", "cart"), ("svc", "cart")],
            ),
            // Case does not matter (callers lower-case the labels).
            ("CART.Shop.SVC.Cluster.Local", &[("shop", "cart")]),
            // An external name can only be a Service if such a namespace exists.
            ("example.com", &[("com", "example")]),
            // Not a Service spelling: goes upstream.
            ("www.example.com", &[]),
            ("a.b.c.d.e", &[]),
            // A headless pod's name (`<host>.<svc>.<ns>.svc.<domain>`) also reads as
            // `<svc>.<ns>` + search suffix, as in Istio: it is answered only if Service
            // `pod-0` exists in namespace `cart`, else forwarded.
            ("pod-0.cart.shop.svc.cluster.local.", &[("cart", "pod-0")]),
            ("pod-0.cart.other.svc.cluster.local.", &[]),
            ("_http._tcp.cart.shop.svc.cluster.local", &[]),
            ("cluster.local", &[("local", "cluster")]),
            ("", &[]),
        ];
        for (name, expected) in table {
            let lowered: Vec<String> = labels(name)
                .iter()
                .map(|l| l.to_ascii_lowercase())
                .collect();
            assert_eq!(
                path.candidates(&lowered),
                refs(expected),
                "query name {name:?}"
            );
        }
    }

    #[test]
    fn another_cluster_domain_is_honoured() {
        let path = SearchPath::new("Shop", "corp.example.");
        let name = labels("cart.shop.svc.corp.example");
        assert_eq!(path.candidates(&name), refs(&[("shop", "cart")]));
        // cluster.local is just an external name there.
        let name = labels("cart.shop.svc.cluster.local");
        assert_eq!(path.candidates(&name), refs(&[]));
    }

    #[test]
    fn wire_names_are_lower_cased_without_the_root() {
        let name = hickory_proto::rr::Name::from_ascii("Cart.SHOP.svc.cluster.local.").unwrap();
        assert_eq!(lower_labels(&name), labels("cart.shop.svc.cluster.local"));
    }
}
