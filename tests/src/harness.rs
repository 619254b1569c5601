//! Harnesses: each hands out stores of one backend, isolated from each other.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use orch::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, HeartbeatParams, InsertCommand, JournalEntry, LeaseStatus, ListParams, QueueStats, Rescued,
    RetryStatus, SagaQuery, SagaRecord, SagaWrite, SagaWriteStatus, WorkerRecord, WorkflowId, WorkflowQuery,
    WorkflowStepRecord, WorkflowSummary,
};
use orch::{Error, Store, Timestamp};

/// Gives the conformance suite fresh stores of one backend.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend's name, for messages.
    fn backend(&self) -> &'static str;

    /// A fresh, migrated store that shares nothing with any other store handed out.
    async fn store(&self) -> Arc<dyn Store>;

    /// A store in this harness's shared database with the given table prefix (not yet
    /// migrated); errors as the backend reports them.
    async fn store_with_prefix(&self, prefix: &str) -> Result<Arc<dyn Store>, Error>;

    /// A fresh, migrated store and where it lives: its URL and table prefix, for
    /// tools that open a store by URL (the monitor).
    async fn located_store(&self) -> (Arc<dyn Store>, StoreLocation);

    /// The commands of the store at `location` counted by state with plain SQL,
    /// independently of the library's queries.
    async fn sql_state_counts(&self, location: &StoreLocation) -> BTreeMap<String, i64>;

    /// Runs one plain SQL statement against the store at `location`, as a careless
    /// producer would, `{commands}` standing for its commands table; the database's
    /// refusal as text.
    async fn sql_execute(&self, location: &StoreLocation, sql: &str) -> Result<(), String>;
}

/// Where a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLocation {
    /// `sqlite://path`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// The table prefix.
    pub prefix: String,
}

const STATE_COUNTS_SQL: &str = "SELECT state, COUNT(*) AS n FROM {commands} GROUP BY state";

#[derive(diesel::QueryableByName)]
struct StateCount {
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// SQLite files in a temporary directory, one per store (one shared file for
/// [`Harness::store_with_prefix`]).
#[derive(Debug)]
pub struct SqliteHarness {
    dir: tempfile::TempDir,
}

impl SqliteHarness {
    /// A harness with its own temporary directory.
    pub fn new() -> Self {
        SqliteHarness { dir: tempfile::tempdir().expect("create a temporary directory") }
    }
}

impl Default for SqliteHarness {
    fn default() -> Self {
        Self::new()
    }
}

fn sqlite(path: &std::path::Path, prefix: &str) -> Result<orch_sqlite::SqliteStore, Error> {
    // NORMAL sync keeps the suite fast; durability on power loss is not what it checks.
    orch_sqlite::SqliteStore::builder(path)
        .prefix(prefix)
        .synchronous(orch_sqlite::Synchronous::Normal)
        .open()
}

#[async_trait]
impl Harness for SqliteHarness {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn store(&self) -> Arc<dyn Store> {
        let path = self.dir.path().join(format!("{}.db", uuid::Uuid::new_v4().simple()));
        let store = sqlite(&path, "orch_").expect("open sqlite store");
        store.migrate().await.expect("migrate sqlite store");
        Arc::new(store)
    }

    async fn store_with_prefix(&self, prefix: &str) -> Result<Arc<dyn Store>, Error> {
        let path = self.dir.path().join("shared.db");
        Ok(Arc::new(sqlite(&path, prefix)?))
    }

    async fn located_store(&self) -> (Arc<dyn Store>, StoreLocation) {
        let path = self.dir.path().join(format!("{}.db", uuid::Uuid::new_v4().simple()));
        let store = sqlite(&path, "orch_").expect("open sqlite store");
        store.migrate().await.expect("migrate sqlite store");
        let location = StoreLocation { url: format!("sqlite://{}", path.display()), prefix: "orch_".into() };
        (Arc::new(store), location)
    }

