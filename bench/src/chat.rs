//! Chat mode: one connection is one member of a `wsloop serve --app chat`
//! room. It joins its room after the welcome; then every delivery is
//! checked against the room's sequence numbers (each once, in order) and
//! timed from the publish's scheduled time, which the receiver works out
//! from the `CONN.J` the text starts with (connection `CONN`'s `J`th
//! publish; see [`Plan::due`]).
//!
//! The server's JSON is read by finding its fields, not parsed whole: the
//! load generator must not be what is measured, and the fields it needs
//! come in a fixed order with values this bench chose (room names, texts)
//! or numbers.

use std::borrow::Cow;
use std::time::Instant;

use crate::conn::Window;
use crate::plan::Plan;
use crate::report::json_str;
use crate::stats::Stats;

/// Holes in the sequence remembered per member; past this a hole is
/// counted as a gap at once (a later delivery into it would then count as
/// a duplicate).
const MAX_HOLES: usize = 64;

/// What the connection must do after a message from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Nothing,
    /// Send this (the join) now.
    Send(String),
    /// The join was answered: the member is in its room.
    Joined,
}

/// One member's place in its room.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) room: usize,
    join_sent: bool,
    joined: bool,
    /// The sequence number expected next.
    next: u64,
    /// Sequence numbers skipped, `[from, to)`, not delivered (yet).
    holes: Vec<(u64, u64)>,
    /// Skipped numbers not remembered (past `MAX_HOLES`).
    lost_holes: u64,
    /// This bench's messages delivered (each once).
    pub(crate) unique: u64,
}

/// The text of publish `j` of connection `g`: `g.j`, padded with `x` to
/// `size` bytes.
pub(crate) fn text(g: u64, j: u64, size: usize) -> String {
    let mut t = format!("{g}.{j}");
    while t.len() < size {
        t.push('x');
    }
    t
}

/// The `message` request that publishes `text` to `room`.
pub(crate) fn publish(room: &str, text: &str) -> String {
    let mut j = String::with_capacity(48 + room.len() + text.len());
    j.push_str("{\"type\":\"message\",\"room\":");
    json_str(room, &mut j);
    j.push_str(",\"text\":");
    json_str(text, &mut j);
    j.push('}');
    j
}

/// The string value of `"key":"…"` (up to the next quote: the values read
/// here have no escapes).
fn str_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let at = json.find(&pat)? + pat.len();
    let rest = &json[at..];
    Some(&rest[..rest.find('"')?])
}

