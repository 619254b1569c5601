//! `orch` runs commands durably.
//!
//! A *command* is a typed unit of work whose fields are its input (see [`Command`]).
//! Pushing one stores it first ([`Orch::push`]); then any [`Worker`] with a
//! [`Handler`] for its name and serving its target claims it, runs it under a
//! timeout with a renewed lease, and records the outcome, together with the
//! follow-up commands it chains, in one transaction. Failed attempts are retried
//! with exponential backoff and jitter ([`RetryPolicy`]); leases of workers that
//! died are rescued; every step is kept in a journal.
//!
//! Storage is behind the [`Store`] trait; `orch` itself knows no SQL. Use a backend
//! crate such as `orch-sqlite`, which re-exports this crate.
//!
//! A command pushed with a [unique key](NewCommand::unique_key) is not stored twice
//! while the first is unfinished, and a [`Schedule`] pushes a command at every slot
//! of a cron expression or an interval, each slot once however many workers run (see
//! [`schedule`]).
//!
//! Time comes from an injected [`Clock`], so tests drive it with a [`ManualClock`].
//! [`testing`] runs a handler inline with no store, or a queue on a real store step
//! by step on a manual clock.
//!
//! ```no_run
//! use std::sync::Arc;
//! use orch::{Command, Context, HandlerError, Orch, Registry, Store, Worker, WorkerConfig};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct GreetCommand { name: String }
//!
//! impl Command for GreetCommand {
//!     type Output = String;
//! }
//!
//! # async fn demo(store: Arc<dyn Store>) -> orch::Result<()> {
//! let orch = Orch::new(store);
//! let mut registry = Registry::new();
//! registry.register_fn(|cmd: GreetCommand, _ctx: Context| async move {
//!     Ok::<_, HandlerError>(format!("hello, {}", cmd.name))
//! })?;
//! let worker = Worker::new(orch.clone(), registry, WorkerConfig::default())?.start();
//! let id = orch.push(&GreetCommand { name: "Ada".into() }).await?;
//! let greeting = orch.wait_output::<GreetCommand>(id).await?;
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod client;
mod clock;
mod command;
pub mod cron;
#[cfg(feature = "encryption")]
pub mod encryption;
mod error;
mod handler;
mod retry;
pub mod saga;
pub mod schedule;
pub mod store;
pub mod testing;
mod worker;
pub mod workflow;

pub use client::{DEFAULT_CLOCK_SYNC, MIN_CORRECTION, Orch, Status};
pub use clock::{Clock, ManualClock, OffsetClock, SharedClock, Sleep, SyncedClock, SystemClock, Timestamp};
pub use command::{
    Command, DEFAULT_MAX_INPUT_BYTES, DEFAULT_RETRIES, DEFAULT_TARGET, DEFAULT_TIMEOUT, NewCommand,
    default_name,
};
pub use error::{Error, Failure, FailureKind, HandlerError, Result};
pub use handler::{Context, Handler, Registry};
pub use retry::RetryPolicy;
pub use saga::{SagaData, SagaEvent, SagaInstance, SagaMachine, SagaStep};
pub use schedule::{Missed, Schedule};
pub use store::{
    CancelStatus, CommandId, CommandRecord, JournalEntry, JournalKind, ListCursor, ListOrder, ListParams,
    MAX_UNIQUE_KEY_BYTES, PauseRecord, PauseScope, Pushed, QueueStats, RetryStatus, SagaStatus,
    ScheduleRecord, State, StepOf, Store, TablePrefix, UniqueKey, WorkerRecord, WorkflowId, WorkflowQuery,
    WorkflowSummary,
};
pub use worker::{
    DEFAULT_RETENTION, FORGET_DEAD_WORKERS_AFTER, MAX_HELD, PRUNE_EVERY, PRUNE_PER_ROUND, Worker,
    WorkerConfig, WorkerHandle,
};
pub use workflow::{Workflow, WorkflowError, WorkflowState, WorkflowStatus};

/// Re-exported so handlers can take cancellation tokens without another dependency.
pub use tokio_util::sync::CancellationToken;
