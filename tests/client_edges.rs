//! The library client at its edges: an upgrade answer it cannot parse, a
//! server that reads slowly or not at all, and the end of a TLS
//! connection.

mod fake_peer;

use std::io::Write;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fake_peer::{accept, listen, number_of, numbered, Peer};
use wsloop::client::{connect_with, ClientOptions};
use wsloop::frame::{write_frame, FrameHeader, OpCode};
use wsloop::server::{ConnId, Ctx, Handler, Server};
use wsloop::{CloseCode, Config, Error, Event, Message};

// ------------------------------------------------- extensions in the 101

/// Connects to a fake server whose 101 carries `extra` header lines;
/// returns the client's error (panics if the client accepted the 101).
fn upgrade_must_fail(extra: &'static [u8], opts: &ClientOptions) -> Error {
    let (l, addr) = listen();
    let server = thread::spawn(move || {
        let mut p = Peer::new(accept(&l));
        p.upgrade(extra);
        // Until the client goes away.
        let _ = p.read_frame();
    });
    let res = connect_with(&format!("ws://{addr}/"), opts);
    let err = match res {
        Ok(ws) => {
            drop(ws);
            server.join().unwrap();
            panic!(
                "the client accepted a 101 with {:?}",
                String::from_utf8_lossy(extra)
            );
        }
        Err(e) => e,
    };
    server.join().unwrap();
    err
}

/// RFC 6455 §9.1: an extension header the client cannot parse, or one that
/// is not UTF-8, fails the connection; it is not "no extension".
#[test]
fn unparsable_extension_answer_fails_the_connection() {
    let answers: [&'static [u8]; 4] = [
        b"Sec-WebSocket-Extensions: permessage-deflate; bogus=\r\n",
        b"Sec-WebSocket-Extensions: permessage-deflate; =1\r\n",
        b"Sec-WebSocket-Extensions: ;;\r\n",
        b"Sec-WebSocket-Extensions: permessage-deflate\xff\r\n",
    ];
    // Also with permessage-deflate offered, when the build has it.
    let mut offer = ClientOptions::default();
    offer.config.deflate.enabled = true;
    let configs = [ClientOptions::default(), offer];
    let n = if cfg!(feature = "deflate") { 2 } else { 1 };
    for opts in &configs[..n] {
        for extra in answers {
            let e = upgrade_must_fail(extra, opts);
            assert!(
                matches!(e, Error::Handshake(_)),
                "{:?}: want a handshake error, got {e:?}",
                String::from_utf8_lossy(extra)
            );
        }
    }
}

// ------------------------------------------------ a send before the 101

/// Sending on a non-blocking `Client` before the upgrade finished is the
/// caller's mistake (`Error::Api`), not a handshake failure, and changes
/// nothing: the upgrade then completes and the connection works.
#[test]
fn send_before_the_upgrade_is_an_api_error() {
    use mio::{Events, Poll, Token};
    use std::time::Instant;
    use wsloop::client::{Client, Url};
    use wsloop::ApiError;

    let (l, addr) = listen();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut p = Peer::new(accept(&l));
        go_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        p.upgrade(b"");
        p.read_frame().unwrap()
    });
    let url = Url::parse(&format!("ws://{addr}/")).unwrap();
    let mut c =
        Client::connect_addr(addr, &url, &ClientOptions::default(), Instant::now()).unwrap();
    let mut poll = Poll::new().unwrap();
    c.register(poll.registry(), Token(0)).unwrap();
    match c.send_text("too early") {
        Err(Error::Api(ApiError::NotUpgraded)) => {}
        other => panic!("want Error::Api(NotUpgraded), got {other:?}"),
    }
    go_tx.send(()).unwrap();
    let mut events = Events::with_capacity(8);
    let t = Instant::now();
    while !c.is_upgraded() {
        assert!(!c.is_done(), "{:?}", c.take_error());
        assert!(t.elapsed() < Duration::from_secs(30), "no upgrade");
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        c.handle_io(Instant::now());
    }
    c.send_text("in time").unwrap();
    c.flush().unwrap();
    match server.join().unwrap() {
        Some((OpCode::Text, p)) => assert_eq!(p, b"in time"),
        other => panic!("the server got {other:?}"),
    }
}

