//! Soak driver for `wsloop serve --app chat` (used by `scripts/soak.sh`).
//!
//! Runs for `--duration` and mixes, on one chat server:
//!
//! - listeners: `--listeners` long-lived connections in ten rooms, read
//!   round-robin; one of them is dropped (abruptly or cleanly) and replaced
//!   about every 200 ms;
//! - churners: `--churners` threads that connect, join a room, publish a
//!   message, wait to see it come back, then close cleanly or just drop TCP;
//! - a broadcaster: one 1 KiB broadcast and one message to each of the ten
//!   rooms every 100 ms;
//! - a firehose: 4 KiB messages to room "firehose" at `--firehose` per
//!   second, read by one fast reader that checks every sequence number
//!   arrives once and in order (nothing accepted is lost);
//! - slow readers: `--slow` connections in the firehose room that stop
//!   reading for 45 s, then read what is there: the server must have
//!   applied its overflow policy (close 1008) or delivered an unbroken
//!   sequence.
//!
//! Every 10 s one line of counters goes to stdout; at the end a summary.
//! Exit status 0 when no error was counted.
//!
//! ```sh
//! cargo build --release --bin wsloop --example soak
//! target/release/wsloop serve --app chat --addr 127.0.0.1:9300 --write-limit 1M &
//! target/release/examples/soak --url ws://127.0.0.1:9300/ws --duration 600
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wsloop::client::{connect, WebSocket};
use wsloop::{CloseCode, Error, Event, Message};

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    clean_closes: AtomicU64,
    drops: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    policy_closes: AtomicU64,
    slow_rounds_intact: AtomicU64,
    firehose_seen: AtomicU64,
    errors: AtomicU64,
    last_errors: Mutex<VecDeque<String>>,
}

impl Counters {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        eprintln!("soak error: {what}");
        let mut l = self.last_errors.lock().unwrap();
        l.push_back(what);
        if l.len() > 20 {
            l.pop_front();
        }
    }

    fn line(&self, t: Duration) -> String {
        format!(
            "t={:>5}s connects={} connect_failures={} clean_closes={} drops={} sent={} received={} \
             firehose_seen={} policy_closes={} slow_rounds_intact={} errors={}",
            t.as_secs(),
            self.connects.load(Relaxed),
            self.connect_failures.load(Relaxed),
            self.clean_closes.load(Relaxed),
            self.drops.load(Relaxed),
            self.sent.load(Relaxed),
            self.received.load(Relaxed),
            self.firehose_seen.load(Relaxed),
            self.policy_closes.load(Relaxed),
            self.slow_rounds_intact.load(Relaxed),
            self.errors.load(Relaxed),
        )
    }
}

struct Opts {
    url: String,
    duration: Duration,
    listeners: usize,
    churners: usize,
    slow: usize,
    firehose: u64,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        url: String::new(),
        duration: Duration::from_secs(600),
        listeners: 200,
        churners: 4,
        slow: 3,
        firehose: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| panic!("{a} needs a value"))
                .to_owned()
        };
        match a.as_str() {
            "--url" => o.url = val(),
            "--duration" => o.duration = Duration::from_secs(val().parse().expect("seconds")),
            "--listeners" => o.listeners = val().parse().expect("number"),
            "--churners" => o.churners = val().parse().expect("number"),
            "--slow" => o.slow = val().parse().expect("number"),
            "--firehose" => o.firehose = val().parse().expect("messages per second"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!o.url.is_empty(), "--url ws://HOST:PORT/ws is required");
    o
}

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

/// A JSON string literal; the driver only sends ASCII without quotes,
/// backslashes or control characters.
fn json_str(s: &str) -> String {
    debug_assert!(!s.contains(['"', '\\']) && !s.contains(char::is_control));
    format!("\"{s}\"")
}

fn join(room: &str) -> String {
    format!("{{\"type\":\"join\",\"room\":{}}}", json_str(room))
}

