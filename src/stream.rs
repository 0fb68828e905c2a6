//! The transport under a connection: a mio `TcpStream`, optionally wrapped
//! in TLS (feature `tls`).
//!
//! With TLS, `read` returns decrypted bytes and `write` hands plaintext to
//! rustls only while it holds no records the socket refused, and then at
//! most [`TLS_PLAINTEXT_LIMIT`] bytes (plus a rest of less than one
//! record): otherwise `write` reports `WouldBlock` and the bytes stay in
//! the connection's own write queue, where backpressure sees them. The TLS
//! layer hides no unbounded buffer.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

/// Most plaintext handed to rustls in one `write`, unless what is left
/// past it is less than one record (16 KiB of plaintext), which goes
/// along: a write of 64 KiB and 16 bytes is one `writev` of five records,
/// not a second `writev` (and a second receive at the peer) for 16 bytes.
pub const TLS_PLAINTEXT_LIMIT: usize = 64 * 1024;

/// Most plaintext in one TLS record (2^14, RFC 8446 §5.1).
#[cfg(feature = "tls")]
const TLS_RECORD_PLAINTEXT: usize = 16 * 1024;

/// A TLS failure carried inside an `io::Error`, so that converting it
/// gives [`Error::Tls`](crate::Error::Tls) rather than a plain I/O error.
#[derive(Debug)]
pub(crate) struct TlsFailure(pub(crate) String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// A TCP stream, plain or TLS.
#[derive(Debug)]
pub struct Stream {
    /// The socket (register this with mio).
    pub sock: TcpStream,
    #[cfg(feature = "tls")]
    tls: Option<Box<Tls>>,
}

/// rustls' state plus what `tls_read` took from the socket and rustls did
/// not accept yet.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct Tls {
    conn: rustls::Connection,
    /// Ciphertext received but not handed to rustls because the caller's
    /// buffer was full. Empty and unallocated almost always; never longer
    /// than the caller's room (at least 4 KiB) nor than one TLS record,
    /// see `recv_len`.
    held: Vec<u8>,
    /// close_notify queued, or a fatal alert sent: nothing more to say.
    done: bool,
    /// The last read ended because the socket had no more (a short or
    /// `WouldBlock` receive), with everything received handed out.
    drained: bool,
}

impl Stream {
    /// A plain TCP stream.
    pub fn plain(sock: TcpStream) -> Self {
        Stream {
            sock,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// A TLS stream (server or client side).
    #[cfg(feature = "tls")]
    pub fn tls(sock: TcpStream, mut conn: rustls::Connection) -> Self {
        // `write` keeps below this itself; rustls' own limit backs it up
        // (and bounds plaintext written before the handshake completes).
        conn.set_buffer_limit(Some(TLS_PLAINTEXT_LIMIT + TLS_RECORD_PLAINTEXT));
        Stream {
            sock,
            tls: Some(Box::new(Tls {
                conn,
                held: Vec::new(),
                done: false,
                drained: false,
            })),
        }
    }

    /// True for a TLS stream.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// Writes pending TLS records to the socket. `Ok` when all went out or
    /// the socket is full.
    pub fn flush_records(&mut self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            return flush_tls(&mut tls.conn, &mut self.sock);
        }
        Ok(())
    }

    /// After a read that returned less than it was asked for: true when
    /// nothing received waits in user space, so the next bytes come with
    /// a new readiness event and reading again now would only give
    /// `WouldBlock` (always so for plain TCP). Over TLS it is false when
    /// ciphertext or plaintext is still buffered, or after the peer's
    /// close_notify (its end is reported by the next read).
    pub fn drained(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref() {
            return tls.drained;
        }
        true
    }

    /// Bytes the TLS layer allocated for received ciphertext rustls has not
    /// taken yet (`held`'s capacity); 0 for plain TCP. For tests.
    #[doc(hidden)]
    pub fn tls_held(&self) -> usize {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref() {
            return tls.held.capacity();
        }
        0
    }

    /// True while TLS records wait for the socket.
    #[inline]
    pub fn has_pending(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref() {
            return tls.conn.wants_write();
        }
        false
    }

    /// Ends our sending side: TLS close_notify (best effort), then FIN.
    pub fn shutdown_write(&mut self) {
        self.close_notify();
        let _ = self.sock.shutdown(Shutdown::Write);
    }

    /// Closes both directions: TLS close_notify (best effort), then FIN.
    pub fn shutdown(&mut self) {
        self.close_notify();
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// Without close_notify before the FIN, a TLS peer cannot tell the end
    /// of the stream from a truncation attack (RFC 8446 §6.1), and strict
    /// ones report an error.
    fn close_notify(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            if !tls.done {
                tls.done = true;
                tls.conn.send_close_notify();
                let _ = flush_tls(&mut tls.conn, &mut self.sock);
            }
        }
    }
}

/// A TLS stream dropped without `shutdown` (a lost peer, a timeout, the
/// server stopping) still ends with close_notify, one non-blocking try:
/// the peer then sees an orderly end rather than a possible truncation.
/// Not before the TLS handshake is done: a peer that never spoke TLS (a
/// port probe, a plain HTTP client) gets its EOF alone, as before.
#[cfg(feature = "tls")]
impl Drop for Stream {
    fn drop(&mut self) {
        if self.tls.as_ref().is_some_and(|t| !t.conn.is_handshaking()) {
            self.close_notify();
        }
    }
}

#[cfg(feature = "tls")]
fn flush_tls(tls: &mut rustls::Connection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            return tls_read(tls, &mut self.sock, buf);
        }
        self.sock.read(buf)
    }
}

