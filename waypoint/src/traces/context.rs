//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): reading `traceparent`, and the
//! waypoint's decision for each request — continue the caller's trace or start a new one,
//! sampled or not — as pure functions; the request path only applies the result.

use std::fmt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceId(pub [u8; 16]);

/// 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SpanId(pub [u8; 8]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// What a caller's `traceparent` says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub sampled: bool,
}

/// Why a `traceparent` was ignored (a new trace starts instead, as the W3C spec asks).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TraceParentError {
    #[error("the request carries more than one traceparent header")]
    Repeated,
    #[error("traceparent is not `00-<32 hex>-<16 hex>-<2 hex>` (wrong length or separators)")]
    Shape,
    #[error("traceparent has a field that is not lowercase hex")]
    NotHex,
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    #[error("traceparent has an all-zero trace-id or parent-id")]
    ZeroId,
}

/// Parses one `traceparent` value. Version 00 must be exactly 55 characters; a later version
/// may append fields after a `-`, which are ignored (the spec's forward compatibility).
pub fn parse_traceparent(value: &str) -> Result<TraceParent, TraceParentError> {
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return Err(TraceParentError::Shape);
    }
    let version = hex_field::<1>(&bytes[0..2])?;
    match version[0] {
        0xff => return Err(TraceParentError::ForbiddenVersion),
        0x00 if bytes.len() != 55 => return Err(TraceParentError::Shape),
        _ if bytes.len() > 55 && bytes[55] != b'-' => return Err(TraceParentError::Shape),
        _ => {}
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return Err(TraceParentError::Shape);
    }
    let trace_id = hex_field::<16>(&bytes[3..35])?;
    let parent_id = hex_field::<8>(&bytes[36..52])?;
    let flags = hex_field::<1>(&bytes[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return Err(TraceParentError::ZeroId);
    }
    Ok(TraceParent {
        trace_id: TraceId(trace_id),
        parent_id: SpanId(parent_id),
        sampled: flags[0] & 0x01 == 0x01,
    })
}

fn hex_field<const N: usize>(text: &[u8]) -> Result<[u8; N], TraceParentError> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TraceParentError::NotHex),
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(out)
}

/// The waypoint's span of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span, when the request continued a trace.
    pub parent_id: Option<SpanId>,
    pub sampled: bool,
}

impl SpanContext {
    /// The `traceparent` the upstream gets: same trace, this span as its parent.
    pub fn traceparent(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", self.trace_id, self.span_id)
    }
}

/// How many of the traces that start at the waypoint are recorded; a caller's decision (the
/// sampled flag of its `traceparent`) is always followed, so a trace is whole or absent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    ratio: f64,
}

impl Sampler {
    /// `percent` of new traces, 0–100.
    pub fn percent(percent: f64) -> Result<Sampler, String> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!(
                "{percent} is not a percentage; give a sampling rate from 0 to 100"
            ));
        }
        Ok(Sampler {
            ratio: percent / 100.0,
        })
    }

    pub fn as_percent(self) -> f64 {
        self.ratio * 100.0
    }

    fn samples(self, coin: f64) -> bool {
        coin < self.ratio
    }
}

/// Fresh ids and a coin in [0, 1), drawn by the caller so that [`decide`] stays pure.
#[derive(Clone, Copy, Debug)]
pub struct Draw {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub coin: f64,
}

/// The request's span: a child of the caller's when `incoming` is a valid `traceparent`, else
/// the root of a new trace, sampled by `sampler`. The error says why an incoming value was
/// ignored; its `tracestate` must then be dropped too (W3C §3.3.1).
pub fn decide(
    incoming: Option<Result<TraceParent, TraceParentError>>,
    sampler: Sampler,
    draw: Draw,
) -> (SpanContext, Option<TraceParentError>) {
    match incoming {
        Some(Ok(parent)) => (
            SpanContext {
                trace_id: parent.trace_id,
                span_id: draw.span_id,
                parent_id: Some(parent.parent_id),
                sampled: parent.sampled,
            },
            None,
        ),
        other => (
            SpanContext {
                trace_id: draw.trace_id,
                span_id: draw.span_id,
                parent_id: None,
                sampled: sampler.samples(draw.coin),
            },
            other.and_then(Result::err),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn draw(coin: f64) -> Draw {
        Draw {
            trace_id: TraceId([0xab; 16]),
            span_id: SpanId([0x11; 8]),
            coin,
        }
    }

    fn all() -> Sampler {
        Sampler::percent(100.0).unwrap()
    }

    #[test]
    fn a_valid_traceparent_is_read_field_by_field() {
        let parent = parse_traceparent(CALLER).unwrap();
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        let unsampled = parse_traceparent(&CALLER.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
    }

    #[test]
    fn malformed_traceparents_are_refused_with_the_reason() {
        let cases = [
            ("", TraceParentError::Shape),
            (&CALLER[..54], TraceParentError::Shape),
            (&format!("{CALLER}-extra"), TraceParentError::Shape),
            (&CALLER.replace("4bf9", "4BF9"), TraceParentError::NotHex),
            (
                &CALLER.replacen("00-", "ff-", 1),
                TraceParentError::ForbiddenVersion,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceParentError::ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceParentError::ZeroId,
            ),
            (&CALLER.replace('-', "_"), TraceParentError::Shape),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_traceparent(value), Err(expected), "{value:?}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert!(parse_traceparent(future).unwrap().sampled);
        let glued = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(parse_traceparent(glued), Err(TraceParentError::Shape));
    }

    #[test]
    fn a_caller_trace_is_continued_with_the_waypoint_as_the_new_parent() {
        let parent = parse_traceparent(CALLER).unwrap();
        let (span, problem) = decide(Some(Ok(parent)), Sampler::percent(0.0).unwrap(), draw(0.5));
        assert_eq!(problem, None);
        assert_eq!(span.trace_id, parent.trace_id);
        assert_eq!(span.parent_id, Some(parent.parent_id));
        // The caller sampled: the waypoint records even with a 0 % rate of its own.
        assert!(span.sampled);
        assert_eq!(
            span.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
        );
    }

    #[test]
    fn a_caller_that_did_not_sample_is_not_sampled_here_either() {
        let parent = parse_traceparent(&CALLER.replace("-01", "-00")).unwrap();
        let (span, _) = decide(Some(Ok(parent)), all(), draw(0.0));
        assert!(!span.sampled);
        assert!(span.traceparent().ends_with("-00"));
    }

    #[test]
    fn without_a_usable_traceparent_a_trace_starts_here_at_the_sampling_rate() {
        let one_percent = Sampler::percent(1.0).unwrap();
        let (span, problem) = decide(None, one_percent, draw(0.009));
        assert!(span.sampled);
        assert_eq!(problem, None);
        assert_eq!(span.parent_id, None);
        assert_eq!(span.trace_id, TraceId([0xab; 16]));
        let (span, _) = decide(None, one_percent, draw(0.01));
        assert!(!span.sampled);

        let (span, problem) = decide(Some(Err(TraceParentError::NotHex)), all(), draw(0.5));
        assert_eq!(problem, Some(TraceParentError::NotHex));
        assert_eq!(span.parent_id, None);
        assert!(span.sampled);
    }

    #[test]
    fn sampling_rates_outside_0_to_100_are_refused() {
        for bad in [-1.0, 100.5, f64::NAN] {
            assert!(Sampler::percent(bad).is_err(), "{bad}");
        }
        assert!(Sampler::percent(0.0).is_ok());
    }
}
