//! Many worker processes sharing one database: the command they run, the ledger they
//! keep, and the test driver that starts them as separate OS processes
//! (`orch-test-worker`) and checks that every command ran exactly once, on the right
//! instance.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch::{Command, Context, HandlerError, NewCommand, Orch, Registry, State, Store};
use serde::{Deserialize, Serialize};

use crate::harness::{Server, ServerHarness};
use crate::support::eventually;

/// The named instance that half of the commands are targeted at.
pub const SPECIAL: &str = "special";

/// Appends its id and the instance that ran it to the running process's ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerCommand {
    /// A sequence number, for messages.
    pub n: u64,
}

impl Command for LedgerCommand {
    type Output = ();
}

/// One line per execution: `<command id> <instance key> <pid>`.
#[derive(Debug)]
pub struct Ledger {
    file: Mutex<std::fs::File>,
    instance: String,
}

impl Ledger {
    /// Appends to the file at `path`, recording `instance` on each line.
    pub fn open(path: &Path, instance: &str) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Ledger { file: Mutex::new(file), instance: instance.to_owned() })
    }

    /// Records one execution.
    pub fn record(&self, id: orch::CommandId) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{id} {} {}", self.instance, std::process::id())
    }
}

/// A registry whose `ledger` handler records each execution in `ledger`.
pub fn registry(ledger: Arc<Ledger>) -> Registry {
    let mut registry = Registry::new();
    registry
        .register_fn(move |_: LedgerCommand, ctx: Context| {
            let ledger = Arc::clone(&ledger);
            async move {
                ledger.record(ctx.id()).map_err(|e| HandlerError::new(format!("ledger write failed: {e}")))
            }
        })
        .expect("one handler");
    registry
}

/// Kills the child process if the test fails before it exits on its own.
struct Worker {
    child: Child,
    ledger: PathBuf,
}

