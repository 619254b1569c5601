//! The conformance suite and the lifecycle property test on SQLite.

mod sqlite {
    orch_tests::conformance_suite!(Some(orch_tests::harness::SqliteHarness::new()));
}

/// A push through another client on the same store wakes an idle worker at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_idle_worker_wakes_on_local_push() {
    use orch_tests::harness::{Harness, SqliteHarness};
    let harness = SqliteHarness::new();
    let store = harness.store().await;
    let pusher = orch::Orch::new(std::sync::Arc::clone(&store));
    orch_tests::wake::idle_worker_wakes_on_push(store, pusher).await;
}
