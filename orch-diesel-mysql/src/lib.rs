//! The MySQL 8 / MariaDB 10.6+ [`Store`] for `orch`, on `diesel-async` with a `bb8`
//! connection pool.
//!
//! ```no_run
//! use std::sync::Arc;
//! use orch_diesel_mysql::{MysqlStore, orch::{Orch, Store}};
//!
//! # async fn demo() -> orch::Result<()> {
//! let store = MysqlStore::builder("mysql://app:secret@db.internal:3306/app")
//!     .prefix("jobs_")
//!     .max_connections(20)
//!     .connect()
//!     .await?;
//! store.migrate().await?;
//! let orch = Orch::new(Arc::new(store));
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! - **Tables** are InnoDB, `utf8mb4` with binary collation (names compare byte for
//!   byte, as in the other backends, except that `utf8mb4_bin` ignores trailing
//!   spaces: `"a "` equals `"a"`). Ids and lease tokens are hyphenated UUIDs in
//!   `CHAR(36) CHARACTER SET ascii`; times are `BIGINT` microseconds written from the
//!   caller's clock (the store never reads one, so no server time zone matters).
//! - **Claims** lock a batch with `SELECT … FOR UPDATE SKIP LOCKED`, so concurrent
//!   workers in any number of processes take disjoint batches without waiting for each
//!   other, then lease it under one fresh token.
//! - **Fencing**: every change to a running command is an `UPDATE … WHERE id = ? AND
//!   lease_token = ? AND state = 'running'`, decided by its matched-row count (the
//!   connection sets `CLIENT_FOUND_ROWS`). A refused change writes only a `lease_lost`
//!   journal entry.
//! - **Sessions** run in `READ COMMITTED` (fewer gap locks, so fewer deadlocks) with a
//!   strict `sql_mode`. A transaction that still hits a deadlock or a lock wait timeout
//!   is retried a few times, with a short backoff, before the error is returned.
//! - **Migrations** run under the named lock `orch_migrate_<prefix>` (`GET_LOCK`), so
//!   several processes may call [`Store::migrate`] at once. MySQL commits DDL
//!   implicitly, so every migration statement is idempotent on its own.
//! - **Wake-ups**: MySQL has no cross-process notification. [`Store::wake_signal`] is
//!   fired by this store (and its clones) after each committed push, so idle workers of
//!   this process look at once; commands pushed by other processes are seen at the next
//!   poll interval.
//! - **Workflows**: a command with dependencies is inserted `blocked`, its edges in
//!   `<prefix>dependencies`. The transaction that makes a command `succeeded` locks its
//!   blocked dependents (`FOR UPDATE`) and only then checks their other dependencies,
//!   in a fresh `READ COMMITTED` snapshot, so two dependencies finishing at once cannot
//!   both miss each other; the ready ones become `pending`. The transaction that makes
//!   a command `failed` or `cancelled` cancels its blocked dependents, transitively.
//! - **Sagas**: one row per instance in `<prefix>sagas`, keyed by (saga, correlation
//!   id). [`Store::save_saga`] is compare-and-set on the version: a create is an
//!   `INSERT` that a duplicate key turns into a conflict, a replace an `UPDATE … WHERE
//!   version = ?` decided by its matched-row count; the commands of a successful save
//!   (dependencies included) are inserted in the same transaction, and on a conflict
//!   nothing is written.
//! - **Workers**: one row per worker process in `<prefix>workers`, for monitors.
//!   [`Store::record_worker`] is an `INSERT … ON DUPLICATE KEY UPDATE` of every column
//!   (`VALUES()`, which MariaDB and MySQL both accept); [`Store::prune_workers`]
//!   deletes by the indexed `heartbeat_at`.
//! - **Transactional push**: [`MysqlStore::push_in`] inserts commands on your own
//!   connection, inside your transaction.
//!
//! Names, targets, workers, correlation ids, saga names, saga states and the ids,
//! instance keys and hosts of worker rows are `VARCHAR(255)`; a longer value is refused by the database (the session runs in
//! strict mode).

#![warn(missing_docs)]

mod commands;
mod dependencies;
mod journal;
mod migrations;
mod pauses;
mod retention;
mod sagas;
mod schedules;
mod workers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel::result::{ConnectionError, ConnectionResult};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use tokio::sync::Notify;

pub use diesel_async;
pub use orch;
use orch::store::backend::COMMAND_COLUMNS;
use orch::store::backend::{check_pool_options, redact_url};
use orch::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, HeartbeatParams, InsertCommand, JournalEntry, LeaseStatus, ListParams, Outcome, PauseRecord,
    PauseScope, QueueStats, Rescued, RetryStatus, SagaQuery, SagaRecord, SagaWrite, SagaWriteStatus,
    WorkerRecord, WorkflowId, WorkflowQuery, WorkflowStepRecord, WorkflowSummary,
};
use orch::{Error, NewCommand, Result, Store, TablePrefix, Timestamp};

