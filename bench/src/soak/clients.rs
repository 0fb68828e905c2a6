//! The soak's clients, one thread each: listeners, churners, the
//! broadcaster, the firehose's sender and reader, and slow readers.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wsloop::client::WebSocket;
use wsloop::{CloseCode, Error, Event, Message};

use super::counters::Counters;
use super::proto::{join, message, num_field, open, recv_text, send};
use super::Options;

const ROOMS: usize = 10;

/// xorshift: enough to vary choices.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub(super) fn listeners(c: Arc<Counters>, o: Arc<Options>, stop: Arc<AtomicBool>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut conns: Vec<WebSocket> = Vec::new();
    let mut last_swap = Instant::now();
    while !stop.load(Relaxed) {
        while conns.len() < o.listeners && !stop.load(Relaxed) {
            let Some(mut ws) = open(&c, &o.url) else {
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            let room = format!("room{}", rng.below(ROOMS as u64));
            if send(&c, &mut ws, &join(&room)) {
                conns.push(ws);
            }
        }
        let mut i = 0;
        while i < conns.len() {
            let mut dead = false;
            // Drain what is there.
            for _ in 0..1000 {
                match recv_text(&mut conns[i], Duration::from_millis(1)) {
                    Ok(Some(_)) => {
                        c.received.fetch_add(1, Relaxed);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        c.error(format!("listener lost: {e}"));
                        dead = true;
                        break;
                    }
                }
            }
            if dead {
                conns.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if last_swap.elapsed() > Duration::from_millis(200) && !conns.is_empty() {
            last_swap = Instant::now();
            let k = rng.below(conns.len() as u64) as usize;
            let mut ws = conns.swap_remove(k);
            if rng.below(2) == 0 {
                let _ = ws.close(CloseCode::NORMAL, "bye");
                c.clean_closes.fetch_add(1, Relaxed);
            } else {
                // Just drop TCP (with unread data this is a reset).
                drop(ws);
                c.drops.fetch_add(1, Relaxed);
            }
        }
    }
    for mut ws in conns {
        let _ = ws.close(CloseCode::NORMAL, "done");
    }
}

pub(super) fn churner(c: Arc<Counters>, o: Arc<Options>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        n += 1;
        let Some(mut ws) = open(&c, &o.url) else {
            thread::sleep(Duration::from_millis(200));
            continue;
        };
        let room = format!("room{}", rng.below(ROOMS as u64));
        let marker = format!("churn-{seed}-{n}");
        if !(send(&c, &mut ws, &join(&room)) && send(&c, &mut ws, &message(&room, &marker))) {
            continue;
        }
        // Our own message must come back through the room.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            match recv_text(&mut ws, Duration::from_millis(200)) {
                Ok(Some(t)) => {
                    c.received.fetch_add(1, Relaxed);
                    seen = t.contains(&marker);
                }
                Ok(None) => {}
                Err(e) => {
                    c.error(format!("churner lost: {e}"));
                    break;
                }
            }
        }
        if !seen {
            c.error(format!(
                "churner {seed}: own message {marker} not delivered in 5 s"
            ));
        }
        if rng.below(5) == 0 {
            drop(ws);
            c.drops.fetch_add(1, Relaxed);
        } else {
            match ws.close(CloseCode::NORMAL, "") {
                Ok(info) if info.clean => {
                    c.clean_closes.fetch_add(1, Relaxed);
                }
                other => c.error(format!("churner close: {other:?}")),
            }
        }
        thread::sleep(Duration::from_millis(20 + rng.below(80)));
    }
}

pub(super) fn broadcaster(c: Arc<Counters>, o: Arc<Options>, stop: Arc<AtomicBool>) {
    let text = "b".repeat(1024);
    while !stop.load(Relaxed) {
        let Some(mut ws) = open(&c, &o.url) else {
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        for r in 0..ROOMS {
            if !send(&c, &mut ws, &join(&format!("room{r}"))) {
                break;
            }
        }
        'run: while !stop.load(Relaxed) {
            let t = Instant::now();
            let b = format!("{{\"type\":\"broadcast\",\"text\":\"{text}\"}}");
            if !send(&c, &mut ws, &b) {
                break;
            }
            for r in 0..ROOMS {
                if !send(&c, &mut ws, &message(&format!("room{r}"), "tick")) {
                    break 'run;
                }
            }
            // Read what came back (it is in every room and gets every
            // broadcast) until the next tick.
            while t.elapsed() < Duration::from_millis(100) {
                match recv_text(&mut ws, Duration::from_millis(10)) {
                    Ok(Some(_)) => {
                        c.received.fetch_add(1, Relaxed);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        c.error(format!("broadcaster lost: {e}"));
                        break 'run;
                    }
                }
            }
        }
        let _ = ws.close(CloseCode::NORMAL, "");
    }
}

