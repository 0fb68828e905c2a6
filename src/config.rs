//! Limits and timeouts. Defaults are safe for a server on the public
//! internet; `validate()` checks a changed config.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::close::CloseCode;
use crate::error::ConfigError;
use crate::extension::DeflateConfig;

/// What to do when a send would push a connection's write queue past
/// [`Config::write_buffer_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Fail the connection with this close code (1008 or 1013 are usual).
    Close(CloseCode),
    /// Drop the message for this connection and keep the connection.
    Drop,
}

/// What a server does with a message over a connection's [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateAction {
    /// Close the connection with 1008 and a reason naming the limit.
    Close,
    /// Drop the message; the connection stays open.
    Drop,
}

/// A per-connection token bucket on received messages: at most
/// `messages_per_sec` messages and `bytes_per_sec` payload bytes per second
/// on average, with bursts up to `message_burst` and `byte_burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained messages per second.
    pub messages_per_sec: f64,
    /// Most messages at once.
    pub message_burst: f64,
    /// Sustained payload bytes per second.
    pub bytes_per_sec: f64,
    /// Most payload bytes at once.
    pub byte_burst: f64,
    /// What happens past the limit.
    pub action: RateAction,
}

impl RateLimit {
    /// A limit with bursts of one second's worth, closing on excess.
    pub fn new(messages_per_sec: f64, bytes_per_sec: f64) -> Self {
        RateLimit {
            messages_per_sec,
            message_burst: messages_per_sec.max(1.0),
            bytes_per_sec,
            byte_burst: bytes_per_sec.max(1.0),
            action: RateAction::Close,
        }
    }
}

