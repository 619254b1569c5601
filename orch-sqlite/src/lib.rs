//! The SQLite [`Store`] for `orch`: zero setup, one file (or memory), bundled libsqlite3.
//!
//! ```no_run
//! use std::sync::Arc;
//! use orch_sqlite::{SqliteStore, orch::{Orch, Store}};
//!
//! # async fn demo() -> orch::Result<()> {
//! let store = SqliteStore::open("orch.db")?;
//! store.migrate().await?;
//! let orch = Orch::new(Arc::new(store));
//! # Ok(()) }
//! ```
//!
//! Writes take SQLite's write lock up front (`BEGIN IMMEDIATE`), so a claim reads and
//! leases its batch with no other writer in between, in this process or any other.
//! The database runs in WAL mode, so readers (the monitor, `get`) never wait for writers.

#![warn(missing_docs)]

mod commands;
mod dependencies;
mod journal;
mod migrations;
mod pauses;
mod prepared;
mod retention;
mod sagas;
mod schedules;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use tokio::sync::Notify;

pub use orch;
use orch::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, FireStatus, HeartbeatParams, InsertCommand, JournalEntry, LeaseStatus, ListParams, PauseRecord,
    PauseScope, QueueStats, Rescued, RetryStatus, SagaQuery, SagaRecord, SagaWrite, SagaWriteStatus,
    ScheduleFire, ScheduleRecord, WorkerRecord, WorkflowId, WorkflowQuery, WorkflowStepRecord,
    WorkflowSummary,
};
use orch::{Error, Result, Store, TablePrefix, Timestamp};

const BACKEND: &str = "sqlite";

/// How SQLite syncs commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is on disk before it returns: nothing acknowledged is lost on power
    /// failure. The default. Claims are the one exception: a claim's commit is not
    /// synced (the next synced commit carries it), since losing a claim only makes its
    /// commands run again, as a crash after the claim would.
    #[default]
    Full,
    /// Commits may be lost on power failure (never on a process crash), in exchange for
    /// far fewer syncs.
    Normal,
}

/// Options for opening a [`SqliteStore`].
///
/// ```
/// use std::time::Duration;
/// let store = orch_sqlite::SqliteStore::builder(":memory:")
///     .prefix("jobs_")
///     .busy_timeout(Duration::from_secs(10))
///     .open()?;
/// # Ok::<(), orch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SqliteBuilder {
    path: PathBuf,
    prefix: String,
    busy_timeout: Duration,
    synchronous: Synchronous,
    cache_mib: u32,
    read_only: bool,
}

impl SqliteBuilder {
    /// The table prefix (default `orch_`); validated by [`SqliteBuilder::open`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a write waits for another connection's write lock (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The sync mode (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The most memory SQLite's page cache may use, in MiB (default 64; it grows only
    /// as pages are read). SQLite's own default, 2 MiB, keeps a table of a million
    /// finished commands mostly out of the cache: processing beside one ran at 75 % of
    /// the empty-table rate with it, 94 % with 64 MiB.
    pub fn cache_mib(mut self, mib: u32) -> Self {
        self.cache_mib = mib;
        self
    }

