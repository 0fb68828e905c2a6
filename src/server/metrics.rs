//! Metrics in the Prometheus text format (version 0.0.4).
//!
//! Each event loop counts in plain integers of its own ([`Stats`]); no
//! counter is shared between threads. A loop registered with a
//! [`Metrics`] copies its counters, a few gauges and its handler's own
//! metrics ([`Handler::metrics`](super::Handler::metrics)) into its slot
//! at most about once a second, and only when something moved; a scrape
//! sums the slots. A scrape answered by a loop (`Server::serve_metrics`)
//! first refreshes that loop's own slot, so a single-loop server is read
//! live; other loops are at most about a second behind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use super::stats::{Stats, CLOSE_SLOTS, REASONS, STATUSES};

/// Where the event loops of a process publish their counters, and what
/// renders them for a scrape. Cheap to clone; give the same one to every
/// loop (`Server::with_metrics`).
#[derive(Clone, Default)]
pub struct Metrics {
    slots: Arc<Mutex<Vec<Option<Snapshot>>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// One loop's published state.
#[derive(Clone, Default)]
pub(super) struct Snapshot {
    pub(super) stats: Stats,
    pub(super) open: u64,
    pub(super) tcp: u64,
    pub(super) write_queue_bytes: u64,
    pub(super) rooms: u64,
    pub(super) handle_queue: u64,
    pub(super) handle_queue_full: u64,
    pub(super) draining: bool,
    pub(super) ready: bool,
    pub(super) app: Vec<Sample>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A slot for one more loop.
    pub(super) fn register(&self) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.push(None);
        slots.len() - 1
    }

    pub(super) fn publish(&self, slot: usize, snap: Snapshot) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots[slot] = Some(snap);
    }

    /// Every loop's last published metrics, summed, in the Prometheus text
    /// format (serve it as `text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let snaps: Vec<Snapshot> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect();
        render(&snaps)
    }
}

/// The metrics a [`Handler`](super::Handler) adds to its loop's
/// (rooms, members, a backplane's state...): see
/// [`Handler::metrics`](super::Handler::metrics).
///
/// Names must match `[a-zA-Z_:][a-zA-Z0-9_:]*` and label names
/// `[a-zA-Z_][a-zA-Z0-9_]*`; a counter's name should end in `_total`. A
/// sample with a bad name, a name the server uses itself, or a name
/// already written with another type is left out. Samples with the same
/// name and labels from several loops are summed.
#[derive(Debug, Default)]
pub struct MetricsWriter {
    samples: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Sample {
    name: String,
    help: String,
    kind: Kind,
    labels: Vec<(String, String)>,
    value: f64,
}

fn valid_name(s: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c == '_' || c.is_ascii_alphabetic() || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut chars = s.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

impl MetricsWriter {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn into_samples(self) -> Vec<Sample> {
        self.samples
    }

    /// A counter: a count that only goes up while the process runs.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.push(name, help, Kind::Counter, labels, value as f64);
    }

    /// A gauge: a value that goes up and down (a size, a state as 0 or 1).
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, Kind::Gauge, labels, value);
    }

    fn push(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], value: f64) {
        if !valid_name(name, true)
            || BUILTIN.contains(&name)
            || labels.iter().any(|(k, _)| !valid_name(k, false))
        {
            return;
        }
        self.samples.push(Sample {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        });
    }
}

/// The names the server writes itself.
const BUILTIN: &[&str] = &[
    "wsloop_event_loops",
    "wsloop_ready",
    "wsloop_draining",
    "wsloop_connections_accepted_total",
    "wsloop_connections_open",
    "wsloop_tcp_connections",
    "wsloop_accept_drops_total",
    "wsloop_accept_errors_total",
    "wsloop_upgrades_total",
    "wsloop_http_requests_total",
    "wsloop_refusals_total",
    "wsloop_handshake_failures_total",
    "wsloop_messages_received_total",
    "wsloop_messages_sent_total",
    "wsloop_received_bytes_total",
    "wsloop_sent_bytes_total",
    "wsloop_closes_total",
    "wsloop_write_queue_bytes",
    "wsloop_write_queue_overflows_total",
    "wsloop_read_pauses_total",
    "wsloop_ping_timeouts_total",
    "wsloop_handler_panics_total",
    "wsloop_handle_requests_total",
    "wsloop_handle_queue_requests",
    "wsloop_handle_queue_full_total",
    "wsloop_rooms",
];

