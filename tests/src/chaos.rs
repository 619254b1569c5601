//! The fault harness: worker processes (`orch-test-worker --mode chaos`) killed with
//! SIGKILL and paused with SIGSTOP while they run commands, every execution written to a
//! ledger, and a checker that holds the ledgers against the store.
//!
//! A soak pushes its commands in waves, one wave before each fault, so work is under way
//! whenever a fault lands. Each handler appends a `start` line to its process's ledger
//! before it does anything and an `end` line when it is done, both before the worker
//! records the outcome: a command the store calls succeeded has an `end` line of the
//! accepted attempt, and an execution that never reached the store is one a fault cut
//! short.
//!
//! The checker reports, from the ledgers, the store's command rows and their journals:
//! - lost commands (pushed, not succeeded when the run drained);
//! - completions accepted from a stale lease (a success recorded by any attempt other
//!   than the last claimed one: leases are fenced by token, so once a lease is taken
//!   back, a late result of the attempt that held it must change nothing);
//! - duplicate executions, and which of them a fault explains (the other executions were
//!   in processes that were killed or paused);
//! - commands still running past their lease;
//! - the time from the last fault until every command was terminal.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch::store::JournalKind;
use orch::{
    Clock, Command, CommandId, Context, HandlerError, NewCommand, Orch, Registry, State, Store, SystemClock,
    Timestamp, WorkerConfig,
};
use serde::{Deserialize, Serialize};

/// How long one soak attempt may run before its lease lapses (unless renewed).
pub const SOAK_TIMEOUT: Duration = Duration::from_secs(1);
/// The lease buffer of the soak's workers: a lease lasts timeout + buffer from its last
/// renewal. Generous, so that on a loaded machine (three SQLite writers, debug builds)
/// only a fault, never a slow renewal, costs a worker its lease.
pub const SOAK_LEASE_BUFFER: Duration = Duration::from_secs(5);

/// The soak's command: sleeps `millis` (its work), its start and end written to the
/// running process's ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakCommand {
    /// A sequence number, for messages.
    pub n: u64,
    /// How long the work takes.
    pub millis: u64,
}

impl Command for SoakCommand {
    type Output = ();
    const TIMEOUT: Duration = SOAK_TIMEOUT;
    // Every kill can cost a command an attempt; none may run out.
    const RETRIES: u32 = 1_000;
}

/// One process's ledger: `start|end <command id> <attempt> <pid> <micros>` per line.
#[derive(Debug)]
pub struct ExecutionLedger {
    file: Mutex<std::fs::File>,
}

impl ExecutionLedger {
    /// Appends to the file at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ExecutionLedger { file: Mutex::new(file) })
    }

    fn write(&self, what: &str, id: CommandId, attempt: u32) -> std::io::Result<()> {
        // One write per line: a SIGKILL cannot tear it, the kernel keeps what was written.
        let line =
            format!("{what} {id} {attempt} {} {}\n", std::process::id(), SystemClock.now().as_micros());
        self.file.lock().unwrap_or_else(|e| e.into_inner()).write_all(line.as_bytes())
    }
}

/// The registry of a soak worker process: [`SoakCommand`] recorded in `ledger`.
pub fn registry(ledger: Arc<ExecutionLedger>) -> Registry {
    let mut registry = Registry::new();
    registry
        .register_fn(move |command: SoakCommand, ctx: Context| {
            let ledger = Arc::clone(&ledger);
            async move {
                let fail = |e: std::io::Error| HandlerError::new(format!("ledger write failed: {e}"));
                ledger.write("start", ctx.id(), ctx.attempt()).map_err(fail)?;
                tokio::time::sleep(Duration::from_millis(command.millis)).await;
                ledger.write("end", ctx.id(), ctx.attempt()).map_err(fail)
            }
        })
        .expect("one handler");
    registry
}