    /// Whether to open the database read-only (default `false`): the file is opened
    /// with SQLite's read-only flag (a `mode=ro` URI), so it must exist already and is
    /// never created, and the connection also sets `PRAGMA query_only`, so SQLite
    /// itself refuses any write the store attempts (`attempt to write a readonly
    /// database`), migrations included. Reads work as usual. The journal mode is left
    /// as the writers set it (WAL after their [`Store::migrate`] or open). For monitors
    /// and other tools that must not change the queue. An in-memory database gets
    /// `query_only` alone.
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Opens the database, creating the file if needed. Tables are created by
    /// [`Store::migrate`].
    pub fn open(self) -> Result<SqliteStore> {
        let prefix = TablePrefix::new(&self.prefix)?;
        let busy_ms = u32::try_from(self.busy_timeout.as_millis()).map_err(|_| {
            Error::invalid_config(format!("busy_timeout {:?} is too long", self.busy_timeout))
        })?;
        let path = self.path.to_str().ok_or_else(|| {
            Error::invalid_config(format!("database path {:?} is not valid UTF-8", self.path))
        })?;
        let memory = path == ":memory:";
        let target = if self.read_only && !memory { read_only_uri(path) } else { path.to_owned() };
        let mut conn = SqliteConnection::establish(&target).map_err(|e| Error::backend(BACKEND, e))?;
        let sync = match self.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        // busy_timeout first: switching to WAL needs a lock another process may hold.
        conn.batch_execute(&format!("PRAGMA busy_timeout = {busy_ms};"))
            .map_err(|e| Error::backend(BACKEND, e))?;
        if !memory && !self.read_only {
            conn.batch_execute("PRAGMA journal_mode = WAL;").map_err(|e| Error::backend(BACKEND, e))?;
        }
        // A negative cache_size is in KiB.
        let cache_kib = u64::from(self.cache_mib) * 1024;
        conn.batch_execute(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA cache_size = -{cache_kib};"
        ))
        .map_err(|e| Error::backend(BACKEND, e))?;
        if self.read_only {
            conn.batch_execute("PRAGMA query_only = ON;").map_err(|e| Error::backend(BACKEND, e))?;
        }
        tracing::debug!(path, prefix = %prefix, read_only = self.read_only, "opened sqlite store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                tables: Tables::new(&prefix),
                prefix,
                synchronous: self.synchronous,
                wake: Arc::default(),
            }),
        })
    }
}

/// A `file:` URI that opens `path` read-only. `%`, `?` and `#` are escaped so that the
/// path is taken as it is; an absolute path gets an empty authority (`file:///…`).
fn read_only_uri(path: &str) -> String {
    let mut uri = String::from(if path.starts_with('/') { "file://" } else { "file:" });
    for c in path.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// Table names behind the prefix, computed once.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) commands: String,
    pub(crate) journal: String,
    pub(crate) dependencies: String,
    pub(crate) sagas: String,
    pub(crate) workers: String,
    pub(crate) pauses: String,
    pub(crate) schedules: String,
    pub(crate) migrations: String,
}

impl Tables {
    fn new(prefix: &TablePrefix) -> Self {
        Tables {
            commands: format!("{prefix}commands"),
            journal: format!("{prefix}journal"),
            dependencies: format!("{prefix}dependencies"),
            sagas: format!("{prefix}sagas"),
            workers: format!("{prefix}workers"),
            pauses: format!("{prefix}pauses"),
            schedules: format!("{prefix}schedules"),
            migrations: format!("{prefix}migrations"),
        }
    }
}

struct Inner {
    conn: Mutex<SqliteConnection>,
    tables: Tables,
    prefix: TablePrefix,
    synchronous: Synchronous,
    /// Fired after commits that make commands due, for workers on any clone of this store.
    wake: Arc<Notify>,
}

/// The SQLite store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("prefix", &self.inner.prefix).finish()
    }
}

/// Errors inside a transaction: diesel's, or ours (which abort the transaction too).
#[derive(Debug)]
pub(crate) enum TxError {
    Diesel(diesel::result::Error),
    Orch(Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Diesel(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Orch(e)
    }
}

impl From<TxError> for Error {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Diesel(e) => Error::backend(BACKEND, e),
            TxError::Orch(e) => e,
        }
    }
}

pub(crate) type TxResult<T> = std::result::Result<T, TxError>;

