#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const CONF: &str = r#"{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni",
    "prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"}]}}"#;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn add_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
        ),
    ]
}

fn with(
    mut base: Vec<(&'static str, &'static str)>,
    key: &'static str,
    value: Option<&'static str>,
) -> HashMap<String, String> {
    base.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        base.push((key, v));
    }
    env(&base)
}

/// Replaces (or with `None` removes) a top-level key of [`CONF`].
fn conf_with(key: &str, value: Option<Value>) -> Vec<u8> {
    let mut conf: Value = serde_json::from_str(CONF).unwrap();
    let map = conf.as_object_mut().unwrap();
    match value {
        Some(v) => map.insert(key.to_owned(), v),
        None => map.remove(key),
    };
    conf.to_string().into_bytes()
}

#[test]
fn every_env_error_has_code_4_and_names_the_variable() {
    let cases: Vec<(HashMap<String, String>, &str)> = vec![
        (
            with(add_env(), "CNI_COMMAND", None),
            "CNI_COMMAND is not set",
        ),
        (
            with(add_env(), "CNI_COMMAND", Some("")),
            "CNI_COMMAND is not set",
        ),
        (
            with(add_env(), "CNI_COMMAND", Some("FROB")),
            "CNI_COMMAND \"FROB\"",
        ),
        (
            with(add_env(), "CNI_CONTAINERID", None),
            "CNI_CONTAINERID is not set",
        ),
        (
            with(add_env(), "CNI_CONTAINERID", Some("../etc")),
            "not a valid container id",
        ),
        (
            with(add_env(), "CNI_CONTAINERID", Some("-x")),
            "not a valid container id",
        ),
        (
            with(add_env(), "CNI_NETNS", None),
            "CNI_NETNS is not set (required for ADD)",
        ),
        (with(add_env(), "CNI_IFNAME", None), "CNI_IFNAME is not set"),
        (
            with(add_env(), "CNI_ARGS", Some("K8S_POD_NAME")),
            "\"K8S_POD_NAME\" is not KEY=VALUE",
        ),
        (with(add_env(), "CNI_ARGS", Some("=x")), "empty key"),
    ];
    for (env, expected) in cases {
        let err = parse(&env, CONF.as_bytes()).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV, "{expected}: {err}");
        assert!(
            err.msg.contains(expected),
            "{expected:?} not in {:?}",
            err.msg
        );
    }
    let mut check = add_env();
    check[0] = ("CNI_COMMAND", "CHECK");
    let err = parse(&with(check, "CNI_NETNS", None), CONF.as_bytes()).unwrap_err();
    assert!(err.msg.contains("required for CHECK"), "{err}");
}