const BACKEND: &str = "mysql";

/// Session settings of every connection of the pool: strict about bad values, and
/// `READ COMMITTED` so claims and rescues take no gap locks.
const SESSION_SETUP: &[&str] = &[
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// The session setting of a read-only store's connections: every later transaction,
/// explicit or a single autocommitted statement, is read-only.
const READ_ONLY_SETUP: &str = "SET SESSION TRANSACTION READ ONLY";

/// How many times a transaction that hit a deadlock or a lock wait timeout is retried.
const MAX_TX_RETRIES: u32 = 5;

type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncMysqlConnection>>;
type PooledConn<'a> = bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncMysqlConnection>>;
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Options for connecting a [`MysqlStore`].
///
/// ```no_run
/// use std::time::Duration;
/// # async fn demo() -> orch::Result<()> {
/// let store = orch_diesel_mysql::MysqlStore::builder("mysql://root@127.0.0.1:3306/app")
///     .prefix("jobs_")
///     .max_connections(4)
///     .connect_timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
pub struct MysqlBuilder {
    url: String,
    prefix: String,
    max_connections: u32,
    connect_timeout: Duration,
    read_only: bool,
}

impl std::fmt::Debug for MysqlBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlBuilder")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl MysqlBuilder {
    /// The table prefix (default `orch_`); validated by [`MysqlBuilder::connect`]
    /// before any connection is attempted.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most connections the pool opens (default 10; at least 1).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long connecting, or waiting for a free pooled connection, may take
    /// (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether every connection is a read-only session (default `false`): each one
    /// runs `SET SESSION TRANSACTION READ ONLY` when it is opened, so the server itself
    /// refuses any write the store attempts (`Cannot execute statement in a READ ONLY
    /// transaction`), migrations included. Reads work as usual. For monitors and other
    /// tools that must not change the queue; grant their user `SELECT` only as well
    /// where that is possible.
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Validates the options, opens one connection to check that the server is
    /// reachable (`SELECT 1`), and sets up the pool. Tables are created by
    /// [`Store::migrate`].
    ///
    /// Errors: [`Error::InvalidPrefix`] for a bad prefix, [`Error::InvalidConfig`] for
    /// bad options or an unparseable URL, [`Error::Backend`] when the server cannot be
    /// reached (the message names the URL, password redacted).
    pub async fn connect(self) -> Result<MysqlStore> {
        let prefix = TablePrefix::new(&self.prefix)?;
        check_pool_options(self.max_connections, self.connect_timeout)?;
        let redacted = redact_url(&self.url);
        let unreachable = |cause: String| {
            Error::backend(BACKEND, format!("cannot connect to MySQL at {redacted}: {cause}"))
        };
        let mut first =
            match tokio::time::timeout(self.connect_timeout, establish(self.url.clone(), self.read_only))
                .await
            {
                Err(_) => return Err(unreachable(format!("timed out after {:?}", self.connect_timeout))),
                Ok(Err(ConnectionError::InvalidConnectionUrl(e))) => {
                    return Err(Error::invalid_config(format!("invalid MySQL URL {redacted}: {e}")));
                }
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Ok(Ok(conn)) => conn,
            };
        diesel::sql_query("SELECT 1").execute(&mut first).await.map_err(|e| unreachable(e.to_string()))?;

        let mut config = ManagerConfig::<AsyncMysqlConnection>::default();
        let read_only = self.read_only;
        config.custom_setup =
            Box::new(move |url: &str| -> BoxFuture<'_, ConnectionResult<AsyncMysqlConnection>> {
                Box::pin(establish(url.to_owned(), read_only))
            });
        let manager = AsyncDieselConnectionManager::new_with_config(self.url.clone(), config);
        // No minimum of idle connections: `build` opens none, the checked one is added.
        let pool = bb8::Pool::builder()
            .max_size(self.max_connections)
            // Short waits, repeated by `MysqlStore::conn` up to the connect timeout: the
            // pool's retries of a failed connection back off to half this wait, so
            // once the server is back a connection is made within about a second.
            .connection_timeout(self.connect_timeout.min(POOL_WAIT))
            // Checked by `MysqlStore::conn`, where a cancelled check closes the connection.
            .test_on_check_out(false)
            .error_sink(Box::new(LogErrors))
            .build(manager)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = pool.add(first);
        tracing::debug!(
            url = %redacted,
            prefix = %prefix,
            max_connections = self.max_connections,
            read_only = self.read_only,
            "connected mysql store"
        );
        Ok(MysqlStore {
            inner: Arc::new(Inner {
                pool,
                tables: Tables::new(&prefix),
                prefix,
                url: redacted,
                max_connections: self.max_connections,
                connect_timeout: self.connect_timeout,
                wake: Arc::new(Notify::new()),
            }),
        })
    }
}

