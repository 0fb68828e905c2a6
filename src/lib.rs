//! # wsloop
//!
//! An RFC 6455 WebSocket server and client, written by hand on mio: one
//! single-threaded event loop, no async runtime. The default build depends
//! on mio, httparse, sha1, base64, slab, log and getrandom only; the
//! `deflate` feature adds permessage-deflate (RFC 7692) and `tls` adds
//! wss:// (rustls).
//!
//! ```text
//!  socket bytes ──► server::Server / client     mio loop: sockets, slab, timers
//!                     │  one read buffer per loop; Handler callbacks run here
//!                     ▼
//!                   protocol::Connection        sans-IO state machine
//!                     │  poll_event(bytes) → Event; send(msg) → bytes queued → write_to(socket)
//!                     ▼
//!                   frame, mask, utf8, close,   pure functions over slices
//!                   handshake, extension
//! ```
//!
//! Complete frames are unmasked in place in the loop's read buffer and
//! handed to the application as borrowed slices; only incomplete frames and
//! fragmented messages are copied. Every limit (frame, message, fragments,
//! handshake size and time, write queue, idle, close) has a safe default in
//! [`Config`].
//!
//! The library's only `unsafe` is in `src/ascii.rs`: received text found
//! to be all ASCII (by the unmasking pass, or for a client by a read-only
//! test) becomes a `&str` without a second check (a 16 KiB text echo
//! costs the server 8,335 instructions instead of 14,252, 7,030 for
//! binary; docs/PERFORMANCE.md). All other code is under
//! `#![deny(unsafe_code)]`.
//!
//! An echo server: a [`server::Handler`] whose callbacks get a
//! [`server::Ctx`] to send with.
//!
//! ```no_run
//! use wsloop::server::{ConnId, Ctx, Handler, Server};
//! use wsloop::{Config, Message};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
//!         let _ = ctx.send(id, msg);
//!     }
//! }
//!
//! fn main() -> Result<(), wsloop::Error> {
//!     Server::bind("127.0.0.1:9001", Config::default(), Echo)?.run()?;
//!     Ok(())
//! }
//! ```
//!
//! A client, with the blocking [`client::WebSocket`]:
//!
//! ```no_run
//! use wsloop::{CloseCode, Message};
//!
//! fn main() -> Result<(), wsloop::Error> {
//!     let mut ws = wsloop::client::connect("ws://127.0.0.1:9001/")?;
//!     ws.send_text("hello")?;
//!     if let Message::Text(reply) = ws.recv_message()? {
//!         println!("{reply}");
//!     }
//!     ws.close(CloseCode::NORMAL, "bye")?;
//!     Ok(())
//! }
//! ```
// Only ascii.rs allows it (see above).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod ascii;
pub mod buffer;
pub mod client;
pub mod close;
pub mod config;
mod deflate;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod protocol;
pub mod rand;
mod role;
pub mod server;
pub mod stream;
#[cfg(feature = "tls")]
pub mod tls;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::{Config, OverflowPolicy, RateAction, RateLimit};
pub use error::{ApiError, CapacityError, ConfigError, Error, HandshakeError, ProtocolError};
pub use extension::{DeflateConfig, DeflateParams};
pub use protocol::{CloseInfo, Connection, Event, Message, SendStatus};
pub use role::Role;

/// Small helpers for unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// xorshift64*: deterministic, good enough to pick test inputs.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }
}
