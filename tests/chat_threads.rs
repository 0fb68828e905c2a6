//! Chat rooms across event loops (issue 18, target 9): `wsloop serve --app
//! chat --threads 2` spreads members over two loops (SO_REUSEPORT), and a
//! room is still one room: every member gets every message once, in `seq`
//! order, replay with `since` works wherever the member lands, broadcasts
//! are one stream, and members that leave or close stop a room from being
//! handed to their loop. Then the library's [`Hub`] with one loop held
//! up: what does not fit its inbox comes back from the history, in order,
//! or as a `gap`.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wsloop::client::connect;
use wsloop::server::{Access, Server};
use wsloop::Config;
use wsloop_chat::{Chat, Hub, LocalHistory};

const WITHIN: Duration = Duration::from_secs(15);

fn chat_threads() -> BinServer {
    BinServer::spawn(&["--app", "chat", "--threads", "2", "--metrics"])
}

/// `name{loop="N"}` for each loop, from `/metrics`.
fn per_loop(addr: SocketAddr, name: &str) -> [f64; 2] {
    let body = http_get(addr, "/metrics").body_text();
    let mut out = [0.0; 2];
    for (i, v) in out.iter_mut().enumerate() {
        let key = format!("{name}{{loop=\"{i}\"}} ");
        if let Some(line) = body.lines().find(|l| l.starts_with(&key)) {
            *v = line[key.len()..].trim().parse().expect("a number");
        }
    }
    out
}

/// At least `n` members of `room`, on both loops (checked through the
/// metrics): the kernel spreads connections by a hash, so a few more are
/// opened in the rare case that all landed on one loop.
fn members_on_both_loops(addr: SocketAddr, room: &str, n: usize) -> Vec<Peer> {
    let mut peers = Vec::new();
    let mut want = n;
    while peers.len() < 64 {
        while peers.len() < want {
            let mut p = Peer::connect(addr);
            p.join(room);
            peers.push(p);
        }
        let mut m = [0.0; 2];
        // Other loops publish their metrics about once a second.
        wait_until(WITHIN, "every member counted", || {
            m = per_loop(addr, "wsloop_chat_hub_members");
            m[0] + m[1] >= peers.len() as f64
        });
        if m[0] >= 1.0 && m[1] >= 1.0 {
            return peers;
        }
        want += 8;
    }
    panic!("64 connections, all on one loop");
}

/// Reads `n` room messages; returns (seq, text) in arrival order.
fn read_messages(p: &mut Peer, n: usize) -> Vec<(u64, String)> {
    (0..n)
        .map(|_| {
            let m = p.expect("message");
            (seq(&m), m["text"].as_str().expect("text").to_owned())
        })
        .collect()
}

#[test]
fn members_on_both_loops_get_every_message_once_in_seq_order() {
    let srv = chat_threads();
    let mut peers = members_on_both_loops(srv.addr, "r", 24);
    const EACH: usize = 40;
    // Two members (wherever they are) publish at once.
    let senders: Vec<_> = peers
        .drain(..2)
        .enumerate()
        .map(|(k, mut p)| {
            thread::spawn(move || {
                for i in 0..EACH {
                    p.say("r", &format!("s{k}-{i}"));
                }
                read_messages(&mut p, 2 * EACH)
            })
        })
        .collect();
    let mut all: Vec<Vec<(u64, String)>> = peers
        .iter_mut()
        .map(|p| read_messages(p, 2 * EACH))
        .collect();
    all.extend(senders.into_iter().map(|t| t.join().expect("sender")));
    let want: Vec<u64> = (1..=2 * EACH as u64).collect();
    let reference = &all[0];
    for got in &all {
        let seqs: Vec<u64> = got.iter().map(|m| m.0).collect();
        assert_eq!(seqs, want, "every seq once, in order");
        // The same message under the same number everywhere.
        assert_eq!(got, reference);
    }
    let texts: HashSet<&str> = reference.iter().map(|m| &*m.1).collect();
    assert_eq!(texts.len(), 2 * EACH, "each text once");
    // Each sender's messages keep the order it sent them in.
    for k in 0..2 {
        let mine: Vec<&str> = reference
            .iter()
            .map(|m| &*m.1)
            .filter(|t| t.starts_with(&format!("s{k}-")))
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("s{k}-{i}")).collect();
        assert_eq!(mine, sent);
    }
    srv.assert_no_panic();
}

