//! The input side of a connection: read the socket, parse the upgrade
//! request, feed frames to the protocol and the events to the handler.

use std::io::{self, Read};

use log::{debug, error, info};

use crate::close::CloseCode;
use crate::config::RateAction;
use crate::handshake::{self, Head, Request};
use crate::protocol::{Connection, Event, Role};

use super::entry::{lost, respond, start_draining, Entry, Phase};
use super::guard::guarded;
use super::rate::Bucket;
use super::{ops, peer, Core, Ctx, Handler, HttpResponse, Upgrade};

/// Reads per readiness event before other connections get a turn.
pub(super) const MAX_READS_PER_EVENT: usize = 8;

/// Reads from `key` until it would block, processing as it goes.
pub(super) fn read_conn<H: Handler>(
    core: &mut Core,
    handler: &mut H,
    scratch: &mut [u8],
    key: usize,
    to_eof: bool,
) {
    for _ in 0..MAX_READS_PER_EVENT {
        let high = core.config.write_buffer_high;
        let Some(e) = core.slab.get_mut(key) else {
            return;
        };
        if e.dead {
            return;
        }
        if let Phase::Open { conn } = &e.phase {
            // Backpressure: a peer whose replies pile up is not read from
            // until they drain (checked before every read, not per batch).
            if e.paused || conn.buffered() > high {
                if !e.paused {
                    core.stats.read_pauses += 1;
                }
                e.paused = true;
                e.above_high = true;
                core.mark_dirty(key);
                return;
            }
        }
        let tls = e.stream.is_tls();
        // A large binary frame's payload is read straight into its message
        // (no copy out of `scratch`), at most `scratch.len()` bytes a read
        // so that a pass takes no more from one peer than before.
        let Entry { stream, phase, .. } = e;
        let offered = match phase {
            Phase::Open { conn } => conn.payload_buf(),
            _ => None,
        };
        let direct = offered.is_some();
        let (res, want) = match offered {
            Some(buf) => {
                let want = buf.len().min(scratch.len());
                (stream.read(&mut buf[..want]), want)
            }
            None => (stream.read(scratch), scratch.len()),
        };
        let n = match res {
            Ok(0) => {
                let e = &mut core.slab[key];
                let orderly = match &e.phase {
                    // The peer's close frame came first: its FIN is the
                    // normal end. Our reply (and what was queued before it)
                    // still goes out; the entry ends once it is written.
                    Phase::Open { conn } => conn.is_closed(),
                    Phase::Draining { shut, .. } => !*shut,
                    Phase::Handshake { .. } => false,
                };
                if orderly {
                    e.eof = true;
                    core.mark_dirty(key);
                } else {
                    lost(core, handler, key, "peer closed TCP");
                }
                return;
            }
            Ok(n) => {
                core.stats.bytes_in += n as u64;
                if direct {
                    core.stats.bytes_direct += n as u64;
                }
                n
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                lost(core, handler, key, &err.to_string());
                return;
            }
        };
        if direct {
            if let Phase::Open { conn } = &mut core.slab[key].phase {
                conn.payload_filled(n);
            }
            // The filled bytes are taken by the first `poll_event`.
            feed_frames(core, handler, key, &mut []);
        } else {
            process(core, handler, &mut scratch[..n], key);
        }
        let drained = !tls || core.slab.get(key).is_some_and(|e| e.stream.drained());
        if n < want && !to_eof && drained {
            // The socket is empty for now; the next arrival is a new edge
            // (over TLS, unless the stream still holds data: see `drained`).
            return;
        }
    }
    core.owe_read(key);
}

fn process<H: Handler>(core: &mut Core, handler: &mut H, data: &mut [u8], key: usize) {
    let (max_bytes, max_headers) = (core.config.max_handshake_bytes, core.config.max_headers);
    match &mut core.slab[key].phase {
        Phase::Handshake { reader, peer, .. } => match reader.feed(data, max_bytes, max_headers) {
            Ok(Head::Partial) => {}
            Ok(Head::Complete(mut req, rest)) => {
                let peer = *peer;
                let client = peer::client_addr(peer, &req, &core.config.trusted_proxies);
                req.set_addrs(peer, client);
                handshake_done(core, handler, key, req, client, rest)
            }
            Err(err) => {
                info!("{peer}: bad request, answered {}: {err}", err.status());
                refuse_handshake(core, key, err);
            }
        },
        Phase::Open { .. } => feed_frames(core, handler, key, data),
        Phase::Draining { .. } => {}
    }
}

/// Answers a request that failed the handshake with the status for `err`.
pub(super) fn refuse_handshake(core: &mut Core, key: usize, err: crate::HandshakeError) {
    core.stats.handshake_failed(&err);
    core.stats.responded(err.status());
    let mut bytes = Vec::new();
    handshake::write_error_response(err, &mut bytes);
    start_draining(core, key, &bytes);
}

