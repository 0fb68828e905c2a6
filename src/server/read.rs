//! The input side of a connection: read the socket, parse the upgrade
//! request, feed frames to the protocol and the events to the handler.

use std::io::{self, Read};

use log::{debug, error};

use crate::close::CloseCode;
use crate::config::RateAction;
use crate::handshake::{self, Head, Request};
use crate::protocol::{Connection, Event, Role};

use super::entry::{lost, start_draining, Entry, Phase};
use super::guard::guarded;
use super::rate::Bucket;
use super::{Core, Ctx, Handler, HttpResponse, Upgrade};

/// Reads per readiness event before other connections get a turn.
const MAX_READS_PER_EVENT: usize = 8;

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
                e.paused = true;
                e.above_high = true;
                core.mark_dirty(key);
                return;
            }
        }
        let tls = e.stream.is_tls();
        let n = match e.stream.read(scratch) {
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
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                lost(core, handler, key, &err.to_string());
                return;
            }
        };
        process(core, handler, &mut scratch[..n], key);
        if n < scratch.len() && !to_eof && !tls {
            // The socket is empty for now; the next arrival is a new edge
            // (over TLS, rustls may hold records it has not handed out).
            return;
        }
    }
    core.owe_read(key);
}

fn process<H: Handler>(core: &mut Core, handler: &mut H, data: &mut [u8], key: usize) {
    let (max_bytes, max_headers) = (core.config.max_handshake_bytes, core.config.max_headers);
    match &mut core.slab[key].phase {
        Phase::Handshake { reader, .. } => match reader.feed(data, max_bytes, max_headers) {
            Ok(Head::Partial) => {}
            Ok(Head::Complete(req, rest)) => handshake_done(core, handler, key, req, rest),
            Err(err) => {
                debug!("bad handshake: {err}");
                let mut bytes = Vec::new();
                handshake::write_error_response(err, &mut bytes);
                start_draining(core, key, &bytes);
            }
        },
        Phase::Open { .. } => feed_frames(core, handler, key, data),
        Phase::Draining { .. } => {}
    }
}

fn handshake_done<H: Handler>(
    core: &mut Core,
    handler: &mut H,
    key: usize,
    req: Request,
    mut rest: Vec<u8>,
) {
    let mut bytes = Vec::new();
    if !req.wants_upgrade() {
        let resp = guarded("on_http", core.id(key), || handler.on_http(&req))
            .unwrap_or_else(internal_error);
        handshake::write_http_response(resp.status, &resp.headers, &resp.body, &mut bytes);
        if req.method == "HEAD" {
            // Same headers (Content-Length included), no body.
            bytes.truncate(bytes.len() - resp.body.len());
        }
        debug!("HTTP {} {} -> {}", req.method, req.target, resp.status);
        start_draining(core, key, &bytes);
        return;
    }
    let wskey = match req.validate_upgrade() {
        Ok(k) => k.to_owned(),
        Err(err) => {
            debug!("bad upgrade: {err}");
            handshake::write_error_response(err, &mut bytes);
            start_draining(core, key, &bytes);
            return;
        }
    };
    let id = core.id(key);
    let answer = guarded("on_upgrade", id, || {
        handler.on_upgrade(&mut Ctx { core }, id, &req)
    })
    .unwrap_or_else(|| Upgrade::Reject(internal_error()));
    match answer {
        Upgrade::Reject(resp) => {
            debug!("{id}: upgrade rejected with {}", resp.status);
            handshake::write_http_response(resp.status, &resp.headers, &resp.body, &mut bytes);
            start_draining(core, key, &bytes);
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
            handshake::write_http_response(
                500,
                &[],
                b"server error: the server chose a subprotocol that was not offered\n",
                &mut bytes,
            );
            start_draining(core, key, &bytes);
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
            handshake::write_accept_response(&wskey, protocol.as_deref(), &headers, &mut bytes);
            conn.push_raw(&bytes);
            let e = &mut core.slab[key];
            e.phase = Phase::Open { conn };
            e.timer_at = None;
            core.open += 1;
            debug!("{id}: open {}", req.target);
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
        let Some(Entry {
            phase: Phase::Open { conn, .. },
            dead: false,
            bucket,
            handler_failed,
            ..
        }) = core.slab.get_mut(key)
        else {
            return;
        };
        let ev = match conn.poll_event(&mut input, now) {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(err) => {
                debug!("{id}: {err}");
                break;
            }
        };
        if let (Event::Message(m), Some(limit)) = (&ev, &core.config.rate_limit) {
            if !Bucket::take(bucket, limit, m.as_bytes().len(), now) {
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
        if *handler_failed {
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
