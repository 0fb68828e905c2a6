//! Soak driver for `wsloop serve --app chat` (`bench/examples/soak.rs`, run
//! by `scripts/soak.sh`).
//!
//! Runs for `duration` and mixes, on one chat server:
//!
//! - listeners: `listeners` long-lived connections in ten rooms, read
//!   round-robin; one of them is dropped (abruptly or cleanly) and replaced
//!   about every 200 ms;
//! - churners: `churners` threads that connect, join a room, publish a
//!   message, wait to see it come back, then close cleanly or just drop TCP;
//! - a broadcaster: one 1 KiB broadcast and one message to each of the ten
//!   rooms every 100 ms;
//! - a firehose: 4 KiB messages to room "firehose" at `firehose` per
//!   second, read by one fast reader that checks every sequence number
//!   arrives once and in order (nothing accepted is lost);
//! - slow readers: `slow` connections in the firehose room that stop
//!   reading for 45 s, then read what is there: the server must have
//!   applied its overflow policy (close 1008) or delivered an unbroken
//!   sequence.
//!
//! Every 10 s one line of counters goes to stdout; at the end a summary.

mod clients;
mod counters;
mod proto;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clients::{broadcaster, churner, firehose_reader, firehose_sender, listeners, slow_reader};
use counters::Counters;

/// One soak run.
pub struct Options {
    /// The chat endpoint, `ws://HOST:PORT/ws`.
    pub url: String,
    /// How long the load runs.
    pub duration: Duration,
    /// Long-lived listening connections.
    pub listeners: usize,
    /// Threads that connect, publish, see it delivered and leave.
    pub churners: usize,
    /// Slow readers in the firehose room.
    pub slow: usize,
    /// Firehose messages per second.
    pub firehose: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: String::new(),
            duration: Duration::from_secs(600),
            listeners: 200,
            churners: 4,
            slow: 3,
            firehose: 50,
        }
    }
}

/// Runs the soak, printing counters every 10 s and a summary; returns the
/// exit status: 0, or 1 if an error was counted.
pub fn run(o: Options) -> i32 {
    let o = Arc::new(o);
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
        return 1;
    }
    0
}
