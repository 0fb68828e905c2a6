//! `raw-echo`: the physical reference, the least work a WebSocket echo can
//! do. One mio event loop on one thread, like wsloop, doing only this:
//!
//! 1. Upgrade: read until `\r\n\r\n` (at most 8 KiB), take the
//!    `Sec-WebSocket-Key` header (nothing else is checked) and answer
//!    `101 Switching Protocols` with its `Sec-WebSocket-Accept`
//!    (SHA-1 + base64).
//! 2. Then every byte read is written back, rewritten as it is copied from
//!    the loop's read buffer to its write buffer: each frame header loses its
//!    mask bit and its 4-byte masking key, and the payload is unmasked with
//!    a 64-bit-wide XOR. This is what turns client frames into valid server
//!    frames, so a strict client accepts them; it is the minimal WebSocket
//!    work. No message is assembled, nothing is validated (no UTF-8, opcode,
//!    length, RSV or control-frame checks), frames keep their boundaries,
//!    fragments and opcodes: a ping is echoed as a ping, a close frame as a
//!    close frame (which is a valid close reply), after which the server
//!    closes the TCP connection.
//!
//! Per connection it keeps the socket, a partial header (at most 14 bytes)
//! and, only while the socket does not take all it is given, the unwritten
//! bytes; while those exist the connection is not read (backpressure).
//! TCP_NODELAY is set on every accepted socket.

#[path = "../args.rs"]
mod args;

use std::io::{self, Read, Write};

use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use sha1::{Digest, Sha1};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
const READ_BUF: usize = 256 * 1024;
const MAX_HANDSHAKE: usize = 8 * 1024;
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Rewrites a stream of client frames into server frames, a piece at a time.
#[derive(Default)]
struct Deframer {
    hdr: [u8; 14],
    hdr_len: usize,
    key: [u8; 4],
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// Position within the current payload (the mask phase).
    offset: usize,
    /// A close frame was seen: close the connection once it is written.
    close_seen: bool,
}

/// Header length announced by the second header byte.
fn header_len(b1: u8) -> usize {
    2 + match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    } + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// `dst = src ^ key` (key phase `offset`), 8 bytes at a time.
fn unmask_into(src: &[u8], dst: &mut Vec<u8>, key: [u8; 4], offset: usize) {
    let r = offset & 3;
    let k = [key[r], key[(r + 1) & 3], key[(r + 2) & 3], key[(r + 3) & 3]];
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let start = dst.len();
    dst.resize(start + src.len(), 0);
    let out = &mut dst[start..];
    let mut s = src.chunks_exact(8);
    let mut d = out.chunks_exact_mut(8);
    for (s8, d8) in (&mut s).zip(&mut d) {
        let v = u64::from_ne_bytes(s8.try_into().unwrap()) ^ word;
        d8.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, (sb, db)) in s.remainder().iter().zip(d.into_remainder()).enumerate() {
        *db = sb ^ k[i & 3];
    }
}

impl Deframer {
    /// Appends the server-side rewrite of `input` to `out`.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(input.len() as u64)) as usize;
                unmask_into(&input[..n], out, self.key, self.offset);
                input = &input[n..];
                self.remaining -= n as u64;
                self.offset += n;
                continue;
            }
            // Gather a header (it may be cut anywhere by the end of a read).
            let need = if self.hdr_len < 2 {
                2
            } else {
                header_len(self.hdr[1])
            };
            let take = (need - self.hdr_len).min(input.len());
            self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&input[..take]);
            self.hdr_len += take;
            input = &input[take..];
            if self.hdr_len < need || (need == 2 && header_len(self.hdr[1]) > 2) {
                continue;
            }
            let masked = self.hdr[1] & 0x80 != 0;
            let len_end = need - if masked { 4 } else { 0 };
            self.remaining = match self.hdr[1] & 0x7f {
                126 => u16::from_be_bytes([self.hdr[2], self.hdr[3]]) as u64,
                127 => u64::from_be_bytes(self.hdr[2..10].try_into().unwrap()),
                n => n as u64,
            };
            self.key = if masked {
                self.hdr[len_end..need].try_into().unwrap()
            } else {
                [0; 4]
            };
            if self.hdr[0] & 0x0f == 0x8 {
                self.close_seen = true;
            }
            out.push(self.hdr[0]);
            out.push(self.hdr[1] & 0x7f);
            out.extend_from_slice(&self.hdr[2..len_end]);
            self.hdr_len = 0;
            self.offset = 0;
        }
    }
}

struct Conn {
    sock: TcpStream,
    /// The request head while the upgrade is in progress.
    handshake: Option<Vec<u8>>,
    deframer: Deframer,
    /// Bytes the socket did not take yet. Empty (no allocation) when idle.
    pending: Vec<u8>,
}

