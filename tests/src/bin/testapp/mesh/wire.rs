//! Bytes on the wire for the mesh modes: HTTP/1.1 message heads and bodies read from a buffered
//! connection (bounded, so a bad peer gets an error instead of our memory), Go-style header
//! name canonicalisation, and the gRPC frame around a one-string protobuf message.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest message head we accept (DESIGN §7: header lists ≤ 64 KiB).
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest body we buffer; the echo modes exchange a few hundred bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// A request or response head: the start line split in three, then the header lines in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub start: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` lists `token` (comma-separated, case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A connection with the bytes read past the last message kept for the next one (pipelining,
/// a body that arrived with its head).
pub struct Buffered<S> {
    pub stream: S,
    buf: Vec<u8>,
    timeout: Duration,
}

impl<S: AsyncRead + Unpin> Buffered<S> {
    pub fn new(stream: S, timeout: Duration) -> Self {
        Buffered {
            stream,
            buf: Vec::new(),
            timeout,
        }
    }

    /// The stream and the bytes read past the last message head (an upgrade takes both).
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Reads more bytes; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 8192];
        let read = tokio::time::timeout(self.timeout, self.stream.read(&mut chunk))
            .await
            .map_err(|_| format!("no data within {:?}", self.timeout))?
            .map_err(|e| format!("read: {e}"))?;
        self.buf.extend_from_slice(&chunk[..read]);
        Ok(read)
    }

    /// The next message head, or `None` when the peer closed cleanly between messages.
    pub async fn read_head(&mut self) -> Result<Option<Head>, String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return parse_head(&text).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(format!("message head longer than {MAX_HEAD} bytes"));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err("connection closed inside a message head".into())
                };
            }
        }
    }

    /// Exactly `len` body bytes.
    pub async fn read_exact_body(&mut self, len: usize) -> Result<Vec<u8>, String> {
        if len > MAX_BODY {
            return Err(format!("body of {len} bytes is over {MAX_BODY}"));
        }
        while self.buf.len() < len {
            if self.fill().await? == 0 {
                return Err("connection closed inside a body".into());
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// A `Transfer-Encoding: chunked` body (trailers are read and dropped).
    pub async fn read_chunked_body(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(format!("chunked body over {MAX_BODY} bytes"));
            }
            body.extend(self.read_exact_body(size + 2).await?.iter().take(size));
        }
    }

    /// Everything until the peer closes (a response framed by connection close).
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, String> {
        while self.fill().await? > 0 {
            if self.buf.len() > MAX_BODY {
                return Err(format!("body over {MAX_BODY} bytes"));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// The body that follows `head` by its framing headers; `None` framing means "until close"
    /// and is only valid for responses (`until_close`).
    pub async fn read_body(&mut self, head: &Head, until_close: bool) -> Result<Vec<u8>, String> {
        if head.has_token("transfer-encoding", "chunked") {
            self.read_chunked_body().await
        } else if let Some(length) = head.header("content-length") {
            let length = length
                .trim()
                .parse()
                .map_err(|_| format!("bad content-length {length:?}"))?;
            self.read_exact_body(length).await
        } else if until_close {
            self.read_to_end().await
        } else {
            Ok(Vec::new())
        }
    }

    async fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err("line too long".into());
            }
            if self.fill().await? == 0 {
                return Err("connection closed inside a chunked body".into());
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a head into its start line and `Name: value` lines; obsolete line folding and lines
/// without a colon are errors, as in Go's net/http.
pub fn parse_head(text: &str) -> Result<Head, String> {
    let mut lines = text.split("\r\n");
    let start_line = lines.next().unwrap_or("");
    let mut parts = start_line.splitn(3, ' ');
    let start = [
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    ];
    if start[0].is_empty() || start[1].is_empty() {
        return Err(format!("malformed start line {start_line:?}"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.contains(' '))
            .ok_or_else(|| format!("malformed header line {line:?}"))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Head { start, headers })
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-header-add` → `X-Header-Add`. Names with
/// characters outside a token are returned unchanged, as Go does.
pub fn canonical_name(name: &str) -> String {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.chars().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// A gRPC length-prefixed message (uncompressed) holding a protobuf message whose field 1 is
/// `text`: the shape of Istio's `EchoRequest` and `EchoResponse` (`string message = 1`).
pub fn grpc_string_message(text: &str) -> Vec<u8> {
    let mut message = vec![0x0a];
    let mut len = text.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            message.push(byte);
            break;
        }
        message.push(byte | 0x80);
    }
    message.extend_from_slice(text.as_bytes());
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend(message);
    frame
}

/// Field 1 (a string) of the protobuf message in the first gRPC frame of `body`; other fields
/// are skipped. Errors on compressed frames and on truncated or malformed encodings.
pub fn grpc_string_field(body: &[u8]) -> Result<String, String> {
    let header = body
        .get(..5)
        .ok_or("gRPC frame shorter than its 5-byte prefix")?;
    if header[0] != 0 {
        return Err("compressed gRPC frames are not supported".into());
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut message = body.get(5..5 + len).ok_or("truncated gRPC frame")?;
    let mut text = String::new();
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match key & 7 {
            0 => {
                varint(&mut message)?;
            }
            2 => {
                let len = varint(&mut message)? as usize;
                let value = message.get(..len).ok_or("truncated protobuf field")?;
                if key >> 3 == 1 {
                    text = String::from_utf8_lossy(value).into_owned();
                }
                message = &message[len..];
            }
            wire => return Err(format!("unsupported protobuf wire type {wire}")),
        }
    }
    Ok(text)
}

fn varint(input: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or("truncated varint")?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 64 bits".into())
}
