//! Compiling discovery's filters: what cannot be applied becomes `Unsupported` with a reason.

use discovery::gateway_api::{
    GrpcFilter, HttpFilter, LocalObjectRef, Mirror, MirrorFraction, UrlRewrite,
};

use super::*;

#[test]
fn filters_that_cannot_be_applied_say_why() {
    let extension = LocalObjectRef {
        group: "example.com".into(),
        kind: "Magic".into(),
        name: "m".into(),
    };
    let cases = [
        (
            HttpFilter::ExtensionRef(extension.clone()),
            "extensionRef example.com/Magic \"m\" is not implemented by Ambit",
        ),
        (
            HttpFilter::Unsupported {
                filter_type: "ExternalAuth".into(),
            },
            "filter type ExternalAuth is not implemented by Ambit",
        ),
        (
            HttpFilter::UrlRewrite(UrlRewrite {
                hostname: Some("bad host".into()),
                path: None,
            }),
            "URLRewrite: hostname \"bad host\" cannot be used in a URL",
        ),
    ];
    for (filter, want) in cases {
        match Filter::from_http(&filter, &mut resolve_as_written) {
            Filter::Unsupported(why) => assert!(why.starts_with(want), "{why}"),
            other => panic!("{filter:?} compiled to {other:?}"),
        }
    }
    let grpc = Filter::from_grpc(
        &GrpcFilter::ExtensionRef(extension),
        &mut resolve_as_written,
    );
    assert!(matches!(grpc, Filter::Unsupported(_)));
}

#[test]
fn compiled_filters_keep_their_order_and_type() {
    let mirror = Mirror {
        backend: BackendRef {
            group: String::new(),
            kind: "Service".into(),
            namespace: "shop".into(),
            name: "shadow".into(),
            port: Some(80),
            weight: 1,
        },
        fraction: MirrorFraction {
            numerator: 1,
            denominator: 3,
        },
    };
    let list = [
        HttpFilter::RequestMirror(mirror),
        HttpFilter::ResponseHeaderModifier(modifier(&[("x", "1")], &[], &[])),
        HttpFilter::Cors(cors_spec(&["*"], false, &[], &[])),
    ];
    let compiled = compile_http(&list, &mut resolve_as_written);
    let types: Vec<&str> = compiled.iter().map(Filter::type_name).collect();
    assert_eq!(types, ["RequestMirror", "ResponseHeaderModifier", "CORS"]);
    let Filter::Mirror(mirror) = &compiled[0] else {
        panic!()
    };
    let sampled: Vec<bool> = (0..6).map(|r| mirror.should_mirror(r)).collect();
    assert_eq!(sampled, [true, false, false, true, false, false], "1 in 3");
    let dump = serde_json::to_value(&compiled).unwrap();
    assert_eq!(dump[0]["mirror"]["target"]["service"], "shop/shadow");
}
