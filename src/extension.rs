//! permessage-deflate negotiation (RFC 7692 §5, §7.1): parse offers, choose
//! the first acceptable one, answer it; build the client's offer and check
//! the server's answer. Pure functions; the codec itself is in `deflate`
//! (feature `deflate`).

use std::fmt::Write;

use crate::error::HandshakeError;

/// How a side wants permessage-deflate. Part of [`Config`](crate::Config).
///
/// Window bits are 9–15 (zlib cannot compress with an 8-bit raw window; an
/// offer asking us for 8 is declined).
///
/// Memory per connection (see docs/DEFLATE.md for the measurements): no
/// zlib state is kept between messages; zlib streams are borrowed from a
/// per-thread pool for one message. With context takeover a connection
/// keeps the last `2^bits` bytes it sent and received (4 KiB + 4 KiB with
/// the default 12 bits when the peer accepts 12; 4 KiB + 32 KiB when a
/// client does not offer `client_max_window_bits`). With both
/// `*_no_context_takeover` it keeps nothing. [`per_connection_zlib`]
/// keeps a compressor and a decompressor per connection instead: less CPU
/// per message, about 200–350 KiB per active connection.
///
/// [`per_connection_zlib`]: DeflateConfig::per_connection_zlib
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Negotiate permessage-deflate at all (needs the `deflate` feature).
    /// Default false.
    pub enabled: bool,
    /// Server: do not keep the compression context between messages
    /// (saves memory, costs ratio). Default false.
    pub server_no_context_takeover: bool,
    /// Ask the client not to keep its context (server), or promise not to
    /// (client). Default false on servers; clients offer it (see
    /// [`client_offer`]).
    pub client_no_context_takeover: bool,
    /// Largest window the server compresses with. A server always
    /// announces it when below 15 (RFC 7692 §7.1.2.1 allows it unasked), so
    /// the client keeps a smaller window; a client offers it when below 15.
    /// Default 12 (as Python websockets): 4 KiB of history per direction,
    /// a few percent of ratio on chat-sized text (docs/DEFLATE.md).
    pub server_max_window_bits: u8,
    /// Largest window the client compresses with: a server asks for it
    /// when the client offered `client_max_window_bits` (it may not
    /// otherwise, and then keeps 32 KiB of the client's history); a client
    /// offers it. Default 12.
    pub client_max_window_bits: u8,
    /// Messages shorter than this are sent uncompressed. Default 64.
    pub min_size: usize,
    /// zlib compression level 0–9. Default 6.
    pub level: u32,
    /// Keep a zlib compressor and decompressor per connection between
    /// messages instead of priming per-thread ones with the connection's
    /// window before each message. Saves the priming (hashing up to one
    /// window per message sent) at about 200–350 KiB per active
    /// connection. Default false.
    pub per_connection_zlib: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: false,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 12,
            client_max_window_bits: 12,
            min_size: 64,
            level: 6,
            per_connection_zlib: false,
        }
    }
}

/// The parameters both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// Window the server compresses with (9–15).
    pub server_max_window_bits: u8,
    /// Window the client compresses with (8–15: a client may offer 8; our
    /// decompressor uses at least 9 bits, which reads 8-bit streams).
    pub client_max_window_bits: u8,
}

/// One extension from a `Sec-WebSocket-Extensions` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// Extension name, lowercased.
    pub name: String,
    /// Parameters with their values (quotes removed).
    pub params: Vec<(String, Option<String>)>,
}

/// Splits header values into extensions: `name; p; p=v, name2; ...`.
/// Malformed entries are skipped (a server declines what it cannot read).
pub fn parse_extensions<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<ExtensionOffer> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(|ext| parse_entry(ext).ok().flatten())
        .collect()
}

/// Like [`parse_extensions`], but any malformed entry is an error: a
/// client must fail the connection on an answer it cannot read (RFC 6455
/// §9.1). Empty list elements are allowed (RFC 9110 §5.6.1).
fn parse_extensions_strict<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    let mut out = Vec::new();
    for ext in values.into_iter().flat_map(|v| v.split(',')) {
        match parse_entry(ext) {
            Ok(Some(e)) => out.push(e),
            Ok(None) => {}
            Err(()) => return Err(HandshakeError::MalformedExtensions),
        }
    }
    Ok(out)
}

