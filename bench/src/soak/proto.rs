//! Speaking the chat protocol over wsloop's blocking client, counting as
//! it goes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use wsloop::client::{connect, WebSocket};
use wsloop::{Error, Event, Message};

use super::counters::Counters;
use crate::report::json_str;

pub(super) fn join(room: &str) -> String {
    let mut j = String::from("{\"type\":\"join\",\"room\":");
    json_str(room, &mut j);
    j.push('}');
    j
}

pub(super) fn message(room: &str, text: &str) -> String {
    let mut j = String::from("{\"type\":\"message\",\"room\":");
    json_str(room, &mut j);
    j.push_str(",\"text\":");
    json_str(text, &mut j);
    j.push('}');
    j
}

/// Reads one text event within `t`: `Ok(None)` on timeout.
pub(super) fn recv_text(ws: &mut WebSocket, t: Duration) -> Result<Option<String>, Error> {
    ws.set_read_timeout(Some(t));
    loop {
        match ws.recv() {
            Ok(Event::Message(Message::Text(s))) => return Ok(Some(s.into_owned())),
            Ok(Event::Message(_)) => return Ok(None),
            Ok(Event::Close(code, reason)) => {
                return Err(Error::Url(format!("closed by server: {code} {reason}")))
            }
            Ok(_) => continue,
            Err(Error::Timeout(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Pulls `"field":NUMBER` out of a JSON line (no full parse needed).
pub(super) fn num_field(s: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let at = s.find(&key)? + key.len();
    let digits: String = s[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

pub(super) fn open(c: &Counters, url: &str) -> Option<WebSocket> {
    match connect(url) {
        Ok(mut ws) => {
            c.connects.fetch_add(1, Relaxed);
            // The welcome.
            match recv_text(&mut ws, Duration::from_secs(5)) {
                Ok(Some(w)) if w.contains("\"welcome\"") => Some(ws),
                other => {
                    c.error(format!("no welcome: {other:?}"));
                    None
                }
            }
        }
        Err(e) => {
            c.connect_failures.fetch_add(1, Relaxed);
            c.error(format!("connect: {e}"));
            None
        }
    }
}

pub(super) fn send(c: &Counters, ws: &mut WebSocket, text: &str) -> bool {
    match ws.send_text(text) {
        Ok(()) => {
            c.sent.fetch_add(1, Relaxed);
            true
        }
        Err(e) => {
            c.error(format!("send: {e}"));
            false
        }
    }
}
