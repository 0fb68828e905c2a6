//! The opening handshake (RFC 6455 §4): parse and check the upgrade request
//! and build the response on the server; build the request and check the
//! response on the client.
//!
//! Heads are parsed with httparse once the blank line that ends them has
//! arrived; [`RequestReader`] and [`ResponseReader`] look for it only in the
//! new bytes, so a request sent a byte at a time is not re-scanned from the
//! start. Bytes after the head belong to the WebSocket stream and are
//! returned to the caller.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::HandshakeError;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    B64.encode(h.finalize())
}

/// A fresh random `Sec-WebSocket-Key` (16 random bytes in base64).
pub fn generate_key() -> String {
    let mut raw = [0u8; 16];
    crate::rand::fill(&mut raw);
    B64.encode(raw)
}

/// One header field. Values are bytes: HTTP allows non-UTF-8 (obs-text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name as sent.
    pub name: String,
    /// Field value, without surrounding white space.
    pub value: Vec<u8>,
}

fn find_header<'h>(headers: &'h [Header], name: &str) -> impl Iterator<Item = &'h [u8]> + 'h {
    let name = name.to_owned();
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(&name))
        .map(|h| h.value.as_slice())
}

/// Comma-separated tokens of every header field called `name`, trimmed.
fn header_tokens<'h>(headers: &'h [Header], name: &str) -> impl Iterator<Item = &'h str> + 'h {
    find_header(headers, name)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    header_tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

fn copy_headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect()
}

/// A parsed HTTP request head: an upgrade request or a plain HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (GET for an upgrade).
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// HTTP minor version (1 for HTTP/1.1).
    pub version: u8,
    /// Header fields in order.
    pub headers: Vec<Header>,
}

