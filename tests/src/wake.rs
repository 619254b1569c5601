//! Cases for what only some backends offer: waking idle workers on a push, and pushing
//! inside the caller's own transaction.

use std::sync::Arc;
use std::time::Duration;

use orch::{Command, Context, HandlerError, Orch, Registry, Status, Store, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

/// A command that does nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PingCommand {
    /// A label, for messages.
    pub n: u32,
}

impl Command for PingCommand {
    type Output = u32;
}

/// A worker on `store` that polls only every 10 s, so anything it does sooner was
/// started by a wake-up.
pub fn slow_polling_worker(store: Arc<dyn Store>) -> orch::WorkerHandle {
    let mut registry = Registry::new();
    registry.register_fn(|c: PingCommand, _: Context| async move { Ok::<_, HandlerError>(c.n) }).unwrap();
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(10),
        rescue_interval: Duration::from_secs(10),
        ..WorkerConfig::default()
    };
    Worker::new(Orch::new(store), registry, config).unwrap().start()
}

/// Asserts that a command pushed through `pusher` (a client that shares nothing with
/// the worker's) is run by an idle worker with a 10 s poll interval well before its
/// next poll: within 6 s, however busy the machine is with other tests (unloaded it
/// takes a few milliseconds; the figure is printed).
pub async fn idle_worker_wakes_on_push(worker_store: Arc<dyn Store>, pusher: Orch) {
    let worker = slow_polling_worker(worker_store);
    // The first command proves the worker is up; after it the worker is idle.
    let first = pusher.push(&PingCommand { n: 1 }).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), pusher.wait(first)).await;
    assert_eq!(status.expect("the first command ran").unwrap(), Status::Success("1".into()));

    let pushed = tokio::time::Instant::now();
    let second = pusher.push(&PingCommand { n: 2 }).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(6), pusher.wait(second)).await;
    assert_eq!(
        status.expect("an idle worker with a 10 s poll interval ran a new command within 6 s").unwrap(),
        Status::Success("2".into())
    );
    let record = pusher.get(second).await.unwrap().expect("the command exists");
    let picked_up = record.started_at.unwrap().saturating_duration_since(record.created_at);
    eprintln!(
        "{}: pushed to finished seen in {:?}; pushed to handler start {picked_up:?}",
        pusher.store().backend(),
        pushed.elapsed()
    );
    worker.shutdown().await;
}

/// The error of the caller's transaction in [`transactional_push_case!`].
#[derive(Debug)]
pub enum TxError {
    /// The database refused something.
    Diesel(diesel::result::Error),
    /// The push failed.
    Orch(orch::Error),
    /// The caller chose to roll back, after pushing this command.
    RolledBack(orch::CommandId),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Diesel(e)
    }
}

/// Checks what a transactional push promises after both transactions ended: the
/// rolled-back command never exists and never runs, the committed one runs.
pub async fn check_transactional_push(
    store: Arc<dyn Store>,
    rolled_back: orch::CommandId,
    committed: orch::CommandId,
) {
    let orch = Orch::new(Arc::clone(&store));
    assert_eq!(orch.status(rolled_back).await.unwrap(), Status::NotFound, "a rolled-back push never exists");
    assert!(orch.journal(rolled_back).await.unwrap().is_empty(), "nor does its journal");
    let mut registry = Registry::new();
    registry.register_fn(|c: PingCommand, _: Context| async move { Ok::<_, HandlerError>(c.n) }).unwrap();
    let worker = Worker::new(orch.clone(), registry, crate::support::fast_config(orch::DEFAULT_TARGET))
        .unwrap()
        .start();
    let status = tokio::time::timeout(crate::support::WAIT, orch.wait(committed)).await;
    assert_eq!(status.expect("the committed command ran").unwrap(), Status::Success("2".into()));
    worker.shutdown().await;
    assert_eq!(orch.status(rolled_back).await.unwrap(), Status::NotFound);
    let all = store.list(orch::store::ListParams::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![committed],
        "only the committed command exists"
    );
}

/// Expands to a test that pushes one command inside a caller's transaction that rolls
/// back and one inside a transaction that commits, on `$store` (a store type with
/// `push_in`) over a `$conn` connection, then runs [`check_transactional_push`].
#[macro_export]
macro_rules! transactional_push_case {
    ($name:ident, $harness:expr, $store:ty, $conn:ty $(, #[$attr:meta])*) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $name() {
            use ::orch_diesel_pg::diesel_async::AsyncConnection;
            use $crate::wake::{PingCommand, TxError};
            let Some(harness) = $harness else { return };
            let store = <$store>::builder(harness.url())
                .prefix($crate::harness::ServerHarness::fresh_prefix())
                .connect()
                .await
                .unwrap();
            ::orch::Store::migrate(&store).await.unwrap();
            let clock = ::orch::SystemClock;
            let mut conn = <$conn>::establish(harness.url()).await.unwrap();

            let store_ref = &store;
            let rolled_back = conn
                .transaction::<(), TxError, _>(async |conn| {
                    let now = ::orch::Clock::now(&clock);
                    let command = ::orch::NewCommand::of(&PingCommand { n: 1 });
                    let ids = store_ref.push_in(conn, now, vec![command]).await.map_err(TxError::Orch)?;
                    Err(TxError::RolledBack(ids[0]))
                })
                .await;
            let Err(TxError::RolledBack(rolled_back)) = rolled_back else {
                panic!("the transaction should have rolled back: {rolled_back:?}")
            };
            let committed = conn
                .transaction::<::orch::CommandId, TxError, _>(async |conn| {
                    let now = ::orch::Clock::now(&clock);
                    let command = ::orch::NewCommand::of(&PingCommand { n: 2 });
                    let ids = store_ref.push_in(conn, now, vec![command]).await.map_err(TxError::Orch)?;
                    Ok(ids[0])
                })
                .await
                .expect("the transaction commits");
            $crate::wake::check_transactional_push(::std::sync::Arc::new(store), rolled_back, committed).await;
        }
    };
}
