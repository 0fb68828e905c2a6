//! `wsloop bench`: argument parsing; the load generator is the
//! `wsloop-bench` crate.

use std::time::Duration;

use wsloop::client::Url;
use wsloop_bench::{fmt_bytes as bytes, read_rss_kib, Mode, Options, TlsSetting};

use crate::args::{Arg, ArgError, Args};

#[cfg(test)]
mod tests;
mod upgrade;

use upgrade::{header, is_token, origin_ok};

const HELP: &str = "\
wsloop bench: a load generator for any WebSocket echo server, and for
wsloop serve --app chat

USAGE:
    wsloop bench [OPTIONS] URL [URL...]

Opens --conns connections to URL (ws://, or wss:// in a build with the
`tls` feature) with real upgrade handshakes, lets messages flow for --warmup, then measures for
--duration. Every frame sent is masked. The server must send every
message back unchanged (wsloop serve does). Each echo is checked against
what was sent: type, length, first and last 8 bytes, and the whole
payload for sizes up to 1 KiB and for every 16th message; a mismatch
counts as an error.

MODES (--mode):
    echo      keep --pipeline messages in flight on each connection; each
              echo is checked and at once replaced by a new message
    latency   one message in flight per connection, clock read just
              before each write and just after each read
    connect   open --conns idle connections and report handshakes/s; hold
              them for --hold, then close them all cleanly; with
              --server-pid, report the server's memory per connection
    chat      --conns members of a `wsloop serve --app chat` server (URL
              ws://HOST:PORT/ws), spread over --rooms fresh rooms, one room
              each; together they publish --rate messages a second (each
              member in turn). Every member must be delivered every message
              of its room once, in room sequence order: gaps, duplicates,
              out-of-order and undelivered messages are errors. Reports
              deliveries/s and the latency from each publish's scheduled
              time to each delivery

SEVERAL SERVERS (URL URL ...):
    Connections take the URLs in turn (all ws:// or all wss://). In chat
    mode the members of each room take them in turn, so every room spans
    every server: with `wsloop serve --app chat --redis ...` instances,
    publishes made on one server are timed to their delivery on the
    others, all in one process and on one clock

OPEN LOOP (--rate N, echo and chat modes):
    Messages are sent on a schedule, not when echoes come back: --rate N
    is messages a second IN TOTAL over all connections, taken in turn, so
    each connection sends N / --conns a second. Each message has a
    scheduled send time, and its round trip is measured from that time:
    when the server (or the bench itself) falls behind, the delay shows in
    the latency instead of lowering the send rate (no coordinated
    omission). A connection that cannot take its next message (--pipeline
    messages await their echo, or its write queue is full) falls behind;
    what it owes is sent, oldest first, as soon as it can, never skipped.
    The report says how late sends were (behind by p50/p99/max) and what
    was never sent. After --duration, what is owed is still sent and the
    last echoes awaited for up to 5 s; a message counts in the measured
    window if it was due in it, and msgs/s is over the window or, when the
    answers came later, until the last of them. Sends are timed to about
    1 ms.

OUTPUT:
    The summary gives messages/s and MB/s (echoed payload, 1 MB = 10^6
    bytes) over the measured time, the round trip p50/p99/p99.9/max (from
    a message being queued to its echo being read; ~1% precision), the
    connect rate, and errors by kind. A progress line is drawn on stderr
    when stderr is a terminal; --progress prints one line a second
    instead, terminal or not. With --json, one JSON object on one line
    goes to stdout instead of the summary; its \"series\" is an array with
    one object per second of the load (from the end of the connect phase):
    t, sent, received, errors, p50_us, p99_us, p999_us, max_us (latency of
    what was received in that second) and lag_max_us (open loop: the most
    a send was behind its schedule).

OPTIONS:
    --mode MODE              echo, latency, connect or chat [default: echo]
    --conns N                Connections (chat: members) [default: 100]
    --pipeline N             Messages in flight per connection [default: 16;
                             latency mode: 1]; with --rate, the most
                             awaiting their echo on one connection before it
                             falls behind [default: 1024, fewer if --conns x
                             --size would pass 4 GiB]
    --rate N                 Open loop: N messages a second in total over all
                             connections (see OPEN LOOP); chat mode: N
                             publishes a second [chat default: 100]
    --rooms N                Chat mode: rooms the members are spread over
                             (member i joins room i mod N) [default: 1]
    --size SIZE              Payload bytes per message; chat mode: bytes of
                             text per publish, at most 4096 [default: 32]
    --binary                 Send binary messages [default]
    --text                   Send text messages (printable ASCII)
    --deflate                Offer permessage-deflate (RFC 7692; needs the
                             `deflate` feature) and compress what is sent
                             when the server accepts; a server that declines
                             is an error. Messages under 64 bytes are sent
                             uncompressed (wsloop's default min_size, on
                             both sides). Payloads stay pseudo-random unless
                             --compressible is given: the worst case, CPU
                             spent for no saving
    --compressible           Fill payloads with repetitive JSON-like text
                             (deflate: ~6x smaller at 4 KiB, ~2x at 256 B,
                             more with context takeover) instead of
                             pseudo-random bytes; works with or without
                             --deflate, for a like-for-like comparison
    --duration DUR           Measured time [default: 10s]
    --warmup DUR             Unmeasured time before it; 0 = none [default: 2s]
    --hold DUR               Connect mode: how long to hold the connections
                             open [default: 2s]
    --threads N              Event loops (threads) sharing the connections;
                             statistics are merged [default: 1]
    --max-connecting N       Connections being opened at once, so thousands
                             do not overflow the server's listen backlog
                             (128 for std and mio listeners); more costs
                             1 s SYN retries [default: 128]
    --connect-timeout DUR    Time allowed for one connection's TCP connect
                             and upgrade [default: 10s]
    --server-pid PID         Read the server's VmRSS from /proc/PID/status
                             before connecting, once all are open, and after
                             closing; connect mode reports KiB per connection
                             (start the server afresh: memory it freed is
                             reused, so a second run shows little growth).
                             All modes also report the server's CPU (all its
                             threads, from /proc/PID/task/*/schedstat): share
                             of a core and CPU time per echoed message over
                             the measured window, or per handshake over the
                             connect phase
    --json                   One machine-readable line on stdout
    --progress               A progress line every second on stderr, also
                             when stderr is not a terminal (logs, CI)
    --header 'NAME: VALUE'   Add a header to every upgrade request
                             (repeatable). NAME must be an HTTP token; the
                             headers of the upgrade itself (Host, Upgrade,
                             Connection, Sec-WebSocket-*) cannot be set, and
                             Origin is set with --origin
    --origin ORIGIN          Send Origin: ORIGIN (scheme://host[:port], or
                             null), as a browser would
    --protocol NAME          Offer the subprotocol NAME (repeatable); the
                             server must choose one of them, or the
                             connection counts as failed
    --ca FILE                For wss://: trust only the CA certificates in
                             this PEM file [default: the bundled Mozilla
                             roots] (needs the `tls` feature)
    --insecure               For wss://: do not verify the server's
                             certificate. For testing only
    -h, --help               Print this help

The run ends by itself: the connect phase (cut after 60 s), then --warmup
plus --duration (or --hold), then with --rate at most 5 s to send what is
owed and wait for the last replies, then a close handshake on every
connection (at most 5 s more). One process holds at most as many connections as its
open-file limit allows (see /proc/self/limits): run several processes for
more, each against a different server address (ws://127.0.0.2:PORT/, ...)
when one address runs out of local ports. On a small machine pin server
and bench to different cores (taskset -c 0 wsloop serve ...; taskset -c 1
wsloop bench ...).

SIZE is bytes or a number with K, M or G (64K, 1M). DUR is seconds or a
number with ms, s or m (500ms, 30s, 5m).

Exit status: 0 with no errors, 1 if any error was counted, 2 for bad
arguments, 3 when no connection could be opened.

EXAMPLES:
    wsloop bench ws://127.0.0.1:9001/ --conns 100 --pipeline 16 --size 32
    wsloop bench ws://127.0.0.1:9001/ --mode latency --conns 50 --size 64
    wsloop bench ws://127.0.0.1:9001/ --mode connect --conns 10000 \\
        --server-pid $SERVER_PID --json
    wsloop bench wss://localhost:9443/ --ca ca.pem --conns 100 --size 32
    wsloop bench ws://127.0.0.1:9001/ --deflate --compressible --size 4K
    wsloop bench ws://127.0.0.1:9001/ --rate 20000 --conns 100 --progress
    wsloop bench ws://127.0.0.1:10000/ws --mode chat --conns 1000 \\
        --rooms 10 --rate 500 --json
    wsloop bench ws://127.0.0.1:10001/ws ws://127.0.0.1:10002/ws \\
        ws://127.0.0.1:10003/ws --mode chat --conns 1000 --rooms 10 --rate 2000";

/// File descriptors kept aside from --conns (stdio, epoll, /proc reads).
const FD_RESERVE: u64 = 64;
/// Largest --size.
const MAX_SIZE: usize = 1 << 30;
/// Largest --conns × --pipeline × --size (bytes the bench may queue).
const MAX_IN_FLIGHT_BYTES: u128 = 4 << 30;
/// Largest --rate.
const MAX_RATE: u64 = 10_000_000;
/// --pipeline with --rate unless given.
const OPEN_LOOP_PIPELINE: usize = 1024;
/// Chat mode's --rate unless given.
const CHAT_RATE: u64 = 100;

#[cfg(feature = "tls")]
fn tls_setting(secure: bool, ca: Option<String>, insecure: bool) -> Result<TlsSetting, ArgError> {
    if !secure {
        if ca.is_some() || insecure {
            return Err(err("--ca and --insecure only apply to wss:// URLs".into()));
        }
        return Ok(None);
    }
    if insecure {
        if ca.is_some() {
            return Err(err("--ca and --insecure do not go together".into()));
        }
        eprintln!(
            "wsloop bench: --insecure: the server's certificate is NOT verified (testing only)"
        );
        return Ok(Some(wsloop::tls::insecure_client_config()));
    }
    let cfg = wsloop::tls::client_config(ca.as_deref().map(std::path::Path::new))
        .map_err(|e| err(format!("--ca: {e}")))?;
    Ok(Some(cfg))
}

#[cfg(not(feature = "tls"))]
fn tls_setting(secure: bool, ca: Option<String>, insecure: bool) -> Result<TlsSetting, ArgError> {
    if secure || ca.is_some() || insecure {
        return Err(err(
            "wss://, --ca and --insecure need a build with the `tls` feature (cargo build --features tls)"
                .into(),
        ));
    }
    Ok(None)
}

fn err(msg: String) -> ArgError {
    ArgError(format!("wsloop bench: {msg}"))
}

pub fn parse(mut args: Args) -> Result<Option<Options>, ArgError> {
    let mut o = Options {
        urls: Vec::new(),
        mode: Mode::Echo,
        conns: 100,
        pipeline: 0,
        size: 32,
        text: false,
        deflate: false,
        compressible: false,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        hold: Duration::from_secs(2),
        threads: 1,
        max_connecting: 128,
        connect_timeout: Duration::from_secs(10),
        server_pid: None,
        json: false,
        rate: None,
        rooms: 1,
        headers: Vec::new(),
        origin: None,
        protocols: Vec::new(),
        progress: false,
        tls: None,
    };
    let mut urls = Vec::new();
    let mut pipeline = None;
    let mut rooms = None;
    let mut ca: Option<String> = None;
    let mut insecure = false;
    while let Some(arg) = args.next() {
        let flag = match arg {
            Arg::Positional(p) => {
                urls.push(p);
                continue;
            }
            Arg::Flag(f) => f,
        };
        match flag.as_str() {
            "help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "mode" => {
                let v = args.value("mode")?;
                o.mode = match v.as_str() {
                    "echo" => Mode::Echo,
                    "latency" => Mode::Latency,
                    "connect" => Mode::Connect,
                    "chat" => Mode::Chat,
                    _ => return Err(args.bad("mode", &v, "echo, latency, connect or chat")),
                };
            }
            "conns" => o.conns = at_least_one(&mut args, "conns")?,
            "pipeline" => pipeline = Some(at_least_one(&mut args, "pipeline")?),
            "size" => {
                let v = args.value("size")?;
                o.size = match crate::args::parse_size(&v) {
                    Some(s) if s <= MAX_SIZE => s,
                    _ => return Err(args.bad("size", &v, "a size from 0 to 1G, such as 32, 16K or 1M")),
                };
            }
            "text" => o.text = true,
            "binary" => o.text = false,
            "deflate" => {
                if !cfg!(feature = "deflate") {
                    return Err(err(
                        "--deflate needs a build with the `deflate` feature (cargo build --features deflate)"
                            .into(),
                    ));
                }
                o.deflate = true;
            }
            "compressible" => o.compressible = true,
            "duration" => o.duration = args.duration("duration", false)?.unwrap_or_default(),
            "warmup" => o.warmup = args.duration("warmup", true)?.unwrap_or_default(),
            "hold" => o.hold = args.duration("hold", true)?.unwrap_or_default(),
            "threads" => {
                let v = args.value("threads")?;
                o.threads = match v.parse::<usize>() {
                    Ok(n @ 1..=64) => n,
                    _ => return Err(args.bad("threads", &v, "a whole number from 1 to 64")),
                };
            }
            "max-connecting" => o.max_connecting = at_least_one(&mut args, "max-connecting")?,
            "connect-timeout" => {
                o.connect_timeout = args.duration("connect-timeout", false)?.unwrap_or_default()
            }
            "server-pid" => {
                let v = args.value("server-pid")?;
                let pid = v.parse::<u32>().ok().filter(|&p| p > 0);
                match pid {
                    Some(p) if read_rss_kib(p).is_some() => o.server_pid = Some(p),
                    _ => {
                        return Err(args.bad(
                            "server-pid",
                            &v,
                            "the PID of a running process whose /proc/PID/status shows VmRSS",
                        ))
                    }
                }
            }
            "json" => o.json = true,
            "progress" => o.progress = true,
            "rate" => {
                let v = args.value("rate")?;
                o.rate = match v.parse::<u64>() {
                    Ok(n @ 1..=MAX_RATE) => Some(n),
                    _ => {
                        return Err(args.bad(
                            "rate",
                            &v,
                            "messages a second in total, a whole number from 1 to 10000000",
                        ))
                    }
                };
            }
            "rooms" => rooms = Some(at_least_one(&mut args, "rooms")?),
            "header" => {
                let v = args.value("header")?;
                match header(&v) {
                    Ok(h) => o.headers.push(h),
                    Err(expected) => return Err(args.bad("header", &v, &expected)),
                }
            }
            "origin" => {
                let v = args.value("origin")?;
                if !origin_ok(&v) {
                    return Err(args.bad(
                        "origin",
                        &v,
                        "an origin: scheme://host[:port] with no path (https://example.com), or null",
                    ));
                }
                o.origin = Some(v);
            }
            "protocol" => {
                let v = args.value("protocol")?;
                if !is_token(&v) {
                    return Err(args.bad(
                        "protocol",
                        &v,
                        "a subprotocol name: an HTTP token (letters, digits and !#$%&'*+-.^_`|~; no spaces or commas)",
                    ));
                }
                if o.protocols.contains(&v) {
                    return Err(args.bad("protocol", &v, "each subprotocol once"));
                }
                o.protocols.push(v);
            }
            "ca" => ca = Some(args.value("ca")?),
            "insecure" => insecure = true,
            "source-ips" => {
                return Err(err(
                    "--source-ips is not supported: binding a local address before connecting needs a socket \
                     API that std and mio do not offer; to get past one address's local ports, run several \
                     bench processes against different server addresses (ws://127.0.0.2:PORT/, ...)"
                        .into(),
                ))
            }
            other => return Err(args.unknown(&format!("--{other}"))),
        }
    }
    o.tls = tls_setting(check_urls(&urls)?, ca, insecure)?;
    o.urls = urls;
    match (o.mode, o.rate) {
        (Mode::Latency, Some(r)) => {
            return Err(err(format!(
                "--rate {r} does not go with --mode latency, which keeps one message in flight \
                 (use --mode echo --rate {r})"
            )))
        }
        (Mode::Connect, Some(r)) => {
            return Err(err(format!(
                "--rate {r} does not go with --mode connect, which sends no messages"
            )))
        }
        (Mode::Chat, None) => o.rate = Some(CHAT_RATE),
        _ => {}
    }
    match (o.mode, rooms) {
        (Mode::Chat, Some(r)) if r > o.conns => {
            return Err(err(format!(
                "--rooms {r} is more than --conns {}: every room needs a member",
                o.conns
            )))
        }
        (Mode::Chat, Some(r)) => o.rooms = r,
        (_, Some(r)) => {
            return Err(err(format!("--rooms {r} only applies to --mode chat")));
        }
        _ => {}
    }
    if o.mode == Mode::Chat && o.size > wsloop_chat::MAX_TEXT {
        return Err(err(format!(
            "--size {} is more text than a chat message may carry ({} bytes) in --mode chat",
            bytes(o.size),
            wsloop_chat::MAX_TEXT
        )));
    }
    o.pipeline = match (o.mode, pipeline) {
        (Mode::Latency, Some(p)) if p > 1 => {
            return Err(err(format!(
                "--pipeline {p} does not go with --mode latency, which keeps one message in flight \
                 (use --mode echo)"
            )))
        }
        (Mode::Latency, _) => 1,
        (Mode::Chat, Some(p)) => {
            return Err(err(format!(
            "--pipeline {p} does not go with --mode chat: members publish on the --rate schedule"
        )))
        }
        (Mode::Chat, None) => 1,
        (_, Some(p)) => p,
        (_, None) if o.rate.is_some() => {
            let per_msg = o.conns as u128 * (o.size as u128 + 14);
            (MAX_IN_FLIGHT_BYTES / per_msg.max(1)).clamp(1, OPEN_LOOP_PIPELINE as u128) as usize
        }
        (_, None) => 16,
    };
    if o.threads > o.conns {
        return Err(err(format!(
            "--threads {} is more than --conns {}",
            o.threads, o.conns
        )));
    }
    check_fd_limit(o.conns as u64)?;
    // Each server address has its own local ports.
    let mut addrs: Vec<String> = o
        .urls
        .iter()
        .filter_map(|u| Url::parse(u).ok().map(|u| u.host_header()))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    check_port_range((o.conns as u64).div_ceil(addrs.len().max(1) as u64))?;
    if !matches!(o.mode, Mode::Connect | Mode::Chat) {
        let in_flight = o.conns as u128 * o.pipeline as u128 * (o.size as u128 + 14);
        if in_flight > MAX_IN_FLIGHT_BYTES {
            return Err(err(format!(
                "--conns {} x --pipeline {} x --size {} is {} MiB in flight, more than the {} MiB allowed",
                o.conns,
                o.pipeline,
                bytes(o.size),
                in_flight >> 20,
                MAX_IN_FLIGHT_BYTES >> 20
            )));
        }
    }
    Ok(Some(o))
}

/// Whether the servers are wss:// (all must be, or none).
fn check_urls(urls: &[String]) -> Result<bool, ArgError> {
    let Some(first) = urls.first() else {
        return Err(err("missing URL (see --help)".into()));
    };
    let mut secure = false;
    for u in urls {
        let parsed = Url::parse(u).map_err(|e| err(e.to_string()))?;
        if u == first {
            secure = parsed.secure;
        } else if parsed.secure != secure {
            return Err(err(format!(
                "URL '{u}' is {} but '{first}' is {}: give all ws:// or all wss:// URLs",
                if parsed.secure { "wss://" } else { "ws://" },
                if secure { "wss://" } else { "ws://" },
            )));
        }
    }
    Ok(secure)
}

fn at_least_one(args: &mut Args, flag: &str) -> Result<usize, ArgError> {
    let v = args.value(flag)?;
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(args.bad(flag, &v, "a whole number, at least 1")),
    }
}

/// Soft and hard "Max open files" from /proc/self/limits (`None` =
/// unlimited or unknown).
fn open_file_limit() -> Option<(Option<u64>, Option<u64>)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let soft = it.next()?.parse().ok();
    let hard = it.next()?.parse().ok();
    Some((soft, hard))
}

fn check_fd_limit(conns: u64) -> Result<(), ArgError> {
    let Some((Some(soft), hard)) = open_file_limit() else {
        return Ok(());
    };
    if conns + FD_RESERVE <= soft {
        return Ok(());
    }
    let max = soft.saturating_sub(FD_RESERVE);
    let raise = match hard {
        Some(h) if h > soft => format!(" (or raise the soft limit first: ulimit -n {h})"),
        None => " (or raise the soft limit first with ulimit -n)".to_owned(),
        _ => String::new(),
    };
    Err(err(format!(
        "--conns {conns} needs more file descriptors than the open-file limit of this process \
         ({soft}, 'Max open files' in /proc/self/limits); use at most {max} connections per process \
         and run several processes{raise}"
    )))
}

fn check_port_range(conns: u64) -> Result<(), ArgError> {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return Ok(());
    };
    let mut it = text
        .split_whitespace()
        .filter_map(|s| s.parse::<u64>().ok());
    let (Some(lo), Some(hi)) = (it.next(), it.next()) else {
        return Ok(());
    };
    let ports = hi.saturating_sub(lo) + 1;
    if conns > ports {
        return Err(err(format!(
            "--conns {conns} is more than the {ports} local ports one client address has for one server \
             address (/proc/sys/net/ipv4/ip_local_port_range); split the connections over several server \
             addresses"
        )));
    }
    Ok(())
}
