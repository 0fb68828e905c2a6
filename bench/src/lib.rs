//! `wsloop bench URL`: a load generator for any WebSocket echo server, in
//! the spirit of uSockets' load_test, and for `wsloop serve --app chat`.
//!
//! ```text
//!  Options ──► run: resolve the URL, build one read-only Plan
//!                │  one thread per --threads, each with its own mio Poll
//!                ▼
//!              worker: connect (bounded concurrency) → barrier → warmup →
//!                │     measure (or hold) → open loop's drain → close, each
//!                │     phase with a deadline; pace: the open loop's schedule
//!                ▼
//!              conn: per socket, a wsloop::Client (non-blocking connect,
//!                │   upgrade, frames); echoes checked as it lends them,
//!                │   or (chat) room deliveries checked by sequence number
//!                ▼
//!              stats, hist per thread ──► merged ──► report: summary or --json
//!              series: each second, all threads ──► --progress, --json
//!              procfs: the server's RSS and CPU (--server-pid), sampled by run
//! ```
//!
//! One mio `Poll` per thread drives many non-blocking
//! [`Client`](wsloop::client::Client)s (not the blocking client), made
//! from one [`ClientOptions`] per run:
//! `handle_event` for each readiness event, then `next_event_with` lends
//! each echo borrowed from the read buffer the thread's clients share, to
//! be checked and replaced in place; a connection's writes are batched
//! into one `flush` after its input is processed. Payloads are slices of
//! one shared pattern buffer, so the hot path allocates nothing of its
//! own.
//!
//! Phases: connect (bounded concurrency, every thread) → barrier → warmup →
//! measure (or hold, in connect mode) → with `--rate`, a drain (what is
//! owed is sent, the last replies awaited) → close handshake on every
//! connection. Every phase has a deadline, so the run always ends by
//! itself.
//!
//! Closed loop (echo, latency): a message is sent for each echo, so a slow
//! server slows the sending and hides its own delay. Open loop (`--rate`,
//! and chat mode): `pace` sends on a schedule and times each message from
//! when it was due, so queueing shows in the latency. Chat mode makes each
//! connection a member of a `wsloop serve --app chat` room (`chat`) and
//! checks every delivery's room sequence number.
//!
//! wss:// URLs (feature `tls`) give each client a rustls client
//! connection; the TLS handshake is timed as part of the connection's
//! handshake (`Client::upgrade_time`).
//!
//! Where things are: [`Options`] and [`Mode`] say what to do; `plan` is
//! what every thread reads; `payload` makes and checks the messages;
//! `conn` drives one connection's client, `chat` its
//! room membership, `pace` the open loop's schedule, `worker` one thread's
//! loop and phases; `stats` and `hist` count, `series` keeps each second,
//! `procfs` samples the server, `meter` draws progress and `report` prints
//! the summary.
//! `wsloop bench` fills [`Options`] from its flags and calls [`run`], which
//! prints the summary and returns the exit status.
//!
//! Two more loads for the chat app, each with a program in
//! `bench/examples/`: [`fanout`] (one sender, thousands of receivers: the
//! server's fan-out rate) and [`soak`] (a mixed load for many minutes:
//! churn, slow readers, a checked firehose; `scripts/soak.sh`). The
//! fan-out rate of a running `wsloop serve --app chat`:
//!
//! ```no_run
//! use wsloop_bench::fanout::{run, Options};
//!
//! let o = Options {
//!     url: "ws://127.0.0.1:9100/ws".into(),
//!     conns: 1000,
//!     ..Options::default()
//! };
//! run(&o)?; // prints the delivered messages per second of each run
//! # Ok::<(), String>(())
//! ```

#![forbid(unsafe_code)]

mod chat;
mod conn;
pub mod fanout;
mod hist;
mod meter;
mod options;
mod pace;
mod payload;
mod plan;
mod procfs;
mod report;
mod series;
pub mod soak;
mod stats;
mod worker;

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use wsloop::client::ClientOptions;
use wsloop::Config;

pub use options::{Mode, Options, TlsSetting};
pub use procfs::{read_rss_anon_kib, read_rss_kib};
pub use report::fmt_bytes;

use meter::Meter;
use payload::Payload;
use plan::Plan;
use procfs::CpuMarks;
use report::{Report, Rss};
use series::Series;
use stats::Stats;
use worker::{Progress, Shared, Worker, CLOSE_TIMEOUT};

