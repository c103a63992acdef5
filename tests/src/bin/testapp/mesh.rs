//! The mesh conformance modes (tests/src/conformance drives them):
//!
//! ```text
//! ambit-testapp mesh-echo --pod NAME --namespace NS [--version V] [--status CODE] [--http PORT]... [--grpc PORT]... [--tcp PORT]...
//! ambit-testapp mesh-client --connect IP:PORT --host HOST [--path P] [--method M] [--header 'Name: value']...
//!               [--grpc SERVICE/METHOD] [--count N [--concurrency C]] [--timeout-ms MS]
//!               [--websocket TEXT | --grpc-stream TEXT] [--rounds N]
//! ```
//! `mesh-echo` plays Istio's echo app (the `echo-advanced` image of the Gateway API mesh
//! suite): HTTP/1.1 and h2c on every HTTP port, gRPC `proto.EchoTestService/Echo` over HTTP/2,
//! byte echo on TCP ports; it prints `mesh-echo ready` once every port listens. On HTTP/1.1,
//! `--status CODE` answers every request with CODE (a failing backend), and a `delay=MS` query
//! parameter waits that long before answering (a slow one). `mesh-client`
//! plays its `client` command; see mesh/client.rs for the output.

use std::net::SocketAddr;
use std::time::Duration;

use crate::AppResult;

#[path = "mesh/client.rs"]
mod client;
#[path = "mesh/echo.rs"]
mod echo;
#[path = "mesh/streams.rs"]
mod streams;
#[path = "mesh/wire.rs"]
mod wire;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The unary method of Istio's echo service (`proto.EchoTestService`, `EchoRequest{message}` →
/// `EchoResponse{message}`, both `string message = 1`).
const GRPC_ECHO_PATH: &str = "/proto.EchoTestService/Echo";
/// `--grpc` without a method on the client side means this one.
const GRPC_ECHO_METHOD: &str = "proto.EchoTestService/Echo";

/// Every value of a repeatable `--name value` option, in order.
fn values<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str())
        .collect()
}

fn ports(args: &[String], name: &str) -> AppResult<Vec<u16>> {
    values(args, name)
        .into_iter()
        .map(|text| {
            text.parse()
                .map_err(|_| format!("{name}: bad port {text:?}"))
        })
        .collect()
}

fn required<'a>(args: &'a [String], name: &str) -> AppResult<&'a str> {
    crate::option(args, name).ok_or_else(|| format!("{name} is required"))
}

fn runtime() -> AppResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// `mesh-echo`: serves until killed.
pub fn mesh_echo(args: &[String]) -> AppResult<()> {
    let identity = echo::Identity {
        pod: required(args, "--pod")?.to_string(),
        namespace: required(args, "--namespace")?.to_string(),
        version: crate::option(args, "--version").unwrap_or("").to_string(),
        status: match crate::option(args, "--status") {
            Some(text) => Some(
                text.parse()
                    .ok()
                    .filter(|code| (100..600).contains(code))
                    .ok_or_else(|| format!("--status: {text:?} is not an HTTP status"))?,
            ),
            None => None,
        },
    };
    // gRPC is HTTP/2, which every HTTP port speaks: a --grpc port is one more HTTP port.
    let mut http = ports(args, "--http")?;
    http.extend(ports(args, "--grpc")?);
    http.sort_unstable();
    http.dedup();
    let tcp = ports(args, "--tcp")?;
    if http.is_empty() && tcp.is_empty() {
        return Err("mesh-echo needs at least one --http, --grpc or --tcp port".into());
    }
    runtime()?.block_on(echo::run(identity, http, tcp))
}