/// Opens one connection with the session settings (and read-only, when `read_only`).
async fn establish(url: String, read_only: bool) -> ConnectionResult<AsyncMysqlConnection> {
    let mut conn = AsyncMysqlConnection::establish(&url).await?;
    let read_only = read_only.then_some(READ_ONLY_SETUP);
    for sql in SESSION_SETUP.iter().copied().chain(read_only) {
        conn.batch_execute(sql).await.map_err(ConnectionError::CouldntSetupConfiguration)?;
    }
    Ok(conn)
}

/// Logs the errors of connections the pool opens in the background.
#[derive(Debug, Clone, Copy)]
struct LogErrors;

impl bb8::ErrorSink<PoolError> for LogErrors {
    fn sink(&self, error: PoolError) {
        tracing::warn!(error = %error, "mysql pool could not open a connection");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(*self)
    }
}

/// Table names behind the prefix, quoted, computed once.
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
    /// Every command column, for `SELECT` lists.
    pub(crate) columns: String,
}

impl Tables {
    fn new(prefix: &TablePrefix) -> Self {
        // The prefix is validated (ASCII letters, digits, `_`), so backticks quote it safely.
        Tables {
            commands: format!("`{prefix}commands`"),
            journal: format!("`{prefix}journal`"),
            dependencies: format!("`{prefix}dependencies`"),
            sagas: format!("`{prefix}sagas`"),
            workers: format!("`{prefix}workers`"),
            pauses: format!("`{prefix}pauses`"),
            schedules: format!("`{prefix}schedules`"),
            migrations: format!("`{prefix}migrations`"),
            columns: COMMAND_COLUMNS.join(", "),
        }
    }
}

struct Inner {
    pool: Pool,
    tables: Tables,
    prefix: TablePrefix,
    /// The URL with its password redacted, for messages.
    url: String,
    max_connections: u32,
    connect_timeout: Duration,
    wake: Arc<Notify>,
}

/// The longest one wait of the pool for a connection; see `MysqlStore::checkout`.
const POOL_WAIT: Duration = Duration::from_secs(1);

/// The MySQL / MariaDB store. Cheap to clone; clones share one connection pool and
/// one wake signal.
#[derive(Clone)]
pub struct MysqlStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("max_connections", &self.inner.max_connections)
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

/// One operation of the store, run on a connection (inside a transaction when it writes).
type Op<P, T> = for<'r> fn(&'r mut AsyncMysqlConnection, &'r Tables, &'r P) -> BoxFuture<'r, TxResult<T>>;

