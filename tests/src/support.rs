//! Helpers for tests: waiting with a deadline, driving a manual clock, fast configs.

use std::future::Future;
use std::time::Duration;

use orch::{ManualClock, WorkerConfig};

/// How long any single wait in the suite may take before it fails the test.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, check, || {}).await
}

/// Moves `clock` forward by `step` between polls of `check` until it returns `Some`,
/// failing the test after [`WAIT`] of real time.
pub async fn drive_until<T, F, Fut>(clock: &ManualClock, step: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, check, || clock.advance(step)).await
}

async fn poll<T, F, Fut>(what: &str, mut check: F, mut between: impl FnMut()) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        between();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// A worker config for real-time tests: short intervals so outcomes come quickly.
pub fn fast_config(instance_key: &str) -> WorkerConfig {
    WorkerConfig {
        instance_key: instance_key.to_owned(),
        concurrency: 8,
        prefetch: 8,
        max_pull: 16,
        poll_interval: Duration::from_millis(20),
        lease_buffer: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(50),
        rescue_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        retention: Some(orch::DEFAULT_RETENTION),
        fire_schedules: true,
        worker_id: Some(format!("{instance_key}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])),
    }
}

/// A worker config for manual-clock tests: intervals in manual time.
pub fn manual_config(worker_id: &str) -> WorkerConfig {
    WorkerConfig {
        instance_key: orch::DEFAULT_TARGET.to_owned(),
        concurrency: 4,
        prefetch: 0,
        max_pull: 4,
        poll_interval: Duration::from_millis(100),
        lease_buffer: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(500),
        rescue_interval: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        retention: Some(orch::DEFAULT_RETENTION),
        fire_schedules: true,
        worker_id: Some(worker_id.to_owned()),
    }
}
