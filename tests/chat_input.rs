//! The chat's input checks over a real `wsloop serve --app chat`: its own
//! message limit applies before parsing (`--chat-max-input`), errors name
//! what is wrong, a `since` no client could have seen is refused,
//! `--no-broadcast` (or `WSLOOP_NO_BROADCAST=1`) turns broadcasts off,
//! and joining a room one is in answers `joined` again without replaying
//! what was already delivered.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn chat(args: &[&str]) -> BinServer {
    let mut all = vec!["--app", "chat"];
    all.extend_from_slice(args);
    BinServer::spawn(&all)
}

#[test]
fn input_limit_applies_before_parsing() {
    let srv = chat(&[]);
    let mut p = Peer::connect(srv.addr);
    p.join("r");
    // A valid message whose text is within MAX_TEXT, padded past 16 KiB
    // by a field the chat does not use: refused as a whole, not sent.
    let padded = json!({"type": "message", "room": "r", "text": "hi", "pad": "x".repeat(17_000)});
    let len = padded.to_string().len();
    p.error(
        padded,
        &format!("message too long: {len} bytes, at most 16384"),
    );
    // Not parsed at all: an oversized invalid message gets the same error.
    p.ws.send_text(&"{".repeat(20_000)).unwrap();
    let e = p.expect("error");
    assert_eq!(
        e["message"], "message too long: 20000 bytes, at most 16384",
        "{e}"
    );
    // Just under the limit: served.
    let fits = json!({"type": "message", "room": "r", "text": "ok", "pad": "x".repeat(16_000)});
    assert!(fits.to_string().len() <= 16384);
    p.send(fits);
    assert_eq!(p.expect("message")["text"], "ok");
    p.silent(Duration::from_millis(200));

    // Configurable.
    let small = chat(&["--chat-max-input", "1K"]);
    let mut q = Peer::connect(small.addr);
    q.join("r");
    q.error(
        json!({"type": "message", "room": "r", "text": "y".repeat(1100)}),
        "at most 1024",
    );
    q.send(json!({"type": "message", "room": "r", "text": "y".repeat(900)}));
    assert_eq!(q.expect("message")["seq"], 1);
}

#[test]
fn errors_name_the_field_and_since_is_bounded() {
    let srv = chat(&[]);
    let mut p = Peer::connect(srv.addr);
    p.error(json!({"type": 5}), "field \"type\" must be a string");
    p.error(
        json!({"type": "message", "room": "r", "text": 5}),
        "field \"text\" must be a string",
    );
    p.error(
        json!({"type": "join", "room": "r", "epoch": 1}),
        "field \"epoch\" must be a string",
    );
    // An error about a message carries the message's ref, if it had one.
    p.send(json!({"type": "message", "room": "nope", "text": "x", "ref": "c-9"}));
    let e = p.expect("error");
    assert_eq!(
        (e["ref"].as_str(), e.get("retry")),
        (Some("c-9"), None),
        "{e}"
    );
    p.error(
        json!({"type": "message", "room": "r", "text": "x", "ref": "r".repeat(65)}),
        "at most 64 bytes",
    );
    // The largest u64, and one past what a JavaScript number holds exactly.
    for since in [u64::MAX, 1 << 53] {
        p.ws.send_text(&format!(r#"{{"type":"join","room":"r","since":{since}}}"#))
            .unwrap();
        let e = p.expect("error");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("from 0 to 9007199254740991"),
            "{e}"
        );
    }
    // The largest allowed: beyond the room's last seq, so a reset gap.
    p.send(json!({"type": "join", "room": "r", "since": (1u64 << 53) - 1}));
    assert_eq!(p.expect("joined")["seq"], 0);
    let g = p.expect("gap");
    assert_eq!(
        (g["from"].as_u64(), g["reset"].as_bool()),
        (Some(1), Some(true))
    );
    p.silent(Duration::from_millis(100));
    assert!(
        srv.log_text().find("panicked").is_none(),
        "{}",
        srv.log_text()
    );
}

#[test]
fn rejoining_a_room_answers_joined_without_replaying_it_again() {
    let srv = chat(&[]);
    let mut p = Peer::connect(srv.addr);
    let epoch = p.join("r")["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        p.say("r", &format!("m{i}"));
        assert_eq!(seq(&p.expect("message")), i);
    }
    // Without since, or with what it has: joined, nothing replayed.
    p.send(json!({"type": "join", "room": "r"}));
    assert_eq!(seq(&p.expect("joined")), 3);
    p.send(json!({"type": "join", "room": "r", "since": 3, "epoch": epoch}));
    assert_eq!(seq(&p.expect("joined")), 3);
    p.silent(Duration::from_millis(200));
    // A rejoin does not count as another room.
    for _ in 0..40 {
        p.send(json!({"type": "join", "room": "r"}));
        p.expect("joined");
    }
    p.say("r", "m4");
    assert_eq!(seq(&p.expect("message")), 4);
}

/// `wsloop serve --app chat` on a free port with `env` set; waits until
/// it accepts.
fn spawn_with_env(env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = wsloop_command("serve", &["--addr", &addr.to_string(), "--app", "chat"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn wsloop serve");
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "wsloop serve did not accept within 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

#[test]
fn broadcast_can_be_turned_off() {
    let on = chat(&[]);
    let mut p = Peer::connect(on.addr);
    p.send(json!({"type": "broadcast", "text": "to all"}));
    assert_eq!(p.expect("broadcast")["text"], "to all");

    let off = chat(&["--no-broadcast"]);
    let mut p = Peer::connect(off.addr);
    let mut other = Peer::connect(off.addr);
    p.error(
        json!({"type": "broadcast", "text": "to all"}),
        "broadcast is turned off",
    );
    other.silent(Duration::from_millis(200));
    // Rooms still work.
    p.join("r");
    p.say("r", "in a room");
    assert_eq!(p.expect("message")["text"], "in a room");

    // The same from the environment, as every serve option.
    let (mut child, addr) = spawn_with_env(&[("WSLOOP_NO_BROADCAST", "1")]);
    let mut p = Peer::connect(addr);
    p.error(
        json!({"type": "broadcast", "text": "to all"}),
        "broadcast is turned off",
    );
    drop(p);
    let _ = child.kill(); // this child's PID only
    let _ = child.wait();

    let help = run_wsloop("serve", &["--help"], None, Duration::from_secs(10)).stdout;
    for flag in [
        "--chat-max-input SIZE",
        "--no-broadcast",
        "WSLOOP_NO_BROADCAST=1",
        "WSLOOP_CHAT_MAX_INPUT=VALUE",
        "--history N",
        "--max-rooms N",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
    let bad = run_wsloop(
        "serve",
        &["--app", "chat", "--history", "0"],
        None,
        Duration::from_secs(10),
    );
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("history"), "{bad:?}");
}
