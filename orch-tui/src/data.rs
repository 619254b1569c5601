//! The data layer: what one refresh reads from the store, as a [`Snapshot`].
//!
//! Every refresh reads the per-(name, target) counts and the workers table; the
//! command page, a command's detail and the workflow and saga lists only when the
//! view on screen needs them. Every read is an indexed query: counts group on the
//! state index, the command list is a keyset page of at most [`PAGE_MAX`] + 1 rows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orch::store::{
    CommandRecord, JournalEntry, ListCursor, ListOrder, ListParams, PauseRecord, QueueStats, SagaQuery,
    SagaRecord, ScheduleRecord, WorkflowQuery, WorkflowStepRecord, WorkflowSummary,
};
use orch::{CommandId, Error, SagaStatus, Store, Timestamp, WorkerRecord, WorkflowId, WorkflowState};
use serde::Serialize;

use crate::filter::Filter;

/// A worker whose last heartbeat is older than this is shown as stale (workers
/// heartbeat every second by default; leases outlive a dead worker by 30 s).
pub const STALE_WORKER_AFTER: Duration = Duration::from_secs(30);

/// The most commands on one page of the list.
pub const PAGE_MAX: usize = 200;

/// How many commands are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Waiting on dependencies.
    pub blocked: u64,
    /// Pending and due now.
    pub pending: u64,
    /// Pending, due in the future (delayed, or waiting out a retry backoff).
    pub scheduled: u64,
    /// Running.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl StateCounts {
    /// The counts of one stats row.
    pub fn of(stats: &QueueStats) -> Self {
        StateCounts {
            blocked: stats.blocked,
            pending: stats.due,
            scheduled: stats.scheduled,
            running: stats.running,
            succeeded: stats.succeeded,
            failed: stats.failed,
            cancelled: stats.cancelled,
        }
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &StateCounts) {
        self.blocked += other.blocked;
        self.pending += other.pending;
        self.scheduled += other.scheduled;
        self.running += other.running;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }

    /// Every command counted.
    pub fn total(&self) -> u64 {
        self.blocked
            + self.pending
            + self.scheduled
            + self.running
            + self.succeeded
            + self.failed
            + self.cancelled
    }

    /// The counts as (label, value) pairs, in lifecycle order.
    pub fn labelled(&self) -> [(&'static str, u64); 7] {
        [
            ("blocked", self.blocked),
            ("pending", self.pending),
            ("scheduled", self.scheduled),
            ("running", self.running),
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("cancelled", self.cancelled),
        ]
    }
}

/// The whole queue at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// Counts over every name and target.
    pub counts: StateCounts,
    /// The due time of the oldest due pending command (the queue's latency).
    pub oldest_due: Option<Timestamp>,
}

/// One (name, target) row of the names view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRow {
    /// The command name.
    pub name: String,
    /// The target (instance key).
    pub target: String,
    /// Its counts.
    pub counts: StateCounts,
    /// The due time of its oldest due pending command.
    pub oldest_due: Option<Timestamp>,
    /// Commands are due but no live worker serves this target and name.
    pub no_worker: bool,
}

/// A worker row with its staleness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    /// As recorded.
    pub record: WorkerRecord,
    /// Its heartbeat is older than [`STALE_WORKER_AFTER`].
    pub stale: bool,
}

/// One page of the command list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandPage {
    /// The list query this page answers (the UI may have moved on since).
    pub query: ListQuery,
    /// The commands, in the requested order.
    pub rows: Vec<CommandRecord>,
    /// Whether more follow the last row.
    pub has_more: bool,
}

/// Everything about one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    /// The command asked for.
    pub id: CommandId,
    /// The command, `None` when it no longer exists.
    pub record: Option<CommandRecord>,
    /// Its journal, oldest first.
    pub journal: Vec<JournalEntry>,
    /// The commands its outcomes pushed.
    pub follow_ups: Vec<CommandRecord>,
}

/// Workflows and sagas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flows {
    /// Workflows, newest first.
    pub workflows: Vec<WorkflowSummary>,
    /// The steps of the selected workflow.
    pub steps: Vec<WorkflowStepRecord>,
    /// Saga instances.
    pub sagas: Vec<SagaRecord>,
}

/// What one refresh cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Store queries made.
    pub queries: u32,
    /// Time spent.
    pub elapsed: Duration,
}