/// One list element: `Ok(None)` if it is empty, `Err` if it does not
/// parse as `name *( ";" param [ "=" (token | quoted token) ] )`.
fn parse_entry(ext: &str) -> Result<Option<ExtensionOffer>, ()> {
    if ext.trim().is_empty() {
        return Ok(None);
    }
    let mut parts = ext.split(';').map(str::trim);
    let name = parts.next().filter(|n| is_token(n)).ok_or(())?;
    let mut params = Vec::new();
    for p in parts {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (k.trim(), Some(v.to_owned()))
            }
            None => (p, None),
        };
        if !is_token(k) || v.as_deref().is_some_and(|v| !is_token(v)) {
            return Err(());
        }
        params.push((k.to_ascii_lowercase(), v));
    }
    Ok(Some(ExtensionOffer {
        name: name.to_ascii_lowercase(),
        params,
    }))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn window_bits(v: &str) -> Option<u8> {
    // RFC 7692 §7.1.2: a decimal integer 8–15 without leading zeros.
    if v.starts_with('0') || v.len() > 2 {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// What a permessage-deflate offer asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn read_offer(ext: &ExtensionOffer) -> Option<Offer> {
    let mut o = Offer::default();
    let mut seen = Vec::new();
    for (k, v) in &ext.params {
        if seen.contains(&k.as_str()) {
            return None; // a parameter twice: decline (§7)
        }
        seen.push(k.as_str());
        match (k.as_str(), v) {
            ("server_no_context_takeover", None) => o.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => o.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => o.server_max_window_bits = Some(window_bits(v)?),
            ("client_max_window_bits", None) => o.client_max_window_bits = Some(None),
            ("client_max_window_bits", Some(v)) => {
                o.client_max_window_bits = Some(Some(window_bits(v)?))
            }
            _ => return None,
        }
    }
    Some(o)
}

/// Server side: picks the first acceptable permessage-deflate offer among
/// the request's extensions and returns the agreed parameters and the
/// response header value. `None` declines (the connection goes on without
/// compression).
pub fn negotiate_server<'a>(
    values: impl IntoIterator<Item = &'a str>,
    cfg: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    if !cfg.enabled {
        return None;
    }
    for ext in parse_extensions(values) {
        if ext.name != "permessage-deflate" {
            continue;
        }
        let Some(offer) = read_offer(&ext) else {
            continue;
        };
        let mut p = DeflateParams {
            server_no_context_takeover: cfg.server_no_context_takeover
                || offer.server_no_context_takeover,
            client_no_context_takeover: cfg.client_no_context_takeover
                || offer.client_no_context_takeover,
            server_max_window_bits: cfg.server_max_window_bits.clamp(9, 15),
            client_max_window_bits: 15,
        };
        let mut resp = String::from("permessage-deflate");
        if p.server_no_context_takeover {
            resp.push_str("; server_no_context_takeover");
        }
        if p.client_no_context_takeover {
            resp.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = offer.server_max_window_bits {
            if bits < 9 {
                continue; // zlib cannot compress with a 256-byte window
            }
            p.server_max_window_bits = p.server_max_window_bits.min(bits);
        }
        // Answered when asked (it must be), and unasked when below 15 so
        // the client needs only a window that size (RFC 7692 §7.1.2.1).
        if offer.server_max_window_bits.is_some() || p.server_max_window_bits < 15 {
            let _ = write!(
                resp,
                "; server_max_window_bits={}",
                p.server_max_window_bits
            );
        }
        if let Some(offered) = offer.client_max_window_bits {
            let want = cfg.client_max_window_bits.clamp(9, 15);
            let bits = offered.map_or(want, |o| o.min(want));
            // Our decompressor takes any window up to 15: only answer with a
            // value when the client named one or we want it smaller.
            if offered.is_some() || bits < 15 {
                let _ = write!(resp, "; client_max_window_bits={bits}");
            }
            p.client_max_window_bits = bits;
        }
        return Some((p, resp));
    }
    None
}

/// Client side: the `Sec-WebSocket-Extensions` offer for `cfg`.
///
/// The client offers `client_max_window_bits` (so the server may ask for a
/// smaller window) and, if configured, the no-context-takeover parameters.
/// When `cfg` asks the server for a window under 15 bits, a second offer
/// without that request follows: a server that cannot limit its window
/// (or ignores the request) then takes the second one, with compression,
/// instead of declining or failing the connection (RFC 7692 §5: offers in
/// order of preference, the server takes one).
pub fn client_offer(cfg: &DeflateConfig) -> String {
    let mut s = String::from("permessage-deflate");
    if cfg.client_no_context_takeover {
        s.push_str("; client_no_context_takeover");
    }
    if cfg.server_no_context_takeover {
        s.push_str("; server_no_context_takeover");
    }
    let common = s.len();
    if cfg.server_max_window_bits < 15 {
        let _ = write!(
            s,
            "; server_max_window_bits={}",
            cfg.server_max_window_bits.clamp(9, 15)
        );
    }
    let mut client_bits = String::new();
    if cfg.client_max_window_bits < 15 {
        let _ = write!(
            client_bits,
            "; client_max_window_bits={}",
            cfg.client_max_window_bits.clamp(9, 15)
        );
    } else {
        client_bits.push_str("; client_max_window_bits");
    }
    s.push_str(&client_bits);
    if cfg.server_max_window_bits < 15 {
        let fallback = format!("{}{client_bits}", &s[..common]);
        s.push_str(", ");
        s.push_str(&fallback);
    }
    s
}

/// Client side: checks the server's answer to [`client_offer`]. `Ok(None)`
/// if the server declined; an error if it answered with something not
/// offered ([`HandshakeError::UnrequestedExtension`]) or that does not
/// parse ([`HandshakeError::MalformedExtensions`]): the client must then
/// fail the connection.
pub fn accept_client_response<'a>(
    values: impl IntoIterator<Item = &'a str>,
    cfg: &DeflateConfig,
) -> Result<Option<DeflateParams>, HandshakeError> {
    let exts = parse_extensions_strict(values)?;
    let mut iter = exts.iter();
    let Some(ext) = iter.next() else {
        return Ok(None);
    };
    let bad = HandshakeError::UnrequestedExtension;
    if iter.next().is_some() || ext.name != "permessage-deflate" || !cfg.enabled {
        return Err(bad);
    }
    let o = read_offer(ext).ok_or(bad)?;
    let client_bits = match o.client_max_window_bits {
        None => cfg.client_max_window_bits.clamp(9, 15),
        Some(None) => return Err(bad), // a response must give a value
        Some(Some(b)) if b < 9 => return Err(bad), // zlib cannot do 8
        Some(Some(b)) => b.min(cfg.client_max_window_bits.clamp(9, 15)),
    };
    // Any window: the second offer asks for none, and our decompressor
    // takes any (see `client_offer`).
    let server_bits = o.server_max_window_bits.unwrap_or(15);
    if cfg.server_no_context_takeover && !o.server_no_context_takeover {
        return Err(bad);
    }
    Ok(Some(DeflateParams {
        server_no_context_takeover: o.server_no_context_takeover,
        client_no_context_takeover: o.client_no_context_takeover || cfg.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enabled with 15-bit windows, so answers carry only what was asked.
    fn on() -> DeflateConfig {
        DeflateConfig {
            enabled: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            ..DeflateConfig::default()
        }
    }

    fn defaults() -> DeflateConfig {
        DeflateConfig {
            enabled: true,
            ..DeflateConfig::default()
        }
    }

    /// The default 12-bit windows: the server announces its own unasked
    /// and asks the client only when the client offered the parameter.
    #[test]
    fn default_windows_negotiation() {
        let cfg = defaults();
        let cases: &[(&str, &str, u8, u8)] = &[
            (
                "permessage-deflate",
                "permessage-deflate; server_max_window_bits=12",
                12,
                15,
            ),
            (
                "permessage-deflate; client_max_window_bits",
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
                12,
                12,
            ),
            (
                "permessage-deflate; client_max_window_bits=10",
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
                12,
                10,
            ),
            (
                "permessage-deflate; client_max_window_bits=15",
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
                12,
                12,
            ),
            (
                "permessage-deflate; server_max_window_bits=15",
                "permessage-deflate; server_max_window_bits=12",
                12,
                15,
            ),
            (
                "permessage-deflate; server_max_window_bits=9",
                "permessage-deflate; server_max_window_bits=9",
                9,
                15,
            ),
        ];
        for &(offer, want, server_bits, client_bits) in cases {
            let (p, r) = negotiate_server([offer], &cfg).unwrap();
            assert_eq!(r, want, "offer {offer}");
            assert_eq!(
                (p.server_max_window_bits, p.client_max_window_bits),
                (server_bits, client_bits),
                "offer {offer}"
            );
            // Our client takes each of these answers.
            let c = accept_client_response([r.as_str()], &cfg);
            assert!(c.is_ok(), "{r}: {c:?}");
        }
        // Bad values are declined (RFC 7692 §7.1: the server declines an
        // offer it cannot read), not answered with an error.
        for bad in [
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=12; client_max_window_bits=12",
            "permessage-deflate; server_max_window_bits=8",
        ] {
            assert_eq!(negotiate_server([bad], &cfg), None, "{bad}");
        }
        // Our client offers both windows, then the same without asking for
        // the server's, and reads the server's answer.
        let offer = client_offer(&cfg);
        assert_eq!(
            offer,
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12, \
             permessage-deflate; client_max_window_bits=12"
        );
        let (sp, resp) = negotiate_server([offer.as_str()], &cfg).unwrap();
        let cp = accept_client_response([resp.as_str()], &cfg)
            .unwrap()
            .unwrap();
        assert_eq!(sp, cp);
        assert_eq!(
            (cp.server_max_window_bits, cp.client_max_window_bits),
            (12, 12)
        );
        // A server that cannot limit its window takes the second offer:
        // compression with its window, not a failed connection.
        for answer in [
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=13",
        ] {
            let p = accept_client_response([answer], &cfg).unwrap().unwrap();
            let want = if answer.contains("13") { 13 } else { 15 };
            assert_eq!(p.server_max_window_bits, want, "{answer}");
        }
        // A server that reads offers one by one and cannot do windows
        // (declines the first) accepts the second, and we take its answer.
        let plain = DeflateConfig {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            ..cfg
        };
        let offers: Vec<&str> = offer.split(", ").collect();
        assert_eq!(offers.len(), 2);
        assert!(negotiate_server([offers[1]], &plain).is_some());
        let (_, resp) = negotiate_server([offers[1]], &plain).unwrap();
        assert!(accept_client_response([resp.as_str()], &cfg)
            .unwrap()
            .is_some());
    }

    #[test]
    fn parse_lists_and_params() {
        let e = parse_extensions([
            "permessage-deflate; client_max_window_bits, x-foo; a=\"1\"",
            "y",
        ]);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].name, "permessage-deflate");
        assert_eq!(
            e[0].params,
            vec![("client_max_window_bits".to_owned(), None)]
        );
        assert_eq!(e[1].params, vec![("a".to_owned(), Some("1".to_owned()))]);
        assert!(parse_extensions(["bad name; x"]).is_empty());
    }

    #[test]
    fn negotiation_table() {
        let cfg = on();
        let cases: &[(&str, Option<&str>)] = &[
            ("permessage-deflate", Some("permessage-deflate")),
            ("permessage-deflate; client_max_window_bits", Some("permessage-deflate")),
            (
                "permessage-deflate; server_no_context_takeover",
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                Some("permessage-deflate; client_no_context_takeover"),
            ),
            (
                "permessage-deflate; server_max_window_bits=9",
                Some("permessage-deflate; server_max_window_bits=9"),
            ),
            (
                "permessage-deflate; client_max_window_bits=10",
                Some("permessage-deflate; client_max_window_bits=10"),
            ),
            // zlib cannot compress with 8 bits: that offer is declined, the
            // next one accepted.
            ("permessage-deflate; server_max_window_bits=8, permessage-deflate", Some("permessage-deflate")),
            ("permessage-deflate; server_max_window_bits=8", None),
            // Invalid offers are declined.
            ("permessage-deflate; server_max_window_bits", None),
            ("permessage-deflate; server_max_window_bits=16", None),
            ("permessage-deflate; server_max_window_bits=09", None),
            ("permessage-deflate; client_max_window_bits=7", None),
            ("permessage-deflate; server_no_context_takeover=1", None),
            ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
            ("permessage-deflate; foo", None),
            ("x-webkit-deflate-frame", None),
            // Several offers: the first acceptable wins.
            (
                "permessage-deflate; foo, permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
                Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=9"),
            ),
        ];
        for (offer, want) in cases {
            let got = negotiate_server([*offer], &cfg).map(|(_, r)| r);
            assert_eq!(got.as_deref(), *want, "offer {offer}");
        }
        let (p, _) = negotiate_server(
            ["permessage-deflate; server_max_window_bits=9; client_no_context_takeover"],
            &cfg,
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, 9);
        assert!(p.client_no_context_takeover);
        assert!(negotiate_server(["permessage-deflate"], &DeflateConfig::default()).is_none());
    }

    #[test]
    fn server_config_asks_client_for_less() {
        let cfg = DeflateConfig {
            client_no_context_takeover: true,
            client_max_window_bits: 10,
            server_no_context_takeover: true,
            ..on()
        };
        let (p, r) =
            negotiate_server(["permessage-deflate; client_max_window_bits"], &cfg).unwrap();
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"
        );
        assert_eq!(p.client_max_window_bits, 10);
        // Without client_max_window_bits in the offer the response must not
        // carry it.
        let (_, r) = negotiate_server(["permessage-deflate"], &cfg).unwrap();
        assert!(!r.contains("client_max_window_bits"), "{r}");
    }

    #[test]
    fn client_offer_and_response() {
        let cfg = DeflateConfig {
            client_no_context_takeover: true,
            ..on()
        };
        let offer = client_offer(&cfg);
        assert_eq!(
            offer,
            "permessage-deflate; client_no_context_takeover; client_max_window_bits"
        );
        // The server's answer to our own offer is accepted.
        let (_, resp) = negotiate_server([offer.as_str()], &on()).unwrap();
        let p = accept_client_response([resp.as_str()], &cfg)
            .unwrap()
            .unwrap();
        assert!(p.client_no_context_takeover);
        let p = accept_client_response(
            ["permessage-deflate; client_max_window_bits=9; server_max_window_bits=10"],
            &cfg,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (p.client_max_window_bits, p.server_max_window_bits),
            (9, 10)
        );
        assert_eq!(accept_client_response(Vec::<&str>::new(), &cfg), Ok(None));
        for bad in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=8",
            "permessage-deflate; foo",
            "x-other",
            "permessage-deflate, permessage-deflate",
        ] {
            assert!(accept_client_response([bad], &cfg).is_err(), "{bad}");
        }
        assert!(accept_client_response(["permessage-deflate"], &DeflateConfig::default()).is_err());
    }

    /// RFC 6455 §9.1: an answer the client cannot parse fails the
    /// connection; it is not "no extension".
    #[test]
    fn client_fails_unparseable_answers() {
        for cfg in [on(), DeflateConfig::default()] {
            for bad in [
                "bad name",
                "permessage-deflate; a b",
                "permessage-deflate;",
                "permessage-deflate; =1",
                "permessage-deflate; server_max_window_bits=\"1 0\"",
                "permessage-deflate; server_max_window_bits=\"10",
                "permessage-deflate, @",
                ";",
            ] {
                let r = accept_client_response([bad], &cfg);
                assert_eq!(r, Err(HandshakeError::MalformedExtensions), "{bad:?}");
            }
        }
        // Empty list elements are allowed (RFC 9110 §5.6.1) and name nothing.
        for empty in ["", " , ,"] {
            assert_eq!(
                accept_client_response([empty], &on()),
                Ok(None),
                "{empty:?}"
            );
        }
        let p = accept_client_response(
            [", permessage-deflate; server_max_window_bits=\"10\","],
            &on(),
        );
        assert_eq!(p.map(|p| p.map(|p| p.server_max_window_bits)), Ok(Some(10)));
    }
}
