//! End to end through `orch`'s worker on PostgreSQL (`ORCH_PG_URL`; skipped without it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_diesel_pg::PgStore;
use orch_diesel_pg::orch::{
    CancelStatus, Command, Context, Failure, HandlerError, NewCommand, Orch, Registry, State, Status, Store,
    Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};

fn server_url() -> Option<String> {
    match std::env::var("ORCH_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: ORCH_PG_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)");
            None
        }
    }
}

fn fresh_prefix() -> String {
    format!("w{}_", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn config(id: &str, poll: Duration) -> WorkerConfig {
    WorkerConfig {
        concurrency: 8,
        max_pull: 16,
        poll_interval: poll,
        lease_buffer: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(50),
        rescue_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        worker_id: Some(id.to_owned()),
        ..WorkerConfig::default()
    }
}

async fn finish(orch: &Orch, id: orch_diesel_pg::orch::CommandId, within: Duration) -> Status {
    tokio::time::timeout(within, orch.wait(id)).await.expect("the command finishes in time").unwrap()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EchoCommand {
    n: u64,
}
impl Command for EchoCommand {
    type Output = u64;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ParentCommand {
    n: u64,
}
impl Command for ParentCommand {
    type Output = u64;
    fn on_success(&self, output: &u64) -> Vec<NewCommand> {
        vec![NewCommand::of(&EchoCommand { n: output + 1 })]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ParkedCommand;
impl Command for ParkedCommand {
    type Output = ();
    fn on_failure(&self, error: &Failure) -> Vec<NewCommand> {
        vec![NewCommand::raw("alert", serde_json::json!({ "reason": error.kind.to_string() }))]
    }
}

fn registry(runs: &Arc<Mutex<HashMap<u64, u32>>>) -> Registry {
    let mut registry = Registry::new();
    let runs = Arc::clone(runs);
    registry
        .register_fn(move |c: EchoCommand, _ctx: Context| {
            let runs = Arc::clone(&runs);
            async move {
                *runs.lock().unwrap().entry(c.n).or_default() += 1;
                Ok::<_, HandlerError>(c.n)
            }
        })
        .unwrap();
    registry
        .register_fn(|c: ParentCommand, _ctx: Context| async move { Ok::<_, HandlerError>(c.n * 10) })
        .unwrap();
    registry.register_fn(|_: ParkedCommand, _ctx: Context| async { Ok::<_, HandlerError>(()) }).unwrap();
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_every_command_once() {
    let Some(url) = server_url() else { return };
    let store = PgStore::builder(&url).prefix(fresh_prefix()).max_connections(6).connect().await.unwrap();
    store.migrate().await.unwrap();
    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let mut workers = Vec::new();
    for i in 0..4 {
        let orch = Orch::new(Arc::new(store.clone()));
        workers.push(
            Worker::new(orch, registry(&runs), config(&format!("w{i}"), Duration::from_millis(20)))
                .unwrap()
                .start(),
        );
    }
    let orch = Orch::new(Arc::new(store.clone()));
    let n = 1_000u64;
    let ids = orch.push_many((0..n).map(|n| NewCommand::of(&EchoCommand { n })).collect()).await.unwrap();
    for id in &ids {
        finish(&orch, *id, Duration::from_secs(60)).await;
    }
    for w in workers {
        w.shutdown().await;
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len() as u64, n);
    assert!(runs.values().all(|r| *r == 1), "every command ran exactly once");
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].state, counts[0].count), (State::Succeeded, n));
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_worker_wakes_on_a_push_from_elsewhere() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let store = PgStore::builder(&url).prefix(&prefix).connect().await.unwrap();
    store.migrate().await.unwrap();
    let runs = Arc::default();
    let orch = Orch::new(Arc::new(store.clone()));
    // It polls every minute: only the NOTIFY can make it run the command in time.
    let worker =
        Worker::new(orch.clone(), registry(&runs), config("idle", Duration::from_secs(60))).unwrap().start();
    let elsewhere =
        Orch::new(Arc::new(PgStore::builder(&url).prefix(&prefix).listen(false).connect().await.unwrap()));
    // Give the worker time to claim nothing and go idle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = elsewhere.push(&EchoCommand { n: 3 }).await.unwrap();
    assert_eq!(finish(&elsewhere, id, Duration::from_secs(5)).await, Status::Success("3".into()));
    worker.shutdown().await;
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_chain_and_cancelled_commands_push_theirs() {
    let Some(url) = server_url() else { return };
    let store = PgStore::builder(&url).prefix(fresh_prefix()).connect().await.unwrap();
    store.migrate().await.unwrap();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let orch = Orch::new(Arc::clone(&shared));
    let parked =
        orch.push_new(NewCommand::of(&ParkedCommand).delay(Duration::from_secs(3_600))).await.unwrap();
    assert_eq!(orch.cancel(parked).await.unwrap(), CancelStatus::Cancelled);
    let runs = Arc::default();
    let worker = Worker::new(orch.clone(), registry(&runs), config("chain", Duration::from_millis(20)))
        .unwrap()
        .start();
    let parent = orch.push(&ParentCommand { n: 4 }).await.unwrap();
    assert_eq!(finish(&orch, parent, Duration::from_secs(30)).await, Status::Success("40".into()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (child, alert) = loop {
        let all = shared.list(Default::default()).await.unwrap();
        let child = all.iter().find(|r| r.name == "echo" && r.state == State::Succeeded).cloned();
        let alert = all.iter().find(|r| r.name == "alert").cloned();
        if let (Some(child), Some(alert)) = (child, alert) {
            break (child, alert);
        }
        assert!(tokio::time::Instant::now() < deadline, "follow-ups did not appear: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.shutdown().await;
    assert_eq!((child.parent_id, child.output.as_deref()), (Some(parent), Some("41")));
    assert_eq!(alert.parent_id, Some(parked));
    assert!(!shared.get(parked).await.unwrap().unwrap().follow_ups_due);
    store.drop_tables().await.unwrap();
}
