//! Time, injected.
//!
//! Every scheduling decision in `orch` (is a command due, has a lease expired, when
//! does the next attempt run) reads time from a [`Clock`]. Production uses
//! [`SystemClock`]; tests use [`ManualClock`], whose time moves only when the test
//! says so. This module is the only place that reads the wall clock.

use std::fmt;
use std::future::Future;
use std::ops::{Add, Sub};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A point in time: microseconds since the Unix epoch (UTC).
///
/// Stored as a plain integer in every backend, so comparisons in SQL are exact and
/// no database time zone setting can change their meaning.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis.saturating_mul(1000))
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch (rounded down).
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The time elapsed from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        if self.0 <= earlier.0 { Duration::ZERO } else { Duration::from_micros((self.0 - earlier.0) as u64) }
    }
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_micros(rhs)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_micros(rhs)))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Formats as RFC 3339 in UTC with microseconds, e.g. `2026-11-22T10:00:00.000000Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A future that completes when a clock reaches a deadline.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The source of time for every scheduling decision.
///
/// Implementations must be cheap to call and safe to share between tasks.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// A future that completes once [`Clock::now`] is at or past `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;
}

/// A shared, type-erased clock.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock of this machine, with tokio timers for sleeping.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one sanctioned read of the wall clock.
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(duration_micros(since))
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let wait = deadline.saturating_duration_since(self.now());
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock shifted by a fixed offset from another clock.
///
/// Useful to model a node whose clock runs ahead of (positive offset) or behind
/// (negative offset) its peers.
#[derive(Debug, Clone)]
pub struct OffsetClock {
    inner: SharedClock,
    offset_micros: i64,
}

impl OffsetClock {
    /// `inner` shifted forward by `ahead` (use [`OffsetClock::behind`] for a lagging clock).
    pub fn ahead(inner: SharedClock, ahead: Duration) -> Self {
        OffsetClock { inner, offset_micros: duration_micros(ahead) }
    }

    /// `inner` shifted backward by `behind`.
    pub fn behind(inner: SharedClock, behind: Duration) -> Self {
        OffsetClock { inner, offset_micros: -duration_micros(behind) }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.inner.now().0.saturating_add(self.offset_micros))
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        self.inner.sleep_until(Timestamp(deadline.0.saturating_sub(self.offset_micros)))
    }
}

/// A clock corrected by an offset that is measured, not fixed: the time of `inner`
/// plus whatever [`SyncedClock::set_offset`] last set.
///
/// [`crate::Orch`] keeps one in step with the database's clock (see
/// [`crate::Orch::sync_clock`]), so that processes whose own clocks disagree still
/// agree on due times and lease ends.
#[derive(Debug)]
pub struct SyncedClock {
    inner: SharedClock,
    offset_micros: std::sync::atomic::AtomicI64,
}

impl SyncedClock {
    /// `inner`, not yet corrected.
    pub fn new(inner: SharedClock) -> Self {
        SyncedClock { inner, offset_micros: std::sync::atomic::AtomicI64::new(0) }
    }

    /// The uncorrected clock.
    pub fn inner(&self) -> &SharedClock {
        &self.inner
    }

    /// The correction in microseconds (positive: this clock is ahead of `inner`).
    pub fn offset_micros(&self) -> i64 {
        self.offset_micros.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the correction in microseconds.
    pub fn set_offset(&self, micros: i64) {
        self.offset_micros.store(micros, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for SyncedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.inner.now().0.saturating_add(self.offset_micros()))
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        self.inner.sleep_until(Timestamp(deadline.0.saturating_sub(self.offset_micros())))
    }
}

/// A clock whose time moves only through [`ManualClock::advance`] and [`ManualClock::set`].
///
/// Sleepers wake when the time is moved past their deadline, so a test drives
/// timeouts, backoff and lease expiry exactly, with no real waiting.
///
/// ```
/// use std::time::Duration;
/// use orch::{Clock, ManualClock, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::from_millis(1_000));
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Timestamp::from_millis(3_000));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    now: Timestamp,
    sleepers: Vec<(Timestamp, oneshot::Sender<()>)>,
}

impl ManualClock {
    /// A manual clock starting at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock { state: Arc::new(Mutex::new(ManualState { now: start, sleepers: Vec::new() })) }
    }

    /// A manual clock starting at 2030-01-01T00:00:00Z, an arbitrary fixed point.
    pub fn starting_2030() -> Self {
        Self::new(Timestamp::from_micros(1_893_456_000_000_000))
    }

    /// Moves time forward by `by` and wakes every sleeper whose deadline has come.
    pub fn advance(&self, by: Duration) {
        let mut state = self.lock();
        let to = state.now + by;
        Self::set_locked(&mut state, to);
    }

    /// Sets the time (it may move backward) and wakes every sleeper whose deadline has come.
    pub fn set(&self, to: Timestamp) {
        let mut state = self.lock();
        Self::set_locked(&mut state, to);
    }

    /// The number of tasks currently sleeping on this clock.
    pub fn sleepers(&self) -> usize {
        let mut state = self.lock();
        state.sleepers.retain(|(_, tx)| !tx.is_closed());
        state.sleepers.len()
    }

    fn set_locked(state: &mut ManualState, to: Timestamp) {
        state.now = to;
        let mut keep = Vec::with_capacity(state.sleepers.len());
        for (deadline, tx) in state.sleepers.drain(..) {
            if deadline <= to {
                let _ = tx.send(());
            } else if !tx.is_closed() {
                keep.push((deadline, tx));
            }
        }
        state.sleepers = keep;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.lock().now
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let mut state = self.lock();
        if deadline <= state.now {
            return Box::pin(std::future::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        state.sleepers.push((deadline, tx));
        Box::pin(async move {
            // A dropped sender means the clock itself is gone; nothing will ever wake us.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp::from_micros(1_893_456_000_000_001).to_string(), "2030-01-01T00:00:00.000001Z");
        assert_eq!(Timestamp::from_millis(951_782_400_000).to_string(), "2000-02-29T00:00:00.000000Z");
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced_past_deadline() {
        let clock = ManualClock::new(Timestamp::from_millis(0));
        let sleep = clock.sleep_until(Timestamp::from_millis(100));
        let handle = tokio::spawn(sleep);
        clock.advance(Duration::from_millis(99));
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_millis(1));
        tokio::time::timeout(Duration::from_secs(5), handle).await.unwrap().unwrap();
        assert_eq!(clock.sleepers(), 0);
    }

    #[test]
    fn synced_clock_follows_its_offset() {
        let base = ManualClock::new(Timestamp::from_millis(10_000));
        let synced = SyncedClock::new(Arc::new(base.clone()));
        assert_eq!(synced.now(), Timestamp::from_millis(10_000));
        synced.set_offset(-2_500_000);
        assert_eq!(synced.now(), Timestamp::from_millis(7_500));
        base.advance(Duration::from_secs(1));
        assert_eq!(synced.now(), Timestamp::from_millis(8_500));
    }

    #[test]
    fn offset_clock_shifts_time() {
        let base = ManualClock::new(Timestamp::from_millis(10_000));
        let ahead = OffsetClock::ahead(Arc::new(base.clone()), Duration::from_secs(3));
        let behind = OffsetClock::behind(Arc::new(base), Duration::from_secs(3));
        assert_eq!(ahead.now(), Timestamp::from_millis(13_000));
        assert_eq!(behind.now(), Timestamp::from_millis(7_000));
    }
}
