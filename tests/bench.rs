//! `wsloop bench` against `wsloop serve`: the JSON summary carries what the
//! performance comparison reads (verified echoes, server CPU per message,
//! server memory per connection), each checked against what the test
//! measures of the server process itself (/proc), and bad values are
//! named.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

fn bench(args: &[&str]) -> BinRun {
    run_wsloop("bench", args, None, Duration::from_secs(60))
}

/// The number after `"key":` in a one-line JSON object (`None` for null or
/// a missing key).
fn num(json: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat)? + pat.len();
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A TCP relay in front of `target` that counts the bytes the server sent
/// back: a count of the server's output kept by neither the bench nor the
/// server. (/proc/PID/io does not see socket `send`s.)
struct Relay {
    addr: SocketAddr,
    from_server: Arc<AtomicU64>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let from_server = Arc::new(AtomicU64::new(0));
        let counter = from_server.clone();
        // The accept thread outlives the test; it holds nothing else.
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(target).expect("relay: connect to the server");
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let no_count = Arc::new(AtomicU64::new(0));
                thread::spawn(move || pipe(client, server, &no_count));
                let counter = counter.clone();
                thread::spawn(move || pipe(s2, c2, &counter));
            }
        });
        Relay { addr, from_server }
    }

    fn bytes_from_server(&self) -> u64 {
        self.from_server.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until EOF or an error, adding what it wrote to
/// `count`; then passes the EOF on.
fn pipe(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                count.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// CPU time the server process has used so far, in nanoseconds (from
/// its /proc/PID/stat ticks, not the schedstat files the bench reads).
fn server_cpu_ns(pid: u32) -> f64 {
    proc_cpu_ticks(pid) as f64 * 1e7
}

/// Two readings of ticks are each up to one tick (10 ms) late or early.
const TICK_SLACK_NS: f64 = 2e7;

/// Echo mode with --server-pid: what the report says is checked against
/// what this test measures of the server itself over the whole run, not
/// recomputed with the bench's own formula. Its echoes cannot outnumber
/// the frames the server sent (counted by a relay in between), and its
/// measured window
/// (3 s of the 3.2 s of echoing) holds most of them; the server CPU
/// it reports for the window is no more than the process used in all
/// (/proc/PID/stat), and most of it.
#[test]
fn echo_reports_server_cpu_per_message() {
    let srv = BinServer::spawn(&["--idle-timeout", "0", "--ping-interval", "0"]);
    let relay = Relay::start(srv.addr);
    let url = format!("ws://{}/", relay.addr);
    let pid = srv.pid();
    let pid_arg = pid.to_string();
    let cpu0 = server_cpu_ns(pid);
    let out = bench(&[
        &url,
        "--conns",
        "8",
        "--pipeline",
        "8",
        "--size",
        "100",
        "--duration",
        "3s",
        "--warmup",
        "200ms",
        "--server-pid",
        &pid_arg,
        "--json",
    ]);
    let (cpu1, wrote) = (server_cpu_ns(pid), relay.bytes_from_server());
    assert_eq!(out.code, Some(0), "{out:?}");
    let json = out.stdout.trim();
    assert_eq!(num(json, "errors"), Some(0.0), "{json}");
    assert_eq!(num(json, "open"), Some(8.0), "{json}");

    // Every echo of 100 bytes is a 102-byte frame the server sent (the
    // 101 answers and close frames add a little): an upper bound on the
    // echoes of the whole run, warmup and window.
    let echoed = wrote as f64 / 102.0;
    let msgs = num(json, "msgs").expect("msgs");
    eprintln!(
        "bench counted {msgs} echoes in its window; the server sent {echoed:.0} frames' worth"
    );
    assert!(msgs > 0.0, "{json}");
    assert!(
        msgs <= echoed,
        "{msgs} echoes reported, but the server sent only {echoed:.0} frames: {json}"
    );
    assert!(
        msgs >= echoed / 2.0,
        "{msgs} echoes reported for 3 s of the run's 3.2 s, of {echoed:.0} in all: {json}"
    );

    let cores = num(json, "server_cpu_cores").expect("server_cpu_cores in the JSON");
    // One thread cannot use more than one core (plus rounding of the
    // window's edges).
    assert!(
        cores > 0.0 && cores < 1.2,
        "server_cpu_cores {cores}: {json}"
    );
    let measured = num(json, "measured_s").expect("measured_s");
    let per = num(json, "server_cpu_ns_per_msg").expect("server_cpu_ns_per_msg");
    let used = cpu1 - cpu0;
    let (lo, hi) = ((used - TICK_SLACK_NS) / 2.0, used + TICK_SLACK_NS);
    eprintln!(
        "server CPU: {:.1} ms in all; the report says {:.1} ms in its window ({cores} cores x {measured} s), \
         {per} ns x {msgs} messages",
        used / 1e6,
        cores * measured * 1e3
    );
    for (what, window_ns) in [
        ("server_cpu_cores x measured_s", cores * measured * 1e9),
        ("server_cpu_ns_per_msg x msgs", per * msgs),
    ] {
        assert!(
            window_ns >= lo && window_ns <= hi,
            "{what} = {:.1} ms of server CPU in the window, but the process used {:.1} ms over \
             the whole run (want {:.1} to {:.1} ms): {json}",
            window_ns / 1e6,
            used / 1e6,
            lo / 1e6,
            hi / 1e6
        );
    }

    // The text summary says the same in words.
    let out = bench(&[
        &format!("ws://{}/", srv.addr),
        "--conns",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "0",
        "--server-pid",
        &pid_arg,
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("server cpu"), "{out:?}");
    assert!(out.stdout.contains("per message"), "{out:?}");
}

/// Connect mode with --server-pid: the memory it reports is checked
/// against the server's own RSS before the run and its peak (VmHWM)
/// after it, and the CPU per handshake against what the process used in
/// all.
#[test]
fn connect_reports_memory_per_connection() {
    const CONNS: f64 = 200.0;
    let srv = BinServer::spawn(&[]);
    let url = format!("ws://{}/", srv.addr);
    let pid = srv.pid();
    let pid_arg = pid.to_string();
    let (cpu0, rss0) = (server_cpu_ns(pid), srv.rss_kib() as f64);
    let out = bench(&[
        &url,
        "--mode",
        "connect",
        "--conns",
        "200",
        "--hold",
        "200ms",
        "--server-pid",
        &pid_arg,
        "--json",
    ]);
    let cpu1 = server_cpu_ns(pid);
    let peak = proc_status_kib(pid, "VmHWM").expect("VmHWM of the server") as f64;
    assert_eq!(out.code, Some(0), "{out:?}");
    let json = out.stdout.trim();
    assert_eq!(num(json, "open"), Some(CONNS), "{json}");
    assert_eq!(num(json, "clean_closes"), Some(CONNS), "{json}");
    assert!(num(json, "handshakes_per_s").unwrap_or(0.0) > 0.0, "{json}");

    // The idle server's RSS does not move between our reading and the
    // bench's; with 200 connections open it is more, and never more than
    // the peak the kernel recorded.
    let before = num(json, "rss_kib_before").expect("rss_kib_before");
    let open = num(json, "rss_kib_open").expect("rss_kib_open");
    let per_conn = num(json, "kib_per_conn").expect("kib_per_conn");
    eprintln!(
        "server RSS: {rss0} KiB before (this test), peak {peak} KiB; the bench: {before} KiB before, \
         {open} KiB open, {per_conn} KiB a connection"
    );
    assert!(
        (before - rss0).abs() <= 512.0,
        "rss_kib_before {before}, but the idle server's RSS was {rss0} KiB: {json}"
    );
    assert!(
        open > before && open <= peak,
        "rss_kib_open {open}: not between {before} (before) and the peak {peak}: {json}"
    );
    assert!(
        per_conn > 0.0 && per_conn <= (peak - rss0 + 512.0) / CONNS,
        "kib_per_conn {per_conn}, but the server grew by at most {} KiB for {CONNS} connections: {json}",
        peak - rss0
    );

    // Server CPU per handshake over the connect phase, not per message:
    // its total is part of what the process used over the whole run.
    let per = num(json, "server_cpu_ns_per_handshake").expect("server_cpu_ns_per_handshake");
    assert!(!json.contains("server_cpu_ns_per_msg"), "{json}");
    let used = cpu1 - cpu0;
    assert!(
        per > 0.0 && per * CONNS <= used + TICK_SLACK_NS,
        "{per} ns x {CONNS} handshakes, but the server used {:.1} ms in all: {json}",
        used / 1e6
    );
}

/// Bad values are refused before anything connects, naming the value.
#[test]
fn bad_values_are_named() {
    for (args, want) in [
        (vec!["ws://127.0.0.1:9/", "--conns", "many"], "many"),
        (vec!["ws://127.0.0.1:9/", "--size", "12Q"], "12Q"),
        (vec!["ws://127.0.0.1:9/", "--mode", "flood"], "flood"),
        (
            vec!["ws://127.0.0.1:9/", "--server-pid", "999999999"],
            "999999999",
        ),
        (vec!["http://127.0.0.1:9/"], "http://127.0.0.1:9/"),
    ] {
        let out = bench(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(want), "{args:?}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:?}");
    }
}

/// A raw TCP server: reads each upgrade request and writes
/// `answer(key)` (the request's Sec-WebSocket-Key), then holds the socket
/// for `hold` and closes TCP; `None`: never answers.
fn raw_server(answer: Option<fn(&str) -> String>, hold: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    // The accept thread outlives the test; it holds nothing else.
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || {
                let Some(head) = read_request_head(&mut s) else {
                    return;
                };
                let key = find_request_key(&head).unwrap_or_default();
                if let Some(answer) = answer {
                    let _ = s.write_all(answer(&key).as_bytes());
                }
                thread::sleep(hold);
            });
        }
    });
    addr
}

