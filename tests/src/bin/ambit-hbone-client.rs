//! An HBONE client for tests that play a peer with a *valid* mesh certificate (issued offline by
//! `ambit-ca issue` from the mesh's own root): it opens one CONNECT with whatever authority and
//! `forwarded` header the test chooses, so tests can probe what a well-credentialled but
//! malicious peer can make a ztunnel do.
//!
//! ```text
//! ambit-hbone-client --hbone IP:15008 --authority IP:PORT --cert-dir DIR --server-identity SPIFFE
//!                    [--forwarded IP:PORT] [--text STR] [--timeout-ms MS]
//! ```
//! `DIR` holds `tls.crt`, `tls.key` and `ca.crt` as `ambit-ca issue` writes them. Prints one line:
//! `status=200 echoed=N` after sending STR and reading the echo until EOF (or the timeout), or
//! `status=<code>` when the CONNECT is refused, or `error=<text>` when no answer came.
//! Run it inside a pod's network namespace (`netns.command(...)`) so the TCP peer is that pod.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use certs::{CurrentCertificate, SpiffeId, TrustBundle, WorkloadCertificate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    hbone: std::net::SocketAddr,
    authority: std::net::SocketAddr,
    cert_dir: PathBuf,
    server_identity: SpiffeId,
    forwarded: Option<std::net::SocketAddr>,
    text: String,
    timeout: Duration,
}

fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn parse(args: &[String]) -> Result<Args, String> {
    let required = |name: &str| option(args, name).ok_or(format!("{name} is required"));
    let address = |name: &str, text: String| {
        text.parse()
            .map_err(|_| format!("{name} {text:?} is not ip:port"))
    };
    Ok(Args {
        hbone: address("--hbone", required("--hbone")?)?,
        authority: address("--authority", required("--authority")?)?,
        cert_dir: PathBuf::from(required("--cert-dir")?),
        server_identity: required("--server-identity")?
            .parse()
            .map_err(|e| format!("--server-identity: {e}"))?,
        forwarded: option(args, "--forwarded")
            .map(|text| address("--forwarded", text))
            .transpose()?,
        text: option(args, "--text").unwrap_or_else(|| "hello".to_owned()),
        timeout: Duration::from_millis(
            option(args, "--timeout-ms")
                .map(|t| t.parse().map_err(|_| "--timeout-ms must be a number"))
                .transpose()?
                .unwrap_or(5000),
        ),
    })
}

fn read(dir: &Path, file: &str) -> Result<Vec<u8>, String> {
    std::fs::read(dir.join(file))
        .map_err(|e| format!("cannot read {}: {e}", dir.join(file).display()))
}

async fn run(args: Args) -> Result<String, String> {
    let chain = String::from_utf8(read(&args.cert_dir, "tls.crt")?).map_err(|e| e.to_string())?;
    let key = certs::material::private_key_from_pem(&read(&args.cert_dir, "tls.key")?, "tls.key")
        .map_err(|e| e.to_string())?;
    let certificate = WorkloadCertificate::from_pem(&chain, key).map_err(|e| e.to_string())?;
    let bundle = TrustBundle::from_pem(
        args.server_identity.trust_domain(),
        &read(&args.cert_dir, "ca.crt")?,
        "ca.crt",
    )
    .map_err(|e| e.to_string())?;
    let tls = certs::tls::client_config(
        CurrentCertificate::new(certificate),
        &bundle,
        vec![args.server_identity.clone()],
    )
    .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(args.hbone)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.hbone))?;
    let connection =
        hbone::Connection::handshake(tcp, Arc::new(tls), &hbone::ClientConfig::default(), 0)
            .await
            .map_err(|e| e.to_string())?;
    let mut request = hbone::ConnectRequest::new(args.authority);
    request.forwarded_for = args.forwarded;
    let mut stream = match connection.open(&request).await {
        Ok(stream) => stream,
        Err(error) => {
            return Ok(match error.status() {
                Some(status) => format!("status={}", status.as_u16()),
                None => format!("error={error}"),
            })
        }
    };
    stream
        .write_all(args.text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.shutdown().await.map_err(|e| e.to_string())?;
    let mut echoed = Vec::new();
    let _ = stream.read_to_end(&mut echoed).await;
    Ok(format!("status=200 echoed={}", echoed.len()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match parse(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("ambit-hbone-client: {message}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ambit-hbone-client: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = parsed.timeout;
    match runtime.block_on(async { tokio::time::timeout(timeout, run(parsed)).await }) {
        Ok(Ok(line)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok(Err(message)) => {
            println!("error={message}");
            ExitCode::SUCCESS
        }
        Err(_) => {
            println!("error=no answer within {timeout:?}");
            ExitCode::SUCCESS
        }
    }
}
