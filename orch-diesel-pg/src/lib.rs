//! The PostgreSQL [`Store`] for `orch`, on `diesel-async` with a `bb8` pool.
//!
//! ```no_run
//! use std::sync::Arc;
//! use orch_diesel_pg::{PgStore, orch::{Orch, Store}};
//!
//! # async fn demo() -> orch::Result<()> {
//! let store = PgStore::builder("postgres://orch@localhost/app")
//!     .prefix("jobs_")
//!     .max_connections(16)
//!     .connect()
//!     .await?;
//! store.migrate().await?;
//! let orch = Orch::new(Arc::new(store));
//! # Ok(()) }
//! ```
//!
//! Claims lease their batch with one `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)`
//! statement, so any number of workers in any number of processes claim concurrently
//! without waiting on each other and without ever leasing a command twice. Every change
//! to a running command is fenced on `(id, lease token, state = running)`. A claim
//! commits with `synchronous_commit` off for its own transaction (a claim lost to a
//! server crash only makes its commands run again); every other write is synced.
//!
//! The store's statements are prepared once per connection and reused. Behind
//! PgBouncer, use session pooling, or transaction pooling with PgBouncer 1.21+ and
//! `max_prepared_statements` set.
//!
//! Pushes send a `NOTIFY` on the channel `<prefix>wake` in their transaction. With
//! [`PgBuilder::listen`] on (the default) the store keeps one extra connection, outside
//! the pool, that `LISTEN`s on it and fires [`Store::wake_signal`], so idle workers in
//! every process look for work as soon as a push commits instead of at their next poll.
//!
//! Workflow steps keep their dependency edges in `<prefix>dependencies`. A command that
//! succeeds unblocks, in its own transaction, the dependents whose dependencies have
//! all succeeded: it locks them first and checks their dependencies in the next
//! statement, so when two dependencies finish at once the second transaction waits
//! for the first and sees its commit. A command that fails or is cancelled cancels its
//! blocked dependents, transitively, the same way.
//!
//! Saga instances live in `<prefix>sagas`, one row per (saga, correlation id). A save
//! is compare-and-set on the row's version in one statement, with the commands it
//! pushes in the same transaction; of two writers expecting the same version, the
//! second waits for the first to commit, finds the version moved on, and writes
//! nothing.
//!
//! Worker processes record themselves in `<prefix>workers`, one row per worker id,
//! replaced at every heartbeat and deleted when they stop, for monitors.
//!
//! [`PgStore::push_in`] pushes commands inside a transaction of the application's own,
//! so they exist if and only if that transaction commits.
//!
//! PostgreSQL folds unquoted names to lower case, so table prefixes that differ only in
//! case name the same tables; the store uses the lower-case form everywhere.

#![warn(missing_docs)]

mod commands;
mod dependencies;
mod journal;
mod listener;
mod migrations;
mod pauses;
mod prepared;
mod retention;
mod sagas;
mod schedules;
mod workers;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel::result::{ConnectionError, ConnectionResult};
use diesel::sql_types::Text;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager as _,
};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

pub use diesel;
pub use diesel_async;
pub use orch;
use orch::store::backend::{check_pool_options, redact_url};
use orch::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, HeartbeatParams, InsertCommand, JournalEntry, LeaseStatus, ListParams, PauseRecord, PauseScope,
    QueueStats, Rescued, RetryStatus, SagaQuery, SagaRecord, SagaWrite, SagaWriteStatus, WorkerRecord,
    WorkflowId, WorkflowQuery, WorkflowStepRecord, WorkflowSummary,
};
use orch::{Error, NewCommand, Result, Store, TablePrefix, Timestamp};

const BACKEND: &str = "postgres";

/// Options for connecting a [`PgStore`].
///
/// ```no_run
/// use std::time::Duration;
/// # async fn demo() -> orch::Result<()> {
/// let store = orch_diesel_pg::PgStore::builder("postgresql://orch:secret@db.internal:5432/app")
///     .prefix("jobs_")
///     .max_connections(20)
///     .connect_timeout(Duration::from_secs(5))
///     .listen(true)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgBuilder {
    url: String,
    prefix: String,
    max_connections: u32,
    connect_timeout: Duration,
    listen: bool,
    read_only: bool,
}

