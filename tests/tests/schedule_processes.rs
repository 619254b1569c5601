//! A schedule of every second fired by three worker processes on real clocks, on each
//! backend: every slot from the first on fires exactly once.

use orch_tests::harness::ServerHarness;

const BINARY: &str = env!("CARGO_BIN_EXE_orch-test-worker");
const PROCESSES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn postgres_processes_fire_each_slot_once() {
    let Some(harness) = ServerHarness::postgres() else { return };
    let prefix = ServerHarness::fresh_prefix();
    let store = harness.open(&prefix, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    orch_tests::multiprocess::run_schedule(BINARY, "postgres", harness.url(), &prefix, store, PROCESSES)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_processes_fire_each_slot_once() {
    let Some(harness) = ServerHarness::mysql() else { return };
    let prefix = ServerHarness::fresh_prefix();
    let store = harness.open(&prefix, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    orch_tests::multiprocess::run_schedule(BINARY, "mysql", harness.url(), &prefix, store, PROCESSES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_processes_fire_each_slot_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.db");
    let store = orch_sqlite::SqliteStore::builder(&path).prefix("sched_").open().unwrap();
    orch::Store::migrate(&store).await.unwrap();
    let url = format!("sqlite://{}", path.display());
    orch_tests::multiprocess::run_schedule(
        BINARY,
        "sqlite",
        &url,
        "sched_",
        std::sync::Arc::new(store),
        PROCESSES,
    )
    .await;
}