/// A proxy whose `X-Forwarded-For` a server believes: one address, or a
/// range in CIDR notation (`10.0.0.0/8`, `fd00::/8`). See
/// [`Config::trusted_proxies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    net: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    /// Exactly this address.
    pub fn addr(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        TrustedProxy { net: addr, prefix }
    }

    /// True if `ip` is this address or in this range (an IPv4 address
    /// written as IPv6, `::ffff:a.b.c.d`, counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
            match prefix as u32 {
                0 => 0,
                p => bits >> (width - p),
            }
        }
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n) as u128, 32, self.prefix)
                    == masked(u32::from(a) as u128, 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl FromStr for TrustedProxy {
    type Err = String;

    /// `ADDR` or `ADDR/PREFIX`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not an IP address or a CIDR range such as 10.0.0.0/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = TrustedProxy::addr(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let Some(p) = prefix else {
            return Ok(addr);
        };
        match p.parse::<u8>() {
            Ok(p) if p <= addr.prefix => Ok(TrustedProxy {
                net: addr.net,
                prefix: p,
            }),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Configuration shared by every connection of a server or client. Share it
/// as `Arc<Config>`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted. Default 16 MiB.
    pub max_frame_size: usize,
    /// Largest message (sum of its fragments) accepted, and largest message
    /// sent. Default 16 MiB.
    pub max_message_size: usize,
    /// Most frames one message may arrive in: guards against floods of tiny
    /// fragments. Default 131072 (Autobahn 9.3.1 sends 65536).
    pub max_fragments: usize,
    /// Largest opening handshake (request or response head). Default 8 KiB.
    pub max_handshake_bytes: usize,
    /// Most header fields in the handshake. Default 64.
    pub max_headers: usize,
    /// Time allowed for the opening handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Close a connection that has received nothing for this long.
    /// Default 300 s; `None` disables.
    pub idle_timeout: Option<Duration>,
    /// Send a ping after this long without receiving anything. Default 30 s;
    /// `None` disables.
    pub ping_interval: Option<Duration>,
    /// Drop a connection whose pong is this late. Default 20 s.
    pub pong_timeout: Duration,
    /// Time allowed for the closing handshake and for the peer to close TCP
    /// after it. Default 5 s.
    pub close_timeout: Duration,
    /// Above this many queued bytes a connection is not read from and sends
    /// report it is full. Default 1 MiB.
    pub write_buffer_high: usize,
    /// Below this many queued bytes reading resumes and the application is
    /// told (`on_drain`). Default 256 KiB.
    pub write_buffer_low: usize,
    /// A send that would queue more than this applies `overflow`.
    /// A message is always accepted into an empty queue. Default 32 MiB.
    pub write_buffer_limit: usize,
    /// What to do past `write_buffer_limit`. Default close with 1008.
    pub overflow: OverflowPolicy,
    /// Most open connections a server holds; above it new connections get
    /// HTTP 503. Default `None` (the open-file limit applies).
    pub max_connections: Option<usize>,
    /// How long a graceful shutdown waits for close replies. Default 25 s:
    /// inside the 30 s that platforms such as Heroku allow between SIGTERM
    /// and SIGKILL.
    pub shutdown_timeout: Duration,
    /// Size of the loop-wide read buffer. Default 256 KiB.
    pub read_buffer_size: usize,
    /// Most requests from other threads (a server's
    /// [`Handle`](crate::server::Handle)) waiting for the event loop; past
    /// it (or `command_queue_bytes`) they are refused with
    /// [`CapacityError::CommandQueueFull`](crate::CapacityError::CommandQueueFull).
    /// Default 65536.
    pub command_queue_len: usize,
    /// Most message payload bytes in those requests. One request is always
    /// accepted into an empty queue, whatever its size. Default 64 MiB.
    pub command_queue_bytes: usize,
    /// Limit on what each peer may send (server). Default none.
    pub rate_limit: Option<RateLimit>,
    /// permessage-deflate (feature `deflate`). Default off.
    pub deflate: DeflateConfig,
    /// Proxies in front of a server (nginx, Caddy, a platform's router):
    /// for a request whose TCP peer is one of them, the client's address
    /// ([`Request::client_addr`](crate::handshake::Request::client_addr))
    /// is taken from `X-Forwarded-For`, its rightmost entry that is not
    /// itself a trusted proxy. Default empty: the header is ignored, since
    /// any client can send it.
    pub trusted_proxies: Vec<TrustedProxy>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_fragments: 1 << 17,
            max_handshake_bytes: 8 << 10,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            write_buffer_high: 1 << 20,
            write_buffer_low: 256 << 10,
            write_buffer_limit: 32 << 20,
            overflow: OverflowPolicy::Close(CloseCode::POLICY),
            max_connections: None,
            shutdown_timeout: Duration::from_secs(25),
            read_buffer_size: 256 << 10,
            command_queue_len: 1 << 16,
            command_queue_bytes: 64 << 20,
            rate_limit: None,
            deflate: DeflateConfig::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Config {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn err(field: &'static str, reason: String) -> Result<(), ConfigError> {
            Err(ConfigError { field, reason })
        }
        if self.max_frame_size == 0 {
            return err("max_frame_size", "must be at least 1".into());
        }
        if self.max_message_size == 0 {
            return err("max_message_size", "must be at least 1".into());
        }
        if self.max_fragments == 0 {
            return err("max_fragments", "must be at least 1".into());
        }
        if self.max_handshake_bytes < 256 {
            return err(
                "max_handshake_bytes",
                format!("{} is below the minimum 256", self.max_handshake_bytes),
            );
        }
        if self.max_headers < 8 {
            return err(
                "max_headers",
                format!("{} is below the minimum 8", self.max_headers),
            );
        }
        if self.write_buffer_low > self.write_buffer_high {
            return err(
                "write_buffer_low",
                format!(
                    "{} is above write_buffer_high {}",
                    self.write_buffer_low, self.write_buffer_high
                ),
            );
        }
        if self.write_buffer_high > self.write_buffer_limit {
            return err(
                "write_buffer_high",
                format!(
                    "{} is above write_buffer_limit {}",
                    self.write_buffer_high, self.write_buffer_limit
                ),
            );
        }
        if self.read_buffer_size < 4096 {
            return err(
                "read_buffer_size",
                format!("{} is below the minimum 4096", self.read_buffer_size),
            );
        }
        if self.command_queue_len == 0 {
            return err("command_queue_len", "must be at least 1".into());
        }
        if self.command_queue_bytes == 0 {
            return err("command_queue_bytes", "must be at least 1".into());
        }
        if self.deflate.enabled && !cfg!(feature = "deflate") {
            return err("deflate", "this build lacks the `deflate` feature".into());
        }
        for (field, bits) in [
            (
                "deflate.server_max_window_bits",
                self.deflate.server_max_window_bits,
            ),
            (
                "deflate.client_max_window_bits",
                self.deflate.client_max_window_bits,
            ),
        ] {
            if !(9..=15).contains(&bits) {
                return err(field, format!("{bits} is outside 9..=15"));
            }
        }
        if self.deflate.level > 9 {
            return err(
                "deflate.level",
                format!("{} is above 9", self.deflate.level),
            );
        }
        if let Some(r) = &self.rate_limit {
            for (field, v) in [
                ("rate_limit.messages_per_sec", r.messages_per_sec),
                ("rate_limit.message_burst", r.message_burst),
                ("rate_limit.bytes_per_sec", r.bytes_per_sec),
                ("rate_limit.byte_burst", r.byte_burst),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return err(field, format!("{v} must be a number above zero"));
                }
            }
        }
        if let OverflowPolicy::Close(code) = self.overflow {
            if !code.is_valid_on_wire() {
                return err("overflow", format!("close code {code} cannot be sent"));
            }
        }
        for (field, d) in [
            ("handshake_timeout", Some(self.handshake_timeout)),
            ("close_timeout", Some(self.close_timeout)),
            ("pong_timeout", Some(self.pong_timeout)),
            ("idle_timeout", self.idle_timeout),
            ("ping_interval", self.ping_interval),
        ] {
            if d == Some(Duration::ZERO) {
                return err(field, "must be above zero".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn validate_names_field_and_value() {
        let c = Config {
            write_buffer_low: 10 << 20,
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "write_buffer_low");
        assert!(e.reason.contains("10485760"), "{e}");
        let c = Config {
            idle_timeout: Some(Duration::ZERO),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "idle_timeout");
        let c = Config {
            overflow: OverflowPolicy::Close(CloseCode(1005)),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "overflow");
    }

    #[test]
    fn trusted_proxy_addresses_and_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let one: TrustedProxy = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(one.contains(ip("::ffff:127.0.0.1")), "IPv4 written as IPv6");
        assert!(!one.contains(ip("127.0.0.2")));
        let net: TrustedProxy = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.3.4")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let all: TrustedProxy = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let v6: TrustedProxy = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert_eq!(net.to_string(), "10.0.0.0/8");
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "host", "1.2.3.4/x"] {
            assert!(bad.parse::<TrustedProxy>().is_err(), "{bad}");
        }
    }
}
