//! The subscriber thread: the channels of the rooms with members on this
//! server (see `subs`; the broadcast stream is one of them, wanted while
//! connections are open here), handed to the loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::warn;
use redis::{Client, Connection, PubSub, RedisError, Value};

use super::jobs::{Event, Side};
use super::poster::Poster;
use super::queue::Gauge;
use super::retry::{open, Retry, IO_TIMEOUT};
use super::scripts::{all_channel, room_channel};
use super::subs::{diff, Subs};
use crate::bus::BROADCASTS;

/// The subscriber pings when nothing arrived for this long.
const SUB_IDLE: Duration = Duration::from_secs(10);
/// How often it looks for rooms to (un)subscribe while nothing arrives: a
/// join to a room new on this server waits about this long more.
const POLL: Duration = Duration::from_millis(50);
/// Channels per SUBSCRIBE or UNSUBSCRIBE.
const CHUNK: usize = 500;

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

/// Subscribes and unsubscribes to match what the loop wants (everything
/// it wants with `all`), and tells the loop each room now subscribed.
/// `Ok(false)` once the server has stopped.
fn sync(
    ps: &mut PubSub<'_>,
    have: &mut HashMap<Arc<str>, u64>,
    subs: &Subs,
    poster: &Poster,
    all: bool,
) -> Result<bool, RedisError> {
    let Some(want) = subs.take_changes(all) else {
        return Ok(true);
    };
    let (sub, unsub) = diff(have, &want);
    if sub.is_empty() && unsub.is_empty() {
        return Ok(true);
    }
    // Confirmations may take longer than a poll (a busy Redis).
    ps.set_read_timeout(Some(IO_TIMEOUT))?;
    for chunk in unsub.chunks(CHUNK) {
        let channels: Vec<String> = chunk.iter().map(|r| room_channel(r)).collect();
        ps.unsubscribe(channels)?;
        for r in chunk {
            have.remove(r);
        }
    }
    for chunk in sub.chunks(CHUNK) {
        // One command: when its first confirmation is back, Redis has
        // subscribed to all of them.
        let channels: Vec<String> = chunk.iter().map(|(r, _)| room_channel(r)).collect();
        ps.subscribe(channels)?;
        for (room, token) in chunk {
            have.insert(room.clone(), *token);
            let ev = Event::Subscribed {
                room: room.clone(),
                token: *token,
            };
            if !(poster.wait_room() && poster.post(ev)) {
                return Ok(false);
            }
        }
    }
    ps.set_read_timeout(Some(POLL))?;
    Ok(true)
}

fn subscribe(con: &mut Connection, poster: &Poster, retry: &mut Retry, subs: &Subs) -> SubEnd {
    let room_prefix = room_channel("");
    let all = all_channel();
    let mut ps = con.as_pubsub();
    let mut have = HashMap::new();
    let setup = sync(&mut ps, &mut have, subs, poster, true)
        .and_then(|alive| ps.set_read_timeout(Some(POLL)).map(|_| alive));
    match setup {
        Ok(true) => {}
        Ok(false) => return SubEnd::Exit,
        Err(e) => return SubEnd::Lost(e),
    }
    retry.connected();
    if !poster.post(Event::Link(Side::Subscriber, true)) {
        return SubEnd::Exit;
    }
    let mut heard = Instant::now();
    loop {
        match sync(&mut ps, &mut have, subs, poster, false) {
            Ok(true) => {}
            Ok(false) => return SubEnd::Exit,
            Err(e) => return SubEnd::Lost(e),
        }
        let msg = match ps.get_message() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => {
                if heard.elapsed() >= SUB_IDLE {
                    let pinged = ps
                        .set_read_timeout(Some(IO_TIMEOUT))
                        .and_then(|_| ps.ping::<Value>())
                        .and_then(|_| ps.set_read_timeout(Some(POLL)));
                    if let Err(e) = pinged {
                        return SubEnd::Lost(e);
                    }
                    heard = Instant::now();
                }
                continue;
            }
            Err(e) => return SubEnd::Lost(e),
        };
        heard = Instant::now();
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
            match parse_live(BROADCASTS, msg.get_payload_bytes()) {
                Some(ev) => ev,
                None => {
                    warn!("redis subscriber: malformed broadcast: ignored");
                    continue;
                }
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

pub(super) fn subscriber(
    client: Client,
    addr: String,
    poster: Poster,
    subs: Arc<Subs>,
    gauge: Arc<Gauge>,
) {
    let mut retry = Retry::new("subscriber", addr, gauge);
    loop {
        thread::sleep(retry.wait());
        let mut con = match open(&client) {
            Ok(c) => c,
            Err(e) => {
                retry.failed(&e);
                continue;
            }
        };
        match subscribe(&mut con, &poster, &mut retry, &subs) {
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