pub(super) fn firehose_sender(c: Arc<Counters>, o: Arc<Options>, stop: Arc<AtomicBool>) {
    let text = "f".repeat(4000);
    let every = Duration::from_secs_f64(1.0 / o.firehose.max(1) as f64);
    while !stop.load(Relaxed) {
        let Some(mut ws) = open(&c, &o.url) else {
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        // Not a member: only publishes (messages need membership, so join
        // and read the echoes too).
        if !send(&c, &mut ws, &join("firehose")) {
            continue;
        }
        let mut next = Instant::now();
        'run: while !stop.load(Relaxed) {
            if !send(&c, &mut ws, &message("firehose", &text)) {
                break;
            }
            next += every;
            loop {
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match recv_text(&mut ws, left) {
                    Ok(_) => {}
                    Err(e) => {
                        c.error(format!("firehose sender lost: {e}"));
                        break 'run;
                    }
                }
            }
        }
        let _ = ws.close(CloseCode::NORMAL, "");
    }
}

/// Reads the firehose and checks sequence numbers: each once, in order.
pub(super) fn firehose_reader(c: Arc<Counters>, o: Arc<Options>, stop: Arc<AtomicBool>) {
    while !stop.load(Relaxed) {
        let Some(mut ws) = open(&c, &o.url) else {
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        if !send(&c, &mut ws, &join("firehose")) {
            continue;
        }
        let mut last: Option<u64> = None;
        while !stop.load(Relaxed) {
            match recv_text(&mut ws, Duration::from_millis(200)) {
                Ok(Some(t)) => {
                    c.received.fetch_add(1, Relaxed);
                    if t.contains("\"joined\"") {
                        last = num_field(&t, "seq");
                    } else if t.contains("\"message\"") {
                        let seq = num_field(&t, "seq");
                        if let (Some(l), Some(s)) = (last, seq) {
                            if s != l + 1 {
                                c.error(format!("firehose: seq {s} after {l}"));
                            }
                        }
                        last = seq;
                        c.firehose_seen.fetch_add(1, Relaxed);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    c.error(format!("firehose reader lost: {e}"));
                    break;
                }
            }
        }
        let _ = ws.close(CloseCode::NORMAL, "");
    }
}

/// Joins the firehose, stops reading for 45 s, then reads everything: an
/// unbroken sequence, then (usually) close 1008 from the overflow policy.
pub(super) fn slow_reader(c: Arc<Counters>, o: Arc<Options>, stop: Arc<AtomicBool>) {
    while !stop.load(Relaxed) {
        let Some(mut ws) = open(&c, &o.url) else {
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        if !send(&c, &mut ws, &join("firehose")) {
            continue;
        }
        // Not reading, but pinging every 5 s so the server's heartbeat does
        // not end us first: what ends us must be the write queue limit.
        let pause = Instant::now();
        let mut pinged = Instant::now();
        while pause.elapsed() < Duration::from_secs(45) && !stop.load(Relaxed) {
            thread::sleep(Duration::from_millis(100));
            if pinged.elapsed() > Duration::from_secs(5) {
                pinged = Instant::now();
                let _ = ws.ping(b"still here");
            }
        }
        let mut last: Option<u64> = None;
        let mut intact = true;
        ws.set_read_timeout(Some(Duration::from_secs(2)));
        let reading = Instant::now();
        loop {
            if reading.elapsed() > Duration::from_secs(15) {
                // Caught up and still open: the queue stayed under the limit.
                let _ = ws.close(CloseCode::NORMAL, "");
                break;
            }
            match ws.recv() {
                Ok(Event::Message(Message::Text(t))) => {
                    if t.contains("\"joined\"") {
                        last = num_field(&t, "seq");
                    } else if t.contains("\"message\"") {
                        let seq = num_field(&t, "seq");
                        if let (Some(l), Some(s)) = (last, seq) {
                            intact &= s == l + 1;
                        }
                        last = seq;
                    }
                }
                Ok(Event::Close(code, reason)) => {
                    if code == CloseCode::POLICY {
                        c.policy_closes.fetch_add(1, Relaxed);
                    } else {
                        c.error(format!("slow reader closed with {code} {reason}"));
                    }
                    break;
                }
                Ok(_) => {}
                // Caught up without being closed: the queue stayed under the
                // limit (the server held it), fine.
                Err(Error::Timeout(_)) => {
                    let _ = ws.close(CloseCode::NORMAL, "");
                    break;
                }
                Err(e) => {
                    // The server gave up on us (after close_timeout or a
                    // pong timeout): also the policy at work.
                    c.policy_closes.fetch_add(1, Relaxed);
                    eprintln!("slow reader ended: {e}");
                    break;
                }
            }
        }
        if intact {
            c.slow_rounds_intact.fetch_add(1, Relaxed);
        } else {
            c.error("slow reader: a gap or reorder in what was delivered".into());
        }
    }
}