/// The configuration of a soak worker process: its id names its pid, so the journal
/// says which process recorded each change.
pub fn config() -> WorkerConfig {
    WorkerConfig {
        worker_id: Some(worker_id(std::process::id())),
        concurrency: 16,
        poll_interval: Duration::from_millis(50),
        lease_buffer: SOAK_LEASE_BUFFER,
        heartbeat_interval: Duration::from_millis(250),
        rescue_interval: Duration::from_millis(250),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

/// The worker id of the soak worker process `pid`.
pub fn worker_id(pid: u32) -> String {
    format!("chaos-{pid}")
}

/// The shape of a soak.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Commands pushed in all.
    pub commands: u64,
    /// Worker processes kept running (a killed one is replaced at once).
    pub workers: usize,
    /// SIGKILLs, spread over the run.
    pub kills: usize,
    /// SIGSTOP … SIGCONT pauses, each 2 s longer than a lease.
    pub pauses: usize,
    /// Rounds of killing every database connection of the store's database but the
    /// killer's (`pg_terminate_backend`, MariaDB `KILL CONNECTION`); none on SQLite.
    pub connection_kills: usize,
    /// Stops and starts of the database server (PostgreSQL and MariaDB only, on a
    /// private server the soak starts for itself), alternately a crash and a clean
    /// shutdown, each down for 0.2–1 s.
    pub restarts: usize,
    /// The longest a handler works (each command draws 0 ..= this many ms).
    pub max_work_ms: u64,
    /// A seed for the choice of victims, gaps and work; the report prints it.
    pub seed: u64,
}

impl Plan {
    /// The profile run by the test command: a few seconds per backend.
    pub fn short(seed: u64) -> Self {
        Plan {
            commands: 3_000,
            workers: 3,
            kills: 12,
            pauses: 1,
            connection_kills: 12,
            restarts: 0,
            max_work_ms: 10,
            seed,
        }
    }

    /// The restart profile run by the test command: server restarts among a few kills
    /// and connection kills.
    pub fn restarts(seed: u64) -> Self {
        Plan {
            commands: 3_000,
            workers: 3,
            kills: 4,
            pauses: 0,
            connection_kills: 10,
            restarts: 5,
            max_work_ms: 10,
            seed,
        }
    }

    /// The profile of `cargo xtask chaos` by default.
    pub fn long(seed: u64) -> Self {
        Plan {
            commands: 20_000,
            workers: 3,
            kills: 60,
            pauses: 3,
            connection_kills: 60,
            restarts: 10,
            max_work_ms: 10,
            seed,
        }
    }
}

/// Where the soak's store lives and how its workers reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `orch-test-worker` executable.
    pub binary: PathBuf,
    /// `postgres`, `mysql` or `sqlite`.
    pub backend: String,
    /// The URL the workers open.
    pub url: String,
    /// The table prefix.
    pub prefix: String,
}

/// What a fault did to which process, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill { pid: u32, at: Timestamp },
    Pause { pid: u32, from: Timestamp, to: Timestamp },
    Connections { at: Timestamp, killed: usize },
    Restart { down: Timestamp, up: Timestamp, crash: bool },
}

/// The fault of one wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strike {
    Kill,
    Pause,
    Restart,
}

/// The order of the faults: pauses and restarts evenly spread among the kills.
fn schedule(plan: &Plan, restarts: usize) -> Vec<Strike> {
    let total = plan.kills + plan.pauses + restarts;
    let mut strikes = vec![Strike::Kill; total];
    let mut spread = |count: usize, what: Strike, offset: usize| {
        for i in 0..count {
            let mut at = ((i * total + offset) / count).min(total - 1);
            while strikes[at] != Strike::Kill {
                at = (at + 1) % total;
            }
            strikes[at] = what;
        }
    };
    spread(plan.pauses, Strike::Pause, total / 2);
    spread(restarts, Strike::Restart, 0);
    strikes
}

/// A small deterministic generator (xorshift64*), so a soak can be replayed by seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// A running worker process; killed if the soak ends early.
pub(crate) struct WorkerProcess {
    pub(crate) child: Child,
}