/// What one refresh read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When it was read (the monitor's clock).
    pub taken_at: Timestamp,
    /// Totals.
    pub overview: Overview,
    /// Per (name, target).
    pub names: Vec<NameRow>,
    /// Workers, by id.
    pub workers: Vec<WorkerRow>,
    /// Paused targets and names.
    pub pauses: Vec<PauseRecord>,
    /// Recurring schedules, by name.
    pub schedules: Vec<ScheduleRecord>,
    /// The command page, when the list is on screen.
    pub commands: Option<CommandPage>,
    /// The detail, when a command is open.
    pub detail: Option<Detail>,
    /// Workflows and sagas, when their view is on screen.
    pub flows: Option<Flows>,
    /// What reading it cost.
    pub cost: Cost,
}

/// The command list the UI wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// The parsed filter.
    pub filter: Filter,
    /// Sort key.
    pub order: ListOrder,
    /// Largest first.
    pub descending: bool,
    /// Where the page starts (after this position); `None` for the first page.
    pub start: Option<ListCursor>,
    /// Rows per page.
    pub limit: usize,
}

/// What a refresh should read beyond the counts and workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Read a page of the command list.
    pub list: Option<ListQuery>,
    /// Read this command's detail.
    pub detail: Option<CommandId>,
    /// Read workflows and sagas.
    pub flows: bool,
    /// Only workflows (and sagas) in this state.
    pub flow_state: Option<WorkflowState>,
    /// Read this workflow's steps.
    pub workflow: Option<WorkflowId>,
}

struct Counter<'a> {
    store: &'a dyn Store,
    queries: u32,
}

impl Counter<'_> {
    fn count(&mut self) -> &dyn Store {
        self.queries += 1;
        self.store
    }
}

/// Reads one snapshot.
pub async fn load(store: &dyn Store, query: &Query, now: Timestamp) -> Result<Snapshot, Error> {
    #[allow(clippy::disallowed_methods, reason = "measuring how long a refresh takes, not scheduling")]
    let started = Instant::now();
    let mut s = Counter { store, queries: 0 };
    let stats = s.count().queue_stats(now).await?;
    let workers = s.count().workers().await?;
    let mut snapshot = load_parts(now, &stats, workers);
    snapshot.pauses = s.count().pauses().await?;
    snapshot.schedules = s.count().schedules().await?;

    let commands = match &query.list {
        Some(list) => Some(page(s.count(), list, now).await?),
        None => None,
    };
    let detail = match query.detail {
        Some(id) => {
            let record = s.count().get(id).await?;
            let journal = if record.is_some() { s.count().journal(id).await? } else { Vec::new() };
            let follow_ups = if record.is_some() {
                let params = ListParams { parent: Some(id), limit: PAGE_MAX, ..Default::default() };
                s.count().list(params).await?
            } else {
                Vec::new()
            };
            Some(Detail { id, record, journal, follow_ups })
        }
        None => None,
    };
    let flows = if query.flows {
        let state = query.flow_state;
        let workflows =
            s.count().workflows(WorkflowQuery { state, limit: PAGE_MAX, ..Default::default() }).await?;
        let steps = match query.workflow {
            Some(id) => s.count().workflow_steps(id).await?,
            None => Vec::new(),
        };
        let mut sagas = s.count().sagas(SagaQuery { limit: PAGE_MAX, ..Default::default() }).await?;
        if let Some(state) = state {
            sagas.retain(|saga| saga_state(saga.status) == state);
        }
        Some(Flows { workflows, steps, sagas })
    } else {
        None
    };
    snapshot.commands = commands;
    snapshot.detail = detail;
    snapshot.flows = flows;
    snapshot.cost = Cost { queries: s.queries, elapsed: started.elapsed() };
    Ok(snapshot)
}

/// The part of a snapshot every refresh reads: totals, per-(name, target) rows and
/// workers (marked stale by their heartbeat age at `now`).
pub fn load_parts(now: Timestamp, stats: &[QueueStats], workers: Vec<WorkerRecord>) -> Snapshot {
    let workers: Vec<WorkerRow> = workers
        .into_iter()
        .map(|record| {
            let stale = now.saturating_duration_since(record.heartbeat_at) > STALE_WORKER_AFTER;
            WorkerRow { record, stale }
        })
        .collect();
    let (overview, names) = summarize(stats, &workers);
    Snapshot { taken_at: now, overview, names, workers, ..Default::default() }
}