/// Runs the load generator and prints its summary. Returns the exit
/// status: 0; 1 if an error was counted (or a poller could not be made);
/// 2 for a wss:// host that cannot be a TLS name; 3 if the host does not
/// resolve or no connection opened.
pub fn run(o: Options) -> i32 {
    let servers = match plan::servers(&o) {
        Ok(s) => s,
        Err((status, msg)) => {
            eprintln!("wsloop bench: {msg}");
            return status;
        }
    };
    let mut config = Config::default();
    config.ping_interval = None;
    config.idle_timeout = None;
    config.close_timeout = CLOSE_TIMEOUT;
    config.max_message_size = config.max_message_size.max(o.size);
    config.max_frame_size = config.max_frame_size.max(o.size);
    let queued = o.pipeline.saturating_mul(o.size + 14).saturating_mul(2);
    config.write_buffer_limit = config.write_buffer_limit.max(queued);
    config.deflate.enabled = o.deflate;
    let mut client = ClientOptions::default();
    client.config = config;
    client.nodelay = true;
    client.protocols = o.protocols.clone();
    client.headers = o
        .origin
        .iter()
        .map(|v| ("Origin".to_owned(), v.clone()))
        .chain(o.headers.iter().cloned())
        .collect();
    #[cfg(feature = "tls")]
    {
        client.tls = o.tls.clone();
    }
    let plan = Plan {
        mode: o.mode,
        servers,
        pipeline: o.pipeline,
        payload: Payload::new(o.size, o.text, o.compressible),
        connect_timeout: o.connect_timeout,
        max_connecting: o.max_connecting.div_ceil(o.threads),
        warmup: o.warmup,
        duration: o.duration,
        hold: o.hold,
        conns: o.conns as u64,
        rate: o.rate,
        rooms: room_names(&o),
        client,
    };
    // The first TLS client connection in a process pays a one-time setup
    // of the crypto provider (tens of ms): pay it before the clock starts,
    // so it is not counted in the first handshakes.
    #[cfg(feature = "tls")]
    if let (Some(cfg), Some(name)) = (&plan.client.tls, &plan.servers[0].name) {
        let _ = rustls::ClientConnection::new(cfg.clone(), name.clone());
    }
    let rss_before = o.server_pid.and_then(read_rss_kib);
    let anon_before = o.server_pid.and_then(read_rss_anon_kib);
    let shared = Shared {
        start: Instant::now(),
        barrier: Barrier::new(o.threads),
        go: Mutex::new(None),
        none_open: AtomicBool::new(false),
        server_pid: o.server_pid,
        rss_open: Mutex::new((None, None)),
        progress: (0..o.threads).map(|_| Progress::default()).collect(),
        series: Series::new(o.threads),
        published: plan.rooms.iter().map(|_| AtomicU64::new(0)).collect(),
    };
    // Make every poller before starting, so a failure is one clear message.
    let mut workers = Vec::with_capacity(o.threads);
    for t in 0..o.threads {
        let first = o.conns * t / o.threads;
        let last = o.conns * (t + 1) / o.threads;
        match Worker::new(&plan, &shared, t, first as u64, last - first) {
            Ok(w) => workers.push(w),
            Err(e) => {
                eprintln!("wsloop bench: cannot create a poller: {e}");
                return 1;
            }
        }
    }
    // --progress: a line a second, terminal or not; otherwise a line
    // redrawn in place on a terminal.
    let lines = o.progress;
    let tty = !lines && io::stderr().is_terminal();
    let mut total = Stats::new();
    let mut cpu = CpuMarks::new(&o, shared.start);
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| {
                std::thread::Builder::new()
                    .name(format!("bench-{}", w.me))
                    .spawn_scoped(s, move || w.run())
                    .expect("spawn a bench thread")
            })
            .collect();
        let mut meter = Meter::new(&o, &shared);
        while !handles.iter().all(|h| h.is_finished()) {
            let go = *shared.go.lock().unwrap_or_else(|e| e.into_inner());
            let nap = cpu.sample(go, Duration::from_millis(50));
            std::thread::sleep(nap);
            if tty {
                meter.tick();
            } else if lines {
                meter.line();
            }
        }
        if tty {
            meter.clear();
        }
        cpu.threads_ended();
        for h in handles {
            match h.join() {
                Ok(st) => total.merge(st),
                Err(_) => total.error("a bench thread panicked"),
            }
        }
    });
    let go = shared
        .go
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(shared.start);
    let measured_secs = total
        .run_end
        .min(go + o.warmup + o.duration)
        .saturating_duration_since(go + o.warmup)
        .as_secs_f64();
    let answered_secs = match (o.rate, total.last_measured) {
        (Some(_), Some(last)) => last
            .saturating_duration_since(go + o.warmup)
            .as_secs_f64()
            .max(measured_secs),
        _ => measured_secs,
    };
    let report = Report {
        o: &o,
        s: &total,
        connect_secs: go.saturating_duration_since(shared.start).as_secs_f64(),
        measured_secs,
        answered_secs,
        close_secs: total
            .finished
            .saturating_duration_since(total.run_end)
            .as_secs_f64(),
        rss: o.server_pid.map(|pid| {
            let (open, anon_open) = *shared.rss_open.lock().unwrap_or_else(|e| e.into_inner());
            Rss {
                pid,
                before: rss_before,
                open,
                after: read_rss_kib(pid),
                anon_before,
                anon_open,
            }
        }),
        server_cpu: cpu.cores_and_secs(measured_secs),
        series: shared.series.finish(),
    };
    if o.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if total.opened == 0 {
        3
    } else if total.error_count > 0 {
        1
    } else {
        0
    }
}

/// Chat mode: the rooms' names, fresh for this run (a process id and a
/// clock reading), so that no earlier run's history or members are in
/// them.
fn room_names(o: &Options) -> Vec<String> {
    if o.mode != Mode::Chat {
        return Vec::new();
    }
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64 & 0xff_ffff_ffff);
    let run = format!("{:x}-{nonce:x}", std::process::id());
    (0..o.rooms.max(1))
        .map(|r| format!("wsloop-bench-{run}-{r}"))
        .collect()
}