/// The kinds of error the report counts, each named: a refused upgrade
/// with its status, an upgrade that timed out, a server that closed TCP
/// before answering, or after the upgrade without a close handshake, and
/// a server that declined `--deflate`.
#[test]
fn error_kinds_are_named() {
    let quick = ["--conns", "1", "--duration", "200ms", "--warmup", "0"];
    let run = |addr: SocketAddr, extra: &[&str]| {
        let url = format!("ws://{addr}/");
        let mut args = vec![url.as_str()];
        args.extend_from_slice(&quick);
        args.extend_from_slice(extra);
        bench(&args)
    };
    fn forbidden(_: &str) -> String {
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into()
    }
    fn upgrade(key: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            wsloop::handshake::accept_key(key.as_bytes())
        )
    }
    fn nothing(_: &str) -> String {
        String::new()
    }
    let zero = Duration::ZERO;
    for (addr, extra, code, want) in [
        (
            raw_server(Some(forbidden), zero),
            &[][..],
            3,
            "handshake: server answered HTTP 403 Forbidden",
        ),
        (
            raw_server(None, Duration::from_secs(2)),
            &["--connect-timeout", "300ms"][..],
            3,
            "handshake: timed out",
        ),
        (
            raw_server(Some(nothing), zero),
            &[][..],
            3,
            "handshake: the server closed the connection before answering",
        ),
        (
            raw_server(Some(upgrade), zero),
            &[][..],
            1,
            "connection lost: the server closed TCP without a close handshake",
        ),
    ] {
        let out = run(addr, extra);
        assert_eq!(out.code, Some(code), "{want}: {out:?}");
        assert!(out.stdout.contains(want), "{want}: {out:?}");
    }

    #[cfg(feature = "deflate")]
    {
        let srv = BinServer::spawn(&[]);
        let out = run(srv.addr, &["--deflate"]);
        assert_eq!(out.code, Some(3), "{out:?}");
        assert!(
            out.stdout
                .contains("handshake: the server declined permessage-deflate"),
            "{out:?}"
        );
    }
}