impl Request {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The value of query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The first header called `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The `Origin` header.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The value of cookie `name` from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, "cookie")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in order.
    pub fn protocols(&self) -> impl Iterator<Item = &str> {
        header_tokens(&self.headers, "sec-websocket-protocol")
    }

    /// Extensions offered in `Sec-WebSocket-Extensions` (each with its
    /// parameters, as sent).
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        header_tokens(&self.headers, "sec-websocket-extensions")
    }

    /// True if the request asks for a WebSocket upgrade at all (has an
    /// `Upgrade: websocket` token or a `Sec-WebSocket-Key`). Requests that do
    /// not are plain HTTP.
    pub fn wants_upgrade(&self) -> bool {
        has_token(&self.headers, "upgrade", "websocket")
            || find_header(&self.headers, "sec-websocket-key")
                .next()
                .is_some()
    }

    /// Checks the request as an RFC 6455 upgrade and returns the
    /// `Sec-WebSocket-Key` on success.
    pub fn validate_upgrade(&self) -> Result<&str, HandshakeError> {
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotGet);
        }
        if self.version != 1 {
            return Err(HandshakeError::HttpVersion);
        }
        if find_header(&self.headers, "host").next().is_none() {
            return Err(HandshakeError::MissingHost);
        }
        if !has_token(&self.headers, "upgrade", "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !has_token(&self.headers, "connection", "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let mut versions = find_header(&self.headers, "sec-websocket-version");
        match (versions.next(), versions.next()) {
            (Some(b"13"), None) => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        let mut keys = find_header(&self.headers, "sec-websocket-key");
        let key = match (keys.next(), keys.next()) {
            (Some(k), None) => k,
            (None, _) => return Err(HandshakeError::MissingKey),
            _ => return Err(HandshakeError::BadKey),
        };
        let key = std::str::from_utf8(key).map_err(|_| HandshakeError::BadKey)?;
        match B64.decode(key) {
            Ok(raw) if raw.len() == 16 => Ok(key),
            _ => Err(HandshakeError::BadKey),
        }
    }
}

/// Finds the end of an HTTP head (`\r\n\r\n`) in `buf`, looking only at
/// bytes from `from` on (minus three, for a terminator split across reads).
#[cfg(test)]
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| start + p + 4)
}

/// True if the bytes from `from` on (minus two, for a split) hold an empty
/// line, `\n\n` or `\n\r\n`: the head may be complete. httparse accepts
/// bare-LF line ends, so `\r\n\r\n` alone is not the only terminator; the
/// head ends where httparse says, never at a place of our own.
fn may_end_head(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    buf[start..]
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && buf.get(start + i + 2) == Some(&b'\n')))
}

/// Adds `data` to `buf` and parses the head with `parse` once an empty
/// line may have arrived; shared by the request and response readers.
fn accumulate<T>(
    buf: &mut Vec<u8>,
    data: &[u8],
    max_bytes: usize,
    parse: impl FnOnce(&[u8]) -> Result<Option<(T, usize)>, HandshakeError>,
) -> Result<Head<T>, HandshakeError> {
    let from = buf.len();
    buf.extend_from_slice(data);
    let parsed = if may_end_head(buf, from) {
        parse(buf)?
    } else {
        None
    };
    match parsed {
        Some((head, end)) if end <= max_bytes => {
            let rest = buf.split_off(end);
            *buf = Vec::new();
            Ok(Head::Complete(head, rest))
        }
        Some(_) => Err(HandshakeError::TooLarge { max: max_bytes }),
        None if buf.len() >= max_bytes => Err(HandshakeError::TooLarge { max: max_bytes }),
        None => Ok(Head::Partial),
    }
}

/// Accumulates a request head across reads.
#[derive(Debug, Default)]
pub struct RequestReader {
    buf: Vec<u8>,
    probed: bool,
}

/// What [`RequestReader::feed`] and [`ResponseReader::feed`] found.
#[derive(Debug)]
pub enum Head<T> {
    /// More bytes are needed.
    Partial,
    /// The head, and the bytes received after it (the start of the
    /// WebSocket stream).
    Complete(T, Vec<u8>),
}

impl RequestReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held so far.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds `data` and parses the request once its head is complete.
    pub fn feed(
        &mut self,
        data: &[u8],
        max_bytes: usize,
        max_headers: usize,
    ) -> Result<Head<Request>, HandshakeError> {
        let head = accumulate(&mut self.buf, data, max_bytes, |b| {
            parse_request(b, max_headers)
        })?;
        if matches!(head, Head::Partial) && !self.probed {
            // Catch garbage (say, a TLS ClientHello) at once instead of
            // waiting for the timeout; done once so slow senders cost no
            // re-parsing.
            self.probed = true;
            probe_request(&self.buf)?;
        }
        Ok(head)
    }
}

fn probe_request(buf: &[u8]) -> Result<(), HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Err(httparse::Error::TooManyHeaders) | Ok(_) => Ok(()),
        Err(_) => Err(HandshakeError::Malformed),
    }
}

/// Parses a complete request head; bytes after it are an error here.
pub fn parse_request_head(head: &[u8], max_headers: usize) -> Result<Request, HandshakeError> {
    match parse_request(head, max_headers)? {
        Some((req, n)) if n == head.len() => Ok(req),
        _ => Err(HandshakeError::Malformed),
    }
}

/// Parses a request head from the start of `buf`: `Ok(None)` if it is not
/// complete yet, else the request and the length of its head (where the
/// WebSocket stream starts).
pub fn parse_request(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders { max: max_headers })
        }
        Err(_) => return Err(HandshakeError::Malformed),
    };
    Ok(Some((
        Request {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            version: req.version.unwrap_or(0),
            headers: copy_headers(req.headers),
        },
        n,
    )))
}

/// The reason phrase for the statuses wsloop sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a complete HTTP/1.1 response with a body and `Connection: close`.
pub fn write_http_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    out: &mut Vec<u8>,
) {
    use std::io::Write;
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
    let mut has_type = false;
    for (k, v) in headers {
        has_type |= k.eq_ignore_ascii_case("content-type");
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if !has_type && !body.is_empty() {
        out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    }
    let _ = write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

/// Writes the response for a failed handshake: the status for `err`, its
/// reason as the body, and `Sec-WebSocket-Version: 13` on a 426.
pub fn write_error_response(err: HandshakeError, out: &mut Vec<u8>) {
    let status = err.status();
    let mut headers = Vec::new();
    if status == 426 {
        headers.push(("Sec-WebSocket-Version".to_owned(), "13".to_owned()));
        headers.push(("Upgrade".to_owned(), "websocket".to_owned()));
    }
    let body = format!("{err}\n");
    write_http_response(status, &headers, body.as_bytes(), out);
}

/// Writes the `101 Switching Protocols` response for `key`, with an optional
/// subprotocol and extra headers.
pub fn write_accept_response(
    key: &str,
    protocol: Option<&str>,
    extra: &[(String, String)],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept_key(key.as_bytes()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(p) = protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (k, v) in extra {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------- client

/// What a client asks for in its upgrade request.
#[derive(Debug, Clone, Default)]
pub struct ClientRequest {
    /// `Host` header value (host, and port if not the default).
    pub host: String,
    /// Request target: path and query, starting with `/`.
    pub target: String,
    /// The `Sec-WebSocket-Key`; [`generate_key`] makes one.
    pub key: String,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// Extra header fields.
    pub headers: Vec<(String, String)>,
}

impl ClientRequest {
    /// Appends the request head to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(
            out,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
            self.target, self.host, self.key
        );
        if !self.protocols.is_empty() {
            let _ = write!(
                out,
                "Sec-WebSocket-Protocol: {}\r\n",
                self.protocols.join(", ")
            );
        }
        for (k, v) in &self.headers {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A parsed HTTP response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields in order.
    pub headers: Vec<Header>,
}

impl Response {
    /// The first header called `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Checks a server's answer to `req`; returns the chosen subprotocol.
    /// Any extension in the answer is an error (none was offered).
    pub fn validate(&self, req: &ClientRequest) -> Result<Option<String>, HandshakeError> {
        let off = crate::extension::DeflateConfig::default();
        self.validate_with(req, &off).map(|(p, _)| p)
    }

