//! The Lua scripts, the keys and channels they use, and running them: a
//! fetch, and a pipeline of publishes and broadcasts.

use std::sync::Arc;

use log::warn;
use redis::{Connection, RedisError, Script, Value};

use super::jobs::{Event, Fetched, Job, NOTHING};
use crate::HISTORY_PER_ROOM;

/// Every key and channel starts with this.
pub const PREFIX: &str = "wsloop:chat:";
/// A room's history (and its sequence numbers) expires after this long
/// without messages or joins; it then starts over with a new epoch.
pub const HISTORY_TTL_SECS: u64 = 24 * 3600;

/// Assigns the next seq, keeps the message, publishes it: one atomic step.
/// KEYS: meta hash (seq, epoch), stream. ARGV: epoch for a new history,
/// messages kept, TTL, channel, JSON before the seq, JSON after it.
const APPEND_LUA: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local json = ARGV[5] .. seq .. ARGV[6]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], seq .. '-0', 'm', json)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], epoch .. ' ' .. seq .. ' ' .. json)
return seq
";

/// Where a room stands and the kept messages after ARGV[2] (-1: none).
/// KEYS as above. ARGV: epoch for a new history, after, TTL, the epoch the
/// caller's `after` belongs to ('' if unknown): for another one, all kept
/// messages are returned. Returns {epoch, last, oldest, the `after` used,
/// seqs, texts}.
const FETCH_LUA: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
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
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], tostring(from), '+')) do
    seqs[#seqs + 1] = tonumber(string.match(e[1], '^%d+'))
    texts[#texts + 1] = e[2][2]
  end
end
return {epoch, last, oldest, after, seqs, texts}
";

fn meta_key(room: &str) -> String {
    format!("{PREFIX}meta:{room}")
}
fn log_key(room: &str) -> String {
    format!("{PREFIX}log:{room}")
}
pub(super) fn room_channel(room: &str) -> String {
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

pub(super) struct Scripts {
    append: Script,
    fetch: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            append: Script::new(APPEND_LUA),
            fetch: Script::new(FETCH_LUA),
        }
    }

    /// Loads both into Redis's script cache, so pipelined EVALSHAs find
    /// them.
    pub(super) fn load(&self, con: &mut Connection) -> redis::RedisResult<()> {
        self.append.load(con)?;
        self.fetch.load(con)?;
        Ok(())
    }
}

/// Room messages and broadcasts queued together go out in one pipeline of
/// at most this many commands (one round trip; each still atomic).
pub(super) const BATCH: usize = 256;

/// Reads where `room` stands in Redis (the fetch script).
pub(super) fn run_fetch(
    con: &mut Connection,
    s: &Scripts,
    room: &Arc<str>,
    after: u64,
    hint: Option<&str>,
) -> redis::RedisResult<Event> {
    let after_arg: i64 = if after == NOTHING {
        -1
    } else {
        i64::try_from(after).unwrap_or(i64::MAX)
    };
    type Reply = (String, u64, u64, i64, Vec<u64>, Vec<String>);
    let (epoch, last, oldest, used, seqs, texts): Reply = s
        .fetch
        .key(meta_key(room))
        .key(log_key(room))
        .arg(random_hex(6))
        .arg(after_arg)
        .arg(HISTORY_TTL_SECS)
        .arg(hint.unwrap_or(""))
        .invoke(con)?;
    let entries = seqs
        .into_iter()
        .zip(texts)
        .map(|(s, t)| (s, Arc::from(t)))
        .collect();
    Ok(Event::Fetched {
        room: room.clone(),
        // What the script used: 0 if `hint` was not the room's epoch.
        after: u64::try_from(used).unwrap_or(NOTHING),
        result: Fetched {
            epoch: epoch.into(),
            last,
            oldest,
            entries,
        },
    })
}

/// Sends publishes and broadcasts in one pipeline. Returns the jobs Redis
/// refused (delivered locally then); `Err` with all of them if the
/// connection failed.
pub(super) fn run_batch(
    con: &mut Connection,
    s: &Scripts,
    batch: Vec<Job>,
) -> Result<Vec<Job>, (RedisError, Vec<Job>)> {
    let send = |con: &mut Connection, jobs: &[Job]| -> redis::RedisResult<Vec<Value>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for job in jobs {
            match job {
                Job::Publish(m) => {
                    pipe.cmd("EVALSHA")
                        .arg(s.append.get_hash())
                        .arg(2)
                        .arg(meta_key(&m.room))
                        .arg(log_key(&m.room))
                        .arg(random_hex(6))
                        .arg(HISTORY_PER_ROOM)
                        .arg(HISTORY_TTL_SECS)
                        .arg(room_channel(&m.room))
                        .arg(&m.head)
                        .arg(&m.tail);
                }
                Job::Broadcast { json, .. } => {
                    pipe.cmd("PUBLISH").arg(all_channel()).arg(json);
                }
                Job::Fetch { .. } => unreachable!("fetches are not batched"),
            }
        }
        pipe.query(con)
    };
    let replies = match send(con, &batch) {
        Ok(r) if r.len() == batch.len() => r,
        Ok(r) => {
            let e = RedisError::from(std::io::Error::other(format!(
                "{} replies to a pipeline of {}",
                r.len(),
                batch.len()
            )));
            return Err((e, batch));
        }
        Err(e) => return Err((e, batch)),
    };
    let mut refused = Vec::new();
    let mut again = Vec::new();
    for (job, reply) in batch.into_iter().zip(replies) {
        match reply {
            Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
                again.push(job);
            }
            Value::ServerError(e) => {
                warn!("redis publisher: Redis refused a message: {e:?}");
                refused.push(job);
            }
            _ => {}
        }
    }
    if !again.is_empty() {
        // The script cache was flushed: load it and send those again
        // (NOSCRIPT means they did not run).
        if let Err(e) = s.append.load(con) {
            again.extend(refused);
            return Err((e, again));
        }
        match send(con, &again) {
            Ok(replies) => {
                for (job, reply) in again.into_iter().zip(replies) {
                    if let Value::ServerError(e) = reply {
                        warn!("redis publisher: Redis refused a message: {e:?}");
                        refused.push(job);
                    }
                }
            }
            Err(e) => {
                again.extend(refused);
                return Err((e, again));
            }
        }
    }
    Ok(refused)
}
