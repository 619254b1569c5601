//! A worker process for the multi-process tests: runs `ledger` commands from one
//! store, recording each execution in a ledger file, until its standard input closes.
//!
//! `orch-test-worker --backend postgres|mysql|sqlite --url URL --prefix P --instance KEY --ledger FILE`
//!
//! With `--mode crash` it runs the crash test's workflow and saga commands instead
//! (`--ledger` is then not needed); with `--mode chaos` the fault soak's commands, each
//! execution's start and end in the ledger (`orch_tests::chaos`). `--clock-offset-ms N`
//! runs the process's clock N ms ahead (negative: behind), corrected to the database's
//! unless `--no-clock-sync` is given.

use std::sync::Arc;
use std::time::Duration;

use orch::{Orch, Store, Worker, WorkerConfig};
use orch_tests::multiprocess::{Ledger, registry};

fn arg(args: &[String], name: &str) -> Result<String, String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| format!("missing {name}"))
}

async fn open(backend: &str, url: &str, prefix: &str) -> Result<Arc<dyn Store>, String> {
    Ok(match backend {
        "postgres" => Arc::new(
            orch_diesel_pg::PgStore::builder(url.to_owned())
                .prefix(prefix.to_owned())
                .connect()
                .await
                .map_err(|e| e.to_string())?,
        ),
        "mysql" => Arc::new(
            orch_diesel_mysql::MysqlStore::builder(url.to_owned())
                .prefix(prefix.to_owned())
                .connect()
                .await
                .map_err(|e| e.to_string())?,
        ),
        "sqlite" => Arc::new(
            orch_sqlite::SqliteStore::from_url(url)
                .map_err(|e| e.to_string())?
                .prefix(prefix.to_owned())
                .open()
                .map_err(|e| e.to_string())?,
        ),
        other => return Err(format!("unknown backend {other}")),
    })
}

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (backend, url, prefix) = (arg(&args, "--backend")?, arg(&args, "--url")?, arg(&args, "--prefix")?);
    let instance = arg(&args, "--instance")?;
    let mode = arg(&args, "--mode").unwrap_or_default();
    // A process started while its database is down (restarted by a fault test) keeps
    // trying for a minute, as a supervisor restarting it would.
    let give_up = orch::Clock::now(&orch::SystemClock) + Duration::from_secs(60);
    let store = loop {
        match open(&backend, &url, &prefix).await {
            Ok(store) => break store,
            Err(e) if orch::Clock::now(&orch::SystemClock) < give_up => {
                tracing::warn!(error = %e, "cannot open the store yet; will retry");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let (registry, config) = if mode == "crash" {
        (orch_tests::crash::registry(), orch_tests::crash::config(&instance))
    } else if mode == "chaos" {
        let ledger = arg(&args, "--ledger")?;
        let ledger = orch_tests::chaos::ExecutionLedger::open(ledger.as_ref()).map_err(|e| e.to_string())?;
        let config = WorkerConfig { instance_key: instance, ..orch_tests::chaos::config() };
        (orch_tests::chaos::registry(Arc::new(ledger)), config)
    } else {
        let ledger = arg(&args, "--ledger")?;
        let ledger = Arc::new(Ledger::open(ledger.as_ref(), &instance).map_err(|e| e.to_string())?);
        let config = WorkerConfig {
            instance_key: instance,
            poll_interval: Duration::from_millis(50),
            rescue_interval: Duration::from_millis(500),
            ..WorkerConfig::default()
        };
        (registry(ledger), config)
    };
    // `--clock-offset-ms N`: this process's clock runs N ms ahead (negative: behind),
    // still corrected to the database's; `--no-clock-sync` turns the correction off.
    let mut orch = Orch::new(store);
    if let Ok(offset) = arg(&args, "--clock-offset-ms") {
        let offset: i64 = offset.parse().map_err(|e| format!("--clock-offset-ms: {e}"))?;
        let shift = Duration::from_millis(offset.unsigned_abs());
        let system: orch::SharedClock = Arc::new(orch::SystemClock);
        let clock = if offset >= 0 {
            orch::OffsetClock::ahead(system, shift)
        } else {
            orch::OffsetClock::behind(system, shift)
        };
        orch = orch.with_clock(Arc::new(clock)).sync_clock_every(Some(orch::DEFAULT_CLOCK_SYNC));
    }
    if args.iter().any(|a| a == "--no-clock-sync") {
        orch = orch.sync_clock_every(None);
    }
    let worker = Worker::new(orch, registry, config).map_err(|e| e.to_string())?.start();
    // Standard input closing (the test dropping its end) is the signal to stop.
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    worker.shutdown().await;
    Ok(())
}
