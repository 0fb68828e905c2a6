//! The chat across three servers under Redis faults, with a real
//! `redis-server` (installed with apt-get if missing; `WSLOOP_SKIP_REDIS=1`
//! skips). Thirty members of one room spread over three `wsloop serve
//! --app chat --redis` instances, four of them sending at a steady rate,
//! while Redis is paused (SIGSTOP) longer than the I/O timeout, then killed
//! and restarted empty (a new epoch), one server is killed (SIGKILL) and
//! restarted, and some members' connections are cut. Members reconnect
//! with backoff and `since` (which counts as staying a member).
//!
//! The checker, per member: every numbered message in `seq` order with no
//! hole, or an explicit `gap` covering the hole (`reset` when the history
//! started over); no text twice in any form (numbered or local); at the end
//! every member is at the room's last seq. Per sender: every message it
//! sent is either refused (an error with `retry`, resent later) or reaches
//! it exactly once. No server but the killed one dies; memory stays
//! bounded. About a minute.
#![cfg(feature = "redis")]

mod common;
mod redisproc;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use redisproc::*;
use serde_json::{json, Value};
use wsloop::client::connect;
use wsloop::Message;

const MEMBERS: usize = 30;
const SENDERS: usize = 4;
/// Each sender's pace.
const SEND_EVERY: Duration = Duration::from_millis(125);

/// What one member saw, in order.
#[derive(Debug, Clone)]
// Some fields are only shown, in the trace of a failed check.
#[allow(dead_code)]
enum Ev {
    /// (Re)connected and asked to join, with this since.
    Join(Option<(String, u64)>),
    Joined {
        epoch: String,
        seq: u64,
        local: bool,
    },
    Gap {
        from: u64,
        reset: bool,
    },
    Msg {
        seq: Option<u64>,
        text: String,
    },
    Lost(String),
}

#[derive(Default)]
struct Log {
    events: Vec<Ev>,
    /// Texts sent (each once; a refused one is resent under the same text).
    sent: Vec<String>,
    /// Refusals with retry (each resent).
    refused: usize,
    /// Texts refused and not yet resent when sending stopped.
    unsent: Vec<String>,
}

struct Shared {
    addrs: Mutex<Vec<SocketAddr>>,
    sending: AtomicBool,
    done: AtomicBool,
    cut: Vec<AtomicBool>,
}

