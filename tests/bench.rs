//! `wsloop bench` against `wsloop serve`: the JSON summary carries what the
//! performance comparison reads (verified echoes, server CPU per message,
//! server memory per connection), and bad values are named.

mod common;

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

/// Echo mode with --server-pid: every echo verified, and the server's CPU
/// over the measured window reported as a share of a core and per message.
#[test]
fn echo_reports_server_cpu_per_message() {
    let srv = BinServer::spawn(&["--idle-timeout", "0", "--ping-interval", "0"]);
    let url = format!("ws://{}/", srv.addr);
    let pid = srv.pid().to_string();
    let out = bench(&[
        &url,
        "--conns",
        "8",
        "--pipeline",
        "8",
        "--size",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let json = out.stdout.trim();
    assert_eq!(num(json, "errors"), Some(0.0), "{json}");
    assert_eq!(num(json, "open"), Some(8.0), "{json}");
    let msgs = num(json, "msgs").expect("msgs");
    assert!(msgs > 0.0, "{json}");
    let cores = num(json, "server_cpu_cores").expect("server_cpu_cores in the JSON");
    // The server did the echoing, so it used some CPU; one thread cannot
    // use more than one core (plus rounding of the window's edges).
    assert!(
        cores > 0.0 && cores < 1.2,
        "server_cpu_cores {cores}: {json}"
    );
    let per = num(json, "server_cpu_ns_per_msg").expect("server_cpu_ns_per_msg");
    let measured = num(json, "measured_s").expect("measured_s");
    let expect = cores * measured * 1e9 / msgs;
    assert!(
        (per - expect).abs() <= expect * 0.01 + 0.1,
        "ns per message {per}, from cores x time / msgs {expect}: {json}"
    );

    // The text summary says the same in words.
    let out = bench(&[
        &url,
        "--conns",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "0",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("server cpu"), "{out:?}");
    assert!(out.stdout.contains("per message"), "{out:?}");
}

/// Connect mode with --server-pid: handshakes/s, server memory per
/// connection and server CPU per handshake.
#[test]
fn connect_reports_memory_per_connection() {
    let srv = BinServer::spawn(&[]);
    let url = format!("ws://{}/", srv.addr);
    let pid = srv.pid().to_string();
    let out = bench(&[
        &url,
        "--mode",
        "connect",
        "--conns",
        "200",
        "--hold",
        "200ms",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let json = out.stdout.trim();
    assert_eq!(num(json, "open"), Some(200.0), "{json}");
    assert_eq!(num(json, "clean_closes"), Some(200.0), "{json}");
    assert!(num(json, "handshakes_per_s").unwrap_or(0.0) > 0.0, "{json}");
    assert!(num(json, "kib_per_conn").is_some(), "{json}");
    assert!(num(json, "rss_kib_open").unwrap_or(0.0) > 0.0, "{json}");
    // Server CPU per handshake over the connect phase, not per message.
    let per = num(json, "server_cpu_ns_per_handshake").expect("server_cpu_ns_per_handshake");
    assert!(per > 0.0, "{json}");
    assert!(!json.contains("server_cpu_ns_per_msg"), "{json}");
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