fn handshake_done<H: Handler>(
    core: &mut Core,
    handler: &mut H,
    key: usize,
    req: Request,
    client: std::net::IpAddr,
    mut rest: Vec<u8>,
) {
    let id = core.id(key);
    // The path only: a query may carry a token.
    let path = req.path();
    if !req.wants_upgrade() {
        core.stats.http_requests += 1;
        let resp = match ops::own_endpoint(core, handler, &req) {
            Some(r) => r,
            None => guarded("on_http", id, || handler.on_http(&req)).unwrap_or_else(|| {
                core.stats.handler_panics += 1;
                internal_error()
            }),
        };
        if resp.status >= 400 {
            info!("{client}: {} {path} -> {}", req.method, resp.status);
        } else {
            debug!("{client}: {} {path} -> {}", req.method, resp.status);
        }
        respond(core, key, &resp, req.method == "HEAD");
        return;
    }
    if core.shutdown_at.is_some() {
        info!("{client}: upgrade to {path} refused with 503: draining");
        respond(core, key, &ops::draining(), false);
        return;
    }
    let wskey = match req.validate_upgrade() {
        Ok(k) => k.to_owned(),
        Err(err) => {
            info!(
                "{client}: bad upgrade request, answered {}: {err}",
                err.status()
            );
            refuse_handshake(core, key, err);
            return;
        }
    };
    let answer = guarded("on_upgrade", id, || {
        handler.on_upgrade(&mut Ctx { core }, id, &req)
    })
    .unwrap_or_else(|| {
        core.stats.handler_panics += 1;
        Upgrade::Reject(internal_error())
    });
    match answer {
        Upgrade::Reject(resp) => {
            info!(
                "{id}: upgrade to {path} from {client} refused with {}",
                resp.status
            );
            respond(core, key, &resp, false);
        }
        Upgrade::Accept {
            protocol: Some(p), ..
        } if !req.protocols().any(|o| o == p) => {
            // The handler's mistake, not the client's: the client would
            // have to fail a 101 naming a subprotocol it did not offer.
            error!(
                "{id}: on_upgrade chose subprotocol {p:?}, which the client did not offer \
                 (offered: {:?}); answering 500",
                req.protocols().collect::<Vec<_>>()
            );
            let resp = HttpResponse::text(
                500,
                "server error: the server chose a subprotocol that was not offered\n",
            );
            respond(core, key, &resp, false);
        }
        Upgrade::Accept { protocol, headers } => {
            #[allow(unused_mut)]
            let mut headers = headers;
            #[allow(unused_mut)]
            let mut conn = Connection::new(Role::Server, core.config.clone(), core.now);
            #[cfg(feature = "deflate")]
            if let Some((params, answer)) =
                crate::extension::negotiate_server(req.extensions(), &core.config.deflate)
            {
                headers.push(("Sec-WebSocket-Extensions".into(), answer));
                conn.enable_deflate(&params);
            }
            let mut bytes = Vec::new();
            handshake::write_accept_response(&wskey, protocol.as_deref(), &headers, &mut bytes);
            conn.push_raw(&bytes);
            let e = &mut core.slab[key];
            e.phase = Phase::Open { conn };
            // The handshake's timer item stays live (it fires as a no-op
            // check and schedules the connection's own deadline then)
            // instead of becoming stale: one heap item per idle
            // connection, not two (32 bytes each at 10,000 of them).
            core.open += 1;
            core.stats.upgrades += 1;
            match req.peer_addr() {
                Some(peer) if peer.ip() != client => {
                    debug!("{id}: open {path} from {client} (peer {peer})")
                }
                peer => debug!(
                    "{id}: open {path} from {}",
                    peer.map_or_else(|| client.to_string(), |p| p.to_string())
                ),
            }
            if guarded("on_open", id, || handler.on_open(&mut Ctx { core }, id)).is_none() {
                core.fail_by_panic(key);
            }
            core.schedule(key);
            core.mark_dirty(key);
            if !rest.is_empty() {
                // Frames that came with the request must not be lost.
                feed_frames(core, handler, key, &mut rest);
            }
        }
    }
}

/// The answer when `on_http` or `on_upgrade` panicked.
fn internal_error() -> HttpResponse {
    HttpResponse::text(500, "internal server error\n")
}

fn feed_frames<H: Handler>(core: &mut Core, handler: &mut H, key: usize, data: &mut [u8]) {
    let id = core.id(key);
    let mut input: &mut [u8] = data;
    loop {
        let now = core.now;
        let Some(e) = core.slab.get_mut(key).filter(|e| !e.dead) else {
            return;
        };
        let Phase::Open { conn } = &mut e.phase else {
            return;
        };
        let ev = match conn.poll_event(&mut input, now) {
            Ok(Some(ev)) => {
                if let Event::Message(_) = ev {
                    core.stats.messages_in += 1;
                }
                ev
            }
            Ok(None) => {
                // Replies (pongs, the close) and what the handler sent.
                e.mark_dirty(key, &mut core.dirty);
                return;
            }
            Err(err) => {
                debug!("{id}: {err}");
                break;
            }
        };
        if let (Event::Message(m), Some(limit)) = (&ev, &core.config.rate_limit) {
            let slot = &mut e.extra.get_or_insert_with(Default::default).bucket;
            if !Bucket::take(slot, limit, m.as_bytes().len(), now) {
                match limit.action {
                    RateAction::Drop => continue,
                    _ => {
                        debug!("{id}: rate limit exceeded");
                        conn.close(CloseCode::POLICY, "rate limit exceeded", now);
                        continue;
                    }
                }
            }
        }
        if e.handler_failed {
            // Its handler panicked: the input is still parsed (the close
            // reply must be seen) but no longer handed out.
            continue;
        }
        let mut ctx = Ctx { core };
        let done = match ev {
            Event::Message(m) => guarded("on_message", id, || handler.on_message(&mut ctx, id, m)),
            Event::Ping(p) => guarded("on_ping", id, || handler.on_ping(&mut ctx, id, &p)),
            Event::Pong(p) => guarded("on_pong", id, || handler.on_pong(&mut ctx, id, &p)),
            Event::Close(..) => Some(()),
        };
        if done.is_none() {
            core.fail_by_panic(key);
        }
    }
    core.mark_dirty(key);
}
