//! Plain HTTP over a fresh connection: requests sent as bytes, replies read
//! to EOF and parsed.

use std::io::{Read, Write};
use std::net::SocketAddr;

use wsloop::handshake::{Head, Response, ResponseReader};

use super::net::{read_until_eof, tcp_connect, READ_TIMEOUT};

/// A plain HTTP response read to EOF.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: Response,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` as is and reads the response until the server closes.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpReply {
    let mut s = tcp_connect(addr);
    s.write_all(request).expect("write HTTP request");
    let mut raw = Vec::new();
    assert!(
        read_until_eof(&mut s, READ_TIMEOUT, &mut raw),
        "no EOF after the HTTP response; got {:?}",
        String::from_utf8_lossy(&raw)
    );
    parse_http(&raw)
}

pub fn parse_http(raw: &[u8]) -> HttpReply {
    match ResponseReader::new().feed(raw, 64 * 1024, 64) {
        Ok(Head::Complete(head, body)) => {
            if let Some(len) = head.header("content-length") {
                assert_eq!(
                    len.parse::<usize>().ok(),
                    Some(body.len()),
                    "Content-Length vs body"
                );
            }
            HttpReply {
                status: head.status,
                head,
                body,
            }
        }
        other => panic!(
            "not an HTTP response ({other:?}): {:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

/// `GET path` without an upgrade.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpReply {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
}

/// The Sec-WebSocket-Key of a request head given as text.
pub fn request_key(head: &str) -> String {
    find_request_key(head).unwrap_or_else(|| panic!("no Sec-WebSocket-Key in {head:?}"))
}

/// The Sec-WebSocket-Key of a request head given as text, if it has one.
pub fn find_request_key(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| v.trim().to_owned())
    })
}

/// Reads a request head from `s` as a server would, up to its blank line,
/// as text; `None` if the peer closed or the read failed first.
pub fn read_request_head(s: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
