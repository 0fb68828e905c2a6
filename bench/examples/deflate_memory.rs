//! permessage-deflate memory per connection and compression ratio
//! (issue 18, target 6).
//!
//! ```sh
//! cargo build --release -p wsloop-bench --features deflate --example deflate_memory
//! target/release/examples/deflate_memory memory --mode default --conns 2000
//! target/release/examples/deflate_memory ratio
//! ```
//!
//! `memory` starts this program again as a wsloop echo server (`serve`,
//! one loop thread), opens `--conns` connections (2000) that each send
//! `--messages` (4) compressible text messages of about `--size` bytes
//! (1500: JSON chat with English words, different per connection) and read
//! the echoes, holds them all open, and reports the server's RSS growth
//! per connection from /proc/PID/status (VmRSS, KiB), median of `--runs`
//! (3) with min and max, one fresh server each (`--json`: one JSON line,
//! `{"mode":..,"kib_per_conn":median}`, for scripts/compare-peers.sh). Clients offer what
//! browsers offer (`permessage-deflate; client_max_window_bits`). A client
//! that leaves `client_max_window_bits` out makes the server keep 32 KiB
//! of its history: `window15` shows that worst case.
//!
//! Server modes (`--mode`): `off` (no deflate: the baseline), `old` (a
//! zlib compressor and decompressor per connection, 15-bit windows: the
//! behaviour before), `per-connection` (the same with the default
//! 12-bit windows), `default` (library defaults: 12-bit windows kept as
//! history, zlib streams shared per thread), `window15` (the same with
//! 15-bit windows), `no-context` (server_ and client_no_context_takeover:
//! nothing kept between messages); `windowN` and `per-connectionN` set
//! N window bits (9–15) for both directions.
//!
//! `ratio` compresses a text corpus (generated chat JSON, generated
//! English, and /usr/share/common-licenses/GPL-3 by paragraph when
//! present) through a server `Connection` and inflates it in a client
//! one, for each setting (`--mode A,B,...`; `--only PREFIX` picks corpora);
//! prints wire bytes / raw bytes and the wall time per message (compress
//! + inflate, median of 3 passes).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsloop::client::{connect_with, ClientOptions};
use wsloop::extension::{accept_client_response, client_offer, negotiate_server};
use wsloop::server::{ConnId, Ctx, Handler, Server};
use wsloop::{Config, Connection, DeflateConfig, Event, Message, Role};

const MODES: [&str; 6] = [
    "off",
    "old",
    "per-connection",
    "default",
    "window15",
    "no-context",
];

fn die(msg: &str) -> ! {
    eprintln!("deflate_memory: {msg}");
    std::process::exit(2)
}

/// `window9`..`window15`: that many window bits; `per-connection9`..:
/// the same with zlib streams kept per connection.
fn window_mode(m: &str) -> Option<(u8, bool)> {
    let (rest, dedicated) = match m.strip_prefix("window") {
        Some(r) => (r, false),
        None => (m.strip_prefix("per-connection")?, true),
    };
    let bits = rest.parse().ok().filter(|b| (9..=15).contains(b))?;
    Some((bits, dedicated))
}

/// The server's deflate settings for `mode`.
fn server_deflate(mode: &str) -> DeflateConfig {
    let mut d = DeflateConfig::default();
    d.enabled = mode != "off";
    match mode {
        "off" | "default" => {}
        "old" => {
            d.per_connection_zlib = true;
            d.server_max_window_bits = 15;
            d.client_max_window_bits = 15;
        }
        "per-connection" => d.per_connection_zlib = true,
        m if window_mode(m).is_some() => {
            let (bits, dedicated) = window_mode(m).unwrap_or_default();
            d.server_max_window_bits = bits;
            d.client_max_window_bits = bits;
            d.per_connection_zlib = dedicated;
        }
        "no-context" => {
            d.server_no_context_takeover = true;
            d.client_no_context_takeover = true;
        }
        m => die(&format!("--mode: '{m}' is not one of {}", MODES.join(", "))),
    }
    d
}

/// What the clients offer: what browsers offer.
fn client_deflate() -> DeflateConfig {
    let mut d = DeflateConfig::default();
    d.enabled = true;
    d.server_max_window_bits = 15;
    d.client_max_window_bits = 15;
    d
}

struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let _ = ctx.send(id, msg);
    }
}

fn serve(mode: &str) -> ! {
    let mut config = Config::default();
    config.deflate = server_deflate(mode);
    config.idle_timeout = None;
    let server =
        Server::bind("127.0.0.1:0", config, Echo).unwrap_or_else(|e| die(&format!("bind: {e}")));
    println!("listening {}", server.local_addr());
    if let Err(e) = server.run() {
        die(&format!("server: {e}"));
    }
    std::process::exit(0)
}