    async fn sql_state_counts(&self, location: &StoreLocation) -> BTreeMap<String, i64> {
        use diesel::{Connection, RunQueryDsl, SqliteConnection};
        let path = location.url.trim_start_matches("sqlite://");
        let mut conn = SqliteConnection::establish(path).expect("open the SQLite file");
        let sql = STATE_COUNTS_SQL.replace("{commands}", &format!("{}commands", location.prefix));
        let rows: Vec<StateCount> = diesel::sql_query(sql).load(&mut conn).expect("count by state");
        rows.into_iter().map(|r| (r.state, r.n)).collect()
    }

    async fn sql_execute(&self, location: &StoreLocation, sql: &str) -> Result<(), String> {
        use diesel::{Connection, RunQueryDsl, SqliteConnection};
        let path = location.url.trim_start_matches("sqlite://");
        let mut conn = SqliteConnection::establish(path).map_err(|e| e.to_string())?;
        let sql = sql.replace("{commands}", &format!("{}commands", location.prefix));
        diesel::sql_query(sql).execute(&mut conn).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The environment variable naming the PostgreSQL server for the tests.
pub const PG_URL_VAR: &str = "ORCH_PG_URL";
/// The environment variable naming the MySQL/MariaDB server for the tests.
pub const MYSQL_URL_VAR: &str = "ORCH_MYSQL_URL";

/// The server URL in `var`, or `None` with the reason printed. Under `CI=true` a
/// missing URL fails the test instead: CI must run every backend.
pub fn server_url(var: &str, backend: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} is not set and CI=true: the {backend} tests must run in CI (see .ci/run)"
            );
            eprintln!("skipping the {backend} tests: {var} is not set");
            None
        }
    }
}

/// `url` with its database (path) replaced by `database`, keeping any query string.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    let query = path.find('?').map_or("", |i| &path[i..]);
    format!("{scheme}://{authority}/{database}{query}")
}

/// Which server a [`ServerHarness`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL, through `orch-diesel-pg`.
    Postgres,
    /// MySQL or MariaDB, through `orch-diesel-mysql`.
    Mysql,
}

impl Server {
    /// `postgres` or `mysql`.
    pub fn label(self) -> &'static str {
        self.name()
    }

    fn name(self) -> &'static str {
        match self {
            Server::Postgres => "postgres",
            Server::Mysql => "mysql",
        }
    }

    fn var(self) -> &'static str {
        match self {
            Server::Postgres => PG_URL_VAR,
            Server::Mysql => MYSQL_URL_VAR,
        }
    }
}

/// Stores on a real server. Each test process gets its own database (created on first
/// use, named `orch_t<unix seconds>_<random>`; ones left by runs over an hour old are
/// dropped then), and each store a fresh table prefix in it, so cases run in parallel
/// and reruns start clean.
#[derive(Debug, Clone)]
pub struct ServerHarness {
    server: Server,
    url: String,
}

static PG_DATABASE: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
static MYSQL_DATABASE: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
static NEXT_PREFIX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl ServerHarness {
    /// A harness for `server` when its URL variable is set (see [`server_url`]).
    pub fn from_env(server: Server) -> Option<Self> {
        let admin_url = server_url(server.var(), server.name())?;
        let cell = match server {
            Server::Postgres => &PG_DATABASE,
            Server::Mysql => &MYSQL_DATABASE,
        };
        let url = cell
            .get_or_init(|| process_database(server, &admin_url))
            .clone()
            .unwrap_or_else(|e| panic!("{} test database: {e}", server.name()));
        Some(ServerHarness { server, url })
    }

    /// A PostgreSQL harness, if `ORCH_PG_URL` is set.
    pub fn postgres() -> Option<Self> {
        Self::from_env(Server::Postgres)
    }

    /// A MySQL/MariaDB harness, if `ORCH_MYSQL_URL` is set.
    pub fn mysql() -> Option<Self> {
        Self::from_env(Server::Mysql)
    }

    /// The URL of this process's test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which server.
    pub fn server(&self) -> Server {
        self.server
    }

    /// A fresh table prefix, unique in this process.
    pub fn fresh_prefix() -> String {
        let n = NEXT_PREFIX.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("c{n}_")
    }

    /// A connected (not migrated) store with `prefix` and at most `connections`.
    pub async fn open(&self, prefix: &str, connections: u32) -> Result<Arc<dyn Store>, Error> {
        open_store(self.server, &self.url, prefix, connections).await
    }
}

