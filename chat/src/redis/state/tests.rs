use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;

use std::time::{Duration, Instant};

use super::*;
use crate::redis::jobs::{Fetched, NOTHING};
use crate::redis::queue::Outbox;
use crate::redis::subs::Subs;

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
    fn publish(&mut self, room: &str, json: &str) -> usize {
        let ids = self.rooms.get(room).cloned().unwrap_or_default();
        for id in &ids {
            self.send(*id, json);
        }
        ids.len()
    }
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
                    "welcome" => match v["broadcast_seq"].as_u64() {
                        Some(seq) => format!("welcome:{seq}"),
                        None => "welcome:-".into(),
                    },
                    "gap" => format!(
                        "gap{}:{}{}",
                        if v["room"] == "*" { "*" } else { "" },
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

/// The tests' clock: a fixed start (the state only compares instants).
fn t0() -> Instant {
    thread_local!(static T0: Instant = Instant::now());
    T0.with(|t| *t)
}

fn limits() -> Limits {
    Limits {
        max_rooms: 100,
        ttl: Duration::from_secs(3600),
    }
}

fn setup() -> (State<u32>, Receiver<Job>, Rec) {
    let (outbox, rx, _) = Outbox::new(100, 1 << 20);
    let mut st = State::new(outbox, limits(), Arc::new(Subs::default()), "p".into());
    let mut rec = Rec::default();
    st.on_event(&mut rec, Event::Link(Side::Publisher, true), t0());
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
    (st, rx, rec)
}

/// `st.join`, then the subscriber's report for a room new here (as the
/// subscriber thread would send it).
fn join(
    st: &mut State<u32>,
    rec: &mut Rec,
    id: u32,
    room: &str,
    since: Option<&Since>,
    now: Instant,
) -> Result<(), Refusal> {
    st.join(rec, id, room, since, now)?;
    let fresh: Vec<(Arc<str>, u64)> = st
        .rooms
        .iter()
        .filter(|(_, r)| !r.subscribed)
        .map(|(n, r)| (n.clone(), r.sub_token))
        .collect();
    for (room, token) in fresh {
        st.on_event(rec, Event::Subscribed { room, token }, now);
    }
    Ok(())
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

/// Redis's answer to the fetch of `room` after `after`.
fn fetched(st: &mut State<u32>, rec: &mut Rec, room: Arc<str>, after: u64, result: Fetched) {
    let ev = Event::Fetched {
        room,
        after,
        result,
    };
    st.on_event(rec, ev, t0());
}

/// Takes the next job, a fetch, and answers it with `result`.
fn answer_fetch(st: &mut State<u32>, rec: &mut Rec, rx: &Receiver<Job>, result: Fetched) {
    let (room, after, _) = fetch_job(rx);
    fetched(st, rec, room, after, result);
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
        t0(),
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
    join(&mut st, &mut rec, 1, "r", Some(&since(3, Some("E"))), t0()).unwrap();
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
        t0(),
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
    join(&mut st, &mut rec, 1, "r", None, t0()).unwrap();
    let (room, after, _) = fetch_job(&rx);
    assert_eq!(after, NOTHING);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 1050, 51, u64::MAX),
        },
        t0(),
    );
    assert_eq!(rec.take(1), ["joined:1050"]);
    live(&mut st, &mut rec, "E", 1051);
    assert_eq!(rec.take(1), ["m:1051"]);

    // Since 10 while 51..=1051 are kept: joined, gap, 51..=1051.
    join(&mut st, &mut rec, 2, "r", Some(&since(10, None)), t0()).unwrap();
    let (room, after, _) = fetch_job(&rx);
    assert_eq!(after, 10);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 1051, 52, 11),
        },
        t0(),
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
    join(&mut st, &mut rec, 1, "r", None, t0()).unwrap();
    answer_fetch(&mut st, &mut rec, &rx, result("E", 5, 1, u64::MAX));
    rec.take(1);
    join(&mut st, &mut rec, 2, "r", Some(&since(4, Some("F"))), t0()).unwrap();
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
        t0(),
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
    join(&mut st, &mut rec, 1, "r", None, t0()).unwrap();
    answer_fetch(&mut st, &mut rec, &rx, result("E", 57, 1, u64::MAX));
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
        t0(),
    );
    assert_eq!(rec.take(1), ["joined:1", "gap:1r", "m:1", "m:2"]);
    live(&mut st, &mut rec, "E2", 3);
    assert_eq!(rec.take(1), ["m:3"]);
}

