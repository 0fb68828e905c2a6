use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver};

use super::*;

/// Records what members receive (and library room membership).
#[derive(Default)]
struct Rec {
    got: BTreeMap<u32, Vec<String>>,
    rooms: BTreeMap<String, Vec<u32>>,
}

impl Sink<u32> for Rec {
    fn send(&mut self, id: u32, json: &str) {
        self.got.entry(id).or_default().push(json.to_owned());
    }
    fn send_many(&mut self, ids: &[u32], json: &str) {
        for id in ids {
            self.send(*id, json);
        }
    }
    fn join(&mut self, id: u32, room: &str) {
        let m = self.rooms.entry(room.into()).or_default();
        if !m.contains(&id) {
            m.push(id);
        }
    }
    fn publish(&mut self, room: &str, json: &str) {
        for id in self.rooms.get(room).cloned().unwrap_or_default() {
            self.send(id, json);
        }
    }
    fn broadcast_all(&mut self, _json: &str) {}
}

impl Rec {
    /// What `id` received, shortened: "joined:LAST", "gap:FROM[r]",
    /// "m:SEQ" (messages are "m:SEQ" JSON strings in these tests).
    fn take(&mut self, id: u32) -> Vec<String> {
        self.got
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|j| {
                if j.starts_with("m:") || j.starts_with("local:") {
                    return j;
                }
                let v: serde_json::Value = serde_json::from_str(&j).unwrap();
                match v["type"].as_str().unwrap() {
                    "joined" => format!(
                        "joined:{}{}",
                        v["seq"],
                        if v["local"] == true { "L" } else { "" }
                    ),
                    "gap" => format!(
                        "gap:{}{}",
                        v["from"],
                        if v["reset"] == true { "r" } else { "" }
                    ),
                    t => t.to_owned(),
                }
            })
            .collect()
    }
}

fn m(seq: u64) -> Arc<str> {
    format!("m:{seq}").into()
}

fn setup() -> (State<u32>, Receiver<Job>, Rec) {
    let (tx, rx) = mpsc::sync_channel(100);
    let mut st = State::new(tx);
    let mut rec = Rec::default();
    st.on_event(&mut rec, Event::Link(Side::Publisher, true));
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true));
    (st, rx, rec)
}

fn fetch_job(rx: &Receiver<Job>) -> (Arc<str>, u64, Option<Arc<str>>) {
    match rx.try_recv() {
        Ok(Job::Fetch { room, after, hint }) => (room, after, hint),
        Ok(_) => panic!("expected a fetch, got another job"),
        Err(e) => panic!("expected a fetch: {e}"),
    }
}

fn result(epoch: &str, last: u64, oldest: u64, from: u64) -> Fetched {
    Fetched {
        epoch: epoch.into(),
        last,
        oldest,
        entries: (from.max(oldest)..=last).map(|s| (s, m(s))).collect(),
    }
}

fn live(st: &mut State<u32>, rec: &mut Rec, epoch: &str, seq: u64) {
    st.on_event(
        rec,
        Event::Live {
            room: "r".into(),
            epoch: epoch.into(),
            seq,
            json: m(seq),
        },
    );
}

fn since(seq: u64, epoch: Option<&str>) -> Since {
    Since {
        seq,
        epoch: epoch.map(str::to_owned),
    }
}

#[test]
fn join_with_since_replays_then_buffered_live_without_duplicates() {
    let (mut st, rx, mut rec) = setup();
    st.join(&mut rec, 1, "r", Some(&since(3, Some("E"))));
    let (room, after, hint) = fetch_job(&rx);
    assert_eq!((&*room, after, hint.as_deref()), ("r", 3, Some("E")));
    // Live messages arrive before the fetch result: 7 is in the result
    // too, 8 is not.
    live(&mut st, &mut rec, "E", 7);
    live(&mut st, &mut rec, "E", 8);
    assert!(rec.take(1).is_empty(), "nothing before joined");
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 7, 1, 4),
        },
    );
    assert_eq!(rec.take(1), ["joined:7", "m:4", "m:5", "m:6", "m:7", "m:8"]);
    live(&mut st, &mut rec, "E", 8); // a duplicate is dropped
    live(&mut st, &mut rec, "E", 9);
    assert_eq!(rec.take(1), ["m:9"]);
    assert!(rx.try_recv().is_err(), "no further fetch");
}

