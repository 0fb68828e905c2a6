//! Who may upgrade, and the plain-HTTP answers every app shares: building
//! blocks for [`Handler::on_upgrade`](super::Handler::on_upgrade) and
//! [`Handler::on_http`](super::Handler::on_http).

use super::handler::{HttpResponse, OriginAllowList, Upgrade};
use crate::handshake::Request;

/// Who may upgrade: an Origin allow-list and an optional shared token
/// (`?token=…` or `Authorization: Bearer …`).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Browser origins allowed to upgrade (empty: any).
    pub origins: OriginAllowList,
    /// The shared secret a client must present, if any.
    pub token: Option<String>,
}

/// Compares without stopping at the first difference (no timing hint about
/// how much of a guess was right).
pub(super) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Access {
    /// `None` if `req` may upgrade; else the rejection: 403 for an Origin
    /// not on the list, 401 without the token.
    pub fn check(&self, req: &Request) -> Option<Upgrade> {
        if let Some(no) = self.origins.check(req) {
            return Some(no);
        }
        let token = self.token.as_deref()?;
        let from_query = req
            .query_param("token")
            .and_then(percent_decode)
            .is_some_and(|t| same_secret(t.as_bytes(), token.as_bytes()));
        let from_header =
            bearer_token(req).is_some_and(|t| same_secret(t.as_bytes(), token.as_bytes()));
        if from_query || from_header {
            return None;
        }
        let mut no = Upgrade::reject(
            401,
            "a token is required: add ?token=... or 'Authorization: Bearer ...'",
        );
        if let Upgrade::Reject(r) = &mut no {
            r.headers
                .push(("WWW-Authenticate".into(), "Bearer realm=\"wsloop\"".into()));
        }
        Some(no)
    }
}

/// The credentials of `Authorization: Bearer ...`.
pub(super) fn bearer_token(req: &Request) -> Option<&str> {
    let (scheme, cred) = req.header("authorization")?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| cred.trim())
}

/// Decodes `%XX` escapes and `+` (a query string value); `None` for a bad
/// escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The plain-HTTP answer the bundled apps share: `GET /healthz` is 200 `ok`,
/// other methods on it 405, anything else 426 (this is a WebSocket
/// endpoint).
pub fn http_common(req: &Request) -> HttpResponse {
    match (req.method.as_str(), req.path()) {
        ("GET" | "HEAD", "/healthz") => HttpResponse::text(200, "ok\n"),
        (_, "/healthz") => {
            // RFC 9110 §15.5.6: a 405 names the methods that are allowed.
            let mut r = HttpResponse::text(405, "use GET\n");
            r.headers.push(("Allow".into(), "GET, HEAD".into()));
            r
        }
        _ => {
            let mut r = HttpResponse::text(
                426,
                "this is a WebSocket endpoint; GET /healthz for health\n",
            );
            r.headers.push(("Upgrade".into(), "websocket".into()));
            r.headers
                .push(("Sec-WebSocket-Version".into(), "13".into()));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%G1"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    fn request(method: &str, path: &str) -> Request {
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        crate::handshake::parse_request_head(raw.as_bytes(), 16).expect("a valid request")
    }

    #[test]
    fn health_answers_and_405_names_the_allowed_methods() {
        let ok = http_common(&request("GET", "/healthz"));
        assert_eq!((ok.status, ok.body.as_slice()), (200, &b"ok\n"[..]));
        let no = http_common(&request("POST", "/healthz"));
        assert_eq!(no.status, 405);
        assert!(
            no.headers
                .iter()
                .any(|(k, v)| k == "Allow" && v == "GET, HEAD"),
            "{:?}",
            no.headers
        );
        let other = http_common(&request("GET", "/"));
        assert_eq!(other.status, 426);
    }
}
