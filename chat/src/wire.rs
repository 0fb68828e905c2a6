//! The wire format: what the server sends ([`Out`], serialized with
//! serde) and what clients send ([`In`], parsed with serde into typed
//! variants, with errors that name the field).

use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};

use crate::{MAX_ROOM, MAX_SINCE, MAX_TEXT};

/// What the server sends. Field order is as declared. `local` (only with
/// the backplane) marks what was served without Redis.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Out<'a> {
    Welcome {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        /// Where the numbered broadcast stream stands (absent when this
        /// bus does not number broadcasts, or broadcast is off).
        #[serde(skip_serializing_if = "Option::is_none")]
        broadcast_seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        broadcast_epoch: Option<&'a str>,
    },
    Joined {
        room: &'a str,
        seq: u64,
        epoch: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    Left {
        room: &'a str,
    },
    Gap {
        room: &'a str,
        from: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
    },
    Message {
        room: &'a str,
        /// Absent only on a message delivered without Redis.
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        from: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        text: &'a str,
        /// Server time, milliseconds since the Unix epoch.
        ts: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    Broadcast {
        /// Absent when this bus does not number broadcasts.
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        from: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        text: &'a str,
        ts: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    Error {
        message: &'a str,
        /// The request was refused as a whole (nothing of it was done) and
        /// can be sent again unchanged later.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        retry: bool,
        /// The `ref` of the request, if it had one.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
}

impl Out<'_> {
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).expect("plain structs serialize")
    }
}

/// A client message that cannot be served; sent back as `{"type":"error"}`.
pub(crate) struct Refused(pub(crate) String);

/// What a client sends: one JSON object per text message, `type` naming
/// the variant. Strings are owned: the tagged form is buffered by serde
/// anyway, and an escaped string cannot be borrowed.
#[derive(Deserialize, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum In {
    Join {
        #[serde(deserialize_with = "room")]
        room: String,
        #[serde(default, deserialize_with = "since")]
        since: Option<u64>,
        #[serde(default, deserialize_with = "epoch")]
        epoch: Option<String>,
    },
    Leave {
        #[serde(deserialize_with = "room")]
        room: String,
    },
    Message {
        #[serde(deserialize_with = "room")]
        room: String,
        #[serde(deserialize_with = "text")]
        text: String,
        #[serde(rename = "ref", default, deserialize_with = "reference")]
        reference: Option<String>,
    },
    Broadcast {
        #[serde(deserialize_with = "text")]
        text: String,
        #[serde(rename = "ref", default, deserialize_with = "reference")]
        reference: Option<String>,
    },
}

const TYPES: &str = "join, leave, message or broadcast";

/// Longest `ref` a client may attach to a message (echoed in its error).
pub(crate) const MAX_REF: usize = 64;

impl In {
    /// The client's `ref` for this request (echoed in an error about it).
    pub(crate) fn reference(&self) -> Option<&str> {
        match self {
            In::Message { reference, .. } | In::Broadcast { reference, .. } => reference.as_deref(),
            In::Join { .. } | In::Leave { .. } => None,
        }
    }

    /// Parses one client message of at most `max` bytes (the limit is
    /// checked first: nothing bigger is parsed).
    pub(crate) fn parse(json: &str, max: usize) -> Result<In, Refused> {
        if json.len() > max {
            return Err(Refused(format!(
                "message too long: {} bytes, at most {max}",
                json.len()
            )));
        }
        // A tagged enum would also take a list with the tag first.
        if !json.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(json) {
                Err(e) => Refused(format!("invalid JSON: {e}")),
                Ok(_) => Refused("expected a JSON object".into()),
            });
        }
        serde_json::from_str(json).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    Refused(format!("invalid JSON: {e}"))
                }
                Category::Data => Refused(data_error(&e)),
            }
        })
    }
}

/// serde's message for a well-formed object of the wrong shape, in the
/// words of the protocol (field names in quotes, no position).
fn data_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let msg = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m);
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let name = rest.rsplit_once("`, expected").map_or(rest, |(n, _)| n);
        let mut shown: String = name.chars().take(40).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        return format!("unknown type \"{shown}\": expected {TYPES}");
    }
    if msg.contains("expected variant identifier") || msg.contains("expected internally tagged") {
        return format!("field \"type\" must be a string: {TYPES}");
    }
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("missing field \"{field}\"");
    }
    msg.replace('`', "\"")
}