/// Whether `e` is a deadlock (1213) or a lock wait timeout (1205): InnoDB rolled the
/// statement (or the whole transaction) back and the transaction may simply be run
/// again. diesel-async keeps only the server's message, so the message decides.
fn is_transient(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        DieselError::DatabaseError(_, info) => {
            let message = info.message();
            message.contains("try restarting transaction")
                || message.starts_with("Deadlock found")
                || message.starts_with("Lock wait timeout exceeded")
        }
        _ => false,
    }
}

/// The pause before retry `n` (1-based) of a transaction: 5, 10, 20, 40, 80 ms, plus up
/// to as much again at random so that the transactions that collided spread out.
fn backoff(n: u32) -> Duration {
    let base = 5u64 << n.saturating_sub(1).min(8);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * base / 255;
    Duration::from_millis(base + jitter)
}

/// A pooled connection that is closed, not put back, when the operation using it is
/// cancelled half way (its future dropped, say by a timeout or an aborted task): a
/// MySQL connection dropped in the middle of reading a result can be left mid-packet,
/// and its next user would read garbage ("can't parse: buf doesn't have enough data").
struct Guarded<'a> {
    conn: PooledConn<'a>,
    finished: bool,
}

impl<'a> Guarded<'a> {
    fn new(conn: PooledConn<'a>) -> Self {
        Guarded { conn, finished: false }
    }

    /// The operation ran to its end (successfully or not): the connection may go back.
    fn finished(&mut self) {
        self.finished = true;
    }
}

impl std::ops::Deref for Guarded<'_> {
    type Target = AsyncMysqlConnection;

    fn deref(&self) -> &AsyncMysqlConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Guarded<'_> {
    fn deref_mut(&mut self) -> &mut AsyncMysqlConnection {
        &mut self.conn
    }
}

impl Drop for Guarded<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // The pool drops connections whose transaction manager is in error.
            <AnsiTransactionManager as TransactionManager<AsyncMysqlConnection>>::transaction_manager_status_mut(
                &mut self.conn,
            )
            .set_in_error();
        }
    }
}

/// Runs `op` in a transaction on `conn` (a savepoint when one is already open).
async fn run_tx<P: Sync + ?Sized, T: Send>(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    params: &P,
    op: Op<P, T>,
) -> TxResult<T> {
    AnsiTransactionManager::begin_transaction(conn).await?;
    match op(conn, tables, params).await {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(e) => {
            // After a deadlock InnoDB has already rolled the whole transaction back, so
            // rolling back to a savepoint can fail; the first error is the one to report
            // (a connection whose rollback failed is marked broken and not reused).
            if let Err(rollback) = AnsiTransactionManager::rollback_transaction(conn).await {
                tracing::debug!(error = %rollback, "mysql rollback failed");
            }
            Err(e)
        }
    }
}

