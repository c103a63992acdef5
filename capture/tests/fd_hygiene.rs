//! Received file descriptors are never leaked: fds attached to malformed or
//! fd-less requests are closed, and so are those of dropped Add requests.
//! Its own test binary, so no parallel test opens or closes fds meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};

use capture::enroll::proto::{self, request, Request};
use capture::enroll::{EnrollListener, EnrollRequest, Reply};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use prost::Message;
use socket2::{Domain, SockAddr, Socket, Type};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn send(socket: &Socket, kind: request::Kind, fds: &[RawFd]) {
    let bytes = Request {
        version: proto::PROTOCOL_VERSION,
        kind: Some(kind),
    }
    .encode_to_vec();
    let rights = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &rights,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

#[tokio::test]
async fn no_received_fd_outlives_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enroll.sock");
    let listener = EnrollListener::bind(&path).unwrap();
    let client = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    client.connect(&SockAddr::unix(&path).unwrap()).unwrap();
    let conn = listener.accept().await.unwrap();
    let netns = File::open("/proc/self/ns/net").unwrap();
    let fd = netns.as_raw_fd();
    let add = || {
        request::Kind::AddPod(proto::AddPod {
            uid: "u".into(),
            name: "n".into(),
            namespace: "ns".into(),
        })
    };
    let delete = || request::Kind::DeletePod(proto::DeletePod { uid: "u".into() });

    let before = open_fds();
    for _ in 0..20 {
        send(&client, delete(), &[fd, fd, fd]); // fds where none belong: error Ack
        send(&client, add(), &[fd, fd]); // two netns fds: error Ack
        send(&client, add(), &[fd]); // good: the caller owns the fd...
        match conn.next_request().await.unwrap().unwrap() {
            EnrollRequest::Add { netns, .. } => drop(netns), // ...and closes it
            other => panic!("{other:?}"),
        }
        conn.reply(&Reply::Done).await.unwrap();
    }
    assert_eq!(open_fds(), before, "received fds leaked");
}
