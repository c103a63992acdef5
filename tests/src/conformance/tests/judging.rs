//! Judging synthetic `mesh-client` outputs, and the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// What `mesh-client` prints for an echo answer.
fn answer(
    status: u16,
    hostname: &str,
    request_headers: &[(&str, &str)],
    response_headers: &[(&str, &str)],
) -> EchoResponse {
    let mut out = format!("StatusCode={status}\n");
    for (name, value) in response_headers {
        out.push_str(&format!("ResponseHeader={name}:{value}\n"));
    }
    out.push_str("ServiceVersion=v1\nURL=/set\n");
    for (name, value) in request_headers {
        out.push_str(&format!("RequestHeader={name}:{value}\n"));
    }
    if !hostname.is_empty() {
        out.push_str(&format!("Hostname={hostname}\n"));
    }
    EchoResponse::parse(&out)
}

fn case(file_name: &str, index: usize) -> Case {
    file(file_name).cases[index].clone()
}

#[test]
fn an_appended_header_passes_only_as_two_values_and_a_removed_one_must_be_gone() {
    // /add with X-Header-Add: some-other-value → expected "some-other-value,add-appends-values".
    let add = case("MeshHTTPRouteRequestHeaderModifier", 3);
    let pod = "echo-v1-bcd2f45g6h-x2k4q";
    let two_lines = answer(
        200,
        pod,
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value"),
            ("x-header-add", "add-appends-values"),
        ],
        &[],
    );
    assert_eq!(judge(&add, &two_lines), Ok(()));
    let joined_with_space = answer(
        200,
        pod,
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value, add-appends-values"),
        ],
        &[],
    );
    assert!(judge(&add, &joined_with_space)
        .unwrap_err()
        .contains("X-Header-Add"));
    let wrong_pod = answer(
        200,
        "echo-v2-bcd2f45g6h-x2k4q",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value,add-appends-values"),
        ],
        &[],
    );
    assert!(judge(&add, &wrong_pod)
        .unwrap_err()
        .contains("start with echo-v1"));

    let remove = case("MeshHTTPRouteRequestHeaderModifier", 4);
    assert_eq!(
        judge(&remove, &answer(200, pod, &[("User-Agent", "x")], &[])),
        Ok(())
    );
    assert!(judge(
        &remove,
        &answer(200, pod, &[("x-header-remove", "val")], &[])
    )
    .is_err());
    assert!(judge(&remove, &answer(503, "", &[], &[]))
        .unwrap_err()
        .contains("got 503"));
}

#[test]
fn response_headers_use_the_last_value_and_absent_means_none_at_all() {
    let consumer = case("MeshConsumerRoute", 0);
    let pod = "echo-v1-bcd2f45g6h-x2k4q";
    assert_eq!(
        judge(
            &consumer,
            &answer(200, pod, &[], &[("x-header-set", "set")])
        ),
        Ok(())
    );
    assert!(judge(&consumer, &answer(200, pod, &[], &[])).is_err());
    assert_eq!(
        judge(
            &consumer,
            &answer(
                200,
                pod,
                &[],
                &[("X-Header-Set", "old"), ("X-Header-Set", "set")]
            )
        ),
        Ok(())
    );
    let other_namespace = case("MeshConsumerRoute", 1);
    assert!(judge(
        &other_namespace,
        &answer(200, pod, &[], &[("X-Header-Set", "set")])
    )
    .unwrap_err()
    .contains("no response header"));
}

#[test]
fn redirects_pass_on_status_alone_upstream_and_the_location_is_checked_apart() {
    let port = case("MeshHTTPRouteRedirectPort", 1); // /port-and-host → example.org:8083
    let good = EchoResponse::parse(
        "StatusCode=302\nResponseHeader=location:http://example.org:8083/port-and-host\n",
    );
    assert_eq!(judge(&port, &good), Ok(()));
    assert!(
        strict_checks(&port, &good).is_empty(),
        "{:?}",
        strict_checks(&port, &good)
    );
    let wrong_port = EchoResponse::parse(
        "StatusCode=302\nResponseHeader=Location:http://example.org/port-and-host\n",
    );
    assert_eq!(
        judge(&port, &wrong_port),
        Ok(()),
        "upstream does not read Location"
    );
    assert!(strict_checks(&port, &wrong_port)[0].contains("port"));
    assert!(judge(&port, &EchoResponse::parse("StatusCode=301\n")).is_err());

    let scheme = case("MeshHTTPRouteSchemeRedirect", 0); // /scheme → https, host any, port empty or 443
    let https =
        EchoResponse::parse("StatusCode=302\nResponseHeader=Location:https://echo/scheme\n");
    assert!(strict_checks(&scheme, &https).is_empty());
    let https_443 =
        EchoResponse::parse("StatusCode=302\nResponseHeader=Location:https://echo:443/scheme\n");
    assert!(strict_checks(&scheme, &https_443).is_empty());
    let kept_80 =
        EchoResponse::parse("StatusCode=302\nResponseHeader=Location:https://echo:80/scheme\n");
    assert!(strict_checks(&scheme, &kept_80)[0].contains("port"));

    // A rewrite's path is checked apart too.
    let rewrite = case("MeshHTTPRouteRewritePath", 0); // /prefix/one/two → /one/two
    let answered =
        EchoResponse::parse("StatusCode=200\nURL=/prefix/one/two\nHostname=echo-v1-a-b\n");
    assert_eq!(judge(&rewrite, &answered), Ok(()));
    assert!(strict_checks(&rewrite, &answered)[0].contains("/one/two"));
}