/// The number value of `"key":N`.
fn num_field(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat)? + pat.len();
    let rest = &json[at..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `g.j` from the start of a text this bench published.
fn sender(text: &str) -> Option<(u64, u64)> {
    let body = text.trim_end_matches('x');
    let (g, j) = body.split_once('.')?;
    Some((g.parse().ok()?, j.parse().ok()?))
}

/// At most 80 characters of what the server said, for an error kind.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Member {
    pub(crate) fn new(g: u64, plan: &Plan) -> Member {
        Member {
            room: (g % plan.rooms.len().max(1) as u64) as usize,
            join_sent: false,
            joined: false,
            next: 1,
            holes: Vec::new(),
            lost_holes: 0,
            unique: 0,
        }
    }

    /// A text message from the server, received at `now`.
    pub(crate) fn on_text(
        &mut self,
        json: &str,
        plan: &Plan,
        win: &Window,
        stats: &mut Stats,
        now: Instant,
    ) -> Result<Reply, Cow<'static, str>> {
        let room = &plan.rooms[self.room];
        match str_field(json, "type") {
            Some("message") if self.joined => {
                if str_field(json, "room") != Some(room.as_str()) {
                    stats.error("chat: a message for a room this member did not join");
                    return Ok(Reply::Nothing);
                }
                let Some(seq) = num_field(json, "seq") else {
                    stats.error("chat: a message without a room sequence number");
                    return Ok(Reply::Nothing);
                };
                let text = str_field(json, "text").unwrap_or("");
                let Some((g, j)) = sender(text).filter(|&(g, _)| g < plan.conns) else {
                    stats.error("chat: a message this bench did not publish");
                    return Ok(Reply::Nothing);
                };
                stats.msgs_all += 1;
                if !self.deliver(seq, stats) {
                    return Ok(Reply::Nothing);
                }
                let due = win.go + plan.due(g, j);
                // Once closing, what was not delivered is already counted.
                let measured = !win.closing && due >= win.from && due < win.to;
                stats.received(now, due, text.len(), measured);
                Ok(Reply::Nothing)
            }
            Some("welcome") if !self.join_sent => {
                self.join_sent = true;
                let mut j = String::from("{\"type\":\"join\",\"room\":");
                json_str(room, &mut j);
                j.push('}');
                Ok(Reply::Send(j))
            }
            Some("joined") if self.join_sent && !self.joined => {
                if str_field(json, "room") != Some(room.as_str()) {
                    return Err("chat: joined a room it did not ask for".into());
                }
                let Some(seq) = num_field(json, "seq") else {
                    return Err("chat: a joined reply without a sequence number".into());
                };
                self.next = seq + 1;
                self.joined = true;
                Ok(Reply::Joined)
            }
            Some("error") => {
                let what = str_field(json, "message").unwrap_or("(no message)");
                stats.error(format!(
                    "chat: the server answered an error: {}",
                    clip(what)
                ));
                Ok(Reply::Nothing)
            }
            Some(other) => {
                stats.error(format!("chat: unexpected \"{}\" message", clip(other)));
                Ok(Reply::Nothing)
            }
            None => Err(format!("chat: not a chat message: {}", clip(json)).into()),
        }
    }

    /// Counts delivery `seq`: whether it is the first delivery of that
    /// number (a reorder is, a duplicate is not).
    fn deliver(&mut self, seq: u64, stats: &mut Stats) -> bool {
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            if self.holes.len() < MAX_HOLES {
                self.holes.push((self.next, seq));
            } else {
                self.lost_holes += seq - self.next;
            }
            self.next = seq + 1;
        } else if let Some(i) = self.holes.iter().position(|&(a, b)| a <= seq && seq < b) {
            let (a, b) = self.holes.swap_remove(i);
            for part in [(a, seq), (seq + 1, b)] {
                if part.0 < part.1 {
                    self.holes.push(part);
                }
            }
            stats.reorders += 1;
            stats.error("chat: delivered out of room sequence order");
        } else {
            stats.duplicates += 1;
            stats.error("chat: delivered twice");
            return false;
        }
        self.unique += 1;
        true
    }

    /// At the end of the run, with `published` messages sent to this
    /// member's room in all: counts what never came.
    pub(crate) fn tally(&self, published: u64, stats: &mut Stats) {
        let gaps = self.lost_holes + self.holes.iter().map(|&(a, b)| b - a).sum::<u64>();
        stats.gaps += gaps;
        stats.errors_n(
            "chat: a room sequence number skipped, never delivered",
            gaps,
        );
        let tail = published.saturating_sub(self.unique + gaps);
        stats.undelivered += tail;
        stats.errors_n(
            "chat: published but not delivered to a member by the end",
            tail,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_requests() {
        assert_eq!(text(12, 345, 10), "12.345xxxx");
        assert_eq!(text(12, 345, 2), "12.345");
        assert_eq!(sender("12.345xxxx"), Some((12, 345)));
        assert_eq!(sender("hello"), None);
        assert_eq!(
            publish("r-1", "0.1"),
            r#"{"type":"message","room":"r-1","text":"0.1"}"#
        );
        let m = r#"{"type":"message","room":"r-1","seq":17,"from":"3","text":"0.1x","ts":1}"#;
        assert_eq!(str_field(m, "type"), Some("message"));
        assert_eq!(str_field(m, "room"), Some("r-1"));
        assert_eq!(num_field(m, "seq"), Some(17));
        assert_eq!(str_field(m, "text"), Some("0.1x"));
        assert_eq!(num_field(m, "nope"), None);
    }

    fn member() -> Member {
        Member {
            room: 0,
            join_sent: true,
            joined: true,
            next: 1,
            holes: Vec::new(),
            lost_holes: 0,
            unique: 0,
        }
    }

    #[test]
    fn every_number_once_and_in_order() {
        let mut s = Stats::new();
        let mut m = member();
        for seq in 1..=5 {
            assert!(m.deliver(seq, &mut s));
        }
        m.tally(5, &mut s);
        assert_eq!(s.error_count, 0);
        assert_eq!(m.unique, 5);
    }

    #[test]
    fn gaps_duplicates_reorders_and_a_missing_tail_are_errors() {
        let mut s = Stats::new();
        let mut m = member();
        // 1 2 5 3 3 7: 3 late (reorder), 3 again (duplicate), 4 and 6
        // never (gaps), 8 never (tail: 8 were published).
        for seq in [1, 2, 5, 3] {
            assert!(m.deliver(seq, &mut s));
        }
        assert!(!m.deliver(3, &mut s));
        assert!(m.deliver(7, &mut s));
        m.tally(8, &mut s);
        assert_eq!(
            (s.reorders, s.duplicates, s.gaps, s.undelivered),
            (1, 1, 2, 1)
        );
        assert_eq!(s.error_count, 5);
    }
}