#[test]
fn since_replays_what_was_missed_on_whichever_loop_a_member_lands() {
    let srv = chat_threads();
    let mut sender = Peer::connect(srv.addr);
    let joined = sender.join("r");
    let epoch = joined["epoch"].as_str().expect("epoch").to_owned();
    let mut away = members_on_both_loops(srv.addr, "r", 8);
    for i in 1..=5 {
        sender.say("r", &format!("m{i}"));
    }
    for p in &mut away {
        assert_eq!(read_messages(p, 5).last().map(|m| m.0), Some(5));
    }
    drop(away);
    for i in 6..=10 {
        sender.say("r", &format!("m{i}"));
    }
    read_messages(&mut sender, 10);
    // Back, eight times over: each lands on one loop or the other.
    let mut back: Vec<Peer> = (0..8)
        .map(|_| {
            let mut p = Peer::connect(srv.addr);
            p.send(json!({"type": "join", "room": "r", "since": 5, "epoch": epoch}));
            assert_eq!(p.expect("joined")["seq"], 10);
            let got = read_messages(&mut p, 5);
            let want: Vec<(u64, String)> = (6..=10).map(|i| (i, format!("m{i}"))).collect();
            assert_eq!(got, want);
            p
        })
        .collect();
    sender.say("r", "m11");
    for p in &mut back {
        assert_eq!(read_messages(p, 1), [(11, "m11".to_owned())]);
        p.silent(Duration::from_millis(200));
    }
    srv.assert_no_panic();
}

#[test]
fn broadcasts_are_one_numbered_stream_across_loops() {
    let srv = chat_threads();
    let mut peers = members_on_both_loops(srv.addr, "lobby", 12);
    let epoch = peers[0].welcome["broadcast_epoch"]
        .as_str()
        .expect("broadcast epoch")
        .to_owned();
    for p in &peers {
        assert_eq!(p.welcome["broadcast_epoch"], epoch.as_str(), "one stream");
    }
    for t in ["b1", "b2", "b3"] {
        peers[1].send(json!({"type": "broadcast", "text": t}));
    }
    for p in &mut peers {
        let got: Vec<(u64, Value)> = (0..3)
            .map(|_| {
                let b = p.expect("broadcast");
                (seq(&b), b["text"].clone())
            })
            .collect();
        assert_eq!(got, [(1, json!("b1")), (2, json!("b2")), (3, json!("b3"))]);
    }
    let url = format!(
        "ws://{}/ws?broadcast_since=1&broadcast_epoch={epoch}",
        srv.addr
    );
    let mut back: Vec<Peer> = (0..6)
        .map(|_| {
            let mut p = Peer::from_ws(connect(&url).expect("reconnect"));
            assert_eq!(p.welcome["broadcast_seq"], 3);
            for want in [2, 3] {
                assert_eq!(seq(&p.expect("broadcast")), want);
            }
            p
        })
        .collect();
    peers[0].send(json!({"type": "broadcast", "text": "b4"}));
    for p in &mut back {
        assert_eq!(seq(&p.expect("broadcast")), 4);
        p.silent(Duration::from_millis(200));
    }
    srv.assert_no_panic();
}

#[test]
fn members_that_leave_or_close_take_their_loop_out_of_the_room() {
    let srv = chat_threads();
    let mut peers = members_on_both_loops(srv.addr, "r", 16);
    wait_until(WITHIN, "the room on both loops", || {
        per_loop(srv.addr, "wsloop_chat_hub_rooms") == [1.0, 1.0]
    });
    // Half leave, half close.
    for p in peers.iter_mut().take(8) {
        p.send(json!({"type": "leave", "room": "r"}));
        p.expect("left");
    }
    drop(peers.split_off(8));
    wait_until(WITHIN, "no room on either loop", || {
        per_loop(srv.addr, "wsloop_chat_hub_rooms") == [0.0, 0.0]
            && per_loop(srv.addr, "wsloop_chat_hub_members") == [0.0, 0.0]
    });
    srv.assert_no_panic();
}

#[cfg(feature = "redis")]
#[test]
fn threads_with_redis_is_refused_by_name() {
    let r = run_wsloop(
        "serve",
        &[
            "--app",
            "chat",
            "--threads",
            "2",
            "--redis",
            "redis://127.0.0.1:1",
        ],
        None,
        Duration::from_secs(10),
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr.contains("--threads 2 with --redis"),
        "{}",
        r.stderr
    );
}

