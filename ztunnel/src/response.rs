//! Istio/Envoy-style response flags: one short code per way a connection can end, shared by the
//! access log (`error=` lines) and the `response_flags` metric label so the two never disagree.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    /// Completed normally (`-`).
    None,
    /// No route: nothing to send the connection to (no ready endpoint, or a target that would
    /// loop back into ztunnel).
    NoRoute,
    /// The upstream could not be connected.
    UpstreamFailure,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// Refused or revoked by authorization policy.
    Denied,
    /// The copy ended with an error after the connection was established.
    StreamError,
}

impl ResponseFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::None | ResponseFlag::StreamError => "-",
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::UpstreamFailure => "UF",
            ResponseFlag::UpstreamTimeout => "UT",
            ResponseFlag::Denied => "DENY",
        }
    }
}

impl std::fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