impl MysqlStore {
    /// Options for connecting to the server at `url`
    /// (`mysql://user:password@host:3306/database`; MariaDB uses the same scheme).
    pub fn builder(url: impl Into<String>) -> MysqlBuilder {
        MysqlBuilder {
            url: url.into(),
            prefix: TablePrefix::default_prefix().as_str().to_owned(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            read_only: false,
        }
    }

    /// Connects to the server at `url` with the default options.
    pub async fn connect(url: &str) -> Result<MysqlStore> {
        Self::builder(url).connect().await
    }

    /// The table prefix.
    pub fn prefix(&self) -> &TablePrefix {
        &self.inner.prefix
    }

    /// Transactional push: inserts the commands (with their `enqueued` journal
    /// entries) on the **caller's** connection, inside whatever transaction the caller
    /// has open. If that transaction rolls back, the commands never existed; once it
    /// commits, they run. Returns their ids, in order.
    ///
    /// The insert runs in a savepoint of your transaction (diesel's transaction
    /// manager tracks it, so open your transaction with
    /// [`AsyncConnection::transaction`]): if it fails, nothing of it remains and your
    /// transaction can go on. Called outside any transaction, it is a transaction of
    /// its own. One exception: when MySQL reports a deadlock it has already rolled back
    /// your whole transaction, not just the push, so return the error rather than go
    /// on. The store cannot know when you commit, so it does not wake idle
    /// workers; they find the commands at their next poll, or sooner if you call
    /// [`MysqlStore::wake_workers`] after the commit.
    ///
    /// ```no_run
    /// use orch::{Clock, Command, NewCommand, SystemClock};
    /// use orch_diesel_mysql::MysqlStore;
    /// use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct SendReceiptCommand { order: u64 }
    /// impl Command for SendReceiptCommand { type Output = (); }
    ///
    /// /// The error of the caller's transaction: it must convert from diesel's error.
    /// #[derive(Debug)]
    /// enum AppError { Db(diesel::result::Error), Orch(orch::Error) }
    /// impl From<diesel::result::Error> for AppError {
    ///     fn from(e: diesel::result::Error) -> Self { AppError::Db(e) }
    /// }
    /// impl From<orch::Error> for AppError {
    ///     fn from(e: orch::Error) -> Self { AppError::Orch(e) }
    /// }
    ///
    /// # async fn demo(store: MysqlStore, conn: &mut AsyncMysqlConnection) -> Result<(), AppError> {
    /// let store = &store;
    /// let ids = conn
    ///     .transaction::<_, AppError, _>(async |conn| {
    ///         diesel::sql_query("INSERT INTO orders (id, total) VALUES (42, 1999)").execute(conn).await?;
    ///         let receipt = NewCommand::of(&SendReceiptCommand { order: 42 });
    ///         Ok(store.push_in(conn, SystemClock.now(), vec![receipt]).await?)
    ///     })
    ///     .await?;
    /// store.wake_workers(); // committed: idle workers of this process may look now
    /// # let _ = ids;
    /// # Ok(()) }
    /// ```
    pub async fn push_in(
        &self,
        conn: &mut AsyncMysqlConnection,
        now: Timestamp,
        commands: Vec<NewCommand>,
    ) -> Result<Vec<CommandId>> {
        let rows = commands.into_iter().map(|c| c.resolve(now)).collect::<Result<Vec<InsertCommand>>>()?;
        let ids = rows.iter().map(|r| r.id).collect();
        if rows.is_empty() {
            return Ok(ids);
        }
        run_tx(conn, &self.inner.tables, rows.as_slice(), |c, t, rows| Box::pin(insert_all(c, t, rows)))
            .await?;
        Ok(ids)
    }

    /// Wakes the idle workers of this process that use this store (or a clone of it),
    /// so they look for due commands now rather than at their next poll. The store
    /// does this itself after each push it commits; call it after committing a
    /// transaction that used [`MysqlStore::push_in`].
    pub fn wake_workers(&self) {
        self.inner.wake.notify_waiters();
    }

    /// A connection from the pool, checked with a round trip (`DO 1`). Connections
    /// that fail the check (the server closed them, say) are closed and others tried.
    ///
    /// The check is done here, not by the pool (`test_on_check_out` is off), because
    /// the pool puts a connection back even when its check was cancelled half way.
    async fn conn(&self) -> Result<Guarded<'_>> {
        let mut attempts = 0;
        loop {
            let mut conn = Guarded::new(self.checkout().await.map_err(|e| match e {
                bb8::RunError::User(e) => {
                    Error::backend(BACKEND, format!("cannot connect to MySQL at {}: {e}", self.inner.url))
                }
                bb8::RunError::TimedOut => Error::backend(
                    BACKEND,
                    format!(
                        "no connection to MySQL at {} within {:?} (pool of {}: all busy, or the server is unreachable)",
                        self.inner.url, self.inner.connect_timeout, self.inner.max_connections
                    ),
                ),
            })?);
            // Not `finished` until the operation is: a failed check closes the connection.
            match conn.batch_execute("DO 1").await {
                Ok(()) => return Ok(conn),
                Err(e) => {
                    attempts += 1;
                    tracing::debug!(error = %e, attempts, "closing a broken pooled mysql connection");
                    if attempts > self.inner.max_connections {
                        return Err(Error::backend(
                            BACKEND,
                            format!("no working connection to MySQL at {}: {e}", self.inner.url),
                        ));
                    }
                }
            }
        }
    }

