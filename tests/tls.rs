//! wss:// end to end (feature `tls`): certificates from tests/common/pki.rs
//! (rcgen: a test CA and leaves signed by it), the in-process server with
//! `Server::with_tls` and the `wsloop serve --tls-*` binary, the library
//! client and `wsloop client`, and a raw rustls client over std sockets
//! for what the library client hides (close_notify, HTTP over TLS, a peer
//! that never starts TLS).
//!
//! Covered: echo at the frame-length boundaries up to 16 MiB; name
//! mismatch, unknown issuer and expiry rejected with errors that name the
//! reason; a plain ws:// client on the TLS port; GET /healthz over TLS;
//! the handshake timeout before and after the TLS handshake; backpressure
//! and the overflow policy over TLS; the close handshake both ways, with
//! close_notify.
#![cfg(feature = "tls")]

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wsloop::client::{connect_with, ClientOptions, WebSocket};
use wsloop::frame::{parse_header, OpCode};
use wsloop::handshake::{Head, ResponseReader};
use wsloop::server::{ConnId, Ctx, Handler};
use wsloop::{CloseCode, CloseInfo, Config, Error, Event, HandshakeError, Message, OverflowPolicy};

// ------------------------------------------------------------------ server

/// Runs `handler` with TLS (certificate `cert`) on 127.0.0.1:0 on a thread.
fn start_tls<H: Handler + Send + 'static>(
    config: Config,
    handler: H,
    cert: &str,
) -> ServerThread<H> {
    let tls = server_tls(cert);
    spawn_server(loopback(), config, handler, move |s| s.with_tls(tls))
}

#[derive(Default)]
struct Log {
    opened: Mutex<Vec<ConnId>>,
    closes: Mutex<Vec<CloseInfo>>,
}

impl Log {
    fn closes(&self) -> Vec<CloseInfo> {
        self.closes.lock().unwrap().clone()
    }
}

/// Echoes; "bye" makes the server close with 4000 "bye".
struct Echo(Arc<Log>);

impl Handler for Echo {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, id: ConnId) {
        self.0.opened.lock().unwrap().push(id);
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        if matches!(&msg, Message::Text(t) if t == "bye") {
            ctx.close(id, CloseCode(4000), "bye");
            return;
        }
        let _ = ctx.send(id, msg);
    }
    fn on_http(&mut self, req: &wsloop::handshake::Request) -> wsloop::server::HttpResponse {
        match req.target.as_str() {
            "/healthz" => wsloop::server::HttpResponse::text(200, "ok\n"),
            _ => wsloop::server::HttpResponse::text(404, "no\n"),
        }
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, info: &CloseInfo) {
        self.0.closes.lock().unwrap().push(info.clone());
    }
}

fn echo_server(config: Config) -> (ServerThread<Echo>, Arc<Log>) {
    let log = Arc::new(Log::default());
    (start_tls(config, Echo(log.clone()), "localhost"), log)
}

// ------------------------------------------------------------------ client

fn opts(tls: Option<Arc<rustls::ClientConfig>>) -> ClientOptions {
    let mut o = ClientOptions::default();
    o.config.handshake_timeout = Duration::from_secs(10);
    o.config.max_message_size = 32 << 20;
    o.config.max_frame_size = 32 << 20;
    o.tls = tls;
    o
}

/// `wss://localhost:PORT/` trusting the test CA.
fn connect_wss(addr: SocketAddr) -> WebSocket {
    let url = format!("wss://localhost:{}/", addr.port());
    open_ws(&url, &opts(Some(client_tls())), Duration::from_secs(20))
}

/// A connect that must fail: returns the error's Display.
fn connect_err(url: &str, o: &ClientOptions) -> (String, Error) {
    match connect_with(url, o) {
        Ok(_) => panic!("{url}: connected, but it must be rejected"),
        Err(e) => (e.to_string(), e),
    }
}

// -------------------------------------------------------- raw TLS client

