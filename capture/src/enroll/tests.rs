#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use prost::Message;
use socket2::{Domain, Socket, Type};

use super::proto::{self, request, Ack, AckStatus};
use super::*;
use crate::testing::TestNetns;

const TIMEOUT: Duration = Duration::from_secs(5);

fn pod(uid: &str) -> PodRef {
    PodRef {
        uid: uid.into(),
        name: "web-0".into(),
        namespace: "shop".into(),
    }
}

/// A raw client socket and the server side, to send arbitrary datagrams.
fn raw_pair() -> (Socket, EnrollConnection) {
    let (client, server) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    (client, EnrollConnection::new(server).unwrap())
}

fn read_ack(socket: &Socket) -> Ack {
    let dgram = wire::recv_datagram(socket.as_fd(), proto::MAX_MESSAGE_BYTES)
        .unwrap()
        .expect("server closed");
    Ack::decode(dgram.bytes.as_slice()).unwrap()
}

fn request_bytes(version: u32, kind: Option<request::Kind>) -> Vec<u8> {
    proto::Request { version, kind }.encode_to_vec()
}

fn add_kind(uid: &str) -> request::Kind {
    request::Kind::AddPod(proto::AddPod {
        uid: uid.into(),
        name: "web-0".into(),
        namespace: "shop".into(),
    })
}

fn delete_kind(uid: &str) -> request::Kind {
    request::Kind::DeletePod(proto::DeletePod { uid: uid.into() })
}

#[tokio::test]
async fn add_pod_hands_over_the_same_netns_over_a_socket_file() {
    let pod_ns = TestNetns::new("enr");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enroll.sock");
    let listener = EnrollListener::bind(&path).unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(serve(listener, move |req| {
        let seen_tx = seen_tx.clone();
        async move {
            let reply = match &req {
                EnrollRequest::Add { pod, .. } if pod.namespace == "plain" => Reply::NotAmbient,
                EnrollRequest::Add { pod, .. } if pod.uid == "bad" => {
                    Reply::Error("no such pod".into())
                }
                EnrollRequest::Add { .. } => Reply::Enrolled { capture_dns: true },
                _ => Reply::Done,
            };
            let _ = seen_tx.send(req);
            reply
        }
    }));

    let expected_inode = pod_ns.netns().inode();
    let netns = pod_ns.netns().try_clone().unwrap();
    let outcomes = tokio::task::spawn_blocking(move || {
        let client = EnrollClient::connect(&path, TIMEOUT).unwrap();
        let enrolled = client.add_pod(&pod("u1"), &netns).unwrap();
        let plain = client
            .add_pod(
                &PodRef {
                    namespace: "plain".into(),
                    ..pod("u2")
                },
                &netns,
            )
            .unwrap();
        let refused = client.add_pod(&pod("bad"), &netns).unwrap_err();
        client.delete_pod("u1").unwrap();
        client.snapshot_done().unwrap();
        (enrolled, plain, refused)
    })
    .await
    .unwrap();

    assert_eq!(outcomes.0, AddOutcome::Enrolled { capture_dns: true });
    assert_eq!(outcomes.1, AddOutcome::NotAmbient);
    assert!(matches!(&outcomes.2, EnrollError::Refused { message } if message == "no such pod"));
    assert!(!outcomes.2.is_unreachable());

    match seen_rx.recv().await.unwrap() {
        EnrollRequest::Add { pod: got, netns } => {
            assert_eq!(got, pod("u1"));
            assert_eq!(
                netns.inode(),
                expected_inode,
                "received fd is another netns"
            );
            assert_ne!(netns.id(), NetNs::current().unwrap().id());
        }
        other => panic!("expected Add, got {other:?}"),
    }
    assert!(matches!(
        seen_rx.recv().await.unwrap(),
        EnrollRequest::Add { .. }
    ));
    assert!(matches!(
        seen_rx.recv().await.unwrap(),
        EnrollRequest::Add { .. }
    ));
    assert!(matches!(seen_rx.recv().await.unwrap(), EnrollRequest::Delete { uid } if uid == "u1"));
    assert!(matches!(
        seen_rx.recv().await.unwrap(),
        EnrollRequest::SnapshotDone
    ));
}