#[test]
fn outage_delivers_locally_then_catches_up() {
    let (mut st, rx, mut rec) = setup();
    join(&mut st, &mut rec, 1, "r", None, t0()).unwrap();
    answer_fetch(&mut st, &mut rec, &rx, result("E", 2, 1, u64::MAX));
    rec.take(1);
    st.on_event(&mut rec, Event::Link(Side::Subscriber, false), t0());
    st.publish(
        &mut rec,
        RoomMessage {
            room: "r".into(),
            id: String::new(),
            head: String::new(),
            tail: String::new(),
            local: "local:1".into(),
        },
        t0(),
    )
    .unwrap();
    assert_eq!(rec.take(1), ["local:1"]);
    assert!(rx.try_recv().is_err(), "nothing sent to Redis while down");
    // A join while down is answered at once.
    join(&mut st, &mut rec, 2, "r", Some(&since(1, Some("E"))), t0()).unwrap();
    assert_eq!(rec.take(2), ["joined:2L"]);
    // Back: the room is fetched from the oldest have (1).
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
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
        t0(),
    );
    assert_eq!(rec.take(1), ["m:3", "m:4", "m:5"]);
    assert_eq!(rec.take(2), ["m:2", "m:3", "m:4", "m:5"]);
}

#[test]
fn failed_fetch_answers_locally_and_leave_cancels() {
    let (mut st, rx, mut rec) = setup();
    join(&mut st, &mut rec, 1, "r", Some(&since(0, None)), t0()).unwrap();
    let job = rx.try_recv().unwrap();
    assert!(st.is_member(1, "r"));
    st.on_event(&mut rec, Event::Bounced(job), t0());
    assert_eq!(rec.take(1), ["joined:0L"]);
    assert!(st.leave(1, "r"));
    assert!(!st.is_member(1, "r") && !st.leave(1, "r"));
    assert!(st.rooms.is_empty() && st.conns.is_empty());
    join(&mut st, &mut rec, 2, "r", None, t0()).unwrap();
    st.closed(2);
    assert!(st.rooms.is_empty() && st.conns.is_empty());
}

/// Member 1 in sync at 5 in epoch E.
fn in_sync_at_5() -> (State<u32>, Receiver<Job>, Rec) {
    let (mut st, rx, mut rec) = setup();
    join(&mut st, &mut rec, 1, "r", None, t0()).unwrap();
    answer_fetch(&mut st, &mut rec, &rx, result("E", 5, 1, u64::MAX));
    assert_eq!(rec.take(1), ["joined:5"]);
    (st, rx, rec)
}

#[test]
fn a_fetch_reply_older_than_live_delivery_does_not_reset_members_in_sync() {
    let (mut st, rx, mut rec) = in_sync_at_5();
    // Member 2 joins; before the fetch's reply, live 6 and 7 reach member 1.
    join(&mut st, &mut rec, 2, "r", Some(&since(2, Some("E"))), t0()).unwrap();
    let (room, after, _) = fetch_job(&rx);
    live(&mut st, &mut rec, "E", 6);
    live(&mut st, &mut rec, "E", 7);
    assert_eq!(rec.take(1), ["m:6", "m:7"]);
    // The reply was read before 6 was stored.
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 5, 1, 3),
        },
        t0(),
    );
    assert_eq!(rec.take(2), ["joined:5", "m:3", "m:4", "m:5", "m:6", "m:7"]);
    assert!(
        rec.take(1).is_empty(),
        "member 1 is neither reset nor replayed"
    );
    assert!(rx.try_recv().is_err(), "no further fetch");
    live(&mut st, &mut rec, "E", 8);
    assert_eq!(rec.take(1), ["m:8"]);
    assert_eq!(rec.take(2), ["m:8"]);
}

