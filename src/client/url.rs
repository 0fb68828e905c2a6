//! `ws://` and `wss://` URLs.

use crate::error::Error;

/// A parsed `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `wss://` (needs TLS).
    pub secure: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (default 80, or 443 for wss).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    /// Parses `ws://host[:port][/path][?query]` (or `wss://`).
    pub fn parse(s: &str) -> Result<Url, Error> {
        let bad = |why: &str| Error::Url(format!("'{s}': {why}"));
        let (secure, rest) = if let Some(r) = s.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("wss://") {
            (true, r)
        } else {
            return Err(bad("must start with ws:// or wss://"));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ']'")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if target.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return Err(bad("white space in the path"));
        }
        Ok(Url {
            secure,
            host,
            port,
            target,
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let default = if self.secure { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let u = Url::parse("ws://example.com:9001/chat?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("example.com", 9001, "/chat?x=1")
        );
        assert_eq!(u.host_header(), "example.com:9001");
        let u = Url::parse("ws://h?q").unwrap();
        assert_eq!((u.port, u.target.as_str()), (80, "/?q"));
        assert_eq!(u.host_header(), "h");
        let u = Url::parse("ws://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.host_header(), "[::1]:8080");
        assert!(Url::parse("wss://x").unwrap().secure);
        for bad in [
            "http://x",
            "ws://",
            "ws://x:notaport",
            "ws://[::1",
            "ws://a@b",
            "ws://x/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