impl fmt::Debug for PgBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("listen", &self.listen)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl PgBuilder {
    /// The table prefix (default `orch_`); validated by [`PgBuilder::connect`] before any
    /// connection is attempted.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most pooled connections (default 10). The wake-up listener, when on, holds
    /// one more connection outside the pool.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long to wait for a connection, when connecting and when taking one from
    /// the pool (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether to `LISTEN` for pushes from every process (default `true`); see
    /// [`Store::wake_signal`]. Turn it off behind a pooler in transaction mode (such as
    /// PgBouncer), which cannot hold a `LISTEN`; workers then wake for pushes through
    /// this store and otherwise poll.
    pub fn listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    /// Whether every pooled connection is a read-only session (default `false`): each
    /// one runs `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY` when it is
    /// opened, so PostgreSQL itself refuses any write the store attempts (`cannot
    /// execute INSERT in a read-only transaction`), migrations included. Reads work as
    /// usual. For monitors and other tools that must not change the queue; grant their
    /// role `SELECT` only as well where that is possible.
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Validates the options, connects, and checks that the database answers. Tables
    /// are created by [`Store::migrate`].
    ///
    /// Fails with [`Error::InvalidPrefix`] or [`Error::InvalidConfig`] before any
    /// connection is attempted, and with [`Error::Backend`] when the database cannot be
    /// reached within the connect timeout.
    pub async fn connect(self) -> Result<PgStore> {
        let prefix = TablePrefix::new(&self.prefix)?;
        check_pool_options(self.max_connections, self.connect_timeout)?;
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(Error::invalid_config(
                "the database URL must start with postgres:// or postgresql://",
            ));
        }
        let redacted = redact_url(&self.url);
        let tables = Tables::new(&prefix);
        let wake = Arc::new(Notify::new());

        // One connection made directly first, so a dead database is reported with the
        // driver's own reason rather than a pool timeout. It becomes the listener's, or
        // the pool's first.
        let mut first = listener::establish(&self.url, self.connect_timeout)
            .await
            .map_err(|e| connect_error(&redacted, e))?;
        let mut spare = None;
        let listener = if self.listen {
            listener::listen(&mut first, &tables.channel).await.map_err(|e| connect_error(&redacted, e))?;
            let task = listener::Task {
                url: self.url.clone(),
                redacted: redacted.clone(),
                channel: tables.channel.clone(),
                connect_timeout: self.connect_timeout,
                wake: Arc::clone(&wake),
            };
            Some(tokio::spawn(task.run(first)).abort_handle())
        } else {
            if self.read_only {
                read_only_session(&mut first).await.map_err(|e| connect_error(&redacted, Box::new(e)))?;
            }
            spare = Some(first);
            None
        };
        // Dropped (and the listener stopped) if anything below fails.
        let guard = ListenerGuard(listener);

        let mut config = ManagerConfig::default();
        // A cheap check on checkout: no round trip, but a closed or broken connection
        // is replaced instead of failing the caller's statement.
        config.recycling_method =
            RecyclingMethod::CustomFunction(Box::new(|conn: &mut AsyncPgConnection| {
                let broken = conn.is_broken();
                Box::pin(async move {
                    if broken { Err(diesel::result::Error::BrokenTransactionManager) } else { Ok(()) }
                })
            }));
        if self.read_only {
            config.custom_setup = Box::new(|url: &str| Box::pin(establish_read_only(url.to_owned())));
        }
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(&self.url, config);
        let pool = Pool::builder()
            .max_size(self.max_connections)
            // Short waits, repeated by `PgStore::conn` up to the connect timeout: the
            // pool's retries of a failed connection back off to half this wait, so
            // once the database is back a connection is made within about a second.
            .connection_timeout(self.connect_timeout.min(POOL_WAIT))
            .build(manager)
            .await
            .map_err(|e| connect_error(&redacted, Box::new(e)))?;
        if let Some(conn) = spare {
            // Only fails when the pool is full, which a new pool is not.
            let _ = pool.add(conn);
        }
        {
            let mut conn = pool.get().await.map_err(|e| connect_error(&redacted, Box::new(e)))?;
            diesel::sql_query("SELECT 1")
                .execute(&mut *conn)
                .await
                .map_err(|e| connect_error(&redacted, Box::new(e)))?;
        }
        tracing::debug!(
            url = %redacted,
            prefix = %prefix,
            listen = self.listen,
            read_only = self.read_only,
            "connected postgres store"
        );
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                tables,
                prefix,
                url: redacted,
                wake,
                listener: guard,
                connect_timeout: self.connect_timeout,
            }),
        })
    }
}