#[test]
fn since_near_u64_max_never_overflows() {
    for s in [u64::MAX, u64::MAX - 1, crate::MAX_SINCE + 1] {
        let (mut st, rx, mut rec) = in_sync_at_5();
        // Answered while the publisher is down, with its own since.
        st.on_event(&mut rec, Event::Link(Side::Publisher, false), t0());
        join(&mut st, &mut rec, 2, "r", Some(&since(s, Some("E"))), t0()).unwrap();
        assert_eq!(rec.take(2), ["joined:5L"]);
        // A live message while the subscriber is still up.
        live(&mut st, &mut rec, "E", 6);
        assert_eq!(rec.take(1), ["m:6"]);
        assert!(rec.take(2).is_empty());
        // Back up: the fetch asks from a number Lua holds exactly, and
        // the member beyond the room's last is told to start over.
        st.on_event(&mut rec, Event::Link(Side::Publisher, true), t0());
        let (room, after, _) = fetch_job(&rx);
        assert!(after <= crate::MAX_SINCE, "{s}: after {after}");
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 6, 1, after.saturating_add(1)),
            },
            t0(),
        );
        let got = rec.take(2);
        if got.is_empty() {
            // The fetch did not cover it (after was its number): once more.
            let (room, after, _) = fetch_job(&rx);
            assert_eq!(after, 0, "{s}");
            st.on_event(
                &mut rec,
                Event::Fetched {
                    room,
                    after,
                    result: result("E", 6, 1, 1),
                },
                t0(),
            );
            let got = rec.take(2);
            assert_eq!(got[..2], ["gap:1r", "m:1"], "{s}");
            assert_eq!(got.len(), 7, "{s}: {got:?}");
        } else {
            assert_eq!(got[..2], ["gap:1r", "m:1"], "{s}");
        }
        assert!(rec.take(1).is_empty());
        // Alone in a room: its number is not taken for "no messages".
        join(&mut st, &mut rec, 3, "s", Some(&since(s, None)), t0()).unwrap();
        let (_, after, _) = fetch_job(&rx);
        assert_eq!(after, crate::MAX_SINCE, "{s}");
    }
}

#[test]
fn a_join_redis_does_not_answer_is_answered_after_join_wait() {
    let (mut st, rx, mut rec) = in_sync_at_5();
    join(&mut st, &mut rec, 2, "r", Some(&since(3, Some("E"))), t0()).unwrap();
    let (room, after, _) = fetch_job(&rx);
    assert!(st.waiting.load(Ordering::Acquire));
    // Redis stalls: ticks before JOIN_WAIT change nothing.
    st.on_event(&mut rec, Event::Tick, t0() + JOIN_WAIT / 2);
    assert!(rec.take(2).is_empty());
    st.on_event(&mut rec, Event::Tick, t0() + JOIN_WAIT);
    assert_eq!(rec.take(2), ["joined:5L"]);
    assert!(!st.waiting.load(Ordering::Acquire), "nothing waits");
    // Redis answers late: the member is caught up, each seq once.
    live(&mut st, &mut rec, "E", 6);
    assert_eq!(rec.take(1), ["m:6"]);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 6, 1, 4),
        },
        t0() + JOIN_WAIT,
    );
    assert_eq!(rec.take(2), ["m:4", "m:5", "m:6"]);
    live(&mut st, &mut rec, "E", 7);
    assert_eq!(rec.take(2), ["m:7"]);
    assert_eq!(rec.take(1), ["m:7"]);
}

#[test]
fn a_room_that_never_settles_still_answers_its_joins() {
    let (mut st, rx, mut rec) = setup();
    join(&mut st, &mut rec, 1, "r", Some(&since(3, None)), t0()).unwrap();
    // Every reply was read from further on than the member's since (an
    // inconsistent Redis): the round limit ends it with a local answer.
    for _ in 0..MAX_ROUNDS {
        let (room, _, _) = fetch_job(&rx);
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after: 100,
                result: result("E", 200, 1, 101),
            },
            t0(),
        );
    }
    assert!(rx.try_recv().is_err(), "no endless fetching");
    assert_eq!(rec.take(1), ["joined:200L"]);
}

