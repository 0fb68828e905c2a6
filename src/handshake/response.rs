//! The client side: the upgrade request written, the server's response
//! read and checked.

use super::accept_key;
use super::reader::{
    copy_headers, find_header, has_token, header_tokens, parse_complete, parse_head, Head,
    HeadReader, Header, ParseHead,
};
use crate::error::HandshakeError;

/// What a client asks for in its upgrade request.
#[derive(Debug, Clone, Default)]
pub struct ClientRequest {
    /// `Host` header value (host, and port if not the default).
    pub host: String,
    /// Request target: path and query, starting with `/`.
    pub target: String,
    /// The `Sec-WebSocket-Key`; [`generate_key`](super::generate_key) makes one.
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
        // Read whole, not through `header_tokens`: that skips a value that
        // is not UTF-8, and the answer must not lose an extension unseen.
        let exts = find_header(&self.headers, "sec-websocket-extensions")
            .map(std::str::from_utf8)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| HandshakeError::MalformedExtensions)?;
        let ext = crate::extension::accept_client_response(exts, deflate)?;
        // A value that is not UTF-8 names nothing offered.
        if find_header(&self.headers, "sec-websocket-protocol")
            .any(|v| std::str::from_utf8(v).is_err())
        {
            return Err(HandshakeError::UnrequestedProtocol);
        }
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
    head: HeadReader<Response>,
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
        self.head.feed(data, max_bytes, max_headers)
    }
}

/// Parses a complete response head; bytes after it are an error here.
pub fn parse_response_head(head: &[u8], max_headers: usize) -> Result<Response, HandshakeError> {
    parse_complete(head, max_headers)
}

/// Parses a response head from the start of `buf`: `Ok(None)` if it is
/// not complete yet, else the response and the length of its head.
pub fn parse_response(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(Response, usize)>, HandshakeError> {
    parse_head(buf, max_headers, |buf, headers| {
        let mut resp = httparse::Response::new(headers);
        let httparse::Status::Complete(n) = resp.parse(buf)? else {
            return Ok(None);
        };
        Ok(Some((
            Response {
                status: resp.code.unwrap_or(0),
                reason: resp.reason.unwrap_or_default().to_owned(),
                headers: copy_headers(resp.headers),
            },
            n,
        )))
    })
}

impl ParseHead for Response {
    fn parse(buf: &[u8], max_headers: usize) -> Result<Option<(Self, usize)>, HandshakeError> {
        parse_response(buf, max_headers)
    }
}