fn string<'de, D: Deserializer<'de>>(d: D, name: &str) -> Result<String, D::Error> {
    String::deserialize(d)
        .map_err(|_| D::Error::custom(format!("field \"{name}\" must be a string")))
}

fn room<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let room = string(d, "room")?;
    if room.is_empty() || room.len() > MAX_ROOM || room.chars().any(char::is_control) {
        return Err(D::Error::custom(format!(
            "invalid room name: 1 to {MAX_ROOM} bytes, no control characters"
        )));
    }
    Ok(room)
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = string(d, "text")?;
    if text.len() > MAX_TEXT {
        return Err(D::Error::custom(format!(
            "text too long: {} bytes, at most {MAX_TEXT}",
            text.len()
        )));
    }
    Ok(text)
}

fn since<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let wrong = || {
        D::Error::custom(format!(
            "field \"since\" must be a whole number from 0 to {MAX_SINCE}"
        ))
    };
    match Option::<u64>::deserialize(d).map_err(|_| wrong())? {
        Some(n) if n > MAX_SINCE => Err(wrong()),
        n => Ok(n),
    }
}

fn reference<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let wrong = || {
        D::Error::custom(format!(
            "field \"ref\" must be a string of at most {MAX_REF} bytes"
        ))
    };
    match Option::<String>::deserialize(d).map_err(|_| wrong())? {
        Some(r) if r.len() > MAX_REF => Err(wrong()),
        r => Ok(r),
    }
}

fn epoch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    // Kept per member and room: bounded like every other field.
    let wrong = || {
        D::Error::custom(format!(
            "field \"epoch\" must be a string of at most {MAX_REF} bytes"
        ))
    };
    match Option::<String>::deserialize(d).map_err(|_| wrong())? {
        Some(e) if e.len() > MAX_REF => Err(wrong()),
        e => Ok(e),
    }
}

