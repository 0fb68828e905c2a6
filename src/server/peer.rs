//! Who is on the other end: the TCP peer, and behind a trusted proxy the
//! client named by `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use crate::config::TrustedProxy;
use crate::handshake::Request;

/// The client's address for `req`, read from `peer`. Each proxy appends
/// the address it got the request from, so the list is walked from the
/// right past trusted proxies; the first address that is not one is the
/// client (entries further left are whatever that client claimed). If
/// every entry is a trusted proxy, or one does not parse, the walk ends
/// at the last address it reached.
pub(super) fn client_addr(peer: SocketAddr, req: &Request, trusted: &[TrustedProxy]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    let mut client = peer.ip().to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let fields: Vec<&str> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .filter_map(|h| std::str::from_utf8(&h.value).ok())
        .collect();
    for entry in fields.iter().rev().flat_map(|f| f.rsplit(',')) {
        let Some(ip) = parse_entry(entry.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(xff: &[&str]) -> Request {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for v in xff {
            raw.push_str(&format!("X-Forwarded-For: {v}\r\n"));
        }
        raw.push_str("\r\n");
        crate::handshake::parse_request_head(raw.as_bytes(), 16).unwrap()
    }

    fn client(peer: &str, xff: &[&str], trusted: &[&str]) -> String {
        let trusted: Vec<TrustedProxy> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_addr(peer.parse().unwrap(), &req(xff), &trusted).to_string()
    }

    #[test]
    fn forwarded_for_is_read_only_from_a_trusted_peer() {
        // Untrusted peer: the header is whatever the client wrote.
        assert_eq!(
            client("198.51.100.7:4000", &["1.2.3.4"], &[]),
            "198.51.100.7"
        );
        assert_eq!(
            client("198.51.100.7:4000", &["1.2.3.4"], &["127.0.0.1"]),
            "198.51.100.7"
        );
        // One proxy: its entry (the rightmost) is the client; what the
        // client claimed to the left of it is not believed.
        assert_eq!(
            client("127.0.0.1:4000", &["6.6.6.6, 203.0.113.5"], &["127.0.0.1"]),
            "203.0.113.5"
        );
        // Two proxies (a CDN, then nginx): trusted hops are skipped.
        assert_eq!(
            client(
                "127.0.0.1:4000",
                &["6.6.6.6, 203.0.113.5, 10.1.2.3"],
                &["127.0.0.1", "10.0.0.0/8"]
            ),
            "203.0.113.5"
        );
        // Several header fields are one list, in order.
        assert_eq!(
            client(
                "127.0.0.1:4000",
                &["203.0.113.5", "10.1.2.3"],
                &["127.0.0.1", "10.0.0.0/8"]
            ),
            "203.0.113.5"
        );
        // Ports and brackets.
        assert_eq!(
            client("[::1]:4000", &["[2001:db8::9]:1234"], &["::1"]),
            "2001:db8::9"
        );
        assert_eq!(
            client("127.0.0.1:4000", &["203.0.113.5:99"], &["127.0.0.1"]),
            "203.0.113.5"
        );
        // An IPv4 peer on a dual-stack socket.
        assert_eq!(
            client("[::ffff:127.0.0.1]:4000", &["203.0.113.5"], &["127.0.0.1"]),
            "203.0.113.5"
        );
        // No header, or garbage: the last address reached.
        assert_eq!(client("127.0.0.1:4000", &[], &["127.0.0.1"]), "127.0.0.1");
        assert_eq!(
            client("127.0.0.1:4000", &["unknown"], &["127.0.0.1"]),
            "127.0.0.1"
        );
        assert_eq!(
            client(
                "127.0.0.1:4000",
                &["junk, 10.0.0.2"],
                &["127.0.0.1", "10.0.0.0/8"]
            ),
            "10.0.0.2"
        );
        // Everything trusted: the leftmost entry.
        assert_eq!(
            client("10.0.0.1:4000", &["10.0.0.3, 10.0.0.2"], &["10.0.0.0/8"]),
            "10.0.0.3"
        );
    }
}
