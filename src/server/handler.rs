//! What applications write: a [`Handler`] with callbacks that run inside the
//! loop, and the decisions it returns at the handshake.

use crate::close::CloseCode;
use crate::handshake::Request;
use crate::protocol::{CloseInfo, Message};

use super::{Ctx, MetricsWriter};

/// Identifies a connection for its whole life. Ids are not reused while the
/// server runs (a slot's generation changes when it is reused), and differ
/// across the servers (event loops) of one process: each carries its loop's
/// number, one of 256 handed out in turn as servers are made. It displays
/// as `loop:slot.generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

/// Bits of an id that hold the slab key: at most 16 777 215 connections at
/// once per loop (far above any descriptor limit).
pub(crate) const KEY_BITS: u32 = 24;
pub(crate) const MAX_KEY: usize = (1 << KEY_BITS) - 1;

impl ConnId {
    pub(crate) fn new(loop_id: u8, key: usize, gen: u32) -> Self {
        debug_assert!(key <= MAX_KEY);
        ConnId(((gen as u64) << 32) | ((loop_id as u64) << KEY_BITS) | key as u64)
    }
    pub(crate) fn key(self) -> usize {
        (self.0 as usize) & MAX_KEY
    }
    pub(crate) fn loop_id(self) -> u8 {
        (self.0 >> KEY_BITS) as u8
    }
    pub(crate) fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// A number for logs (unique in the process, like the id).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}.{}", self.loop_id(), self.key(), self.gen())
    }
}

/// A plain HTTP response (health checks, pages, rejections). It is sent
/// with `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Extra header fields (Content-Length and Connection are added).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }

    /// A response with a content type.
    pub fn with_type(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }
}

/// The answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Accept, optionally choosing one of the offered subprotocols and
    /// adding response headers.
    Accept {
        /// The chosen subprotocol: one the client offered
        /// ([`Request::protocols`], compared exactly). Any other is an
        /// application bug: the server logs it and answers 500 instead of
        /// a 101 the client would have to fail.
        protocol: Option<String>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Refuse with an HTTP response (401, 403, ...).
    Reject(HttpResponse),
}

impl Upgrade {
    /// Accept with no subprotocol.
    pub fn accept() -> Self {
        Upgrade::Accept {
            protocol: None,
            headers: Vec::new(),
        }
    }

    /// Refuse with `status` and `reason` as a text body.
    pub fn reject(status: u16, reason: impl Into<String>) -> Self {
        let mut body = reason.into();
        body.push('\n');
        Upgrade::Reject(HttpResponse::text(status, body))
    }
}

/// An allow-list of `Origin` values for upgrades (browsers send `Origin`;
/// a page from another site is refused with 403 before any frame).
///
/// Origins are compared as ASCII case-insensitive `scheme://host[:port]`.
/// Requests without `Origin` (non-browser clients, which could send any
/// value anyway) are allowed unless [`OriginAllowList::require`] is set.
#[derive(Debug, Clone, Default)]
pub struct OriginAllowList {
    origins: Vec<String>,
    require: bool,
}

impl OriginAllowList {
    /// Allows exactly these origins (an empty list allows any).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(origins: I) -> Self {
        OriginAllowList {
            origins: origins
                .into_iter()
                .map(|o| o.into().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            require: false,
        }
    }

    /// Also refuses requests that carry no `Origin`.
    pub fn require(mut self, yes: bool) -> Self {
        self.require = yes;
        self
    }

    /// True if `req` may upgrade.
    pub fn allows(&self, req: &Request) -> bool {
        match req.origin() {
            None => !self.require,
            Some(_) if self.origins.is_empty() => true,
            Some(o) => {
                let o = o.trim_end_matches('/');
                self.origins.iter().any(|a| a.eq_ignore_ascii_case(o))
            }
        }
    }

    /// `None` if `req` may upgrade, else the 403 rejection to return.
    pub fn check(&self, req: &Request) -> Option<Upgrade> {
        if self.allows(req) {
            None
        } else {
            Some(Upgrade::reject(
                403,
                format!("origin {} is not allowed", req.origin().unwrap_or("(none)")),
            ))
        }
    }
}

