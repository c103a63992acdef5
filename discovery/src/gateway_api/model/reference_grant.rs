//! A ReferenceGrant: lets objects of some kinds in other namespaces refer to objects here.

use serde::Serialize;

use super::Rejection;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrant {
    /// Where the referenced objects live.
    pub namespace: String,
    pub name: String,
    /// Empty when `rejected`: a grant that cannot be read grants nothing.
    pub from: Vec<GrantFrom>,
    pub to: Vec<GrantTo>,
    pub rejected: Option<Rejection>,
}

/// Who may refer: objects of this group and kind in this namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

/// What they may refer to: objects of this group and kind here, one of them when `name` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantTo {
    pub group: String,
    pub kind: String,
    pub name: Option<String>,
}

impl ReferenceGrant {
    /// Whether an object of `from_group`/`from_kind` in `from_namespace` may refer to the object
    /// `to_group`/`to_kind`/`to_name` in this grant's namespace.
    pub fn permits(
        &self,
        (from_group, from_kind, from_namespace): (&str, &str, &str),
        (to_group, to_kind, to_name): (&str, &str, &str),
    ) -> bool {
        self.rejected.is_none()
            && self.from.iter().any(|f| {
                f.group == from_group && f.kind == from_kind && f.namespace == from_namespace
            })
            && self.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|name| name == to_name)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(to_name: Option<&str>) -> ReferenceGrant {
        ReferenceGrant {
            namespace: "backends".into(),
            name: "g".into(),
            from: vec![GrantFrom {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                namespace: "shop".into(),
            }],
            to: vec![GrantTo {
                group: String::new(),
                kind: "Service".into(),
                name: to_name.map(Into::into),
            }],
            rejected: None,
        }
    }

    #[test]
    fn a_grant_permits_exactly_what_it_lists() {
        let route = ("gateway.networking.k8s.io", "HTTPRoute", "shop");
        let any = grant(None);
        assert!(any.permits(route, ("", "Service", "cart")));
        assert!(!any.permits(
            ("gateway.networking.k8s.io", "TCPRoute", "shop"),
            ("", "Service", "cart")
        ));
        assert!(!any.permits(
            ("gateway.networking.k8s.io", "HTTPRoute", "other"),
            ("", "Service", "cart")
        ));
        assert!(!any.permits(route, ("", "Secret", "cart")));
        let named = grant(Some("cart"));
        assert!(named.permits(route, ("", "Service", "cart")));
        assert!(!named.permits(route, ("", "Service", "billing")));
        let mut rejected = grant(None);
        rejected.rejected = Some(Rejection { problems: vec![] });
        assert!(!rejected.permits(route, ("", "Service", "cart")));
    }
}
