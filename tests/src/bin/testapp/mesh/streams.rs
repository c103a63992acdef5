//! Long-lived exchanges through the mesh: a WebSocket (RFC 6455) echo on the HTTP/1.1 ports and
//! a bidirectional gRPC stream (`proto.EchoTestService/EchoStream`: every message echoed as it
//! arrives), with the clients that prove both stay open across several round trips — so a proxy
//! in the path must really upgrade, and really stream rather than buffer.

use base64::Engine as _;
use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, Head};

/// The custom streaming method (Istio's echo has no bidi stream; this one is ours).
pub const GRPC_STREAM_PATH: &str = "/proto.EchoTestService/EchoStream";
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Frames larger than this are refused (the tests send short texts).
const MAX_FRAME: usize = 64 * 1024;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn websocket_accept(key: &str) -> String {
    let digest = Sha1::digest(format!("{}{WEBSOCKET_GUID}", key.trim()).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Whether a request head asks for a WebSocket.
pub fn is_websocket(head: &Head) -> bool {
    head.has_token("connection", "upgrade")
        && head
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the handshake, then echoes every frame until the client closes. `leftover` holds
/// bytes read past the request head.
pub async fn serve_websocket(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    head: &Head,
) -> Result<(), String> {
    let key = head
        .header("sec-websocket-key")
        .ok_or("WebSocket request without Sec-WebSocket-Key")?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        websocket_accept(key)
    );
    stream
        .write_all(response.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = Prefixed {
        prefix: leftover,
        stream,
    };
    loop {
        let (opcode, payload) = read_frame(&mut reader).await?;
        write_frame(&mut reader.stream, opcode, &payload, None).await?;
        if opcode == 0x8 {
            return Ok(());
        }
    }
}

/// Opens a WebSocket to `host` through `stream`, sends `text` `rounds` times and reads each
/// echo; returns the echoes.
pub async fn websocket_client(
    mut stream: TcpStream,
    host: &str,
    text: &str,
    rounds: usize,
) -> Result<Vec<String>, String> {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream
            .read(&mut byte)
            .await
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("closed during the WebSocket handshake".into());
        }
        head.push(byte[0]);
        if head.len() > wire::MAX_HEAD {
            return Err("handshake answer too long".into());
        }
    }
    let head = wire::parse_head(&String::from_utf8_lossy(&head[..head.len() - 4]))?;
    if head.start[1] != "101" {
        return Err(format!("handshake answered {}", head.start[1]));
    }
    if head.header("sec-websocket-accept") != Some(websocket_accept(&key).as_str()) {
        return Err("wrong Sec-WebSocket-Accept".into());
    }
    let mut echoes = Vec::new();
    let mut reader = Prefixed {
        prefix: Vec::new(),
        stream,
    };
    for round in 0..rounds {
        let message = format!("{text} {round}");
        write_frame(
            &mut reader.stream,
            0x1,
            message.as_bytes(),
            Some(rand::random()),
        )
        .await?;
        let (_, payload) = read_frame(&mut reader).await?;
        echoes.push(String::from_utf8_lossy(&payload).into_owned());
    }
    write_frame(&mut reader.stream, 0x8, &[], Some(rand::random())).await?;
    Ok(echoes)
}

/// A stream with bytes already read in front of it.
struct Prefixed {
    prefix: Vec<u8>,
    stream: TcpStream,
}

impl Prefixed {
    async fn read_exact(&mut self, out: &mut [u8]) -> Result<(), String> {
        let from_prefix = out.len().min(self.prefix.len());
        out[..from_prefix].copy_from_slice(&self.prefix[..from_prefix]);
        self.prefix.drain(..from_prefix);
        self.stream
            .read_exact(&mut out[from_prefix..])
            .await
            .map(|_| ())
            .map_err(|e| format!("read: {e}"))
    }
}

async fn read_frame(reader: &mut Prefixed) -> Result<(u8, Vec<u8>), String> {
    let mut header = [0u8; 2];
    reader.read_exact(&mut header).await?;
    let opcode = header[0] & 0x0f;
    let masked = header[1] & 0x80 != 0;
    let len = match header[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            reader.read_exact(&mut ext).await?;
            usize::from(u16::from_be_bytes(ext))
        }
        127 => return Err("frames over 64 KiB are not expected".into()),
        len => usize::from(len),
    };
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes"));
    }
    let mut mask = [0u8; 4];
    if masked {
        reader.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    if masked {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Result<(), String> {
    let mut frame = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => frame.push(mask_bit | len as u8),
        len if len <= usize::from(u16::MAX) => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => return Err("payload too long".into()),
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    writer
        .write_all(&frame)
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Echoes each complete gRPC message of the request stream as soon as it arrives, then OK.
pub async fn serve_grpc_stream(
    mut body: h2::RecvStream,
    mut respond: h2::server::SendResponse<Bytes>,
) -> Result<(), String> {
    let send_error = |e: h2::Error| format!("HTTP/2 response: {e}");
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .map_err(|e| e.to_string())?;
    let mut send = respond.send_response(response, false).map_err(send_error)?;
    let mut pending = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("request stream: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        pending.extend_from_slice(&chunk);
        while let Some(len) = complete_message(&pending) {
            let message: Vec<u8> = pending.drain(..len).collect();
            send.send_data(Bytes::from(message), false)
                .map_err(send_error)?;
        }
        if pending.len() > MAX_FRAME {
            return Err("gRPC message too large".into());
        }
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    send.send_trailers(trailers).map_err(send_error)
}

/// The length of the first complete length-prefixed gRPC message in `buf`.
fn complete_message(buf: &[u8]) -> Option<usize> {
    let header: [u8; 4] = buf.get(1..5)?.try_into().ok()?;
    let len = 5 + u32::from_be_bytes(header) as usize;
    (buf.len() >= len).then_some(len)
}

/// Sends `rounds` messages on one gRPC stream, each after the previous echo came back; returns
/// the echoed texts and the final grpc-status.
pub async fn grpc_stream_client(
    stream: TcpStream,
    authority: &str,
    text: &str,
    rounds: usize,
) -> Result<(Vec<String>, String), String> {
    let h2_error = |e: h2::Error| format!("HTTP/2: {e}");
    let (client, connection) = h2::client::handshake(stream).await.map_err(h2_error)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.map_err(h2_error)?;
    let call = http::Request::builder()
        .method("POST")
        .uri(format!("http://{authority}{GRPC_STREAM_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut send) = client.send_request(call, false).map_err(h2_error)?;
    let mut echoes = Vec::new();
    let mut pending = Vec::new();
    let mut first = Some(send_message(&mut send, &format!("{text} 0")).map(|()| response)?);
    let mut body: Option<h2::RecvStream> = None;
    for round in 0..rounds {
        if round > 0 {
            send_message(&mut send, &format!("{text} {round}"))?;
        }
        if let Some(response) = first.take() {
            body = Some(response.await.map_err(h2_error)?.into_body());
        }
        let recv = body.as_mut().ok_or("no response body")?;
        loop {
            if let Some(len) = complete_message(&pending) {
                let message: Vec<u8> = pending.drain(..len).collect();
                echoes.push(wire::grpc_string_field(&message)?);
                break;
            }
            let chunk = recv
                .data()
                .await
                .ok_or("the stream ended before the echo")?
                .map_err(h2_error)?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            pending.extend_from_slice(&chunk);
        }
    }
    send.send_data(Bytes::new(), true).map_err(h2_error)?;
    let recv = body.as_mut().ok_or("no response body")?;
    while let Some(chunk) = recv.data().await {
        chunk.map_err(h2_error)?;
    }
    let status = recv
        .trailers()
        .await
        .map_err(h2_error)?
        .and_then(|t| {
            t.get("grpc-status")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        })
        .unwrap_or_else(|| "missing".into());
    Ok((echoes, status))
}

fn send_message(send: &mut h2::SendStream<Bytes>, text: &str) -> Result<(), String> {
    send.send_data(Bytes::from(wire::grpc_string_message(text)), false)
        .map_err(|e| format!("HTTP/2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // The example handshake of RFC 6455 section 1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn grpc_messages_are_cut_at_their_length_prefix() {
        let mut buf = wire::grpc_string_message("hello");
        assert_eq!(complete_message(&buf), Some(buf.len()));
        buf.truncate(buf.len() - 1);
        assert_eq!(complete_message(&buf), None);
        assert_eq!(complete_message(&[0, 0]), None);
    }
}
