//! Read-only stores, as the monitor opens them without `--allow-writes`: on SQLite,
//! PostgreSQL (`ORCH_PG_URL`) and MySQL/MariaDB (`ORCH_MYSQL_URL`), every write path
//! of the store fails with the database's own refusal and changes nothing, and reads
//! work. Each backend is checked through its builder's `read_only(true)` and through
//! the monitor's `Source::open`.

use std::sync::Arc;

use orch::Store;
use orch_tests::harness::{Harness, ServerHarness, StoreLocation};
use orch_tests::privilege::read_only_store_refuses_writes;
use orch_tui::source::{Access, Source};

/// The monitor's read-only store on `location`.
async fn monitor(location: &StoreLocation) -> Arc<dyn Store> {
    Source { url: location.url.clone(), prefix: location.prefix.clone() }
        .open()
        .await
        .expect("open the store as the monitor does")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_only_store_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    // Characters that mean something in a `file:` URI, which the path must keep.
    let odd = dir.path().join("odd ?#% dir");
    std::fs::create_dir(&odd).unwrap();
    let path = odd.join("queue.db");
    let open = |read_only: bool| {
        orch_sqlite::SqliteStore::builder(&path).prefix("ro_").read_only(read_only).open().map(Arc::new)
    };
    let writable = open(false).unwrap();
    writable.migrate().await.unwrap();
    read_only_store_refuses_writes(writable.clone(), open(true).unwrap()).await;

    let location = StoreLocation { url: format!("sqlite://{}", path.display()), prefix: "ro_".into() };
    read_only_store_refuses_writes(writable.clone(), monitor(&location).await).await;

    // The monitor's writable store, for contrast, may write.
    let writes = Source { url: location.url.clone(), prefix: "ro_".into() }
        .open_with(Access::ReadWrite)
        .await
        .unwrap();
    writes.record_worker(worker_record()).await.expect("a writable monitor writes");
}

/// A read-only SQLite store never creates its file.
#[test]
fn sqlite_read_only_open_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let err = orch_sqlite::SqliteStore::builder(&path).read_only(true).open().expect_err("no such file");
    assert!(err.to_string().to_lowercase().contains("unable to open"), "{err}");
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn pg_read_only_store_refuses_writes() {
    let Some(harness) = ServerHarness::postgres() else { return };
    let (writable, location) = harness.located_store().await;
    // Without the listener, the pool's first connection is the one made to check the
    // server, which must be read-only too.
    for listen in [true, false] {
        let read_only = orch_diesel_pg::PgStore::builder(location.url.clone())
            .prefix(&location.prefix)
            .listen(listen)
            .read_only(true)
            .connect()
            .await
            .unwrap();
        read_only_store_refuses_writes(Arc::clone(&writable), Arc::new(read_only)).await;
    }
    let (writable, location) = harness.located_store().await;
    read_only_store_refuses_writes(writable, monitor(&location).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_read_only_store_refuses_writes() {
    let Some(harness) = ServerHarness::mysql() else { return };
    let (writable, location) = harness.located_store().await;
    let read_only = orch_diesel_mysql::MysqlStore::builder(location.url.clone())
        .prefix(&location.prefix)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    read_only_store_refuses_writes(Arc::clone(&writable), Arc::new(read_only)).await;
    let (writable, location) = harness.located_store().await;
    read_only_store_refuses_writes(writable, monitor(&location).await).await;
}

fn worker_record() -> orch::WorkerRecord {
    let now = orch::Clock::now(&orch::SystemClock);
    orch::WorkerRecord {
        id: "monitor-writes".into(),
        instance_key: "readonly-test".into(),
        host: "localhost".into(),
        pid: std::process::id(),
        names: Vec::new(),
        concurrency: 1,
        running: 0,
        started_at: now,
        heartbeat_at: now,
    }
}