type RawTls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A blocking rustls client over a std socket, trusting the test CA.
fn raw_tls(addr: SocketAddr) -> RawTls {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let name = wsloop::tls::server_name("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client_tls(), name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads to the end of the TLS stream. `Ok` means the server sent
/// close_notify: rustls reports a bare TCP EOF as `UnexpectedEof`.
fn read_to_close_notify(s: &mut RawTls) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).map(|_| out)
}

/// The upgrade over `s`; returns bytes read past the 101 response.
fn raw_upgrade(s: &mut RawTls, addr: SocketAddr) -> Vec<u8> {
    let (req, bytes) = upgrade_request(addr, "/");
    s.write_all(&bytes).unwrap();
    let mut reader = ResponseReader::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read the 101 over TLS");
        assert!(n > 0, "EOF before the 101");
        if let Head::Complete(resp, rest) = reader.feed(&chunk[..n], 8192, 64).unwrap() {
            resp.validate(&req).expect("a valid 101");
            return rest;
        }
    }
}

/// The next frame from the server (opcode and payload).
fn raw_frame(s: &mut RawTls, buf: &mut Vec<u8>) -> (OpCode, Vec<u8>) {
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some((h, n)) = parse_header(buf).expect("a valid frame") {
            assert!(h.mask.is_none(), "the server masked a frame");
            let len = h.payload_len as usize;
            if buf.len() >= n + len {
                let payload = buf[n..n + len].to_vec();
                buf.drain(..n + len);
                return (h.opcode, payload);
            }
        }
        let n = s.read(&mut chunk).expect("read a frame over TLS");
        assert!(n > 0, "EOF while waiting for a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ------------------------------------------------------------------- echo

#[test]
fn echo_over_wss_at_frame_length_boundaries() {
    let (srv, log) = echo_server(Config::default());
    let mut ws = connect_wss(srv.addr);
    echo_round(&mut ws, &[0, 125, 126, 65535, 65536, 16 << 20]);

    // Pipelined: many TLS records arrive per readiness event; nothing may
    // be left undecrypted in rustls when the socket is drained.
    let msgs: Vec<Vec<u8>> = (0..300).map(|k| pattern(7_000 + k * 13, k as u8)).collect();
    echo_pipelined(&mut ws, &msgs);
    let info = ws.close(CloseCode::NORMAL, "done").unwrap();
    assert_eq!(
        (info.code, info.clean),
        (CloseCode::NORMAL, true),
        "{info:?}"
    );
    wait_until(Duration::from_secs(5), "on_close", || {
        !log.closes().is_empty()
    });
    let c = &log.closes()[0];
    assert_eq!((c.code, c.clean), (CloseCode::NORMAL, true), "{c:?}");
}

/// Several TLS clients at once, each with small messages in flight: the
/// server's edge-triggered reads must drain rustls as well as the socket.
#[test]
fn concurrent_wss_clients() {
    let (srv, _log) = echo_server(Config::default());
    let addr = srv.addr;
    let workers: Vec<_> = (0..12)
        .map(|w| {
            thread::spawn(move || {
                let mut ws = connect_wss(addr);
                for round in 0..10 {
                    for k in 0..10 {
                        ws.send_text(&format!("{w}-{round}-{k}")).unwrap();
                    }
                    for k in 0..10 {
                        assert_eq!(
                            next_message(&mut ws),
                            Message::Text(format!("{w}-{round}-{k}").into())
                        );
                    }
                }
                let info = ws.close(CloseCode::NORMAL, "").unwrap();
                assert!(info.clean, "{info:?}");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
}

/// `wsloop serve --tls-cert/--tls-key` and `wsloop client --ca`.
#[test]
fn binary_server_and_client_over_wss() {
    let pki = Pki::get();
    let cert = pki.cert("localhost");
    let key = pki.key("localhost");
    let srv = BinServer::spawn(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let mut ws = connect_wss(srv.addr);
    echo_round(&mut ws, &[0, 125, 126, 65535, 65536, 1 << 20]);
    let info = ws.close(CloseCode::NORMAL, "").unwrap();
    assert!(info.clean, "{info:?}\nserver log:\n{}", srv.log_text());
    assert!(
        srv.log_text().contains("wss://"),
        "the server log does not say wss://:\n{}",
        srv.log_text()
    );

    let url = format!("wss://localhost:{}/", srv.addr.port());
    let ca = pki.ca();
    let out = run_client(&[&url, "--ca", ca.to_str().unwrap()], "one\ntwo ✓\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "one\ntwo ✓\n", "{out:?}");
    assert!(out.stderr.contains("closed: 1000"), "{out:?}");

    // --insecure connects without the CA (and says so).
    let out = run_client(&[&url, "--insecure"], "three\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "three\n", "{out:?}");
    assert!(out.stderr.contains("NOT verified"), "{out:?}");
}

/// `wsloop client ARGS` with `input` on stdin, then EOF. The echo server
/// answers each line before it sees the close that follows stdin's end
/// (one TLS connection, in order), so all lines come back.
fn run_client(args: &[&str], input: &str) -> BinRun {
    run_wsloop("client", args, Some(input), Duration::from_secs(20))
}

// ------------------------------------------------------ certificate errors

#[test]
fn wrong_hostname_is_rejected() {
    let (srv, log) = echo_server(Config::default());
    // The certificate names `localhost` only; 127.0.0.1 is not in it.
    let url = format!("wss://127.0.0.1:{}/", srv.addr.port());
    let (msg, _) = connect_err(&url, &opts(Some(client_tls())));
    eprintln!("wrong name: {msg}");
    assert!(
        msg.contains("not valid for name")
            && msg.contains("127.0.0.1")
            && msg.contains("localhost"),
        "the error does not name the mismatch: {msg}"
    );
    // The same from the command line: exit 3, reason on stderr.
    let ca = Pki::get().ca();
    let out = run_client(&[&url, "--ca", ca.to_str().unwrap()], "");
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("not valid for name"), "{out:?}");
    // The server is unharmed and saw no WebSocket.
    let mut ws = connect_wss(srv.addr);
    echo_round(&mut ws, &[5]);
    assert_eq!(log.opened.lock().unwrap().len(), 1);
}

#[test]
fn untrusted_certificate_is_rejected() {
    let (srv, _log) = echo_server(Config::default());
    let url = format!("wss://localhost:{}/", srv.addr.port());
    // Default trust: the bundled Mozilla roots, which do not know our CA.
    let (msg, _) = connect_err(&url, &opts(None));
    eprintln!("default roots: {msg}");
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    let out = run_client(&[&url], "");
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("UnknownIssuer"), "{out:?}");
    // Trusting some other CA is no better: here, the leaf itself as "CA".
    let other = wsloop::tls::client_config(Some(&Pki::get().cert("expired"))).unwrap();
    let (msg, _) = connect_err(&url, &opts(Some(other)));
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    let mut ws = connect_wss(srv.addr);
    echo_round(&mut ws, &[5]);
}

#[test]
fn expired_certificate_is_rejected() {
    let log = Arc::new(Log::default());
    let srv = start_tls(Config::default(), Echo(log), "expired");
    let url = format!("wss://localhost:{}/", srv.addr.port());
    let (msg, _) = connect_err(&url, &opts(Some(client_tls())));
    eprintln!("expired: {msg}");
    assert!(msg.contains("certificate expired"), "{msg}");
}

/// What `openssl req -x509` makes by default is a CA certificate; webpki
/// refuses it as a server certificate even when it is the trust anchor
/// (hence the CA + leaf recipe in docs/TLS.md).
#[test]
fn self_signed_ca_as_server_certificate_is_rejected() {
    let log = Arc::new(Log::default());
    let srv = start_tls(Config::default(), Echo(log), "selfsigned");
    let url = format!("wss://localhost:{}/", srv.addr.port());
    let trust = wsloop::tls::client_config(Some(&Pki::get().cert("selfsigned"))).unwrap();
    let (msg, _) = connect_err(&url, &opts(Some(trust)));
    eprintln!("self-signed CA as end entity: {msg}");
    assert!(msg.contains("CaUsedAsEndEntity"), "{msg}");
    // --insecure (tests only) accepts anything.
    let mut ws = connect_with(&url, &opts(Some(wsloop::tls::insecure_client_config())))
        .expect("insecure connect");
    ws.set_read_timeout(Some(Duration::from_secs(10)));
    echo_round(&mut ws, &[100]);
}

/// A rejected certificate is an `Error::Tls`, as its doc says ("TLS setup
/// or verification failed (the reason is named)"), so a program can tell
/// it from a network error (not an `Error::Io` wrapping the rustls
/// error).
#[test]
fn verification_failure_is_a_tls_error() {
    let (srv, _log) = echo_server(Config::default());
    let url = format!("wss://localhost:{}/", srv.addr.port());
    let (msg, e) = connect_err(&url, &opts(None));
    assert!(
        matches!(e, Error::Tls(_)),
        "certificate rejected, but reported as {e:?} (Display: {msg}), not Error::Tls"
    );
}

#[test]
fn bad_server_files_are_named() {
    let pki = Pki::get();
    let missing = pki.dir.join("nope.pem");
    let e = wsloop::tls::server_config_from_pem(&missing, &pki.key("localhost")).unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
    // A key that is not the certificate's.
    let e = wsloop::tls::server_config_from_pem(&pki.cert("localhost"), &pki.key("expired"))
        .unwrap_err();
    assert!(
        e.to_string().contains("localhost.pem") && e.to_string().contains("expired.key"),
        "{e}"
    );
    // A key file given as the certificate.
    let e = wsloop::tls::server_config_from_pem(&pki.key("localhost"), &pki.key("localhost"))
        .unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
}

// ------------------------------------------------- plain peers, HTTP, timers

#[test]
fn plain_ws_client_on_the_tls_port_fails_cleanly() {
    let (srv, log) = echo_server(Config::default());
    let url = format!("ws://localhost:{}/", srv.addr.port());
    let mut o = opts(None);
    o.config.handshake_timeout = Duration::from_secs(30);
    let t = Instant::now();
    let (msg, e) = connect_err(&url, &o);
    eprintln!("plain ws:// on the TLS port: {msg} after {:?}", t.elapsed());
    // The server refused: the client did not give up by itself.
    assert!(
        !matches!(e, Error::Handshake(HandshakeError::Timeout)),
        "the server did not refuse: {msg} after {:?}",
        t.elapsed()
    );
    // Plain HTTP on the TLS port gets no HTTP answer, only a TLS alert and
    // EOF.
    let mut s = tcp_connect(srv.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    assert!(
        read_until_eof(&mut s, Duration::from_secs(10), &mut raw),
        "no EOF after plain HTTP on the TLS port"
    );
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    // The server goes on serving wss://.
    let mut ws = connect_wss(srv.addr);
    echo_round(&mut ws, &[10, 70_000]);
    assert_eq!(log.opened.lock().unwrap().len(), 1);
}

#[test]
fn http_healthz_over_tls() {
    let (srv, _log) = echo_server(Config::default());
    let mut s = raw_tls(srv.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let raw = read_to_close_notify(&mut s)
        .expect("the HTTP response must end with close_notify, not a bare TCP EOF");
    let reply = parse_http(&raw);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body_text(), "ok\n");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN");

    // The binary answers /healthz over TLS too.
    let pki = Pki::get();
    let (cert, key) = (pki.cert("localhost"), pki.key("localhost"));
    let bin = BinServer::spawn(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let mut s = raw_tls(bin.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let raw = read_to_close_notify(&mut s).expect("close_notify after the response");
    let reply = parse_http(&raw);
    assert_eq!((reply.status, reply.body_text().as_str()), (200, "ok\n"));
}

/// A peer that connects TCP and never starts TLS is dropped at the
/// handshake timeout, and so is one that finishes TLS but sends no
/// request (it gets a 408 over TLS).
#[test]
fn handshake_timeout_covers_tls() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let mut cfg = Config::default();
    cfg.handshake_timeout = TIMEOUT;
    cfg.close_timeout = Duration::from_secs(2);
    let (srv, log) = echo_server(cfg);

    let t = Instant::now();
    let mut silent = tcp_connect(srv.addr);
    let mut tls = raw_tls(srv.addr);
    tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    assert!(!tls.conn.is_handshaking());

    let mut raw = Vec::new();
    assert!(
        read_until_eof(&mut silent, Duration::from_secs(10), &mut raw),
        "no EOF for a peer that never started TLS"
    );
    let took = t.elapsed();
    eprintln!("silent TCP peer: EOF after {took:?}, {} bytes", raw.len());
    assert!(
        took >= TIMEOUT,
        "EOF after {took:?}, before the handshake timeout ({TIMEOUT:?})"
    );

    let resp = read_to_close_notify(&mut tls).expect("408 then close_notify");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        t.elapsed() >= TIMEOUT,
        "408 after {:?}, before the handshake timeout",
        t.elapsed()
    );
    assert!(log.opened.lock().unwrap().is_empty());
    // Still serving.
    let mut ws = connect_wss(srv.addr);
    echo_round(&mut ws, &[3]);
}

// ------------------------------------------------------------ close

/// Both ways, at the WebSocket and the TLS level: close frames exchanged,
/// close_notify sent by the server before its FIN, and both sides report
/// a clean close.
#[test]
fn close_handshake_over_tls_is_clean_both_ways() {
    let (srv, log) = echo_server(Config::default());

    // Library client closes first.
    let mut ws = connect_wss(srv.addr);
    echo_round(&mut ws, &[10]);
    let info = ws.close(CloseCode::NORMAL, "client done").unwrap();
    assert_eq!(
        (info.code, info.clean),
        (CloseCode::NORMAL, true),
        "{info:?}"
    );

    // Server closes first ("bye" -> 4000).
    let mut ws = connect_wss(srv.addr);
    ws.send_text("bye").unwrap();
    match ws.recv() {
        Ok(Event::Close(code, reason)) => {
            assert_eq!((code, &*reason), (CloseCode(4000), "bye"));
        }
        other => panic!("expected the server's close, got {other:?}"),
    }
    let t = Instant::now();
    loop {
        match ws.recv() {
            Err(Error::ConnectionClosed) => break,
            Ok(Event::Ping(_) | Event::Pong(_)) => {}
            other => panic!("after the close: {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    let info = ws.close_info().cloned().expect("close info");
    assert_eq!((info.code, info.clean), (CloseCode(4000), true), "{info:?}");

    // Raw TLS, client first: close frame, the echo, then close_notify.
    let mut s = raw_tls(srv.addr);
    let mut buf = raw_upgrade(&mut s, srv.addr);
    s.write_all(&frame_bytes(
        OpCode::Close,
        &close_payload(1000, "raw"),
        true,
        true,
    ))
    .unwrap();
    let (op, payload) = raw_frame(&mut s, &mut buf);
    assert_eq!(op, OpCode::Close);
    assert_eq!(&payload[..2], &1000u16.to_be_bytes());
    let rest = read_to_close_notify(&mut s)
        .expect("after the close handshake the server must send close_notify, then FIN");
    assert!(rest.is_empty() && buf.is_empty(), "bytes after the close");
    s.conn.send_close_notify();
    let _ = s.flush();
    let _ = s.sock.shutdown(std::net::Shutdown::Write);

    // Raw TLS, server first.
    let mut s = raw_tls(srv.addr);
    let mut buf = raw_upgrade(&mut s, srv.addr);
    s.write_all(&frame_bytes(OpCode::Text, b"bye", true, true))
        .unwrap();
    let (op, payload) = raw_frame(&mut s, &mut buf);
    assert_eq!(op, OpCode::Close);
    assert_eq!(&payload[..2], &4000u16.to_be_bytes());
    s.write_all(&frame_bytes(OpCode::Close, &payload[..2], true, true))
        .unwrap();
    let rest = read_to_close_notify(&mut s).expect("close_notify after the server's close");
    assert!(rest.is_empty());
    s.conn.send_close_notify();
    let _ = s.flush();

    wait_until(Duration::from_secs(5), "four on_close calls", || {
        log.closes().len() == 4
    });
    for c in log.closes() {
        assert!(c.clean, "server saw an unclean close: {c:?}");
    }
}

// ---------------------------------------------------------- backpressure

fn read_pushed(ws: &mut WebSocket, n: usize) {
    for i in 0..n {
        match next_message(ws) {
            Message::Binary(b) => assert!(b == Pusher::chunk(i), "pushed message {i} differs"),
            other => panic!("pushed message {i}: got {other:?}"),
        }
    }
}

/// A reader that stops reading while the server streams 16 MiB: the TLS
/// layer absorbs at most its 64 KiB, so the handler sees `Full`, the
/// queue stays bounded, other clients are served, and `on_drain` restarts
/// the stream once the reader reads again.
#[test]
fn backpressure_over_tls() {
    const TOTAL: usize = 256;
    let (h, stats) = Pusher::new();
    let cfg = small_queue_config(OverflowPolicy::Close(CloseCode::POLICY));
    let limit = cfg.write_buffer_limit;
    let srv = start_tls(cfg, h, "localhost");

    let mut flood = connect_wss(srv.addr);
    flood.send_text(&format!("flood {TOTAL}")).unwrap();
    // (A stall is only looked for once a send was refused: a loop that is
    // merely slow on a busy machine is not a stall.)
    wait_until(Duration::from_secs(20), "a send refused with Full", || {
        stats.full.load(Ordering::SeqCst) >= 1
    });
    let stalled_at = wait_stall(&stats.accepted, Duration::from_secs(20));
    eprintln!(
        "stalled after {stalled_at} of {TOTAL} ({} KiB), max buffered {} KiB",
        (stalled_at * CHUNK) >> 10,
        stats.max_buffered.load(Ordering::SeqCst) >> 10
    );
    assert!(stalled_at < TOTAL, "the non-reading client absorbed 16 MiB");
    assert!(
        stats.full.load(Ordering::SeqCst) >= 1,
        "no send reported Full"
    );

    // Another TLS client is served meanwhile (the flood client reads
    // nothing until this is done).
    let mut other = connect_wss(srv.addr);
    echo_round(&mut other, &[10, 1000]);

    let drains_before = stats.drains.load(Ordering::SeqCst);
    read_pushed(&mut flood, TOTAL);
    assert!(
        stats.drains.load(Ordering::SeqCst) > drains_before,
        "on_drain was not called after the reader resumed"
    );
    stats.assert_queue_bounded(limit);
    assert_eq!(stats.errors.load(Ordering::SeqCst), 0);
    flood.send_text("done?").unwrap();
    assert_eq!(next_message(&mut flood), Message::Text("done?".into()));
    assert!(flood.close(CloseCode::NORMAL, "").unwrap().clean);
    assert!(other.close(CloseCode::NORMAL, "").unwrap().clean);
}

/// An app that ignores `Full` over TLS: past write_buffer_limit the
/// overflow policy closes with 1008 after what was queued.
#[test]
fn overflow_policy_over_tls() {
    const BURST: usize = 40; // 2.5 MiB in one callback, limit 1 MiB
    let (h, stats) = Pusher::new();
    let cfg = small_queue_config(OverflowPolicy::Close(CloseCode::POLICY));
    let limit = cfg.write_buffer_limit;
    let srv = start_tls(cfg, h, "localhost");
    let mut ws = connect_wss(srv.addr);
    ws.send_text(&format!("burst {BURST}")).unwrap();
    let accepted = stats.expect_burst_cut_at_limit(BURST, limit);
    read_pushed(&mut ws, accepted);
    match ws.recv() {
        Ok(Event::Close(code, _)) => assert_eq!(code, CloseCode::POLICY),
        other => panic!("expected close 1008, got {other:?}"),
    }
    wait_until(Duration::from_secs(5), "on_close", || {
        !stats.closes().is_empty()
    });
    assert_eq!(stats.closes()[0].code, CloseCode::POLICY);
}

// ------------------------------------------------------- docs/TLS.md

/// The openssl recipe in docs/TLS.md (the ```sh block after the marker
/// line; it was in README.md, hence the name) makes certificates that
/// rustls accepts for `localhost` and 127.0.0.1.
#[test]
fn readme_certificate_recipe_works() {
    let readme =
        std::fs::read_to_string(repo_root().join("docs/TLS.md")).expect("read docs/TLS.md");
    let marker = "(readme_certificate_recipe_works) runs the next block";
    let after = &readme[readme
        .find(marker)
        .expect("docs/TLS.md lost the certificate recipe marker")..];
    let start = after
        .find("```sh\n")
        .expect("a ```sh block after the marker")
        + 6;
    let script = &after[start..start + after[start..].find("```").expect("end of the block")];
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl is not installed: skipping the docs/TLS.md recipe");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-readme-recipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .current_dir(&dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "the docs/TLS.md recipe failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls = wsloop::tls::server_config_from_pem(&dir.join("server.pem"), &dir.join("server.key"))
        .expect("server.pem + server.key");
    let echo = Echo(Arc::new(Log::default()));
    let srv = spawn_server(loopback(), Config::default(), echo, move |s| {
        s.with_tls(tls)
    });
    let addr = srv.addr;
    let ca = wsloop::tls::client_config(Some(&dir.join("ca.pem"))).unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{}/", addr.port());
        let mut ws = open_ws(&url, &opts(Some(ca.clone())), Duration::from_secs(10));
        echo_round(&mut ws, &[1, 200]);
        assert!(ws.close(CloseCode::NORMAL, "").unwrap().clean);
    }
    srv.stop(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------- bench

fn run_bench(args: &[&str]) -> BinRun {
    run_wsloop("bench", args, None, Duration::from_secs(60))
}

/// `wsloop bench wss://… --ca FILE` against the TLS echo server: every echo
/// verified, clean closes; without the CA it names the reason; --ca and
/// --insecure do not go with ws://.
#[test]
fn bench_over_wss() {
    let (srv, _log) = echo_server(Config::default());
    let url = format!("wss://localhost:{}/", srv.addr.port());
    let ca = Pki::get().ca();
    let ca = ca.to_str().unwrap();
    let common = [
        "--conns",
        "4",
        "--pipeline",
        "4",
        "--size",
        "2000",
        "--duration",
        "500ms",
        "--warmup",
        "0",
    ];
    let mut args = vec![url.as_str(), "--ca", ca, "--json"];
    args.extend(common);
    let out = run_bench(&args);
    assert_eq!(out.code, Some(0), "{out:?}");
    let json = out.stdout.trim();
    for want in ["\"open\":4", "\"errors\":0", "\"clean_closes\":4"] {
        assert!(json.contains(want), "{want} not in {json}");
    }
    assert!(!json.contains("\"msgs\":0,"), "no echo measured: {json}");
    assert!(json.contains(&format!("\"url\":\"{url}\"")), "{json}");

    // The text summary too, with --insecure.
    let out = run_bench(&[
        &url,
        "--insecure",
        "--mode",
        "latency",
        "--conns",
        "4",
        "--duration",
        "500ms",
        "--warmup",
        "0",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("closed cleanly"), "{out:?}");
    assert!(out.stderr.contains("NOT verified"), "{out:?}");

    // Default roots: no connection opens; the reason is counted.
    let out = run_bench(&[&url, "--conns", "2", "--duration", "200ms", "--warmup", "0"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stdout.contains("UnknownIssuer"), "{out:?}");

    let plain = format!("ws://127.0.0.1:{}/", srv.addr.port());
    let out = run_bench(&[&plain, "--ca", ca]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("only apply to wss://"), "{out:?}");
}