#[test]
fn every_config_error_has_its_code_and_names_the_problem() {
    let cases: Vec<(Vec<u8>, u32, &str)> = vec![
        (
            b"".to_vec(),
            code::DECODE_FAILURE,
            "no network config on stdin",
        ),
        (
            b"  \n".to_vec(),
            code::DECODE_FAILURE,
            "no network config on stdin",
        ),
        (b"{nope".to_vec(), code::DECODE_FAILURE, "not JSON"),
        (b"[1,2]".to_vec(), code::DECODE_FAILURE, "not a JSON object"),
        (
            conf_with("cniVersion", None),
            code::INVALID_CONFIG,
            "no cniVersion",
        ),
        (
            conf_with("cniVersion", Some("9.9.9".into())),
            code::INCOMPATIBLE_VERSION,
            "\"9.9.9\"",
        ),
        (
            conf_with("cniVersion", Some(5.into())),
            code::INVALID_CONFIG,
            "at cniVersion",
        ),
        (conf_with("name", None), code::INVALID_CONFIG, "no name"),
        (
            conf_with("logLevel", Some("loud".into())),
            code::INVALID_CONFIG,
            "logLevel \"loud\"",
        ),
        (
            conf_with("logLevel", Some(3.into())),
            code::INVALID_CONFIG,
            "at logLevel",
        ),
        (
            conf_with("enrollSocket", Some(true.into())),
            code::INVALID_CONFIG,
            "at enrollSocket",
        ),
        (
            conf_with("enrollTimeoutMs", Some(0.into())),
            code::INVALID_CONFIG,
            "enrollTimeoutMs 0",
        ),
        (
            conf_with("enrollTimeoutMs", Some((-5).into())),
            code::INVALID_CONFIG,
            "at enrollTimeoutMs",
        ),
        (
            conf_with("probeSourceIp", Some("node".into())),
            code::INVALID_CONFIG,
            "probeSourceIp \"node\"",
        ),
        (
            conf_with("rulesBackend", Some("ipchains".into())),
            code::INVALID_CONFIG,
            "rulesBackend: rules backend \"ipchains\" is not one of",
        ),
        (
            conf_with("rulesBackend", Some(1.into())),
            code::INVALID_CONFIG,
            "at rulesBackend",
        ),
        (
            conf_with("prevResult", Some("x".into())),
            code::INVALID_CONFIG,
            "prevResult is not a JSON object",
        ),
        (
            // Regression (fuzz/cni): the result would have carried a non-string cniVersion.
            conf_with(
                "prevResult",
                Some(serde_json::json!({"cniVersion": ["1.0.0"]})),
            ),
            code::INVALID_CONFIG,
            "prevResult.cniVersion [\"1.0.0\"] is not a string",
        ),
        (
            conf_with("prevResult", None),
            code::INVALID_CONFIG,
            "chained plugin",
        ),
    ];
    for (stdin, want_code, expected) in cases {
        let err = parse(&env(&add_env()), &stdin).unwrap_err();
        assert_eq!(err.code, want_code, "{expected}: {err}");
        assert!(
            err.msg.contains(expected),
            "{expected:?} not in {:?}",
            err.msg
        );
        assert!(!err.details.is_empty(), "{expected}: no hint");
    }
}

#[test]
fn check_needs_0_4_0() {
    let mut check = add_env();
    check[0] = ("CNI_COMMAND", "CHECK");
    let err = parse(&env(&check), &conf_with("cniVersion", Some("0.3.1".into()))).unwrap_err();
    assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
    parse(&env(&check), &conf_with("cniVersion", Some("0.4.0".into()))).unwrap();
}

#[test]
fn add_parses_pod_and_defaults() {
    let Request::Add(call) = parse(&env(&add_env()), CONF.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(call.container_id, "abc123");
    assert_eq!(
        call.netns.as_deref(),
        Some(std::path::Path::new("/var/run/netns/x"))
    );
    assert_eq!(call.ifname, "eth0");
    let pod = call.pod.unwrap();
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str()),
        ("shop", "web-0", "u-1")
    );
    let conf = call.config;
    assert_eq!(
        conf.enroll_socket,
        PathBuf::from("/var/run/ambit/enroll.sock")
    );
    assert_eq!(conf.enroll_timeout, Duration::from_secs(10));
    assert_eq!(conf.log_level, tracing::Level::INFO);
    // Never the gateway in prevResult (10.1.0.1): host-network pods come from there too.
    assert_eq!(
        probe_sources(&conf),
        vec![
            "169.254.7.127".parse::<IpAddr>().unwrap(),
            "fd16:9254:7127:1337:ffff:ffff:ffff:ffff".parse().unwrap()
        ]
    );
}

