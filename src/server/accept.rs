//! Accepting connections: the listener's readiness, `max_connections`,
//! and the back-off when descriptors run out.

use std::io;
use std::time::Duration;

use log::{debug, info, warn};
use mio::{Interest, Token};

use crate::buffer::WriteQueue;
use crate::handshake::{self, RequestReader};
use crate::stream::Stream;

use super::entry::{Entry, Phase};
use super::handler::MAX_KEY;
use super::{Handler, Server};

/// How long accepting pauses after EMFILE/ENFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// 503 answers in flight beyond `max_connections`; past this, drop.
const REJECT_SLACK: usize = 64;
/// Accepts per call. Loops sharing one listener (`--threads`) are all woken
/// by a new connection; one that drained the whole backlog in one go would
/// starve the others. The rest of the backlog is taken next pass.
pub(super) const ACCEPTS_PER_CALL: usize = 32;

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 (Linux numbering).
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

impl<H: Handler> Server<H> {
    pub(super) fn accept(&mut self) {
        self.accept_more = false;
        let Some(listener) = &self.listener else {
            return;
        };
        if self.accept_resume.is_some() {
            // Backing off after EMFILE: a listener event does not retry
            // before the pause ends (`turn` accepts then).
            return;
        }
        for _ in 0..ACCEPTS_PER_CALL {
            let (mut sock, addr) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) if is_fd_exhaustion(&e) => {
                    self.core.stats.accept_errors += 1;
                    if !self.accept_warned {
                        // Once per episode, not on every retry.
                        self.accept_warned = true;
                        warn!("accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?} at a time until descriptors free up");
                    }
                    self.accept_resume = Some(self.core.now + ACCEPT_BACKOFF);
                    return;
                }
                Err(e) => {
                    self.core.stats.accept_errors += 1;
                    warn!("accept: {e}");
                    self.accept_resume = Some(self.core.now + ACCEPT_BACKOFF);
                    return;
                }
            };
            if self.accept_warned {
                self.accept_warned = false;
                info!("accepting again");
            }
            let _ = sock.set_nodelay(true);
            let core = &mut self.core;
            core.stats.accepted += 1;
            let over = core
                .config
                .max_connections
                .is_some_and(|max| core.slab.len() >= max);
            if over && core.slab.len() >= core.config.max_connections.unwrap_or(0) + REJECT_SLACK {
                core.stats.accept_drops += 1;
                debug!("{addr}: dropped, far over max_connections");
                continue;
            }
            let entry = core.slab.vacant_entry();
            let key = entry.key();
            if key > MAX_KEY {
                // Past what an id can name (16M connections in one loop).
                core.stats.accept_drops += 1;
                warn!("{addr}: dropped, no id left in this loop");
                continue;
            }
            if let Err(e) = core.registry.register(
                &mut sock,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("register: {e}");
                continue;
            }
            core.next_gen = core.next_gen.wrapping_add(1);
            let now = core.now;
            let phase = if over {
                info!("{addr}: refused with 503: max_connections reached");
                core.stats.refused(503);
                let mut out = WriteQueue::new();
                let mut bytes = Vec::new();
                handshake::write_http_response(
                    503,
                    &[],
                    b"server is at max_connections\n",
                    &mut bytes,
                );
                out.push_slice(&bytes);
                Phase::Draining {
                    conn: None,
                    out,
                    deadline: now + core.config.close_timeout,
                    shut: false,
                }
            } else {
                Phase::Handshake {
                    reader: RequestReader::new(),
                    deadline: now + core.config.handshake_timeout,
                    peer: addr,
                }
            };
            #[cfg(feature = "tls")]
            let stream = match &self.tls {
                Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                    Ok(c) => Stream::tls(sock, c.into()),
                    Err(e) => {
                        warn!("TLS setup: {e}");
                        let _ = core.registry.deregister(&mut sock);
                        continue;
                    }
                },
                None => Stream::plain(sock),
            };
            #[cfg(not(feature = "tls"))]
            let stream = Stream::plain(sock);
            entry.insert(Entry {
                stream,
                gen: core.next_gen,
                phase,
                dirty: false,
                dead: false,
                paused: false,
                above_high: false,
                timer_at: None,
                eof: false,
                owed_read: false,
                handler_failed: false,
                extra: None,
            });
            if over {
                core.mark_dirty(key);
            }
            core.schedule(key);
        }
        // The cap was reached: with edge-triggered readiness no new event
        // comes for what is still waiting, so try again next pass.
        self.accept_more = true;
    }
}
