//! The client's upgrade: the request's state until the server's answer,
//! and what the answer settled (subprotocol, permessage-deflate, time).

use std::time::{Duration, Instant};

use super::nonblocking::{Client, State};
use crate::extension::DeflateParams;
use crate::handshake::{ClientRequest, Head, ResponseReader};
use crate::protocol::{Connection, Role};

/// What only the upgrade needs: boxed and dropped once it is done, so an
/// open client does not carry it.
#[derive(Debug)]
pub(super) struct Upgrade {
    pub(super) request: ClientRequest,
    /// The upgrade request not written yet, from `pre_pos` on (its own
    /// exact-size buffer: a queue chunk is 4 KiB, and thousands of them
    /// freed after the handshake leave the heap full of holes).
    pub(super) pre: Vec<u8>,
    pub(super) pre_pos: usize,
    pub(super) reader: ResponseReader,
    /// The `now` given to `connect_addr`.
    pub(super) started: Instant,
    pub(super) deadline: Instant,
}

impl Client {
    /// The permessage-deflate parameters agreed in the upgrade; `None`
    /// if it was not offered, the server declined it, or the client is
    /// not upgraded yet.
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }

    /// How long the upgrade took: from the `now` given to
    /// [`Client::connect_addr`] to the `now` of the [`Client::handle_io`]
    /// that read the server's answer (TCP connect, TLS and the HTTP
    /// exchange). `None` until upgraded.
    pub fn upgrade_time(&self) -> Option<Duration> {
        self.upgrade_time
    }

    /// True while the TCP connect is in progress (before the upgrade
    /// request can be sent): tells a connect timeout from a handshake one.
    pub fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting)
    }

    pub(super) fn handshake_input(&mut self, data: &[u8]) {
        let c = &self.config;
        let Some(up) = self.upgrade.as_mut() else {
            return;
        };
        match up.reader.feed(data, c.max_handshake_bytes, c.max_headers) {
            Ok(Head::Partial) => {}
            Ok(Head::Complete(resp, rest)) => {
                match resp.validate_with(&up.request, &self.config.deflate) {
                    Ok((protocol, deflate)) => {
                        self.protocol = protocol.map(String::into_boxed_str);
                        self.upgrade_time = Some(self.now.saturating_duration_since(up.started));
                        self.state = State::Open;
                        #[allow(unused_mut)]
                        let mut conn = Connection::new(Role::Client, self.config.clone(), self.now);
                        #[cfg(feature = "deflate")]
                        if let Some(p) = &deflate {
                            conn.enable_deflate(p);
                        }
                        self.deflate = deflate;
                        self.conn = Some(conn);
                        // The request and the response's bytes are not
                        // needed any more: an idle client keeps neither.
                        self.upgrade = None;
                        // Frames that came with the response.
                        (self.input_pos, self.input_end) = (0, rest.len());
                        self.input = rest;
                    }
                    Err(e) => self.finish(Some(e.into())),
                }
            }
            Err(e) => self.finish(Some(e.into())),
        }
    }
}