/// A connected (not migrated) store on `server` at `url`.
async fn open_store(
    server: Server,
    url: &str,
    prefix: &str,
    connections: u32,
) -> Result<Arc<dyn Store>, Error> {
    Ok(match server {
        Server::Postgres => Arc::new(
            orch_diesel_pg::PgStore::builder(url)
                .prefix(prefix)
                .max_connections(connections)
                .connect()
                .await?,
        ),
        Server::Mysql => Arc::new(
            orch_diesel_mysql::MysqlStore::builder(url)
                .prefix(prefix)
                .max_connections(connections)
                .connect()
                .await?,
        ),
    })
}

#[async_trait]
impl Harness for ServerHarness {
    fn backend(&self) -> &'static str {
        self.server.name()
    }

    async fn store(&self) -> Arc<dyn Store> {
        let store = self.open(&Self::fresh_prefix(), 4).await.expect("connect to the test database");
        store.migrate().await.expect("migrate the test store");
        store
    }

    async fn store_with_prefix(&self, prefix: &str) -> Result<Arc<dyn Store>, Error> {
        self.open(prefix, 4).await
    }

    async fn located_store(&self) -> (Arc<dyn Store>, StoreLocation) {
        let prefix = Self::fresh_prefix();
        let store = self.open(&prefix, 4).await.expect("connect to the test database");
        store.migrate().await.expect("migrate the test store");
        (store, StoreLocation { url: self.url.clone(), prefix })
    }

    async fn sql_state_counts(&self, location: &StoreLocation) -> BTreeMap<String, i64> {
        use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
        use orch_diesel_pg::diesel_async::AsyncPgConnection;
        let rows: Vec<StateCount> = match self.server {
            Server::Postgres => {
                let mut conn = AsyncPgConnection::establish(&location.url).await.expect("connect");
                let table = format!("\"{}commands\"", location.prefix);
                diesel::sql_query(STATE_COUNTS_SQL.replace("{commands}", &table))
                    .load(&mut conn)
                    .await
                    .expect("count by state")
            }
            Server::Mysql => {
                let mut conn = AsyncMysqlConnection::establish(&location.url).await.expect("connect");
                let table = format!("`{}commands`", location.prefix);
                diesel::sql_query(STATE_COUNTS_SQL.replace("{commands}", &table))
                    .load(&mut conn)
                    .await
                    .expect("count by state")
            }
        };
        rows.into_iter().map(|r| (r.state, r.n)).collect()
    }

    async fn sql_execute(&self, location: &StoreLocation, sql: &str) -> Result<(), String> {
        use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
        use orch_diesel_pg::diesel_async::AsyncPgConnection;
        match self.server {
            Server::Postgres => {
                let mut conn =
                    AsyncPgConnection::establish(&location.url).await.map_err(|e| e.to_string())?;
                let sql = sql.replace("{commands}", &format!("\"{}commands\"", location.prefix));
                diesel::sql_query(sql).execute(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
            }
            Server::Mysql => {
                let mut conn =
                    AsyncMysqlConnection::establish(&location.url).await.map_err(|e| e.to_string())?;
                let sql = sql.replace("{commands}", &format!("`{}commands`", location.prefix));
                diesel::sql_query(sql).execute(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}

/// The role (PostgreSQL) or user (MariaDB) that [`LeastPrivilegeHarness`] connects as.
pub const APP_ROLE: &str = "orch_app";

/// The MariaDB accounts of [`APP_ROLE`]: any host over TCP, and the local socket.
pub const MYSQL_APP_HOSTS: [&str; 2] = ["%", "localhost"];

/// The tables of a prefix that the application reads and writes (the migrations table
/// is the owner's alone).
pub const APP_TABLES: [&str; 7] =
    ["commands", "journal", "dependencies", "sagas", "workers", "pauses", "schedules"];

/// `url` with its user (and any password) replaced by `user`.
pub fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find('/').unwrap_or(rest.len());
    let host = match rest[..end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}://{user}@{host}")
}

/// The database (path) of a server URL, without any query string.
pub fn database_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("", |i| &rest[i + 1..]);
    path.split('?').next().unwrap_or("")
}

/// The statements, run by an owner, that create `role` with no rights of its own (or
/// strip an existing one of them) and let it reach `database`; idempotent.
pub fn app_role_setup(server: Server, database: &str, role: &str) -> Vec<String> {
    match server {
        Server::Postgres => vec![
            format!(
                "DO $$ BEGIN CREATE ROLE \"{role}\" LOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ),
            format!(
                "ALTER ROLE \"{role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            ),
            // PostgreSQL before 15 lets every role create tables in `public`.
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
            format!("GRANT CONNECT ON DATABASE \"{database}\" TO \"{role}\""),
            format!("GRANT USAGE ON SCHEMA public TO \"{role}\""),
        ],
        Server::Mysql => MYSQL_APP_HOSTS
            .iter()
            .map(|host| format!("CREATE USER IF NOT EXISTS '{role}'@'{host}'"))
            .collect(),
    }
}

/// The statements, run by the owner after migrating, that let `role` read and write
/// the tables of `prefix` in `database` and nothing else (the grants the README lists).
pub fn app_table_grants(server: Server, database: &str, prefix: &str, role: &str) -> Vec<String> {
    match server {
        Server::Postgres => {
            // PostgreSQL folds the unquoted names of the migrations to lower case.
            let p = prefix.to_ascii_lowercase();
            let tables = APP_TABLES.iter().map(|t| format!("\"{p}{t}\"")).collect::<Vec<_>>().join(", ");
            vec![
                format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO \"{role}\""),
                // The journal's `seq` is a BIGSERIAL.
                format!("GRANT USAGE ON SEQUENCE \"{p}journal_seq_seq\" TO \"{role}\""),
                // Read only: an up-to-date `migrate` checks the versions.
                format!("GRANT SELECT ON \"{p}migrations\" TO \"{role}\""),
            ]
        }
        Server::Mysql => MYSQL_APP_HOSTS
            .iter()
            .flat_map(|host| {
                APP_TABLES
                    .iter()
                    .map(move |t| {
                        format!(
                            "GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.`{prefix}{t}` TO '{role}'@'{host}'"
                        )
                    })
                    // Read only: an up-to-date `migrate` checks the versions.
                    .chain(std::iter::once(format!(
                        "GRANT SELECT ON `{database}`.`{prefix}migrations` TO '{role}'@'{host}'"
                    )))
            })
            .collect(),
    }
}

/// Runs `statements` in order on a new connection to `url`.
pub async fn run_statements(server: Server, url: &str, statements: &[String]) -> Result<(), String> {
    use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};
    use orch_diesel_pg::diesel_async::AsyncPgConnection;
    match server {
        Server::Postgres => {
            let mut conn = AsyncPgConnection::establish(url).await.map_err(|e| e.to_string())?;
            for sql in statements {
                conn.batch_execute(sql).await.map_err(|e| format!("{sql}: {e}"))?;
            }
        }
        Server::Mysql => {
            let mut conn = AsyncMysqlConnection::establish(url).await.map_err(|e| e.to_string())?;
            for sql in statements {
                conn.batch_execute(sql).await.map_err(|e| format!("{sql}: {e}"))?;
            }
        }
    }
    Ok(())
}

static PG_APP_ROLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
static MYSQL_APP_ROLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();

/// Stores on a real server that the library reaches as [`APP_ROLE`], a role that may
/// only read and write the `orch` tables. Each store's tables are created by migrating
/// as the owner (the URL in `ORCH_PG_URL` / `ORCH_MYSQL_URL`, in this process's test
/// database), which then grants the role [`app_table_grants`] on them; the store handed
/// out is connected as the role. A store's [`Store::migrate`] likewise runs as the
/// owner, as a separate migration step would. [`Harness::sql_execute`] and
/// [`Harness::sql_state_counts`] connect as the owner.
#[derive(Debug, Clone)]
pub struct LeastPrivilegeHarness {
    owner: ServerHarness,
    app_url: String,
}

impl LeastPrivilegeHarness {
    /// A harness for `server` when its URL variable is set (see [`server_url`]): the
    /// role is created (once per process) and may connect to the test database.
    pub fn from_env(server: Server) -> Option<Self> {
        let owner = ServerHarness::from_env(server)?;
        let cell = match server {
            Server::Postgres => &PG_APP_ROLE,
            Server::Mysql => &MYSQL_APP_ROLE,
        };
        cell.get_or_init(|| {
            let url = owner.url().to_owned();
            // On a thread of its own, so that it works from inside any runtime.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let setup = app_role_setup(server, database_of(&url), APP_ROLE);
                rt.block_on(run_statements(server, &url, &setup))
            })
            .join()
            .unwrap_or_else(|_| Err("creating the role panicked".to_owned()))
        })
        .clone()
        .unwrap_or_else(|e| panic!("creating the {} role {APP_ROLE}: {e}", server.name()));
        let app_url = with_user(owner.url(), APP_ROLE);
        Some(LeastPrivilegeHarness { owner, app_url })
    }

    /// A PostgreSQL harness, if `ORCH_PG_URL` is set.
    pub fn postgres() -> Option<Self> {
        Self::from_env(Server::Postgres)
    }

    /// A MySQL/MariaDB harness, if `ORCH_MYSQL_URL` is set.
    pub fn mysql() -> Option<Self> {
        Self::from_env(Server::Mysql)
    }

    /// The harness of the owner, connected to the same database.
    pub fn owner(&self) -> &ServerHarness {
        &self.owner
    }

    /// The URL of the test database as the application role.
    pub fn app_url(&self) -> &str {
        &self.app_url
    }

    /// Migrates `prefix`'s tables as the owner and grants the role its rights on them.
    pub async fn provision(&self, prefix: &str) -> Result<(), Error> {
        let owner = self.owner.open(prefix, 1).await?;
        owner.migrate().await?;
        let server = self.owner.server();
        let grants = app_table_grants(server, database_of(self.owner.url()), prefix, APP_ROLE);
        run_statements(server, self.owner.url(), &grants)
            .await
            .map_err(|e| Error::backend(server.name(), format!("granting {APP_ROLE} its rights: {e}")))
    }

    /// A store with `prefix` connected as the role (its tables must exist and be granted).
    pub async fn open_app(&self, prefix: &str, connections: u32) -> Result<Arc<dyn Store>, Error> {
        open_store(self.owner.server(), &self.app_url, prefix, connections).await
    }

    /// `location` as the owner sees it.
    fn as_owner(&self, location: &StoreLocation) -> StoreLocation {
        StoreLocation { url: self.owner.url().to_owned(), prefix: location.prefix.clone() }
    }
}