    /// Like [`Response::validate`], also accepting a permessage-deflate
    /// answer to the offer made for `deflate`.
    pub fn validate_with(
        &self,
        req: &ClientRequest,
        deflate: &crate::extension::DeflateConfig,
    ) -> Result<(Option<String>, Option<crate::extension::DeflateParams>), HandshakeError> {
        if self.status != 101 {
            return Err(HandshakeError::Status(self.status));
        }
        if !has_token(&self.headers, "upgrade", "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !has_token(&self.headers, "connection", "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let mut accepts = find_header(&self.headers, "sec-websocket-accept");
        match (accepts.next(), accepts.next()) {
            (Some(a), None) if a == accept_key(req.key.as_bytes()).as_bytes() => {}
            _ => return Err(HandshakeError::BadAccept),
        }
        let ext = crate::extension::accept_client_response(
            header_tokens(&self.headers, "sec-websocket-extensions"),
            deflate,
        )?;
        let mut protos = header_tokens(&self.headers, "sec-websocket-protocol");
        let proto = match (protos.next(), protos.next()) {
            (None, _) => None,
            (Some(p), None) if req.protocols.iter().any(|o| o == p) => Some(p.to_owned()),
            _ => return Err(HandshakeError::UnrequestedProtocol),
        };
        Ok((proto, ext))
    }
}

/// Accumulates a response head across reads.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
}