impl SqliteStore {
    /// Opens (or creates) the database file at `path` with the default options.
    /// `":memory:"` opens a private in-memory database.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(path).open()
    }

    /// A private in-memory database, gone when the store is dropped.
    pub fn in_memory() -> Result<Self> {
        Self::builder(":memory:").open()
    }

    /// Options for opening the database at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteBuilder {
        SqliteBuilder {
            path: path.as_ref().to_owned(),
            prefix: TablePrefix::default_prefix().as_str().to_owned(),
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::default(),
            cache_mib: 64,
            read_only: false,
        }
    }

    /// Opens a store from a URL: `sqlite://path/to/file.db`, `sqlite:file.db` or
    /// `sqlite::memory:`.
    pub fn from_url(url: &str) -> Result<SqliteBuilder> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| Error::invalid_config(format!("{url:?} is not a sqlite URL (sqlite://path)")))?;
        if rest.is_empty() {
            return Err(Error::invalid_config(format!("{url:?} names no database file")));
        }
        Ok(Self::builder(rest))
    }

    /// The table prefix.
    pub fn prefix(&self) -> &TablePrefix {
        &self.inner.prefix
    }

    /// Runs `f` on the connection on tokio's blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection, &Tables) -> TxResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn, &inner.tables).map_err(Error::from)
        })
        .await
        .map_err(|e| Error::backend(BACKEND, e))?
    }

    /// Runs `f` in a write transaction that holds the write lock from its start.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection, &Tables) -> TxResult<T> + Send + 'static,
    {
        self.with_conn(move |conn, tables| conn.immediate_transaction(|conn| f(conn, tables))).await
    }

    /// Like [`SqliteStore::write`], but the commit does not wait for its sync: the WAL
    /// reaches the disk with the next synced commit. For claims only: a claim lost to
    /// a power failure leaves its commands pending, to run again, as a crash after the
    /// claim would; every completion's synced commit covers the claims before it.
    async fn write_unsynced<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection, &Tables) -> TxResult<T> + Send + 'static,
    {
        if self.inner.synchronous != Synchronous::Full {
            return self.write(f).await;
        }
        self.with_conn(move |conn, tables| {
            conn.batch_execute("PRAGMA synchronous = NORMAL")?;
            let result = conn.immediate_transaction(|conn| f(conn, tables));
            // Restored whatever happened: every other write stays synced.
            conn.batch_execute("PRAGMA synchronous = FULL")?;
            result
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<()> {
        let prefix = self.inner.prefix.clone();
        self.write(move |conn, tables| migrations::run(conn, tables, &prefix)).await
    }

    async fn enqueue(&self, commands: Vec<InsertCommand>) -> Result<Vec<CommandId>> {
        let ids = self.write(move |conn, tables| commands::insert(conn, tables, &commands)).await?;
        self.inner.wake.notify_waiters();
        Ok(ids)
    }

    async fn claim(&self, params: ClaimParams) -> Result<Vec<ClaimedCommand>> {
        if params.names.is_empty() || params.limit == 0 {
            return Ok(Vec::new());
        }
        self.write_unsynced(move |conn, tables| commands::claim(conn, tables, &params)).await
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<LeaseStatus>> {
        if params.leases.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |conn, tables| commands::heartbeat(conn, tables, &params)).await
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<Vec<CompletionStatus>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let results: Vec<(CompletionStatus, bool)> =
            self.write(move |conn, tables| commands::complete_batch(conn, tables, &completions)).await?;
        if results.iter().any(|(_, made_due)| *made_due) {
            self.inner.wake.notify_waiters();
        }
        Ok(results.into_iter().map(|(status, _)| status).collect())
    }

    async fn cancel(&self, id: CommandId, now: Timestamp) -> Result<CancelStatus> {
        self.write(move |conn, tables| commands::cancel(conn, tables, id, now)).await
    }

    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<Vec<Rescued>> {
        self.write(move |conn, tables| commands::rescue(conn, tables, now, limit)).await
    }

    async fn follow_ups_due(&self, names: &[String], limit: usize) -> Result<Vec<CommandRecord>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names = names.to_vec();
        self.with_conn(move |conn, tables| commands::follow_ups_due(conn, tables, &names, limit)).await
    }

    async fn resolve_follow_ups(
        &self,
        id: CommandId,
        follow_ups: Vec<InsertCommand>,
        now: Timestamp,
    ) -> Result<bool> {
        let pushes = !follow_ups.is_empty();
        let resolved = self
            .write(move |conn, tables| commands::resolve_follow_ups(conn, tables, id, &follow_ups, now))
            .await?;
        if resolved && pushes {
            self.inner.wake.notify_waiters();
        }
        Ok(resolved)
    }

    async fn get(&self, id: CommandId) -> Result<Option<CommandRecord>> {
        self.with_conn(move |conn, tables| commands::get(conn, tables, id)).await
    }

    async fn list(&self, params: ListParams) -> Result<Vec<CommandRecord>> {
        self.with_conn(move |conn, tables| commands::list(conn, tables, &params)).await
    }

    async fn counts(&self) -> Result<Vec<CountRow>> {
        self.with_conn(commands::counts).await
    }

    async fn journal(&self, id: CommandId) -> Result<Vec<JournalEntry>> {
        self.with_conn(move |conn, tables| journal::read(conn, tables, id)).await
    }

    async fn workflow_steps(&self, workflow_id: WorkflowId) -> Result<Vec<WorkflowStepRecord>> {
        self.with_conn(move |conn, tables| dependencies::workflow_steps(conn, tables, workflow_id)).await
    }

    async fn saga(&self, saga: &str, correlation_id: &str) -> Result<Option<SagaRecord>> {
        let (saga, correlation_id) = (saga.to_owned(), correlation_id.to_owned());
        self.with_conn(move |conn, tables| sagas::get(conn, tables, &saga, &correlation_id)).await
    }

    async fn save_saga(&self, write: SagaWrite) -> Result<SagaWriteStatus> {
        let pushes = !write.commands.is_empty();
        let status = self.write(move |conn, tables| sagas::save(conn, tables, &write)).await?;
        if pushes && status == SagaWriteStatus::Saved {
            self.inner.wake.notify_waiters();
        }
        Ok(status)
    }

    async fn sagas(&self, query: SagaQuery) -> Result<Vec<SagaRecord>> {
        self.with_conn(move |conn, tables| sagas::list(conn, tables, &query)).await
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>> {
        self.with_conn(move |conn, tables| commands::queue_stats(conn, tables, now)).await
    }

    async fn retry(&self, id: CommandId, now: Timestamp) -> Result<RetryStatus> {
        let status = self.write(move |conn, tables| commands::retry(conn, tables, id, now)).await?;
        if status == RetryStatus::Retried {
            self.inner.wake.notify_waiters();
        }
        Ok(status)
    }

    async fn workflows(&self, query: WorkflowQuery) -> Result<Vec<WorkflowSummary>> {
        self.with_conn(move |conn, tables| commands::workflows(conn, tables, &query)).await
    }

    async fn record_worker(&self, worker: WorkerRecord) -> Result<()> {
        self.write(move |conn, tables| workers::record(conn, tables, &worker)).await
    }

    async fn remove_worker(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |conn, tables| workers::remove(conn, tables, &id)).await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.with_conn(workers::list).await
    }

    async fn prune_finished(&self, before: Timestamp, limit: usize) -> Result<Option<u64>> {
        // One writer at a time, so one pruner at a time: each batch is a write
        // transaction of its own.
        let mut total = 0usize;
        while total < limit {
            let take = orch::store::PRUNE_BATCH.min(limit - total);
            let gone =
                self.write(move |conn, tables| retention::prune(conn, tables, before, take)).await? as usize;
            total += gone;
            if gone < take {
                break;
            }
        }
        Ok(Some(total as u64))
    }

    async fn pause(&self, scope: PauseScope, now: Timestamp) -> Result<bool> {
        self.write(move |conn, tables| pauses::pause(conn, tables, &scope, now)).await
    }

    async fn resume(&self, scope: &PauseScope) -> Result<bool> {
        let scope = scope.clone();
        let resumed = self.write(move |conn, tables| pauses::resume(conn, tables, &scope)).await?;
        // Claims may find work again.
        self.inner.wake.notify_waiters();
        Ok(resumed)
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>> {
        self.with_conn(pauses::list).await
    }

    async fn save_schedule(&self, record: ScheduleRecord) -> Result<()> {
        self.write(move |conn, tables| schedules::save(conn, tables, &record)).await
    }

    async fn remove_schedule(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn, tables| schedules::remove(conn, tables, &name)).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.with_conn(schedules::list).await
    }

    async fn fire_schedule(&self, fire: ScheduleFire) -> Result<FireStatus> {
        let status = self.write(move |conn, tables| schedules::fire(conn, tables, &fire)).await?;
        if matches!(status, FireStatus::Fired(_)) {
            self.inner.wake.notify_waiters();
        }
        Ok(status)
    }

    async fn server_time(&self) -> Result<Option<Timestamp>> {
        self.with_conn(|conn, _| workers::server_time(conn)).await.map(Some)
    }

    async fn prune_workers(&self, before: Timestamp) -> Result<u64> {
        self.write(move |conn, tables| workers::prune(conn, tables, before)).await
    }

    /// Fired after pushes through this store (any clone) in this process; SQLite has no
    /// channel between processes, so other processes' pushes are seen at the next poll.
    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.inner.wake))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            SqliteStore::from_url("sqlite://data/orch.db").unwrap().path,
            PathBuf::from("data/orch.db")
        );
        assert_eq!(SqliteStore::from_url("sqlite:orch.db").unwrap().path, PathBuf::from("orch.db"));
        assert_eq!(SqliteStore::from_url("sqlite::memory:").unwrap().path, PathBuf::from(":memory:"));
        assert!(matches!(SqliteStore::from_url("postgres://x"), Err(Error::InvalidConfig(_))));
        assert!(matches!(SqliteStore::from_url("sqlite://"), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn invalid_prefix_is_rejected_before_opening() {
        let err = SqliteStore::builder("/nonexistent/dir/x.db").prefix("x; DROP TABLE y").open().unwrap_err();
        assert!(matches!(err, Error::InvalidPrefix { .. }), "{err}");
    }

    #[tokio::test]
    async fn in_memory_store_works_and_migrates_twice() {
        let store = SqliteStore::in_memory().unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let row = orch::NewCommand::raw("job", serde_json::json!({"a": 1}))
            .resolve(Timestamp::from_millis(1))
            .unwrap();
        let id = row.id;
        store.enqueue(vec![row]).await.unwrap();
        let got = store.get(id).await.unwrap().unwrap();
        assert_eq!(got.input, r#"{"a":1}"#);
        assert_eq!(got.state, orch::State::Pending);
    }

    #[derive(diesel::QueryableByName)]
    struct Synced {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        synchronous: i32,
    }

    /// A claim's transaction runs unsynced; every write after it is synced again.
    #[tokio::test]
    async fn unsynced_claim_restores_full_sync() {
        use diesel::RunQueryDsl;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("orch.db")).unwrap();
        store.migrate().await.unwrap();
        let now = Timestamp::from_millis(1);
        let row = orch::NewCommand::raw("job", serde_json::json!({})).resolve(now).unwrap();
        store.enqueue(vec![row]).await.unwrap();
        let params = ClaimParams {
            target: orch::DEFAULT_TARGET.into(),
            names: vec!["job".into()],
            limit: 10,
            now,
            worker: "w".into(),
            lease_buffer: Duration::from_secs(1),
        };
        assert_eq!(store.claim(params).await.unwrap().len(), 1);
        let sync = store
            .with_conn(|conn, _| Ok(diesel::sql_query("PRAGMA synchronous").get_result::<Synced>(conn)?))
            .await
            .unwrap();
        assert_eq!(sync.synchronous, 2, "FULL");
    }

    #[tokio::test]
    async fn unreachable_file_is_a_backend_error() {
        let err = SqliteStore::open("/nonexistent/dir/x.db").unwrap_err();
        assert!(matches!(err, Error::Backend { backend: "sqlite", .. }), "{err}");
    }
}