#[async_trait]
impl Harness for LeastPrivilegeHarness {
    fn backend(&self) -> &'static str {
        self.owner.backend()
    }

    async fn store(&self) -> Arc<dyn Store> {
        self.located_store().await.0
    }

    async fn store_with_prefix(&self, prefix: &str) -> Result<Arc<dyn Store>, Error> {
        if orch::TablePrefix::new(prefix).is_err() {
            // The store's own check, which refuses before connecting.
            return self.open_app(prefix, 4).await;
        }
        // Connected as the role on first use: before the owner has granted anything
        // on a database, MariaDB refuses the role a connection to it.
        Ok(Arc::new(OwnerMigrated {
            harness: self.clone(),
            prefix: prefix.to_owned(),
            app: tokio::sync::OnceCell::new(),
        }))
    }

    async fn located_store(&self) -> (Arc<dyn Store>, StoreLocation) {
        let prefix = ServerHarness::fresh_prefix();
        self.provision(&prefix).await.expect("migrate and grant as the owner");
        let store = self.open_app(&prefix, 4).await.expect("connect as the application role");
        (store, StoreLocation { url: self.app_url.clone(), prefix })
    }

    async fn sql_state_counts(&self, location: &StoreLocation) -> BTreeMap<String, i64> {
        self.owner.sql_state_counts(&self.as_owner(location)).await
    }

    async fn sql_execute(&self, location: &StoreLocation, sql: &str) -> Result<(), String> {
        self.owner.sql_execute(&self.as_owner(location), sql).await
    }
}

