//! Raw TCP: connects with timeouts, reads to EOF, half closes and resets,
//! free ports.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Default read timeout of sockets made here and of a `TestClient`.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a TCP connection with a timeout.
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A loopback port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Appends what arrives on `s` to `out` until EOF (true) or `wait`
/// passes (false).
pub fn read_until_eof(s: &mut TcpStream, wait: Duration, out: &mut Vec<u8>) -> bool {
    let start = Instant::now();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Shuts down our write side (half close), as a peer that is done sending.
pub fn half_close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}

/// Closes `s` so that Linux sends a RST instead of a FIN: a socket closed
/// with unread bytes in its receive buffer is reset (RFC 2525 §2.17).
/// Panics if nothing is waiting to be read (the close would be a FIN).
pub fn close_with_rst(s: TcpStream) {
    let mut b = [0u8; 1];
    s.set_nonblocking(true).unwrap();
    let n = s.peek(&mut b).unwrap_or(0);
    assert!(n > 0, "close_with_rst needs unread data (else it is a FIN)");
    drop(s);
}

/// Writes `request` and returns the socket once the server's first reply
/// bytes are waiting unread in it (ready for [`close_with_rst`]).
pub fn connect_and_wait_reply(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut s = tcp_connect(addr);
    s.write_all(request).expect("write request");
    let mut b = [0u8; 1];
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let n = s.peek(&mut b).expect("waiting for the server's reply");
    assert!(n > 0, "EOF instead of a reply");
    s
}
