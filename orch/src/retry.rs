//! Exponential backoff with jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How long to wait before the next attempt of a command that failed.
///
/// The delay before attempt `n + 1` (after `n` failed attempts) is
/// `min(max_delay, initial_delay * multiplier^(n - 1))`, then scaled by a random
/// factor in `[1 - jitter, 1 + jitter]` and capped at `max_delay` again. The random
/// factor comes from a seed (the worker uses the command id and attempt number), so
/// the same inputs always give the same delay.
///
/// ```
/// use std::time::Duration;
/// use orch::RetryPolicy;
///
/// let policy = RetryPolicy {
///     initial_delay: Duration::from_secs(1),
///     max_delay: Duration::from_secs(60),
///     multiplier: 2.0,
///     jitter: 0.0,
/// };
/// assert_eq!(policy.delay(1, 7), Duration::from_secs(1));
/// assert_eq!(policy.delay(3, 7), Duration::from_secs(4));
/// assert_eq!(policy.delay(30, 7), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// The delay after the first failed attempt. Default: 1 s.
    #[serde(with = "millis")]
    pub initial_delay: Duration,
    /// The largest delay, whatever the attempt. Default: 5 min.
    #[serde(with = "millis")]
    pub max_delay: Duration,
    /// The growth factor per attempt, at least 1. Default: 2.
    pub multiplier: f64,
    /// The jitter factor in `[0, 1]`: 0.2 spreads each delay over ±20 %. Default: 0.2.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A policy that retries at once, with no delay.
    pub const fn immediate() -> Self {
        RetryPolicy { initial_delay: Duration::ZERO, max_delay: Duration::ZERO, multiplier: 1.0, jitter: 0.0 }
    }

    /// A policy with a fixed delay and no jitter.
    pub const fn fixed(delay: Duration) -> Self {
        RetryPolicy { initial_delay: delay, max_delay: delay, multiplier: 1.0, jitter: 0.0 }
    }

    /// Checks that the numbers make sense.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::invalid_config(format!(
                "retry multiplier must be a finite number >= 1, got {}",
                self.multiplier
            )));
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(Error::invalid_config(format!(
                "retry jitter must be between 0 and 1, got {}",
                self.jitter
            )));
        }
        if self.initial_delay > self.max_delay {
            return Err(Error::invalid_config(format!(
                "retry initial delay {:?} is larger than max delay {:?}",
                self.initial_delay, self.max_delay
            )));
        }
        Ok(())
    }

    /// The delay before the next attempt after `failed_attempts` failures (1 for the
    /// first failure), with jitter drawn deterministically from `seed`.
    pub fn delay(&self, failed_attempts: u32, seed: u64) -> Duration {
        let (low, high) = self.bounds(failed_attempts);
        if high <= low {
            return low;
        }
        let unit = unit_interval(splitmix64(seed ^ u64::from(failed_attempts).wrapping_mul(0x9E37_79B9)));
        let span = (high - low).as_secs_f64();
        low + Duration::from_secs_f64(span * unit)
    }

    /// The smallest and largest delay [`RetryPolicy::delay`] can return for `failed_attempts`.
    pub fn bounds(&self, failed_attempts: u32) -> (Duration, Duration) {
        let exponent = failed_attempts.saturating_sub(1).min(1_000) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let max = self.max_delay.as_secs_f64();
        let base = if base.is_finite() { base.min(max) } else { max };
        let jitter = self.jitter.clamp(0.0, 1.0);
        let low = (base * (1.0 - jitter)).max(0.0);
        let high = (base * (1.0 + jitter)).min(max).max(low);
        (Duration::from_secs_f64(low), Duration::from_secs_f64(high))
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit_interval(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn grows_exponentially_and_caps() {
        let p = policy(0.0);
        let delays: Vec<_> = (1..=9).map(|n| p.delay(n, 1).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(p.delay(u32::MAX, 1), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_in_bounds_and_spreads() {
        let p = policy(0.5);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..1_000u64 {
            let d = p.delay(3, seed);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(600), "{d:?}");
            seen.insert(d.as_millis() / 50);
        }
        assert!(seen.len() >= 6, "jitter should spread delays, got buckets {seen:?}");
    }

    #[test]
    fn deterministic_when_seeded() {
        let p = policy(0.3);
        assert_eq!(p.delay(2, 42), p.delay(2, 42));
        assert_ne!(p.delay(2, 42), p.delay(2, 43));
    }

    #[test]
    fn jitter_never_exceeds_max_delay() {
        let p = policy(1.0);
        for seed in 0..500 {
            assert!(p.delay(20, seed) <= Duration::from_secs(10));
        }
    }

    #[test]
    fn validation_rejects_nonsense() {
        assert!(RetryPolicy { multiplier: 0.5, ..policy(0.1) }.validate().is_err());
        assert!(RetryPolicy { jitter: 1.5, ..policy(0.1) }.validate().is_err());
        assert!(RetryPolicy { jitter: f64::NAN, ..policy(0.1) }.validate().is_err());
        assert!(RetryPolicy { initial_delay: Duration::from_secs(20), ..policy(0.1) }.validate().is_err());
        assert!(policy(0.1).validate().is_ok());
        assert!(RetryPolicy::default().validate().is_ok());
    }

    #[test]
    fn serializes_as_millis() {
        let json = serde_json::to_string(&policy(0.25)).unwrap();
        assert_eq!(json, r#"{"initial_delay":100,"max_delay":10000,"multiplier":2.0,"jitter":0.25}"#);
        let back: RetryPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, policy(0.25));
    }
}