#[test]
fn rejoin_in_sync_answers_at_once_without_a_fetch_or_replay() {
    let (mut st, rx, mut rec) = in_sync_at_5();
    live(&mut st, &mut rec, "E", 6);
    assert_eq!(rec.take(1), ["m:6"]);
    join(&mut st, &mut rec, 1, "r", None, t0()).unwrap();
    join(&mut st, &mut rec, 1, "r", Some(&since(6, Some("E"))), t0()).unwrap();
    assert_eq!(rec.take(1), ["joined:6", "joined:6"]);
    assert!(rx.try_recv().is_err(), "answered without Redis");
    live(&mut st, &mut rec, "E", 7);
    assert_eq!(rec.take(1), ["m:7"]);
    // Asking for older ones is a replay of those only.
    join(&mut st, &mut rec, 1, "r", Some(&since(5, Some("E"))), t0()).unwrap();
    let (room, after, _) = fetch_job(&rx);
    assert_eq!(after, 5);
    st.on_event(
        &mut rec,
        Event::Fetched {
            room,
            after,
            result: result("E", 7, 1, 6),
        },
        t0(),
    );
    assert_eq!(rec.take(1), ["joined:7", "m:6", "m:7"]);
}

fn msg(room: &str, text: &str) -> RoomMessage {
    crate::redis::jobs::room_message(room, "u1", None, text)
}

