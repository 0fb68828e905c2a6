//! The wire format: what the server sends ([`Out`], serialized with
//! serde) and the checks on what clients send.

use serde::Serialize;
use serde_json::Value;

use crate::{MAX_ROOM, MAX_TEXT};

/// What the server sends. Field order is as declared. `local` (only with
/// the backplane) marks what was served without Redis.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Out<'a> {
    Welcome {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
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
    },
}

impl Out<'_> {
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).expect("plain structs serialize")
    }
}

/// A client message that cannot be served; sent back as `{"type":"error"}`.
pub(crate) struct Refused(pub(crate) String);

fn field<'v>(obj: &'v serde_json::Map<String, Value>, name: &str) -> Result<&'v Value, Refused> {
    obj.get(name)
        .ok_or_else(|| Refused(format!("missing field \"{name}\"")))
}

pub(crate) fn str_field<'v>(
    obj: &'v serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'v str, Refused> {
    field(obj, name)?
        .as_str()
        .ok_or_else(|| Refused(format!("field \"{name}\" must be a string")))
}

pub(crate) fn room_field(obj: &serde_json::Map<String, Value>) -> Result<&str, Refused> {
    let room = str_field(obj, "room")?;
    if room.is_empty() || room.len() > MAX_ROOM || room.chars().any(char::is_control) {
        return Err(Refused(format!(
            "invalid room name: 1 to {MAX_ROOM} bytes, no control characters"
        )));
    }
    Ok(room)
}

pub(crate) fn text_field(obj: &serde_json::Map<String, Value>) -> Result<&str, Refused> {
    let text = str_field(obj, "text")?;
    if text.len() > MAX_TEXT {
        return Err(Refused(format!(
            "text too long: {} bytes, at most {MAX_TEXT}",
            text.len()
        )));
    }
    Ok(text)
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
                name: Some("Ann")
            }
            .json(),
            r#"{"type":"welcome","id":"u2","name":"Ann"}"#
        );
    }
}
