use super::state::{Inbox, Item, State};
use super::*;
use serde_json::Value;
use wsloop::frame::parse_header;

fn state(keep: usize, inbox_bytes: usize, loops: usize) -> State {
    let mut st = State::new(Box::new(LocalHistory::new(keep, 64)), inbox_bytes);
    for _ in 0..loops {
        st.inboxes.push(Inbox::default());
    }
    st
}

fn msg(room: &str) -> impl FnMut(u64) -> String + '_ {
    move |seq| format!(r#"{{"type":"message","room":"{room}","seq":{seq},"text":"m{seq}"}}"#)
}

/// The JSON of each delivery taken from loop `me`.
fn taken(st: &mut State, me: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    assert!(!st.take(me, usize::MAX, |_| 1, &mut out));
    out.iter()
        .map(|d| {
            let (h, n) = parse_header(&d.frame).unwrap().unwrap();
            assert_eq!(n as u64 + h.payload_len, d.frame.len() as u64);
            let v = serde_json::from_slice(&d.frame[n..]).unwrap();
            (d.room.to_string(), v)
        })
        .collect()
}

fn seqs(ds: &[(String, Value)]) -> Vec<u64> {
    ds.iter().filter_map(|(_, v)| v["seq"].as_u64()).collect()
}

#[test]
fn a_publish_is_queued_once_for_each_loop_with_members_in_seq_order() {
    let mut st = state(100, 1 << 20, 3);
    st.register(0, "r", true);
    st.register(1, "r", true);
    // Loops 0 and 1 publish in turn: both inboxes hold seq order.
    for i in 0..6 {
        let (seq, wake) = st.publish(i % 2, "r", &mut msg("r"));
        assert_eq!(seq, i as u64 + 1);
        // The other loop is woken once, until it drains; loop 2 has no
        // members and gets nothing.
        assert!(!wake.contains(&2));
    }
    assert_eq!(seqs(&taken(&mut st, 0)), [1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(&taken(&mut st, 1)), [1, 2, 3, 4, 5, 6]);
    assert!(taken(&mut st, 2).is_empty());
    // The frame is shared, not copied per loop.
    st.publish(0, "r", &mut msg("r"));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    st.take(0, 1, |_| 1, &mut a);
    st.take(1, 1, |_| 1, &mut b);
    assert!(Arc::ptr_eq(&a[0].frame, &b[0].frame));
}

#[test]
fn broadcasts_reach_every_loop() {
    let mut st = state(100, 1 << 20, 2);
    st.publish(1, BROADCASTS, &mut msg("*"));
    for me in 0..2 {
        let t = taken(&mut st, me);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, BROADCASTS);
    }
}

#[test]
fn a_room_without_members_on_a_loop_is_no_longer_handed_to_it() {
    let mut st = state(100, 1 << 20, 2);
    st.register(1, "r", true);
    st.register(1, "r", true);
    assert_eq!(st.rooms["r"], 0b10);
    st.publish(0, "r", &mut msg("r"));
    st.register(1, "r", false);
    assert!(st.rooms.is_empty(), "the hub forgets a room nobody is in");
    st.publish(0, "r", &mut msg("r"));
    assert_eq!(seqs(&taken(&mut st, 1)), [1]);
    assert_eq!(seqs(&taken(&mut st, 0)), [1, 2]);
}

#[test]
fn what_does_not_fit_an_inbox_is_replayed_from_the_history_in_order() {
    // Room for about two frames.
    let mut st = state(100, 2 * 200, 2);
    st.register(1, "r", true);
    st.register(1, "s", true);
    for _ in 0..10 {
        st.publish(0, "r", &mut msg("r"));
        st.publish(0, "s", &mut msg("s"));
    }
    let inbox = &st.inboxes[1];
    let missed = inbox.missed;
    assert!(missed >= 16, "{missed}");
    // One note per room, not one per miss.
    let notes = inbox
        .items
        .iter()
        .filter(|(i, _)| matches!(i, Item::Missed { .. }))
        .count();
    assert_eq!(notes, 2, "{:?}", inbox.items);
    let t = taken(&mut st, 1);
    for room in ["r", "s"] {
        let got: Vec<u64> = t
            .iter()
            .filter(|(r, _)| r == room)
            .map(|(_, v)| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(got, (1..=10).collect::<Vec<_>>(), "room {room}");
    }
    // Drained, the inbox takes frames again.
    st.publish(0, "r", &mut msg("r"));
    assert_eq!(seqs(&taken(&mut st, 1)), [11]);
    assert_eq!(st.inboxes[1].missed, missed);
}

#[test]
fn misses_older_than_the_history_become_a_gap() {
    let mut st = state(5, 300, 2);
    st.register(1, "r", true);
    for _ in 0..20 {
        st.publish(0, "r", &mut msg("r"));
    }
    let t = taken(&mut st, 1);
    let kinds: Vec<String> = t
        .iter()
        .map(|(_, v)| match v["type"].as_str().unwrap() {
            "gap" => format!("gap {}", v["from"]),
            _ => v["seq"].to_string(),
        })
        .collect();
    // What fitted, then the gap (16 is the oldest kept), then 16..=20.
    let fitted = kinds.iter().take_while(|k| !k.starts_with("gap")).count();
    assert!(fitted >= 1);
    assert_eq!(kinds[fitted], "gap 16", "{kinds:?}");
    assert_eq!(kinds[fitted + 1..], ["16", "17", "18", "19", "20"]);
}

#[test]
fn misses_are_noted_per_run_so_later_frames_keep_their_place() {
    let mut st = state(100, 3 * 200, 2);
    st.register(1, "r", true);
    for _ in 0..6 {
        st.publish(0, "r", &mut msg("r"));
    }
    // Half drained: new frames fit again, after the note.
    let mut out = Vec::new();
    assert!(st.take(1, 2, |_| 1, &mut out));
    for _ in 0..2 {
        st.publish(0, "r", &mut msg("r"));
    }
    let mut all: Vec<u64> = out
        .iter()
        .map(|d| {
            let (_, n) = parse_header(&d.frame).unwrap().unwrap();
            let v: Value = serde_json::from_slice(&d.frame[n..]).unwrap();
            v["seq"].as_u64().unwrap()
        })
        .collect();
    all.extend(seqs(&taken(&mut st, 1)));
    assert_eq!(all, (1..=8).collect::<Vec<_>>());
}

#[test]
fn a_pass_is_bounded_by_the_sends_it_makes_not_by_its_entries() {
    let mut st = state(100, 1 << 20, 2);
    st.register(1, "big", true);
    st.register(1, "small", true);
    for _ in 0..4 {
        st.publish(0, "big", &mut msg("big"));
    }
    st.publish(0, "small", &mut msg("small"));
    // "big" has 1,000 members on loop 1, "small" one: a budget of 2,500
    // sends takes three of big's messages (3,000 sends), not 2,500
    // entries.
    let cost = |room: &str| if room == "big" { 1000 } else { 1 };
    let mut out = Vec::new();
    assert!(st.take(1, 2500, cost, &mut out));
    assert_eq!(out.len(), 3);
    // An entry dearer than the whole budget still goes, alone.
    out.clear();
    assert!(st.take(1, 10, cost, &mut out));
    assert_eq!(out.len(), 1);
    out.clear();
    assert!(!st.take(1, 10, cost, &mut out));
    assert_eq!(&*out[0].room, "small");
}
