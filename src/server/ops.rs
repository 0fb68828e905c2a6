//! What the loop answers itself, before the handler sees a request: the
//! readiness and metrics endpoints, and the 503 that new sessions get
//! while a graceful shutdown drains the old ones. And the metrics
//! snapshots a loop publishes.

use std::time::{Duration, Instant};

use crate::handshake::Request;

use super::access::{bearer_token, same_secret};
use super::entry::Phase;
use super::guard::guarded;
use super::metrics::{Metrics, MetricsWriter, Snapshot};
use super::{Core, Handler, HttpResponse, Server};

/// `Retry-After` on the 503 a draining server answers: long enough for a
/// load balancer to have seen `/readyz` fail and moved on.
pub(super) const DRAIN_RETRY_AFTER: &str = "5";

/// How often at most a loop publishes its metrics when something moved.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The loop's own endpoints and its metrics slot; all off by default.
#[derive(Default)]
pub(crate) struct Ops {
    publisher: Option<Publisher>,
    metrics_path: Option<String>,
    metrics_token: Option<String>,
    ready_path: Option<String>,
}

struct Publisher {
    metrics: Metrics,
    slot: usize,
    /// No snapshot before this, unless asked for one (a scrape).
    next: Instant,
    /// `Stats::activity` at the last snapshot.
    activity: u64,
}

impl<H: Handler> Server<H> {
    /// Publishes this loop's metrics into `metrics`, to be read with
    /// [`Metrics::render`] (on another listener, say). Give every loop of
    /// the process the same `Metrics`: a scrape sums them. Counting costs
    /// a plain integer increment per event; a snapshot is taken at most
    /// about once a second, and only after something happened.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        let slot = metrics.register();
        self.core.ops.publisher = Some(Publisher {
            metrics: metrics.clone(),
            slot,
            next: self.core.now,
            activity: 0,
        });
        publish(&mut self.core, &self.handler);
        self
    }

    /// Answers `GET path` on this server's own port with the metrics of
    /// every loop publishing into the same [`Metrics`] (this loop's
    /// counted up to the moment). With `token`, the request needs
    /// `Authorization: Bearer TOKEN`, else 401. Calls
    /// [`Server::with_metrics`] with a new `Metrics` if it was not called.
    pub fn serve_metrics(mut self, path: &str, token: Option<String>) -> Self {
        if self.core.ops.publisher.is_none() {
            self = self.with_metrics(&Metrics::new());
        }
        self.core.ops.metrics_path = Some(path.to_owned());
        self.core.ops.metrics_token = token;
        self
    }

    /// Answers `GET path` with 200 `ready` while this server takes new
    /// sessions, and 503 once a graceful shutdown has begun or while
    /// [`Handler::ready`] is false: the check for a load balancer's
    /// routing (liveness is the application's own, such as `/healthz`).
    pub fn serve_readiness(mut self, path: &str) -> Self {
        self.core.ops.ready_path = Some(path.to_owned());
        self
    }

    /// The [`Metrics`] this loop publishes into, if any.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.core.ops.publisher.as_ref().map(|p| &p.metrics)
    }

    /// Publishes a snapshot if one is due and something moved.
    pub(super) fn publish_if_due(&mut self) {
        if let Some(p) = &self.core.ops.publisher {
            if self.core.now >= p.next && p.activity != self.core.stats.activity() {
                publish(&mut self.core, &self.handler);
            }
        }
    }

    /// When the loop must wake to publish what moved since the last
    /// snapshot (`None`: nothing to publish).
    pub(super) fn publish_at(&self) -> Option<Instant> {
        let p = self.core.ops.publisher.as_ref()?;
        (p.activity != self.core.stats.activity()).then_some(p.next)
    }
}

/// Takes this loop's snapshot and publishes it.
pub(super) fn publish<H: Handler>(core: &mut Core, handler: &H) {
    if core.ops.publisher.is_none() {
        return;
    }
    let snap = snapshot(core, handler);
    let activity = core.stats.activity();
    let now = core.now;
    if let Some(p) = core.ops.publisher.as_mut() {
        p.metrics.publish(p.slot, snap);
        p.activity = activity;
        p.next = now + PUBLISH_EVERY;
    }
}

fn snapshot<H: Handler>(core: &mut Core, handler: &H) -> Snapshot {
    let mut queued = 0;
    for (_, e) in core.slab.iter() {
        queued += match &e.phase {
            Phase::Open { conn } => conn.buffered(),
            Phase::Draining { conn, out, .. } => {
                out.len() + conn.as_ref().map_or(0, |c| c.buffered())
            }
            Phase::Handshake { .. } => 0,
        };
    }
    let mut w = MetricsWriter::new();
    if guarded("metrics", "loop", || handler.metrics(&mut w)).is_none() {
        core.stats.handler_panics += 1;
    }
    let ready = ready(core, handler);
    let backlog = &core.handle.backlog;
    Snapshot {
        stats: core.stats.clone(),
        open: core.open as u64,
        tcp: core.slab.len() as u64,
        write_queue_bytes: queued as u64,
        rooms: core.rooms.len() as u64,
        handle_queue: backlog.waiting() as u64,
        handle_queue_full: backlog.refusals(),
        draining: core.shutdown_at.is_some(),
        ready,
        app: w.into_samples(),
    }
}

fn ready<H: Handler>(core: &mut Core, handler: &H) -> bool {
    if core.shutdown_at.is_some() {
        return false;
    }
    guarded("ready", "loop", || handler.ready()).unwrap_or_else(|| {
        core.stats.handler_panics += 1;
        false
    })
}

/// The loop's own answer to a plain request, if it is for one of its
/// endpoints.
pub(super) fn own_endpoint<H: Handler>(
    core: &mut Core,
    handler: &H,
    req: &Request,
) -> Option<HttpResponse> {
    let path = req.path();
    let get = matches!(req.method.as_str(), "GET" | "HEAD");
    if core.ops.ready_path.as_deref() == Some(path) {
        if !get {
            return Some(method_not_allowed());
        }
        return Some(if ready(core, handler) {
            HttpResponse::text(200, "ready\n")
        } else if core.shutdown_at.is_some() {
            draining()
        } else {
            HttpResponse::text(503, "not ready\n")
        });
    }
    if core.ops.metrics_path.as_deref() == Some(path) {
        if !get {
            return Some(method_not_allowed());
        }
        if let Some(token) = &core.ops.metrics_token {
            let given = bearer_token(req).unwrap_or_default();
            if !same_secret(given.as_bytes(), token.as_bytes()) {
                let mut r = HttpResponse::text(
                    401,
                    "metrics need the server's token: 'Authorization: Bearer ...'\n",
                );
                r.headers
                    .push(("WWW-Authenticate".into(), "Bearer realm=\"wsloop\"".into()));
                return Some(r);
            }
        }
        publish(core, handler);
        let text = core.ops.publisher.as_ref()?.metrics.render();
        return Some(HttpResponse::with_type(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            text,
        ));
    }
    None
}

fn method_not_allowed() -> HttpResponse {
    let mut r = HttpResponse::text(405, "use GET\n");
    r.headers.push(("Allow".into(), "GET, HEAD".into()));
    r
}

/// The answer to anything that would start a session while draining.
pub(super) fn draining() -> HttpResponse {
    let mut r = HttpResponse::text(
        503,
        "server is shutting down: connect again (another instance will answer)\n",
    );
    r.headers
        .push(("Retry-After".into(), DRAIN_RETRY_AFTER.into()));
    r
}
