//! The subscriber thread: every room channel and the broadcast channel,
//! handed to the loop.

use std::thread;
use std::time::Duration;

use log::warn;
use redis::{Client, Connection, RedisError, Value};

use super::jobs::{Event, Side};
use super::poster::Poster;
use super::retry::{open, Retry};
use super::scripts::{all_channel, room_channel};

/// The subscriber pings when nothing arrived for this long.
const SUB_IDLE: Duration = Duration::from_secs(10);

/// Parses a room channel message: `EPOCH SEQ JSON`.
fn parse_live(room: &str, payload: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(payload).ok()?;
    let (epoch, rest) = text.split_once(' ')?;
    let (seq, json) = rest.split_once(' ')?;
    Some(Event::Live {
        room: room.into(),
        epoch: epoch.into(),
        seq: seq.parse().ok()?,
        json: json.into(),
    })
}

enum SubEnd {
    /// The server stopped.
    Exit,
    Lost(RedisError),
}

fn subscribe(con: &mut Connection, poster: &Poster, retry: &mut Retry) -> SubEnd {
    let room_prefix = room_channel("");
    let all = all_channel();
    let mut ps = con.as_pubsub();
    let setup = ps
        .psubscribe(format!("{room_prefix}*"))
        .and_then(|_| ps.subscribe(&all))
        .and_then(|_| ps.set_read_timeout(Some(SUB_IDLE)));
    if let Err(e) = setup {
        return SubEnd::Lost(e);
    }
    retry.connected();
    if !poster.post(Event::Link(Side::Subscriber, true)) {
        return SubEnd::Exit;
    }
    loop {
        let msg = match ps.get_message() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => {
                if let Err(e) = ps.ping::<Value>() {
                    return SubEnd::Lost(e);
                }
                continue;
            }
            Err(e) => return SubEnd::Lost(e),
        };
        let channel = msg.get_channel_name();
        let ev = if let Some(room) = channel.strip_prefix(&room_prefix) {
            match parse_live(room, msg.get_payload_bytes()) {
                Some(ev) => ev,
                None => {
                    warn!("redis subscriber: malformed message on {channel:?}: ignored");
                    continue;
                }
            }
        } else if channel == all {
            match String::from_utf8(msg.get_payload_bytes().to_vec()) {
                Ok(json) => Event::LiveAll(json),
                Err(_) => continue,
            }
        } else {
            continue;
        };
        // Let the loop catch up rather than pile up events without bound
        // (Redis buffers, and drops a subscriber that falls too far behind:
        // the catch-up after reconnecting covers that).
        if !poster.wait_room() || !poster.post(ev) {
            return SubEnd::Exit;
        }
    }
}

pub(super) fn subscriber(client: Client, addr: String, poster: Poster) {
    let mut retry = Retry::new("subscriber", addr);
    loop {
        thread::sleep(retry.wait());
        let mut con = match open(&client) {
            Ok(c) => c,
            Err(e) => {
                retry.failed(&e);
                continue;
            }
        };
        match subscribe(&mut con, &poster, &mut retry) {
            SubEnd::Exit => return,
            SubEnd::Lost(e) => {
                retry.lost(&e);
                if !poster.post(Event::Link(Side::Subscriber, false)) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_live;
    use crate::redis::jobs::Event;

    #[test]
    fn parse_live_payload() {
        match parse_live("r", b"ab12 17 {\"x\":\"a b\"}") {
            Some(Event::Live {
                room,
                epoch,
                seq,
                json,
            }) => {
                assert_eq!(
                    (&*room, &*epoch, seq, &*json),
                    ("r", "ab12", 17, "{\"x\":\"a b\"}")
                );
            }
            _ => panic!("not parsed"),
        }
        assert!(parse_live("r", b"ab12 x {}").is_none());
        assert!(parse_live("r", b"ab12").is_none());
    }
}
