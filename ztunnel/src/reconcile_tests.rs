//! Decisions of the reconciler, as tables.
#![allow(clippy::unwrap_used)]

use discovery::Workload;

use super::*;

fn pod(uid: &str, node: &str, ambient: bool, ip: Option<&str>) -> Workload {
    Workload {
        uid: uid.to_owned(),
        name: "web-0".to_owned(),
        namespace: "shop".to_owned(),
        node: node.to_owned(),
        service_account: "web".to_owned(),
        ips: ip.map(|ip| ip.parse().unwrap()).into_iter().collect(),
        labels: Default::default(),
        host_network: false,
        ready: true,
        named_ports: Vec::new(),
        probe_ports: Vec::new(),
        use_waypoint: None,
        ambient,
    }
}

#[test]
fn what_a_pass_does_with_each_pod() {
    let running = pod("u-1", "node-a", true, Some("10.1.1.2"));
    let starting = pod("u-1", "node-a", true, None);
    let plain = pod("u-1", "node-a", false, Some("10.1.1.2"));
    let elsewhere = pod("u-1", "node-b", true, Some("10.1.1.2"));
    let reborn = pod("u-2", "node-a", true, Some("10.1.1.2"));
    let hand_written = pod("shop/web-0", "node-a", true, Some("10.1.1.2"));
    let cases: &[(&str, Option<&Workload>, Option<&str>, Action)] = &[
        (
            "running ambient pod not served",
            Some(&running),
            None,
            Action::Enroll,
        ),
        (
            "served already",
            Some(&running),
            Some("u-1"),
            Action::Nothing,
        ),
        (
            "no IP yet: the CNI ADD is under way",
            Some(&starting),
            None,
            Action::Nothing,
        ),
        ("not ambient", Some(&plain), None, Action::Nothing),
        (
            "label removed",
            Some(&plain),
            Some("u-1"),
            Action::Release("the pod is no longer ambient (label removed)"),
        ),
        (
            "gone from the cluster: DEL lost",
            None,
            Some("u-1"),
            Action::Gone,
        ),
        (
            "on another node now",
            Some(&elsewhere),
            Some("u-1"),
            Action::Gone,
        ),
        (
            "another incarnation, same name",
            Some(&reborn),
            Some("u-1"),
            Action::Gone,
        ),
        (
            "manifest without uid",
            Some(&hand_written),
            Some("u-1"),
            Action::Nothing,
        ),
        (
            "pod of another node",
            Some(&elsewhere),
            None,
            Action::Nothing,
        ),
    ];
    for (case, workload, enrolled, expected) in cases {
        assert_eq!(&decide(*workload, *enrolled, "node-a"), expected, "{case}");
    }
}

#[test]
fn a_pod_is_never_found_by_its_ip_alone_when_that_is_ambiguous() {
    let cases: &[(&str, &[u64], Option<u64>, NetnsChoice)] = &[
        ("nothing holds the IP", &[], None, NetnsChoice::NotFound),
        (
            "nothing holds it, recorded",
            &[],
            Some(7),
            NetnsChoice::NotFound,
        ),
        (
            "one holder, no record (label flip)",
            &[7],
            None,
            NetnsChoice::Use(0),
        ),
        (
            "two holders, no record: an impostor",
            &[7, 9],
            None,
            NetnsChoice::Ambiguous,
        ),
        (
            "two holders, one recorded",
            &[9, 7],
            Some(7),
            NetnsChoice::Use(1),
        ),
        (
            "one holder, not the recorded one",
            &[9],
            Some(7),
            NetnsChoice::NotTheRecorded { recorded: 7 },
        ),
    ];
    for (case, found, recorded, expected) in cases {
        assert_eq!(&choose_netns(found, *recorded), expected, "{case}");
    }
}