#[test]
fn messages_get_unique_ids_and_a_full_queue_asks_to_retry() {
    let (outbox, rx, gauge) = Outbox::new(100, 2000);
    let mut st = State::new(outbox, limits(), Arc::new(Subs::default()), "p".into());
    let mut rec = Rec::default();
    st.on_event(&mut rec, Event::Link(Side::Publisher, true), t0());
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
    st.publish(&mut rec, msg("r", "a"), t0()).unwrap();
    st.publish(&mut rec, msg("r", "b"), t0()).unwrap();
    let ids: Vec<String> = rx
        .try_iter()
        .map(|j| match j {
            Job::Publish(m) => m.id,
            _ => panic!("not a publish"),
        })
        .collect();
    assert_eq!(ids, ["p-1", "p-2"]);
    // Nothing acknowledged yet: the queue's bytes fill up.
    let big = "x".repeat(900);
    let mut refused = None;
    for _ in 0..5 {
        if let Err(r) = st.publish(&mut rec, msg("r", &big), t0()) {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("refused once 2000 bytes are queued");
    assert!(r.retry && r.message.contains("retry"), "{r:?}");
    assert!(rec.got.is_empty(), "a refused message is delivered nowhere");
    let r = st
        .publish(
            &mut rec,
            crate::redis::jobs::broadcast_message("u1", None, &big),
            t0(),
        )
        .unwrap_err();
    assert!(r.retry && r.message.starts_with("broadcast"), "{r:?}");
    assert!(gauge.load().jobs >= 2);
}

#[test]
fn a_bounced_message_is_delivered_here_once() {
    let (mut st, rx, mut rec) = in_sync_at_5();
    st.publish(&mut rec, msg("r", "hi"), t0()).unwrap();
    let job = rx.try_recv().unwrap();
    assert!(rec.take(1).is_empty(), "not before Redis has it");
    st.on_event(&mut rec, Event::Bounced(job), t0());
    let got = rec.got.remove(&1).unwrap_or_default();
    assert_eq!(got.len(), 1, "{got:?}");
    let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!((v["local"].as_bool(), v.get("seq")), (Some(true), None));
}

#[test]
fn rooms_used_per_server_are_limited_within_the_ttl() {
    let (outbox, _rx, _) = Outbox::new(1000, 1 << 20);
    let limits = Limits {
        max_rooms: 3,
        ttl: Duration::from_secs(60),
    };
    let mut st = State::new(outbox, limits, Arc::new(Subs::default()), "p".into());
    let mut rec = Rec::default();
    st.on_event(&mut rec, Event::Link(Side::Publisher, true), t0());
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
    for room in ["a", "b", "c"] {
        join(&mut st, &mut rec, 1, room, None, t0()).unwrap();
    }
    let e = join(&mut st, &mut rec, 1, "d", None, t0()).unwrap_err();
    assert!(e.message.contains("too many rooms on this server"), "{e:?}");
    assert!(!st.is_member(1, "d"));
    // Leaving does not free a room (its keys live on in Redis) ...
    assert!(st.leave(1, "a"));
    assert!(join(&mut st, &mut rec, 2, "d", None, t0()).is_err());
    // ... until the TTL has passed since this server last used it.
    join(&mut st, &mut rec, 2, "a", None, t0()).unwrap();
    let later = t0() + Duration::from_secs(61);
    join(&mut st, &mut rec, 3, "d", None, later).unwrap();
    assert!(st.used.len() <= 3);
}

#[test]
fn a_room_is_fetched_only_once_its_channel_is_subscribed() {
    let (outbox, rx, _) = Outbox::new(100, 1 << 20);
    let subs = Arc::new(Subs::default());
    let mut st = State::new(outbox, limits(), subs.clone(), "p".into());
    let mut rec = Rec::default();
    st.on_event(&mut rec, Event::Link(Side::Publisher, true), t0());
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
    st.join(&mut rec, 1, "r", None, t0()).unwrap();
    let wanted = subs.take_changes(false).expect("the room is wanted");
    let token = wanted["r"];
    assert!(rx.try_recv().is_err(), "no fetch before the subscription");
    // A report for an earlier subscription of the room changes nothing.
    let stale = Event::Subscribed {
        room: "r".into(),
        token: token - 1,
    };
    st.on_event(&mut rec, stale, t0());
    assert!(rx.try_recv().is_err());
    let ok = Event::Subscribed {
        room: "r".into(),
        token,
    };
    st.on_event(&mut rec, ok, t0());
    answer_fetch(&mut st, &mut rec, &rx, result("E", 2, 1, u64::MAX));
    assert_eq!(rec.take(1), ["joined:2"]);
    // A second member joins a subscribed room: fetched at once.
    st.join(&mut rec, 2, "r", None, t0()).unwrap();
    fetch_job(&rx);
    assert!(
        subs.take_changes(false).is_none(),
        "nothing new to subscribe"
    );
    // The last member leaves: the channel is no longer wanted.
    st.leave(1, "r");
    st.closed(2);
    assert!(subs.take_changes(false).unwrap().is_empty());
    // The subscriber's connection drops: rooms wait for their report again.
    st.join(&mut rec, 3, "s", None, t0()).unwrap();
    let token = subs.take_changes(false).unwrap()["s"];
    st.on_event(
        &mut rec,
        Event::Subscribed {
            room: "s".into(),
            token,
        },
        t0(),
    );
    answer_fetch(&mut st, &mut rec, &rx, result("E", 0, 1, u64::MAX));
    assert_eq!(rec.take(3), ["joined:0"]);
    st.on_event(&mut rec, Event::Link(Side::Subscriber, false), t0());
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
    assert!(rx.try_recv().is_err(), "not before it is subscribed again");
    st.on_event(
        &mut rec,
        Event::Subscribed {
            room: "s".into(),
            token,
        },
        t0(),
    );
    fetch_job(&rx);
}

// The broadcast stream: a room of every open connection, answered with
// `welcome` instead of `joined`, its gaps on room "*".

fn welcome(n: u32) -> Welcome {
    Welcome {
        id: format!("u{n}").into(),
        name: None,
    }
}

/// `st.open`, then the subscriber's report if the stream is new here.
fn open(st: &mut State<u32>, rec: &mut Rec, id: u32, since: Option<&Since>) {
    st.open(rec, id, welcome(id), since, t0());
    let token = st
        .rooms
        .get(BROADCASTS)
        .filter(|r| !r.subscribed)
        .map(|r| r.sub_token);
    if let Some(token) = token {
        let room = BROADCASTS.into();
        st.on_event(rec, Event::Subscribed { room, token }, t0());
    }
}

fn live_b(st: &mut State<u32>, rec: &mut Rec, epoch: &str, seq: u64) {
    let ev = Event::Live {
        room: BROADCASTS.into(),
        epoch: epoch.into(),
        seq,
        json: m(seq),
    };
    st.on_event(rec, ev, t0());
}

fn fetched_b(st: &mut State<u32>, rec: &mut Rec, after: u64, result: Fetched) {
    fetched(st, rec, BROADCASTS.into(), after, result);
}

#[test]
fn an_opening_connection_gets_its_welcome_when_redis_answers_then_each_broadcast_once() {
    let (mut st, rx, mut rec) = setup();
    open(&mut st, &mut rec, 1, None);
    let (room, after, _) = fetch_job(&rx);
    assert_eq!((&*room, after), (BROADCASTS, NOTHING));
    // A broadcast arrives before Redis answers: held back, not before the
    // welcome, and the connection is in no room that local delivery uses.
    live_b(&mut st, &mut rec, "E", 8);
    assert!(rec.take(1).is_empty(), "nothing before the welcome");
    assert!(!rec.rooms.contains_key(BROADCASTS));
    fetched_b(&mut st, &mut rec, after, result("E", 7, 1, u64::MAX));
    assert_eq!(rec.take(1), ["welcome:7", "m:8"]);
    assert_eq!(rec.rooms[BROADCASTS], [1]);
    live_b(&mut st, &mut rec, "E", 8);
    live_b(&mut st, &mut rec, "E", 9);
    assert_eq!(rec.take(1), ["m:9"]);
    let v: serde_json::Value = serde_json::from_str(&{
        open(&mut st, &mut rec, 2, None);
        rec.got.remove(&2).unwrap().remove(0)
    })
    .unwrap();
    // In step with Redis: the next connection is answered at once, with
    // no fetch, and gets the next broadcast live.
    assert_eq!(
        (
            v["id"].as_str(),
            v["broadcast_seq"].as_u64(),
            v["broadcast_epoch"].as_str()
        ),
        (Some("u2"), Some(9), Some("E"))
    );
    assert!(rx.try_recv().is_err(), "no fetch for an in-step open");
    live_b(&mut st, &mut rec, "E", 10);
    assert_eq!(
        (rec.take(1), rec.take(2)),
        (vec!["m:10".into()], vec!["m:10".to_string()])
    );
    // The stream is not a room: it does not count against the limit.
    assert!(!st.used.contains_key(BROADCASTS));
}

#[test]
fn reopening_with_broadcast_since_replays_the_missed_ones_or_a_gap_on_star() {
    let (mut st, rx, mut rec) = setup();
    open(&mut st, &mut rec, 1, Some(&since(3, Some("E"))));
    let (_, after, hint) = fetch_job(&rx);
    assert_eq!((after, hint.as_deref()), (3, Some("E")));
    live_b(&mut st, &mut rec, "E", 7);
    fetched_b(&mut st, &mut rec, after, result("E", 6, 1, 4));
    assert_eq!(rec.take(1), ["welcome:6", "m:4", "m:5", "m:6", "m:7"]);

    // Asks for more than is kept: a gap on "*" first.
    open(&mut st, &mut rec, 2, Some(&since(1, Some("E"))));
    let (_, after, _) = fetch_job(&rx);
    assert_eq!(after, 1);
    fetched_b(&mut st, &mut rec, after, result("E", 7, 5, 2));
    assert_eq!(rec.take(2), ["welcome:7", "gap*:5", "m:5", "m:6", "m:7"]);
    assert!(rec.take(1).is_empty(), "nothing twice for the first");

    // Named another history (Redis lost the stream since): reset, all kept.
    open(&mut st, &mut rec, 3, Some(&since(4, Some("OLD"))));
    let (_, after, hint) = fetch_job(&rx);
    assert_eq!((after, hint.as_deref()), (0, Some("E")));
    fetched_b(&mut st, &mut rec, after, result("E", 7, 5, 1));
    assert_eq!(rec.take(3), ["welcome:7", "gap*:5r", "m:5", "m:6", "m:7"]);
}

#[test]
fn a_new_broadcast_epoch_welcomes_again_with_a_reset_gap() {
    let (mut st, rx, mut rec) = setup();
    open(&mut st, &mut rec, 1, None);
    let (_, after, _) = fetch_job(&rx);
    fetched_b(&mut st, &mut rec, after, result("E", 4, 1, u64::MAX));
    assert_eq!(rec.take(1), ["welcome:4"]);
    // Redis restarted empty: the next broadcast is from a new history.
    live_b(&mut st, &mut rec, "F", 1);
    let (_, after, hint) = fetch_job(&rx);
    assert_eq!((after, hint.as_deref()), (4, Some("E")));
    live_b(&mut st, &mut rec, "F", 2);
    fetched_b(&mut st, &mut rec, 0, result("F", 1, 1, 1));
    let got = rec.got.remove(&1).unwrap();
    let w: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(
        (
            w["type"].as_str(),
            w["broadcast_epoch"].as_str(),
            w["broadcast_seq"].as_u64()
        ),
        (Some("welcome"), Some("F"), Some(1))
    );
    let gap: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
    assert_eq!(
        (gap["room"].as_str(), gap["reset"].as_bool()),
        (Some("*"), Some(true))
    );
    assert_eq!(got[2..], ["m:1", "m:2"]);
}

#[test]
fn without_redis_opens_are_welcomed_at_once_and_broadcasts_stay_local() {
    let (mut st, rx, mut rec) = setup();
    open(&mut st, &mut rec, 1, None);
    let (_, after, _) = fetch_job(&rx);
    fetched_b(&mut st, &mut rec, after, result("E", 3, 1, u64::MAX));
    assert_eq!(rec.take(1), ["welcome:3"]);
    // Opening while Redis is slow: held until the fetch (or JOIN_WAIT).
    live_b(&mut st, &mut rec, "E", 5); // 4 is missing: a fetch
    let _ = fetch_job(&rx);
    open(&mut st, &mut rec, 2, None);
    st.on_event(&mut rec, Event::Link(Side::Subscriber, false), t0());
    // A broadcast from here while Redis is away reaches those welcomed.
    let b = crate::redis::jobs::broadcast_message("u1", None, "hi");
    st.publish(&mut rec, b, t0()).unwrap();
    let got = rec.got.remove(&1).unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].contains(r#""local":true"#), "{got:?}");
    assert!(!rec.got.contains_key(&2), "not before its welcome");
    st.on_event(&mut rec, Event::Tick, t0() + JOIN_WAIT);
    assert_eq!(rec.take(2), ["welcome:5"]);
    // A connection opening while Redis is away is welcomed at once.
    open(&mut st, &mut rec, 3, None);
    assert_eq!(rec.take(3), ["welcome:5"]);
    assert_eq!(rec.rooms[BROADCASTS], [1, 2, 3]);
}

#[test]
fn opening_before_redis_was_ever_reached_waits_for_it_within_join_wait() {
    let (outbox, rx, _) = Outbox::new(100, 1 << 20);
    let mut st = State::new(outbox, limits(), Arc::new(Subs::default()), "p".into());
    let mut rec = Rec::default();
    // Just started: no link yet. The welcome waits (a welcome without the
    // stream would be followed by a second one naming it).
    open(&mut st, &mut rec, 1, None);
    assert!(rec.take(1).is_empty());
    assert!(st.waiting_flag().load(Ordering::Acquire));
    st.on_event(&mut rec, Event::Link(Side::Publisher, true), t0());
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
    let (_, after, _) = fetch_job(&rx);
    fetched_b(&mut st, &mut rec, after, result("E", 2, 1, u64::MAX));
    assert_eq!(rec.take(1), ["welcome:2"]);

    // Redis never answers: welcomed after JOIN_WAIT without the stream,
    // then told where it stands once Redis is reached.
    let (outbox, rx, _) = Outbox::new(100, 1 << 20);
    let mut st = State::new(outbox, limits(), Arc::new(Subs::default()), "p".into());
    let mut rec = Rec::default();
    open(&mut st, &mut rec, 2, None);
    st.on_event(&mut rec, Event::Tick, t0() + JOIN_WAIT);
    assert_eq!(rec.take(2), ["welcome:-"]);
    assert_eq!(rec.rooms[BROADCASTS], [2]);
    st.on_event(&mut rec, Event::Link(Side::Publisher, true), t0());
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
    let (_, after, _) = fetch_job(&rx);
    fetched_b(&mut st, &mut rec, after, result("E", 2, 1, u64::MAX));
    assert_eq!(rec.take(2), ["welcome:2"]);
    live_b(&mut st, &mut rec, "E", 3);
    assert_eq!(rec.take(2), ["m:3"]);
}

#[test]
fn the_stream_outlives_its_last_connection_here_unsubscribed() {
    let (mut st, rx, mut rec) = setup();
    open(&mut st, &mut rec, 1, None);
    let (_, after, _) = fetch_job(&rx);
    fetched_b(&mut st, &mut rec, after, result("E", 4, 1, u64::MAX));
    assert_eq!(rec.take(1), ["welcome:4"]);
    st.closed(1);
    assert!(!st.rooms[BROADCASTS].subscribed);
    // Back with a new subscription: fetched again (broadcasts were missed
    // meanwhile), the stream's position from Redis.
    open(&mut st, &mut rec, 2, None);
    let (_, after, _) = fetch_job(&rx);
    fetched_b(&mut st, &mut rec, after, result("E", 9, 1, u64::MAX));
    assert_eq!(rec.take(2), ["welcome:9"]);
    st.closed(2);
    // Redis away: welcomed at once from where the stream stood.
    st.on_event(&mut rec, Event::Link(Side::Publisher, false), t0());
    open(&mut st, &mut rec, 3, None);
    assert_eq!(rec.take(3), ["welcome:9"]);
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_subscription_report_that_comes_after_the_last_close_is_stale() {
    let (outbox, rx, _) = Outbox::new(100, 1 << 20);
    let subs = Arc::new(Subs::default());
    let mut st = State::new(outbox, limits(), subs.clone(), "p".into());
    let mut rec = Rec::default();
    st.on_event(&mut rec, Event::Link(Side::Publisher, true), t0());
    st.on_event(&mut rec, Event::Link(Side::Subscriber, true), t0());
    // A connection opens and closes before the subscriber has reported the
    // stream's channel: the channel is no longer wanted.
    st.open(&mut rec, 1, welcome(1), None, t0());
    let token = subs.take_changes(false).unwrap()[BROADCASTS];
    st.closed(1);
    assert!(subs.take_changes(false).unwrap().is_empty());
    // The report of that subscription arrives late. The subscriber is
    // about to leave the channel, so the stream must not count as
    // subscribed: the next open asks for the channel again and waits for
    // Redis, or broadcasts would never reach this server again.
    let room = BROADCASTS.into();
    st.on_event(&mut rec, Event::Subscribed { room, token }, t0());
    assert!(!st.rooms[BROADCASTS].subscribed);
    assert!(rx.try_recv().is_err(), "no fetch for a channel being left");
    st.open(&mut rec, 2, welcome(2), None, t0());
    let token = subs.take_changes(false).expect("wanted again")[BROADCASTS];
    assert!(rec.take(2).is_empty(), "no welcome before Redis answers");
    let room = BROADCASTS.into();
    st.on_event(&mut rec, Event::Subscribed { room, token }, t0());
    let (_, after, _) = fetch_job(&rx);
    fetched_b(&mut st, &mut rec, after, result("E", 3, 1, u64::MAX));
    assert_eq!(rec.take(2), ["welcome:3"]);
}

#[test]
fn a_pass_hands_over_events_until_their_sends_reach_the_budget() {
    let (mut st, rx, mut rec) = setup();
    for id in 1..=3 {
        join(&mut st, &mut rec, id, "r", None, t0()).unwrap();
    }
    answer_fetch(&mut st, &mut rec, &rx, result("E", 0, 1, u64::MAX));
    for id in 1..=3 {
        assert_eq!(rec.take(id), ["joined:0"]);
    }
    let mut batch: VecDeque<(Event, usize)> = (1..=10)
        .map(|seq| {
            let ev = Event::Live {
                room: "r".into(),
                epoch: "E".into(),
                seq,
                json: m(seq),
            };
            let w = ev.weight();
            (ev, w)
        })
        .collect();
    // Three members: each message is three sends. A budget of 7 hands
    // over three messages (9 sends) and leaves seven, in order.
    st.on_events(&mut rec, &mut batch, 7, t0());
    for id in 1..=3 {
        assert_eq!(rec.take(id), ["m:1", "m:2", "m:3"]);
    }
    let left: Vec<u64> = batch
        .iter()
        .map(|(ev, _)| match ev {
            Event::Live { seq, .. } => *seq,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(left, (4..=10).collect::<Vec<_>>());
    // The rest goes on the next pass, from where it stopped.
    st.on_events(&mut rec, &mut batch, usize::MAX, t0());
    assert!(batch.is_empty());
    assert_eq!(
        rec.take(2),
        (4..=10).map(|s| format!("m:{s}")).collect::<Vec<_>>()
    );
}