async fn page(store: &dyn Store, list: &ListQuery, now: Timestamp) -> Result<CommandPage, Error> {
    let limit = list.limit.clamp(1, PAGE_MAX);
    let mut params = ListParams {
        order: list.order,
        descending: list.descending,
        after: list.start,
        limit: limit + 1,
        ..Default::default()
    };
    list.filter.apply(&mut params, now);
    let mut rows = store.list(params).await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok(CommandPage { query: list.clone(), rows, has_more })
}

/// Where a saga stands, in the terms of workflow states: active or compensating is
/// running, completed is succeeded, compensated or compensation failed is failed.
pub fn saga_state(status: SagaStatus) -> WorkflowState {
    match status {
        SagaStatus::Active | SagaStatus::Compensating => WorkflowState::Running,
        SagaStatus::Completed => WorkflowState::Succeeded,
        SagaStatus::Compensated | SagaStatus::CompensationFailed => WorkflowState::Failed,
    }
}

/// Totals and per-(name, target) rows from the stats, with the `NO WORKER` mark.
pub fn summarize(stats: &[QueueStats], workers: &[WorkerRow]) -> (Overview, Vec<NameRow>) {
    let mut overview = Overview::default();
    let mut rows = Vec::with_capacity(stats.len());
    for st in stats {
        let counts = StateCounts::of(st);
        overview.counts.add(&counts);
        overview.oldest_due = match (overview.oldest_due, st.oldest_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let served = workers
            .iter()
            .any(|w| !w.stale && w.record.instance_key == st.target && w.record.names.contains(&st.name));
        rows.push(NameRow {
            name: st.name.clone(),
            target: st.target.clone(),
            counts,
            oldest_due: st.oldest_due,
            no_worker: st.due > 0 && !served,
        });
    }
    (overview, rows)
}

/// The overview as `orch-tui snapshot --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct OverviewJson {
    /// The backend.
    pub backend: &'static str,
    /// When it was read, microseconds since the epoch.
    pub taken_at_us: i64,
    /// Counts over every name and target.
    pub counts: StateCounts,
    /// Every command counted.
    pub total: u64,
    /// Age of the oldest due pending command, in milliseconds.
    pub oldest_pending_age_ms: Option<u64>,
    /// Live (non-stale) workers.
    pub live_workers: usize,
    /// Workers whose heartbeat is stale.
    pub stale_workers: usize,
    /// Counts per name and target.
    pub names: BTreeMap<String, StateCounts>,
    /// Paused targets and names, as `target X` / `name Y`.
    pub paused: Vec<String>,
    /// Recurring schedules.
    pub schedules: Vec<ScheduleJson>,
}

/// One schedule in the JSON overview.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleJson {
    /// Its name.
    pub name: String,
    /// `cron <expression>` or `every <microseconds>`.
    pub cadence: String,
    /// The zone cron slots are read in.
    pub zone: String,
    /// The next slot, microseconds since the epoch.
    pub next_fire_us: i64,
    /// The latest slot fired.
    pub last_fire_us: Option<i64>,
    /// Slots missed in all.
    pub missed: u64,
    /// Whether the next slot is overdue past its allowance (no worker fired it).
    pub late: bool,
}

impl OverviewJson {
    /// The JSON view of a snapshot.
    pub fn of(backend: &'static str, snapshot: &Snapshot) -> Self {
        OverviewJson {
            backend,
            taken_at_us: snapshot.taken_at.as_micros(),
            counts: snapshot.overview.counts,
            total: snapshot.overview.counts.total(),
            oldest_pending_age_ms: oldest_pending_age(snapshot)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            live_workers: snapshot.workers.iter().filter(|w| !w.stale).count(),
            stale_workers: snapshot.workers.iter().filter(|w| w.stale).count(),
            names: snapshot.names.iter().map(|r| (format!("{}@{}", r.name, r.target), r.counts)).collect(),
            paused: snapshot.pauses.iter().map(|p| p.scope.to_string()).collect(),
            schedules: snapshot
                .schedules
                .iter()
                .map(|s| ScheduleJson {
                    name: s.name.clone(),
                    cadence: s.cadence.clone(),
                    zone: s.zone.clone(),
                    next_fire_us: s.next_fire.as_micros(),
                    last_fire_us: s.last_fire.map(Timestamp::as_micros),
                    missed: s.missed,
                    late: s.is_late(snapshot.taken_at),
                })
                .collect(),
        }
    }
}

/// How long the oldest due pending command has waited at the snapshot's time.
pub fn oldest_pending_age(snapshot: &Snapshot) -> Option<Duration> {
    snapshot.overview.oldest_due.map(|due| snapshot.taken_at.saturating_duration_since(due))
}
