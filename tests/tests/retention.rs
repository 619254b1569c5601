//! Retention over 100,000 finished commands on every backend: `prune_finished` in the
//! worker's batches deletes exactly the commands past the age, keeps the recent, running
//! and pending ones, and each batch (one transaction, the only span in which pruning
//! holds locks) stays under the README's bound of 2 s.

use std::sync::Arc;
use std::time::Duration;

use orch::store::PRUNE_BATCH;
use orch::{Clock, ManualClock, NewCommand, Orch, State, SystemClock, Timestamp};
use orch_tests::harness::{Harness, ServerHarness, SqliteHarness};

const OLD: u64 = 100_000;
/// The README's bound on one batch.
const BATCH_BOUND: Duration = Duration::from_secs(2);

async fn prune_many(h: &dyn Harness) {
    let backend = h.backend();
    let (store, location) = h.located_store().await;
    let t0 = Timestamp::from_millis(1_900_000_000_000);
    let t1 = t0 + Duration::from_secs(3_600);
    let pusher = Orch::new(Arc::clone(&store)).with_clock(Arc::new(ManualClock::new(t0)));
    let started = SystemClock.now();
    for chunk in 0..OLD / 1_000 {
        let batch = (0..1_000).map(|n| NewCommand::raw("old", serde_json::json!({ "n": chunk * 1_000 + n })));
        pusher.push_many(batch.collect()).await.unwrap();
    }
    // Finished an hour before the cutoff, as a worker would have left them.
    h.sql_execute(
        &location,
        "UPDATE {commands} SET state = 'succeeded', attempts = 1, output = 'null', finished_at = scheduled_at + 1000",
    )
    .await
    .unwrap();
    let recent_pusher = Orch::new(Arc::clone(&store)).with_clock(Arc::new(ManualClock::new(t1)));
    let recent: Vec<_> = (0..10).map(|n| NewCommand::raw("recent", serde_json::json!({ "n": n }))).collect();
    recent_pusher.push_many(recent).await.unwrap();
    h.sql_execute(
        &location,
        &format!(
            "UPDATE {{commands}} SET state = 'succeeded', finished_at = {} WHERE name = 'recent'",
            t1.as_micros()
        ),
    )
    .await
    .unwrap();
    let pending = pusher.push_new(NewCommand::raw("pending", serde_json::json!({}))).await.unwrap();
    let setup = SystemClock.now().saturating_duration_since(started);

    let cutoff = t0 + Duration::from_secs(1_800);
    let (mut pruned, mut batches, mut slowest) = (0u64, 0u32, Duration::ZERO);
    let pruning = SystemClock.now();
    loop {
        let before = SystemClock.now();
        let n = store.prune_finished(cutoff, PRUNE_BATCH).await.unwrap().expect("nobody else prunes");
        slowest = slowest.max(SystemClock.now().saturating_duration_since(before));
        pruned += n;
        batches += 1;
        if n == 0 {
            break;
        }
    }
    let total = SystemClock.now().saturating_duration_since(pruning);
    eprintln!(
        "{backend}: {pruned} pruned in {batches} batches of at most {PRUNE_BATCH}, {total:?} in all, \
         slowest batch {slowest:?} (setup {setup:?})"
    );
    assert_eq!(pruned, OLD, "{backend}");
    let counts = h.sql_state_counts(&location).await;
    assert_eq!(counts.get("succeeded"), Some(&10), "{backend}: the recent ones are kept: {counts:?}");
    assert_eq!(counts.get("pending"), Some(&1), "{backend}: {counts:?}");
    assert_eq!(store.get(pending).await.unwrap().unwrap().state, State::Pending);
    assert!(slowest <= BATCH_BOUND, "{backend}: a batch held its transaction {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_prunes_100k_in_short_batches() {
    prune_many(&SqliteHarness::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn postgres_prunes_100k_in_short_batches() {
    let Some(h) = ServerHarness::postgres() else { return };
    prune_many(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_prunes_100k_in_short_batches() {
    let Some(h) = ServerHarness::mysql() else { return };
    prune_many(&h).await;
}
