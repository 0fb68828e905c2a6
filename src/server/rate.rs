//! The per-connection token bucket behind `Config::rate_limit`.

use std::time::Instant;

use crate::config::RateLimit;

/// Tokens left for messages and bytes, refilled by elapsed time.
#[derive(Debug)]
pub(super) struct Bucket {
    messages: f64,
    bytes: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one message of `len` bytes; false if over the limit.
    pub(super) fn take(
        slot: &mut Option<Bucket>,
        limit: &RateLimit,
        len: usize,
        now: Instant,
    ) -> bool {
        let b = slot.get_or_insert_with(|| Bucket {
            messages: limit.message_burst,
            bytes: limit.byte_burst,
            at: now,
        });
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = now;
        b.messages = (b.messages + dt * limit.messages_per_sec).min(limit.message_burst);
        b.bytes = (b.bytes + dt * limit.bytes_per_sec).min(limit.byte_burst);
        if b.messages < 1.0 || b.bytes < len as f64 {
            return false;
        }
        b.messages -= 1.0;
        b.bytes -= len as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let limit = RateLimit::new(10.0, 1000.0);
        let t0 = Instant::now();
        let mut slot = None;
        for _ in 0..10 {
            assert!(Bucket::take(&mut slot, &limit, 10, t0));
        }
        assert!(
            !Bucket::take(&mut slot, &limit, 10, t0),
            "burst of 10 used up"
        );
        // 100 ms later one message's worth has come back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(Bucket::take(&mut slot, &limit, 10, t1));
        assert!(!Bucket::take(&mut slot, &limit, 10, t1));
        // Bytes are limited too: 2000 bytes never fit a 1000-byte burst.
        let t2 = t1 + Duration::from_secs(10);
        assert!(!Bucket::take(&mut slot, &limit, 2000, t2));
        assert!(Bucket::take(&mut slot, &limit, 1000, t2));
    }
}