/// Two loops of one hub on listeners of their own (so a test decides
/// which loop each member is on), loop 1's inbox `inbox` bytes and `keep`
/// messages kept per room.
struct TwoLoops {
    hub: Hub,
    addrs: [SocketAddr; 2],
    handles: Vec<wsloop::server::Handle>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl TwoLoops {
    fn start(keep: usize, inbox: usize) -> TwoLoops {
        Self::start_with(keep, inbox, [true, true])
    }

    /// `attach[i]` false: loop `i` is never woken by the other, so what
    /// is queued for it waits for its own next chat event.
    fn start_with(keep: usize, inbox: usize, attach: [bool; 2]) -> TwoLoops {
        Self::start_config(keep, inbox, attach, Config::default())
    }

    fn start_config(keep: usize, inbox: usize, attach: [bool; 2], config: Config) -> TwoLoops {
        let hub = Hub::with_history(LocalHistory::new(keep, 64), inbox);
        let mut t = TwoLoops {
            hub: hub.clone(),
            addrs: ["127.0.0.1:0".parse().unwrap(); 2],
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for (i, woken) in attach.into_iter().enumerate() {
            let bus = hub.bus();
            assert_eq!(bus.loop_no(), i);
            let mut server = Server::bind(
                "127.0.0.1:0",
                config.clone(),
                Chat::with_bus(Access::default(), bus),
            )
            .expect("bind");
            t.addrs[i] = server.local_addr();
            if woken {
                hub.attach(i, &mut server);
            }
            t.handles.push(server.handle());
            t.threads.push(thread::spawn(move || {
                server.run().expect("loop runs");
            }));
        }
        t
    }

    /// Holds loop `i` until the returned sender is used (or dropped).
    fn hold(&self, i: usize) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel::<()>();
        self.handles[i]
            .run(move |_| {
                let _ = rx.recv_timeout(WITHIN);
            })
            .expect("queue the hold");
        tx
    }

    fn stop(self) {
        for h in &self.handles {
            let _ = h.shutdown();
        }
        for t in self.threads {
            t.join().expect("loop thread");
        }
    }
}

/// `n` messages from a member of loop 0 while loop 1 is held, then what a
/// member of loop 1 gets once it is let go.
fn held_loop_run(keep: usize, n: u64) -> (Vec<Value>, TwoLoops) {
    let loops = TwoLoops::start(keep, 1024);
    let mut x = Peer::connect(loops.addrs[0]);
    let mut y = Peer::connect(loops.addrs[1]);
    x.join("r");
    y.join("r");
    let go = loops.hold(1);
    for i in 1..=n {
        x.say("r", &format!("m{i}"));
    }
    // All numbered: the sender has them all back.
    assert_eq!(
        read_messages(&mut x, n as usize).last().map(|m| m.0),
        Some(n)
    );
    assert!(loops.hub.missed(1) > 0, "loop 1's inbox overflowed");
    assert_eq!(loops.hub.missed(0), 0);
    go.send(()).expect("let loop 1 go");
    let mut got = Vec::new();
    while got.last().and_then(|m: &Value| m["seq"].as_u64()) != Some(n) {
        got.push(y.recv());
    }
    y.silent(Duration::from_millis(200));
    drop((x, y));
    (got, loops)
}

#[test]
fn a_loop_that_falls_behind_gets_what_did_not_fit_from_the_history() {
    let (got, loops) = held_loop_run(1000, 60);
    let seqs: Vec<u64> = got.iter().map(seq).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>(), "{got:?}");
    for m in &got {
        assert_eq!(m["text"], format!("m{}", seq(m)));
    }
    loops.stop();
}

#[test]
fn a_loop_that_falls_behind_past_the_history_gets_a_gap() {
    let (got, loops) = held_loop_run(10, 60);
    let gap = got
        .iter()
        .position(|m| m["type"] == "gap")
        .unwrap_or_else(|| panic!("a gap: {got:?}"));
    assert_eq!(got[gap]["room"], "r");
    assert_eq!(got[gap]["from"], 51, "the oldest kept");
    let before: Vec<u64> = got[..gap].iter().map(seq).collect();
    let after: Vec<u64> = got[gap + 1..].iter().map(seq).collect();
    assert_eq!(before, (1..=before.len() as u64).collect::<Vec<_>>());
    assert_eq!(after, (51..=60).collect::<Vec<_>>());
    loops.stop();
}

