//! The client: the same sans-IO [`Connection`](crate::Connection) driven
//! for one outbound socket.
//!
//! - [`Client`] is non-blocking: register it in your own mio `Poll`, call
//!   [`Client::handle_event`] (or [`Client::handle_io`]) on its events
//!   and [`Client::handle_timeout`] at [`Client::poll_timeout`], take
//!   events with [`Client::next_event`].
//! - [`WebSocket`] is the blocking convenience API: [`connect`], then
//!   `send_*`, `recv`, `close`, each bounded by timeouts. A send waits
//!   while the server reads more slowly than we write.
//! - [`Reconnecting`] reconnects after an unexpected close or network error
//!   with exponential backoff and jitter ([`Backoff`]); messages accepted
//!   but not yet written when a connection is lost go out on the next one.

mod backoff;
mod blocking;
mod nonblocking;
mod options;
mod readbuf;
mod reconnect;
mod upgrade;
mod url;

#[cfg(test)]
mod event_tests;
#[cfg(test)]
mod idle_tests;
#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod send_tests;
#[cfg(test)]
mod upgrade_tests;

pub use backoff::Backoff;
pub use blocking::{connect, connect_with, WebSocket, DEFAULT_WRITE_TIMEOUT};
pub use nonblocking::Client;
pub use options::ClientOptions;
pub use reconnect::{Reconnecting, DEFAULT_MAX_UNSENT, DEFAULT_MAX_UNSENT_BYTES};
pub use url::Url;