/// `mesh-client`: one request (full output) or `--count N` requests (a summary line).
pub fn mesh_client(args: &[String]) -> AppResult<()> {
    let connect_text = required(args, "--connect")?;
    let connect: SocketAddr = connect_text.parse().map_err(|_| {
        format!("--connect takes IP:PORT (names are not resolved), got {connect_text:?}")
    })?;
    let mut headers = Vec::new();
    for text in values(args, "--header") {
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| format!("--header takes 'Name: value', got {text:?}"))?;
        headers.push((name.trim().to_string(), value.trim_start().to_string()));
    }
    // A Host header given with --header wins, as `-H Host:…` does for Istio's client.
    let mut host = required(args, "--host")?.to_string();
    if let Some(position) = headers
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        host = headers.remove(position).1;
    }
    let grpc = if crate::has_flag(args, "--grpc") {
        let method = crate::option(args, "--grpc")
            .filter(|m| !m.starts_with("--"))
            .unwrap_or(GRPC_ECHO_METHOD);
        Some(format!("/{}", method.trim_start_matches('/')))
    } else {
        None
    };
    let request = client::Request {
        connect,
        host,
        path: crate::option(args, "--path").unwrap_or("/").to_string(),
        method: crate::option(args, "--method").unwrap_or("GET").to_string(),
        headers,
        grpc,
        timeout: Duration::from_millis(crate::parsed(args, "--timeout-ms", 10_000)?),
    };
    let runtime = runtime()?;
    // Long-lived exchanges: `Echo=<text>` per round trip, then the final status.
    let rounds: usize = crate::parsed(args, "--rounds", 3)?;
    let websocket = crate::option(args, "--websocket");
    let grpc_stream = crate::option(args, "--grpc-stream");
    if websocket.is_some() || grpc_stream.is_some() {
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(request.connect)
                .await
                .map_err(|e| format!("connect {}: {e}", request.connect))?;
            match (websocket, grpc_stream) {
                (Some(text), _) => streams::websocket_client(stream, &request.host, text, rounds)
                    .await
                    .map(|echoes| (echoes, "101".to_owned())),
                (None, Some(text)) => {
                    streams::grpc_stream_client(stream, &request.host, text, rounds)
                        .await
                        .map(|(echoes, status)| (echoes, format!("grpc-{status}")))
                }
                (None, None) => Err("unreachable".to_owned()),
            }
        };
        let (echoes, status) = runtime
            .block_on(async { tokio::time::timeout(request.timeout, exchange).await })
            .map_err(|_| format!("no answer within {:?}", request.timeout))??;
        for echo in echoes {
            println!("Echo={echo}");
        }
        println!("Status={status}");
        return Ok(());
    }
    if crate::has_flag(args, "--count") {
        let count: usize = crate::parsed(args, "--count", 1)?;
        let concurrency: usize = crate::parsed(args, "--concurrency", 1)?;
        let summary = runtime.block_on(client::send_many(request, count, concurrency));
        print!("{}", summary.render(count));
        return Ok(());
    }
    let answer = runtime.block_on(client::send(&request))?;
    print!("{}", answer.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::wire;

    #[test]
    fn a_grpc_string_message_round_trips_through_its_frame() {
        let long = "x".repeat(300);
        for text in ["", "Hostname=echo-v1-abc-def", long.as_str()] {
            let frame = wire::grpc_string_message(text);
            assert_eq!(wire::grpc_string_field(&frame).as_deref(), Ok(text));
        }
        assert!(wire::grpc_string_field(&[0, 0, 0, 0, 9, 0x0a]).is_err());
        assert!(wire::grpc_string_field(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn header_names_are_canonicalised_as_go_does() {
        assert_eq!(wire::canonical_name("x-header-add"), "X-Header-Add");
        assert_eq!(wire::canonical_name("VERSION"), "Version");
        assert_eq!(wire::canonical_name("bad name"), "bad name");
    }

    #[test]
    fn a_head_keeps_header_lines_in_order_and_rejects_junk() {
        let head = wire::parse_head("GET /v2?x=y HTTP/1.1\r\nHost: echo\r\nX-A: 1\r\nx-a: 2")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.start[1], "/v2?x=y");
        assert_eq!(head.headers.len(), 3);
        assert_eq!(head.header("X-A"), Some("1"));
        assert!(wire::parse_head("GET / HTTP/1.1\r\nno colon here").is_err());
    }
}