impl ResponseReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data` and parses the response once its head is complete.
    pub fn feed(
        &mut self,
        data: &[u8],
        max_bytes: usize,
        max_headers: usize,
    ) -> Result<Head<Response>, HandshakeError> {
        accumulate(&mut self.buf, data, max_bytes, |b| {
            parse_response(b, max_headers)
        })
    }
}

/// Parses a complete response head; bytes after it are an error here.
pub fn parse_response_head(head: &[u8], max_headers: usize) -> Result<Response, HandshakeError> {
    match parse_response(head, max_headers)? {
        Some((resp, n)) if n == head.len() => Ok(resp),
        _ => Err(HandshakeError::Malformed),
    }
}

/// Parses a response head from the start of `buf`: `Ok(None)` if it is
/// not complete yet, else the response and the length of its head.
pub fn parse_response(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(Response, usize)>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders { max: max_headers })
        }
        Err(_) => return Err(HandshakeError::Malformed),
    };
    Ok(Some((
        Response {
            status: resp.code.unwrap_or(0),
            reason: resp.reason.unwrap_or_default().to_owned(),
            headers: copy_headers(resp.headers),
        },
        n,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat?room=a&token=x HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nCookie: a=1; session=abc\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn parse(s: &str) -> Request {
        match RequestReader::new().feed(s.as_bytes(), 8192, 64).unwrap() {
            Head::Complete(r, rest) => {
                assert!(rest.is_empty());
                r
            }
            Head::Partial => panic!("partial"),
        }
    }

    #[test]
    fn rfc_1_3_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn good_request_and_accessors() {
        let r = parse(GOOD);
        assert_eq!(r.validate_upgrade(), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(r.path(), "/chat");
        assert_eq!(r.query(), Some("room=a&token=x"));
        assert_eq!(r.query_param("token"), Some("x"));
        assert_eq!(r.origin(), Some("http://example.com"));
        assert_eq!(r.cookie("session"), Some("abc"));
        assert_eq!(r.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        let mut out = Vec::new();
        write_accept_response(r.validate_upgrade().unwrap(), Some("chat"), &[], &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(s.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(s.contains("Sec-WebSocket-Protocol: chat\r\n"));
    }

    #[test]
    fn split_at_every_position_and_leftover_kept() {
        let mut wire = GOOD.as_bytes().to_vec();
        wire.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        for cut in 0..wire.len() {
            let mut rd = RequestReader::new();
            let first = rd.feed(&wire[..cut], 8192, 64).unwrap();
            let (req, rest) = match first {
                Head::Complete(r, rest) => {
                    let mut rest = rest;
                    rest.extend_from_slice(&wire[cut..]);
                    (r, rest)
                }
                Head::Partial => match rd.feed(&wire[cut..], 8192, 64).unwrap() {
                    Head::Complete(r, rest) => (r, rest),
                    Head::Partial => panic!("partial at {cut}"),
                },
            };
            assert_eq!(req, parse(GOOD));
            assert_eq!(rest, [0x81, 0x80, 1, 2, 3, 4]);
        }
        // Byte by byte.
        let mut rd = RequestReader::new();
        let mut done = None;
        for (i, b) in wire.iter().enumerate() {
            if let Head::Complete(r, rest) = rd.feed(std::slice::from_ref(b), 8192, 64).unwrap() {
                done = Some((i, r, rest));
                break;
            }
        }
        let (i, r, _) = done.unwrap();
        assert_eq!(i, GOOD.len() - 1);
        assert_eq!(r, parse(GOOD));
    }

    fn reject(s: &str) -> HandshakeError {
        let r = parse(s);
        r.validate_upgrade().unwrap_err()
    }

    #[test]
    fn reject_paths_have_right_status() {
        let cases: Vec<(String, HandshakeError, u16)> = vec![
            (
                GOOD.replace("GET", "POST"),
                HandshakeError::MethodNotGet,
                405,
            ),
            (
                GOOD.replace("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::HttpVersion,
                400,
            ),
            (
                GOOD.replace("Host: server.example.com\r\n", ""),
                HandshakeError::MissingHost,
                400,
            ),
            (
                GOOD.replace("Upgrade: websocket", "Upgrade: h2c"),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                HandshakeError::MissingKey,
                400,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
                HandshakeError::BadKey,
                400,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!!"),
                HandshakeError::BadKey,
                400,
            ),
            (
                GOOD.replace("Version: 13", "Version: 8"),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""),
                HandshakeError::UnsupportedVersion,
                426,
            ),
        ];
        for (req, err, status) in cases {
            assert_eq!(reject(&req), err, "{req}");
            assert_eq!(err.status(), status);
            let mut out = Vec::new();
            write_error_response(err, &mut out);
            let resp = parse_response_head(&out[..find_head_end(&out, 0).unwrap()], 16).unwrap();
            assert_eq!(resp.status, status);
            if status == 426 {
                assert_eq!(resp.header("sec-websocket-version"), Some("13"));
            }
        }
    }

    #[test]
    fn tokens_are_case_insensitive_in_lists() {
        let odd = GOOD
            .replace("Upgrade: websocket", "uPgRaDe: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE");
        assert!(parse(&odd).validate_upgrade().is_ok());
    }

    #[test]
    fn size_and_count_limits() {
        let big = GOOD.replace(
            "Origin:",
            &format!("X-Big: {}\r\nOrigin:", "a".repeat(9000)),
        );
        let mut rd = RequestReader::new();
        assert_eq!(
            rd.feed(big.as_bytes(), 8192, 64).unwrap_err(),
            HandshakeError::TooLarge { max: 8192 }
        );
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = GOOD.replace("Origin:", &format!("{many}Origin:"));
        let mut rd = RequestReader::new();
        assert_eq!(
            rd.feed(req.as_bytes(), 8192, 64).unwrap_err(),
            HandshakeError::TooManyHeaders { max: 64 }
        );
        assert_eq!(HandshakeError::TooManyHeaders { max: 64 }.status(), 431);
        // A partial head that never ends is cut at the limit.
        let mut rd = RequestReader::new();
        let mut res = Ok(Head::Partial);
        for _ in 0..100 {
            res = rd.feed(&[b'a'; 100], 8192, 64);
            if res.is_err() {
                break;
            }
        }
        assert!(matches!(
            res,
            Err(HandshakeError::TooLarge { .. }) | Err(HandshakeError::Malformed)
        ));
    }

    /// Found by fuzzing (fuzz/regressions/handshake_*): httparse accepts
    /// bare-LF line ends, so the head must end where httparse says, and the
    /// bytes after it must reach the WebSocket stream, not vanish.
    #[test]
    fn bare_lf_heads_split_where_httparse_ends_them() {
        let req = "GET /chat HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\nX\r\n\r\n";
        match RequestReader::new().feed(req.as_bytes(), 8192, 64).unwrap() {
            Head::Complete(r, rest) => {
                assert!(r.validate_upgrade().is_ok());
                assert_eq!(rest, b"X\r\n\r\n");
            }
            Head::Partial => panic!("partial"),
        }
        // A header hidden behind a bare-LF empty line is not part of the head.
        let req = "GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: chat\n\r\nSec-WebSocket-Version: 8\r\n\r\n";
        match RequestReader::new().feed(req.as_bytes(), 8192, 64).unwrap() {
            Head::Complete(r, rest) => {
                assert_eq!(r.header("sec-websocket-version"), None);
                assert_eq!(rest, b"Sec-WebSocket-Version: 8\r\n\r\n");
            }
            Head::Partial => panic!("partial"),
        }
        let resp: &[u8] = b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n\n\x81\x05Hello\x81\x02\r\n\r\n";
        match ResponseReader::new().feed(resp, 8192, 64).unwrap() {
            Head::Complete(r, rest) => {
                assert_eq!(r.status, 101);
                assert_eq!(&rest[..7], b"\x81\x05Hello");
                assert_eq!(rest.len(), 7 + 6);
            }
            Head::Partial => panic!("partial"),
        }
        // Split at every position: the same result.
        let full = resp;
        for cut in 0..full.len() {
            let mut rd = ResponseReader::new();
            let first = rd.feed(&full[..cut], 8192, 64).unwrap();
            let rest = match first {
                Head::Complete(_, mut rest) => {
                    rest.extend_from_slice(&full[cut..]);
                    rest
                }
                Head::Partial => match rd.feed(&full[cut..], 8192, 64).unwrap() {
                    Head::Complete(_, rest) => rest,
                    Head::Partial => panic!("partial at {cut}"),
                },
            };
            assert_eq!(rest.len(), 13, "cut {cut}");
        }
    }

    #[test]
    fn garbage_is_rejected_early() {
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        assert_eq!(
            RequestReader::new().feed(&hello, 8192, 64).unwrap_err(),
            HandshakeError::Malformed
        );
    }

    #[test]
    fn client_request_and_response_check() {
        let req = ClientRequest {
            host: "localhost:9001".into(),
            target: "/a?b=c".into(),
            key: generate_key(),
            protocols: vec!["chat".into()],
            headers: vec![("X-Test".into(), "1".into())],
        };
        let mut out = Vec::new();
        req.write(&mut out);
        let parsed = parse(std::str::from_utf8(&out).unwrap());
        assert_eq!(parsed.validate_upgrade(), Ok(req.key.as_str()));
        assert_eq!(parsed.header("x-test"), Some("1"));

        let mut resp = Vec::new();
        write_accept_response(&req.key, Some("chat"), &[], &mut resp);
        let r = parse_response_head(&resp, 16).unwrap();
        assert_eq!(r.validate(&req), Ok(Some("chat".into())));

        let mut resp = Vec::new();
        write_accept_response(&generate_key(), None, &[], &mut resp);
        let r = parse_response_head(&resp, 16).unwrap();
        assert_eq!(r.validate(&req), Err(HandshakeError::BadAccept));

        let mut resp = Vec::new();
        write_accept_response(&req.key, Some("other"), &[], &mut resp);
        let r = parse_response_head(&resp, 16).unwrap();
        assert_eq!(r.validate(&req), Err(HandshakeError::UnrequestedProtocol));

        let mut resp = Vec::new();
        write_accept_response(
            &req.key,
            None,
            &[(
                "Sec-WebSocket-Extensions".into(),
                "permessage-deflate".into(),
            )],
            &mut resp,
        );
        let r = parse_response_head(&resp, 16).unwrap();
        assert_eq!(r.validate(&req), Err(HandshakeError::UnrequestedExtension));

        let mut resp = Vec::new();
        write_http_response(403, &[], b"no", &mut resp);
        let end = find_head_end(&resp, 0).unwrap();
        let r = parse_response_head(&resp[..end], 16).unwrap();
        assert_eq!(r.validate(&req), Err(HandshakeError::Status(403)));
    }
}