impl WorkerProcess {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(target: &Target, ledgers: &Path, generation: usize) -> WorkerProcess {
    spawn_with(target, ledgers, generation, &[])
}

/// A soak worker process with extra arguments (`orch-test-worker`'s options).
pub(crate) fn spawn_with(
    target: &Target,
    ledgers: &Path,
    generation: usize,
    extra: &[String],
) -> WorkerProcess {
    let ledger = ledgers.join(format!("ledger-{generation}.txt"));
    let child = Process::new(&target.binary)
        .args(extra)
        .args(["--mode", "chaos", "--backend", &target.backend, "--url", &target.url])
        .args(["--prefix", &target.prefix, "--instance", orch::DEFAULT_TARGET, "--ledger"])
        .arg(&ledger)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("ORCH_CHAOS_WORKER_LOGS") {
            // Each worker's log (`RUST_LOG` picks the level) in this directory.
            Some(dir) => {
                let file = Path::new(&dir).join(format!("worker-{generation}.log"));
                Stdio::from(std::fs::File::create(file).expect("create a worker log"))
            }
            None => Stdio::null(),
        })
        .spawn()
        .expect("start orch-test-worker");
    WorkerProcess { child }
}

fn signal(pid: u32, name: &str) {
    let status =
        Process::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// What a soak found; [`Report::assert_clean`] fails the test on any breach.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The backend.
    pub backend: String,
    /// The plan's seed.
    pub seed: u64,
    /// Commands pushed.
    pub pushed: u64,
    /// Worker processes started in all (the first ones and every replacement).
    pub processes: usize,
    /// SIGKILLs sent.
    pub kills: usize,
    /// Pauses (SIGSTOP, then SIGCONT after more than a lease).
    pub pauses: usize,
    /// Database connections killed in all.
    pub connections_killed: usize,
    /// Worker processes that ended on their own before they were asked to stop.
    pub worker_exits: Vec<String>,
    /// Commands that succeeded.
    pub succeeded: u64,
    /// Commands not succeeded when the run ended (any other state, or missing).
    pub lost: Vec<String>,
    /// The pushed commands by state when the run ended.
    pub final_states: BTreeMap<String, u64>,
    /// Successes recorded from a stale lease: not by the last claimed attempt.
    pub stale_completions: Vec<String>,
    /// Successes with no `end` line of the accepted attempt in the ledgers.
    pub unexecuted_successes: Vec<String>,
    /// Commands with more than one success in their journal.
    pub double_successes: Vec<String>,
    /// Executions in the ledgers.
    pub executions: usize,
    /// Commands executed more than once.
    pub duplicated: usize,
    /// Of those, the ones where some execution other than the accepted one ran in a
    /// process that was neither killed nor paused.
    pub unexplained_duplicates: Vec<String>,
    /// Executions a pause held back whose command another worker then completed: their
    /// late results were refused by the store (a `lease_lost` entry) or dropped by their
    /// worker on finding its lease gone.
    pub late_results_rejected: usize,
    /// Leases of paused processes that other workers took back while they were stopped.
    pub paused_leases_taken_back: usize,
    /// Commands still `running` with their lease expired at the end.
    pub stuck: Vec<String>,
    /// Server restarts (stop, then start).
    pub restarts: usize,
    /// Per restart: from the server accepting connections again to the first success
    /// recorded after it, in ms.
    pub resume_ms: Vec<u64>,
    /// The bound on each of [`Report::resume_ms`]: 10 s.
    pub resume_bound_ms: u64,
    /// Time from the last fault until every command was terminal, in ms.
    pub drain_ms: u64,
    /// The bound on [`Report::drain_ms`]: lease + 10 s.
    pub drain_bound_ms: u64,
    /// The whole run, in ms.
    pub elapsed_ms: u64,
}

impl Report {
    /// Whether nothing was lost, stale, unexplained or stuck, and the drain kept to its
    /// bound.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.stale_completions.is_empty()
            && self.unexecuted_successes.is_empty()
            && self.double_successes.is_empty()
            && self.unexplained_duplicates.is_empty()
            && self.stuck.is_empty()
            && self.worker_exits.is_empty()
            && self.drain_ms <= self.drain_bound_ms
            && self.resume_ms.len() == self.restarts
            && self.resume_ms.iter().all(|&ms| ms <= self.resume_bound_ms)
    }

    /// Panics with the report unless it [is clean](Report::is_clean).
    pub fn assert_clean(&self) {
        assert!(self.is_clean(), "the soak broke a rule:\n{self}");
    }
}