#[test]
fn fresh_join_gets_no_replay_and_gap_when_too_old() {
    let (mut st, rx, mut rec) = setup();
    st.join(&mut rec, 1, "r", None);
    let (room, after, _) = fetch_job(&rx);
    assert_eq!(after, NOTHING);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 1050, 51, u64::MAX),
        },
    );
    assert_eq!(rec.take(1), ["joined:1050"]);
    live(&mut st, &mut rec, "E", 1051);
    assert_eq!(rec.take(1), ["m:1051"]);

    // Since 10 while 51..=1051 are kept: joined, gap, 51..=1051.
    st.join(&mut rec, 2, "r", Some(&since(10, None)));
    let (room, after, _) = fetch_job(&rx);
    assert_eq!(after, 10);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 1051, 52, 11),
        },
    );
    let got = rec.take(2);
    assert_eq!(got[..3], ["joined:1051", "gap:52", "m:52"]);
    assert_eq!(got.len(), 2 + 1000);
    assert_eq!(got.last().unwrap(), "m:1051");
    assert!(rec.take(1).is_empty(), "member 1 already had everything");
}

#[test]
fn foreign_epoch_since_is_a_reset_with_everything_kept() {
    let (mut st, rx, mut rec) = setup();
    // The room is known here with epoch E; a member claims F.
    st.join(&mut rec, 1, "r", None);
    let (room, after, _) = fetch_job(&rx);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 5, 1, u64::MAX),
        },
    );
    rec.take(1);
    st.join(&mut rec, 2, "r", Some(&since(4, Some("F"))));
    let (room, after, hint) = fetch_job(&rx);
    // F is not the room's epoch: it counts from 0.
    assert_eq!((after, hint.as_deref()), (0, Some("E")));
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 5, 1, 1),
        },
    );
    assert_eq!(
        rec.take(2),
        ["joined:5", "gap:1r", "m:1", "m:2", "m:3", "m:4", "m:5"]
    );
    assert!(rx.try_recv().is_err());
}

#[test]
fn history_lost_in_redis_resets_live_members() {
    let (mut st, rx, mut rec) = setup();
    st.join(&mut rec, 1, "r", None);
    let (room, after, _) = fetch_job(&rx);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 57, 1, u64::MAX),
        },
    );
    rec.take(1);
    // Redis restarted empty; a new history begins at 1.
    live(&mut st, &mut rec, "E2", 1);
    let (room, after, hint) = fetch_job(&rx);
    assert_eq!((after, hint.as_deref()), (57, Some("E")));
    live(&mut st, &mut rec, "E2", 2);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after: 0, // the script saw another epoch than the hint
            result: result("E2", 1, 1, 1),
        },
    );
    assert_eq!(rec.take(1), ["joined:1", "gap:1r", "m:1", "m:2"]);
    live(&mut st, &mut rec, "E2", 3);
    assert_eq!(rec.take(1), ["m:3"]);
}

#[test]
fn outage_delivers_locally_then_catches_up() {
    let (mut st, rx, mut rec) = setup();
    st.join(&mut rec, 1, "r", None);
    let (room, after, _) = fetch_job(&rx);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 2, 1, u64::MAX),
        },
    );
    rec.take(1);
    st.on_event(&mut rec, Event::Link(Side::Subscriber, false));
    st.publish(
        &mut rec,
        RoomMessage {
            room: "r".into(),
            head: String::new(),
            tail: String::new(),
            local: "local:1".into(),
        },
    );
    assert_eq!(rec.take(1), ["local:1"]);
    assert!(rx.try_recv().is_err(), "nothing sent to Redis while down");
    // A join while down is answered at once.
    st.join(&mut rec, 2, "r", Some(&since(1, Some("E"))));
    assert_eq!(rec.take(2), ["joined:2L"]);
    // Back: the room is fetched from the oldest have (1).
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true));
    let (room, after, _) = fetch_job(&rx);
    assert_eq!(after, 1);
    live(&mut st, &mut rec, "E", 5);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 4, 1, 2),
        },
    );
    assert_eq!(rec.take(1), ["m:3", "m:4", "m:5"]);
    assert_eq!(rec.take(2), ["m:2", "m:3", "m:4", "m:5"]);
}

#[test]
fn failed_fetch_answers_locally_and_leave_cancels() {
    let (mut st, rx, mut rec) = setup();
    st.join(&mut rec, 1, "r", Some(&since(0, None)));
    let job = rx.try_recv().unwrap();
    assert!(st.is_member(1, "r"));
    st.on_event(&mut rec, Event::Bounced(job));
    assert_eq!(rec.take(1), ["joined:0L"]);
    assert!(st.leave(1, "r"));
    assert!(!st.is_member(1, "r") && !st.leave(1, "r"));
    assert!(st.rooms.is_empty() && st.conns.is_empty());
    st.join(&mut rec, 2, "r", None);
    st.closed(2);
    assert!(st.rooms.is_empty() && st.conns.is_empty());
}
