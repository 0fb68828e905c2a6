//! The TLS stream under the server (feature `tls`): close_notify on
//! connections the server drops without a close handshake, the cipher
//! suite wsloop's own configurations agree on, and reads that receive
//! more ciphertext than the caller's buffer takes (kept for the next
//! read, in order, and no more than the caller's room).
#![cfg(feature = "tls")]

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use wsloop::handshake::{Head, ResponseReader};
use wsloop::Config;

type RawTls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn start_tls(config: Config) -> (ServerThread<Recorder>, Recorder) {
    let tls = server_tls("localhost");
    let rec = Recorder::default();
    let srv = spawn_server(loopback(), config, rec.clone(), move |s| s.with_tls(tls));
    (srv, rec)
}

/// A blocking rustls client over a std socket (`cfg` decides the suites).
fn raw_tls(addr: SocketAddr, cfg: std::sync::Arc<rustls::ClientConfig>) -> RawTls {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = wsloop::tls::server_name("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// The upgrade over `s`; returns the bytes read past the 101.
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

/// A peer that ends its TCP side without a close frame or close_notify
/// is lost; the server drops the connection, and what it sends before its
/// FIN must still end with close_notify (RFC 8446 §6.1), or the peer
/// cannot tell an orderly end from a truncation (rustls reports a bare
/// EOF as `UnexpectedEof`).
#[test]
fn a_lost_peer_still_gets_close_notify() {
    let (srv, rec) = start_tls(Config::default());
    let mut s = raw_tls(srv.addr, client_tls());
    let rest = raw_upgrade(&mut s, srv.addr);
    assert!(rest.is_empty(), "unexpected bytes after the 101: {rest:?}");
    // TCP FIN, no close_notify: the server sees a truncated stream.
    s.sock.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            panic!(
                "the server closed without close_notify ({} bytes first)",
                out.len()
            )
        }
        Err(e) => panic!("reading to the server's end: {e}"),
    }
    wait_until(Duration::from_secs(10), "on_close", || {
        rec.closes().len() == 1
    });
    let closes = rec.closes();
    assert!(!closes[0].clean, "{closes:?}");
}

/// wsloop's client and server configurations prefer AES-128-GCM; a client
/// with rustls' own order (AES-256 first) gets AES-256, since the server
/// follows the client's preference.
#[test]
fn negotiated_suite_follows_the_client_and_ours_prefer_aes_128() {
    let (srv, _) = start_tls(Config::default());
    let mut s = raw_tls(srv.addr, client_tls());
    s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    assert_eq!(
        s.conn.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );

    let mut roots = rustls::RootCertStore::empty();
    for c in wsloop::tls::load_certs(&Pki::get().ca()).unwrap() {
        roots.add(c).unwrap();
    }
    let default_order = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut s = raw_tls(srv.addr, std::sync::Arc::new(default_order));
    s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    assert_eq!(
        s.conn.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
}

/// The server reads up to 64 KiB of ciphertext at once, more than its
/// 4 KiB read buffer takes: the rest waits for the next read. Pipelined
/// messages of many sizes in one write come back whole and in order.
#[test]
fn reads_larger_than_the_read_buffer_keep_order() {
    let mut config = Config::default();
    config.read_buffer_size = 4096;
    let (srv, _) = start_tls(config);
    let url = format!("wss://localhost:{}/", srv.addr.port());
    let mut o = wsloop::client::ClientOptions::default();
    o.tls = Some(client_tls());
    let mut ws = open_ws(&url, &o, Duration::from_secs(20));
    let msgs: Vec<Vec<u8>> = (0..200usize)
        .map(|i| {
            let len = [1, 125, 126, 3000, 4096, 9000, 16_384, 40_000][i % 8] + i;
            (0..len).map(|j| (i * 31 + j) as u8).collect()
        })
        .collect();
    echo_pipelined(&mut ws, &msgs);
    echo_round(&mut ws, &[0, 70_000, 5]);
}

/// What a connection keeps between reads (what a paused one holds) is
/// bounded by the room it offered: ciphertext past it stays in the
/// kernel. Before, every receive took at least a full record (16.25 KiB),
/// so a 4 KiB reader kept up to ~12 KiB. The stream still hands out
/// everything, whole and in order, to a reader of any size.
#[test]
fn ciphertext_held_between_reads_is_bounded_by_the_room() {
    // Largest TLS 1.3 record on the wire: 2^14 + 256 bytes plus a header.
    const RECORD: usize = (16 << 10) + 256 + 5;
    let data: std::sync::Arc<Vec<u8>> =
        std::sync::Arc::new((0..300_000u32).map(|i| (i * 7 % 251) as u8).collect());
    for room in [100usize, 4096, 10_000, 20_000] {
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = data.clone();
        let client = std::thread::spawn(move || {
            let mut s = raw_tls(addr, client_tls());
            s.write_all(&sent).unwrap();
            s.flush().unwrap();
            // Until the server ends (its close_notify or FIN).
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });
        let (sock, _) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        let conn = rustls::ServerConnection::new(server_tls("localhost")).unwrap();
        let mut stream =
            wsloop::stream::Stream::tls(mio::net::TcpStream::from_std(sock), conn.into());
        let bound = room.clamp(4096, RECORD);
        let mut buf = vec![0u8; room];
        let mut got = Vec::with_capacity(data.len());
        let mut max_held = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < data.len() {
            assert!(
                Instant::now() < deadline,
                "room {room}: {} of {} bytes",
                got.len(),
                data.len()
            );
            match stream.read(&mut buf) {
                Ok(0) => panic!("room {room}: EOF after {} bytes", got.len()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("room {room}: {e}"),
            }
            // Between two reads: what a connection paused here keeps.
            max_held = max_held.max(stream.tls_held());
        }
        assert!(
            max_held <= bound,
            "room {room}: {max_held} bytes of ciphertext held, bound {bound}"
        );
        assert!(got == *data, "room {room}: bytes differ");
        stream.shutdown();
        client.join().unwrap();
    }
}
