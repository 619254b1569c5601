//! A worker process killed (SIGKILL) in the middle of a workflow step and a saga step:
//! another worker finishes both, and nothing is left stuck.

use orch::Store;
use orch_tests::harness::ServerHarness;

const BINARY: &str = env!("CARGO_BIN_EXE_orch-test-worker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_worker_killed_mid_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let store = orch_sqlite::SqliteStore::builder(&path).prefix("crash_").open().unwrap();
    store.migrate().await.unwrap();
    let url = format!("sqlite://{}", path.display());
    orch_tests::crash::run(BINARY, "sqlite", &url, "crash_", std::sync::Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn postgres_worker_killed_mid_step() {
    let Some(harness) = ServerHarness::postgres() else { return };
    let prefix = ServerHarness::fresh_prefix();
    let store = harness.open(&prefix, 4).await.unwrap();
    store.migrate().await.unwrap();
    orch_tests::crash::run(BINARY, "postgres", harness.url(), &prefix, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_worker_killed_mid_step() {
    let Some(harness) = ServerHarness::mysql() else { return };
    let prefix = ServerHarness::fresh_prefix();
    let store = harness.open(&prefix, 4).await.unwrap();
    store.migrate().await.unwrap();
    orch_tests::crash::run(BINARY, "mysql", harness.url(), &prefix, store).await;
}