#[tokio::test]
async fn malformed_datagrams_get_error_acks_and_the_connection_survives() {
    let netns_fd = || OwnedFd::from(std::fs::File::open("/proc/self/ns/net").unwrap());
    let regular_fd = || OwnedFd::from(tempfile::tempfile().unwrap());
    let big = vec![0x0a_u8; proto::MAX_MESSAGE_BYTES + 10];
    // (datagram, fds, expected words in the error)
    let cases: Vec<(Vec<u8>, Vec<OwnedFd>, &str)> = vec![
        (
            b"\xff\xff\xff garbage".to_vec(),
            vec![],
            "not a valid enrollment request",
        ),
        (
            request_bytes(7, Some(delete_kind("u"))),
            vec![],
            "version 7 is not supported",
        ),
        (request_bytes(1, None), vec![], "no known kind"),
        (
            request_bytes(1, Some(add_kind("u"))),
            vec![],
            "exactly one network namespace fd",
        ),
        (
            request_bytes(1, Some(add_kind("u"))),
            vec![netns_fd(), netns_fd()],
            "got 2",
        ),
        (
            request_bytes(1, Some(add_kind("u"))),
            vec![regular_fd()],
            "not a network namespace",
        ),
        (
            request_bytes(1, Some(add_kind(""))),
            vec![netns_fd()],
            "AddPod without uid",
        ),
        (
            request_bytes(1, Some(delete_kind("u"))),
            vec![netns_fd()],
            "DeletePod must carry no",
        ),
        (
            request_bytes(1, Some(delete_kind(""))),
            vec![],
            "DeletePod without uid",
        ),
        (big, vec![], "longer than 16384 bytes"),
    ];
    let (raw, conn) = raw_pair();
    for (bytes, fds, expected) in cases {
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        wire::send_datagram(raw.as_fd(), &bytes, &borrowed).unwrap();
        drop(fds);
        // A good request after each bad one: the bad one is answered inside
        // next_request, the good one comes out.
        wire::send_datagram(raw.as_fd(), &request_bytes(1, Some(delete_kind("ok"))), &[]).unwrap();
        let req = conn.next_request().await.unwrap().unwrap();
        assert!(
            matches!(req, EnrollRequest::Delete { ref uid } if uid == "ok"),
            "{expected}"
        );
        conn.reply(&Reply::Done).await.unwrap();

        let error_ack = read_ack(&raw);
        assert!(!error_ack.ok, "{expected}");
        assert_eq!(error_ack.status, AckStatus::Error as i32);
        assert!(
            error_ack.error.contains(expected),
            "{expected:?} not in {:?}",
            error_ack.error
        );
        let ok_ack = read_ack(&raw);
        assert!(ok_ack.ok);
    }
    drop(raw);
    assert!(
        conn.next_request().await.unwrap().is_none(),
        "hang-up is end of stream"
    );
}

#[tokio::test]
async fn client_reports_unreachable_timeout_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let err = EnrollClient::connect(&missing, TIMEOUT).unwrap_err();
    assert!(err.is_unreachable());
    assert!(err.to_string().contains("none.sock"), "{err}");

    // A server that reads but never answers.
    let (client, conn) = connected_pair(Duration::from_millis(200)).unwrap();
    let silent = tokio::spawn(async move {
        let _req = conn.next_request().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(conn);
    });
    let err = tokio::task::spawn_blocking(move || client.delete_pod("u").unwrap_err())
        .await
        .unwrap();
    assert!(matches!(err, EnrollError::Timeout { .. }), "{err}");
    assert!(err.is_unreachable());
    silent.abort();

    // A server that hangs up on the request.
    let (client, conn) = connected_pair(TIMEOUT).unwrap();
    let closer = tokio::spawn(async move {
        let _req = conn.next_request().await;
        drop(conn);
    });
    let err = tokio::task::spawn_blocking(move || client.delete_pod("u").unwrap_err())
        .await
        .unwrap();
    assert!(matches!(err, EnrollError::Closed { .. }), "{err}");
    closer.await.unwrap();
}

