//! What every thread needs, read-only: where to connect, what to send, and
//! the phases' lengths.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use wsloop::client::{ClientOptions, Url};

use crate::options::{Mode, Options};
use crate::payload::Payload;

/// One server the connections are spread over.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) url: Url,
    /// wss://: the name its certificate must carry (checked before the run;
    /// the TLS set-up is paid before the clock starts with it).
    #[cfg(feature = "tls")]
    pub(crate) name: Option<rustls::pki_types::ServerName<'static>>,
}

/// Resolves every URL of `o` (first address of each). `Err`: the exit
/// status and the message naming the URL: 2 for a wss:// host that cannot
/// be a TLS name, 3 for a host that does not resolve.
pub(crate) fn servers(o: &Options) -> Result<Vec<Server>, (i32, String)> {
    let mut out = Vec::with_capacity(o.urls.len());
    for u in &o.urls {
        let url = Url::parse(u).map_err(|e| (2, format!("{u}: {e}")))?;
        let addr = match (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a,
            Ok(None) => return Err((3, format!("{u}: {} resolves to no address", url.host))),
            Err(e) => return Err((3, format!("{u}: cannot resolve {}: {e}", url.host))),
        };
        #[cfg(feature = "tls")]
        let name = match (&o.tls, url.secure) {
            (Some(_), true) => {
                Some(wsloop::tls::server_name(&url.host).map_err(|e| (2, format!("{u}: {e}")))?)
            }
            _ => None,
        };
        out.push(Server {
            addr,
            url,
            #[cfg(feature = "tls")]
            name,
        });
    }
    Ok(out)
}

pub(crate) struct Plan {
    pub(crate) mode: Mode,
    /// Connection `g` goes to `servers[g % len]`, or in chat mode to
    /// `servers[(g / rooms) % len]` (see [`Plan::server`]).
    pub(crate) servers: Vec<Server>,
    pub(crate) pipeline: usize,
    pub(crate) payload: Payload,
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
    /// What every connection's client asks for: `config`, the extra
    /// request headers (`--header`, `--origin`), the subprotocols offered
    /// (`--protocol`), wss://'s TLS configuration, TCP_NODELAY.
    pub(crate) client: ClientOptions,
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

    /// The server connection `g` (global id) goes to. Chat member `g` is
    /// member `g / rooms` of its room, and the members of each room take
    /// the servers in turn, so every room spans every server whatever the
    /// counts (`g % servers` would put all of room 0 on server 0 with 3
    /// rooms and 3 servers).
    pub(crate) fn server(&self, g: u64) -> &Server {
        let nth = g / self.rooms.len().max(1) as u64;
        &self.servers[(nth % self.servers.len() as u64) as usize]
    }
}

#[cfg(test)]
impl Server {
    fn for_test(port: u16) -> Server {
        Server {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            url: Url::parse(&format!("ws://127.0.0.1:{port}/ws")).unwrap(),
            #[cfg(feature = "tls")]
            name: None,
        }
    }
}

#[cfg(test)]
impl Plan {
    /// A plan for unit tests: `conns` connections in echo mode (open loop
    /// at `rate`), `pipeline` in flight each, 8-byte binary messages.
    pub(crate) fn for_test(conns: u64, rate: u64, pipeline: usize) -> Plan {
        Plan {
            mode: Mode::Echo,
            servers: vec![Server::for_test(9)],
            pipeline,
            payload: Payload::new(8, false, false),
            connect_timeout: Duration::from_secs(1),
            max_connecting: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            hold: Duration::ZERO,
            conns,
            rate: Some(rate),
            rooms: Vec::new(),
            client: ClientOptions::default(),
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

    fn ports(plan: &Plan, ids: std::ops::Range<u64>) -> Vec<u16> {
        ids.map(|g| plan.server(g).addr.port()).collect()
    }

    #[test]
    fn connections_take_the_servers_in_turn() {
        let mut plan = Plan::for_test(12, 1, 1);
        plan.servers = (1..=3).map(Server::for_test).collect();
        assert_eq!(ports(&plan, 0..7), [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(plan.server(4).url.host_header(), "127.0.0.1:2");
        // Chat, 3 rooms over 3 servers: member g is in room g % 3; each
        // room's members still take the servers in turn.
        plan.rooms = (0..3).map(|r| r.to_string()).collect();
        let on = ports(&plan, 0..12);
        for room in 0..3 {
            let mine: Vec<u16> = (room..12).step_by(3).map(|g| on[g]).collect();
            assert_eq!(mine, [1, 2, 3, 1], "room {room}");
        }
        // One server: every connection goes there.
        plan.servers.truncate(1);
        assert_eq!(ports(&plan, 0..4), [1, 1, 1, 1]);
    }

    #[test]
    fn every_url_resolves_or_the_bad_one_is_named() {
        let mut o = crate::options::Options::for_test();
        o.urls = vec!["ws://127.0.0.1:1/ws".into(), "ws://127.0.0.1:2/a?b".into()];
        let s = servers(&o).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].addr, SocketAddr::from(([127, 0, 0, 1], 2)));
        assert_eq!(s[1].url.target, "/a?b");
        o.urls.push("ws://127.0.0.1:99999/".into());
        let (status, msg) = servers(&o).err().unwrap();
        assert_eq!(status, 2);
        assert!(msg.starts_with("ws://127.0.0.1:99999/: "), "{msg}");
    }
}
