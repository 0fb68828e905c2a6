//! The client's input path: messages lent from the read buffer, undecoded
//! input bounded by one read buffer, the `Config` shared between clients.

use std::borrow::Cow;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::idle_tests::upgrade;
use super::{Client, ClientOptions, Url};
use crate::protocol::{Event, Message};

/// An unmasked server frame.
pub(super) fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A server that upgrades one connection, writes `out`, then holds it
/// for `hold`.
pub(super) fn serve(
    out: Vec<u8>,
    hold: Duration,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        upgrade(&mut s).expect("upgrade");
        s.write_all(&out).expect("write frames");
        std::thread::sleep(hold);
        drop::<TcpStream>(s);
    });
    (addr, t)
}

fn open(addr: std::net::SocketAddr, opts: &ClientOptions, poll: &mut Poll) -> Client {
    let url = Url::parse(&format!("ws://{addr}/")).expect("url");
    let mut c = Client::connect_addr(addr, &url, opts, Instant::now()).expect("connect");
    c.register(poll.registry(), Token(0)).expect("register");
    c
}

#[test]
fn a_whole_frame_message_is_lent_from_the_read_buffer() {
    let mut out = frame(0x2, &[7u8; 1000]);
    out.extend(frame(0x1, "héllo".as_bytes()));
    let (addr, server) = serve(out, Duration::from_millis(0));
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let mut c = open(addr, &ClientOptions::default(), &mut poll);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .expect("poll");
        c.handle_io(Instant::now());
        while let Some(seen) = c.next_event_with(|ev| match ev {
            Event::Message(Message::Binary(Cow::Borrowed(b))) => {
                format!("borrowed binary {}", b.len())
            }
            Event::Message(Message::Text(Cow::Borrowed(t))) => format!("borrowed text {t}"),
            Event::Message(m) => format!("copied {}", m.as_bytes().len()),
            _ => "not a message".to_string(),
        }) {
            got.push(seen);
        }
    }
    assert_eq!(got, ["borrowed binary 1000", "borrowed text héllo"]);
    server.join().expect("server");
}

/// A server that sends faster than the application decodes fills one read
/// buffer of the client, not its memory: reading waits until the input is
/// decoded, and nothing is lost.
#[test]
fn undecoded_input_is_at_most_one_read_buffer() {
    const COUNT: usize = 40;
    const SIZE: usize = 10_000;
    let mut out = Vec::new();
    for i in 0..COUNT {
        out.extend(frame(0x2, &[i as u8; SIZE]));
    }
    let (addr, server) = serve(out, Duration::from_secs(1));
    let mut opts = ClientOptions::default();
    opts.config.read_buffer_size = 16 << 10;
    opts.config.max_message_size = 1 << 20;
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let mut c = open(addr, &opts, &mut poll);
    // Only reads for a while: the server's 400 KB reach the socket.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .expect("poll");
        c.handle_io(Instant::now());
        assert!(c.input_held() <= 16 << 10, "{} bytes held", c.input_held());
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < COUNT && Instant::now() < deadline {
        while let Some(ev) = c.next_event() {
            assert!(c.input_held() <= 16 << 10, "{} bytes held", c.input_held());
            match ev {
                Event::Message(Message::Binary(b)) => got.push((b[0], b.len())),
                other => panic!("unexpected {other:?}"),
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .expect("poll");
        c.handle_io(Instant::now());
    }
    let want: Vec<_> = (0..COUNT).map(|i| (i as u8, SIZE)).collect();
    assert_eq!(got, want);
    assert_eq!(c.input_held(), 0, "input kept after it was all decoded");
    server.join().expect("server");
}

#[test]
fn clients_of_one_options_share_its_config() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let url = Url::parse(&format!("ws://{addr}/")).expect("url");
    let mut opts = ClientOptions::default();
    let now = Instant::now();
    let a = Client::connect_addr(addr, &url, &opts, now).expect("connect");
    let b = Client::connect_addr(addr, &url, &opts.clone(), now).expect("connect");
    assert!(Arc::ptr_eq(&a.config, &b.config));
    opts.config.max_message_size = 1000;
    let c = Client::connect_addr(addr, &url, &opts, now).expect("connect");
    assert_eq!(c.config.max_message_size, 1000, "a changed config is used");
    assert!(!Arc::ptr_eq(&a.config, &c.config));
    assert_eq!(a.config.max_message_size, 16 << 20);
}