// ------------------------------------------------------------- a reset

/// A fake server sends three messages then resets the connection; the
/// client reads only after the reset is in its socket, sending first if
/// `send_first` (that write fails on the reset connection).
fn messages_then_reset(send_first: bool) {
    let (l, addr) = listen();
    let (reset_tx, reset_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let mut p = Peer::new(accept(&l));
        p.upgrade(b"");
        // Once the client's message waits unread, closing sends a RST.
        let mut b = [0u8; 1];
        assert_eq!(p.s.peek(&mut b).unwrap(), 1);
        // One write: Nagle would hold back a second small segment, and the
        // RST discards what was not sent.
        let mut out = Vec::new();
        for i in 0..3 {
            let m = format!("m{i}");
            write_frame(&FrameHeader::new(OpCode::Text, 2), m.as_bytes(), &mut out);
        }
        p.s.write_all(&out).unwrap();
        drop(p);
        reset_tx.send(()).unwrap();
    });
    let mut ws = connect_with(&format!("ws://{addr}/"), &ClientOptions::default()).unwrap();
    ws.send_text("left unread").unwrap();
    reset_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    server.join().unwrap();
    if send_first {
        // Fails once the RST is in (if it is not yet, nothing is tested).
        let _ = ws.send_text("after the reset");
    }
    for i in 0..3 {
        match ws.recv() {
            Ok(Event::Message(Message::Text(t))) => assert_eq!(t, format!("m{i}")),
            other => panic!("send_first={send_first}: message {i}: {other:?}"),
        }
    }
    match ws.recv() {
        Err(Error::Io(_) | Error::ConnectionClosed) => {}
        other => panic!("after the messages, want the reset, got {other:?}"),
    }
}

/// Messages that arrived before a connection reset are handed out before
/// the error, not dropped with the connection, whether the reset shows up
/// on a read or on a write.
#[test]
fn messages_received_before_a_reset_are_not_lost() {
    messages_then_reset(false);
    messages_then_reset(true);
}

// ---------------------------------------------------------- backpressure

/// Records the numbers of the binary messages it gets; the first one makes
/// it sleep (the whole loop, so nothing is read meanwhile).
struct SlowReader {
    got: Arc<Mutex<Vec<usize>>>,
    stall: Duration,
}

impl Handler for SlowReader {
    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, msg: Message<'_>) {
        let mut got = self.got.lock().unwrap();
        got.push(number_of(msg.as_bytes()));
        if got.len() == 1 {
            thread::sleep(self.stall);
        }
    }
}

/// Small watermarks, so a few messages fill the client's queue.
fn small_queue_opts() -> ClientOptions {
    let mut o = ClientOptions::default();
    o.config.write_buffer_high = 256 << 10;
    o.config.write_buffer_low = 64 << 10;
    o.config.write_buffer_limit = 1 << 20;
    o
}

/// A blocking client sending faster than the server reads waits for the
/// queue to drain instead of passing its own write limit and closing with
/// 1008; every message arrives, in order.
#[test]
fn blocking_send_waits_for_a_slow_reader() {
    const N: usize = 120;
    const SIZE: usize = 128 << 10;
    let got = Arc::new(Mutex::new(Vec::new()));
    let handler = SlowReader {
        got: got.clone(),
        stall: Duration::from_secs(2),
    };
    let server = Server::bind("127.0.0.1:0", Config::default(), handler).unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let thread = thread::spawn(move || server.run().map(|_| ()));

    let mut ws = connect_with(&format!("ws://{addr}/"), &small_queue_opts()).unwrap();
    for i in 0..N {
        if let Err(e) = ws.send_binary(&numbered(i, SIZE)) {
            panic!("send {i} of {N}: {e:?}");
        }
    }
    ws.flush().unwrap();
    let t = Instant::now();
    while got.lock().unwrap().len() < N {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the server got {} of {N}",
            got.lock().unwrap().len()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(*got.lock().unwrap(), (0..N).collect::<Vec<_>>());
    let info = ws.close(CloseCode::NORMAL, "done").unwrap();
    assert!(info.clean, "{info:?}");
    handle.shutdown().unwrap();
    thread.join().unwrap().unwrap();
}

/// A server that never reads: once the queue is full, `send` waits for
/// the write timeout and returns `Error::Timeout`; the message is not
/// queued and the connection stays open.
#[test]
fn blocking_send_to_a_peer_that_never_reads_times_out() {
    let (l, addr) = listen();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut p = Peer::new(accept(&l));
        p.upgrade(b"");
        // Hold the connection without reading until the test is done.
        let _ = done_rx.recv_timeout(Duration::from_secs(120));
    });
    let mut ws = connect_with(&format!("ws://{addr}/"), &small_queue_opts()).unwrap();
    ws.set_write_timeout(Some(Duration::from_secs(1)));
    let mut timed_out = false;
    // Far more than any socket buffers take.
    for i in 0..4000 {
        match ws.send_binary(&numbered(i, 64 << 10)) {
            Ok(()) => {}
            Err(Error::Timeout(_)) => {
                timed_out = true;
                break;
            }
            Err(e) => panic!("send {i}: want Ok or a timeout, got {e:?}"),
        }
    }
    assert!(timed_out, "256 MB went to a peer that reads nothing");
    assert!(
        ws.client().is_open(),
        "a timed-out send closed the connection"
    );
    done_tx.send(()).unwrap();
    server.join().unwrap();
}