    /// Waits up to the connect timeout for a pooled connection, in waits of at most
    /// [`POOL_WAIT`], so that while the server is down a fresh connection attempt
    /// starts at least that often.
    async fn checkout(&self) -> std::result::Result<PooledConn<'_>, bb8::RunError<PoolError>> {
        let deadline = tokio::time::Instant::now() + self.inner.connect_timeout;
        loop {
            match self.inner.pool.get().await {
                Err(bb8::RunError::TimedOut) if tokio::time::Instant::now() < deadline => {}
                other => return other,
            }
        }
    }

    /// Runs `op` in a transaction on a pooled connection, again (up to
    /// [`MAX_TX_RETRIES`] times) while it fails with a deadlock or lock wait timeout.
    async fn write<P: Sync + ?Sized, T: Send>(
        &self,
        what: &'static str,
        params: &P,
        op: Op<P, T>,
    ) -> Result<T> {
        let mut retries = 0;
        loop {
            let mut conn = self.conn().await?;
            let result = run_tx(&mut conn, &self.inner.tables, params, op).await;
            conn.finished();
            match result {
                Err(TxError::Diesel(e)) if retries < MAX_TX_RETRIES && is_transient(&e) => {
                    drop(conn);
                    retries += 1;
                    let delay = backoff(retries);
                    tracing::debug!(what, retry = retries, error = %e, ?delay, "mysql transaction rolled back by a lock conflict; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other.map_err(Error::from),
            }
        }
    }

    /// Runs `op` (reads only) on a pooled connection, outside a transaction.
    async fn read<P: Sync + ?Sized, T: Send>(&self, params: &P, op: Op<P, T>) -> Result<T> {
        let mut conn = self.conn().await?;
        let result = op(&mut conn, &self.inner.tables, params).await;
        conn.finished();
        Ok(result?)
    }

    fn woken(&self) {
        self.inner.wake.notify_waiters();
    }
}

async fn insert_all(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    rows: &[InsertCommand],
) -> TxResult<()> {
    let refs: Vec<&InsertCommand> = rows.iter().collect();
    commands::insert(conn, tables, &refs).await
}

/// Whether applying `c` may have made a command due: follow-ups were pushed, or the
/// command itself is pending again. (Dependents it unblocked are reported by
/// `commands::complete`.)
fn makes_work(c: &Completion) -> bool {
    match &c.outcome {
        Outcome::Succeeded { follow_ups, .. }
        | Outcome::Failed { follow_ups, .. }
        | Outcome::Cancelled { follow_ups } => !follow_ups.is_empty(),
        Outcome::Retry { .. } | Outcome::Released { .. } => true,
    }
}

#[async_trait]
impl Store for MysqlStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn migrate(&self) -> Result<()> {
        // A connection of its own, closed afterwards: the named lock is held by the
        // session, so if this future is dropped half way the lock goes with it rather
        // than staying on a pooled connection.
        let mut conn = self.inner.pool.dedicated_connection().await.map_err(|e| {
            Error::backend(BACKEND, format!("cannot connect to MySQL at {}: {e}", self.inner.url))
        })?;
        migrations::run(&mut conn, &self.inner.tables, &self.inner.prefix).await.map_err(Error::from)
    }

    async fn enqueue(&self, commands: Vec<InsertCommand>) -> Result<Vec<CommandId>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let ids = if commands.iter().any(|c| c.unique.is_some()) {
            self.write("enqueue", commands.as_slice(), |c, t, rows| {
                Box::pin(commands::insert_unique(c, t, rows))
            })
            .await?
        } else {
            self.write("enqueue", commands.as_slice(), |c, t, rows| Box::pin(insert_all(c, t, rows))).await?;
            commands.iter().map(|c| c.id).collect()
        };
        self.woken();
        Ok(ids)
    }

    async fn claim(&self, params: ClaimParams) -> Result<Vec<ClaimedCommand>> {
        if params.names.is_empty() || params.limit == 0 {
            return Ok(Vec::new());
        }
        let claimed = self.write("claim", &params, |c, t, p| Box::pin(commands::claim(c, t, p))).await?;
        if !claimed.is_empty() {
            tracing::debug!(count = claimed.len(), worker = %params.worker, target = %params.target, "claimed commands");
        }
        Ok(claimed)
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<LeaseStatus>> {
        if params.leases.is_empty() {
            return Ok(Vec::new());
        }
        self.write("heartbeat", &params, |c, t, p| Box::pin(commands::heartbeat(c, t, p))).await
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<Vec<CompletionStatus>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let (statuses, unblocked) = self
            .write("complete", completions.as_slice(), |c, t, p| Box::pin(commands::complete(c, t, p)))
            .await?;
        let wake = unblocked
            || completions
                .iter()
                .zip(&statuses)
                .any(|(c, s)| *s == CompletionStatus::Applied && makes_work(c));
        if wake {
            self.woken();
        }
        Ok(statuses)
    }

    async fn cancel(&self, id: CommandId, now: Timestamp) -> Result<CancelStatus> {
        self.write("cancel", &(id, now), |c, t, &(id, now)| Box::pin(commands::cancel(c, t, id, now))).await
    }

    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<Vec<Rescued>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rescued = self
            .write("rescue", &(now, limit), |c, t, &(now, limit)| {
                Box::pin(commands::rescue(c, t, now, limit))
            })
            .await?;
        if rescued.iter().any(|r| r.state == orch::State::Pending) {
            self.woken();
        }
        Ok(rescued)
    }

    async fn follow_ups_due(&self, names: &[String], limit: usize) -> Result<Vec<CommandRecord>> {
        if names.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.read(&(names, limit), |c, t, &(names, limit)| {
            Box::pin(commands::follow_ups_due(c, t, names, limit))
        })
        .await
    }

    async fn resolve_follow_ups(
        &self,
        id: CommandId,
        follow_ups: Vec<InsertCommand>,
        now: Timestamp,
    ) -> Result<bool> {
        let resolved = self
            .write("resolve_follow_ups", &(id, follow_ups.as_slice(), now), |c, t, &(id, follow_ups, now)| {
                Box::pin(commands::resolve_follow_ups(c, t, id, follow_ups, now))
            })
            .await?;
        if resolved && !follow_ups.is_empty() {
            self.woken();
        }
        Ok(resolved)
    }

    async fn get(&self, id: CommandId) -> Result<Option<CommandRecord>> {
        self.read(&id, |c, t, &id| Box::pin(commands::get(c, t, id))).await
    }

    async fn list(&self, params: ListParams) -> Result<Vec<CommandRecord>> {
        self.read(&params, |c, t, p| Box::pin(commands::list(c, t, p))).await
    }

    async fn counts(&self) -> Result<Vec<CountRow>> {
        self.read(&(), |c, t, ()| Box::pin(commands::counts(c, t))).await
    }

    async fn journal(&self, id: CommandId) -> Result<Vec<JournalEntry>> {
        self.read(&id, |c, t, &id| Box::pin(journal::read(c, t, id))).await
    }

    async fn workflow_steps(&self, workflow_id: WorkflowId) -> Result<Vec<WorkflowStepRecord>> {
        self.read(&workflow_id, |c, t, &w| Box::pin(dependencies::workflow_steps(c, t, w))).await
    }

    async fn saga(&self, saga: &str, correlation_id: &str) -> Result<Option<SagaRecord>> {
        self.read(&(saga, correlation_id), |c, t, &(saga, correlation_id)| {
            Box::pin(sagas::get(c, t, saga, correlation_id))
        })
        .await
    }

    async fn save_saga(&self, write: SagaWrite) -> Result<SagaWriteStatus> {
        let status = self.write("save_saga", &write, |c, t, w| Box::pin(sagas::save(c, t, w))).await?;
        if status == SagaWriteStatus::Saved && !write.commands.is_empty() {
            self.woken();
        }
        Ok(status)
    }

    async fn sagas(&self, query: SagaQuery) -> Result<Vec<SagaRecord>> {
        self.read(&query, |c, t, q| Box::pin(sagas::list(c, t, q))).await
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>> {
        self.read(&now, |c, t, &now| Box::pin(commands::queue_stats(c, t, now))).await
    }

    async fn retry(&self, id: CommandId, now: Timestamp) -> Result<RetryStatus> {
        let status = self
            .write("retry", &(id, now), |c, t, &(id, now)| Box::pin(commands::retry(c, t, id, now)))
            .await?;
        if status == RetryStatus::Retried {
            self.woken();
        }
        Ok(status)
    }

    async fn workflows(&self, query: WorkflowQuery) -> Result<Vec<WorkflowSummary>> {
        self.read(&query, |c, t, q| Box::pin(commands::workflows(c, t, q))).await
    }

    async fn record_worker(&self, worker: WorkerRecord) -> Result<()> {
        self.write("record_worker", &worker, |c, t, w| Box::pin(workers::record(c, t, w))).await
    }

    async fn remove_worker(&self, id: &str) -> Result<()> {
        self.write("remove_worker", id, |c, t, id| Box::pin(workers::remove(c, t, id))).await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.read(&(), |c, t, ()| Box::pin(workers::list(c, t))).await
    }

    async fn prune_finished(&self, before: Timestamp, limit: usize) -> Result<Option<u64>> {
        // A connection of its own, closed afterwards: the named lock is held by the
        // session, so if this future is dropped half way the lock goes with it.
        let mut conn = self.inner.pool.dedicated_connection().await.map_err(|e| {
            Error::backend(BACKEND, format!("cannot connect to MySQL at {}: {e}", self.inner.url))
        })?;
        let (tables, prefix) = (&self.inner.tables, &self.inner.prefix);
        retention::prune(&mut conn, tables, prefix, before, limit, orch::store::PRUNE_BATCH)
            .await
            .map_err(Error::from)
    }

    async fn pause(&self, scope: PauseScope, now: Timestamp) -> Result<bool> {
        let params = (scope, now);
        self.write("pause", &params, |c, t, (scope, now)| Box::pin(pauses::pause(c, t, scope, *now))).await
    }

    async fn resume(&self, scope: &PauseScope) -> Result<bool> {
        let resumed =
            self.write("resume", scope, |c, t, scope| Box::pin(pauses::resume(c, t, scope))).await?;
        // Idle workers on this store claim again at once.
        self.inner.wake.notify_waiters();
        Ok(resumed)
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>> {
        self.read(&(), |c, t, ()| Box::pin(pauses::list(c, t))).await
    }

    async fn save_schedule(&self, record: orch::store::ScheduleRecord) -> Result<()> {
        self.write("save_schedule", &record, |c, t, r| Box::pin(schedules::save(c, t, r))).await
    }

    async fn remove_schedule(&self, name: &str) -> Result<bool> {
        self.write("remove_schedule", name, |c, t, name| Box::pin(schedules::remove(c, t, name))).await
    }

    async fn schedules(&self) -> Result<Vec<orch::store::ScheduleRecord>> {
        self.read(&(), |c, t, ()| Box::pin(schedules::list(c, t))).await
    }

    async fn fire_schedule(&self, fire: orch::store::ScheduleFire) -> Result<orch::store::FireStatus> {
        let status = self.write("fire_schedule", &fire, |c, t, f| Box::pin(schedules::fire(c, t, f))).await?;
        if matches!(status, orch::store::FireStatus::Fired(_)) {
            self.woken();
        }
        Ok(status)
    }

    async fn server_time(&self) -> Result<Option<Timestamp>> {
        self.read(&(), |c, _, ()| Box::pin(workers::server_time(c))).await.map(Some)
    }

    async fn prune_workers(&self, before: Timestamp) -> Result<u64> {
        self.write("prune_workers", &before, |c, t, &before| Box::pin(workers::prune(c, t, before))).await
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.inner.wake))
    }
}

#[cfg(test)]
mod tests;