/// Writes metric families in the text format.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.name()
        );
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = if value.is_nan() {
            writeln!(self.0, " NaN")
        } else if value.is_infinite() {
            writeln!(self.0, " {}Inf", if value > 0.0 { "+" } else { "-" })
        } else {
            writeln!(self.0, " {value}")
        };
    }

    fn one(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value as f64);
    }

    /// A labelled family: only the labels that counted something.
    fn labelled<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        let values: Vec<_> = values.into_iter().filter(|(_, v)| *v > 0).collect();
        if values.is_empty() {
            return;
        }
        self.family(name, Kind::Counter, help);
        for (l, v) in values {
            self.sample(name, &[(label, l)], v as f64);
        }
    }
}

fn render(snaps: &[Snapshot]) -> String {
    use Kind::{Counter, Gauge};
    let mut s = Stats::default();
    let mut g = Snapshot::default();
    for snap in snaps {
        s.add(&snap.stats);
        g.open += snap.open;
        g.tcp += snap.tcp;
        g.write_queue_bytes += snap.write_queue_bytes;
        g.rooms += snap.rooms;
        g.handle_queue += snap.handle_queue;
        g.handle_queue_full += snap.handle_queue_full;
        g.draining |= snap.draining;
    }
    let ready = !snaps.is_empty() && snaps.iter().all(|s| s.ready && !s.draining);
    let mut o = Out(String::with_capacity(4096));
    o.one(
        "wsloop_event_loops",
        Gauge,
        "Event loops reporting.",
        snaps.len() as u64,
    );
    o.one(
        "wsloop_ready",
        Gauge,
        "1 while the server takes new sessions (what /readyz answers), else 0.",
        ready as u64,
    );
    o.one(
        "wsloop_draining",
        Gauge,
        "1 once a graceful shutdown has begun.",
        g.draining as u64,
    );
    o.one(
        "wsloop_connections_accepted_total",
        Counter,
        "TCP connections accepted.",
        s.accepted,
    );
    o.one(
        "wsloop_connections_open",
        Gauge,
        "WebSocket connections open.",
        g.open,
    );
    o.one(
        "wsloop_tcp_connections",
        Gauge,
        "TCP connections held: in the handshake, open, or closing.",
        g.tcp,
    );
    o.one(
        "wsloop_accept_drops_total",
        Counter,
        "Connections dropped at accept without an answer (far over max_connections).",
        s.accept_drops,
    );
    o.one(
        "wsloop_accept_errors_total",
        Counter,
        "accept() failures (out of descriptors and the like).",
        s.accept_errors,
    );
    o.one(
        "wsloop_upgrades_total",
        Counter,
        "WebSocket upgrades accepted (101).",
        s.upgrades,
    );
    o.one(
        "wsloop_http_requests_total",
        Counter,
        "Plain HTTP requests answered (health checks, pages, metrics).",
        s.http_requests,
    );
    let statuses: Vec<String> = STATUSES.iter().map(u16::to_string).collect();
    o.labelled(
        "wsloop_refusals_total",
        "Requests answered with a status of 400 or more, upgrades or not, by status.",
        "status",
        statuses
            .iter()
            .map(String::as_str)
            .chain(["other"])
            .zip(s.refusals),
    );
    o.labelled(
        "wsloop_handshake_failures_total",
        "Opening handshakes that failed before the application saw them, by reason.",
        "reason",
        REASONS.iter().copied().zip(s.handshake_failures),
    );
    o.one(
        "wsloop_messages_received_total",
        Counter,
        "WebSocket messages received.",
        s.messages_in,
    );
    o.one(
        "wsloop_messages_sent_total",
        Counter,
        "WebSocket messages queued for sending.",
        s.messages_out,
    );
    o.one(
        "wsloop_received_bytes_total",
        Counter,
        "Bytes read from connections (after TLS), handshakes included.",
        s.bytes_in,
    );
    o.one(
        "wsloop_sent_bytes_total",
        Counter,
        "Bytes written to connections (before TLS), handshakes included.",
        s.bytes_out,
    );
    let codes: Vec<String> = (0..CLOSE_SLOTS - 1)
        .map(|i| (1000 + i).to_string())
        .collect();
    o.labelled(
        "wsloop_closes_total",
        "WebSocket connections ended, by close code (1006: no close handshake).",
        "code",
        codes
            .iter()
            .map(String::as_str)
            .chain(["other"])
            .zip(s.closes),
    );
    o.one(
        "wsloop_write_queue_bytes",
        Gauge,
        "Bytes queued for writing, all connections.",
        g.write_queue_bytes,
    );
    o.labelled(
        "wsloop_write_queue_overflows_total",
        "Sends past the write queue limit, by overflow policy.",
        "policy",
        ["close", "drop"].into_iter().zip(s.overflows),
    );
    o.one(
        "wsloop_read_pauses_total",
        Counter,
        "Times reading from a peer paused because its write queue passed the high water mark.",
        s.read_pauses,
    );
    o.one(
        "wsloop_ping_timeouts_total",
        Counter,
        "Connections dropped because a pong did not come in time.",
        s.ping_timeouts,
    );
    o.one(
        "wsloop_handler_panics_total",
        Counter,
        "Panics caught in handler callbacks.",
        s.handler_panics,
    );
    o.one(
        "wsloop_handle_requests_total",
        Counter,
        "Requests from other threads (Handle) run on the loop.",
        s.commands,
    );
    o.one(
        "wsloop_handle_queue_requests",
        Gauge,
        "Requests from other threads waiting for the loop.",
        g.handle_queue,
    );
    o.one(
        "wsloop_handle_queue_full_total",
        Counter,
        "Requests from other threads refused because the queue was full.",
        g.handle_queue_full,
    );
    o.one(
        "wsloop_rooms",
        Gauge,
        "Rooms (server groups) with members.",
        g.rooms,
    );
    render_app(&mut o, snaps);
    o.0
}