fn message(room: &str, text: &str) -> String {
    format!(
        "{{\"type\":\"message\",\"room\":{},\"text\":{}}}",
        json_str(room),
        json_str(text)
    )
}

/// Reads one text event within `t`: `Ok(None)` on timeout.
fn recv_text(ws: &mut WebSocket, t: Duration) -> Result<Option<String>, Error> {
    ws.set_read_timeout(Some(t));
    loop {
        match ws.recv() {
            Ok(Event::Message(Message::Text(s))) => return Ok(Some(s.into_owned())),
            Ok(Event::Message(_)) => return Ok(None),
            Ok(Event::Close(code, reason)) => {
                return Err(Error::Url(format!("closed by server: {code} {reason}")))
            }
            Ok(_) => continue,
            Err(Error::Timeout(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Pulls `"field":NUMBER` out of a JSON line (no full parse needed).
fn num_field(s: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let at = s.find(&key)? + key.len();
    let digits: String = s[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn open(c: &Counters, url: &str) -> Option<WebSocket> {
    match connect(url) {
        Ok(mut ws) => {
            c.connects.fetch_add(1, Relaxed);
            // The welcome.
            match recv_text(&mut ws, Duration::from_secs(5)) {
                Ok(Some(w)) if w.contains("\"welcome\"") => Some(ws),
                other => {
                    c.error(format!("no welcome: {other:?}"));
                    None
                }
            }
        }
        Err(e) => {
            c.connect_failures.fetch_add(1, Relaxed);
            c.error(format!("connect: {e}"));
            None
        }
    }
}

fn send(c: &Counters, ws: &mut WebSocket, text: &str) -> bool {
    match ws.send_text(text) {
        Ok(()) => {
            c.sent.fetch_add(1, Relaxed);
            true
        }
        Err(e) => {
            c.error(format!("send: {e}"));
            false
        }
    }
}

fn listeners(c: Arc<Counters>, o: Arc<Opts>, stop: Arc<AtomicBool>) {
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

fn churner(c: Arc<Counters>, o: Arc<Opts>, stop: Arc<AtomicBool>, seed: u64) {
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

fn broadcaster(c: Arc<Counters>, o: Arc<Opts>, stop: Arc<AtomicBool>) {
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

fn firehose_sender(c: Arc<Counters>, o: Arc<Opts>, stop: Arc<AtomicBool>) {
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
fn firehose_reader(c: Arc<Counters>, o: Arc<Opts>, stop: Arc<AtomicBool>) {
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
fn slow_reader(c: Arc<Counters>, o: Arc<Opts>, stop: Arc<AtomicBool>) {
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

fn main() {
    let o = Arc::new(parse_args());
    let c = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut threads = Vec::new();
    macro_rules! spawn {
        ($f:expr) => {{
            let (c, o, s) = (c.clone(), o.clone(), stop.clone());
            threads.push(thread::spawn(move || $f(c, o, s)));
        }};
    }
    spawn!(listeners);
    spawn!(broadcaster);
    spawn!(firehose_sender);
    spawn!(firehose_reader);
    for _ in 0..o.slow {
        spawn!(slow_reader);
    }
    for i in 0..o.churners {
        let (c, o, s) = (c.clone(), o.clone(), stop.clone());
        threads.push(thread::spawn(move || churner(c, o, s, 1000 + i as u64)));
    }
    let mut next = start + Duration::from_secs(10);
    while start.elapsed() < o.duration {
        thread::sleep(next.saturating_duration_since(Instant::now()));
        next += Duration::from_secs(10);
        println!("{}", c.line(start.elapsed()));
    }
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!("final {}", c.line(start.elapsed()));
    let errors = c.errors.load(Relaxed);
    if errors > 0 {
        println!("last errors:");
        for e in c.last_errors.lock().unwrap().iter() {
            println!("  {e}");
        }
        std::process::exit(1);
    }
}