#[test]
fn a_weighted_sample_passes_within_the_tolerance_and_fails_outside_it() {
    let weight = case("MeshHTTPRouteWeight", 0);
    let expected = weight.expect.distribution.clone().unwrap();
    let sample = |v1: u32, v2: u32, extra: &str| {
        Summary::parse(&format!(
            "Summary requests={} errors=0 statuses=200:{} hostnames=echo-v1-bcd2f45g6h-x2k4q:{v1},echo-v2-zz4f45g6h2-q2k4x:{v2}{extra}\n",
            v1 + v2, v1 + v2
        ))
        .unwrap()
    };
    assert_eq!(
        judge_distribution(&expected, 0.05, &sample(350, 150, "")),
        Ok(())
    );
    assert_eq!(
        judge_distribution(&expected, 0.05, &sample(330, 170, "")),
        Ok(())
    );
    assert!(judge_distribution(&expected, 0.05, &sample(300, 200, ""))
        .unwrap_err()
        .contains("echo-v1"));
    assert!(judge_distribution(&expected, 0.05, &sample(500, 0, ""))
        .unwrap_err()
        .contains("never answered"));
    let mut stray = sample(350, 140, "");
    stray
        .hostnames
        .insert("echo-v3-bcd2f45g6h-x2k4q".into(), 10);
    stray.requests = 500;
    assert!(judge_distribution(&expected, 0.05, &stray)
        .unwrap_err()
        .contains("echo-v3"));
    let failed = Summary::parse(
        "Summary requests=500 errors=3 statuses=200:497 hostnames=\nFirstError=connect refused\n",
    )
    .unwrap();
    assert!(judge_distribution(&expected, 0.05, &failed)
        .unwrap_err()
        .contains("connect refused"));
    // The gRPC case's zero-weight echo-v3 has no Service at all: never seen is right.
    let grpc = case("MeshGRPCRouteWeight", 0);
    assert_eq!(
        judge_distribution(
            &grpc.expect.distribution.unwrap(),
            0.05,
            &sample(340, 160, "")
        ),
        Ok(())
    );
}

#[test]
fn the_report_counts_tests_and_cases_per_feature_and_lists_profile_failures() {
    let passed = CaseResult {
        label: "a".into(),
        passed: true,
        reason: None,
        strict: vec!["path at backend: x".into()],
        attempts: 3,
    };
    let failed = CaseResult {
        label: "b".into(),
        passed: false,
        reason: Some("got 404".into()),
        strict: vec![],
        attempts: 9,
    };
    let report = Report {
        tests: vec![
            TestResult {
                name: "MeshBasic".into(),
                features: vec!["Mesh".into()],
                profiles: vec!["MESH-HTTP".into(), "MESH-GRPC".into()],
                provisional: false,
                setup_error: None,
                cases: vec![passed.clone()],
            },
            TestResult {
                name: "MeshPorts".into(),
                features: vec!["Mesh".into(), "HTTPRouteParentRefPort".into()],
                profiles: vec![],
                provisional: false,
                setup_error: None,
                cases: vec![passed, failed],
            },
        ],
    };
    let mesh = report.by_feature()["Mesh"];
    assert_eq!(
        (mesh.tests_passed, mesh.tests, mesh.cases_passed, mesh.cases),
        (1, 2, 2, 3)
    );
    assert!(
        report.failures_in(&["MESH-HTTP"]).is_empty(),
        "MeshPorts is in no profile"
    );
    let text = report.render();
    assert!(
        text.contains("FAIL MeshPorts") && text.contains("b: got 404"),
        "{text}"
    );
    assert!(
        text.contains("profile MESH-HTTP: 1/1") && text.contains("total: 1/2 tests, 2/3 cases"),
        "{text}"
    );
    assert!(text.contains("MeshBasic / a: path at backend"), "{text}");
}
