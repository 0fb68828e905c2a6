//! Broadcasts are one numbered, replayable stream (issue 16, item 2): a
//! client that reconnects with `?broadcast_since=N&broadcast_epoch=E` gets
//! the broadcasts it missed, exactly once and in order, before anything
//! live; `--no-broadcast` still refuses them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wsloop::client::connect;

fn chat(args: &[&str]) -> BinServer {
    let mut all = vec!["--app", "chat"];
    all.extend_from_slice(args);
    BinServer::spawn(&all)
}

fn broadcast(p: &mut Peer, text: &str) {
    p.send(json!({"type": "broadcast", "text": text}));
}

fn texts(vs: &[Value]) -> Vec<&str> {
    vs.iter()
        .map(|v| v["text"].as_str().expect("text"))
        .collect()
}

#[test]
fn reconnecting_client_catches_up_on_missed_broadcasts_exactly_once_in_order() {
    let srv = chat(&[]);
    let mut sender = Peer::connect(srv.addr);
    let mut a = Peer::connect(srv.addr);
    let epoch = a.welcome["broadcast_epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("welcome names the broadcast stream: {}", a.welcome))
        .to_owned();
    assert_eq!(a.welcome["broadcast_seq"], 0, "{}", a.welcome);

    broadcast(&mut sender, "b1");
    let b1 = a.expect("broadcast");
    assert_eq!(
        (b1["seq"].as_u64(), b1["text"].as_str()),
        (Some(1), Some("b1"))
    );
    assert_eq!(sender.expect("broadcast")["seq"], 1);
    drop(a);

    // Missed while away.
    for t in ["b2", "b3", "b4"] {
        broadcast(&mut sender, t);
        sender.expect("broadcast");
    }

    let url = format!(
        "ws://{}/ws?broadcast_since=1&broadcast_epoch={epoch}",
        srv.addr
    );
    let mut a = Peer::from_ws(connect(&url).expect("reconnect"));
    assert_eq!(a.welcome["broadcast_seq"], 4, "{}", a.welcome);
    assert_eq!(a.welcome["broadcast_epoch"], epoch.as_str());
    broadcast(&mut sender, "b5");
    let got: Vec<Value> = (0..4).map(|_| a.expect("broadcast")).collect();
    assert_eq!(texts(&got), ["b2", "b3", "b4", "b5"]);
    let seqs: Vec<u64> = got.iter().map(seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5]);
    a.silent(Duration::from_millis(300));

    // A `since` from another history (say, before a restart): everything
    // kept, after a reset gap on the stream "*".
    let url = format!(
        "ws://{}/ws?broadcast_since=3&broadcast_epoch=other",
        srv.addr
    );
    let mut c = Peer::from_ws(connect(&url).expect("connect"));
    let g = c.expect("gap");
    assert_eq!(
        (g["room"].as_str(), g["reset"].as_bool()),
        (Some("*"), Some(true)),
        "{g}"
    );
    let got: Vec<Value> = (0..5).map(|_| c.expect("broadcast")).collect();
    assert_eq!(texts(&got), ["b1", "b2", "b3", "b4", "b5"]);

    // A plain connection gets no replay.
    let mut d = Peer::connect(srv.addr);
    assert_eq!(d.welcome["broadcast_seq"], 5);
    d.silent(Duration::from_millis(300));
}

#[test]
fn broadcast_since_must_be_a_number() {
    let srv = chat(&[]);
    let url = format!("ws://{}/ws?broadcast_since=soon", srv.addr);
    let Err(e) = connect(&url) else {
        panic!("a bad broadcast_since is accepted");
    };
    assert!(format!("{e}").contains("400"), "{e}");
}

#[test]
fn no_broadcast_still_refuses_and_welcome_names_no_stream() {
    let srv = chat(&["--no-broadcast"]);
    let mut a = Peer::connect(srv.addr);
    assert!(a.welcome.get("broadcast_seq").is_none(), "{}", a.welcome);
    a.error(
        json!({"type": "broadcast", "text": "x"}),
        "broadcast is turned off",
    );
}
