//! Checks of what `--header`, `--origin` and `--protocol` put on the
//! upgrade request, so that a bad value is named before anything connects
//! instead of producing a request a server would refuse or misread.

/// Headers the upgrade request sets itself, and what to use instead.
const OWN_HEADERS: [(&str, &str); 10] = [
    ("host", "it comes from the URL"),
    ("upgrade", "the upgrade sets it"),
    ("connection", "the upgrade sets it"),
    ("sec-websocket-key", "the upgrade sets it"),
    ("sec-websocket-version", "the upgrade sets it"),
    ("sec-websocket-extensions", "use --deflate"),
    ("sec-websocket-protocol", "use --protocol"),
    ("origin", "use --origin"),
    ("content-length", "an upgrade request has no body"),
    ("transfer-encoding", "an upgrade request has no body"),
];

/// An HTTP token (RFC 9110 §5.6.2): header names, subprotocols.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `--header 'NAME: VALUE'`: the name and the value, or what is wrong.
pub(super) fn header(v: &str) -> Result<(String, String), String> {
    let Some((name, value)) = v.split_once(':') else {
        return Err("'NAME: VALUE' (no colon)".into());
    };
    if !is_token(name) {
        return Err(
            "'NAME: VALUE' where NAME is an HTTP token (letters, digits and !#$%&'*+-.^_`|~, no spaces)"
                .into(),
        );
    }
    let value = value.trim_matches([' ', '\t']);
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err("a header value without control characters (no CR, LF or NUL)".into());
    }
    let lower = name.to_ascii_lowercase();
    if let Some((_, instead)) = OWN_HEADERS.iter().find(|(h, _)| *h == lower) {
        return Err(format!(
            "a header the upgrade does not set itself ({name}: {instead})"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `--origin`: `null`, or `scheme://host[:port]` as browsers send it.
pub(super) fn origin_ok(v: &str) -> bool {
    if v == "null" {
        return true;
    }
    let Some((scheme, host)) = v.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    // The port is what follows the last colon outside an IPv6 [literal].
    let (name, port) = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    };
    let name_ok = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "/?#@\\".contains(c));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    scheme_ok && name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(
            header("X-Api-Key:  abc def \t"),
            Ok(("X-Api-Key".to_owned(), "abc def".to_owned()))
        );
        assert_eq!(
            header("X-Empty:"),
            Ok(("X-Empty".to_owned(), String::new()))
        );
        for bad in [
            "NoColon",
            ": value",
            "Bad Name: x",
            "X-A: a\r\nX-B: b",
            "X-A: nul\0",
            "host: x",
            "Sec-WebSocket-Key: x",
            "Origin: https://a",
        ] {
            assert!(header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins() {
        for good in [
            "null",
            "https://example.com",
            "http://127.0.0.1:8080",
            "http://[::1]:9000",
            "http://[::1]",
            "chrome-extension://abc",
        ] {
            assert!(origin_ok(good), "{good}");
        }
        for bad in [
            "",
            "example.com",
            "https://",
            "https://a.com/",
            "https://a.com/path",
            "https://a.com:0",
            "https://a.com:99999",
            "https://user@a.com",
            "1http://a.com",
            "https://a b",
        ] {
            assert!(!origin_ok(bad), "{bad}");
        }
    }

    #[test]
    fn tokens() {
        assert!(is_token("chat.v1"));
        assert!(is_token("graphql-ws"));
        for bad in ["", "a b", "a,b", "a/b", "ä"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
