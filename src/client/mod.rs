//! The client: the same sans-IO [`Connection`](crate::Connection) driven
//! for one outbound socket.
//!
//! - [`Client`] is non-blocking: register it in your own mio `Poll`, call
//!   [`Client::handle_io`] on its events and [`Client::handle_timeout`] at
//!   [`Client::poll_timeout`], take events with [`Client::next_event`].
//! - [`WebSocket`] is the blocking convenience API: [`connect`], then
//!   `send_*`, `recv`, `close`, each bounded by timeouts.
//! - [`Reconnecting`] reconnects after an unexpected close or network error
//!   with exponential backoff and jitter ([`Backoff`]).

mod blocking;
mod nonblocking;
mod options;
mod reconnect;
mod url;

pub use blocking::{connect, connect_with, WebSocket, DEFAULT_WRITE_TIMEOUT};
pub use nonblocking::Client;
pub use options::ClientOptions;
pub use reconnect::{Backoff, Reconnecting};
pub use url::Url;