#[test]
fn bad_acks_are_typed_errors() {
    for (ack, expected) in [
        (b"\xff\xff".to_vec(), "cannot decode"),
        (
            Ack {
                version: 9,
                ok: true,
                ..Default::default()
            }
            .encode_to_vec(),
            "protocol version 9",
        ),
        (
            Ack {
                version: 1,
                ok: true,
                ..Default::default()
            }
            .encode_to_vec(),
            "status 0",
        ),
    ] {
        let (client_sock, server_sock) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let client = EnrollClient::from_socket(client_sock, TIMEOUT).unwrap();
        let netns = NetNs::current().unwrap();
        let handle = std::thread::spawn(move || client.add_pod(&pod("u"), &netns));
        let _ = wire::recv_datagram(server_sock.as_fd(), proto::MAX_MESSAGE_BYTES).unwrap();
        wire::send_datagram(server_sock.as_fd(), &ack, &[]).unwrap();
        let err = handle.join().unwrap().unwrap_err();
        assert!(matches!(err, EnrollError::BadReply { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
}

#[tokio::test]
async fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enroll.sock");
    let first = EnrollListener::bind(&path).unwrap();
    let err = EnrollListener::bind(&path).unwrap_err();
    assert!(err.to_string().contains("another process"), "{err}");
    drop(first); // leaves the socket file behind, like a crashed ztunnel
    assert!(path.exists());
    let _second = EnrollListener::bind(&path).unwrap();

    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = EnrollListener::bind(&file).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
}

/// A handler that answers every request with `Done` and reports which server saw it.
fn answering(
    name: &'static str,
    seen: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> impl Fn(EnrollRequest) -> std::future::Ready<Reply> + Clone + Send + Sync + 'static {
    move |_request| {
        let _ = seen.send(name);
        std::future::ready(Reply::Done)
    }
}

#[tokio::test]
async fn a_successor_takes_the_socket_over_and_the_old_server_stops_after_its_queued_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enroll.sock");
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let old = tokio::spawn(serve(
        EnrollListener::bind(&path).unwrap(),
        answering("old", seen_tx.clone()),
    ));

    // The successor binds beside the path: the running server is told, CNI calls still reach it.
    assert!(!successor_pending(&path));
    let pending = EnrollListener::bind_successor(&path).unwrap();
    assert!(successor_pending(&path));
    let err = EnrollListener::bind_successor(&path).unwrap_err();
    assert!(err.to_string().contains("second successor"), "{err}");
    let call = |path: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            EnrollClient::connect(&path, TIMEOUT)
                .unwrap()
                .delete_pod("u1")
                .unwrap()
        })
    };
    call(path.clone()).await.unwrap();
    assert_eq!(seen.recv().await, Some("old"));

    // A call queued at the old socket before the rename is still answered by the old server.
    let early = EnrollClient::connect(&path, TIMEOUT).unwrap();
    let new = pending.take_over().unwrap();
    assert!(
        !successor_pending(&path),
        "the pending path is gone once renamed"
    );
    let new = tokio::spawn(serve(new, answering("new", seen_tx)));
    tokio::time::timeout(TIMEOUT, old)
        .await
        .expect("the old server returns once superseded")
        .unwrap();
    tokio::task::spawn_blocking(move || early.delete_pod("u2").unwrap())
        .await
        .unwrap();
    assert_eq!(seen.recv().await, Some("old"));

    // Every later call reaches the successor.
    call(path.clone()).await.unwrap();
    assert_eq!(seen.recv().await, Some("new"));
    new.abort();
}

#[tokio::test]
async fn a_listener_whose_file_was_removed_is_not_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enroll.sock");
    let listener = EnrollListener::bind(&path).unwrap();
    assert!(!listener.is_superseded());
    std::fs::remove_file(&path).unwrap();
    assert!(!listener.is_superseded(), "nobody else serves the node");
    // A stale pending socket (a successor that died) is replaced.
    let stale = EnrollListener::bind_successor(&path).unwrap();
    drop(stale);
    assert!(!successor_pending(&path));
    let _again = EnrollListener::bind_successor(&path).unwrap();
}
