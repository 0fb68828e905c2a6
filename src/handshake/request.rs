//! The server side: the upgrade request (or plain HTTP request) read and
//! checked, and the responses written.

use std::net::{IpAddr, SocketAddr};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::accept_key;
use super::reader::{
    copy_headers, find_header, has_token, header_tokens, parse_complete, parse_head, Head,
    HeadReader, Header, ParseHead,
};
use crate::error::HandshakeError;

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
    /// Set by the server that read the request.
    peer: Option<SocketAddr>,
    client: Option<IpAddr>,
}

impl Request {
    /// The TCP peer's address: the client, or the proxy in front of the
    /// server. `None` for a request not read by a server.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client's address: the peer's, or, when the peer is one of
    /// `Config::trusted_proxies`, the rightmost `X-Forwarded-For` entry
    /// that is not itself a trusted proxy. `None` for a request not read
    /// by a server.
    pub fn client_addr(&self) -> Option<IpAddr> {
        self.client
    }

    /// Records where the request came from (the server does, before any
    /// handler sees it).
    pub(crate) fn set_addrs(&mut self, peer: SocketAddr, client: IpAddr) {
        self.peer = Some(peer);
        self.client = Some(client);
    }

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

/// Accumulates a request head across reads.
#[derive(Debug, Default)]
pub struct RequestReader {
    head: HeadReader<Request>,
    probed: bool,
}

impl RequestReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held so far.
    pub fn buffered(&self) -> usize {
        self.head.bytes().len()
    }

    /// Memory held for the head.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.head.capacity()
    }

    /// Adds `data` and parses the request once its head is complete.
    pub fn feed(
        &mut self,
        data: &[u8],
        max_bytes: usize,
        max_headers: usize,
    ) -> Result<Head<Request>, HandshakeError> {
        let head = self.head.feed(data, max_bytes, max_headers)?;
        if matches!(head, Head::Partial) && !self.probed {
            // Catch garbage (say, a TLS ClientHello) at once instead of
            // waiting for the timeout; done once so slow senders cost no
            // re-parsing.
            self.probed = true;
            probe_request(self.head.bytes())?;
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
    parse_complete(head, max_headers)
}

/// Parses a request head from the start of `buf`: `Ok(None)` if it is not
/// complete yet, else the request and the length of its head (where the
/// WebSocket stream starts).
pub fn parse_request(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    parse_head(buf, max_headers, |buf, headers| {
        let mut req = httparse::Request::new(headers);
        let httparse::Status::Complete(n) = req.parse(buf)? else {
            return Ok(None);
        };
        Ok(Some((
            Request {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                version: req.version.unwrap_or(0),
                headers: copy_headers(req.headers),
                peer: None,
                client: None,
            },
            n,
        )))
    })
}

impl ParseHead for Request {
    fn parse(buf: &[u8], max_headers: usize) -> Result<Option<(Self, usize)>, HandshakeError> {
        parse_request(buf, max_headers)
    }
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
/// reason as the body, `Sec-WebSocket-Version: 13` on a 426 and `Allow:
/// GET` on a 405 (RFC 9110 §15.5.6).
pub fn write_error_response(err: HandshakeError, out: &mut Vec<u8>) {
    let status = err.status();
    let mut headers = Vec::new();
    match status {
        426 => {
            headers.push(("Sec-WebSocket-Version".to_owned(), "13".to_owned()));
            headers.push(("Upgrade".to_owned(), "websocket".to_owned()));
        }
        405 => headers.push(("Allow".to_owned(), "GET".to_owned())),
        _ => {}
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
