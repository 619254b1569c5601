//! The conformance suite and the lifecycle property test on PostgreSQL (`ORCH_PG_URL`).

mod pg {
    orch_tests::conformance_suite!(
        orch_tests::harness::ServerHarness::postgres(),
        #[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
    );
}

orch_tests::transactional_push_case!(
    pg_transactional_push,
    orch_tests::harness::ServerHarness::postgres(),
    orch_diesel_pg::PgStore,
    orch_diesel_pg::diesel_async::AsyncPgConnection,
    #[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
);

/// LISTEN/NOTIFY: a push through another store (another pool, as from another
/// process) wakes an idle worker long before its 10 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn pg_idle_worker_wakes_on_remote_push() {
    use orch_tests::harness::{Harness, ServerHarness};
    let Some(harness) = ServerHarness::postgres() else { return };
    let prefix = ServerHarness::fresh_prefix();
    let worker_store = harness.open(&prefix, 4).await.unwrap();
    worker_store.migrate().await.unwrap();
    let pusher = orch::Orch::new(harness.store_with_prefix(&prefix).await.unwrap());
    orch_tests::wake::idle_worker_wakes_on_push(worker_store, pusher).await;
}