/// The handlers' own samples: grouped by name (first help and type win),
/// summed over loops by name and labels.
fn render_app(o: &mut Out, snaps: &[Snapshot]) {
    struct Family<'a> {
        help: &'a str,
        kind: Kind,
        samples: BTreeMap<Vec<(&'a str, &'a str)>, f64>,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut families: BTreeMap<&str, Family<'_>> = BTreeMap::new();
    for sample in snaps.iter().flat_map(|s| &s.app) {
        let fam = families.entry(&sample.name).or_insert_with(|| {
            order.push(&sample.name);
            Family {
                help: &sample.help,
                kind: sample.kind,
                samples: BTreeMap::new(),
            }
        });
        if fam.kind != sample.kind {
            continue;
        }
        let labels: Vec<(&str, &str)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        *fam.samples.entry(labels).or_insert(0.0) += sample.value;
    }
    for name in order {
        let fam = &families[name];
        o.family(name, fam.kind, fam.help);
        for (labels, v) in &fam.samples {
            o.sample(name, labels, *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_summed_and_app_samples_merged() {
        let mut a = Snapshot {
            open: 2,
            ready: true,
            ..Snapshot::default()
        };
        a.stats.messages_in = 5;
        a.stats.refused(401);
        a.stats.closed(crate::CloseCode(1009));
        let mut w = MetricsWriter::new();
        w.gauge("app_rooms", "Rooms.", &[], 3.0);
        w.counter("app_sent_total", "Sent \\ by kind.", &[("kind", "a\"b")], 4);
        w.counter("bad name", "dropped", &[], 1);
        w.counter("wsloop_rooms", "clashes with the server's", &[], 1);
        w.counter("app_rooms", "another type: dropped", &[], 1);
        a.app = w.into_samples();
        let mut b = a.clone();
        b.stats.messages_in = 7;
        b.ready = false;
        let text = render(&[a, b]);
        assert!(
            text.contains("\nwsloop_messages_received_total 12\n"),
            "{text}"
        );
        assert!(text.contains("\nwsloop_connections_open 4\n"), "{text}");
        assert!(
            text.contains("wsloop_refusals_total{status=\"401\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("wsloop_closes_total{code=\"1009\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("\nwsloop_ready 0\n"),
            "one loop not ready: {text}"
        );
        assert!(text.contains("\napp_rooms 6\n"), "{text}");
        assert!(
            text.contains("app_sent_total{kind=\"a\\\"b\"} 8\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP app_sent_total Sent \\\\ by kind.\n"),
            "{text}"
        );
        assert!(!text.contains("bad name"), "{text}");
        assert_eq!(text.matches("# TYPE wsloop_rooms ").count(), 1, "{text}");
        assert_eq!(text.matches("# TYPE app_rooms ").count(), 1, "{text}");
        // Every family has its HELP and TYPE right before its samples.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }
}
