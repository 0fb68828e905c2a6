//! The transport under a connection: a mio `TcpStream`, optionally wrapped
//! in TLS (feature `tls`).
//!
//! With TLS, `read` returns decrypted bytes and `write` hands plaintext to
//! rustls, which holds at most [`TLS_PLAINTEXT_LIMIT`] bytes: past that,
//! `write` reports `WouldBlock` and the bytes stay in the connection's own
//! write queue, where backpressure sees them. The TLS layer hides no
//! unbounded buffer.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

/// Most plaintext rustls may hold before `write` says `WouldBlock`.
pub const TLS_PLAINTEXT_LIMIT: usize = 64 * 1024;

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
    tls: Option<Box<rustls::Connection>>,
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
        conn.set_buffer_limit(Some(TLS_PLAINTEXT_LIMIT));
        Stream {
            sock,
            tls: Some(Box::new(conn)),
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
            while tls.wants_write() {
                match tls.write_tls(&mut self.sock) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// True while TLS records wait for the socket.
    pub fn has_pending(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref() {
            return tls.wants_write();
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
            tls.send_close_notify();
            let _ = self.flush_records();
        }
    }
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

/// rustls refuses `read_tls` while it holds more decrypted bytes than this
/// (its received-plaintext limit), so gathering stops here.
#[cfg(feature = "tls")]
const TLS_GATHER: usize = 16 * 1024;

/// Fills `buf` with as much plaintext as the socket has, not one `read_tls`
/// worth: rustls takes about 4 KiB from the socket per call, so handing
/// that out each time cost the loop one read (and one parse pass) per
/// 4 KiB. Records are taken until the socket is drained, `buf` would be
/// full or rustls holds its limit; then everything is copied out at once.
#[cfg(feature = "tls")]
fn tls_read(
    tls: &mut rustls::Connection,
    sock: &mut TcpStream,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut filled = 0;
    // Set once the socket said WouldBlock (`Some(false)`) or EOF (`Some(true)`).
    let mut stop: Option<bool> = None;
    loop {
        match tls.reader().read(&mut buf[filled..]) {
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
            return Ok(filled);
        }
        match stop {
            Some(true) => return Ok(filled),
            Some(false) if filled > 0 => return Ok(filled),
            Some(false) => return Err(io::ErrorKind::WouldBlock.into()),
            None => {}
        }
        let want = (buf.len() - filled).min(TLS_GATHER);
        loop {
            match tls.read_tls(sock) {
                Ok(0) => {
                    stop = Some(true);
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stop = Some(false);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(err) => {
                    // Send the alert, then report why (as `Error::Tls` once
                    // converted, see `TlsFailure`). Plaintext of earlier
                    // records not handed out yet goes with the connection.
                    let _ = tls.write_tls(sock);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        TlsFailure(err.to_string()),
                    ));
                }
            };
            if state.plaintext_bytes_to_read() >= want || state.peer_has_closed() {
                break;
            }
        }
        // Handshake messages to answer go out at once.
        if tls.wants_write() {
            let _ = tls.write_tls(sock);
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            self.flush_records()?;
            let tls = self.tls.as_mut().expect("checked above");
            let n = tls.writer().write(buf)?;
            if n == 0 && !buf.is_empty() {
                // rustls holds its limit: wait for the socket to drain.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.flush_records()?;
            return Ok(n);
        }
        self.sock.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            // Hand rustls the slices (up to its limit), then write the
            // records once.
            self.flush_records()?;
            let tls = self.tls.as_mut().expect("checked above");
            // One call for all slices: rustls then cuts full-size records
            // across them (a frame header and its payload share a record)
            // where one `write` per slice made a record of each.
            let total = tls.writer().write_vectored(bufs)?;
            if total == 0 && bufs.iter().any(|b| !b.is_empty()) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.flush_records()?;
            return Ok(total);
        }
        self.sock.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records()
    }
}