/// The application. Every callback runs on the loop thread; keep them short
/// and non-blocking. `ctx` sends to any connection, groups, or all.
///
/// # Panics in callbacks
///
/// A panic in a callback costs the connection it was about, not the server
/// (it is caught with `catch_unwind`, so not under `panic = "abort"`). It is
/// logged at error level with the connection's id, and:
/// - in `on_open`, `on_message`, `on_ping`, `on_pong`, `on_drain`: that
///   connection is closed with 1011 "internal error" after what is already
///   queued for it; its later input is no longer handed to the handler,
///   and `on_close` is still called for it;
/// - in `on_upgrade` or `on_http`: the request is answered 500;
/// - in `on_close`, `on_shutdown` or a [`Handle::run`](super::Handle::run)
///   closure: nothing more (the rest of that call is skipped).
///
/// The handler itself keeps running, for every other connection, with its
/// state as the panic left it: possibly half-way through an update. Keep
/// invariants that span several fields simple, or repair them in
/// `on_close`.
pub trait Handler {
    /// A valid WebSocket upgrade request arrived. Default: accept.
    fn on_upgrade(&mut self, ctx: &mut Ctx<'_>, id: ConnId, req: &Request) -> Upgrade {
        let _ = (ctx, id, req);
        Upgrade::accept()
    }

    /// A plain HTTP request (no upgrade) arrived. Default: 426 Upgrade
    /// Required.
    fn on_http(&mut self, req: &Request) -> HttpResponse {
        let _ = req;
        let mut r = HttpResponse::text(426, "this is a WebSocket endpoint\n");
        r.headers.push(("Upgrade".into(), "websocket".into()));
        r.headers
            .push(("Sec-WebSocket-Version".into(), "13".into()));
        r
    }

    /// The connection is open (the 101 response is queued).
    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = (ctx, id);
    }

    /// A message arrived. It borrows the loop's read buffer when it came in
    /// one frame: copy what you keep.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>);

    /// A ping arrived (the pong is already queued).
    fn on_ping(&mut self, ctx: &mut Ctx<'_>, id: ConnId, payload: &[u8]) {
        let _ = (ctx, id, payload);
    }

    /// A pong arrived.
    fn on_pong(&mut self, ctx: &mut Ctx<'_>, id: ConnId, payload: &[u8]) {
        let _ = (ctx, id, payload);
    }

    /// The connection is closed (close handshake, failure, timeout or lost
    /// TCP). Called once per opened connection; the id is gone afterwards.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, info: &CloseInfo) {
        let _ = (ctx, id, info);
    }

    /// The write queue of `id` went from above the high water mark to below
    /// the low one: sending may resume.
    fn on_drain(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = (ctx, id);
    }

    /// The server starts a graceful shutdown; every open connection will be
    /// sent close 1001 after what is already queued for it.
    fn on_shutdown(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// True while the application can take new sessions (say, its link to
    /// a backplane is up). The server's readiness endpoint
    /// ([`Server::serve_readiness`](super::Server::serve_readiness))
    /// answers 503 while this is false, and during a graceful shutdown.
    /// Called on the loop thread for each readiness request and metrics
    /// snapshot: keep it cheap. Default: always ready.
    fn ready(&self) -> bool {
        true
    }

    /// Adds the application's own metrics (rooms, members, queue depths)
    /// to the loop's, when metrics are on
    /// ([`Server::with_metrics`](super::Server::with_metrics)). Called on
    /// the loop thread about once a second at most, and for a scrape the
    /// loop answers. Default: none.
    fn metrics(&self, out: &mut MetricsWriter) {
        let _ = out;
    }
}

/// Close code and reason used for connections closed by a shutdown.
pub(crate) const SHUTDOWN_CLOSE: (CloseCode, &str) =
    (CloseCode::GOING_AWAY, "server shutting down");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{Head, RequestReader};

    fn req(origin: Option<&str>) -> Request {
        let o = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{o}\r\n");
        match RequestReader::new().feed(raw.as_bytes(), 4096, 16).unwrap() {
            Head::Complete(r, _) => r,
            Head::Partial => panic!("partial"),
        }
    }

    #[test]
    fn origin_allow_list() {
        let list = OriginAllowList::new(["https://chat.example.com", "http://localhost:8080/"]);
        assert!(list.allows(&req(Some("https://chat.example.com"))));
        assert!(list.allows(&req(Some("HTTPS://Chat.Example.com"))));
        assert!(list.allows(&req(Some("http://localhost:8080"))));
        assert!(!list.allows(&req(Some("https://evil.example.com"))));
        assert!(!list.allows(&req(Some("https://chat.example.com.evil.com"))));
        assert!(list.allows(&req(None)));
        assert!(!list.clone().require(true).allows(&req(None)));
        match list.check(&req(Some("https://evil.example.com"))) {
            Some(Upgrade::Reject(r)) => {
                assert_eq!(r.status, 403);
                assert!(String::from_utf8_lossy(&r.body).contains("evil.example.com"));
            }
            other => panic!("{other:?}"),
        }
        assert!(OriginAllowList::new(Vec::<String>::new()).allows(&req(Some("https://any"))));
    }
}