/// A connection that opens (or joins) while its loop still holds frames
/// numbered before its catch-up gets each of them once, in the catch-up,
/// and the members already there get them live. Loop 1 is not woken by
/// loop 0 here, so the frames are certain to be waiting.
#[test]
fn what_waits_for_a_loop_reaches_a_newcomer_once_through_its_catch_up() {
    let loops = TwoLoops::start_with(1000, 1 << 20, [true, false]);
    let mut x = Peer::connect(loops.addrs[0]);
    let mut y = Peer::connect(loops.addrs[1]);
    x.join("r");
    y.join("r");
    for t in ["b1", "b2", "b3"] {
        x.send(json!({"type": "broadcast", "text": t}));
    }
    for i in 1..=3 {
        x.say("r", &format!("m{i}"));
    }
    assert_eq!(x.expect("broadcast")["seq"], 1);
    x.expect("broadcast");
    x.expect("broadcast");
    read_messages(&mut x, 3);
    y.silent(Duration::from_millis(200));

    // Opening empties loop 1's inbox: y gets all six live; z only its
    // catch-up of the broadcasts.
    let url = format!("ws://{}/ws?broadcast_since=0", loops.addrs[1]);
    let mut z = Peer::from_ws(connect(&url).expect("connect"));
    assert_eq!(z.welcome["broadcast_seq"], 3);
    let got: Vec<u64> = (0..3).map(|_| seq(&z.expect("broadcast"))).collect();
    assert_eq!(got, [1, 2, 3]);
    z.silent(Duration::from_millis(200));
    let got: Vec<(String, u64)> = (0..6)
        .map(|_| {
            let v = y.recv();
            (v["type"].as_str().unwrap().to_owned(), seq(&v))
        })
        .collect();
    let want: Vec<(String, u64)> = [("broadcast", 1), ("broadcast", 2), ("broadcast", 3)]
        .into_iter()
        .chain([("message", 1), ("message", 2), ("message", 3)])
        .map(|(t, s)| (t.to_owned(), s))
        .collect();
    assert_eq!(got, want);

    // The same for a join: m4..m6 wait; w's join hands them to y and
    // replays them to w.
    let mut w = Peer::connect(loops.addrs[1]);
    for i in 4..=6 {
        x.say("r", &format!("m{i}"));
    }
    read_messages(&mut x, 3);
    y.silent(Duration::from_millis(200));
    w.send(json!({"type": "join", "room": "r", "since": 3}));
    assert_eq!(w.expect("joined")["seq"], 6);
    let got: Vec<u64> = read_messages(&mut w, 3).iter().map(|m| m.0).collect();
    assert_eq!(got, [4, 5, 6]);
    w.silent(Duration::from_millis(200));
    let got: Vec<u64> = read_messages(&mut y, 3).iter().map(|m| m.0).collect();
    assert_eq!(got, [4, 5, 6]);
    y.silent(Duration::from_millis(200));
    drop((x, y, z, w));
    loops.stop();
}

/// A library user's own requests fill loop 1's command queue while a
/// message for it is published on loop 0: it still arrives, with no
/// further publish, join or open to carry it.
#[test]
fn a_loop_whose_command_queue_is_full_still_gets_the_frame() {
    let mut config = Config::default();
    config.command_queue_len = 4;
    let loops = TwoLoops::start_config(1000, 1 << 20, [true, true], config);
    let mut x = Peer::connect(loops.addrs[0]);
    let mut y = Peer::connect(loops.addrs[1]);
    x.join("r");
    y.join("r");
    let go = loops.hold(1);
    let mut queued = 0;
    while loops.handles[1].run(|_| {}).is_ok() {
        queued += 1;
        assert!(queued <= 4, "the queue holds at most 4");
    }
    x.say("r", "m1");
    assert_eq!(read_messages(&mut x, 1), [(1, "m1".to_owned())]);
    go.send(()).expect("let loop 1 go");
    assert_eq!(read_messages(&mut y, 1), [(1, "m1".to_owned())]);
    y.silent(Duration::from_millis(200));
    drop((x, y));
    loops.stop();
}