const WORDS: [&str; 32] = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "message",
    "room",
    "server",
    "connection",
    "window",
    "compression",
    "memory",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "again",
    "update",
];

/// Deterministic xorshift words: `n` of them from `seed`.
fn words(seed: u64, n: usize, out: &mut String) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Zipf-like: small indices more often.
        let r = (x % 1024) as usize;
        let w = WORDS[(r * r / (1024 * 1024 / 32)).min(31)];
        out.push_str(w);
        out.push(if i % 13 == 12 { '.' } else { ' ' });
    }
}

/// One chat message in JSON, about `size` bytes.
fn chat(conn: u64, seq: u64, size: usize) -> String {
    let mut s = format!(
        "{{\"type\":\"message\",\"room\":\"room-{}\",\"user\":\"user-{}\",\"seq\":{seq},\"ts\":{},\"text\":\"",
        conn % 17,
        conn,
        1_700_000_000_000u64 + conn * 1000 + seq * 37
    );
    let mut w = String::new();
    words(conn * 1_000_003 + seq, size / 5 + 1, &mut w);
    s.push_str(&w[..size.saturating_sub(s.len() + 2).min(w.len())]);
    s.push_str("\"}");
    s
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

struct MemOpts {
    mode: String,
    conns: usize,
    messages: usize,
    size: usize,
    runs: usize,
    only: Option<String>,
    json: bool,
}

fn spawn_server(mode: &str) -> (Child, String) {
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current_exe: {e}")));
    let mut child = Command::new(exe)
        .args(["serve", "--mode", mode])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| die(&format!("spawn server: {e}")));
    let mut line = String::new();
    let out = child.stdout.take().expect("piped");
    BufReader::new(out)
        .read_line(&mut line)
        .unwrap_or_else(|e| die(&format!("server output: {e}")));
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| die(&format!("server said '{}'", line.trim())))
        .to_owned();
    (child, addr)
}

