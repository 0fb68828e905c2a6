//! What every thread needs, read-only: where to connect, what to send, and
//! the phases' lengths.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use wsloop::stream::Stream;
use wsloop::Config;

use crate::options::Mode;
use crate::payload::Payload;

pub(crate) struct Plan {
    pub(crate) mode: Mode,
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) target: String,
    pub(crate) pipeline: usize,
    pub(crate) payload: Payload,
    pub(crate) config: Arc<Config>,
    pub(crate) connect_timeout: Duration,
    /// Per thread.
    pub(crate) max_connecting: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) hold: Duration,
    /// Connections in the whole run (all threads).
    pub(crate) conns: u64,
    /// Open loop: messages (chat: publishes) a second over all connections.
    pub(crate) rate: Option<u64>,
    /// Chat mode: the rooms' names; member `g` joins `rooms[g % len]`.
    pub(crate) rooms: Vec<String>,
    /// Extra request headers (`--header`, `--origin`) and subprotocols
    /// offered (`--protocol`) on every upgrade.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) protocols: Vec<String>,
    /// wss://: the client configuration and the name to verify.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Plan {
    /// Open loop: when message `j` of connection `g` (global id) is due,
    /// counted from the start of the load. Connection `g` sends its `j`th
    /// message in slot `j × conns + g` of one schedule for the whole run,
    /// so the connections take turns evenly and together send `rate` a
    /// second.
    pub(crate) fn due(&self, g: u64, j: u64) -> Duration {
        let rate = self.rate.unwrap_or(1).max(1) as u128;
        let slot = j as u128 * self.conns as u128 + g as u128;
        let ns = slot * 1_000_000_000 / rate;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Whether sends follow a schedule (`--rate`, chat) rather than the
    /// echoes (closed loop).
    pub(crate) fn open_loop(&self) -> bool {
        self.rate.is_some()
    }

    /// The connection's transport: plain, or TLS for wss://.
    pub(crate) fn stream(&self, tcp: TcpStream) -> Result<Stream, String> {
        #[cfg(feature = "tls")]
        if let Some((cfg, name)) = &self.tls {
            let conn = rustls::ClientConnection::new(cfg.clone(), name.clone())
                .map_err(|e| format!("connect: TLS setup: {e}"))?;
            return Ok(Stream::tls(tcp, conn.into()));
        }
        Ok(Stream::plain(tcp))
    }
}

#[cfg(test)]
impl Plan {
    /// A plan for unit tests: `conns` connections in echo mode (open loop
    /// at `rate`), `pipeline` in flight each, 8-byte binary messages.
    pub(crate) fn for_test(conns: u64, rate: u64, pipeline: usize) -> Plan {
        Plan {
            mode: Mode::Echo,
            addr: "127.0.0.1:9".parse().unwrap(),
            host: "127.0.0.1:9".into(),
            target: "/".into(),
            pipeline,
            payload: Payload::new(8, false, false),
            config: Arc::new(Config::default()),
            connect_timeout: Duration::from_secs(1),
            max_connecting: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            hold: Duration::ZERO,
            conns,
            rate: Some(rate),
            rooms: Vec::new(),
            headers: Vec::new(),
            protocols: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_take_turns_in_one_schedule() {
        // 3 connections at 1,000 a second: slot k is due at k ms, and
        // connection g sends its j-th message in slot 3j + g.
        let plan = Plan::for_test(3, 1000, 1);
        assert_eq!(plan.due(0, 0), Duration::ZERO);
        assert_eq!(plan.due(1, 0), Duration::from_millis(1));
        assert_eq!(plan.due(2, 0), Duration::from_millis(2));
        assert_eq!(plan.due(0, 1), Duration::from_millis(3));
        assert_eq!(plan.due(2, 333), Duration::from_millis(1001));
        // Not a whole number of ns apart: no drift over a long run.
        let plan = Plan::for_test(1, 3, 1);
        assert_eq!(plan.due(0, 3_000_000), Duration::from_secs(1_000_000));
    }
}
