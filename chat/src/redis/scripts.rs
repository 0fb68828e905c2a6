//! The Lua scripts, the keys and channels they use, and running them: a
//! pipeline of fetches, and a pipeline of messages (broadcasts included).
//!
//! Keys of a room share the hash tag `{ROOM}`, so they stay in one Cluster
//! slot (each script touches one room's keys only):
//! - `wsloop:chat:{ROOM}:meta`: hash of `epoch` and `seq` (the last one);
//! - `wsloop:chat:{ROOM}:log`: stream of the kept messages, ids `SEQ-0`;
//! - `wsloop:chat:{ROOM}:ids`: sorted set of the kept messages' ids, by
//!   seq: a message sent again (a retry after a lost reply) is not stored
//!   or published twice.
//!
//! All three expire after the history's TTL without use. The broadcast
//! stream is kept the same way (the same scripts and limits), in
//! `wsloop:chat:broadcast:{all}:meta`, `:log` and `:ids` (no room's key
//! starts with `broadcast:`), published on `wsloop:chat:all`.

use std::sync::Arc;
use std::time::Duration;

use log::warn;
use redis::{Connection, RedisError, Script, Value};

use super::jobs::{Event, Fetched, Job, NOTHING};
use crate::bus::BROADCASTS;

/// Every key and channel starts with this.
pub const PREFIX: &str = "wsloop:chat:";
/// A room's history (and its sequence numbers) expires after this long
/// without messages or joins; it then starts over with a new epoch.
pub const HISTORY_TTL_SECS: u64 = 24 * 3600;

/// Stores and publishes a room message once: one atomic step.
/// KEYS: meta, log, ids. ARGV: epoch for a new history, messages kept,
/// TTL, channel, JSON before the seq, JSON after it, message id.
/// Returns the message's seq (the stored one if the id was seen).
const APPEND_LUA: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2], KEYS[3])
end
local seen = redis.call('ZSCORE', KEYS[3], ARGV[7])
if seen then return tonumber(seen) end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local json = ARGV[5] .. seq .. ARGV[6]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], seq .. '-0', 'm', json)
redis.call('ZADD', KEYS[3], seq, ARGV[7])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[4], epoch .. ' ' .. seq .. ' ' .. json)
return seq
";

