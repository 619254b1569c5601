//! Clock skew between worker processes: one process's clock runs 30 s ahead of the
//! database's, another's 30 s behind (through the injected clock), while they share
//! a queue of long commands and delayed ones. The checker reads the execution ledgers
//! (real time, the database's machine) and the store: a live lease taken back shows as
//! a `rescued` entry and a second execution; a delayed command run early shows as an
//! execution that started before its due time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use orch::store::JournalKind;
use orch::{Clock, CommandId, NewCommand, Orch, State, Store, SystemClock};
use serde::Serialize;

use crate::chaos::{SoakCommand, Target, few, read_ledgers, spawn_with, wait_exit};

/// How far the two processes' clocks are off the database's.
pub const SKEW: Duration = Duration::from_secs(30);

/// The worker processes' poll interval (`chaos::config`): the most a delayed command
/// may start before its due time.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a skewed run found.
#[derive(Debug, Default, Serialize)]
pub struct SkewReport {
    /// The backend.
    pub backend: String,
    /// Whether the processes corrected their clocks to the database's.
    pub synced: bool,
    /// Commands pushed (long ones and delayed ones).
    pub pushed: usize,
    /// Commands that did not succeed.
    pub unfinished: Vec<String>,
    /// Executions in the ledgers.
    pub executions: usize,
    /// Executions by process: (clock offset in s, count).
    pub by_process: BTreeMap<String, usize>,
    /// `rescued` journal entries: leases taken back although their holder was alive.
    pub leases_taken_back: usize,
    /// Commands executed more than once.
    pub duplicated: usize,
    /// Delayed commands that started more than the poll interval before their due
    /// time by the database's clock, with how early (ms).
    pub early: Vec<String>,
    /// The earliest any delayed command started relative to its due time, in ms
    /// (negative: before it).
    pub worst_start_ms: i64,
}

impl SkewReport {
    /// Whether no live lease was taken back and no delayed command ran early.
    pub fn is_clean(&self) -> bool {
        self.unfinished.is_empty()
            && self.leases_taken_back == 0
            && self.duplicated == 0
            && self.early.is_empty()
    }
}

impl fmt::Display for SkewReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}): {} commands, {} executions {:?}",
            self.backend,
            if self.synced { "clocks corrected to the database's" } else { "no correction" },
            self.pushed,
            self.executions,
            self.by_process
        )?;
        write!(
            f,
            "  unfinished {}; live leases taken back {}; run more than once {}; delayed commands started early {}; \
             earliest start {} ms from due",
            few(&self.unfinished),
            self.leases_taken_back,
            self.duplicated,
            few(&self.early),
            self.worst_start_ms
        )
    }
}

/// Runs two worker processes, one 30 s ahead and one 30 s behind, on `target`:
/// `long` commands of 600–900 ms, due a minute ago so that both processes take some
/// whatever their clocks say, and `delayed` ones due 2–4 s after their push (by then
/// the long ones are done, so every process has room to start them when due).
pub async fn run(
    target: &Target,
    store: Arc<dyn Store>,
    synced: bool,
    long: u64,
    delayed: u64,
) -> SkewReport {
    let dir = tempfile::tempdir().expect("temporary directory");
    let offsets = [SKEW.as_millis() as i64, -(SKEW.as_millis() as i64)];
    let mut workers: Vec<_> = offsets
        .iter()
        .enumerate()
        .map(|(i, offset)| {
            let mut extra = vec!["--clock-offset-ms".to_owned(), offset.to_string()];
            if !synced {
                extra.push("--no-clock-sync".to_owned());
            }
            spawn_with(target, dir.path(), i + 1, &extra)
        })
        .collect();
    let offset_of: BTreeMap<u32, i64> =
        workers.iter().zip(offsets).map(|(w, offset)| (w.pid(), offset / 1000)).collect();
    // Both processes up and polling before anything is pushed.
    let ready = SystemClock.now() + Duration::from_secs(60);
    while store.workers().await.map_or(0, |w| w.len()) < workers.len() {
        assert!(SystemClock.now() < ready, "the worker processes did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The long commands are pushed by a clock a minute behind (due at once for both
    // processes), the delayed ones by the machine's clock corrected to the database's.
    let behind: orch::SharedClock =
        Arc::new(orch::OffsetClock::behind(Arc::new(SystemClock), Duration::from_secs(60)));
    let early_client = Orch::new(Arc::clone(&store)).with_clock(behind);
    let client = Orch::new(Arc::clone(&store));
    let long_commands: Vec<NewCommand> =
        (0..long).map(|n| NewCommand::of(&SoakCommand { n, millis: 600 + (n * 37) % 300 })).collect();
    let mut pushed: Vec<CommandId> = early_client.push_many(long_commands).await.expect("push");
    let delayed_commands: Vec<NewCommand> = (0..delayed)
        .map(|n| {
            let delay = Duration::from_millis(2_000 + (n * 173) % 2_000);
            NewCommand::of(&SoakCommand { n: long + n, millis: 0 }).delay(delay)
        })
        .collect();
    pushed.extend(client.push_many(delayed_commands).await.expect("push"));

    // Every command finished, or a deadline well past the last due time.
    let deadline = SystemClock.now() + Duration::from_secs(90);
    loop {
        let counts = store.counts().await.expect("count");
        let open: u64 = counts.iter().filter(|c| !c.state.is_terminal()).map(|c| c.count).sum();
        if open == 0 || SystemClock.now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for worker in &mut workers {
        drop(worker.child.stdin.take());
    }
    for worker in &mut workers {
        let _ = wait_exit(&mut worker.child, Duration::from_secs(30)).await;
    }
    drop(workers);

    let runs = read_ledgers(dir.path());
    let mut report = SkewReport {
        backend: target.backend.clone(),
        synced,
        pushed: pushed.len(),
        executions: runs.values().map(Vec::len).sum(),
        duplicated: runs.values().filter(|r| r.len() > 1).count(),
        worst_start_ms: i64::MAX,
        ..SkewReport::default()
    };
    for run in runs.values().flatten() {
        let key = format!("{:+} s", offset_of.get(&run.pid).copied().unwrap_or_default());
        *report.by_process.entry(key).or_default() += 1;
    }
    for (i, &id) in pushed.iter().enumerate() {
        let record = store.get(id).await.expect("read").expect("stored");
        if record.state != State::Succeeded {
            report.unfinished.push(format!("{id} ({})", record.state.as_str()));
        }
        let journal = store.journal(id).await.expect("journal");
        report.leases_taken_back += journal.iter().filter(|e| e.kind == JournalKind::Rescued).count();
        if i as u64 >= long {
            // Due by the database's reckoning: the push's clock was corrected to it.
            let due = record.scheduled_at;
            for run in runs.get(&id).map(Vec::as_slice).unwrap_or_default() {
                let from_due = run.start.as_micros() - due.as_micros();
                report.worst_start_ms = report.worst_start_ms.min(from_due.div_euclid(1000));
                if from_due < -(POLL_INTERVAL.as_micros() as i64) {
                    report.early.push(format!("{id} {} ms early", -from_due / 1000));
                }
            }
        }
    }
    report
}
