//! Opening a client connection without blocking, as the fan-out
//! receivers do (the echo bench's connections are `wsloop::Client`s): has
//! the TCP connect finished, and the upgrade request to send once it has.

use std::io;

use mio::net::TcpStream;
use wsloop::extension::{client_offer, DeflateConfig};
use wsloop::handshake::{generate_key, ClientRequest};

/// Whether a non-blocking connect has finished (`Ok(false)`: not yet, wait
/// for the next writable event); its error if it failed.
pub(crate) fn connected(sock: &TcpStream) -> io::Result<bool> {
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    match sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// The upgrade request for `host` and `target` (offering permessage-deflate
/// when `deflate` is enabled, the subprotocols `protocols`, and the extra
/// header fields `extra`), and its bytes.
pub(crate) fn request(
    host: &str,
    target: &str,
    deflate: &DeflateConfig,
    protocols: &[String],
    extra: &[(String, String)],
) -> (ClientRequest, Vec<u8>) {
    let mut headers = extra.to_vec();
    if deflate.enabled {
        headers.push(("Sec-WebSocket-Extensions".to_owned(), client_offer(deflate)));
    }
    let req = ClientRequest {
        host: host.to_owned(),
        target: target.to_owned(),
        key: generate_key(),
        protocols: protocols.to_vec(),
        headers,
    };
    let mut out = Vec::with_capacity(256);
    req.write(&mut out);
    (req, out)
}