/// A store of [`LeastPrivilegeHarness`] whose [`Store::migrate`] is the owner's
/// migration and grants; everything else runs as the role.
struct OwnerMigrated {
    harness: LeastPrivilegeHarness,
    prefix: String,
    app: tokio::sync::OnceCell<Arc<dyn Store>>,
}

impl OwnerMigrated {
    async fn app(&self) -> Result<&Arc<dyn Store>, Error> {
        self.app.get_or_try_init(|| self.harness.open_app(&self.prefix, 4)).await
    }
}

#[async_trait]
impl Store for OwnerMigrated {
    fn backend(&self) -> &'static str {
        self.harness.backend()
    }

    async fn migrate(&self) -> orch::Result<()> {
        self.harness.provision(&self.prefix).await?;
        self.app().await.map(|_| ())
    }

    async fn enqueue(&self, commands: Vec<InsertCommand>) -> orch::Result<Vec<CommandId>> {
        self.app().await?.enqueue(commands).await
    }

    async fn claim(&self, params: ClaimParams) -> orch::Result<Vec<ClaimedCommand>> {
        self.app().await?.claim(params).await
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> orch::Result<Vec<LeaseStatus>> {
        self.app().await?.heartbeat(params).await
    }

    async fn complete(&self, completions: Vec<Completion>) -> orch::Result<Vec<CompletionStatus>> {
        self.app().await?.complete(completions).await
    }

    async fn cancel(&self, id: CommandId, now: Timestamp) -> orch::Result<CancelStatus> {
        self.app().await?.cancel(id, now).await
    }

    async fn rescue(&self, now: Timestamp, limit: usize) -> orch::Result<Vec<Rescued>> {
        self.app().await?.rescue(now, limit).await
    }

    async fn follow_ups_due(&self, names: &[String], limit: usize) -> orch::Result<Vec<CommandRecord>> {
        self.app().await?.follow_ups_due(names, limit).await
    }

    async fn resolve_follow_ups(
        &self,
        id: CommandId,
        follow_ups: Vec<InsertCommand>,
        now: Timestamp,
    ) -> orch::Result<bool> {
        self.app().await?.resolve_follow_ups(id, follow_ups, now).await
    }

    async fn get(&self, id: CommandId) -> orch::Result<Option<CommandRecord>> {
        self.app().await?.get(id).await
    }

    async fn list(&self, params: ListParams) -> orch::Result<Vec<CommandRecord>> {
        self.app().await?.list(params).await
    }

    async fn counts(&self) -> orch::Result<Vec<CountRow>> {
        self.app().await?.counts().await
    }

    async fn journal(&self, id: CommandId) -> orch::Result<Vec<JournalEntry>> {
        self.app().await?.journal(id).await
    }

    async fn workflow_steps(&self, workflow_id: WorkflowId) -> orch::Result<Vec<WorkflowStepRecord>> {
        self.app().await?.workflow_steps(workflow_id).await
    }

    async fn saga(&self, saga: &str, correlation_id: &str) -> orch::Result<Option<SagaRecord>> {
        self.app().await?.saga(saga, correlation_id).await
    }

    async fn save_saga(&self, write: SagaWrite) -> orch::Result<SagaWriteStatus> {
        self.app().await?.save_saga(write).await
    }

    async fn sagas(&self, query: SagaQuery) -> orch::Result<Vec<SagaRecord>> {
        self.app().await?.sagas(query).await
    }

    async fn queue_stats(&self, now: Timestamp) -> orch::Result<Vec<QueueStats>> {
        self.app().await?.queue_stats(now).await
    }

    async fn retry(&self, id: CommandId, now: Timestamp) -> orch::Result<RetryStatus> {
        self.app().await?.retry(id, now).await
    }

    async fn workflows(&self, query: WorkflowQuery) -> orch::Result<Vec<WorkflowSummary>> {
        self.app().await?.workflows(query).await
    }

    async fn record_worker(&self, worker: WorkerRecord) -> orch::Result<()> {
        self.app().await?.record_worker(worker).await
    }

    async fn remove_worker(&self, id: &str) -> orch::Result<()> {
        self.app().await?.remove_worker(id).await
    }

    async fn workers(&self) -> orch::Result<Vec<WorkerRecord>> {
        self.app().await?.workers().await
    }

    async fn prune_workers(&self, before: Timestamp) -> orch::Result<u64> {
        self.app().await?.prune_workers(before).await
    }

    async fn server_time(&self) -> orch::Result<Option<Timestamp>> {
        self.app().await?.server_time().await
    }

    async fn pause(&self, scope: orch::PauseScope, now: Timestamp) -> orch::Result<bool> {
        self.app().await?.pause(scope, now).await
    }

    async fn prune_finished(&self, before: Timestamp, limit: usize) -> orch::Result<Option<u64>> {
        self.app().await?.prune_finished(before, limit).await
    }

    async fn resume(&self, scope: &orch::PauseScope) -> orch::Result<bool> {
        self.app().await?.resume(scope).await
    }

    async fn pauses(&self) -> orch::Result<Vec<orch::PauseRecord>> {
        self.app().await?.pauses().await
    }
    async fn save_schedule(&self, record: orch::ScheduleRecord) -> orch::Result<()> {
        self.app().await?.save_schedule(record).await
    }
    async fn remove_schedule(&self, name: &str) -> orch::Result<bool> {
        self.app().await?.remove_schedule(name).await
    }
    async fn schedules(&self) -> orch::Result<Vec<orch::ScheduleRecord>> {
        self.app().await?.schedules().await
    }
    async fn fire_schedule(&self, fire: orch::store::ScheduleFire) -> orch::Result<orch::store::FireStatus> {
        self.app().await?.fire_schedule(fire).await
    }

    fn wake_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.app.get().and_then(|store| store.wake_signal())
    }
}