/// The 101 response for a request head, or None if it has no key.
fn upgrade_response(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let key = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim())
    })?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    Some(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes(),
    )
}

enum Step {
    Open,
    Close,
}

/// Writes `buf` (after anything pending); what the socket does not take is
/// kept in `pending`.
fn write_out(conn: &mut Conn, buf: &[u8]) -> io::Result<()> {
    let mut written = 0;
    if conn.pending.is_empty() {
        while written < buf.len() {
            match conn.sock.write(&buf[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    conn.pending.extend_from_slice(&buf[written..]);
    Ok(())
}

/// Writes what is pending. Ok(true) when all of it went out.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    let mut written = 0;
    while written < conn.pending.len() {
        match conn.sock.write(&conn.pending[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.pending.drain(..written);
    if conn.pending.is_empty() {
        // Give back the memory of a big message once it is out.
        if conn.pending.capacity() > 64 * 1024 {
            conn.pending = Vec::new();
        }
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Reads until the socket is drained (edge-triggered) or stops taking
/// writes, echoing as it goes.
fn drive(conn: &mut Conn, rbuf: &mut [u8], wbuf: &mut Vec<u8>) -> io::Result<Step> {
    if !flush(conn)? {
        return Ok(Step::Open);
    }
    if conn.deframer.close_seen {
        return Ok(Step::Close);
    }
    loop {
        let n = match conn.sock.read(rbuf) {
            Ok(0) => return Ok(Step::Close),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Open),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        wbuf.clear();
        let mut data = &rbuf[..n];
        if let Some(head) = conn.handshake.as_mut() {
            let from = head.len().saturating_sub(3);
            head.extend_from_slice(data);
            let Some(end) = head[from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| from + p + 4)
            else {
                if head.len() > MAX_HANDSHAKE {
                    return Ok(Step::Close);
                }
                continue;
            };
            let Some(resp) = upgrade_response(&head[..end]) else {
                let _ = conn.sock.write(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return Ok(Step::Close);
            };
            wbuf.extend_from_slice(&resp);
            let consumed_before = head.len() - n;
            data = &data[end - consumed_before..];
            conn.handshake = None;
        }
        conn.deframer.feed(data, wbuf);
        write_out(conn, wbuf)?;
        if !conn.pending.is_empty() {
            // The socket is full: stop reading until it drains.
            return Ok(Step::Open);
        }
        if conn.deframer.close_seen {
            return Ok(Step::Close);
        }
    }
}

fn main() -> io::Result<()> {
    let addr = args::addr("raw-echo");
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("raw-echo: listening on {addr} (mio, one thread)");
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; READ_BUF];
    let mut wbuf: Vec<u8> = Vec::with_capacity(READ_BUF + READ_BUF / 2);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut sock, _)) => {
                            let _ = sock.set_nodelay(true);
                            let entry = conns.vacant_entry();
                            let token = Token(entry.key());
                            poll.registry().register(
                                &mut sock,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            entry.insert(Conn {
                                sock,
                                handshake: Some(Vec::new()),
                                deframer: Deframer::default(),
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // EMFILE and friends: drop this round, keep serving.
                            eprintln!("raw-echo: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let step = drive(conn, &mut rbuf, &mut wbuf);
            if !matches!(step, Ok(Step::Open)) {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.sock);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        f
    }

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = client_frame(opcode, payload, [0; 4]);
        f[1] &= 0x7f;
        let hl = header_len(f[1] | 0x80);
        f.drain(hl - 4..hl);
        f
    }

    #[test]
    fn rewrites_frames_cut_anywhere() {
        let payloads: Vec<Vec<u8>> = [0usize, 1, 7, 125, 126, 1000, 70_000]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 + 7) as u8).collect())
            .collect();
        let mut input = Vec::new();
        let mut want = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            input.extend(client_frame(2, p, [i as u8, 0xa5, 0x3c, 0xff]));
            want.extend(server_frame(2, p));
        }
        for cut in [1, 2, 3, 5, 13, 64, 1000, input.len()] {
            let mut d = Deframer::default();
            let mut out = Vec::new();
            for piece in input.chunks(cut) {
                d.feed(piece, &mut out);
            }
            assert_eq!(out, want, "cut {cut}");
        }
    }

    #[test]
    fn accept_key_from_rfc() {
        let resp = upgrade_response(
            b"GET /chat HTTP/1.1\r\nHost: x\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
        let resp = String::from_utf8(resp).unwrap();
        assert!(
            resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{resp}"
        );
    }
}
