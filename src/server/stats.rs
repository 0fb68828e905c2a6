//! What one event loop counts: plain integers, bumped on the loop thread
//! (no atomics, no locks on the hot path) and copied out a few times a
//! second at most, when metrics are on (see `metrics`).

use crate::close::CloseCode;
use crate::error::HandshakeError;

/// Statuses counted one by one among refusals; the rest count as "other".
pub(super) const STATUSES: [u16; 14] = [
    400, 401, 403, 404, 405, 408, 409, 413, 426, 429, 431, 500, 501, 503,
];

/// Why handshakes failed (the labels of `wsloop_handshake_failures_total`).
pub(super) const REASONS: [&str; 13] = [
    "malformed",
    "method",
    "http_version",
    "host",
    "upgrade",
    "connection",
    "key",
    "version",
    "too_large",
    "too_many_headers",
    "timeout",
    "closed",
    "other",
];

/// The `REASONS` slot for a peer that went away mid-handshake.
pub(super) const REASON_CLOSED: usize = 11;

/// Close codes 1000 to 1015 one by one; the rest count as "other".
pub(super) const CLOSE_SLOTS: usize = 17;

/// Counters of one loop. Each field is only ever incremented (gauges are
/// computed when a snapshot is taken).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(super) accepted: u64,
    /// Connections dropped at accept (far over `max_connections`, or no
    /// id left).
    pub(super) accept_drops: u64,
    /// accept() errors other than "would block" (EMFILE...).
    pub(super) accept_errors: u64,
    pub(super) upgrades: u64,
    pub(super) http_requests: u64,
    /// Responses with a status of 400 or above, by `STATUSES` slot.
    pub(super) refusals: [u64; STATUSES.len() + 1],
    pub(super) handshake_failures: [u64; REASONS.len()],
    pub(super) messages_in: u64,
    pub(super) messages_out: u64,
    pub(super) bytes_in: u64,
    /// Of `bytes_in`, those read straight into a message (large frames).
    pub(super) bytes_direct: u64,
    pub(super) bytes_out: u64,
    pub(super) closes: [u64; CLOSE_SLOTS],
    /// Sends past `write_buffer_limit`: [close policy, drop policy].
    pub(super) overflows: [u64; 2],
    pub(super) read_pauses: u64,
    pub(super) ping_timeouts: u64,
    pub(super) handler_panics: u64,
    /// Requests from other threads run on the loop.
    pub(super) commands: u64,
}

impl Stats {
    pub(super) fn refused(&mut self, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        self.refusals[slot] += 1;
    }

    /// A response went out: refusals are the ones of 400 and above.
    pub(super) fn responded(&mut self, status: u16) {
        if status >= 400 {
            self.refused(status);
        }
    }

    pub(super) fn handshake_failed(&mut self, err: &HandshakeError) {
        let slot = match err {
            HandshakeError::Malformed => 0,
            HandshakeError::MethodNotGet => 1,
            HandshakeError::HttpVersion => 2,
            HandshakeError::MissingHost => 3,
            HandshakeError::MissingUpgrade => 4,
            HandshakeError::MissingConnectionUpgrade => 5,
            HandshakeError::MissingKey | HandshakeError::BadKey => 6,
            HandshakeError::UnsupportedVersion => 7,
            HandshakeError::TooLarge { .. } => 8,
            HandshakeError::TooManyHeaders { .. } => 9,
            HandshakeError::Timeout => 10,
            HandshakeError::Eof => REASON_CLOSED,
            _ => 12,
        };
        self.handshake_failures[slot] += 1;
    }

    pub(super) fn closed(&mut self, code: CloseCode) {
        let slot = match code.0 {
            c @ 1000..=1015 => (c - 1000) as usize,
            _ => CLOSE_SLOTS - 1,
        };
        self.closes[slot] += 1;
    }

    /// Moves whenever anything worth publishing happened: a loop whose
    /// activity has not moved since its last snapshot need not wake to
    /// take another.
    pub(super) fn activity(&self) -> u64 {
        self.accepted
            .wrapping_add(self.accept_errors)
            .wrapping_add(self.bytes_in)
            .wrapping_add(self.bytes_out)
            .wrapping_add(self.messages_out)
            .wrapping_add(self.ping_timeouts)
            .wrapping_add(self.handler_panics)
            .wrapping_add(self.commands)
            .wrapping_add(self.closes.iter().sum::<u64>())
    }

    /// Adds `other` into `self` (a scrape sums the loops).
    pub(super) fn add(&mut self, other: &Stats) {
        fn sum<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.accepted += other.accepted;
        self.accept_drops += other.accept_drops;
        self.accept_errors += other.accept_errors;
        self.upgrades += other.upgrades;
        self.http_requests += other.http_requests;
        sum(&mut self.refusals, &other.refusals);
        sum(&mut self.handshake_failures, &other.handshake_failures);
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_direct += other.bytes_direct;
        self.bytes_out += other.bytes_out;
        sum(&mut self.closes, &other.closes);
        sum(&mut self.overflows, &other.overflows);
        self.read_pauses += other.read_pauses;
        self.ping_timeouts += other.ping_timeouts;
        self.handler_panics += other.handler_panics;
        self.commands += other.commands;
    }
}
