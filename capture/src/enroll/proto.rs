//! Wire messages of the enrollment protocol (hand-written prost, no protoc).
//!
//! One protobuf message per SOCK_SEQPACKET datagram. The client sends a
//! [`Request`]; the server answers every request with exactly one [`Ack`], in
//! order. `AddPod` carries the pod's network namespace as exactly one file
//! descriptor in an SCM_RIGHTS control message; other requests carry none.
//!
//! Compatibility: fields are only ever added with new tags. `version` is
//! bumped only for changes an old peer would misread; a server rejects other
//! versions with an error Ack naming both.

use prost::Message;

use super::{EnrollRequest, PodRef, Reply};
use crate::netns::NetNs;
use std::os::fd::OwnedFd;

/// Version of this protocol; sent in every message.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest datagram either side sends or accepts. Pod names, namespaces and
/// uids are at most a few hundred bytes; this leaves room for new fields.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// A request from the CNI plugin (or a node agent) to ztunnel.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(oneof = "request::Kind", tags = "2, 3, 4")]
    pub kind: Option<request::Kind>,
}

pub mod request {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "2")]
        AddPod(super::AddPod),
        #[prost(message, tag = "3")]
        DeletePod(super::DeletePod),
        #[prost(message, tag = "4")]
        SnapshotDone(super::SnapshotDone),
    }
}

/// Enroll a pod; its netns fd travels as SCM_RIGHTS with this datagram.
#[derive(Clone, PartialEq, Message)]
pub struct AddPod {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
}

/// Forget a pod (close its listeners, drop its netns).
#[derive(Clone, PartialEq, Message)]
pub struct DeletePod {
    #[prost(string, tag = "1")]
    pub uid: String,
}

/// After a (re)connect, the sender has replayed every pod it knows; the
/// server may drop pods it holds that were not mentioned.
#[derive(Clone, PartialEq, Message)]
pub struct SnapshotDone {}

/// The server's answer to one request.
#[derive(Clone, PartialEq, Message)]
pub struct Ack {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The request was handled; false means `error` says why not.
    #[prost(bool, tag = "2")]
    pub ok: bool,
    #[prost(string, tag = "3")]
    pub error: String,
    /// Outcome of an AddPod; UNSPECIFIED for other requests.
    #[prost(enumeration = "AckStatus", tag = "4")]
    pub status: i32,
    /// With ENROLLED: ztunnel serves DNS on 15053 in the pod, so the rules
    /// should redirect the pod's DNS there.
    #[prost(bool, tag = "5")]
    pub capture_dns: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AckStatus {
    Unspecified = 0,
    /// ztunnel runs the pod's listeners; install the capture rules.
    Enrolled = 1,
    /// The pod is not in ambient mode; leave it untouched.
    NotAmbient = 2,
    /// See `Ack.error`.
    Error = 3,
}

impl Ack {
    pub fn from_reply(reply: &Reply) -> Self {
        let (ok, status, error, capture_dns) = match reply {
            Reply::Enrolled { capture_dns } => (true, AckStatus::Enrolled, "", *capture_dns),
            Reply::NotAmbient => (true, AckStatus::NotAmbient, "", false),
            Reply::Done => (true, AckStatus::Unspecified, "", false),
            Reply::Error(message) => (false, AckStatus::Error, message.as_str(), false),
        };
        Self {
            version: PROTOCOL_VERSION,
            ok,
            error: error.to_owned(),
            status: status as i32,
            capture_dns,
        }
    }
}

/// Turns one received datagram into a typed request, or a description of
/// what is wrong with it (sent back to the peer in an error Ack).
///
/// Takes ownership of every received fd: whatever is not handed out in the
/// request is closed when this returns.
pub(crate) fn decode_request(bytes: &[u8], mut fds: Vec<OwnedFd>) -> Result<EnrollRequest, String> {
    let request = Request::decode(bytes).map_err(|e| {
        format!(
            "not a valid enrollment request ({} bytes): {e}",
            bytes.len()
        )
    })?;
    if request.version != PROTOCOL_VERSION {
        return Err(format!(
            "enrollment protocol version {} is not supported (this side speaks {PROTOCOL_VERSION}); \
             upgrade ambit-cni and ztunnel together",
            request.version
        ));
    }
    let no_fds = |what: &str, fds: &[OwnedFd]| {
        if fds.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what} must carry no file descriptors, got {}",
                fds.len()
            ))
        }
    };
    match request.kind {
        None => Err("request has no known kind (empty, or from a newer peer)".to_owned()),
        Some(request::Kind::AddPod(add)) => {
            for (field, value) in [
                ("uid", &add.uid),
                ("name", &add.name),
                ("namespace", &add.namespace),
            ] {
                if value.is_empty() {
                    return Err(format!("AddPod without {field}"));
                }
            }
            if fds.len() != 1 {
                return Err(format!(
                    "AddPod must carry exactly one network namespace fd (SCM_RIGHTS), got {}",
                    fds.len()
                ));
            }
            let fd = fds.remove(0);
            let netns = NetNs::from_fd(fd).map_err(|e| format!("AddPod: {e}"))?;
            Ok(EnrollRequest::Add {
                pod: PodRef {
                    uid: add.uid,
                    name: add.name,
                    namespace: add.namespace,
                },
                netns,
            })
        }
        Some(request::Kind::DeletePod(delete)) => {
            no_fds("DeletePod", &fds)?;
            if delete.uid.is_empty() {
                return Err("DeletePod without uid".to_owned());
            }
            Ok(EnrollRequest::Delete { uid: delete.uid })
        }
        Some(request::Kind::SnapshotDone(_)) => {
            no_fds("SnapshotDone", &fds)?;
            Ok(EnrollRequest::SnapshotDone)
        }
    }
}

/// Encodes a request for the wire.
pub(crate) fn encode_request(kind: request::Kind) -> Vec<u8> {
    Request {
        version: PROTOCOL_VERSION,
        kind: Some(kind),
    }
    .encode_to_vec()
}
