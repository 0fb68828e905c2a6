//! The chat's own limits and switches ([`ChatConfig`]).

use crate::{HISTORY_PER_ROOM, MAX_HISTORIES};

/// Limits and switches of a [`Chat`](crate::Chat), on top of the server's
/// [`wsloop::Config`]. The defaults are safe on the public internet.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// Longest client message, in bytes, checked before it is parsed: a
    /// longer one gets an `error` (the connection stays open) [16 KiB].
    /// The server's `max_message_size` still bounds what is read at all.
    pub max_input: usize,
    /// Whether clients may send `broadcast` (to every connection) [true].
    /// Off, a `broadcast` gets an `error`.
    pub broadcast: bool,
    /// Messages kept per room for replay [`HISTORY_PER_ROOM`].
    pub history_per_room: usize,
    /// Rooms one server keeps history for (in memory), or may have used
    /// within the history's time to live (with Redis: past it, a join to
    /// a room this server has not used gets an `error`) [`MAX_HISTORIES`].
    pub max_rooms: usize,
    /// With Redis: bytes of messages waiting for Redis (or in flight)
    /// before a sender is refused with an error to retry [16 MiB].
    pub redis_queue_bytes: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_input: DEFAULT_MAX_INPUT,
            broadcast: true,
            history_per_room: HISTORY_PER_ROOM,
            max_rooms: MAX_HISTORIES,
            redis_queue_bytes: 16 << 20,
        }
    }
}

/// The default [`ChatConfig::max_input`]: a [`MAX_TEXT`](crate::MAX_TEXT)
/// text with every character escaped still fits.
pub const DEFAULT_MAX_INPUT: usize = 16 << 10;

impl ChatConfig {
    /// Checks the values; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_input < 64 {
            return Err(format!(
                "chat max_input {} is below 64 bytes: no message would fit",
                self.max_input
            ));
        }
        if self.history_per_room == 0 || self.history_per_room > MAX_HISTORY_PER_ROOM {
            return Err(format!(
                "chat history_per_room {} is not between 1 and {MAX_HISTORY_PER_ROOM}",
                self.history_per_room
            ));
        }
        if self.max_rooms == 0 {
            return Err("chat max_rooms must be at least 1".into());
        }
        Ok(())
    }
}

/// Most messages a room may keep ([`ChatConfig::history_per_room`]): a
/// replay is one reply from Redis, and one burst of frames to a client.
pub const MAX_HISTORY_PER_ROOM: usize = 100_000;
