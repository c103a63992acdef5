//! Every tunable of the tunnel in one place, with the defaults DESIGN §3 fixes for the wire.
//!
//! Binaries build these from their flags; tests shrink the timers and caps.

use std::time::Duration;

/// HTTP/2 per-stream receive window: 4 MiB.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// HTTP/2 per-connection receive window: 16 MiB. Larger than the stream window on purpose: were
/// they equal, one stalled stream could hold the whole connection's window and starve the rest.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest HTTP/2 frame we accept: 1 MiB.
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;
/// Most concurrent streams per HBONE connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Largest header block a peer may send (DESIGN §7: ≤ 64 KiB).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Connections an HBONE server holds at once, and per source IP. A source pod's pool opens one
/// connection per 200 concurrent streams, so 256 per source is 51 200 tunnels from one pod.
pub const DEFAULT_SERVER_LIMITS: runtime::Limits = runtime::Limits {
    max_connections: 8192,
    max_connections_per_source: 256,
};
/// The HBONE port (DESIGN §3, Ports).
pub const HBONE_PORT: u16 = 15008;

/// HTTP/2 settings both ends advertise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Settings {
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much a peer may send on one stream before we read it.
    pub stream_window: u32,
    /// Connection-level receive window (sent as a WINDOW_UPDATE on stream 0).
    pub connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS we allow the peer to open (server side).
    pub max_concurrent_streams: u32,
    /// Most bytes one stream may have queued for sending. Writes wait for the peer's window
    /// *and* for this, so a slow connection cannot pile up data in memory.
    pub max_send_buffer: usize,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            stream_window: STREAM_WINDOW,
            connection_window: CONNECTION_WINDOW,
            max_frame_size: MAX_FRAME_SIZE,
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            max_send_buffer: 1024 * 1024,
        }
    }
}

/// HTTP/2 PING keep-alive: notices a peer that vanished without closing (node crash, network
/// partition) so its streams fail instead of hanging and the pool stops handing it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// Time between PINGs.
    pub interval: Duration,
    /// How long to wait for the PONG before declaring the connection dead.
    pub timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
        }
    }
}

/// Buffer sizes of the bidirectional copy. Each direction starts with `initial` bytes and grows
/// (doubling) up to `max` while reads keep filling it, so idle connections stay small and bulk
/// transfers get large reads. Memory per connection is at most `2 × max`, and none while a
/// connection is idle: a direction with nothing to read gives its buffer back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyBuffers {
    pub initial: usize,
    pub max: usize,
}

impl Default for CopyBuffers {
    fn default() -> Self {
        CopyBuffers {
            initial: 16 * 1024,
            max: 256 * 1024,
        }
    }
}

/// Client side: connection establishment and the pool.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub h2: H2Settings,
    /// Limit on TCP connect + TLS handshake + HTTP/2 preface.
    pub connect_timeout: Duration,
    /// `None` disables PINGs.
    pub keepalive: Option<KeepAlive>,
    /// A pooled connection with no streams for this long is closed.
    pub idle_timeout: Duration,
    /// A key's second and further idle connections close after this much shorter time: one
    /// stays warm for the next tunnel, the rest of a burst's connections (each holding its TLS
    /// session and h2 stream table sized for the burst) go soon after the burst.
    pub surplus_idle_timeout: Duration,
    /// Streams per pooled connection before another connection is opened; the peer's
    /// SETTINGS_MAX_CONCURRENT_STREAMS lowers it further.
    pub max_streams_per_connection: u32,
    /// Times a request is retried on another connection when the chosen one was going away
    /// (GOAWAY, or the stream was refused before the peer processed it).
    pub max_retries: u32,
    /// Where each connection's task runs: a process that stops closes its pools and waits
    /// here (bounded) so the last frames of finished tunnels reach the peer before it exits.
    pub tasks: tokio_util::task::TaskTracker,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            h2: H2Settings::default(),
            connect_timeout: Duration::from_secs(10),
            keepalive: Some(KeepAlive::default()),
            idle_timeout: Duration::from_secs(60),
            surplus_idle_timeout: Duration::from_secs(2),
            max_streams_per_connection: MAX_CONCURRENT_STREAMS,
            max_retries: 2,
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }
}

/// Server side.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub h2: H2Settings,
    /// Refuse (400) a CONNECT whose `:authority` IP is not the local IP the client dialled.
    /// On for ztunnel's in-pod listener (the authority must be the pod's own IP); a waypoint
    /// turns it off because its authority is a service VIP.
    pub check_authority_ip: bool,
    /// Limit on the TLS handshake and HTTP/2 preface of an accepted connection.
    pub handshake_timeout: Duration,
    /// A connection that has not opened its first stream this long after its handshake is
    /// closed: a pool opens a connection to use it, a flood opens them to hold them.
    pub first_stream_timeout: Duration,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: a CONNECT needs a few hundred bytes, h2's default would
    /// let every stream buffer 16 MiB of headers.
    pub max_header_list_size: u32,
    /// Concurrent connections in total and per source IP. Clones of a config share the counts,
    /// so one limiter can bound every listener of a node together.
    pub limiter: runtime::ConnectionLimiter,
    /// `None` disables PINGs from the server.
    pub keepalive: Option<KeepAlive>,
    /// After a shutdown signal, how long in-flight streams may run before connections are
    /// closed under them.
    pub drain_timeout: Duration,
    /// Limit on the handler's upstream connect ([`crate::Handler::connect`]); exceeding it
    /// answers 503.
    pub upstream_connect_timeout: Duration,
    pub copy: CopyBuffers,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            h2: H2Settings::default(),
            check_authority_ip: true,
            handshake_timeout: Duration::from_secs(10),
            first_stream_timeout: Duration::from_secs(10),
            max_header_list_size: MAX_HEADER_LIST_SIZE,
            limiter: runtime::ConnectionLimiter::new("hbone", DEFAULT_SERVER_LIMITS),
            keepalive: Some(KeepAlive::default()),
            drain_timeout: Duration::from_secs(5),
            upstream_connect_timeout: Duration::from_secs(10),
            copy: CopyBuffers::default(),
        }
    }
}