/// Creates this process's test database on `server` (dropping stale ones first) and
/// returns its URL. Runs on a thread of its own so it works from any runtime.
fn process_database(server: Server, admin_url: &str) -> Result<String, String> {
    let admin_url = admin_url.to_owned();
    std::thread::spawn(move || {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(admin::create_process_database(server, &admin_url))
    })
    .join()
    .map_err(|_| "creating the test database panicked".to_owned())?
}

mod admin {
    use diesel::QueryableByName;
    use diesel::sql_types::Text;
    use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
    use orch_diesel_pg::diesel_async::AsyncPgConnection;

    use super::{Server, with_database};

    /// Test databases older than this are left over from finished runs.
    const STALE_SECS: u64 = 3_600;

    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }

    /// The creation time encoded in a test database's name, if it is one.
    fn created_at(name: &str) -> Option<u64> {
        let rest = name.strip_prefix("orch_t")?;
        let (secs, random) = rest.split_once('_')?;
        (random.chars().all(|c| c.is_ascii_hexdigit()) && !random.is_empty()).then_some(())?;
        secs.parse().ok()
    }

    pub(super) async fn create_process_database(server: Server, admin_url: &str) -> Result<String, String> {
        #[allow(clippy::disallowed_methods, reason = "naming test databases by wall-clock age")]
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let random = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("orch_t{now}_{}", &random[..8]);
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} on {}: {e}", server.name());
        match server {
            Server::Postgres => {
                let mut conn =
                    AsyncPgConnection::establish(admin_url).await.map_err(|e| fail("connecting", &e))?;
                let names: Vec<Name> =
                    diesel::sql_query("SELECT datname AS name FROM pg_database WHERE datname LIKE 'orch_t%'")
                        .load(&mut conn)
                        .await
                        .map_err(|e| fail("listing databases", &e))?;
                for stale in
                    names.iter().filter(|n| created_at(&n.name).is_some_and(|t| t + STALE_SECS < now))
                {
                    let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", stale.name);
                    if let Err(e) = diesel::sql_query(sql).execute(&mut conn).await {
                        eprintln!("could not drop stale test database {}: {e}", stale.name);
                    }
                }
                diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| fail("creating the test database", &e))?;
            }
            Server::Mysql => {
                let mut conn =
                    AsyncMysqlConnection::establish(admin_url).await.map_err(|e| fail("connecting", &e))?;
                let names: Vec<Name> = diesel::sql_query(
                    "SELECT CAST(schema_name AS CHAR) AS name FROM information_schema.schemata WHERE schema_name LIKE 'orch_t%'",
                )
                .load(&mut conn)
                .await
                .map_err(|e| fail("listing databases", &e))?;
                for stale in
                    names.iter().filter(|n| created_at(&n.name).is_some_and(|t| t + STALE_SECS < now))
                {
                    let sql = format!("DROP DATABASE IF EXISTS `{}`", stale.name);
                    if let Err(e) = diesel::sql_query(sql).execute(&mut conn).await {
                        eprintln!("could not drop stale test database {}: {e}", stale.name);
                    }
                }
                diesel::sql_query(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| fail("creating the test database", &e))?;
            }
        }
        Ok(with_database(admin_url, &name))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn only_generated_names_are_recognised() {
            assert_eq!(super::created_at("orch_t1700000000_ab12cd34"), Some(1_700_000_000));
            assert_eq!(super::created_at("orch_t1700000000_"), None);
            assert_eq!(super::created_at("orch_prod"), None);
            assert_eq!(super::created_at("orch_t17x_ab"), None);
        }

        #[test]
        fn database_is_replaced_in_urls() {
            use super::with_database;
            assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
            assert_eq!(
                with_database("mysql://root@h:3306/test?ssl=false", "x"),
                "mysql://root@h:3306/x?ssl=false"
            );
            assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        }

        #[test]
        fn users_and_databases_of_urls() {
            use super::super::{database_of, with_user};
            assert_eq!(with_user("postgres://postgres@h:5432/t", "app"), "postgres://app@h:5432/t");
            assert_eq!(
                with_user("mysql://root:pw@h:3306/t?ssl=false", "app"),
                "mysql://app@h:3306/t?ssl=false"
            );
            assert_eq!(with_user("mysql://h:3306/t", "app"), "mysql://app@h:3306/t");
            assert_eq!(database_of("mysql://root@h:3306/orch_t1_ab?ssl=false"), "orch_t1_ab");
            assert_eq!(database_of("postgres://u@h/db"), "db");
            assert_eq!(database_of("postgres://u@h"), "");
        }
    }
}