/// Most ciphertext taken from the socket in one receive: the server's
/// default `read_buffer_size`, as plain TCP reads. The buffer is one per
/// thread and grows to what the callers' rooms asked for.
#[cfg(feature = "tls")]
const TLS_RECV_MAX: usize = 256 * 1024;

/// Least ciphertext asked for in one receive, however little room the
/// caller has: the server's smallest `read_buffer_size`, and what rustls'
/// own `read_tls` takes per call, so a small room (the tail of a frame's
/// payload) costs no more receives than rustls alone would.
#[cfg(feature = "tls")]
const TLS_RECV_MIN: usize = 4096;

#[cfg(feature = "tls")]
thread_local! {
    /// Ciphertext just received, before rustls takes it: one per thread,
    /// not per connection.
    static RECV: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How much to receive when the caller has `room` bytes left: no more
/// than the room (above 4 KiB), so what cannot be handed out and waits in
/// `Tls::held` while the connection is not read (paused for
/// backpressure) is at most that receive, and less than one record: the
/// plaintext of a receive exceeds it only by the partial record rustls
/// already had.
#[cfg(feature = "tls")]
fn recv_len(room: usize) -> usize {
    room.clamp(TLS_RECV_MIN, TLS_RECV_MAX)
}

/// Fills `buf` with the plaintext of what the socket has. rustls' own
/// `read_tls` receives at most 4 KiB per system call; here one receive
/// of up to 256 KiB (no more than `buf` can take, but at least 4 KiB)
/// goes to a per-thread buffer, rustls is fed from it in memory, and the
/// plaintext is copied out as it is decrypted. Ciphertext that does not
/// fit waits in `held` for the next call, before the socket is read again.
#[cfg(feature = "tls")]
fn tls_read(t: &mut Tls, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let res = RECV.with(|cell| {
        let mut scratch = cell.borrow_mut();
        // Receives ask for no more than this, and `held` came from one.
        let need = recv_len(buf.len()).max(t.held.len());
        if scratch.len() < need {
            scratch.resize(need, 0);
        }
        tls_read_with(t, sock, buf, &mut scratch)
    });
    // An idle connection keeps no allocation of its own.
    if t.held.is_empty() && t.held.capacity() != 0 {
        t.held = Vec::new();
    }
    res
}

#[cfg(feature = "tls")]
fn tls_read_with(
    t: &mut Tls,
    sock: &mut TcpStream,
    buf: &mut [u8],
    scratch: &mut [u8],
) -> io::Result<usize> {
    let mut filled = 0;
    // Ciphertext not yet given to rustls: `scratch[pos..end]`.
    let (mut pos, mut end) = (0, 0);
    // Set once the socket said WouldBlock (`Some(false)`) or EOF (`Some(true)`).
    let mut stop: Option<bool> = None;
    let mut peer_closed = false;
    t.drained = false;
    loop {
        match t.conn.reader().read(&mut buf[filled..]) {
            // close_notify received (or `buf` empty): what came first, then 0.
            Ok(0) => return Ok(filled),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The TCP FIN without close_notify: the end, as `read_tls` says.
            Err(e) if stop == Some(true) && e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(filled)
            }
            // Handed out next time, after the bytes that came first.
            Err(_) if filled > 0 => return Ok(filled),
            Err(e) => return Err(e),
        }
        if filled == buf.len() {
            // Keep the rest for the next call (it comes before the socket's),
            // in the allocation the last rest used if it fits.
            let rest = &scratch[pos..end];
            t.held.reserve_exact(rest.len());
            t.held.extend_from_slice(rest);
            return Ok(filled);
        }
        if pos == end {
            if !t.held.is_empty() {
                let n = t.held.len();
                scratch[..n].copy_from_slice(&t.held);
                t.held.clear();
                (pos, end) = (0, n);
            } else {
                match stop {
                    Some(true) => return Ok(filled),
                    Some(false) if filled > 0 => {
                        t.drained = !peer_closed;
                        return Ok(filled);
                    }
                    Some(false) => return Err(io::ErrorKind::WouldBlock.into()),
                    None => {}
                }
                let want = recv_len(buf.len() - filled);
                match sock.read(&mut scratch[..want]) {
                    Ok(0) => {
                        stop = Some(true);
                        // Tells rustls the stream ended (close_notify or not).
                        let _ = t.conn.read_tls(&mut io::empty());
                    }
                    Ok(n) => {
                        (pos, end) = (0, n);
                        // A short read emptied the socket.
                        if n < want {
                            stop = Some(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => stop = Some(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if pos < end {
            let mut input = &scratch[pos..end];
            match t.conn.read_tls(&mut input) {
                // rustls takes no more (close_notify was received): the
                // rest means nothing.
                Ok(0) => pos = end,
                Ok(n) => pos += n,
                Err(e) => return Err(e),
            }
        }
        match t.conn.process_new_packets() {
            Ok(state) => peer_closed |= state.peer_has_closed(),
            Err(err) => {
                // Send the alert, then report why (as `Error::Tls` once
                // converted, see `TlsFailure`). Plaintext of earlier records
                // not handed out yet goes with the connection.
                t.done = true;
                let _ = t.conn.write_tls(sock);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    TlsFailure(err.to_string()),
                ));
            }
        }
        // Handshake messages to answer go out at once.
        if t.conn.wants_write() {
            let _ = t.conn.write_tls(sock);
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return self.tls_write(&[io::IoSlice::new(buf)]);
        }
        self.sock.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return self.tls_write(bufs);
        }
        self.sock.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records()
    }
}

/// Slices handed to rustls at once: what `WriteQueue` offers per write.
#[cfg(feature = "tls")]
const TLS_WRITE_IOV: usize = crate::buffer::MAX_IOV;

#[cfg(feature = "tls")]
impl Stream {
    /// Sends the records rustls holds; if the socket took them all, hands
    /// rustls the slices (at most [`TLS_PLAINTEXT_LIMIT`] bytes, or all of
    /// them if the rest is under one record) in one call, so records run
    /// across slices (a frame header and its payload share one), and
    /// writes the records at once. While records wait for the socket,
    /// nothing more is taken: the bytes stay in the caller's queue.
    fn tls_write(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.flush_records()?;
        let conn = &mut self.tls.as_mut().expect("a TLS stream").conn;
        if conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let total: usize = bufs.iter().take(TLS_WRITE_IOV).map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let take = if total.saturating_sub(TLS_PLAINTEXT_LIMIT) < TLS_RECORD_PLAINTEXT {
            total
        } else {
            TLS_PLAINTEXT_LIMIT
        };
        let mut iov = [io::IoSlice::new(&[]); TLS_WRITE_IOV];
        let (mut cnt, mut left) = (0, take);
        for b in bufs.iter().take(TLS_WRITE_IOV) {
            if left == 0 {
                break;
            }
            let n = b.len().min(left);
            iov[cnt] = io::IoSlice::new(&b[..n]);
            cnt += 1;
            left -= n;
        }
        let n = conn.writer().write_vectored(&iov[..cnt])?;
        if n == 0 {
            // rustls holds its limit (plaintext before the handshake is done).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush_records()?;
        Ok(n)
    }
}