#[test]
fn optional_fields_are_read() {
    let stdin = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "prevResult": {},
        "enrollSocket": "/tmp/e.sock", "enrollTimeoutMs": 250, "logLevel": "debug",
        "logFile": "/tmp/l", "probeSourceIp": "fd00::7", "nftPath": "/bin/nft", "unknownKey": 1,
        "rulesBackend": "iptables"});
    let conf = parse_config(stdin.to_string().as_bytes()).unwrap();
    assert_eq!(conf.enroll_socket, PathBuf::from("/tmp/e.sock"));
    assert_eq!(conf.enroll_timeout, Duration::from_millis(250));
    assert_eq!(conf.log_level, tracing::Level::DEBUG);
    assert_eq!(conf.log_file, Some(PathBuf::from("/tmp/l")));
    assert_eq!(conf.nft_path, Some(PathBuf::from("/bin/nft")));
    assert_eq!(conf.rules_backend, BackendChoice::Iptables);
    assert_eq!(
        probe_sources(&conf),
        vec!["fd00::7".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn cni_args_without_pod_or_uid() {
    let call =
        |args: &'static str| match parse(&with(add_env(), "CNI_ARGS", Some(args)), CONF.as_bytes())
            .unwrap()
        {
            Request::Add(call) => call,
            other => panic!("{other:?}"),
        };
    assert_eq!(call("").pod, None);
    assert_eq!(call("K8S_POD_NAME=web-0").pod, None, "namespace missing");
    assert_eq!(call("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=").pod, None);
    let pod = call("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;;")
        .pod
        .unwrap();
    assert_eq!(
        pod.uid, "abc123",
        "container id stands in for a missing uid"
    );
}

#[test]
fn del_is_lenient_about_netns_and_prev_result() {
    let mut del = add_env();
    del[0] = ("CNI_COMMAND", "DEL");
    let request = parse(
        &with(del, "CNI_NETNS", None),
        &conf_with("prevResult", None),
    )
    .unwrap();
    assert!(matches!(request, Request::Del(PodCall { netns: None, .. })));
}

#[test]
fn version_status_and_gc() {
    // VERSION needs nothing but the command.
    assert_eq!(
        parse(&env(&[("CNI_COMMAND", "VERSION")]), b"garbage").unwrap(),
        Request::Version
    );
    let version: Value = serde_json::from_str(&version_json()).unwrap();
    assert_eq!(version["cniVersion"], "1.1.0");
    let supported = version["supportedVersions"].as_array().unwrap();
    assert!(supported.contains(&"1.0.0".into()) && supported.contains(&"1.1.0".into()));

    assert!(matches!(
        parse(&env(&[("CNI_COMMAND", "STATUS")]), CONF.as_bytes()),
        Ok(Request::Status(_))
    ));
    assert!(matches!(
        parse(&env(&[("CNI_COMMAND", "GC")]), CONF.as_bytes()),
        Ok(Request::Gc(_))
    ));
    let err = parse(&env(&[("CNI_COMMAND", "STATUS")]), b"").unwrap_err();
    assert_eq!(err.code, code::DECODE_FAILURE);
}

#[test]
fn outputs() {
    let conf = parse_config(CONF.as_bytes()).unwrap();
    let out: Value = serde_json::from_str(&pass_through(&conf)).unwrap();
    assert_eq!(
        Some(&out),
        conf.prev_result.as_ref(),
        "prevResult unchanged"
    );

    let bare =
        parse_config(br#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[]}}"#).unwrap();
    let out: Value = serde_json::from_str(&pass_through(&bare)).unwrap();
    assert_eq!(out["cniVersion"], "1.0.0");
    assert_eq!(
        probe_sources(&bare),
        capture::rules::probes::probe_sources()
    );

    let err = CniError::new(11, "ztunnel down", "start it");
    let json: Value = serde_json::from_str(&err.to_json("1.0.0")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"cniVersion": "1.0.0", "code": 11, "msg": "ztunnel down", "details": "start it"})
    );

    assert_eq!(version_for_errors(CONF.as_bytes()), "1.0.0");
    assert_eq!(version_for_errors(br#"{"cniVersion":"7.0.0"}"#), "1.1.0");
    assert_eq!(version_for_errors(b"junk"), "1.1.0");
}
