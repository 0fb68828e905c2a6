//! What the loop and the Redis threads hand each other: jobs for the
//! publisher, events for the loop.

use std::sync::Arc;

use crate::bus::BROADCASTS;
use crate::wire::{unix_ms, Out};

/// `after` for a fetch that needs no messages, only where the room stands.
pub(super) const NOTHING: u64 = u64::MAX;

/// A room message as the chat encodes it for a bus that numbers messages
/// elsewhere: the JSON is `head` + seq + `tail` when numbered, `local` when
/// delivered without the bus. `id` is unique across servers and restarts:
/// Redis keeps the ids it has stored, so sending it again (a retry after a
/// lost reply) stores and publishes it once.
pub(crate) struct RoomMessage {
    pub room: Arc<str>,
    pub id: String,
    pub head: String,
    pub tail: String,
    pub local: String,
}

/// The JSON of a room message, split around its `seq` (for a bus that
/// numbers it elsewhere), plus its form for local-only delivery. Its `id`
/// is set when it is queued.
pub(crate) fn room_message(room: &str, from: &str, name: Option<&str>, text: &str) -> RoomMessage {
    let ts = unix_ms();
    numbered(room, |seq, local| {
        Out::Message {
            room,
            seq,
            from,
            name,
            text,
            ts,
            local,
        }
        .json()
    })
}

/// A broadcast, as a message of the broadcast stream
/// ([`BROADCASTS`]): numbered and kept like a room's.
pub(crate) fn broadcast_message(from: &str, name: Option<&str>, text: &str) -> RoomMessage {
    let ts = unix_ms();
    numbered(BROADCASTS, |seq, local| {
        Out::Broadcast {
            seq,
            from,
            name,
            text,
            ts,
            local,
        }
        .json()
    })
}

/// `json(seq, local)` split around its `seq` field, which must come before
/// any field a client chose.
fn numbered(room: &str, json: impl Fn(Option<u64>, bool) -> String) -> RoomMessage {
    let numbered = json(Some(0), false);
    // `,"seq":` right before an unescaped quote can only be the field
    // (inside a JSON string a quote is escaped), and it precedes `text`.
    let at = numbered
        .find(",\"seq\":0,")
        .expect("serialized message has a seq field");
    RoomMessage {
        room: room.into(),
        id: String::new(),
        head: numbered[..at + 7].to_owned(),
        tail: numbered[at + 8..].to_owned(),
        local: json(None, true),
    }
}

/// Work for the publisher thread.
pub(crate) enum Job {
    /// A room message, or a broadcast (room [`BROADCASTS`]).
    Publish(RoomMessage),
    Fetch {
        room: Arc<str>,
        after: u64,
        hint: Option<Arc<str>>,
    },
}

impl Job {
    /// The bytes it holds (what the publish queue's byte limit counts);
    /// fetches count 0 (they are few: one per room at a time).
    pub(crate) fn weight(&self) -> usize {
        match self {
            Job::Publish(m) => {
                m.room.len() + m.id.len() + m.head.len() + m.tail.len() + m.local.len()
            }
            Job::Fetch { .. } => 0,
        }
    }
}

/// What a fetch found.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(super) epoch: Arc<str>,
    pub(super) last: u64,
    pub(super) oldest: u64,
    pub(super) entries: Vec<(u64, Arc<str>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Publisher,
    Subscriber,
}

/// What the threads tell the loop.
pub(crate) enum Event {
    Link(Side, bool),
    Live {
        room: Arc<str>,
        epoch: Arc<str>,
        seq: u64,
        json: Arc<str>,
    },
    Fetched {
        room: Arc<str>,
        after: u64,
        result: Fetched,
    },
    /// A job Redis did not take (or a fetch that failed).
    Bounced(Job),
    /// Time passes: joins waiting too long for Redis are answered.
    Tick,
    /// The subscriber is subscribed to `room`'s channel, as asked with
    /// `token`.
    Subscribed {
        room: Arc<str>,
        token: u64,
    },
}

impl Event {
    /// The bytes it holds (what the inbox's byte limit counts).
    pub(crate) fn weight(&self) -> usize {
        match self {
            Event::Live { json, .. } => json.len() + 64,
            Event::Fetched { result, .. } => {
                result
                    .entries
                    .iter()
                    .map(|(_, t)| t.len() + 16)
                    .sum::<usize>()
                    + 64
            }
            Event::Bounced(job) => job.weight(),
            Event::Link(..) | Event::Tick => 0,
            Event::Subscribed { room, .. } => room.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{broadcast_message, room_message, BROADCASTS};

    #[test]
    fn broadcast_message_splits_around_seq() {
        let text = r#"x,"seq":0,"from":"y"#;
        let m = broadcast_message("u1", None, text);
        assert_eq!(&*m.room, BROADCASTS);
        let v: serde_json::Value = serde_json::from_str(&format!("{}7{}", m.head, m.tail)).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["seq"].as_u64(), v["text"].as_str()),
            (Some("broadcast"), Some(7), Some(text))
        );
        let v: serde_json::Value = serde_json::from_str(&m.local).unwrap();
        assert_eq!((v["local"].as_bool(), v.get("seq")), (Some(true), None));
    }

    #[test]
    fn room_message_splits_around_seq() {
        // Room and text that contain what the split looks for.
        let room = r#"a,"seq":0,b"#;
        let text = r#"x,"seq":0,"from":"y"#;
        let m = room_message(room, "u1", Some("N"), text);
        let numbered = format!("{}42{}", m.head, m.tail);
        let v: serde_json::Value = serde_json::from_str(&numbered).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(
            (v["room"].as_str(), v["text"].as_str()),
            (Some(room), Some(text))
        );
        assert!(numbered.starts_with(r#"{"type":"message","room":"#));
        assert!(v.get("local").is_none());
        let v: serde_json::Value = serde_json::from_str(&m.local).unwrap();
        assert_eq!((v["local"].as_bool(), v.get("seq")), (Some(true), None));
        assert_eq!(
            (v["text"].as_str(), v["name"].as_str()),
            (Some(text), Some("N"))
        );
    }
}