/// One member: connects to its server (another one if that is down),
/// joins with `since`, sends if it is a sender, records everything.
fn member(i: usize, home: usize, sender: bool, shared: Arc<Shared>) -> Log {
    let mut log = Log::default();
    let mut since: Option<(String, u64)> = None;
    let mut server = home;
    let mut backoff = Duration::from_millis(100);
    let mut n = 0;
    let mut next_send = Instant::now();
    let mut resend: VecDeque<(Instant, String)> = VecDeque::new();
    let mut epoch: Option<String> = None;
    'connect: while !shared.done.load(Ordering::Acquire) {
        let addr = shared.addrs.lock().unwrap()[server];
        let mut ws = match connect(&format!("ws://{addr}/ws")) {
            Ok(ws) => ws,
            Err(e) => {
                log.events.push(Ev::Lost(format!("connect {addr}: {e}")));
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // Senders stay on servers that are never killed.
                if !sender {
                    server = (server + 1) % 3;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        ws.set_read_timeout(Some(Duration::from_millis(20)));
        let mut join = json!({"type": "join", "room": "c"});
        if let Some((e, s)) = &since {
            join["since"] = json!(s);
            join["epoch"] = json!(e);
        }
        log.events.push(Ev::Join(since.clone()));
        if ws.send_text(&join.to_string()).is_err() {
            continue;
        }
        loop {
            if shared.done.load(Ordering::Acquire) {
                let _ = ws.close(wsloop::CloseCode::NORMAL, "done");
                break 'connect;
            }
            if shared.cut[i].swap(false, Ordering::AcqRel) {
                log.events.push(Ev::Lost("cut".into()));
                drop(ws); // no close handshake: the TCP connection just ends
                server = home;
                continue 'connect;
            }
            let now = Instant::now();
            if sender && shared.sending.load(Ordering::Acquire) && now >= next_send {
                next_send = now + SEND_EVERY;
                let text = match resend.front() {
                    Some((at, _)) if *at <= now => resend.pop_front().unwrap().1,
                    _ => {
                        n += 1;
                        let t = format!("s{i}-{n}");
                        log.sent.push(t.clone());
                        t
                    }
                };
                let m = json!({"type": "message", "room": "c", "text": text, "ref": text});
                if ws.send_text(&m.to_string()).is_err() {
                    resend.push_front((now, text));
                }
            }
            let text = match ws.recv_message() {
                Ok(Message::Text(t)) => t.into_owned(),
                Ok(_) => continue,
                Err(wsloop::Error::Timeout(_)) => continue,
                Err(e) => {
                    log.events.push(Ev::Lost(e.to_string()));
                    thread::sleep(backoff);
                    continue 'connect;
                }
            };
            let v: Value = serde_json::from_str(&text).expect("JSON from the chat");
            match v["type"].as_str().unwrap() {
                // The broadcast stream's (a new epoch after Redis lost it).
                "welcome" => {}
                "gap" if v["room"] == "*" => {}
                "joined" => {
                    let local = v["local"] == true;
                    let e = v["epoch"].as_str().unwrap().to_owned();
                    log.events.push(Ev::Joined {
                        epoch: e.clone(),
                        seq: v["seq"].as_u64().unwrap(),
                        local,
                    });
                    if !local && epoch.as_ref() != Some(&e) {
                        if epoch.is_none() {
                            since = Some((e.clone(), v["seq"].as_u64().unwrap()));
                        }
                        epoch = Some(e);
                    }
                }
                "gap" => {
                    let from = v["from"].as_u64().unwrap();
                    log.events.push(Ev::Gap {
                        from,
                        reset: v["reset"] == true,
                    });
                    if let Some(e) = &epoch {
                        since = Some((e.clone(), from - 1));
                    }
                }
                "message" => {
                    let seq = v["seq"].as_u64();
                    log.events.push(Ev::Msg {
                        seq,
                        text: v["text"].as_str().unwrap().to_owned(),
                    });
                    if let (Some(s), Some(e)) = (seq, &epoch) {
                        since = Some((e.clone(), s));
                    }
                }
                "error" => {
                    assert_eq!(v["retry"], true, "member {i}: {v}");
                    let r = v["ref"].as_str().expect("error carries the ref");
                    log.refused += 1;
                    resend.push_back((Instant::now() + Duration::from_millis(500), r.into()));
                }
                other => panic!("member {i}: unexpected {other}: {v}"),
            }
        }
    }
    log.unsent = resend.into_iter().map(|(_, t)| t).collect();
    log
}

/// Per-member counts, and the checks of the module doc.
#[derive(Default, Debug)]
struct Counts {
    numbered: usize,
    local: usize,
    gaps: usize,
    resets: usize,
    reconnects: usize,
}

/// Checks one member's stream; returns its counts and where it ended
/// (epoch, last seq).
fn check_member(i: usize, log: &Log) -> (Counts, Option<String>, Option<u64>) {
    let mut c = Counts::default();
    let mut epoch: Option<String> = None;
    let mut at: Option<u64> = None;
    let mut texts: HashMap<&str, usize> = HashMap::new();
    let trace = |k: usize| -> String {
        let from = k.saturating_sub(8);
        format!("{:?}", &log.events[from..(k + 1).min(log.events.len())])
    };
    for (k, ev) in log.events.iter().enumerate() {
        match ev {
            Ev::Join(_) => c.reconnects += 1,
            Ev::Joined {
                epoch: e,
                seq,
                local,
            } => {
                if *local || epoch.as_ref() == Some(e) {
                    continue;
                }
                if epoch.is_none() {
                    at = Some(*seq);
                } else {
                    // Another history: a reset gap says where it starts.
                    at = None;
                }
                epoch = Some(e.clone());
            }
            Ev::Gap { from, reset } => {
                c.gaps += 1;
                if *reset {
                    c.resets += 1;
                } else {
                    let a = at.expect("a gap follows a joined");
                    assert!(
                        *from > a + 1,
                        "member {i}: gap to {from} after {a}: {}",
                        trace(k)
                    );
                }
                at = Some(from - 1);
            }
            Ev::Msg { seq, text } => {
                let n = texts.entry(text).or_default();
                *n += 1;
                assert_eq!(*n, 1, "member {i}: {text:?} twice: {}", trace(k));
                match seq {
                    None => c.local += 1,
                    Some(s) => {
                        c.numbered += 1;
                        let a = at.unwrap_or_else(|| panic!("member {i}: {}", trace(k)));
                        assert_eq!(*s, a + 1, "member {i}: seq {s} after {a}: {}", trace(k));
                        at = Some(*s);
                    }
                }
            }
            Ev::Lost(_) => {}
        }
    }
    (c, epoch, at)
}

#[test]
fn chat_survives_redis_and_server_faults_exactly_once_or_gap() {
    let Some(bin) = redis_server() else {
        return;
    };
    let t0 = Instant::now();
    let mut redis = Redis::start(bin);
    let mut servers: Vec<BinServer> = (0..3).map(|_| instance(&redis, &[])).collect();
    for s in &servers {
        wait_backplane(s.addr, BACKPLANE_WAIT);
    }
    let shared = Arc::new(Shared {
        addrs: Mutex::new(servers.iter().map(|s| s.addr).collect()),
        sending: AtomicBool::new(false),
        done: AtomicBool::new(false),
        cut: (0..MEMBERS).map(|_| AtomicBool::new(false)).collect(),
    });
    // Senders on servers 0 and 2 (never killed); members round-robin.
    let threads: Vec<_> = (0..MEMBERS)
        .map(|i| {
            let sender = i < SENDERS;
            let home = if sender { [0, 2][i % 2] } else { i % 3 };
            let sh = shared.clone();
            thread::Builder::new()
                .name(format!("member-{i}"))
                .spawn(move || member(i, home, sender, sh))
                .unwrap()
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    shared.sending.store(true, Ordering::Release);
    let mut peak_rss = 0;
    let mut sample = |servers: &[BinServer]| {
        for s in servers {
            peak_rss = peak_rss.max(s.rss_kib());
        }
    };
    let at = |secs: u64| {
        let when = t0 + Duration::from_secs(secs);
        thread::sleep(when.saturating_duration_since(Instant::now()));
    };
    at(6);
    redis.pause(); // longer than the 5 s I/O timeout
    at(14);
    redis.resume();
    sample(&servers);
    at(20);
    redis.kill(); // its data is lost: a new epoch
    thread::sleep(Duration::from_millis(500));
    redis.restart();
    at(27);
    servers[1].signal("KILL");
    let _ = servers[1].wait_exit(Duration::from_secs(5));
    at(29);
    servers[1] = instance(&redis, &[]);
    shared.addrs.lock().unwrap()[1] = servers[1].addr;
    at(34);
    for i in [SENDERS, SENDERS + 1, 10, 11, 17, 23] {
        shared.cut[i].store(true, Ordering::Release);
    }
    at(40);
    shared.sending.store(false, Ordering::Release);
    sample(&servers);
    // Let the resends and catch-ups settle.
    at(50);
    shared.done.store(true, Ordering::Release);
    let logs: Vec<Log> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut total = Counts::default();
    let mut ends = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let (c, epoch, at) = check_member(i, log);
        ends.push((epoch, at));
        total.numbered += c.numbered;
        total.local += c.local;
        total.gaps += c.gaps;
        total.resets += c.resets;
        total.reconnects += c.reconnects;
    }
    // Every member ends at the room's last seq, as Redis has it.
    let epoch = redis.command(&["HGET", "wsloop:chat:{c}:meta", "epoch"]);
    let seq = redis.command(&["HGET", "wsloop:chat:{c}:meta", "seq"]);
    let field = |reply: &str| reply.lines().nth(1).unwrap_or_default().to_owned();
    let (epoch, last) = (field(&epoch), field(&seq));
    let last: u64 = last.parse().unwrap_or_else(|_| panic!("room seq {seq:?}"));
    assert!(last > 0, "messages were numbered after the restart");
    for (i, end) in ends.iter().enumerate() {
        assert_eq!(
            (end.0.as_deref(), end.1),
            (Some(epoch.as_str()), Some(last)),
            "member {i} ends at the room's last seq"
        );
    }
    let (mut sent, mut refused) = (0, 0);
    for (i, log) in logs.iter().enumerate().take(SENDERS) {
        sent += log.sent.len();
        refused += log.refused;
        let got: HashMap<&str, ()> = log
            .events
            .iter()
            .filter_map(|e| match e {
                Ev::Msg { text, .. } => Some((text.as_str(), ())),
                _ => None,
            })
            .collect();
        let missing: Vec<&String> = log
            .sent
            .iter()
            .filter(|t| !got.contains_key(t.as_str()) && !log.unsent.contains(t))
            .collect();
        assert!(
            missing.is_empty(),
            "sender {i}: never came back: {missing:?}"
        );
    }
    for (k, s) in servers.iter_mut().enumerate() {
        assert!(s.child.try_wait().unwrap().is_none(), "server {k} died");
        s.assert_no_panic();
    }
    eprintln!(
        "chaos: {sent} messages sent ({refused} refusals to retry), {} numbered and {} local \
         deliveries to {MEMBERS} members, duplicates: 0, gaps: {} ({} reset), {} joins, \
         room at {epoch}#{last}, peak server RSS {} MiB, {:.0} s",
        total.numbered,
        total.local,
        total.gaps,
        total.resets,
        total.reconnects,
        peak_rss / 1024,
        t0.elapsed().as_secs_f64()
    );
    assert!(peak_rss < 256 * 1024, "server RSS {peak_rss} KiB");
}