/// Where a room stands and the kept messages after ARGV[2] (-1: none).
/// KEYS: meta, log, ids. ARGV: epoch for a new history, after, TTL, the
/// epoch the caller's `after` belongs to ('' if unknown): for another one,
/// all kept messages are returned. Returns {epoch, last, oldest, the
/// `after` used, seqs, texts}.
const FETCH_LUA: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2], KEYS[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local oldest = last + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^%d+')) end
local after = tonumber(ARGV[2])
if after >= 0 and ARGV[4] ~= '' and ARGV[4] ~= epoch then after = 0 end
local seqs, texts = {}, {}
if after >= 0 and after < last then
  local from = math.max(after + 1, oldest)
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], string.format('%d', from), '+')) do
    seqs[#seqs + 1] = tonumber(string.match(e[1], '^%d+'))
    texts[#texts + 1] = e[2][2]
  end
end
return {epoch, last, oldest, after, seqs, texts}
";

/// The keys of `room` (or of the broadcast stream): meta, log, ids.
pub(super) fn room_keys(room: &str) -> [String; 3] {
    if room == BROADCASTS {
        return ["meta", "log", "ids"].map(|k| format!("{PREFIX}broadcast:{{all}}:{k}"));
    }
    ["meta", "log", "ids"].map(|k| format!("{PREFIX}{{{room}}}:{k}"))
}
/// The channel of `room` (or of the broadcast stream).
pub(super) fn room_channel(room: &str) -> String {
    if room == BROADCASTS {
        return all_channel();
    }
    format!("{PREFIX}room:{room}")
}
pub(super) fn all_channel() -> String {
    format!("{PREFIX}all")
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut r = vec![0u8; bytes];
    wsloop::rand::fill(&mut r);
    r.iter().map(|b| format!("{b:02x}")).collect()
}

/// The scripts, and the history limits they apply.
pub(super) struct Scripts {
    append: Script,
    fetch: Script,
    /// Messages kept per room.
    pub(super) keep: usize,
    pub(super) ttl_secs: u64,
}

impl Scripts {
    pub(super) fn new(keep: usize, ttl: Duration) -> Self {
        Scripts {
            append: Script::new(APPEND_LUA),
            fetch: Script::new(FETCH_LUA),
            keep: keep.max(1),
            ttl_secs: ttl.as_secs().max(1),
        }
    }

    /// Loads them into Redis's script cache, so pipelined EVALSHAs find
    /// them.
    pub(super) fn load(&self, con: &mut Connection) -> redis::RedisResult<()> {
        self.append.load(con)?;
        self.fetch.load(con)?;
        Ok(())
    }
}

/// Jobs of one kind taken together go out in one pipeline of at most this
/// many commands (one round trip; each still atomic).
pub(super) const BATCH: usize = 256;

/// `after` as the fetch script takes it.
fn after_arg(after: u64) -> i64 {
    if after == NOTHING {
        -1
    } else {
        i64::try_from(after).unwrap_or(i64::MAX)
    }
}

/// Reads where each room stands in Redis (the fetch script), in one
/// pipeline. Returns one event per fetch: its result, or the job bounced
/// if Redis refused it. `Err` if the connection failed (fetches change
/// nothing that matters: they may be run again).
pub(super) fn run_fetches(
    con: &mut Connection,
    s: &Scripts,
    fetches: &[Job],
) -> redis::RedisResult<Vec<Event>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for job in fetches {
        let Job::Fetch { room, after, hint } = job else {
            unreachable!("only fetches here")
        };
        let [meta, log, ids] = room_keys(room);
        pipe.cmd("EVALSHA")
            .arg(s.fetch.get_hash())
            .arg(3)
            .arg(meta)
            .arg(log)
            .arg(ids)
            .arg(random_hex(6))
            .arg(after_arg(*after))
            .arg(s.ttl_secs)
            .arg(hint.as_deref().unwrap_or(""));
    }
    let replies: Vec<Value> = pipe.query(con)?;
    if replies.len() != fetches.len() {
        return Err(short_reply(replies.len(), fetches.len()));
    }
    type Reply = (String, u64, u64, i64, Vec<u64>, Vec<String>);
    let mut events = Vec::with_capacity(fetches.len());
    for (job, reply) in fetches.iter().zip(replies) {
        let Job::Fetch { room, after, hint } = job else {
            unreachable!("only fetches here")
        };
        let parsed: redis::RedisResult<Reply> = match reply {
            Value::ServerError(e) => Err(e.into()),
            v => redis::from_redis_value(v).map_err(RedisError::from),
        };
        events.push(match parsed {
            Ok((epoch, last, oldest, used, seqs, texts)) => Event::Fetched {
                room: room.clone(),
                // What the script used: 0 if `hint` was not the epoch.
                after: u64::try_from(used).unwrap_or(NOTHING),
                result: Fetched {
                    epoch: epoch.into(),
                    last,
                    oldest,
                    entries: seqs
                        .into_iter()
                        .zip(texts)
                        .map(|(s, t)| (s, Arc::from(t)))
                        .collect(),
                },
            },
            Err(e) => {
                warn!("redis publisher: fetch of room {room:?} failed: {e}");
                Event::Bounced(Job::Fetch {
                    room: room.clone(),
                    after: *after,
                    hint: hint.clone(),
                })
            }
        });
    }
    Ok(events)
}

fn short_reply(got: usize, sent: usize) -> RedisError {
    RedisError::from(std::io::Error::other(format!(
        "{got} replies to a pipeline of {sent}"
    )))
}

/// Whether Redis ran a command: a NOSCRIPT error means it did not (the
/// script cache was flushed: load and send again).
enum Outcome {
    Done,
    NoScript,
    Refused,
}

fn outcome(reply: &Value) -> Outcome {
    match reply {
        Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
            Outcome::NoScript
        }
        Value::ServerError(e) => {
            warn!("redis publisher: Redis refused a message: {e:?}");
            Outcome::Refused
        }
        _ => Outcome::Done,
    }
}

/// Sends messages (room messages and broadcasts) in one pipeline. `Ok` with the jobs
/// Redis refused (they did not run: delivered here only); `Err` if the
/// connection failed, when any of them may or may not have run: the
/// caller sends the same batch again (the ids make that harmless).
pub(super) fn run_batch(
    con: &mut Connection,
    s: &Scripts,
    batch: &[Job],
) -> redis::RedisResult<Vec<usize>> {
    let send = |con: &mut Connection, which: &[usize]| -> redis::RedisResult<Vec<Value>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in which {
            match &batch[i] {
                Job::Publish(m) => {
                    let [meta, log, ids] = room_keys(&m.room);
                    pipe.cmd("EVALSHA")
                        .arg(s.append.get_hash())
                        .arg(3)
                        .arg(meta)
                        .arg(log)
                        .arg(ids)
                        .arg(random_hex(6))
                        .arg(s.keep)
                        .arg(s.ttl_secs)
                        .arg(room_channel(&m.room))
                        .arg(&m.head)
                        .arg(&m.tail)
                        .arg(&m.id);
                }
                Job::Fetch { .. } => unreachable!("fetches are not batched with messages"),
            }
        }
        let replies: Vec<Value> = pipe.query(con)?;
        if replies.len() != which.len() {
            return Err(short_reply(replies.len(), which.len()));
        }
        Ok(replies)
    };
    let all: Vec<usize> = (0..batch.len()).collect();
    let mut refused = Vec::new();
    let mut again = Vec::new();
    for (i, reply) in all.iter().zip(send(con, &all)?) {
        match outcome(&reply) {
            Outcome::Done => {}
            Outcome::NoScript => again.push(*i),
            Outcome::Refused => refused.push(*i),
        }
    }
    if !again.is_empty() {
        s.load(con)?;
        for (i, reply) in again.iter().zip(send(con, &again)?) {
            if !matches!(outcome(&reply), Outcome::Done) {
                refused.push(*i);
            }
        }
    }
    Ok(refused)
}
