//! The enrollment decoder (capture/src/enroll/proto.rs, wire.rs): every datagram the CNI plugin
//! (or anything that can reach ztunnel's unix socket) sends, with 0-253 file descriptors of any
//! kind attached — the kernel's limit per SCM_RIGHTS message.
//!
//! Two paths: the decoder directly, with fds made here; and through a real SOCK_SEQPACKET pair,
//! so the kernel delivers the fds by SCM_RIGHTS and the server's receive code adopts them.
//!
//! Contract: never panics; an `AddPod` is accepted only with exactly one fd and that fd a
//! network namespace, and all its fields non-empty; `DeletePod` only with no fd and a uid;
//! `SnapshotDone` only with no fd; the accepted request says what the message said; and no fd
//! outlives the call — neither those sent nor those the kernel installed on receipt.
#![no_main]

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use capture::enroll::proto::{request, Request};
use capture::enroll::EnrollRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The kernel's SCM_MAX_FD.
const MAX_FDS: usize = 253;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FdKind {
    NetNs,
    UtsNs,
    DevNull,
    Socket,
}

/// Bytes: flags (bit 0: through a socket), fd count (mod 254), the kinds of the fds (two bits
/// each, cycled over four; 0 = network namespace), then the datagram.
struct Input<'a> {
    through_socket: bool,
    kinds: Vec<FdKind>,
    message: &'a [u8],
}

fn input(data: &[u8]) -> Option<Input<'_>> {
    let [flags, count, kinds, message @ ..] = data else {
        return None;
    };
    let count = usize::from(*count) % (MAX_FDS + 1);
    let pattern: Vec<FdKind> = (0..4)
        .map(|i| match (kinds >> (2 * i)) & 3 {
            0 => FdKind::NetNs,
            1 => FdKind::UtsNs,
            2 => FdKind::DevNull,
            _ => FdKind::Socket,
        })
        .collect();
    Some(Input {
        through_socket: flags & 1 == 1,
        kinds: pattern.into_iter().cycle().take(count).collect(),
        message,
    })
}

/// One open fd of each kind, duplicated for each fd a message carries.
struct Templates {
    net: File,
    uts: File,
    null: File,
    socket: OwnedFd,
}

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        Templates {
            net: File::open("/proc/self/ns/net").expect("/proc/self/ns/net"),
            uts: File::open("/proc/self/ns/uts").expect("/proc/self/ns/uts"),
            null: File::open("/dev/null").expect("/dev/null"),
            socket: socket.into(),
        }
    })
}

impl FdKind {
    fn template(self) -> BorrowedFd<'static> {
        let t = templates();
        match self {
            FdKind::NetNs => t.net.as_fd(),
            FdKind::UtsNs => t.uts.as_fd(),
            FdKind::DevNull => t.null.as_fd(),
            FdKind::Socket => t.socket.as_fd(),
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// What the datagram's message says, to compare with what the decoder accepted.
fn check(result: &Result<EnrollRequest, String>, message: &[u8], kinds: &[FdKind]) {
    let request = match result {
        Ok(request) => request,
        Err(problem) => {
            assert!(!problem.is_empty());
            return;
        }
    };
    let decoded = Request::decode(message).expect("accepted a message that does not decode");
    assert_eq!(decoded.version, capture::enroll::proto::PROTOCOL_VERSION);
    match (request, decoded.kind) {
        (EnrollRequest::Add { pod, netns: _ }, Some(request::Kind::AddPod(add))) => {
            assert!(
                matches!(kinds, [FdKind::NetNs]),
                "AddPod accepted with fds {kinds:?}"
            );
            assert!(!pod.uid.is_empty() && !pod.name.is_empty() && !pod.namespace.is_empty());
            assert_eq!(
                (&pod.uid, &pod.name, &pod.namespace),
                (&add.uid, &add.name, &add.namespace)
            );
        }
        (EnrollRequest::Delete { uid }, Some(request::Kind::DeletePod(delete))) => {
            assert!(kinds.is_empty(), "DeletePod accepted with fds {kinds:?}");
            assert!(!uid.is_empty());
            assert_eq!(uid, &delete.uid);
        }
        (EnrollRequest::SnapshotDone, Some(request::Kind::SnapshotDone(_))) => {
            assert!(kinds.is_empty(), "SnapshotDone accepted with fds {kinds:?}");
        }
        (accepted, kind) => panic!("accepted {accepted:?} for a message of kind {kind:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = input(data) else {
        return;
    };
    let kinds = input.kinds;
    templates(); // opened once, before counting
    let before = open_fds();
    {
        let fds: Vec<OwnedFd> = kinds
            .iter()
            .map(|kind| kind.template().try_clone_to_owned().expect("dup"))
            .collect();
        if input.through_socket {
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            match capture::fuzzing::send_and_decode(input.message, &borrowed) {
                Ok(Some(result)) => check(&result, input.message, &kinds),
                // An empty datagram without fds reads as the peer hanging up.
                Ok(None) => assert!(input.message.is_empty() && kinds.is_empty()),
                Err(error) => panic!("local SEQPACKET delivery failed: {error}"),
            }
        } else {
            let result = capture::fuzzing::decode_request(input.message, fds);
            check(&result, input.message, &kinds);
        }
    }
    assert_eq!(open_fds(), before, "file descriptors leaked");
});