/// How many items a report lists, with the first few as examples.
pub(crate) fn few(v: &[String]) -> String {
    let shown: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
    if v.is_empty() { "0".to_owned() } else { format!("{} (e.g. {})", v.len(), shown.join(", ")) }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: seed {}, {} commands, {} processes, {} kills, {} pauses, {} connections killed, {:.1} s",
            self.backend,
            self.seed,
            self.pushed,
            self.processes,
            self.kills,
            self.pauses,
            self.connections_killed,
            self.elapsed_ms as f64 / 1000.0
        )?;
        writeln!(
            f,
            "  succeeded {}; lost {}; stuck {}; worker processes that exited on their own {}; states {:?}",
            self.succeeded,
            few(&self.lost),
            few(&self.stuck),
            few(&self.worker_exits),
            self.final_states
        )?;
        writeln!(
            f,
            "  stale-lease completions {}; successes without an execution {}; double successes {}",
            few(&self.stale_completions),
            few(&self.unexecuted_successes),
            few(&self.double_successes)
        )?;
        writeln!(
            f,
            "  executions {}; commands run more than once {} (unexplained {})",
            self.executions,
            self.duplicated,
            few(&self.unexplained_duplicates),
        )?;
        writeln!(
            f,
            "  leases of paused processes taken back {}; their late results rejected {}",
            self.paused_leases_taken_back, self.late_results_rejected
        )?;
        if self.restarts > 0 {
            writeln!(
                f,
                "  server restarts {}; processing resumed after each (ms, bound {}): {:?}",
                self.restarts, self.resume_bound_ms, self.resume_ms
            )?;
        }
        write!(f, "  drained {} ms after the last fault (bound {} ms)", self.drain_ms, self.drain_bound_ms)
    }
}

/// One execution from a ledger.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Execution {
    pub(crate) attempt: u32,
    pub(crate) pid: u32,
    pub(crate) start: Timestamp,
    pub(crate) end: Option<Timestamp>,
}

pub(crate) fn read_ledgers(dir: &Path) -> HashMap<CommandId, Vec<Execution>> {
    let mut runs: HashMap<CommandId, Vec<Execution>> = HashMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the ledger directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a ledger");
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            // A process killed in the middle of a write leaves at most a torn last line.
            let [what, id, attempt, pid, at] = parts[..] else { continue };
            let (Ok(id), Ok(attempt), Ok(pid), Ok(at)) =
                (id.parse::<CommandId>(), attempt.parse::<u32>(), pid.parse::<u32>(), at.parse::<i64>())
            else {
                continue;
            };
            let at = Timestamp::from_micros(at);
            let list = runs.entry(id).or_default();
            match what {
                "start" => list.push(Execution { attempt, pid, start: at, end: None }),
                "end" => {
                    if let Some(e) = list.iter_mut().rev().find(|e| e.pid == pid && e.attempt == attempt) {
                        e.end = Some(at);
                    }
                }
                _ => {}
            }
        }
    }
    runs
}

