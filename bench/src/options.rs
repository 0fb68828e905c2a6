//! What one run does: the mode and the options `wsloop bench` fills from
//! its flags.

#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

/// What the load generator does with its connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Keep `pipeline` messages in flight per connection; count echoes.
    Echo,
    /// One message in flight per connection; measure round trips.
    Latency,
    /// Open connections (handshakes per second), hold them, close them.
    Connect,
    /// Members of a `wsloop serve --app chat` server: join rooms, publish
    /// on a schedule, check every delivery's room sequence number and time
    /// publish to delivery.
    Chat,
}

impl Mode {
    /// The mode's name as `--mode` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Latency => "latency",
            Mode::Connect => "connect",
            Mode::Chat => "chat",
        }
    }
}

/// One run of the load generator (`wsloop bench` fills it from its flags).
pub struct Options {
    /// The servers (at least one, all ws:// or all wss://): connection `g`
    /// goes to `urls[g % len]`; in chat mode, where connection `g` is in
    /// room `g % rooms`, to `urls[(g / rooms) % len]`, so each room's
    /// members take the servers in turn and a chat run can publish on one
    /// server and time the delivery on another.
    pub urls: Vec<String>,
    pub mode: Mode,
    pub conns: usize,
    pub pipeline: usize,
    pub size: usize,
    pub text: bool,
    /// Offer permessage-deflate (`--deflate`).
    pub deflate: bool,
    /// Repetitive payloads (`--compressible`).
    pub compressible: bool,
    pub duration: Duration,
    pub warmup: Duration,
    pub hold: Duration,
    pub threads: usize,
    pub max_connecting: usize,
    pub connect_timeout: Duration,
    pub server_pid: Option<u32>,
    pub json: bool,
    /// Open loop (`--rate`): messages a second in total over all
    /// connections, each with its own scheduled send time; chat mode's
    /// publishes a second. `None`: closed loop (echo, latency).
    pub rate: Option<u64>,
    /// Chat mode: rooms the members are spread over (`--rooms`).
    pub rooms: usize,
    /// Extra upgrade request headers (`--header`), already checked.
    pub headers: Vec<(String, String)>,
    /// The upgrade request's `Origin` (`--origin`).
    pub origin: Option<String>,
    /// Subprotocols to offer (`--protocol`); the server must pick one.
    pub protocols: Vec<String>,
    /// A progress line every second on stderr, terminal or not
    /// (`--progress`).
    pub progress: bool,
    /// The TLS client configuration for a wss:// URL.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub tls: TlsSetting,
}

/// A wss:// URL's client configuration (`--ca`, `--insecure` or the
/// bundled roots).
#[cfg(feature = "tls")]
pub type TlsSetting = Option<Arc<rustls::ClientConfig>>;
/// Without the `tls` feature there is nothing to hold.
#[cfg(not(feature = "tls"))]
pub type TlsSetting = Option<std::convert::Infallible>;

#[cfg(test)]
impl Options {
    /// Echo mode against one unreachable server, for unit tests.
    pub(crate) fn for_test() -> Options {
        Options {
            urls: vec!["ws://127.0.0.1:9/".into()],
            mode: Mode::Echo,
            conns: 1,
            pipeline: 1,
            size: 8,
            text: false,
            deflate: false,
            compressible: false,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            hold: Duration::ZERO,
            threads: 1,
            max_connecting: 1,
            connect_timeout: Duration::from_secs(1),
            server_pid: None,
            json: false,
            rate: None,
            rooms: 1,
            headers: Vec::new(),
            origin: None,
            protocols: Vec::new(),
            progress: false,
            tls: None,
        }
    }
}
