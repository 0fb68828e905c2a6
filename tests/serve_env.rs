//! `wsloop serve` settings from the environment, as platforms give them:
//! `WSLOOP_<OPTION>` for every option (the command line wins), secrets
//! from the environment or a file, and bad values named by their variable.

mod common;

use std::time::Duration;

use common::*;
use wsloop::client::{connect_with, ClientOptions};
use wsloop::{CloseCode, Error, Event, HandshakeError, Message};

/// Opens `ws://ADDR/PATH` and returns the handshake result.
fn upgrade(srv: &BinServer, path: &str) -> Result<wsloop::client::WebSocket, Error> {
    let mut o = ClientOptions::default();
    o.config.max_message_size = 1 << 20;
    connect_with(&format!("ws://{}{path}", srv.addr), &o)
}

fn refused_with(r: Result<wsloop::client::WebSocket, Error>, status: u16) {
    match r {
        Err(Error::Handshake(HandshakeError::Status(s))) => assert_eq!(s, status),
        Err(e) => panic!("expected HTTP {status}, got error {e} ({e:?})"),
        Ok(_) => panic!("expected HTTP {status}, the upgrade was accepted"),
    }
}

/// Sends `len` bytes and returns what came back: the echo's length, or the
/// close code.
fn echo_or_close(ws: &mut wsloop::client::WebSocket, len: usize) -> Result<usize, CloseCode> {
    ws.set_read_timeout(Some(Duration::from_secs(10)));
    ws.send(Message::Binary(pattern(len, 1).into())).unwrap();
    loop {
        match ws.recv() {
            Ok(Event::Message(m)) => return Ok(m.as_bytes().len()),
            Ok(Event::Ping(_) | Event::Pong(_)) => continue,
            Ok(Event::Close(code, _)) => return Err(code),
            Err(e) => panic!("no echo and no close: {e} ({e:?})"),
        }
    }
}

#[test]
fn environment_sets_options_and_the_command_line_wins() {
    let env = [("WSLOOP_MAX_MESSAGE", "1K"), ("WSLOOP_TOKEN", "from-env")];
    let srv = BinServer::spawn_env(&[], &env);
    refused_with(upgrade(&srv, "/"), 401);
    let mut ws = upgrade(&srv, "/?token=from-env").expect("the token from WSLOOP_TOKEN");
    assert_eq!(echo_or_close(&mut ws, 512), Ok(512));
    assert_eq!(echo_or_close(&mut ws, 2048), Err(CloseCode::TOO_BIG));

    // The same environment with flags: each flag wins over its variable.
    let srv = BinServer::spawn_env(&["--max-message", "4K", "--token", "from-flag"], &env);
    refused_with(upgrade(&srv, "/?token=from-env"), 401);
    let mut ws = upgrade(&srv, "/?token=from-flag").expect("the token from --token");
    assert_eq!(echo_or_close(&mut ws, 2048), Ok(2048));
    srv.assert_no_panic();
}

#[test]
fn the_token_can_come_from_a_file() {
    let path = unique_tmp_path("token", ".txt");
    std::fs::write(&path, "file-secret\n").unwrap();
    let p = path.to_str().unwrap();
    // From the flag, and from its variable.
    for srv in [
        BinServer::spawn_env(&["--token-file", p], &[]),
        BinServer::spawn_env(&[], &[("WSLOOP_TOKEN_FILE", p)]),
    ] {
        refused_with(upgrade(&srv, "/"), 401);
        refused_with(upgrade(&srv, "/?token=file-secret%0A"), 401);
        upgrade(&srv, "/?token=file-secret").expect("the token read from the file");
    }
    let _ = std::fs::remove_file(&path);
}

/// `wsloop serve` with `env` and `args`, expected to refuse to start.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = wsloop_command("serve", args);
    cmd.stdin(std::process::Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("WSLOOP_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .envs(env.iter().copied())
        .spawn()
        .expect("spawn wsloop serve");
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    let run = finish_run(
        &mut child,
        Duration::from_secs(20),
        "wsloop serve",
        out,
        err,
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    run.stderr
}

#[test]
fn bad_values_name_the_variable_and_the_value() {
    let e = refused(&[], &[("WSLOOP_IDLE_TIMEOUT", "soon")]);
    assert!(
        e.contains("invalid value 'soon' for WSLOOP_IDLE_TIMEOUT (--idle-timeout)"),
        "{e}"
    );
    let e = refused(&[], &[("WSLOOP_DEFLATE", "perhaps")]);
    assert!(e.contains("'perhaps' for WSLOOP_DEFLATE"), "{e}");
    let e = refused(
        &[],
        &[("WSLOOP_ALLOWED_ORIGIN", "https://ok.example,ftp://no")],
    );
    assert!(
        e.contains("'ftp://no' for WSLOOP_ALLOWED_ORIGIN (--allowed-origin)"),
        "{e}"
    );
    let e = refused(&[], &[("PORT", "eighty")]);
    assert!(e.contains("PORT 'eighty'"), "{e}");
    let missing = unique_tmp_path("no-such-token", "");
    let e = refused(&["--token-file", missing.to_str().unwrap()], &[]);
    assert!(e.contains("cannot read --token-file"), "{e}");
    // The same value on the command line names the flag alone.
    let e = refused(&["--idle-timeout", "soon"], &[]);
    assert!(
        e.contains("invalid value 'soon' for --idle-timeout:"),
        "{e}"
    ); // --check finds the same errors without starting.
    let e = refused(&["--check"], &[("WSLOOP_MAX_MESSAGE", "lots")]);
    assert!(e.contains("WSLOOP_MAX_MESSAGE"), "{e}");
}

#[test]
fn check_parses_and_exits() {
    let run = run_wsloop(
        "serve",
        &["--check", "--app", "chat", "--addr", "127.0.0.1:1"],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("options ok (chat on 127.0.0.1:1)"),
        "{run:?}"
    );
}

#[test]
fn help_names_every_variable() {
    let run = run_wsloop("serve", &["--help"], None, Duration::from_secs(20));
    assert_eq!(run.code, Some(0), "{run:?}");
    // Every option the help lists has its variable listed too.
    let flags: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| {
            l.split(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .next()
        })
        // Actions, not settings.
        .filter(|f| !f.is_empty() && !["help", "check"].contains(f))
        .collect();
    assert!(flags.len() > 20, "{flags:?}");
    for f in flags {
        let var = format!("WSLOOP_{}", f.to_ascii_uppercase().replace('-', "_"));
        assert!(
            run.stdout.contains(&var),
            "--help lists --{f} but not {var}"
        );
    }
    for platform in ["PORT=", "REDIS_URL="] {
        assert!(
            run.stdout.contains(platform),
            "--help does not name {platform}"
        );
    }
}