// ------------------------------------------------------------------- TLS

#[cfg(feature = "tls")]
mod tls {
    use std::io::{self, Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::thread;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use wsloop::client::{connect_with, ClientOptions};
    use wsloop::frame::OpCode;
    use wsloop::{CloseCode, Error, Event};

    use super::fake_peer::{accept, listen, Peer};

    type TlsSock = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

    fn server_config() -> Arc<rustls::ServerConfig> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = CertificateDer::from(ck.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap(),
        )
    }

    /// One wss connection to a scripted TLS server that does the close
    /// handshake (it closes first if `server_first`), then sends its own
    /// close_notify and FIN, as wsloop's server does, and reads to the end.
    /// Returns how that read ended: `Ok` only if the client's close_notify
    /// came before its FIN (rustls reports a bare FIN as `UnexpectedEof`).
    fn close_over_tls(server_first: bool) -> io::Result<Vec<u8>> {
        let (l, addr) = listen();
        let cfg = server_config();
        let server = thread::spawn(move || {
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut p: Peer<TlsSock> = Peer::new(rustls::StreamOwned::new(conn, accept(&l)));
            p.upgrade(b"");
            if server_first {
                p.write_close(1000);
            }
            match p.read_frame().unwrap() {
                Some((OpCode::Close, _)) => {}
                other => panic!("want the client's close, got {other:?}"),
            }
            if !server_first {
                p.write_close(1000);
            }
            p.s.conn.send_close_notify();
            p.s.flush().unwrap();
            p.s.sock.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            p.s.read_to_end(&mut rest).map(|_| rest)
        });

        let mut opts = ClientOptions::default();
        opts.tls = Some(wsloop::tls::insecure_client_config());
        let mut ws = connect_with(&format!("wss://localhost:{}/", addr.port()), &opts).unwrap();
        if server_first {
            match ws.recv() {
                Ok(Event::Close(code, _)) => assert_eq!(code, CloseCode::NORMAL),
                other => panic!("want the server's close, got {other:?}"),
            }
            loop {
                match ws.recv() {
                    Err(Error::ConnectionClosed) => break,
                    Ok(Event::Ping(_) | Event::Pong(_)) => {}
                    other => panic!("after the close: {other:?}"),
                }
            }
        } else {
            let info = ws.close(CloseCode::NORMAL, "bye").unwrap();
            assert!(info.clean, "{info:?}");
        }
        let info = ws.close_info().cloned().unwrap();
        assert!(info.clean, "{info:?}");
        drop(ws);
        server.join().unwrap()
    }

    /// The client ends its TLS stream with close_notify (then FIN), whoever
    /// closed first, so a peer can tell the end from a truncation.
    #[test]
    fn tls_client_sends_close_notify_when_it_closes() {
        for server_first in [false, true] {
            match close_over_tls(server_first) {
                Ok(rest) => assert!(rest.is_empty(), "bytes after the close: {rest:?}"),
                Err(e) => panic!(
                    "server_first={server_first}: the client's TLS stream ended without \
                     close_notify: {e}"
                ),
            }
        }
    }
}