/// Runs a soak of `plan` against the migrated store at `target` (`store` is the
/// driver's own handle on it) and checks it.
///
/// Restarts need `server`, the private server the target's URL names; without one the
/// plan's restarts are skipped.
pub async fn soak(
    target: &Target,
    store: Arc<dyn Store>,
    plan: Plan,
    mut server: Option<&mut crate::server::PrivateServer>,
) -> Report {
    let clock = SystemClock;
    let started = clock.now();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rng = Rng::new(plan.seed);
    let mut generation = 0;
    let mut workers: Vec<WorkerProcess> = (0..plan.workers)
        .map(|_| {
            generation += 1;
            spawn(target, dir.path(), generation)
        })
        .collect();
    let client = Orch::new(Arc::clone(&store));
    let restarts = if server.is_some() { plan.restarts } else { 0 };
    let strikes = schedule(&plan, restarts);
    let faults_total = strikes.len();
    let connection_rounds = if target.backend == "sqlite" { 0 } else { plan.connection_kills };
    let waves = faults_total.max(connection_rounds).max(1) as u64 + 1;
    let mut pushed: Vec<CommandId> = Vec::with_capacity(plan.commands as usize);
    let mut faults: Vec<Fault> = Vec::new();
    let lease = SOAK_TIMEOUT + SOAK_LEASE_BUFFER;

    for wave in 0..waves {
        let fault = wave as usize;
        let strike = strikes.get(fault).copied();
        let pause = strike == Some(Strike::Pause);
        let from = plan.commands * wave / waves;
        let to = plan.commands * (wave + 1) / waves;
        // The work of a wave ahead of a pause is long, so the paused process is surely
        // in the middle of some.
        let work = |rng: &mut Rng| if pause { 300 + rng.below(200) } else { rng.below(plan.max_work_ms + 1) };
        let batch: Vec<NewCommand> =
            (from..to).map(|n| NewCommand::of(&SoakCommand { n, millis: work(&mut rng) })).collect();
        let wave_start = pushed.len();
        for chunk in batch.chunks(1_000) {
            // The driver's own connections are killed too; a push cut off is retried.
            pushed.extend(push_retrying(&client, chunk).await);
        }
        let wave_ids: std::collections::HashSet<CommandId> = pushed[wave_start..].iter().copied().collect();
        // Not ahead of a pause: the paused process must be at work, not reconnecting.
        if fault < connection_rounds && !pause {
            tokio::time::sleep(Duration::from_millis(10 + rng.below(40))).await;
            let killed = kill_connections(target).await;
            faults.push(Fault::Connections { at: clock.now(), killed });
        }
        if fault >= faults_total {
            if fault + 1 >= waves as usize {
                break;
            }
            continue;
        }
        // Let the wave get under way, then strike one process; a pause strikes early, so
        // the process surely holds some of the wave.
        let gap = if pause { 20 } else { 20 + rng.below(100) };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        if let (Some(Strike::Restart), Some(server)) = (strike, server.as_deref_mut()) {
            // Every other restart is a crash; the server stays down a while either way.
            let how = if faults.iter().filter(|f| matches!(f, Fault::Restart { .. })).count() % 2 == 0 {
                crate::server::Stop::Crash
            } else {
                crate::server::Stop::Clean
            };
            server.stop(how).await.expect("stop the server");
            let down = clock.now();
            tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
            server.start().await.expect("start the server");
            faults.push(Fault::Restart { down, up: clock.now(), crash: how == crate::server::Stop::Crash });
            continue;
        }
        // A pause takes the longest-running process (replacements go to the end), which
        // is surely at work; a kill takes any.
        let victim = if pause { 0 } else { rng.below(workers.len() as u64) as usize };
        let pid = workers[victim].pid();
        if pause {
            // Strike while the process runs commands of this wave, whose work is long
            // (it may not have polled yet).
            let holds = || async {
                let params = orch::store::ListParams {
                    state: Some(State::Running),
                    limit: 1_000,
                    ..Default::default()
                };
                let running = store.list(params).await.unwrap_or_default();
                running
                    .iter()
                    .any(|r| wave_ids.contains(&r.id) && r.worker.as_deref() == Some(worker_id(pid).as_str()))
            };
            let deadline = clock.now() + Duration::from_secs(5);
            while !holds().await && clock.now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            signal(pid, "STOP");
            // Taken once the process is stopped and before it resumes, so the pause
            // covers no instant at which the process ran.
            let from = clock.now();
            // Longer than a lease: the others rescue what it held, and its results come
            // late.
            tokio::time::sleep(lease + Duration::from_secs(2)).await;
            let to = clock.now();
            signal(pid, "CONT");
            faults.push(Fault::Pause { pid, from, to });
        } else {
            let mut process = workers.remove(victim);
            process.child.kill().expect("SIGKILL the worker");
            let _ = process.child.wait();
            faults.push(Fault::Kill { pid, at: clock.now() });
            generation += 1;
            workers.push(spawn(target, dir.path(), generation));
        }
    }
    let last_fault = faults
        .iter()
        .map(|f| match *f {
            Fault::Kill { at, .. } | Fault::Connections { at, .. } => at,
            Fault::Pause { to, .. } => to,
            Fault::Restart { up, .. } => up,
        })
        .max()
        .unwrap_or(started);

    // Drain: every pushed command terminal, or the bound plus a margin runs out.
    let drain_bound = lease + Duration::from_secs(10);
    let give_up = last_fault + drain_bound + Duration::from_secs(20);
    let drained_at = loop {
        let counts = store.counts().await.expect("count commands");
        let open: u64 = counts
            .iter()
            .filter(|c| matches!(c.state, State::Pending | State::Running | State::Blocked))
            .map(|c| c.count)
            .sum();
        let total: u64 = counts.iter().map(|c| c.count).sum();
        let now = clock.now();
        if (open == 0 && total == plan.commands) || now > give_up {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // A worker process that ended on its own (a connection error it did not survive).
    let exited: Vec<String> = workers
        .iter_mut()
        .filter_map(|w| w.child.try_wait().ok().flatten().map(|status| format!("{}: {status}", w.pid())))
        .collect();
    // Closing stdin asks each worker to stop; a paused one was resumed long ago.
    for worker in &mut workers {
        drop(worker.child.stdin.take());
    }
    for worker in &mut workers {
        let _ = wait_exit(&mut worker.child, Duration::from_secs(30)).await;
    }
    drop(workers);

    let mut report = Report {
        backend: target.backend.clone(),
        seed: plan.seed,
        pushed: pushed.len() as u64,
        processes: generation,
        kills: faults.iter().filter(|f| matches!(f, Fault::Kill { .. })).count(),
        pauses: faults.iter().filter(|f| matches!(f, Fault::Pause { .. })).count(),
        connections_killed: faults
            .iter()
            .map(|f| match *f {
                Fault::Connections { killed, .. } => killed,
                _ => 0,
            })
            .sum(),
        worker_exits: exited,
        drain_ms: drained_at.saturating_duration_since(last_fault).as_millis() as u64,
        drain_bound_ms: drain_bound.as_millis() as u64,
        restarts: faults.iter().filter(|f| matches!(f, Fault::Restart { .. })).count(),
        resume_bound_ms: 10_000,
        ..Report::default()
    };
    let one_writer = target.backend == "sqlite";
    check(&mut report, &store, &pushed, &read_ledgers(dir.path()), &faults, one_writer).await;
    report.elapsed_ms = clock.now().saturating_duration_since(started).as_millis() as u64;
    report
}

async fn check(
    report: &mut Report,
    store: &Arc<dyn Store>,
    pushed: &[CommandId],
    runs: &HashMap<CommandId, Vec<Execution>>,
    faults: &[Fault],
    one_writer: bool,
) {
    let killed: Vec<u32> = faults
        .iter()
        .filter_map(|f| match *f {
            Fault::Kill { pid, .. } => Some(pid),
            Fault::Pause { .. } | Fault::Connections { .. } | Fault::Restart { .. } => None,
        })
        .collect();
    let paused: Vec<(u32, Timestamp, Timestamp)> = faults
        .iter()
        .filter_map(|f| match *f {
            Fault::Pause { pid, from, to } => Some((pid, from, to)),
            Fault::Kill { .. } | Fault::Connections { .. } | Fault::Restart { .. } => None,
        })
        .collect();
    // An execution whose result a pause may have held back: it started before the
    // process resumed and ended (if at all) no more than a lease before it stopped (a
    // result waits for its batch to be written). With one writer for the whole
    // database (SQLite), a process stopped while it holds the write lock holds back
    // every process's results, so a pause of any process counts.
    let lease = SOAK_TIMEOUT + SOAK_LEASE_BUFFER;
    let in_pause = |e: &Execution, any_process: bool| {
        paused.iter().any(|&(pid, from, to)| {
            (e.pid == pid || any_process) && e.start <= to && e.end.is_none_or(|end| end + lease >= from)
        })
    };
    let held_by_pause = |e: &Execution| in_pause(e, one_writer);
    // A server crash may undo what it had acknowledged but not yet made durable (on
    // PostgreSQL a claim commits without waiting for its WAL flush): a command whose
    // claim was lost runs again. An execution that started before a crash explains a
    // run that started after it.
    let crashes: Vec<Timestamp> = faults
        .iter()
        .filter_map(|f| match *f {
            Fault::Restart { down, crash: true, .. } => Some(down),
            _ => None,
        })
        .collect();
    let undone_by_crash = |e: &Execution, accepted: &Execution| {
        crashes.iter().any(|&down| e.start <= down && accepted.start >= down)
    };
    let pid_of = |worker: &str| worker.strip_prefix("chaos-").and_then(|p| p.parse::<u32>().ok());
    let now = SystemClock.now();
    report.executions = runs.values().map(Vec::len).sum();
    let mut success_times: Vec<Timestamp> = Vec::new();
    report.duplicated = runs.values().filter(|r| r.len() > 1).count();

    let states = &mut report.final_states;
    for &id in pushed {
        let record = store.get(id).await.expect("read a command");
        let Some(record) = record else {
            report.lost.push(format!("{id} (missing)"));
            continue;
        };
        *states.entry(record.state.as_str().to_owned()).or_default() += 1;
        if record.state == State::Running && record.lease_expires_at.is_some_and(|t| t < now) {
            report.stuck.push(id.to_string());
        }
        if record.state != State::Succeeded {
            report.lost.push(format!("{id} ({})", record.state.as_str()));
            continue;
        }
        report.succeeded += 1;
        let journal = store.journal(id).await.expect("read a journal");
        report.paused_leases_taken_back += journal
            .iter()
            .filter(|e| e.kind == JournalKind::Rescued)
            .filter(|e| {
                e.worker.as_deref().and_then(pid_of).is_some_and(|pid| paused.iter().any(|p| p.0 == pid))
            })
            .count();
        let successes: Vec<_> = journal.iter().filter(|e| e.kind == JournalKind::Succeeded).collect();
        success_times.extend(successes.iter().map(|e| e.at));
        if successes.len() != 1 {
            report.double_successes.push(id.to_string());
        }
        let Some(success) = successes.first() else { continue };
        let last_claim = journal.iter().rev().find(|e| e.kind == JournalKind::Claimed);
        let accepted_pid = success.worker.as_deref().and_then(pid_of);
        let executions = runs.get(&id).map(Vec::as_slice).unwrap_or_default();
        let accepted = executions
            .iter()
            .find(|e| Some(e.pid) == accepted_pid && e.attempt == success.attempt && e.end.is_some());
        // Leases are fenced by token: the only success the store may accept is the one of
        // the last claim, whoever held a lease before it.
        let fresh = last_claim.is_some_and(|c| c.attempt == success.attempt && c.worker == success.worker)
            && success.attempt == record.attempts;
        if !fresh {
            report
                .stale_completions
                .push(format!("{id} (attempt {} by {:?})", success.attempt, success.worker));
        }
        let Some(accepted) = accepted else {
            report.unexecuted_successes.push(id.to_string());
            continue;
        };
        let others =
            || executions.iter().filter(|e| !(e.pid == accepted.pid && e.attempt == accepted.attempt));
        report.late_results_rejected += others().filter(|e| in_pause(e, false)).count();
        if executions.len() > 1 {
            let explained =
                others().all(|e| killed.contains(&e.pid) || held_by_pause(e) || undone_by_crash(e, accepted));
            if !explained {
                let runs: Vec<String> = executions
                    .iter()
                    .map(|e| {
                        let end = e.end.map_or("-".to_owned(), |t| t.as_micros().to_string());
                        format!("#{} pid {} {}..{end}", e.attempt, e.pid, e.start.as_micros())
                    })
                    .collect();
                let kinds: Vec<String> = journal
                    .iter()
                    .map(|e| {
                        format!("{}#{}@{}", e.kind.as_str(), e.attempt, e.worker.as_deref().unwrap_or("-"))
                    })
                    .collect();
                report.unexplained_duplicates.push(format!(
                    "{id} [{}] [{}]",
                    runs.join(", "),
                    kinds.join(" ")
                ));
            }
        }
    }
    // Processing resumed after a restart once a success was recorded after the server
    // took connections again (never: the maximum, which breaks the bound).
    success_times.sort_unstable();
    for fault in faults {
        if let Fault::Restart { up, .. } = *fault {
            let first = success_times.iter().find(|&&t| t >= up);
            report
                .resume_ms
                .push(first.map_or(u64::MAX, |t| t.saturating_duration_since(up).as_millis() as u64));
        }
    }
}

pub(crate) async fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for worker") {
            return Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh, migrated store for a soak on `backend` (`postgres`, `mysql`, `sqlite`), and
/// where its workers find it; `None` (with the reason printed) when the backend's server
/// URL is not set. A SQLite store lives in `dir`; with `server`, the store lives on that
/// private server instead of the shared one.
pub async fn fresh_target(
    backend: &str,
    binary: &Path,
    dir: &Path,
    server: Option<&crate::server::PrivateServer>,
) -> Option<(Target, Arc<dyn Store>)> {
    use crate::harness::ServerHarness;
    let (url, prefix, store): (String, String, Arc<dyn Store>) = match (backend, server) {
        ("postgres", Some(server)) => {
            let store = orch_diesel_pg::PgStore::builder(server.url())
                .prefix("chaos_")
                .max_connections(4)
                .connect()
                .await
                .expect("connect to the private server");
            (server.url(), "chaos_".to_owned(), Arc::new(store))
        }
        ("mysql", Some(server)) => {
            let store = orch_diesel_mysql::MysqlStore::builder(server.url())
                .prefix("chaos_")
                .max_connections(4)
                .connect()
                .await
                .expect("connect to the private server");
            (server.url(), "chaos_".to_owned(), Arc::new(store))
        }
        (backend, _) => match backend {
            "sqlite" => {
                let path = dir.join("chaos.db");
                let store =
                    orch_sqlite::SqliteStore::builder(&path).prefix("chaos_").open().expect("open SQLite");
                (format!("sqlite://{}", path.display()), "chaos_".to_owned(), Arc::new(store))
            }
            "postgres" | "mysql" => {
                let harness =
                    if backend == "postgres" { ServerHarness::postgres()? } else { ServerHarness::mysql()? };
                let prefix = ServerHarness::fresh_prefix();
                let store = harness.open(&prefix, 4).await.expect("connect");
                (harness.url().to_owned(), prefix, store)
            }
            other => panic!("unknown backend {other}"),
        },
    };
    store.migrate().await.expect("migrate");
    let target = Target { binary: binary.to_owned(), backend: backend.to_owned(), url, prefix };
    Some((target, store))
}

/// A seed from `ORCH_CHAOS_SEED`, else from the clock.
pub fn seed() -> u64 {
    std::env::var("ORCH_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemClock.now().as_micros().unsigned_abs())
}

/// Pushes `chunk`, again after an error (a killed connection), until it is stored; a
/// push is one statement, so an error means nothing of it was stored. Gives up after a
/// minute.
async fn push_retrying(client: &Orch, chunk: &[NewCommand]) -> Vec<CommandId> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.push_many(chunk.to_vec()).await {
            Ok(ids) => return ids,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "push kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct ConnectionId {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// Kills every connection to the store's database but its own; returns how many.
async fn kill_connections(target: &Target) -> usize {
    use orch_diesel_mysql::diesel_async::{
        AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection,
    };
    use orch_diesel_pg::diesel_async::AsyncPgConnection;
    match target.backend.as_str() {
        "postgres" => {
            let mut conn = AsyncPgConnection::establish(&target.url).await.expect("connect to kill");
            let killed: Vec<Count> = diesel::sql_query(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .load(&mut conn)
            .await
            .expect("terminate backends");
            killed.iter().map(|k| usize::try_from(k.n).unwrap_or(0)).sum()
        }
        "mysql" => {
            let mut conn = AsyncMysqlConnection::establish(&target.url).await.expect("connect to kill");
            let ids: Vec<ConnectionId> = diesel::sql_query(
                "SELECT CAST(id AS SIGNED) AS id FROM information_schema.processlist \
                 WHERE db = DATABASE() AND id <> CONNECTION_ID()",
            )
            .load(&mut conn)
            .await
            .expect("list connections");
            let mut killed = 0;
            for c in ids {
                // Gone already when it closed meanwhile.
                if conn.batch_execute(&format!("KILL CONNECTION {}", c.id)).await.is_ok() {
                    killed += 1;
                }
            }
            killed
        }
        _ => 0,
    }
}
