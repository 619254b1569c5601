//! The conformance suite and the lifecycle property test on MySQL/MariaDB (`ORCH_MYSQL_URL`).

mod mysql {
    orch_tests::conformance_suite!(
        orch_tests::harness::ServerHarness::mysql(),
        #[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
    );
}

orch_tests::transactional_push_case!(
    mysql_transactional_push,
    orch_tests::harness::ServerHarness::mysql(),
    orch_diesel_mysql::MysqlStore,
    orch_diesel_mysql::diesel_async::AsyncMysqlConnection,
    #[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
);

/// MySQL has no cross-process notification; a push through another client on the same
/// store in this process wakes an idle worker long before its 10 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_idle_worker_wakes_on_local_push() {
    use orch_tests::harness::ServerHarness;
    let Some(harness) = ServerHarness::mysql() else { return };
    let store = harness.open(&ServerHarness::fresh_prefix(), 4).await.unwrap();
    store.migrate().await.unwrap();
    let pusher = orch::Orch::new(std::sync::Arc::clone(&store));
    orch_tests::wake::idle_worker_wakes_on_push(store, pusher).await;
}