/// Server time, milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let m = Out::Message {
            room: "r",
            seq: Some(3),
            from: "u1",
            name: None,
            text: "hi \"there\"",
            ts: 17,
            local: false,
        };
        assert_eq!(
            m.json(),
            r#"{"type":"message","room":"r","seq":3,"from":"u1","text":"hi \"there\"","ts":17}"#
        );
        assert_eq!(
            Out::Gap {
                room: "r",
                from: 5,
                reset: false
            }
            .json(),
            r#"{"type":"gap","room":"r","from":5}"#
        );
        assert_eq!(
            Out::Welcome {
                id: "u2",
                name: Some("Ann"),
                broadcast_seq: None,
                broadcast_epoch: None,
            }
            .json(),
            r#"{"type":"welcome","id":"u2","name":"Ann"}"#
        );
        assert_eq!(
            Out::Welcome {
                id: "u3",
                name: None,
                broadcast_seq: Some(4),
                broadcast_epoch: Some("ab-1"),
            }
            .json(),
            r#"{"type":"welcome","id":"u3","broadcast_seq":4,"broadcast_epoch":"ab-1"}"#
        );
        assert_eq!(
            Out::Broadcast {
                seq: Some(2),
                from: "u1",
                name: None,
                text: "t",
                ts: 9,
                local: false,
            }
            .json(),
            r#"{"type":"broadcast","seq":2,"from":"u1","text":"t","ts":9}"#
        );
        assert_eq!(
            Out::Error {
                message: "m",
                retry: true,
                reference: Some("c-7"),
            }
            .json(),
            r#"{"type":"error","message":"m","retry":true,"ref":"c-7"}"#
        );
    }

    fn refused(json: &str) -> String {
        match In::parse(json, 1000) {
            Ok(v) => panic!("{json} parsed as {v:?}"),
            Err(Refused(m)) => m,
        }
    }

    #[test]
    fn input_parses_into_typed_variants() {
        assert_eq!(
            In::parse(
                r#"{"type":"join","room":"r","since":7,"epoch":"e","x":1}"#,
                1000
            )
            .ok(),
            Some(In::Join {
                room: "r".into(),
                since: Some(7),
                epoch: Some("e".into())
            })
        );
        assert_eq!(
            In::parse(r#" {"room":"r\u00e9","type":"join","since":null}"#, 1000).ok(),
            Some(In::Join {
                room: "ré".into(),
                since: None,
                epoch: None
            })
        );
        assert_eq!(
            In::parse(r#"{"type":"message","room":"r","text":"a\"b"}"#, 1000).ok(),
            Some(In::Message {
                room: "r".into(),
                text: "a\"b".into(),
                reference: None,
            })
        );
        assert_eq!(
            In::parse(r#"{"type":"broadcast","text":""}"#, 1000).ok(),
            Some(In::Broadcast {
                text: "".into(),
                reference: None
            })
        );
        let m = In::parse(
            r#"{"type":"message","room":"r","text":"t","ref":"c-1"}"#,
            1000,
        );
        assert_eq!(m.ok().as_ref().and_then(In::reference), Some("c-1"));
        assert_eq!(
            In::parse(r#"{"type":"leave","room":"r"}"#, 1000).ok(),
            Some(In::Leave { room: "r".into() })
        );
    }

    #[test]
    fn input_errors_name_what_is_wrong() {
        for (json, want) in [
            ("{not json", "invalid JSON"),
            ("", "invalid JSON"),
            (r#"["join","r"]"#, "expected a JSON object"),
            ("5", "expected a JSON object"),
            (r#"{"room":"r"}"#, "missing field \"type\""),
            (r#"{"type":5}"#, "field \"type\" must be a string"),
            (
                r#"{"type":"dance"}"#,
                "unknown type \"dance\": expected join, leave, message or broadcast",
            ),
            (r#"{"type":"join"}"#, "missing field \"room\""),
            (
                r#"{"type":"join","room":5}"#,
                "field \"room\" must be a string",
            ),
            (r#"{"type":"join","room":""}"#, "invalid room name"),
            (r#"{"type":"join","room":"a\u0007"}"#, "invalid room name"),
            (r#"{"type":"join","room":"r","since":-1}"#, "whole number"),
            (r#"{"type":"join","room":"r","since":1.5}"#, "whole number"),
            (r#"{"type":"join","room":"r","since":"3"}"#, "whole number"),
            (
                r#"{"type":"join","room":"r","since":18446744073709551615}"#,
                "from 0 to 9007199254740991",
            ),
            (
                r#"{"type":"join","room":"r","epoch":3}"#,
                "field \"epoch\" must be a string",
            ),
            (r#"{"type":"message","room":"r"}"#, "missing field \"text\""),
            (
                r#"{"type":"message","room":"r","text":[]}"#,
                "field \"text\" must be a string",
            ),
            (r#"{"type":"broadcast"}"#, "missing field \"text\""),
            (
                r#"{"type":"broadcast","text":"","ref":5}"#,
                "field \"ref\" must be a string",
            ),
            (
                format!(
                    r#"{{"type":"join","room":"r","since":1,"epoch":"{}"}}"#,
                    "e".repeat(65)
                )
                .as_str(),
                "field \"epoch\" must be a string of at most 64 bytes",
            ),
            (
                format!(
                    r#"{{"type":"message","room":"r","text":"","ref":"{}"}}"#,
                    "r".repeat(65)
                )
                .as_str(),
                "at most 64 bytes",
            ),
            (
                r#"{"type":"leave","room":"r","room":"s"}"#,
                "duplicate field \"room\"",
            ),
        ] {
            let m = refused(json);
            assert!(m.contains(want), "{json}: {m:?} lacks {want:?}");
            // Positions help only when the JSON itself is broken.
            let syntax = want == "invalid JSON";
            assert_eq!(m.contains(" at line "), syntax, "{json}: {m:?}");
        }
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(100));
        assert!(refused(&long).contains(&format!("\"{}…\"", "x".repeat(40))));
        let text = format!(
            r#"{{"type":"message","room":"r","text":"{}"}}"#,
            "x".repeat(MAX_TEXT + 1)
        );
        assert!(In::parse(&text, 1 << 20).is_err_and(|Refused(m)| m.contains("text too long")));
    }

    #[test]
    fn input_limit_applies_before_parsing() {
        let ok = r#"{"type":"leave","room":"r"}"#;
        assert!(In::parse(ok, ok.len()).is_ok());
        // One byte over: refused whatever it holds, even invalid JSON.
        let m = refused(&"{".repeat(1001));
        assert_eq!(m, "message too long: 1001 bytes, at most 1000");
        let padded = format!(
            r#"{{"type":"leave","room":"r","pad":"{}"}}"#,
            "x".repeat(1000)
        );
        assert!(refused(&padded).starts_with("message too long"));
    }
}
