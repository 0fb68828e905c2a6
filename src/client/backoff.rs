//! [`Backoff`]: how long a reconnecting client waits between attempts.

use std::time::Duration;

/// Exponential backoff with jitter: `base * factor^attempt`, capped, each
/// delay moved by a random ±`jitter` fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay. Default 1 s.
    pub base: Duration,
    /// Growth per attempt. Default 2.
    pub factor: f64,
    /// Longest delay. Default 30 s.
    pub cap: Duration,
    /// Jitter as a fraction of the delay. Default 0.1 (±10%).
    pub jitter: f64,
    /// Attempts before giving up; `None` retries forever. Default 10.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(30),
            jitter: 0.1,
            max_attempts: Some(10),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based), with `unit` a
    /// number in [0, 1) choosing the jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self.factor.max(1.0).powi(attempt.min(64) as i32);
        let raw = (self.base.as_secs_f64() * exp).min(self.cap.as_secs_f64());
        let j = 1.0 + self.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((raw * j).max(0.0))
    }

    /// A random jitter unit in [0, 1).
    pub fn random_unit() -> f64 {
        let mut b = [0u8; 8];
        crate::rand::fill(&mut b);
        (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_schedule() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(b.delay(4, 0.5), Duration::from_secs(16));
        assert_eq!(b.delay(5, 0.5), Duration::from_secs(30));
        assert_eq!(b.delay(40, 0.5), Duration::from_secs(30));
        let lo = b.delay(2, 0.0).as_secs_f64();
        let hi = b.delay(2, 0.999_999).as_secs_f64();
        assert!(
            (lo - 3.6).abs() < 1e-9 && (hi - 4.4).abs() < 1e-3,
            "{lo} {hi}"
        );
        for _ in 0..100 {
            let u = Backoff::random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