/// The stores of another harness, each wrapped in an [`orch::encryption::EncryptedStore`],
/// so the whole conformance suite runs with sealed inputs and outputs. The plain SQL of
/// [`Harness::sql_execute`] and [`Harness::sql_state_counts`] reaches the wrapped
/// store's tables as it is: values written by hand there are plaintext, which the
/// wrapper passes through as it does for rows from before encryption.
#[derive(Debug)]
pub struct EncryptedHarness<H> {
    inner: H,
    keyring: orch::encryption::Keyring,
}

impl<H: Harness> EncryptedHarness<H> {
    /// The key id of the random key [`EncryptedHarness::new`] seals with.
    pub const KEY_ID: &'static str = "test-key";

    /// `inner`'s stores, sealed with a key made for this harness.
    pub fn new(inner: H) -> Self {
        let key = orch::encryption::Keyring::generate_key().expect("a random key");
        let keyring = orch::encryption::Keyring::new(Self::KEY_ID, &key).expect("a valid keyring");
        Self::with_keyring(inner, keyring)
    }

    /// `inner`'s stores, sealed with `keyring`.
    pub fn with_keyring(inner: H, keyring: orch::encryption::Keyring) -> Self {
        EncryptedHarness { inner, keyring }
    }

    /// The wrapped harness.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The keys the stores seal and open with.
    pub fn keyring(&self) -> &orch::encryption::Keyring {
        &self.keyring
    }

    /// `store` wrapped with this harness's keys.
    pub fn wrap(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(orch::encryption::EncryptedStore::new(store, self.keyring.clone()))
    }
}

#[async_trait]
impl<H: Harness> Harness for EncryptedHarness<H> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn store(&self) -> Arc<dyn Store> {
        self.wrap(self.inner.store().await)
    }

    async fn store_with_prefix(&self, prefix: &str) -> Result<Arc<dyn Store>, Error> {
        Ok(self.wrap(self.inner.store_with_prefix(prefix).await?))
    }

    async fn located_store(&self) -> (Arc<dyn Store>, StoreLocation) {
        let (store, location) = self.inner.located_store().await;
        (self.wrap(store), location)
    }

    async fn sql_state_counts(&self, location: &StoreLocation) -> BTreeMap<String, i64> {
        self.inner.sql_state_counts(location).await
    }

    async fn sql_execute(&self, location: &StoreLocation, sql: &str) -> Result<(), String> {
        self.inner.sql_execute(location, sql).await
    }
}
