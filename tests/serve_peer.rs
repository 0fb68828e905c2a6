//! The server knows its peer: `Request::peer_addr` is the TCP peer, and
//! `Request::client_addr` the client, taken from `X-Forwarded-For` only
//! when the peer is a trusted proxy (`Config::trusted_proxies`,
//! `--trust-proxy`, `WSLOOP_TRUST_PROXY`); the server's log lines name it.

mod common;
mod opsutil;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use opsutil::*;
use wsloop::handshake::{generate_key, ClientRequest, Request};
use wsloop::server::{ConnId, Ctx, Handler, HttpResponse, Upgrade};
use wsloop::{Config, Message};

/// Answers every request, plain or upgrade, with what it knows of its
/// origin.
struct Whoami;

fn who(req: &Request) -> String {
    format!(
        "peer={:?} client={:?}\n",
        req.peer_addr(),
        req.client_addr()
    )
}

impl Handler for Whoami {
    fn on_upgrade(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, req: &Request) -> Upgrade {
        Upgrade::reject(403, who(req).trim_end())
    }
    fn on_http(&mut self, req: &Request) -> HttpResponse {
        HttpResponse::text(200, who(req))
    }
    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _msg: Message<'_>) {}
}

/// Sends `head` from a fresh connection and returns the reply's body and
/// the connection's own address (what the server sees as its peer).
fn ask(addr: SocketAddr, head: &str) -> (String, SocketAddr) {
    let mut s = tcp_connect(addr);
    let me = s.local_addr().unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    assert!(read_until_eof(&mut s, Duration::from_secs(5), &mut raw));
    (parse_http(&raw).body_text(), me)
}

fn plain(addr: SocketAddr, xff: &str) -> String {
    format!("GET /x HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-For: {xff}\r\n\r\n")
}

fn upgrade(addr: SocketAddr, xff: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         X-Forwarded-For: {xff}\r\n\r\n"
    )
}

fn server(trusted: &[&str]) -> ServerThread<Whoami> {
    let mut config = Config::default();
    config.trusted_proxies = trusted.iter().map(|t| t.parse().unwrap()).collect();
    start_server(config, Whoami)
}

#[test]
fn handlers_see_the_peer_and_behind_a_trusted_proxy_the_client() {
    const XFF: &str = "6.6.6.6, 203.0.113.5";
    // Nobody trusted: the header is the client's own claim, ignored.
    let srv = server(&[]);
    for head in [plain(srv.addr, XFF), upgrade(srv.addr, XFF)] {
        let (body, me) = ask(srv.addr, &head);
        assert_eq!(body, format!("peer=Some({me}) client=Some(127.0.0.1)\n"));
    }
    drop(srv);
    // Trusted, but not the peer: still ignored.
    let srv = server(&["10.0.0.0/8"]);
    let (body, me) = ask(srv.addr, &plain(srv.addr, XFF));
    assert_eq!(body, format!("peer=Some({me}) client=Some(127.0.0.1)\n"));
    drop(srv);
    // The peer is a trusted proxy: the rightmost entry that is not one.
    let srv = server(&["127.0.0.1", "10.0.0.0/8"]);
    for head in [
        plain(srv.addr, XFF),
        upgrade(srv.addr, XFF),
        plain(srv.addr, "6.6.6.6, 203.0.113.5, 10.9.8.7"),
    ] {
        let (body, me) = ask(srv.addr, &head);
        assert_eq!(
            body,
            format!("peer=Some({me}) client=Some(203.0.113.5)\n"),
            "{head}"
        );
    }
}

/// An upgrade to `addr` as a proxy would forward it.
fn proxied_upgrade(addr: SocketAddr, target: &str, xff: &str) -> Result<TestClient, HttpReply> {
    let req = ClientRequest {
        host: addr.to_string(),
        target: target.to_owned(),
        key: generate_key(),
        protocols: Vec::new(),
        headers: vec![("X-Forwarded-For".into(), xff.into())],
    };
    let mut bytes = Vec::new();
    req.write(&mut bytes);
    let mut s = tcp_connect(addr);
    s.write_all(&bytes).unwrap();
    let mut peek = [0u8; 12];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    wait_until(Duration::from_secs(5), "a response", || {
        matches!(s.peek(&mut peek), Ok(12))
    });
    if &peek[9..12] == b"101" {
        Ok(TestClient::finish_handshake(s, &req))
    } else {
        let mut raw = Vec::new();
        read_until_eof(&mut s, Duration::from_secs(5), &mut raw);
        Err(parse_http(&raw))
    }
}

#[test]
fn serve_logs_the_client_address_from_a_trusted_proxy() {
    let srv = spawn_serve(
        &["--token", "tok"],
        &[("WSLOOP_TRUST_PROXY", "10.0.0.0/8, 127.0.0.1")],
        "wsloop=debug",
    );
    let refused = proxied_upgrade(srv.addr, "/", "6.6.6.6, 203.0.113.5").err();
    assert_eq!(refused.map(|r| r.status), Some(401));
    let c = proxied_upgrade(srv.addr, "/?token=tok", "198.51.100.4").expect("upgrade");
    let me = c.stream.local_addr().unwrap();
    c.close_and_wait(1000);
    wait_until(Duration::from_secs(5), "the close logged", || {
        srv.log_text().contains(" closed 1000 ")
    });
    let log = srv.log_text();
    assert!(
        log.contains("from 203.0.113.5 refused with 401"),
        "refusal at info with the client: {log}"
    );
    assert!(
        log.contains(&format!("open / from 198.51.100.4 (peer {me})")),
        "open at debug with client and peer: {log}"
    );
    assert!(!log.contains("token=tok"), "the token in the logs: {log}");
    assert!(
        log.contains(&format!("(peer {me})")) && log.contains("closed 1000"),
        "close at debug with the peer: {log}"
    );
}

#[test]
fn without_trust_the_header_is_ignored_in_the_logs_too() {
    let srv = spawn_serve(&["--token", "tok"], &[], "info");
    let refused = proxied_upgrade(srv.addr, "/", "203.0.113.5").err();
    assert_eq!(refused.map(|r| r.status), Some(401));
    wait_until(Duration::from_secs(5), "the refusal logged", || {
        srv.log_text().contains("refused with 401")
    });
    let log = srv.log_text();
    assert!(log.contains("from 127.0.0.1 refused with 401"), "{log}");
    assert!(!log.contains("203.0.113.5"), "{log}");
}

#[test]
fn a_bad_trusted_proxy_is_named_with_its_variable() {
    let out = wsloop_command("serve", &["--check"])
        .env("WSLOOP_TRUST_PROXY", "127.0.0.1,10.0.0.0/99")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("WSLOOP_TRUST_PROXY") && err.contains("10.0.0.0/99"),
        "{err}"
    );
    let out = wsloop_command(
        "serve",
        &[
            "--check",
            "--trust-proxy",
            "::1",
            "--trust-proxy",
            "fd00::/8",
        ],
    )
    .stdin(std::process::Stdio::null())
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