impl Worker {
    /// Starts `orch-test-worker` for `[backend, url, prefix, instance]`, recording its
    /// executions in `ledger`; it stops when its standard input closes.
    fn spawn(binary: &str, [backend, url, prefix, instance]: [&str; 4], ledger: PathBuf) -> Self {
        let child = Process::new(binary)
            .args(["--backend", backend, "--url", url, "--prefix", prefix])
            .args(["--instance", instance, "--ledger"])
            .arg(&ledger)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start orch-test-worker");
        Worker { child, ledger }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many processes of each instance [`run`] starts, and from which binary.
#[derive(Debug, Clone, Copy)]
pub struct Processes<'a> {
    /// The `orch-test-worker` executable (`env!("CARGO_BIN_EXE_orch-test-worker")`).
    pub binary: &'a str,
    /// Workers serving the default instance.
    pub default_workers: usize,
    /// Workers serving [`SPECIAL`].
    pub special_workers: usize,
}

/// Pushes `commands` commands (half targeted at [`SPECIAL`]) into a fresh store on
/// `harness`'s server, runs them on separate worker processes, and asserts that each
/// command ran exactly once, on its target.
pub async fn run(harness: &ServerHarness, commands: u64, processes: Processes<'_>) {
    let Processes { binary, default_workers, special_workers } = processes;
    let prefix = ServerHarness::fresh_prefix();
    let store = harness.open(&prefix, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let dir = tempfile::tempdir().expect("temporary directory");
    let backend = match harness.server() {
        Server::Postgres => "postgres",
        Server::Mysql => "mysql",
    };

    let started = tokio::time::Instant::now();
    let mut workers = Vec::new();
    for (i, instance) in std::iter::repeat_n(orch::DEFAULT_TARGET, default_workers)
        .chain(std::iter::repeat_n(SPECIAL, special_workers))
        .enumerate()
    {
        let ledger = dir.path().join(format!("ledger-{i}.txt"));
        workers.push(Worker::spawn(binary, [backend, harness.url(), &prefix, instance], ledger));
    }

    let client = Orch::new(Arc::clone(&store));
    let mut targets: HashMap<orch::CommandId, String> = HashMap::new();
    let all: Vec<u64> = (0..commands).collect();
    for chunk in all.chunks(1_000) {
        let batch: Vec<NewCommand> = chunk
            .iter()
            .map(|&n| {
                let command = NewCommand::of(&LedgerCommand { n });
                if n % 2 == 0 { command.target(SPECIAL) } else { command }
            })
            .collect();
        let wanted: Vec<&str> =
            chunk.iter().map(|&n| if n % 2 == 0 { SPECIAL } else { orch::DEFAULT_TARGET }).collect();
        let ids = client.push_many(batch).await.expect("push");
        targets.extend(ids.into_iter().zip(wanted.into_iter().map(str::to_owned)));
    }

    let store_ref: &Arc<dyn Store> = &store;
    eventually(&format!("all {commands} commands to succeed on {backend}"), || async move {
        let counts = store_ref.counts().await.ok()?;
        let done: u64 = counts.iter().filter(|c| c.state == State::Succeeded).map(|c| c.count).sum();
        let failed: u64 = counts.iter().filter(|c| c.state == State::Failed).map(|c| c.count).sum();
        assert_eq!(failed, 0, "no command may fail: {counts:?}");
        (done == commands).then_some(())
    })
    .await;
    let elapsed = started.elapsed();

    // Closing stdin asks each worker to shut down gracefully.
    for worker in &mut workers {
        drop(worker.child.stdin.take());
    }
    for worker in &mut workers {
        let status = wait_exit(&mut worker.child, Duration::from_secs(60)).await;
        assert!(status.success(), "worker exited with {status}");
    }

    let mut runs: HashMap<orch::CommandId, Vec<String>> = HashMap::new();
    let mut per_process = Vec::new();
    for worker in &workers {
        let text = std::fs::read_to_string(&worker.ledger).unwrap_or_default();
        per_process.push(text.lines().count());
        for line in text.lines() {
            let mut parts = line.split(' ');
            let id: orch::CommandId = parts.next().unwrap().parse().expect("ledger id");
            runs.entry(id).or_default().push(parts.next().unwrap().to_owned());
        }
    }
    let twice: Vec<_> = runs.iter().filter(|(_, r)| r.len() != 1).take(10).collect();
    assert!(twice.is_empty(), "commands ran more than once: {twice:?}");
    let missing: Vec<_> = targets.keys().filter(|id| !runs.contains_key(id)).take(10).collect();
    assert!(missing.is_empty(), "commands never ran: {missing:?}");
    assert_eq!(runs.len() as u64, commands, "the ledger holds exactly the pushed commands");
    let misrouted: Vec<_> = runs.iter().filter(|(id, r)| targets.get(id) != Some(&r[0])).take(10).collect();
    assert!(misrouted.is_empty(), "commands ran on the wrong instance: {misrouted:?}");
    for record in store.list(orch::store::ListParams { limit: 10_000, ..Default::default() }).await.unwrap() {
        assert_eq!((record.state, record.attempts), (State::Succeeded, 1), "{}", record.id);
    }
    eprintln!(
        "{backend}: {commands} commands on {} processes in {elapsed:?} ({:.0}/s); per process: {per_process:?}",
        workers.len(),
        commands as f64 / elapsed.as_secs_f64()
    );
}

async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for worker") {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker did not exit within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Slots the multi-process schedule test waits for.
pub const SCHEDULE_SLOTS: usize = 30;

/// Saves a schedule of every second in `store` (opened at `url` with `prefix`), starts
/// `processes` worker processes on it with real clocks, lets them run until
/// [`SCHEDULE_SLOTS`] slots have fired, and asserts that the fired slots are exactly
/// the consecutive seconds from the schedule's first slot on: none missing, none twice.
pub async fn run_schedule(
    binary: &str,
    backend: &str,
    url: &str,
    prefix: &str,
    store: Arc<dyn Store>,
    processes: usize,
) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let client = Orch::new(Arc::clone(&store));
    let schedule =
        orch::Schedule::every("tick", Duration::from_secs(1), NewCommand::raw("tick", serde_json::json!({})))
            .expect("a valid schedule");
    client.schedule(schedule).await.expect("save the schedule");
    let first = client.schedules().await.expect("read the schedule")[0].next_fire;

    let mut workers = Vec::new();
    for i in 0..processes {
        let ledger = dir.path().join(format!("ledger-{i}.txt"));
        workers.push(Worker::spawn(binary, [backend, url, prefix, orch::DEFAULT_TARGET], ledger));
    }
    let ticks = || async {
        let params =
            orch::store::ListParams { name: Some("tick".into()), limit: 10_000, ..Default::default() };
        store.list(params).await.expect("list the fired commands")
    };
    eventually(&format!("{SCHEDULE_SLOTS} slots fired on {backend}"), || async {
        (ticks().await.len() > SCHEDULE_SLOTS).then_some(())
    })
    .await;
    for worker in &mut workers {
        drop(worker.child.stdin.take());
    }
    for worker in &mut workers {
        let status = wait_exit(&mut worker.child, Duration::from_secs(60)).await;
        assert!(status.success(), "worker exited with {status}");
    }

    let mut slots: Vec<orch::Timestamp> = ticks().await.into_iter().map(|r| r.scheduled_at).collect();
    slots.sort();
    let fired = slots.len();
    assert!(fired > SCHEDULE_SLOTS, "{backend}: {fired} slots");
    let expected: Vec<orch::Timestamp> = (0..fired).map(|i| first + Duration::from_secs(i as u64)).collect();
    assert_eq!(slots, expected, "{backend}: every second from the first slot, each once");
    let record = client.schedules().await.expect("read the schedule").remove(0);
    assert_eq!(record.last_fire, slots.last().copied(), "{backend}");
    assert_eq!(record.missed, 0, "{backend}");
    eprintln!("{backend}: {fired} slots fired by {processes} processes, each once, none missing");
}