/// One run: KiB of server RSS per connection.
fn memory_run(o: &MemOpts) -> f64 {
    let (mut child, addr) = spawn_server(&o.mode);
    let mut opts = ClientOptions::default();
    opts.config.read_buffer_size = 4096;
    opts.config.deflate = client_deflate();
    let url = format!("ws://{addr}/");
    let pid = child.id();
    // One connection first, so the loop's buffers and zlib pool exist.
    let warm = exchange(&url, &opts, 0, o);
    std::thread::sleep(Duration::from_millis(100));
    let before = wsloop_bench::read_rss_kib(pid).unwrap_or_else(|| die("no VmRSS"));
    let mut held = vec![warm];
    for c in 1..=o.conns {
        held.push(exchange(&url, &opts, c as u64, o));
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = wsloop_bench::read_rss_kib(pid).unwrap_or_else(|| die("no VmRSS"));
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    after.saturating_sub(before) as f64 / o.conns as f64
}

fn exchange(url: &str, opts: &ClientOptions, c: u64, o: &MemOpts) -> wsloop::client::WebSocket {
    let mut ws = connect_with(url, opts).unwrap_or_else(|e| die(&format!("connect {c}: {e}")));
    ws.set_read_timeout(Some(Duration::from_secs(10)));
    for seq in 0..o.messages as u64 {
        let m = chat(c, seq, o.size);
        ws.send_text(&m)
            .unwrap_or_else(|e| die(&format!("send {c}: {e}")));
        match ws.recv_message() {
            Ok(Message::Text(t)) if t == m => {}
            Ok(_) => die(&format!("connection {c}: wrong echo")),
            Err(e) => die(&format!("recv {c}: {e}")),
        }
    }
    ws
}

/// The corpus: (name, messages).
fn corpus() -> Vec<(&'static str, Vec<String>)> {
    let mut v = vec![
        (
            "chat JSON 200 B",
            (0..2000).map(|i| chat(i % 50, i, 200)).collect(),
        ),
        (
            "chat JSON 1.5 KB",
            (0..500).map(|i| chat(i % 50, i, 1500)).collect(),
        ),
    ];
    let english = (0..300)
        .map(|i| {
            let mut s = String::new();
            words(i + 7, 200 + (i as usize * 37) % 400, &mut s);
            s
        })
        .collect();
    v.push(("English 1-3 KB", english));
    if let Ok(gpl) = std::fs::read_to_string("/usr/share/common-licenses/GPL-3") {
        let paras = gpl
            .split("\n\n")
            .filter(|p| !p.trim().is_empty())
            .map(str::to_owned)
            .collect();
        v.push(("GPL-3 paragraphs", paras));
    }
    v
}

/// Wire bytes and nanoseconds for `msgs` sent by a server and inflated
/// by a client, both with `server` and `client` settings.
fn ratio_pass(server: &DeflateConfig, client: &DeflateConfig, msgs: &[String]) -> (usize, u64) {
    let now = Instant::now();
    let offer = client_offer(client);
    let (sp, resp) = negotiate_server([offer.as_str()], server).expect("offer accepted");
    let cp = accept_client_response([resp.as_str()], client)
        .expect("answer accepted")
        .expect("deflate on");
    let mk = |role, d: &DeflateConfig| {
        let mut config = Config::default();
        config.deflate = *d;
        Connection::new(role, Arc::new(config), now)
    };
    let mut s = mk(Role::Server, server);
    let mut c = mk(Role::Client, client);
    #[cfg(feature = "deflate")]
    {
        s.enable_deflate(&sp);
        c.enable_deflate(&cp);
    }
    #[cfg(not(feature = "deflate"))]
    let _ = (sp, cp);
    let mut wire = Vec::new();
    let mut total = 0;
    let t = Instant::now();
    for m in msgs {
        s.send_text(m).expect("send");
        wire.clear();
        s.drain_output(&mut wire);
        total += wire.len();
        let mut input: &mut [u8] = &mut wire;
        match c.poll_event(&mut input, now) {
            Ok(Some(Event::Message(Message::Text(t)))) if t == m.as_str() => {}
            other => die(&format!("ratio: bad round trip: {other:?}")),
        }
    }
    (total, t.elapsed().as_nanos() as u64)
}

fn ratio(only: Option<String>, modes: &str) {
    let client = client_deflate();
    println!("| corpus | setting | wire / raw | µs per message (median of 3, min–max) |");
    println!("|---|---|---|---|");
    for (name, msgs) in corpus() {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let raw: usize = msgs.iter().map(String::len).sum();
        for mode in modes.split(',') {
            let server = server_deflate(mode);
            // Both ends keep zlib streams the same way.
            let mut client = client;
            client.per_connection_zlib = server.per_connection_zlib;
            let mut times = Vec::new();
            let mut wire = 0;
            for _ in 0..3 {
                let (w, ns) = ratio_pass(&server, &client, &msgs);
                wire = w;
                times.push(ns as f64 / msgs.len() as f64 / 1000.0);
            }
            let (m, lo, hi) = median(times);
            println!(
                "| {name} ({} msgs, {raw} B) | {mode} | {:.3} | {m:.2} ({lo:.2}–{hi:.2}) |",
                msgs.len(),
                wire as f64 / raw as f64
            );
        }
    }
}

fn main() {
    if !cfg!(feature = "deflate") {
        die("build with --features deflate");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let mut o = MemOpts {
        mode: String::new(),
        conns: 2000,
        messages: 4,
        size: 1500,
        runs: 3,
        only: None,
        json: false,
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        let num = |v: String| -> usize {
            v.parse()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| die(&format!("{a}: '{v}' is not a positive number")))
        };
        match a.as_str() {
            "--mode" => o.mode = val(),
            "--only" => o.only = Some(val()),
            "--json" => o.json = true,
            "--conns" => o.conns = num(val()),
            "--messages" => o.messages = num(val()),
            "--size" => o.size = num(val()),
            "--runs" => o.runs = num(val()),
            _ => die(&format!("unknown argument '{a}' (see the doc comment)")),
        }
    }
    if o.mode.is_empty() {
        o.mode = match cmd {
            "ratio" => "old,per-connection,default,window15,no-context",
            _ => "default",
        }
        .into();
    }
    for m in o.mode.split(',') {
        server_deflate(m);
    }
    match cmd {
        "serve" => serve(&o.mode),
        "ratio" => ratio(o.only.clone(), &o.mode),
        "memory" => {
            let v: Vec<f64> = (0..o.runs).map(|_| memory_run(&o)).collect();
            let (m, lo, hi) = median(v);
            if o.json {
                println!("{{\"mode\":\"{}\",\"kib_per_conn\":{m:.3}}}", o.mode);
                return;
            }
            println!(
                "deflate memory: mode {} conns {} messages {}×{} B: \
                 {m:.2} KiB per connection (min {lo:.2}, max {hi:.2}, {} runs)",
                o.mode, o.conns, o.messages, o.size, o.runs
            );
        }
        _ => die("usage: deflate_memory memory|ratio|serve [--mode M] \
                  [--conns N] [--messages M] [--size B] [--runs R]"),
    }
}