/// Makes every later transaction of `conn` (explicit or a single statement) read-only.
async fn read_only_session(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    conn.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").await
}

/// A new pooled connection for a read-only store.
async fn establish_read_only(url: String) -> ConnectionResult<AsyncPgConnection> {
    let mut conn = AsyncPgConnection::establish(&url).await?;
    read_only_session(&mut conn).await.map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// Stops the listener task when dropped.
struct ListenerGuard(Option<AbortHandle>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// The reason a connection could not be made, naming the (redacted) URL.
#[derive(Debug)]
struct ConnectError {
    url: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not connect to {}: {}", self.url, self.source)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

fn connect_error(url: &str, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
    Error::backend(BACKEND, ConnectError { url: url.to_owned(), source })
}

/// Names behind the prefix, computed once (in lower case, as PostgreSQL folds them).
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
    /// The `LISTEN`/`NOTIFY` channel of wake-ups.
    pub(crate) channel: String,
    /// The prefix as PostgreSQL sees it, for the migration SQL.
    pub(crate) prefix: String,
}

impl Tables {
    fn new(prefix: &TablePrefix) -> Self {
        let p = prefix.as_str().to_ascii_lowercase();
        Tables {
            commands: format!("{p}commands"),
            journal: format!("{p}journal"),
            dependencies: format!("{p}dependencies"),
            sagas: format!("{p}sagas"),
            workers: format!("{p}workers"),
            pauses: format!("{p}pauses"),
            schedules: format!("{p}schedules"),
            migrations: format!("{p}migrations"),
            channel: format!("{p}wake"),
            prefix: p,
        }
    }
}

struct Inner {
    pool: Pool<AsyncPgConnection>,
    tables: Tables,
    prefix: TablePrefix,
    /// The redacted URL.
    url: String,
    wake: Arc<Notify>,
    /// Aborts the listener when the last clone of the store goes.
    listener: ListenerGuard,
    /// The longest a checkout waits for a connection.
    connect_timeout: Duration,
}

/// The longest one wait of the pool for a connection; see `PgStore::conn`.
const POOL_WAIT: Duration = Duration::from_secs(1);

/// The PostgreSQL store. Cheap to clone; clones share one pool (and one listener).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("listen", &self.inner.listener.0.is_some())
            .finish()
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

/// Sends the wake-up notification; PostgreSQL delivers it when the transaction commits.
pub(crate) async fn notify(conn: &mut AsyncPgConnection, tables: &Tables) -> TxResult<()> {
    diesel::sql_query("SELECT pg_notify($1, '')").bind::<Text, _>(&tables.channel).execute(conn).await?;
    Ok(())
}

impl PgStore {
    /// Connects with the default options; see [`PgBuilder`].
    pub async fn connect(url: &str) -> Result<PgStore> {
        Self::builder(url).connect().await
    }

    /// Options for connecting to the database at `url` (`postgres://…` or
    /// `postgresql://…`).
    pub fn builder(url: impl Into<String>) -> PgBuilder {
        PgBuilder {
            url: url.into(),
            prefix: TablePrefix::default_prefix().as_str().to_owned(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            listen: true,
            read_only: false,
        }
    }

    /// The table prefix.
    pub fn prefix(&self) -> &TablePrefix {
        &self.inner.prefix
    }

    /// Pushes commands on the caller's connection, inside whatever transaction the
    /// caller has open: if the caller rolls back they never exist, if it commits they
    /// run. Each command is resolved at `now` (usually `orch.clock().now()`), and the
    /// ids are returned in order (for a command whose unique key another command holds, the
    /// holder's).
    ///
    /// The commands, their journal entries and the wake-up `NOTIFY` are written in a
    /// savepoint of the caller's transaction (or in a transaction of their own when
    /// none is open), so a failed push leaves the caller's transaction usable.
    /// PostgreSQL delivers the `NOTIFY` only at commit, so a rollback wakes nobody.
    /// Open the caller's transaction with diesel's API (`AsyncConnection::transaction`),
    /// not with a raw `BEGIN`, so the push can tell it is inside one.
    ///
    /// ```no_run
    /// use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    /// use orch_diesel_pg::PgStore;
    /// use orch_diesel_pg::orch::{Clock, Command, CommandId, NewCommand, Orch};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct SendReceiptCommand { order: i64 }
    /// impl Command for SendReceiptCommand { type Output = (); }
    ///
    /// /// The transaction's error type: diesel's errors (required by `transaction`)
    /// /// and orch's.
    /// #[derive(Debug)]
    /// enum AppError {
    ///     Db(diesel::result::Error),
    ///     Orch(orch::Error),
    /// }
    /// impl From<diesel::result::Error> for AppError {
    ///     fn from(e: diesel::result::Error) -> Self { AppError::Db(e) }
    /// }
    /// impl From<orch::Error> for AppError {
    ///     fn from(e: orch::Error) -> Self { AppError::Orch(e) }
    /// }
    ///
    /// async fn place_order(
    ///     store: &PgStore,
    ///     orch: &Orch,
    ///     conn: &mut AsyncPgConnection,
    /// ) -> Result<Vec<CommandId>, AppError> {
    ///     let now = orch.clock().now();
    ///     conn.transaction::<_, AppError, _>(async |conn| {
    ///         diesel::sql_query("INSERT INTO orders (id) VALUES (42)").execute(conn).await?;
    ///         let cmd = SendReceiptCommand { order: 42 };
    ///         let ids = store.push_in(conn, now, vec![NewCommand::of(&cmd)]).await?;
    ///         Ok(ids)
    ///     })
    ///     .await
    /// }
    /// ```
    pub async fn push_in(
        &self,
        conn: &mut AsyncPgConnection,
        now: Timestamp,
        commands: Vec<NewCommand>,
    ) -> Result<Vec<CommandId>> {
        let rows = commands.into_iter().map(|c| c.resolve(now)).collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let outer = AnsiTransactionManager::transaction_manager_status_mut(conn)
            .transaction_depth()
            .map_err(|e| Error::backend(BACKEND, e))?
            .is_some();
        let tables = &self.inner.tables;
        let ids = conn
            .transaction::<_, TxError, _>(async |conn| {
                let ids = commands::insert(conn, tables, &rows).await?;
                notify(conn, tables).await?;
                Ok(ids)
            })
            .await?;
        if !outer {
            // Committed here: wake local workers at once. Inside the caller's
            // transaction the NOTIFY does it at commit (when listening).
            self.inner.wake.notify_waiters();
        }
        tracing::debug!(
            count = ids.len(),
            in_transaction = outer,
            "commands pushed on the caller's connection"
        );
        Ok(ids)
    }

    /// Drops this prefix's tables and everything in them. Meant for tests and for
    /// uninstalling; a later [`Store::migrate`] creates them afresh.
    pub async fn drop_tables(&self) -> Result<()> {
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        conn.transaction::<_, TxError, _>(async |conn| migrations::drop_all(conn, tables).await).await?;
        Ok(())
    }

    /// A connection from the pool, waiting up to the connect timeout. The wait is
    /// made of short ones so that, while the database is down, a fresh connection
    /// attempt starts at least every [`POOL_WAIT`].
    async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>> {
        let deadline = tokio::time::Instant::now() + self.inner.connect_timeout;
        loop {
            match self.inner.pool.get().await {
                Ok(conn) => return Ok(conn),
                Err(bb8::RunError::TimedOut) if tokio::time::Instant::now() < deadline => {}
                Err(e) => return Err(Error::backend(BACKEND, e)),
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<()> {
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        conn.transaction::<_, TxError, _>(async |conn| migrations::run(conn, tables).await).await?;
        Ok(())
    }

    async fn enqueue(&self, commands: Vec<InsertCommand>) -> Result<Vec<CommandId>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        let ids = if commands.iter().all(|c| c.depends_on.is_empty() && c.unique.is_none()) {
            commands::insert_and_notify(&mut conn, tables, &commands).await?;
            commands.iter().map(|c| c.id).collect()
        } else {
            conn.transaction::<_, TxError, _>(async |conn| {
                let ids = commands::insert(conn, tables, &commands).await?;
                notify(conn, tables).await?;
                Ok(ids)
            })
            .await?
        };
        self.inner.wake.notify_waiters();
        Ok(ids)
    }

    async fn claim(&self, params: ClaimParams) -> Result<Vec<ClaimedCommand>> {
        if params.names.is_empty() || params.limit == 0 {
            return Ok(Vec::new());
        }
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        // One statement: it commits on its own.
        let claimed = commands::claim(&mut conn, tables, &params).await?;
        if !claimed.is_empty() {
            tracing::debug!(count = claimed.len(), worker = %params.worker, target = %params.target, "claimed");
        }
        Ok(claimed)
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<LeaseStatus>> {
        if params.leases.is_empty() {
            return Ok(Vec::new());
        }
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction::<_, TxError, _>(async |conn| commands::heartbeat(conn, tables, &params).await)
            .await?)
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<Vec<CompletionStatus>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        let (statuses, pushed) = conn
            .transaction::<_, TxError, _>(async |conn| commands::complete(conn, tables, &completions).await)
            .await?;
        if pushed {
            self.inner.wake.notify_waiters();
        }
        Ok(statuses)
    }

    async fn cancel(&self, id: CommandId, now: Timestamp) -> Result<CancelStatus> {
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction::<_, TxError, _>(async |conn| commands::cancel(conn, tables, id, now).await)
            .await?)
    }

    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<Vec<Rescued>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction::<_, TxError, _>(async |conn| commands::rescue(conn, tables, now, limit).await)
            .await?)
    }

    async fn follow_ups_due(&self, names: &[String], limit: usize) -> Result<Vec<CommandRecord>> {
        if names.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        Ok(commands::follow_ups_due(&mut conn, &self.inner.tables, names, limit).await?)
    }

    async fn resolve_follow_ups(
        &self,
        id: CommandId,
        follow_ups: Vec<InsertCommand>,
        now: Timestamp,
    ) -> Result<bool> {
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        let resolved = conn
            .transaction::<_, TxError, _>(async |conn| {
                commands::resolve_follow_ups(conn, tables, id, &follow_ups, now).await
            })
            .await?;
        if resolved && !follow_ups.is_empty() {
            self.inner.wake.notify_waiters();
        }
        Ok(resolved)
    }

    async fn get(&self, id: CommandId) -> Result<Option<CommandRecord>> {
        let mut conn = self.conn().await?;
        Ok(commands::get(&mut conn, &self.inner.tables, id).await?)
    }

    async fn list(&self, params: ListParams) -> Result<Vec<CommandRecord>> {
        let mut conn = self.conn().await?;
        Ok(commands::list(&mut conn, &self.inner.tables, &params).await?)
    }

    async fn counts(&self) -> Result<Vec<CountRow>> {
        let mut conn = self.conn().await?;
        Ok(commands::counts(&mut conn, &self.inner.tables).await?)
    }

    async fn journal(&self, id: CommandId) -> Result<Vec<JournalEntry>> {
        let mut conn = self.conn().await?;
        Ok(journal::read(&mut conn, &self.inner.tables, id).await?)
    }

    async fn workflow_steps(&self, workflow_id: WorkflowId) -> Result<Vec<WorkflowStepRecord>> {
        let mut conn = self.conn().await?;
        Ok(dependencies::workflow_steps(&mut conn, &self.inner.tables, workflow_id).await?)
    }

    async fn saga(&self, saga: &str, correlation_id: &str) -> Result<Option<SagaRecord>> {
        let mut conn = self.conn().await?;
        Ok(sagas::get(&mut conn, &self.inner.tables, saga, correlation_id).await?)
    }

    async fn save_saga(&self, write: SagaWrite) -> Result<SagaWriteStatus> {
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        let status =
            conn.transaction::<_, TxError, _>(async |conn| sagas::save(conn, tables, &write).await).await?;
        if status == SagaWriteStatus::Saved && !write.commands.is_empty() {
            self.inner.wake.notify_waiters();
        }
        Ok(status)
    }

    async fn sagas(&self, query: SagaQuery) -> Result<Vec<SagaRecord>> {
        let mut conn = self.conn().await?;
        Ok(sagas::list(&mut conn, &self.inner.tables, &query).await?)
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>> {
        let mut conn = self.conn().await?;
        Ok(commands::queue_stats(&mut conn, &self.inner.tables, now).await?)
    }

    async fn retry(&self, id: CommandId, now: Timestamp) -> Result<RetryStatus> {
        let tables = &self.inner.tables;
        let mut conn = self.conn().await?;
        let status = conn
            .transaction::<_, TxError, _>(async |conn| {
                let status = commands::retry(conn, tables, id, now).await?;
                if status == RetryStatus::Retried {
                    notify(conn, tables).await?;
                }
                Ok(status)
            })
            .await?;
        if status == RetryStatus::Retried {
            self.inner.wake.notify_waiters();
        }
        Ok(status)
    }

    async fn workflows(&self, query: WorkflowQuery) -> Result<Vec<WorkflowSummary>> {
        let mut conn = self.conn().await?;
        Ok(commands::workflows(&mut conn, &self.inner.tables, &query).await?)
    }

    async fn record_worker(&self, worker: WorkerRecord) -> Result<()> {
        let mut conn = self.conn().await?;
        Ok(workers::record(&mut conn, &self.inner.tables, &worker).await?)
    }

    async fn remove_worker(&self, id: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        Ok(workers::remove(&mut conn, &self.inner.tables, id).await?)
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let mut conn = self.conn().await?;
        Ok(workers::list(&mut conn, &self.inner.tables).await?)
    }

    async fn prune_finished(&self, before: Timestamp, limit: usize) -> Result<Option<u64>> {
        let tables = &self.inner.tables;
        let mut total = 0usize;
        while total < limit {
            let take = orch::store::PRUNE_BATCH.min(limit - total);
            let mut conn = self.conn().await?;
            let gone = conn
                .transaction::<_, TxError, _>(async |conn| retention::prune(conn, tables, before, take).await)
                .await?;
            match gone {
                // Another caller is pruning: it goes on where this one stops.
                None if total == 0 => return Ok(None),
                None => break,
                Some(gone) => {
                    total += gone as usize;
                    if (gone as usize) < take {
                        break;
                    }
                }
            }
        }
        Ok(Some(total as u64))
    }

    async fn pause(&self, scope: PauseScope, now: Timestamp) -> Result<bool> {
        let mut conn = self.conn().await?;
        Ok(pauses::pause(&mut conn, &self.inner.tables, &scope, now).await?)
    }

    async fn resume(&self, scope: &PauseScope) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tables = &self.inner.tables;
        // The wake-up tells idle workers of every process to claim again.
        let resumed = conn
            .transaction::<_, TxError, _>(async |conn| {
                let resumed = pauses::resume(conn, tables, scope).await?;
                notify(conn, tables).await?;
                Ok(resumed)
            })
            .await?;
        Ok(resumed)
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>> {
        let mut conn = self.conn().await?;
        Ok(pauses::list(&mut conn, &self.inner.tables).await?)
    }

    async fn save_schedule(&self, record: orch::store::ScheduleRecord) -> Result<()> {
        let mut conn = self.conn().await?;
        Ok(schedules::save(&mut conn, &self.inner.tables, &record).await?)
    }

    async fn remove_schedule(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        Ok(schedules::remove(&mut conn, &self.inner.tables, name).await?)
    }

    async fn schedules(&self) -> Result<Vec<orch::store::ScheduleRecord>> {
        let mut conn = self.conn().await?;
        Ok(schedules::list(&mut conn, &self.inner.tables).await?)
    }

    async fn fire_schedule(&self, fire: orch::store::ScheduleFire) -> Result<orch::store::FireStatus> {
        let mut conn = self.conn().await?;
        let tables = &self.inner.tables;
        let status = conn
            .transaction::<_, TxError, _>(async |conn| {
                let status = schedules::fire(conn, tables, &fire).await?;
                if matches!(status, orch::store::FireStatus::Fired(_)) {
                    notify(conn, tables).await?;
                }
                Ok(status)
            })
            .await?;
        if matches!(status, orch::store::FireStatus::Fired(_)) {
            self.inner.wake.notify_waiters();
        }
        Ok(status)
    }

    async fn server_time(&self) -> Result<Option<Timestamp>> {
        let mut conn = self.conn().await?;
        Ok(Some(workers::server_time(&mut conn).await?))
    }

    async fn prune_workers(&self, before: Timestamp) -> Result<u64> {
        let mut conn = self.conn().await?;
        Ok(workers::prune(&mut conn, &self.inner.tables, before).await?)
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.inner.wake))
    }
}

#[cfg(test)]
mod tests;
