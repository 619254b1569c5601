//! Tests. Those that need a server read its URL from `ORCH_MYSQL_URL`
//! (e.g. `mysql://root@127.0.0.1:3306/test`) and skip, saying so, when it is unset.
//! Each uses fresh random table prefixes and drops its tables at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};
use orch::store::backend::dependency_failure_message;
use orch::store::sql::{self, Placeholders};
use orch::store::{
    CancelStatus, ClaimParams, Completion, CompletionStatus, HeartbeatParams, InsertCommand, JournalKind,
    Lease, LeaseStatus, ListCursor, ListOrder, ListParams, Outcome, SagaStatus, StepOf, WorkflowId,
    WorkflowQuery, WorkflowSummary,
};
use orch::{Error, Failure, FailureKind, NewCommand, State, Store, Timestamp};

use super::*;

const URL_VAR: &str = "ORCH_MYSQL_URL";

fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{URL_VAR} is not set and CI=true: these tests must run"
            );
            eprintln!("skipping: {URL_VAR} is not set (e.g. mysql://root@127.0.0.1:3306/test)");
            None
        }
    }
}

fn fresh_prefix() -> String {
    format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A connected store with a fresh prefix, not migrated.
async fn connect(url: &str, prefix: &str) -> MysqlStore {
    MysqlStore::builder(url).prefix(prefix).max_connections(6).connect().await.expect("connect")
}

/// A migrated store with a fresh prefix, or `None` without a server.
async fn fresh() -> Option<MysqlStore> {
    let url = server_url()?;
    let store = connect(&url, &fresh_prefix()).await;
    store.migrate().await.expect("migrate");
    Some(store)
}

async fn drop_tables(store: &MysqlStore) {
    let t = &store.inner.tables;
    let mut conn = store.conn().await.unwrap();
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {}, {}, {}, {}, {}, {}, {}",
        t.commands, t.journal, t.dependencies, t.sagas, t.workers, t.pauses, t.migrations
    ))
    .await
    .unwrap();
}

fn insert(name: &str, now: Timestamp) -> InsertCommand {
    NewCommand::raw(name, serde_json::json!({})).resolve(now).unwrap()
}

/// Creates the schema as migration `version` left it, with its versions recorded.
async fn schema_at_version(store: &MysqlStore, version: usize) {
    let mut conn = store.conn().await.unwrap();
    let t = &store.inner.tables;
    conn.batch_execute(&format!(
        "CREATE TABLE {} (version INT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE = InnoDB",
        t.migrations
    ))
    .await
    .unwrap();
    for (version, sql) in &migrations::MIGRATIONS[..version] {
        for statement in migrations::statements(sql, store.prefix()) {
            conn.batch_execute(&statement).await.unwrap();
        }
        conn.batch_execute(&format!(
            "INSERT INTO {} (version, applied_at) VALUES ({version}, 0)",
            t.migrations
        ))
        .await
        .unwrap();
    }
}

/// Stores `c` pending with the columns every version of the schema has, as a database
/// written before later migrations would hold it.
async fn insert_old_row(store: &MysqlStore, c: &InsertCommand) {
    let mut conn = store.conn().await.unwrap();
    diesel::sql_query(format!(
        "INSERT INTO {} (id, name, target, state, input, max_attempts, timeout_ms, retry_policy, scheduled_at, \
         created_at, updated_at, correlation_id) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
        store.inner.tables.commands
    ))
    .bind::<Text, _>(c.id.to_string())
    .bind::<Text, _>(c.name.clone())
    .bind::<Text, _>(c.target.clone())
    .bind::<Text, _>(c.input.clone())
    .bind::<diesel::sql_types::BigInt, _>(i64::from(c.max_attempts))
    .bind::<diesel::sql_types::BigInt, _>(c.timeout.as_millis() as i64)
    .bind::<Text, _>(serde_json::to_string(&c.retry_policy).unwrap())
    .bind::<diesel::sql_types::BigInt, _>(c.scheduled_at.as_micros())
    .bind::<diesel::sql_types::BigInt, _>(c.created_at.as_micros())
    .bind::<diesel::sql_types::BigInt, _>(c.created_at.as_micros())
    .bind::<Text, _>(c.correlation_id.clone())
    .execute(&mut conn)
    .await
    .unwrap();
}

fn claim_params(names: &[&str], now: Timestamp, worker: &str, limit: usize) -> ClaimParams {
    ClaimParams {
        target: orch::DEFAULT_TARGET.into(),
        names: names.iter().map(|n| n.to_string()).collect(),
        limit,
        now,
        worker: worker.into(),
        lease_buffer: Duration::from_secs(1),
    }
}

fn completion(lease: Lease, now: Timestamp, outcome: Outcome) -> Completion {
    Completion { lease, now, worker: "w".into(), outcome }
}

async fn kinds(store: &MysqlStore, id: CommandId) -> Vec<JournalKind> {
    store.journal(id).await.unwrap().into_iter().map(|e| e.kind).collect()
}

#[allow(clippy::disallowed_methods, reason = "measuring real elapsed time in a test")]
fn stopwatch() -> std::time::Instant {
    std::time::Instant::now()
}

// ---------------------------------------------------------------------------
// Without a server.

#[test]
fn lock_conflicts_are_transient() {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    let db = |m: &str| DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(m.to_owned()));
    assert!(is_transient(&db("Deadlock found when trying to get lock; try restarting transaction")));
    assert!(is_transient(&db("Lock wait timeout exceeded; try restarting transaction")));
    assert!(!is_transient(&db("Duplicate entry 'x' for key 'PRIMARY'")));
    assert!(!is_transient(&DieselError::NotFound));
    assert!((1..=MAX_TX_RETRIES).all(|n| backoff(n) <= Duration::from_millis(160)));
}

#[tokio::test]
async fn invalid_prefix_is_rejected_before_connecting() {
    // Nothing listens on port 1: reaching the prefix check proves nothing was tried.
    for bad in ["x; DROP TABLE y", "", "1abc", &"p".repeat(64)] {
        let err =
            MysqlStore::builder("mysql://root@127.0.0.1:1/test").prefix(bad).connect().await.unwrap_err();
        assert!(matches!(&err, Error::InvalidPrefix { prefix, .. } if prefix == bad), "{err}");
    }
}

#[tokio::test]
async fn bad_options_are_invalid_config() {
    let err =
        MysqlStore::builder("mysql://root@127.0.0.1:1/test").max_connections(0).connect().await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let err =
        MysqlStore::builder("mysql://root@127.0.0.1:1/test").connect_timeout(Duration::ZERO).connect().await;
    assert!(matches!(err, Err(Error::InvalidConfig(_))));
    let err = MysqlStore::connect("postgres://root@127.0.0.1:1/test").await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn unreachable_server_is_a_backend_error() {
    let started = stopwatch();
    let err = MysqlStore::builder("mysql://root:hunter2@127.0.0.1:1/test")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Backend { backend: "mysql", .. }), "{message}");
    assert!(message.contains("mysql://root:***@127.0.0.1:1/test"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    eprintln!("unreachable server reported in {:?}: {message}", started.elapsed());
}

// ---------------------------------------------------------------------------
// Against a server.

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    name: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, &fresh_prefix()).await;
    let started = stopwatch();
    store.migrate().await.unwrap();
    let first = started.elapsed();
    let started = stopwatch();
    store.migrate().await.unwrap();
    let second = started.elapsed();
    eprintln!("migrate(): {first:?} creating the tables, {second:?} when up to date");

    // Four stores (as if four processes) migrate one new prefix at once.
    let prefix = fresh_prefix();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(connect(&url, &prefix).await);
    }
    let started = stopwatch();
    let mut tasks = Vec::new();
    for s in &stores {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.migrate().await }));
    }
    for t in tasks {
        t.await.unwrap().expect("concurrent migrate");
    }
    eprintln!("4 concurrent migrate() of one prefix: {:?}", started.elapsed());
    let mut conn = stores[0].conn().await.unwrap();
    let versions: Vec<TableName> = diesel::sql_query(format!(
        "SELECT CAST(version AS CHAR) AS name FROM {} ORDER BY version",
        stores[0].inner.tables.migrations
    ))
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        versions.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]
    );
    let tables: Vec<TableName> = diesel::sql_query(
        "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE ? ORDER BY table_name",
    )
    .bind::<Text, _>(format!("{prefix}%"))
    .load(&mut conn)
    .await
    .unwrap();
    let expected: Vec<String> =
        ["commands", "dependencies", "journal", "migrations", "pauses", "sagas", "schedules", "workers"]
            .iter()
            .map(|t| format!("{prefix}{t}"))
            .collect();
    assert_eq!(tables.into_iter().map(|t| t.name).collect::<Vec<_>>(), expected);
    drop(conn);
    // The store works on the concurrently migrated tables.
    let row = insert("job", Timestamp::from_millis(1));
    stores[1].enqueue(vec![row.clone()]).await.unwrap();
    assert_eq!(stores[2].get(row.id).await.unwrap().unwrap().state, State::Pending);
    drop_tables(&store).await;
    drop_tables(&stores[0]).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn newer_schema_is_refused() {
    let Some(store) = fresh().await else { return };
    let mut conn = store.conn().await.unwrap();
    conn.batch_execute(&format!(
        "INSERT INTO {} (version, applied_at) VALUES (99, 0)",
        store.inner.tables.migrations
    ))
    .await
    .unwrap();
    drop(conn);
    let err = store.migrate().await.unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("99")), "{err}");
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn heartbeat_at_the_same_time_stays_held() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(1_000_000);
    let row = insert("job", t0);
    store.enqueue(vec![row.clone()]).await.unwrap();
    let claimed = store.claim(claim_params(&["job"], t0, "w", 1)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let lease = claimed[0].lease;
    let params = HeartbeatParams { leases: vec![lease], now: t0, lease_buffer: Duration::from_secs(1) };
    // The first renewal at `now` sets the expiry the claim already set: nothing
    // changes, yet the row matched, so the lease is held. And again.
    for _ in 0..2 {
        let statuses = store.heartbeat(params.clone()).await.unwrap();
        assert_eq!(statuses, vec![LeaseStatus::Held { cancel_requested: false }]);
    }
    assert_eq!(store.cancel(row.id, t0).await.unwrap(), CancelStatus::Requested);
    let statuses = store.heartbeat(params.clone()).await.unwrap();
    assert_eq!(statuses, vec![LeaseStatus::Held { cancel_requested: true }]);
    // A wrong token is refused and journaled; the order of statuses is the order asked.
    let stale = Lease { id: row.id, token: orch::store::LeaseToken::generate() };
    let missing = Lease { id: CommandId::generate(t0), token: lease.token };
    let statuses =
        store.heartbeat(HeartbeatParams { leases: vec![stale, lease, missing], ..params }).await.unwrap();
    assert_eq!(
        statuses,
        vec![LeaseStatus::Lost, LeaseStatus::Held { cancel_requested: true }, LeaseStatus::Lost]
    );
    let journal = store.journal(row.id).await.unwrap();
    let lost = journal.iter().find(|e| e.kind == JournalKind::LeaseLost).unwrap();
    assert_eq!(lost.attempt, 1);
    assert!(lost.message.as_deref().unwrap().contains(&stale.token.to_string()));
    assert_eq!(kinds(&store, missing.id).await, vec![JournalKind::LeaseLost]);
    drop_tables(&store).await;
}

#[derive(Debug)]
#[allow(dead_code, reason = "the fields are for Debug output")]
enum AppError {
    Db(diesel::result::Error),
    Orch(Error),
    RolledBack(CommandId),
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        AppError::Db(e)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn push_in_follows_the_callers_transaction() {
    let Some(url) = server_url() else { return };
    let Some(store) = fresh().await else { return };
    let mut conn = AsyncMysqlConnection::establish(&url).await.unwrap();
    let store_ref = &store;
    let now = Timestamp::from_millis(5_000);
    let signal = store.wake_signal().unwrap();

    let rolled_back = conn
        .transaction::<(), AppError, _>(async |conn| {
            let ids = store_ref
                .push_in(conn, now, vec![NewCommand::raw("job", serde_json::json!({"n": 1}))])
                .await
                .map_err(AppError::Orch)?;
            assert!(store_ref.get(ids[0]).await.unwrap().is_none(), "not visible before the commit");
            Err(AppError::RolledBack(ids[0]))
        })
        .await;
    let Err(AppError::RolledBack(rolled_back)) = rolled_back else { panic!("{rolled_back:?}") };
    assert!(store.get(rolled_back).await.unwrap().is_none(), "a rolled-back push never exists");
    assert!(store.journal(rolled_back).await.unwrap().is_empty());

    let committed = conn
        .transaction::<CommandId, AppError, _>(async |conn| {
            let ids = store_ref
                .push_in(conn, now, vec![NewCommand::raw("job", serde_json::json!({"n": 2}))])
                .await
                .map_err(AppError::Orch)?;
            Ok(ids[0])
        })
        .await
        .unwrap();
    let notified = signal.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    store.wake_workers();
    tokio::time::timeout(Duration::from_secs(1), notified).await.expect("wake_workers fires the signal");
    let r = store.get(committed).await.unwrap().unwrap();
    assert_eq!((r.state, r.input.as_str()), (State::Pending, r#"{"n":2}"#));
    assert_eq!(kinds(&store, committed).await, vec![JournalKind::Enqueued]);

    // A failing push (duplicate id) inside a transaction leaves the transaction usable:
    // it ran in a savepoint.
    let outcome = conn
        .transaction::<Option<CommandId>, AppError, _>(async |conn| {
            let dup = NewCommand::raw("job", serde_json::json!({})).id(committed);
            assert!(store_ref.push_in(conn, now, vec![dup]).await.is_err());
            let ids = store_ref
                .push_in(conn, now, vec![NewCommand::raw("job", serde_json::json!({"n": 3}))])
                .await
                .map_err(AppError::Orch)?;
            Ok(Some(ids[0]))
        })
        .await
        .unwrap();
    assert!(store.get(outcome.unwrap()).await.unwrap().is_some());
    assert_eq!(store.list(ListParams::default()).await.unwrap().len(), 2);
    drop_tables(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn concurrent_claims_are_exclusive() {
    const N: usize = 500;
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(2_000_000);
    // Two names, so the claim also takes the path where MySQL sorts the candidates.
    let rows: Vec<InsertCommand> = (0..N).map(|i| insert(if i % 2 == 0 { "a" } else { "b" }, t0)).collect();
    let started = stopwatch();
    store.enqueue(rows).await.unwrap();
    eprintln!("enqueue of {N} commands: {:?}", started.elapsed());
    let started = stopwatch();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            let mut empty = 0;
            while empty < 3 {
                let batch = store.claim(claim_params(&["a", "b"], t0, &worker, 7)).await.unwrap();
                if batch.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                mine.extend(batch.into_iter().map(|c| (c.lease, worker.clone())));
            }
            mine
        }));
    }
    let mut claims: HashMap<CommandId, Vec<(Lease, String)>> = HashMap::new();
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for (lease, worker) in t.await.unwrap() {
            *per_worker.entry(worker.clone()).or_default() += 1;
            claims.entry(lease.id).or_default().push((lease, worker));
        }
    }
    eprintln!("{N} commands claimed by 4 concurrent claimers in {:?}: {per_worker:?}", started.elapsed());
    assert_eq!(claims.len(), N, "every command was claimed");
    let twice: Vec<_> = claims.iter().filter(|(_, c)| c.len() != 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    for r in store.list(ListParams::default()).await.unwrap() {
        let (lease, worker) = &claims[&r.id][0];
        assert_eq!((r.state, r.attempts), (State::Running, 1));
        assert_eq!((r.lease_token, r.worker.as_deref()), (Some(lease.token), Some(worker.as_str())));
        assert_eq!(kinds(&store, r.id).await, vec![JournalKind::Enqueued, JournalKind::Claimed]);
    }
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn claim_takes_due_commands_in_order() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(3_000_000);
    let late =
        NewCommand::raw("job", serde_json::json!({})).delay(Duration::from_secs(2)).resolve(t0).unwrap();
    let early = insert("job", t0);
    let middle =
        NewCommand::raw("job", serde_json::json!({})).delay(Duration::from_secs(1)).resolve(t0).unwrap();
    let elsewhere = NewCommand::raw("job", serde_json::json!({})).target("eu").resolve(t0).unwrap();
    let unknown = insert("other", t0);
    store.enqueue(vec![late.clone(), early.clone(), middle.clone(), elsewhere, unknown]).await.unwrap();
    assert!(store.claim(claim_params(&[], t0, "w", 10)).await.unwrap().is_empty());
    assert!(store.claim(claim_params(&["job"], t0, "w", 0)).await.unwrap().is_empty());
    let now = t0 + Duration::from_secs(1);
    let claimed = store.claim(claim_params(&["job"], now, "w", 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.lease.id).collect::<Vec<_>>(), vec![early.id, middle.id]);
    assert_eq!(claimed[0].lease.token, claimed[1].lease.token, "one token per claim");
    assert_eq!(claimed[0].attempt, 1);
    // Lease = now + timeout (5 s) + buffer (1 s).
    assert_eq!(claimed[0].lease_expires_at, now + Duration::from_secs(6));
    let journal = store.journal(early.id).await.unwrap();
    assert_eq!(
        journal[1].message.as_deref(),
        Some(format!("lease until {}", now + Duration::from_secs(6)).as_str())
    );
    let claimed = store.claim(claim_params(&["job"], now + Duration::from_secs(1), "w", 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.lease.id).collect::<Vec<_>>(), vec![late.id]);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn completions_fence_and_chain() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(4_000_000);
    let parent = insert("parent", t0);
    let existing = insert("other", t0);
    let retried = insert("retried", t0);
    store.enqueue(vec![parent.clone(), existing.clone(), retried.clone()]).await.unwrap();
    let claimed = store.claim(claim_params(&["parent", "retried"], t0, "w", 10)).await.unwrap();
    let lease_of = |id: CommandId| claimed.iter().find(|c| c.lease.id == id).unwrap().lease;
    let (parent_lease, retried_lease) = (lease_of(parent.id), lease_of(retried.id));

    // A follow-up whose id is taken fails the whole batch, leaving nothing behind.
    let mut clash = insert("child", t0);
    clash.id = existing.id;
    let good = insert("child", t0);
    let retry = Outcome::Retry {
        failure: Failure::new(FailureKind::Error, "flaky ✗"),
        retry_at: t0 + Duration::from_secs(3),
    };
    let result = store
        .complete(vec![
            completion(retried_lease, t0, retry.clone()),
            completion(
                parent_lease,
                t0,
                Outcome::Succeeded { output: "7".into(), follow_ups: vec![good.clone(), clash] },
            ),
        ])
        .await;
    assert!(result.is_err());
    for (id, lease) in [(parent.id, parent_lease), (retried.id, retried_lease)] {
        let r = store.get(id).await.unwrap().unwrap();
        assert_eq!((r.state, r.lease_token), (State::Running, Some(lease.token)));
    }
    assert!(store.get(good.id).await.unwrap().is_none());

    let statuses = store
        .complete(vec![
            completion(retried_lease, t0, retry),
            completion(
                parent_lease,
                t0,
                Outcome::Succeeded { output: "7".into(), follow_ups: vec![good.clone()] },
            ),
            completion(parent_lease, t0, Outcome::Released { at: t0, started: true }),
        ])
        .await
        .unwrap();
    assert_eq!(
        statuses,
        vec![CompletionStatus::Applied, CompletionStatus::Applied, CompletionStatus::LeaseLost]
    );
    let p = store.get(parent.id).await.unwrap().unwrap();
    assert_eq!(
        (p.state, p.output.as_deref(), p.lease_token, p.finished_at),
        (State::Succeeded, Some("7"), None, Some(t0))
    );
    let r = store.get(retried.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempts, r.scheduled_at), (State::Pending, 1, t0 + Duration::from_secs(3)));
    assert_eq!(r.error, Some(Failure::new(FailureKind::Error, "flaky ✗")));
    let child = store.get(good.id).await.unwrap().unwrap();
    assert_eq!((child.state, child.name.as_str()), (State::Pending, "child"));
    assert_eq!(
        kinds(&store, parent.id).await,
        vec![JournalKind::Enqueued, JournalKind::Claimed, JournalKind::Succeeded, JournalKind::LeaseLost]
    );
    assert_eq!(
        kinds(&store, retried.id).await,
        vec![JournalKind::Enqueued, JournalKind::Claimed, JournalKind::Failed, JournalKind::RetryScheduled]
    );
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn rescue_decides_from_the_old_row() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(6_000_000);
    let again = insert("job", t0); // 4 attempts: pending again
    let last = NewCommand::raw("job", serde_json::json!({})).retries(0).resolve(t0).unwrap(); // failed
    let cancelled = insert("job", t0); // cancel requested: cancelled
    let fresh_lease = insert("job", t0); // renewed: not rescued
    store.enqueue(vec![again.clone(), last.clone(), cancelled.clone(), fresh_lease.clone()]).await.unwrap();
    let claimed = store.claim(claim_params(&["job"], t0, "dead-worker", 10)).await.unwrap();
    assert_eq!(claimed.len(), 4);
    assert_eq!(store.cancel(cancelled.id, t0).await.unwrap(), CancelStatus::Requested);
    let later = t0 + Duration::from_secs(10);
    let renewed = claimed.iter().find(|c| c.lease.id == fresh_lease.id).unwrap().lease;
    store
        .heartbeat(HeartbeatParams {
            leases: vec![renewed],
            now: later,
            lease_buffer: Duration::from_secs(1),
        })
        .await
        .unwrap();
    assert!(store.rescue(later, 0).await.unwrap().is_empty());
    let mut rescued = store.rescue(later, 100).await.unwrap();
    rescued.sort_by_key(|r| r.id);
    let mut expected = vec![
        orch::store::Rescued { id: again.id, state: State::Pending },
        orch::store::Rescued { id: last.id, state: State::Failed },
        orch::store::Rescued { id: cancelled.id, state: State::Cancelled },
    ];
    expected.sort_by_key(|r| r.id);
    assert_eq!(rescued, expected);

    let r = store.get(again.id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.scheduled_at, r.finished_at, r.follow_ups_due),
        (State::Pending, later, None, false)
    );
    assert_eq!(r.error, Some(Failure::new(FailureKind::LeaseExpired, "lease of worker dead-worker expired")));
    assert_eq!((r.lease_token, r.lease_expires_at, r.worker.as_deref()), (None, None, Some("dead-worker")));
    let r = store.get(last.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.finished_at, r.follow_ups_due), (State::Failed, Some(later), true));
    assert_eq!(r.error.map(|e| e.kind), Some(FailureKind::LeaseExpired));
    let r = store.get(cancelled.id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.finished_at, r.follow_ups_due, r.error),
        (State::Cancelled, Some(later), true, None)
    );
    let journal = store.journal(again.id).await.unwrap();
    let entry = journal.last().unwrap();
    assert_eq!((entry.kind, entry.attempt), (JournalKind::Rescued, 1));
    assert_eq!(entry.message.as_deref(), Some("lease of worker dead-worker expired; now pending"));
    assert_eq!(store.get(fresh_lease.id).await.unwrap().unwrap().state, State::Running);
    assert!(store.rescue(later, 100).await.unwrap().is_empty(), "nothing twice");

    // Follow-ups of commands that ended outside a worker.
    let names = vec!["job".to_owned()];
    let due = store.follow_ups_due(&names, 10).await.unwrap();
    let mut due_ids: Vec<_> = due.iter().map(|r| r.id).collect();
    due_ids.sort();
    let mut expected_ids = vec![last.id, cancelled.id];
    expected_ids.sort();
    assert_eq!(due_ids, expected_ids);
    let alert = insert("alert", later);
    assert!(store.resolve_follow_ups(last.id, vec![alert.clone()], later).await.unwrap());
    assert!(!store.resolve_follow_ups(last.id, vec![insert("alert", later)], later).await.unwrap());
    assert!(store.resolve_follow_ups(cancelled.id, vec![], later).await.unwrap());
    assert!(store.follow_ups_due(&names, 10).await.unwrap().is_empty());
    assert_eq!(store.get(alert.id).await.unwrap().unwrap().state, State::Pending);
    let entry = store.journal(last.id).await.unwrap().pop().unwrap();
    assert_eq!(
        (entry.kind, entry.message.as_deref()),
        (JournalKind::FollowUpsEnqueued, Some("follow-ups: alert"))
    );
    assert_eq!(
        store.list(ListParams { name: Some("alert".into()), ..Default::default() }).await.unwrap().len(),
        1
    );
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn cancel_list_counts_and_text() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(7_000_000);
    let unicode = NewCommand::raw("émoji", serde_json::json!({"s": "héllo 🦀 \u{0}"}))
        .target("zone-ü")
        .correlation_id("corr-1")
        .resolve(t0)
        .unwrap();
    let pending = insert("job", t0);
    let upper = insert("JOB", t0);
    store.enqueue(vec![unicode.clone(), pending.clone(), upper.clone()]).await.unwrap();
    let r = store.get(unicode.id).await.unwrap().unwrap();
    assert_eq!(
        (r.name.as_str(), r.target.as_str(), r.input.as_str()),
        ("émoji", "zone-ü", unicode.input.as_str())
    );
    assert_eq!(r.retry_policy, unicode.retry_policy);
    // Names compare byte for byte: `job` is not `JOB`.
    assert_eq!(
        store.list(ListParams { name: Some("job".into()), ..Default::default() }).await.unwrap().len(),
        1
    );
    let by_corr =
        store.list(ListParams { correlation_id: Some("corr-1".into()), ..Default::default() }).await;
    assert_eq!(by_corr.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![unicode.id]);

    assert_eq!(store.cancel(pending.id, t0).await.unwrap(), CancelStatus::Cancelled);
    assert_eq!(store.cancel(pending.id, t0).await.unwrap(), CancelStatus::AlreadyFinished(State::Cancelled));
    assert_eq!(store.cancel(CommandId::generate(t0), t0).await.unwrap(), CancelStatus::NotFound);
    let r = store.get(pending.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.finished_at, r.follow_ups_due), (State::Cancelled, Some(t0), true));
    assert_eq!(kinds(&store, pending.id).await, vec![JournalKind::Enqueued, JournalKind::Cancelled]);

    let counts = store.counts().await.unwrap();
    let summary: Vec<_> = counts.iter().map(|c| (c.name.as_str(), c.state, c.count)).collect();
    assert_eq!(
        summary,
        vec![("JOB", State::Pending, 1), ("job", State::Cancelled, 1), ("émoji", State::Pending, 1)]
    );

    // Keyset pagination by id.
    let all = store.list(ListParams::default()).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let page = store
        .list(ListParams { after: Some(ListCursor::id(all[0].id)), limit: 1, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), vec![all[1].id]);
    let running = store.list(ListParams { state: Some(State::Running), ..Default::default() }).await.unwrap();
    assert!(running.is_empty());
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn enqueue_is_all_or_nothing_and_wakes_workers() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(8_000_000);
    let signal = store.clone().wake_signal().unwrap();
    let notified = signal.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    // 1,200 rows: more than one INSERT chunk.
    let rows: Vec<InsertCommand> = (0..1_200).map(|_| insert("job", t0)).collect();
    store.enqueue(rows.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), notified).await.expect("an enqueue fires the wake signal");
    assert_eq!(store.counts().await.unwrap()[0].count, 1_200);
    assert_eq!(kinds(&store, rows[1_100].id).await, vec![JournalKind::Enqueued]);
    // A batch with one taken id inserts nothing.
    let mut batch: Vec<InsertCommand> = (0..600).map(|_| insert("job", t0)).collect();
    batch[550].id = rows[0].id;
    assert!(store.enqueue(batch.clone()).await.is_err());
    assert!(store.get(batch[0].id).await.unwrap().is_none());
    assert!(store.journal(batch[0].id).await.unwrap().is_empty());
    drop_tables(&store).await;
}

#[derive(QueryableByName)]
struct ExplainRow {
    #[diesel(sql_type = Nullable<Text>)]
    key: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    #[diesel(column_name = "Extra")]
    extra: Option<String>,
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn lookups_use_the_indexes() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(9_000_000);
    let rows: Vec<InsertCommand> = (0..200).map(|_| insert("job", t0)).collect();
    store.enqueue(rows.clone()).await.unwrap();
    let t = &store.inner.tables;
    let mut conn = store.conn().await.unwrap();
    conn.batch_execute(&format!("ANALYZE TABLE {}", t.commands)).await.unwrap();
    // Ids are bound as utf8mb4 text against ASCII columns: the comparison must still
    // use the column's collation, and so the primary key.
    let plan: Vec<ExplainRow> =
        diesel::sql_query(format!("EXPLAIN SELECT {} FROM {} WHERE id = ?", t.columns, t.commands))
            .bind::<Text, _>(rows[7].id.to_string())
            .load(&mut conn)
            .await
            .unwrap();
    assert_eq!(plan[0].key.as_deref(), Some("PRIMARY"));
    let plan: Vec<ExplainRow> =
        diesel::sql_query(format!("EXPLAIN SELECT seq FROM {} WHERE command_id = ? ORDER BY seq", t.journal))
            .bind::<Text, _>(rows[7].id.to_string())
            .load(&mut conn)
            .await
            .unwrap();
    assert_eq!(plan[0].key.as_deref(), Some("journal_command"));
    // The claim scan follows an index in claim order: no sort, which would lock every
    // candidate row.
    for (index, names) in [("commands_claim", "?"), ("commands_due", "?, ?")] {
        let mut q = diesel::sql_query(format!(
            "EXPLAIN SELECT id FROM {} FORCE INDEX ({index}) WHERE state = 'pending' AND target = ? \
             AND name IN ({names}) AND scheduled_at <= ? ORDER BY priority, scheduled_at, id LIMIT 10 FOR UPDATE SKIP LOCKED",
            t.commands
        ))
        .into_boxed::<diesel::mysql::Mysql>()
        .bind::<Text, _>("default")
        .bind::<Text, _>("job");
        if index == "commands_due" {
            q = q.bind::<Text, _>("other");
        }
        let plan: Vec<ExplainRow> =
            q.bind::<diesel::sql_types::BigInt, _>(t0.as_micros()).load(&mut conn).await.unwrap();
        assert_eq!(plan[0].key.as_deref(), Some(index));
        let extra = plan[0].extra.as_deref().unwrap_or_default();
        assert!(!extra.contains("filesort"), "{index}: {extra}");
    }
    // A page of a sorted listing, after a cursor, reads its index range in order.
    for (order, index, descending) in [
        (ListOrder::Scheduled, "commands_scheduled", false),
        (ListOrder::Attempts, "commands_attempts", true),
    ] {
        let after = Some(ListCursor { key: 0, id: rows[7].id });
        let params = ListParams { order, descending, after, limit: 20, ..Default::default() };
        let mut statement = sql::list(Placeholders::Question, &t.columns, &t.commands, &params);
        statement.sql.insert_str(0, "EXPLAIN ");
        let plan: Vec<ExplainRow> = commands::bind(statement).load(&mut conn).await.unwrap();
        assert_eq!(plan[0].key.as_deref(), Some(index));
        let extra = plan[0].extra.as_deref().unwrap_or_default();
        assert!(!extra.contains("filesort"), "{index}: {extra}");
    }
    drop(conn);
    drop_tables(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn deadlocked_transactions_are_retried() {
    let Some(url) = server_url() else { return };
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(10_000_000);
    let rows: Vec<InsertCommand> = (0..40).map(|_| insert("job", t0)).collect();
    store.enqueue(rows).await.unwrap();
    let claimed = store.claim(claim_params(&["job"], t0, "w", 2)).await.unwrap();
    let mut leases: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
    leases.sort_by_key(|l| l.id);
    let (first, second) = (leases[0], leases[1]);

    // Another session locks the second row and, being the heavier transaction, wins
    // the deadlock it creates by then asking for the first, which the heartbeat holds.
    let t = &store.inner.tables;
    let mut other = AsyncMysqlConnection::establish(&url).await.unwrap();
    // READ COMMITTED: the scan below keeps locks only on the rows it changes.
    other.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await.unwrap();
    other.batch_execute("BEGIN").await.unwrap();
    other
        .batch_execute(&format!(
            "UPDATE {} SET updated_at = updated_at + 1 WHERE state = 'pending' OR id = '{}'",
            t.commands, second.id
        ))
        .await
        .unwrap();
    let heartbeat = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .heartbeat(HeartbeatParams {
                    leases: vec![second, first],
                    now: t0,
                    lease_buffer: Duration::from_secs(1),
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the heartbeat now waits on the second row
    other
        .batch_execute(&format!(
            "UPDATE {} SET updated_at = updated_at + 1 WHERE id = '{}'",
            t.commands, first.id
        ))
        .await
        .expect("the heavier transaction survives the deadlock");
    tokio::time::sleep(Duration::from_millis(50)).await;
    other.batch_execute("COMMIT").await.unwrap();
    let statuses = heartbeat.await.unwrap().expect("the deadlocked heartbeat was retried");
    assert_eq!(statuses, vec![LeaseStatus::Held { cancel_requested: false }; 2]);
    drop_tables(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workers_run_commands_end_to_end() {
    use orch::{Context, HandlerError, Orch, Registry, Worker, WorkerConfig};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct DoubleCommand {
        n: u64,
    }
    impl orch::Command for DoubleCommand {
        type Output = u64;
        fn on_success(&self, output: &u64) -> Vec<NewCommand> {
            if self.n < 1_000 {
                vec![NewCommand::of(&DoubleCommand { n: output + 1_000 })]
            } else {
                Vec::new()
            }
        }
    }

    const N: u64 = 100;
    let Some(store) = fresh().await else { return };
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let orch = Orch::new(Arc::clone(&shared));
    let mut workers = Vec::new();
    for i in 0..2 {
        let mut registry = Registry::new();
        registry
            .register_fn(|c: DoubleCommand, _: Context| async move { Ok::<_, HandlerError>(c.n * 2) })
            .unwrap();
        let config = WorkerConfig {
            poll_interval: Duration::from_millis(50),
            worker_id: Some(format!("e2e-{i}")),
            ..WorkerConfig::default()
        };
        workers.push(Worker::new(orch.clone(), registry, config).unwrap().start());
    }
    let started = stopwatch();
    let ids = orch.push_many((0..N).map(|n| NewCommand::of(&DoubleCommand { n })).collect()).await.unwrap();
    for id in &ids {
        let out = tokio::time::timeout(Duration::from_secs(60), orch.wait_output::<DoubleCommand>(*id)).await;
        assert!(matches!(out, Ok(Ok(Ok(_)))), "{out:?}");
    }
    let done = loop {
        let counts = store.counts().await.unwrap();
        let done: u64 = counts.iter().filter(|c| c.state == State::Succeeded).map(|c| c.count).sum();
        if done == 2 * N || started.elapsed() > Duration::from_secs(60) {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("{N} commands and their {N} follow-ups run by 2 workers in {:?}", started.elapsed());
    for w in workers {
        w.shutdown().await;
    }
    assert_eq!(done, 2 * N);
    assert_eq!(orch.output::<DoubleCommand>(ids[3]).await.unwrap(), Some(6));
    drop_tables(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn open_claims_do_not_starve_each_other() {
    let Some(url) = server_url() else { return };
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(11_000_000);
    // A backlog of commands nobody here handles, due first, then the work.
    let mut rows: Vec<InsertCommand> = (0..100).map(|_| insert("unhandled", t0)).collect();
    let t1 = t0 + Duration::from_secs(1);
    rows.extend((0..60).map(|i| insert(["a", "b", "c"][i % 3], t1)));
    store.enqueue(rows).await.unwrap();
    for names in [&["a"][..], &["a", "b", "c"][..]] {
        // One claim stays open (its transaction holds its rows) while another runs.
        let mut open = AsyncMysqlConnection::establish(&url).await.unwrap();
        open.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await.unwrap();
        open.batch_execute("BEGIN").await.unwrap();
        let held = commands::claim(&mut open, &store.inner.tables, &claim_params(names, t1, "slow", 5))
            .await
            .unwrap();
        assert_eq!(held.len(), 5);
        let started = stopwatch();
        let got = store.claim(claim_params(names, t1, "fast", 5)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "the second claim did not wait");
        assert_eq!(got.len(), 5, "{names:?}: a full batch despite the open claim");
        assert!(got.iter().all(|g| held.iter().all(|h| h.lease.id != g.lease.id)));
        open.batch_execute("ROLLBACK").await.unwrap();
    }
    drop_tables(&store).await;
}

/// Operations cancelled half way (timeouts, aborted tasks) must not put a connection
/// with half a result in it back into the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn cancelled_operations_do_not_poison_the_pool() {
    let Some(url) = server_url() else { return };
    // One connection, so every operation after a cancelled one gets the same
    // connection back, unless it was closed.
    let store = MysqlStore::builder(url).prefix(fresh_prefix()).max_connections(1).connect().await.unwrap();
    store.migrate().await.unwrap();
    let t0 = Timestamp::from_millis(12_000_000);
    store.enqueue((0..1_000).map(|_| insert("a", t0)).collect()).await.unwrap();
    let started = stopwatch();
    for i in 0..120u64 {
        let s = store.clone();
        let task = tokio::spawn(async move {
            match i % 3 {
                0 => s.list(ListParams::default()).await.map(drop),
                1 => s.claim(claim_params(&["a"], t0, "w", 50)).await.map(drop),
                _ => s.enqueue((0..200).map(|_| insert("b", t0)).collect()).await.map(drop),
            }
        });
        tokio::time::sleep(Duration::from_micros(200 + (i * 397) % 6_000)).await;
        task.abort();
        let _ = task.await;
        let all = store.list(ListParams { limit: 10_000, ..Default::default() }).await;
        assert!(all.is_ok(), "after cancelling operation {i}: {}", all.unwrap_err());
    }
    eprintln!("120 cancelled operations checked in {:?}", started.elapsed());
    drop_tables(&store).await;
}

// ---------------------------------------------------------------------------
// Workflows.

/// A step named `name` (also its command name, so a claim can pick it) of `workflow`.
fn step(workflow: WorkflowId, name: &str, now: Timestamp, depends_on: &[&InsertCommand]) -> InsertCommand {
    InsertCommand {
        workflow: Some(StepOf { workflow_id: workflow, step: name.to_owned() }),
        depends_on: depends_on.iter().map(|d| d.id).collect(),
        ..insert(name, now)
    }
}

/// Claims the one due command named `name` and completes it with `outcome` at `now`.
async fn run_step(store: &MysqlStore, name: &str, now: Timestamp, outcome: Outcome) {
    let claimed = store.claim(claim_params(&[name], now, "w", 1)).await.unwrap();
    assert_eq!(claimed.len(), 1, "{name} is due");
    let statuses = store.complete(vec![completion(claimed[0].lease, now, outcome)]).await.unwrap();
    assert_eq!(statuses, vec![CompletionStatus::Applied]);
}

fn succeeded() -> Outcome {
    Outcome::Succeeded { output: "null".into(), follow_ups: Vec::new() }
}

async fn state_of(store: &MysqlStore, id: CommandId) -> State {
    store.get(id).await.unwrap().unwrap().state
}

/// Checks that `id` was cancelled at `at` because `origin` ended `origin_state`.
async fn assert_dependency_cancelled(
    store: &MysqlStore,
    id: CommandId,
    at: Timestamp,
    origin: CommandId,
    origin_state: State,
) {
    let r = store.get(id).await.unwrap().unwrap();
    let message = dependency_failure_message(origin, origin_state);
    assert_eq!(
        (r.state, r.finished_at, r.updated_at, r.follow_ups_due, r.error),
        (State::Cancelled, Some(at), at, true, Some(Failure::new(FailureKind::Cancelled, message.clone())))
    );
    let last = store.journal(id).await.unwrap().pop().unwrap();
    assert_eq!((last.kind, last.message), (JournalKind::Cancelled, Some(message)));
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workflow_diamond_unblocks_when_all_dependencies_succeed() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(13_000_000);
    let w = WorkflowId::generate(t0);
    let a = step(w, "a", t0, &[]);
    let b = step(w, "b", t0, &[&a]);
    let c = step(w, "c", t0, &[&a]);
    let d = step(w, "d", t0, &[&b, &c]);
    let other = insert("job", t0);
    store.enqueue(vec![d.clone(), c.clone(), b.clone(), a.clone(), other.clone()]).await.unwrap();
    assert_eq!(state_of(&store, a.id).await, State::Pending);
    for x in [&b, &c, &d] {
        let r = store.get(x.id).await.unwrap().unwrap();
        assert_eq!((r.state, r.workflow.as_ref()), (State::Blocked, x.workflow.as_ref()));
        assert_eq!(kinds(&store, x.id).await, vec![JournalKind::Enqueued]);
    }
    assert_eq!(store.get(other.id).await.unwrap().unwrap().workflow, None);
    // Blocked commands are not claimed.
    assert!(store.claim(claim_params(&["b", "c", "d"], t0, "w", 10)).await.unwrap().is_empty());

    // Every step with its edges, by id; nothing for an unknown workflow.
    let steps = store.workflow_steps(w).await.unwrap();
    let mut expected = vec![
        (a.id, vec![]),
        (b.id, vec![a.id]),
        (c.id, vec![a.id]),
        (d.id, {
            let mut v = vec![b.id, c.id];
            v.sort();
            v
        }),
    ];
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(steps.iter().map(|s| (s.command.id, s.depends_on.clone())).collect::<Vec<_>>(), expected);
    let d_step = steps.iter().find(|s| s.command.id == d.id).unwrap();
    assert_eq!(d_step.command.workflow, Some(StepOf { workflow_id: w, step: "d".into() }));
    assert!(store.workflow_steps(WorkflowId::generate(t0)).await.unwrap().is_empty());

    // A claimed step carries its workflow.
    let t1 = t0 + Duration::from_secs(1);
    let claimed = store.claim(claim_params(&["a"], t1, "w", 1)).await.unwrap();
    assert_eq!(claimed[0].workflow, a.workflow);
    let signal = store.wake_signal().unwrap();
    let notified = signal.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    store.complete(vec![completion(claimed[0].lease, t1, succeeded())]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), notified).await.expect("unblocking wakes the workers");
    for x in [&b, &c] {
        let r = store.get(x.id).await.unwrap().unwrap();
        assert_eq!((r.state, r.updated_at, r.scheduled_at), (State::Pending, t1, t0));
        let journal = store.journal(x.id).await.unwrap();
        let kinds: Vec<_> = journal.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![JournalKind::Enqueued, JournalKind::Unblocked]);
        assert_eq!((journal[1].at, journal[1].attempt), (t1, 0));
    }
    assert_eq!(state_of(&store, d.id).await, State::Blocked);

    let t2 = t1 + Duration::from_secs(1);
    run_step(&store, "b", t2, succeeded()).await;
    assert_eq!(state_of(&store, d.id).await, State::Blocked, "c has not succeeded yet");
    assert_eq!(kinds(&store, d.id).await, vec![JournalKind::Enqueued]);
    let t3 = t2 + Duration::from_secs(1);
    run_step(&store, "c", t3, succeeded()).await;
    let r = store.get(d.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.updated_at), (State::Pending, t3));
    assert_eq!(kinds(&store, d.id).await, vec![JournalKind::Enqueued, JournalKind::Unblocked]);
    run_step(&store, "d", t3, succeeded()).await;
    assert_eq!(state_of(&store, other.id).await, State::Pending);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workflow_dependencies_succeeding_in_one_batch_unblock_once() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(14_000_000);
    let w = WorkflowId::generate(t0);
    let b = step(w, "b", t0, &[]);
    let c = step(w, "c", t0, &[]);
    let d = step(w, "d", t0, &[&b, &c, &b]); // a dependency named twice counts once
    store.enqueue(vec![b.clone(), c.clone(), d.clone()]).await.unwrap();
    let claimed = store.claim(claim_params(&["b", "c"], t0, "w", 2)).await.unwrap();
    // Completions of one batch may carry different times: the latest one counts.
    let completions: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, cl)| completion(cl.lease, t0 + Duration::from_secs(5 - i as u64), succeeded()))
        .collect();
    store.complete(completions).await.unwrap();
    let r = store.get(d.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.updated_at), (State::Pending, t0 + Duration::from_secs(5)));
    assert_eq!(kinds(&store, d.id).await, vec![JournalKind::Enqueued, JournalKind::Unblocked]);
    let steps = store.workflow_steps(w).await.unwrap();
    assert_eq!(steps.iter().find(|s| s.command.id == d.id).unwrap().depends_on.len(), 2);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workflow_failure_cancels_dependents_transitively() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(15_000_000);
    // A → B → C, plus E depending on A and an independent X: the failure of A
    // cancels B, C and E; X and the other workflow are untouched.
    let w = WorkflowId::generate(t0);
    let a = step(w, "a", t0, &[]);
    let b = step(w, "b", t0, &[&a]);
    let c = step(w, "c", t0, &[&b]);
    let e = step(w, "e", t0, &[&a]);
    let x = step(w, "x", t0, &[]);
    let w2 = WorkflowId::generate(t0);
    let p = step(w2, "p", t0, &[]);
    let q = step(w2, "q", t0, &[&p]);
    store
        .enqueue(vec![a.clone(), b.clone(), c.clone(), e.clone(), x.clone(), p.clone(), q.clone()])
        .await
        .unwrap();

    let t1 = t0 + Duration::from_secs(1);
    let failure = Failure::new(FailureKind::Error, "boom");
    run_step(&store, "a", t1, Outcome::Failed { failure: failure.clone(), follow_ups: Vec::new() }).await;
    let r = store.get(a.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.error, r.follow_ups_due), (State::Failed, Some(failure), false));
    for id in [b.id, c.id, e.id] {
        assert_dependency_cancelled(&store, id, t1, a.id, State::Failed).await;
    }
    assert_eq!(kinds(&store, c.id).await, vec![JournalKind::Enqueued, JournalKind::Cancelled]);
    assert_eq!(state_of(&store, x.id).await, State::Pending);
    assert_eq!(state_of(&store, q.id).await, State::Blocked);
    // Cancelled dependents are due for their follow-ups.
    let names: Vec<String> = ["b", "c", "e"].iter().map(|n| n.to_string()).collect();
    assert_eq!(store.follow_ups_due(&names, 10).await.unwrap().len(), 3);

    // A running step cancelled on request cascades as `cancelled`.
    assert_eq!(store.cancel(p.id, t1).await.unwrap(), CancelStatus::Cancelled);
    assert_dependency_cancelled(&store, q.id, t1, p.id, State::Cancelled).await;
    let w3 = WorkflowId::generate(t0);
    let r1 = step(w3, "r1", t0, &[]);
    let r2 = step(w3, "r2", t0, &[&r1]);
    store.enqueue(vec![r1.clone(), r2.clone()]).await.unwrap();
    let claimed = store.claim(claim_params(&["r1"], t1, "w", 1)).await.unwrap();
    assert_eq!(store.cancel(r1.id, t1).await.unwrap(), CancelStatus::Requested);
    assert_eq!(state_of(&store, r2.id).await, State::Blocked, "only a request so far");
    let t2 = t1 + Duration::from_secs(1);
    let cancelled = Outcome::Cancelled { follow_ups: Vec::new() };
    store.complete(vec![completion(claimed[0].lease, t2, cancelled)]).await.unwrap();
    assert_dependency_cancelled(&store, r2.id, t2, r1.id, State::Cancelled).await;
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workflow_cancel_cascades() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(16_000_000);
    // Cancelling a pending step cancels everything after it.
    let w = WorkflowId::generate(t0);
    let a = step(w, "a", t0, &[]);
    let b = step(w, "b", t0, &[&a]);
    let c = step(w, "c", t0, &[&b]);
    // Cancelling a blocked step cancels what comes after it, not what comes before.
    let w2 = WorkflowId::generate(t0);
    let p = step(w2, "p", t0, &[]);
    let q = step(w2, "q", t0, &[&p]);
    let r = step(w2, "r", t0, &[&q]);
    store.enqueue(vec![a.clone(), b.clone(), c.clone(), p.clone(), q.clone(), r.clone()]).await.unwrap();
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(store.cancel(a.id, t1).await.unwrap(), CancelStatus::Cancelled);
    for id in [b.id, c.id] {
        assert_dependency_cancelled(&store, id, t1, a.id, State::Cancelled).await;
    }
    assert_eq!(store.cancel(b.id, t1).await.unwrap(), CancelStatus::AlreadyFinished(State::Cancelled));

    assert_eq!(store.cancel(q.id, t1).await.unwrap(), CancelStatus::Cancelled);
    let rq = store.get(q.id).await.unwrap().unwrap();
    assert_eq!((rq.state, rq.follow_ups_due), (State::Cancelled, true));
    assert_eq!(kinds(&store, q.id).await, vec![JournalKind::Enqueued, JournalKind::Cancelled]);
    assert_dependency_cancelled(&store, r.id, t1, q.id, State::Cancelled).await;
    assert_eq!(state_of(&store, p.id).await, State::Pending);
    // p succeeding later unblocks nothing: its dependent is cancelled.
    run_step(&store, "p", t1, succeeded()).await;
    assert_eq!(state_of(&store, q.id).await, State::Cancelled);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workflow_rescue_cascades() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(17_000_000);
    let w = WorkflowId::generate(t0);
    let a = InsertCommand { max_attempts: 1, ..step(w, "a", t0, &[]) }; // fails when rescued
    let b = step(w, "b", t0, &[&a]);
    let c = step(w, "c", t0, &[&b]);
    let again = step(w, "again", t0, &[]); // attempts left: pending again
    let d = step(w, "d", t0, &[&again]);
    let asked = step(w, "asked", t0, &[]); // cancel requested: cancelled
    let e = step(w, "e", t0, &[&asked]);
    store
        .enqueue(vec![a.clone(), b.clone(), c.clone(), again.clone(), d.clone(), asked.clone(), e.clone()])
        .await
        .unwrap();
    let claimed = store.claim(claim_params(&["a", "again", "asked"], t0, "dead", 10)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert_eq!(store.cancel(asked.id, t0).await.unwrap(), CancelStatus::Requested);
    let later = t0 + Duration::from_secs(60);
    let mut rescued = store.rescue(later, 10).await.unwrap();
    rescued.sort_by_key(|r| r.id);
    let mut expected = vec![
        Rescued { id: a.id, state: State::Failed },
        Rescued { id: again.id, state: State::Pending },
        Rescued { id: asked.id, state: State::Cancelled },
    ];
    expected.sort_by_key(|r| r.id);
    assert_eq!(rescued, expected);
    for id in [b.id, c.id] {
        assert_dependency_cancelled(&store, id, later, a.id, State::Failed).await;
    }
    assert_dependency_cancelled(&store, e.id, later, asked.id, State::Cancelled).await;
    assert_eq!(state_of(&store, d.id).await, State::Blocked);
    drop_tables(&store).await;
}

/// A `Retry` or `Released` completion of a command whose cancellation was requested
/// ends it cancelled (due for its follow-ups), and its dependents with it.
#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn cancel_request_wins_over_retry_and_release() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(27_000_000);
    let w = WorkflowId::generate(t0);
    let retried = step(w, "retried", t0, &[]); // cancel requested, then Retry
    let retried_dep = step(w, "retried_dep", t0, &[&retried]);
    let released = step(w, "released", t0, &[]); // cancel requested, then Released
    let released_dep = step(w, "released_dep", t0, &[&released]);
    let plain = step(w, "plain", t0, &[]); // no request: Retry goes back to pending
    let plain_dep = step(w, "plain_dep", t0, &[&plain]);
    store
        .enqueue(vec![
            retried.clone(),
            retried_dep.clone(),
            released.clone(),
            released_dep.clone(),
            plain.clone(),
            plain_dep.clone(),
        ])
        .await
        .unwrap();
    let claimed = store.claim(claim_params(&["retried", "released", "plain"], t0, "w", 10)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let lease_of = |id: CommandId| claimed.iter().find(|c| c.lease.id == id).unwrap().lease;
    assert_eq!(store.cancel(retried.id, t0).await.unwrap(), CancelStatus::Requested);
    assert_eq!(store.cancel(released.id, t0).await.unwrap(), CancelStatus::Requested);

    let t1 = t0 + Duration::from_secs(1);
    let retry_at = t1 + Duration::from_secs(30);
    let failure = Failure::new(FailureKind::Error, "flaky");
    let retry = Outcome::Retry { failure: failure.clone(), retry_at };
    let statuses = store
        .complete(vec![
            completion(lease_of(retried.id), t1, retry.clone()),
            completion(lease_of(released.id), t1, Outcome::Released { at: retry_at, started: true }),
            completion(lease_of(plain.id), t1, retry),
        ])
        .await
        .unwrap();
    assert_eq!(statuses, vec![CompletionStatus::Applied; 3]);

    let r = store.get(retried.id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.finished_at, r.follow_ups_due, r.scheduled_at, r.updated_at),
        (State::Cancelled, Some(t1), true, t0, t1)
    );
    assert_eq!((r.error, r.lease_token, r.lease_expires_at), (Some(failure.clone()), None, None));
    let journal = store.journal(retried.id).await.unwrap();
    let tail: Vec<_> = journal[journal.len() - 2..].iter().map(|e| e.kind).collect();
    assert_eq!(tail, vec![JournalKind::Failed, JournalKind::Cancelled]);
    assert!(!journal.iter().any(|e| e.kind == JournalKind::RetryScheduled));
    let last = journal.last().unwrap();
    assert_eq!(
        (last.at, last.attempt, last.worker.as_deref(), last.message.as_deref()),
        (t1, 1, Some("w"), Some("cancel requested; not retried"))
    );

    let r = store.get(released.id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.finished_at, r.follow_ups_due, r.scheduled_at, r.error),
        (State::Cancelled, Some(t1), true, t0, None)
    );
    assert_eq!((r.lease_token, r.lease_expires_at), (None, None));
    let journal = store.journal(released.id).await.unwrap();
    assert!(!journal.iter().any(|e| e.kind == JournalKind::Released));
    let last = journal.last().unwrap();
    assert_eq!(
        (last.kind, last.attempt, last.worker.as_deref(), last.message.as_deref()),
        (JournalKind::Cancelled, 1, Some("w"), Some("cancel requested; not retried"))
    );

    // Their blocked dependents are cancelled as for an `Outcome::Cancelled`.
    assert_dependency_cancelled(&store, retried_dep.id, t1, retried.id, State::Cancelled).await;
    assert_dependency_cancelled(&store, released_dep.id, t1, released.id, State::Cancelled).await;

    // Without a request, a retry is still a retry.
    let r = store.get(plain.id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.finished_at, r.follow_ups_due, r.scheduled_at, r.error),
        (State::Pending, None, false, retry_at, Some(failure))
    );
    assert_eq!(
        kinds(&store, plain.id).await,
        vec![JournalKind::Enqueued, JournalKind::Claimed, JournalKind::Failed, JournalKind::RetryScheduled]
    );
    assert_eq!(state_of(&store, plain_dep.id).await, State::Blocked);

    // The cancelled ones are due for their follow-ups and are never claimed again.
    let names: Vec<String> = ["retried", "released", "plain"].iter().map(|n| n.to_string()).collect();
    let mut due: Vec<_> = store.follow_ups_due(&names, 10).await.unwrap().iter().map(|r| r.id).collect();
    due.sort();
    let mut expected = vec![retried.id, released.id];
    expected.sort();
    assert_eq!(due, expected);
    let again =
        store.claim(claim_params(&["retried", "released", "plain"], retry_at, "w", 10)).await.unwrap();
    assert_eq!(again.iter().map(|c| c.lease.id).collect::<Vec<_>>(), vec![plain.id]);
    drop_tables(&store).await;
}

/// Two dependencies of one command completed at the same moment by two concurrent
/// transactions: whichever commits second must see the first and unblock it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workflow_concurrent_dependencies_unblock_exactly_once() {
    const ITERATIONS: usize = 20;
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(18_000_000);
    let started = stopwatch();
    for i in 0..ITERATIONS {
        let w = WorkflowId::generate(t0);
        let (bn, cn) = (format!("b{i}"), format!("c{i}"));
        let b = step(w, &bn, t0, &[]);
        let c = step(w, &cn, t0, &[]);
        let d = step(w, &format!("d{i}"), t0, &[&b, &c]);
        store.enqueue(vec![b.clone(), c.clone(), d.clone()]).await.unwrap();
        let claimed = store.claim(claim_params(&[&bn, &cn], t0, "w", 2)).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for cl in claimed {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                // Each on its own pooled connection, released at once.
                barrier.wait().await;
                store.complete(vec![completion(cl.lease, t0, succeeded())]).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), vec![CompletionStatus::Applied]);
        }
        assert_eq!(state_of(&store, b.id).await, State::Succeeded);
        assert_eq!(state_of(&store, c.id).await, State::Succeeded);
        assert_eq!(state_of(&store, d.id).await, State::Pending, "iteration {i}");
        assert_eq!(kinds(&store, d.id).await, vec![JournalKind::Enqueued, JournalKind::Unblocked]);
    }
    eprintln!("{ITERATIONS} racing pairs of dependencies in {:?}", started.elapsed());
    drop_tables(&store).await;
}

#[derive(QueryableByName)]
struct ColumnInfo {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    collation: Option<String>,
}

/// The workflow columns of the commands table with their collations, and whether
/// its workflow index exists.
async fn workflow_schema(store: &MysqlStore) -> (Vec<(String, Option<String>)>, bool) {
    let mut conn = store.conn().await.unwrap();
    let table = format!("{}commands", store.prefix());
    let columns: Vec<ColumnInfo> = diesel::sql_query(
        "SELECT CAST(column_name AS CHAR) AS name, CAST(collation_name AS CHAR) AS collation \
         FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? \
         AND column_name IN ('workflow_id', 'step') ORDER BY column_name",
    )
    .bind::<Text, _>(&table)
    .load(&mut conn)
    .await
    .unwrap();
    let index: Vec<TableName> = diesel::sql_query(
        "SELECT CAST(index_name AS CHAR) AS name FROM information_schema.statistics \
         WHERE table_schema = DATABASE() AND table_name = ? AND index_name = 'commands_workflow'",
    )
    .bind::<Text, _>(&table)
    .load(&mut conn)
    .await
    .unwrap();
    (columns.into_iter().map(|c| (c.name, c.collation)).collect(), !index.is_empty())
}

async fn versions(store: &MysqlStore) -> Vec<String> {
    let mut conn = store.conn().await.unwrap();
    let rows: Vec<TableName> = diesel::sql_query(format!(
        "SELECT CAST(version AS CHAR) AS name FROM {} ORDER BY version",
        store.inner.tables.migrations
    ))
    .load(&mut conn)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.name).collect()
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn migration_2_upgrades_a_version_1_database() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, &fresh_prefix()).await;
    let t = &store.inner.tables;
    let t0 = Timestamp::from_millis(19_000_000);
    let old = insert("job", t0);
    {
        // The schema and a row as version 1 wrote them.
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!(
            "CREATE TABLE {} (version INT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE = InnoDB",
            t.migrations
        ))
        .await
        .unwrap();
        for statement in migrations::statements(migrations::MIGRATIONS[0].1, store.prefix()) {
            conn.batch_execute(&statement).await.unwrap();
        }
        conn.batch_execute(&format!("INSERT INTO {} (version, applied_at) VALUES (1, 0)", t.migrations))
            .await
            .unwrap();
        conn.batch_execute(&format!(
            "INSERT INTO {} (id, name, target, state, input, max_attempts, timeout_ms, retry_policy, \
             scheduled_at, created_at, updated_at, correlation_id) \
             VALUES ('{}', 'job', 'default', 'pending', '{{}}', 4, 5000, '{}', {t}, {t}, {t}, 'c')",
            t.commands,
            old.id,
            orch::store::backend::encode_policy(&old.retry_policy).unwrap(),
            t = t0.as_micros(),
        ))
        .await
        .unwrap();
        // A first run of migration 2 that stopped after adding one column.
        conn.batch_execute(&format!(
            "ALTER TABLE {} ADD COLUMN workflow_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL",
            t.commands
        ))
        .await
        .unwrap();
    }
    let started = stopwatch();
    store.migrate().await.unwrap();
    eprintln!("migration 1 → 2 of a half-migrated database: {:?}", started.elapsed());
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    let expected_schema = (
        vec![
            ("step".to_owned(), Some("utf8mb4_bin".to_owned())),
            ("workflow_id".to_owned(), Some("ascii_bin".to_owned())),
        ],
        true,
    );
    assert_eq!(workflow_schema(&store).await, expected_schema);
    let r = store.get(old.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.workflow), (State::Pending, None));

    // Every statement of migration 2 again, as after a crash before its version was
    // recorded: nothing changes, nothing fails.
    {
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!("DELETE FROM {} WHERE version = 2", t.migrations)).await.unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(workflow_schema(&store).await, expected_schema);

    // The upgraded tables run workflows.
    let w = WorkflowId::generate(t0);
    let a = step(w, "a", t0, &[]);
    let b = step(w, "b", t0, &[&a]);
    store.enqueue(vec![a.clone(), b.clone()]).await.unwrap();
    run_step(&store, "a", t0, succeeded()).await;
    assert_eq!(state_of(&store, b.id).await, State::Pending);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workflow_lookups_use_the_indexes() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(20_000_000);
    let mut rows = Vec::new();
    for _ in 0..50 {
        let w = WorkflowId::generate(t0);
        let a = step(w, "a", t0, &[]);
        let b = step(w, "b", t0, &[&a]);
        rows.extend([a, b]);
    }
    store.enqueue(rows.clone()).await.unwrap();
    let t = &store.inner.tables;
    let mut conn = store.conn().await.unwrap();
    conn.batch_execute(&format!("ANALYZE TABLE {}, {}", t.commands, t.dependencies)).await.unwrap();
    let workflow = rows[10].workflow.as_ref().unwrap().workflow_id.to_string();
    let plan: Vec<ExplainRow> = diesel::sql_query(format!(
        "EXPLAIN SELECT {} FROM {} WHERE workflow_id = ? ORDER BY id",
        t.columns, t.commands
    ))
    .bind::<Text, _>(&workflow)
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(plan[0].key.as_deref(), Some("commands_workflow"));
    let plan: Vec<ExplainRow> = diesel::sql_query(format!(
        "EXPLAIN SELECT command_id, depends_on FROM {} WHERE depends_on IN (?)",
        t.dependencies
    ))
    .bind::<Text, _>(rows[10].id.to_string())
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(plan[0].key.as_deref(), Some("dependencies_depends_on"));
    drop(conn);
    drop_tables(&store).await;
}

// ---------------------------------------------------------------------------
// Sagas.

/// An instance of `saga` at version 1, created and saved at `at`.
fn saga_record(saga: &str, correlation_id: &str, at: Timestamp) -> SagaRecord {
    SagaRecord {
        saga: saga.into(),
        correlation_id: correlation_id.into(),
        state: "created".into(),
        status: SagaStatus::Active,
        data: r#"{"order":1,"note":"ü ✓ 🎉"}"#.into(),
        version: 1,
        compensations: "[]".into(),
        last_event: None,
        timeout_at: None,
        created_at: at,
        updated_at: at,
    }
}

fn create_saga(record: &SagaRecord, commands: Vec<InsertCommand>) -> SagaWrite {
    SagaWrite { record: record.clone(), expected_version: None, commands }
}

/// Replaces `from` (the version read) with `to`.
fn replace_saga(from: &SagaRecord, to: &SagaRecord, commands: Vec<InsertCommand>) -> SagaWrite {
    SagaWrite { record: to.clone(), expected_version: Some(from.version), commands }
}

/// Whether a command exists, with or without journal entries.
async fn command_exists(store: &MysqlStore, id: CommandId) -> bool {
    let exists = store.get(id).await.unwrap().is_some();
    assert_eq!(exists, !store.journal(id).await.unwrap().is_empty(), "a command and its journal go together");
    exists
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn saga_saves_are_compare_and_set() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(21_000_000);
    assert_eq!(store.saga("order", "1").await.unwrap(), None);

    // Create, then create again: a conflict that writes nothing, its commands included.
    let first = saga_record("order", "1", t0);
    assert_eq!(store.save_saga(create_saga(&first, Vec::new())).await.unwrap(), SagaWriteStatus::Saved);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&first));
    let again = SagaRecord {
        data: r#"{"order":2}"#.into(),
        ..saga_record("order", "1", t0 + Duration::from_secs(1))
    };
    let cmd = insert("charge", t0);
    let status = store.save_saga(create_saga(&again, vec![cmd.clone()])).await.unwrap();
    assert_eq!(status, SagaWriteStatus::Conflict);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&first));
    assert!(!command_exists(&store, cmd.id).await);
    // Names compare byte for byte: a saga differing by case only is another instance.
    assert_eq!(store.saga("Order", "1").await.unwrap(), None);
    // Except for trailing spaces, which `utf8mb4_bin` (a PAD SPACE collation, like every
    // text column of this backend) ignores: unlike SQLite and PostgreSQL, "1 " is "1".
    assert_eq!(store.saga("order", "1 ").await.unwrap().as_ref(), Some(&first));
    let upper = saga_record("Order", "1", t0);
    assert_eq!(store.save_saga(create_saga(&upper, Vec::new())).await.unwrap(), SagaWriteStatus::Saved);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&first));

    // Replace with the version read: every field round-trips, through every status,
    // with and without a last event and a timeout; created_at stays as created.
    let mut current = first.clone();
    for (i, status) in SagaStatus::ALL.into_iter().enumerate() {
        let at = t0 + Duration::from_secs(10 * (i as u64 + 1));
        let next = SagaRecord {
            state: format!("state-{i}"),
            status,
            data: format!(r#"{{"order":1,"step":{i}}}"#),
            version: current.version + 1,
            compensations: format!(r#"[{{"step":{i}}}]"#),
            last_event: (i % 2 == 0).then(|| CommandId::generate(at)),
            timeout_at: (i % 2 == 1).then(|| at + Duration::from_micros(1_234_567)),
            created_at: at, // ignored: not updated
            updated_at: at,
            ..current.clone()
        };
        let status = store.save_saga(replace_saga(&current, &next, Vec::new())).await.unwrap();
        assert_eq!(status, SagaWriteStatus::Saved, "{i}");
        let stored = store.saga("order", "1").await.unwrap().unwrap();
        assert_eq!(stored, SagaRecord { created_at: t0, ..next.clone() }, "{i}");
        current = stored;
    }
    assert_eq!(current.version, 6);

    // A stale version, or a missing instance, is a conflict: nothing changes, its
    // commands are not inserted.
    let stale = SagaRecord { state: "stale".into(), version: 3, ..current.clone() };
    let cmd = insert("charge", t0);
    let write = SagaWrite { record: stale, expected_version: Some(2), commands: vec![cmd.clone()] };
    assert_eq!(store.save_saga(write).await.unwrap(), SagaWriteStatus::Conflict);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&current));
    assert!(!command_exists(&store, cmd.id).await);
    let missing = saga_record("order", "2", t0);
    let write = SagaWrite { record: missing, expected_version: Some(1), commands: vec![cmd.clone()] };
    assert_eq!(store.save_saga(write).await.unwrap(), SagaWriteStatus::Conflict);
    assert_eq!(store.saga("order", "2").await.unwrap(), None);
    assert!(!command_exists(&store, cmd.id).await);

    // A too-long name is refused (strict mode), not truncated.
    let long = saga_record(&"s".repeat(256), "1", t0);
    assert!(store.save_saga(create_saga(&long, Vec::new())).await.is_err());
    assert!(store.sagas(SagaQuery::default()).await.unwrap().len() == 2);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn saga_saves_insert_their_commands() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(22_000_000);
    let signal = store.wake_signal().unwrap();
    let notified = signal.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();

    // A command and a two-step compensation chain, pushed with the create.
    let first = saga_record("order", "1", t0);
    let plain = insert("charge", t0);
    let w = WorkflowId::generate(t0);
    let refund = step(w, "refund", t0, &[]);
    let release = step(w, "release", t0, &[&refund]);
    let write = create_saga(&first, vec![plain.clone(), refund.clone(), release.clone()]);
    assert_eq!(store.save_saga(write).await.unwrap(), SagaWriteStatus::Saved);
    tokio::time::timeout(Duration::from_secs(1), notified)
        .await
        .expect("a save with commands wakes the workers");
    assert_eq!(state_of(&store, plain.id).await, State::Pending);
    assert_eq!(state_of(&store, refund.id).await, State::Pending);
    assert_eq!(state_of(&store, release.id).await, State::Blocked);
    for x in [&plain, &refund, &release] {
        assert_eq!(kinds(&store, x.id).await, vec![JournalKind::Enqueued]);
    }
    let steps = store.workflow_steps(w).await.unwrap();
    let edges: HashMap<CommandId, Vec<CommandId>> =
        steps.into_iter().map(|s| (s.command.id, s.depends_on)).collect();
    assert_eq!(edges, HashMap::from([(refund.id, vec![]), (release.id, vec![refund.id])]));
    run_step(&store, "refund", t0, succeeded()).await;
    assert_eq!(state_of(&store, release.id).await, State::Pending);

    // A save whose commands cannot be inserted (a taken id) fails whole: the instance
    // keeps its version.
    let next = SagaRecord { version: 2, state: "next".into(), ..first.clone() };
    let fresh_cmd = insert("charge", t0);
    let write = replace_saga(&first, &next, vec![fresh_cmd.clone(), insert("charge", t0), plain.clone()]);
    assert!(store.save_saga(write).await.is_err());
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&first));
    assert!(!command_exists(&store, fresh_cmd.id).await);
    // Without the taken id it goes through.
    let write = replace_saga(&first, &next, vec![fresh_cmd.clone()]);
    assert_eq!(store.save_saga(write).await.unwrap(), SagaWriteStatus::Saved);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&next));
    assert_eq!(state_of(&store, fresh_cmd.id).await, State::Pending);
    drop_tables(&store).await;
}

async fn saga_keys(store: &MysqlStore, query: SagaQuery) -> Vec<(String, String)> {
    store.sagas(query).await.unwrap().into_iter().map(|r| (r.saga, r.correlation_id)).collect()
}

fn keys(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(s, c)| (s.to_string(), c.to_string())).collect()
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn saga_queries_filter_and_limit() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(23_000_000);
    let s = |n: u64| t0 + Duration::from_secs(n);
    // (saga, correlation id, state, status, updated at, timeout at), saved out of order.
    let instances = [
        ("refund", "1", "awaiting_payment", SagaStatus::Active, s(1), Some(s(1))),
        ("order", "3", "completed", SagaStatus::Completed, s(3), Some(s(5))),
        ("order", "1", "awaiting_payment", SagaStatus::Active, s(1), Some(s(10))),
        ("order", "4", "awaiting_payment", SagaStatus::Compensating, s(4), Some(s(20))),
        ("order", "2", "awaiting_shipment", SagaStatus::Active, s(2), None),
    ];
    let mut saved = HashMap::new();
    for (saga, id, state, status, updated_at, timeout_at) in instances {
        let record =
            SagaRecord { state: state.into(), status, timeout_at, updated_at, ..saga_record(saga, id, t0) };
        assert_eq!(store.save_saga(create_saga(&record, Vec::new())).await.unwrap(), SagaWriteStatus::Saved);
        saved.insert((saga.to_owned(), id.to_owned()), record);
    }
    let all = keys(&[("order", "1"), ("order", "2"), ("order", "3"), ("order", "4"), ("refund", "1")]);
    let q = SagaQuery::default;
    // Whole records, in (saga, correlation id) order.
    let records = store.sagas(q()).await.unwrap();
    assert_eq!(records, all.iter().map(|k| saved[k].clone()).collect::<Vec<_>>());

    let cases: Vec<(SagaQuery, Vec<(String, String)>)> = vec![
        (SagaQuery { saga: Some("order".into()), ..q() }, all[..4].to_vec()),
        (SagaQuery { saga: Some("nope".into()), ..q() }, vec![]),
        (
            SagaQuery { state: Some("awaiting_payment".into()), ..q() },
            keys(&[("order", "1"), ("order", "4"), ("refund", "1")]),
        ),
        (
            SagaQuery { status: Some(SagaStatus::Active), ..q() },
            keys(&[("order", "1"), ("order", "2"), ("refund", "1")]),
        ),
        (SagaQuery { status: Some(SagaStatus::Compensated), ..q() }, vec![]),
        // Strictly before: order 2 was saved at exactly s(2).
        (SagaQuery { updated_before: Some(s(2)), ..q() }, keys(&[("order", "1"), ("refund", "1")])),
        // At or before, and only instances with a timeout.
        (
            SagaQuery { timeout_before: Some(s(10)), ..q() },
            keys(&[("order", "1"), ("order", "3"), ("refund", "1")]),
        ),
        (SagaQuery { timeout_before: Some(s(0)), ..q() }, vec![]),
        // Combined.
        (
            SagaQuery {
                saga: Some("order".into()),
                state: Some("awaiting_payment".into()),
                status: Some(SagaStatus::Active),
                ..q()
            },
            keys(&[("order", "1")]),
        ),
        (
            SagaQuery {
                saga: Some("order".into()),
                updated_before: Some(s(3)),
                timeout_before: Some(s(10)),
                ..q()
            },
            keys(&[("order", "1")]),
        ),
        (
            SagaQuery {
                saga: Some("order".into()),
                state: Some("awaiting_payment".into()),
                status: Some(SagaStatus::Compensating),
                updated_before: Some(s(5)),
                timeout_before: Some(s(20)),
                limit: 5,
            },
            keys(&[("order", "4")]),
        ),
        (SagaQuery { saga: Some("refund".into()), status: Some(SagaStatus::Completed), ..q() }, vec![]),
        // Limits.
        (SagaQuery { limit: 2, ..q() }, all[..2].to_vec()),
        (SagaQuery { status: Some(SagaStatus::Active), limit: 2, ..q() }, all[..2].to_vec()),
        (SagaQuery { limit: 1, saga: Some("refund".into()), ..q() }, all[4..].to_vec()),
        (SagaQuery { limit: usize::MAX, ..q() }, all.clone()),
    ];
    for (query, expected) in cases {
        let described = format!("{query:?}");
        assert_eq!(saga_keys(&store, query).await, expected, "{described}");
    }

    // The cap: 0 means 10,000, and larger limits are cut to it.
    let t = &store.inner.tables;
    let mut conn = store.conn().await.unwrap();
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL \
                  SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
                  UNION ALL SELECT 9)";
    conn.batch_execute(&format!(
        "INSERT INTO {} (saga, correlation_id, state, status, data, version, compensations, created_at, updated_at) \
         SELECT 'bulk', LPAD(a.d * 10000 + b.d * 1000 + c.d * 100 + e.d * 10 + f.d, 5, '0'), 'x', 'active', \
         '{{}}', 1, '[]', 0, 0 FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f \
         WHERE a.d * 10000 + b.d * 1000 + c.d * 100 + e.d * 10 + f.d < 10005",
        t.sagas
    ))
    .await
    .unwrap();
    drop(conn);
    let bulk = |limit| SagaQuery { saga: Some("bulk".into()), limit, ..q() };
    for limit in [0, 10_001, usize::MAX] {
        let records = store.sagas(bulk(limit)).await.unwrap();
        assert_eq!(records.len(), 10_000, "limit {limit}");
        assert_eq!(
            (records[0].correlation_id.as_str(), records[9_999].correlation_id.as_str()),
            ("00000", "09999")
        );
    }
    assert_eq!(store.sagas(bulk(10)).await.unwrap().len(), 10);
    assert_eq!(store.sagas(SagaQuery { limit: 0, ..q() }).await.unwrap().len(), 10_000);
    drop_tables(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn concurrent_saga_saves_have_one_winner() {
    const ITERATIONS: usize = 20;
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(24_000_000);
    let started = stopwatch();
    for i in 0..ITERATIONS {
        let id = i.to_string();
        let base = saga_record("race", &id, t0);
        // Two creates of one instance, then two replaces of one version, each pair
        // released at once on two pooled connections.
        for round in ["create", "replace"] {
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let mut tasks = Vec::new();
            for writer in 0..2 {
                let record = SagaRecord {
                    data: format!(r#"{{"writer":{writer}}}"#),
                    version: if round == "create" { 1 } else { 2 },
                    ..base.clone()
                };
                let cmd = insert("charge", t0);
                let write = if round == "create" {
                    create_saga(&record, vec![cmd.clone()])
                } else {
                    replace_saga(&base, &record, vec![cmd.clone()])
                };
                let (store, barrier) = (store.clone(), Arc::clone(&barrier));
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    (store.save_saga(write).await.unwrap(), record, cmd.id)
                }));
            }
            let mut outcomes = Vec::new();
            for t in tasks {
                outcomes.push(t.await.unwrap());
            }
            let winners: Vec<_> = outcomes.iter().filter(|(s, ..)| *s == SagaWriteStatus::Saved).collect();
            assert_eq!(winners.len(), 1, "{round} {i}: {outcomes:?}");
            let (_, record, _) = winners[0];
            assert_eq!(store.saga("race", &id).await.unwrap().as_ref(), Some(record), "{round} {i}");
            for (status, _, cmd) in &outcomes {
                assert_eq!(
                    command_exists(&store, *cmd).await,
                    *status == SagaWriteStatus::Saved,
                    "{round} {i}"
                );
            }
        }
    }
    eprintln!("{ITERATIONS} racing pairs of creates and of replaces in {:?}", started.elapsed());
    drop_tables(&store).await;
}

#[derive(QueryableByName)]
struct IndexColumn {
    #[diesel(sql_type = Text)]
    index: String,
    #[diesel(sql_type = Text)]
    column: String,
}

/// A table's columns with their collations, in order, and its indexes as
/// `index.column` in index order, as information_schema reports them.
async fn table_schema(store: &MysqlStore, table: &str) -> (Vec<(String, Option<String>)>, Vec<String>) {
    let mut conn = store.conn().await.unwrap();
    let table = format!("{}{table}", store.prefix());
    let columns: Vec<ColumnInfo> = diesel::sql_query(
        "SELECT CAST(column_name AS CHAR) AS name, CAST(collation_name AS CHAR) AS collation \
         FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? \
         ORDER BY ordinal_position",
    )
    .bind::<Text, _>(&table)
    .load(&mut conn)
    .await
    .unwrap();
    let indexes: Vec<IndexColumn> = diesel::sql_query(
        "SELECT CAST(index_name AS CHAR) AS `index`, CAST(column_name AS CHAR) AS `column` \
         FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? \
         ORDER BY index_name, seq_in_index",
    )
    .bind::<Text, _>(&table)
    .load(&mut conn)
    .await
    .unwrap();
    (
        columns.into_iter().map(|c| (c.name, c.collation)).collect(),
        indexes.into_iter().map(|i| format!("{}.{}", i.index, i.column)).collect(),
    )
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn migration_3_upgrades_a_version_2_database() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, &fresh_prefix()).await;
    let t = &store.inner.tables;
    let t0 = Timestamp::from_millis(25_000_000);
    {
        // The schema as version 2 left it.
        schema_at_version(&store, 2).await;
    }
    let old = insert("job", t0);
    insert_old_row(&store, &old).await;
    assert!(store.saga("order", "1").await.is_err(), "no sagas table yet");

    let started = stopwatch();
    store.migrate().await.unwrap();
    eprintln!("migration 2 → 3: {:?}", started.elapsed());
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    let schema = || table_schema(&store, "sagas");
    let text = |c: &str| (c.to_owned(), Some("utf8mb4_bin".to_owned()));
    let ascii = |c: &str| (c.to_owned(), Some("ascii_bin".to_owned()));
    let number = |c: &str| (c.to_owned(), None);
    let expected = (
        vec![
            text("saga"),
            text("correlation_id"),
            text("state"),
            ascii("status"),
            text("data"),
            number("version"),
            text("compensations"),
            ascii("last_event"),
            number("timeout_at"),
            number("created_at"),
            number("updated_at"),
        ],
        [
            "PRIMARY.saga",
            "PRIMARY.correlation_id",
            "sagas_status.saga",
            "sagas_status.status",
            "sagas_status.state",
            "sagas_timeout.saga",
            "sagas_timeout.timeout_at",
            "sagas_updated.saga",
            "sagas_updated.updated_at",
        ]
        .map(String::from)
        .to_vec(),
    );
    assert_eq!(schema().await, expected);
    assert_eq!(state_of(&store, old.id).await, State::Pending);
    let first = saga_record("order", "1", t0);
    let cmd = insert("charge", t0);
    assert_eq!(
        store.save_saga(create_saga(&first, vec![cmd.clone()])).await.unwrap(),
        SagaWriteStatus::Saved
    );

    // Migration 3 again, as after a crash before its version was recorded: nothing
    // changes, nothing fails, nothing is lost.
    {
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!("DELETE FROM {} WHERE version = 3", t.migrations)).await.unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(schema().await, expected);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&first));
    assert_eq!(state_of(&store, cmd.id).await, State::Pending);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn saga_lookups_use_the_indexes() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(26_000_000);
    let s = |n: u64| t0 + Duration::from_secs(n);
    for i in 0..200u64 {
        // Four sagas; few instances stale, past their timeout or in one state.
        let record = SagaRecord {
            state: if i % 50 == 0 { "rare".into() } else { "common".into() },
            status: if i % 50 == 0 { SagaStatus::Compensating } else { SagaStatus::Active },
            updated_at: if i % 40 == 0 { s(1) } else { s(100) },
            timeout_at: (i % 30 == 0).then(|| s(i)),
            ..saga_record(&format!("saga{}", i % 4), &i.to_string(), t0)
        };
        assert_eq!(store.save_saga(create_saga(&record, Vec::new())).await.unwrap(), SagaWriteStatus::Saved);
    }
    let t = &store.inner.tables;
    let mut conn = store.conn().await.unwrap();
    conn.batch_execute(&format!("ANALYZE TABLE {}", t.sagas)).await.unwrap();
    let explain = |filter: &str| {
        format!("EXPLAIN SELECT saga, correlation_id FROM {} WHERE saga = ? AND {filter}", t.sagas)
    };
    let plan: Vec<ExplainRow> = diesel::sql_query(explain("correlation_id = ?"))
        .bind::<Text, _>("saga1")
        .bind::<Text, _>("5")
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(plan[0].key.as_deref(), Some("PRIMARY"));
    let plan: Vec<ExplainRow> = diesel::sql_query(explain("status = ? AND state = ?"))
        .bind::<Text, _>("saga0")
        .bind::<Text, _>("compensating")
        .bind::<Text, _>("rare")
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(plan[0].key.as_deref(), Some("sagas_status"));
    let plan: Vec<ExplainRow> = diesel::sql_query(explain("updated_at < ?"))
        .bind::<Text, _>("saga0")
        .bind::<diesel::sql_types::BigInt, _>(s(2).as_micros())
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(plan[0].key.as_deref(), Some("sagas_updated"));
    let plan: Vec<ExplainRow> = diesel::sql_query(explain("timeout_at IS NOT NULL AND timeout_at <= ?"))
        .bind::<Text, _>("saga0")
        .bind::<diesel::sql_types::BigInt, _>(s(50).as_micros())
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(plan[0].key.as_deref(), Some("sagas_timeout"));
    drop(conn);
    drop_tables(&store).await;
}

// ---------------------------------------------------------------------------
// Workers.

fn worker_record(id: &str, names: &[&str], at: Timestamp) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        instance_key: "orders-ü".into(),
        host: "host-1.internal".into(),
        pid: u32::MAX,
        names: names.iter().map(|n| n.to_string()).collect(),
        concurrency: 8,
        running: 0,
        started_at: at,
        heartbeat_at: at,
    }
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workers_are_recorded_listed_pruned_and_removed() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(27_000_000);
    let s = |n: u64| t0 + Duration::from_secs(n);
    assert_eq!(store.workers().await.unwrap(), Vec::new());

    // Recorded, then recorded again: one row, updated.
    let b = worker_record("worker-b", &[], s(0));
    store.record_worker(b.clone()).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![b.clone()]);
    let b = WorkerRecord { heartbeat_at: s(30), running: 5, ..b };
    store.record_worker(b.clone()).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![b.clone()]);

    // A second worker, sorting first: every field round-trips, listed by id.
    let a = WorkerRecord {
        instance_key: "default".into(),
        host: "other".into(),
        pid: 1,
        concurrency: 1,
        running: 1,
        heartbeat_at: s(10),
        ..worker_record("worker-a", &["send_email", "charge card", "ü ✓ 🎉"], s(5))
    };
    store.record_worker(a.clone()).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(a.names.len(), 3);
    assert!(b.names.is_empty());

    // Pruning removes exactly the rows whose heartbeat is before the cutoff.
    assert_eq!(store.prune_workers(s(10)).await.unwrap(), 0, "a heartbeat at the cutoff stays");
    assert_eq!(store.prune_workers(s(11)).await.unwrap(), 1);
    assert_eq!(store.workers().await.unwrap(), vec![b.clone()]);
    assert_eq!(store.prune_workers(s(11)).await.unwrap(), 0);

    // Removing a present and an absent worker.
    store.record_worker(a.clone()).await.unwrap();
    store.remove_worker("worker-b").await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![a.clone()]);
    store.remove_worker("worker-b").await.unwrap();
    store.remove_worker("nobody").await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![a.clone()]);
    assert_eq!(store.prune_workers(s(1_000)).await.unwrap(), 1);
    assert_eq!(store.workers().await.unwrap(), Vec::new());

    // A corrupt row is an error, not a panic.
    store.record_worker(a.clone()).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    conn.batch_execute(&format!("UPDATE {} SET pid = -1", store.inner.tables.workers)).await.unwrap();
    drop(conn);
    let err = store.workers().await.unwrap_err();
    assert!(matches!(&err, Error::Corrupt(m) if m.contains("pid")), "{err}");
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn migration_4_upgrades_a_version_3_database() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, &fresh_prefix()).await;
    let t = &store.inner.tables;
    let t0 = Timestamp::from_millis(28_000_000);
    {
        // The schema as version 3 left it.
        schema_at_version(&store, 3).await;
    }
    let old = insert("job", t0);
    insert_old_row(&store, &old).await;
    let saga = saga_record("order", "1", t0);
    assert_eq!(store.save_saga(create_saga(&saga, Vec::new())).await.unwrap(), SagaWriteStatus::Saved);
    assert!(store.workers().await.is_err(), "no workers table yet");

    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    let schema = || table_schema(&store, "workers");
    let text = |c: &str| (c.to_owned(), Some("utf8mb4_bin".to_owned()));
    let number = |c: &str| (c.to_owned(), None);
    let expected = (
        vec![
            text("id"),
            text("instance_key"),
            text("host"),
            number("pid"),
            text("names"),
            number("concurrency"),
            number("running"),
            number("started_at"),
            number("heartbeat_at"),
        ],
        ["PRIMARY.id", "workers_heartbeat.heartbeat_at"].map(String::from).to_vec(),
    );
    assert_eq!(schema().await, expected);
    assert_eq!(state_of(&store, old.id).await, State::Pending);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&saga));
    let w = worker_record("w1", &["job"], t0);
    store.record_worker(w.clone()).await.unwrap();

    // Migration 4 again, as after a crash before its version was recorded: nothing
    // changes, nothing fails, nothing is lost.
    {
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!("DELETE FROM {} WHERE version = 4", t.migrations)).await.unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(schema().await, expected);
    assert_eq!(store.workers().await.unwrap(), vec![w]);
    drop_tables(&store).await;
}

// ---------------------------------------------------------------------------
// Monitoring and manual retries.

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn queue_stats_split_pending_by_due_time() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(11_000_000);
    let now = t0 + Duration::from_secs(5);
    assert!(store.queue_stats(now).await.unwrap().is_empty());

    // b on the default target: one of each finished state, and one running.
    let b: Vec<InsertCommand> = (0..4).map(|_| insert("b", t0)).collect();
    store.enqueue(b.clone()).await.unwrap();
    assert_eq!(store.cancel(b[3].id, t0).await.unwrap(), CancelStatus::Cancelled);
    let claimed = store.claim(claim_params(&["b"], t0, "w", 3)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let failed =
        Outcome::Failed { failure: Failure::new(FailureKind::Error, "boom"), follow_ups: Vec::new() };
    let statuses = store
        .complete(vec![
            completion(claimed[0].lease, t0, succeeded()),
            completion(claimed[1].lease, t0, failed),
        ])
        .await
        .unwrap();
    assert_eq!(statuses, vec![CompletionStatus::Applied; 2]);

    // a on the default target: two due (the oldest at t0), one delayed past `now`.
    let delayed = |name: &str, secs: u64, target: &str| {
        NewCommand::raw(name, serde_json::json!({}))
            .delay(Duration::from_secs(secs))
            .target(target)
            .resolve(t0)
            .unwrap()
    };
    let later = delayed("a", 60, orch::DEFAULT_TARGET);
    // a on `eu`: due exactly at `now` (due counts `scheduled_at <= now`).
    // b on `eu`: blocked on the delayed one.
    let blocked = InsertCommand { target: "eu".into(), ..step(WorkflowId::generate(t0), "b", t0, &[&later]) };
    store
        .enqueue(vec![
            delayed("a", 2, orch::DEFAULT_TARGET),
            insert("a", t0),
            later,
            delayed("a", 5, "eu"),
            blocked,
        ])
        .await
        .unwrap();

    let expected = vec![
        QueueStats {
            name: "a".into(),
            target: orch::DEFAULT_TARGET.into(),
            due: 2,
            scheduled: 1,
            oldest_due: Some(t0),
            ..Default::default()
        },
        QueueStats {
            name: "a".into(),
            target: "eu".into(),
            due: 1,
            oldest_due: Some(now),
            ..Default::default()
        },
        QueueStats {
            name: "b".into(),
            target: orch::DEFAULT_TARGET.into(),
            running: 1,
            succeeded: 1,
            failed: 1,
            cancelled: 1,
            ..Default::default()
        },
        QueueStats { name: "b".into(), target: "eu".into(), blocked: 1, ..Default::default() },
    ];
    assert_eq!(store.queue_stats(now).await.unwrap(), expected);
    // A moment earlier, the `eu` command is not due yet.
    let before = store.queue_stats(now - Duration::from_millis(1)).await.unwrap();
    assert_eq!((before[1].due, before[1].scheduled, before[1].oldest_due), (0, 1, None));
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn retry_reruns_failed_and_cancelled_commands() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(12_000_000);
    let t1 = t0 + Duration::from_secs(10);
    let (failing, cancelled, pending, done) =
        (insert("f", t0), insert("c", t0), insert("p", t0), insert("s", t0));
    store.enqueue(vec![failing.clone(), cancelled.clone(), pending.clone(), done.clone()]).await.unwrap();
    run_step(&store, "s", t0, succeeded()).await;
    let failure = Failure::new(FailureKind::Error, "boom");
    run_step(&store, "f", t0, Outcome::Failed { failure: failure.clone(), follow_ups: Vec::new() }).await;
    assert_eq!(store.cancel(cancelled.id, t0).await.unwrap(), CancelStatus::Cancelled);
    let before = store.get(failing.id).await.unwrap().unwrap();
    assert_eq!((before.state, before.attempts), (State::Failed, 1));
    // Cancelled by `cancel`: its follow-ups are due (and dropped by the retry).
    assert!(store.get(cancelled.id).await.unwrap().unwrap().follow_ups_due);

    let signal = store.clone().wake_signal().unwrap();
    let notified = signal.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    assert_eq!(store.retry(failing.id, t1).await.unwrap(), RetryStatus::Retried);
    tokio::time::timeout(Duration::from_secs(1), notified).await.expect("a retry fires the wake signal");
    let r = store.get(failing.id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.scheduled_at, r.updated_at, r.attempts, r.max_attempts, r.finished_at),
        (State::Pending, t1, t1, 1, 2, None)
    );
    assert_eq!(
        (r.follow_ups_due, r.cancel_requested, r.lease_token, r.lease_expires_at, r.error),
        (false, false, None, None, Some(failure))
    );
    let last = store.journal(failing.id).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.kind, last.at, last.attempt, last.message),
        (JournalKind::RetryRequested, t1, 1, Some(format!("retried by request after it failed; due {t1}")))
    );
    let claimed = store.claim(claim_params(&["f"], t1, "w", 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|c| (c.lease.id, c.attempt)).collect::<Vec<_>>(), vec![(failing.id, 2)]);

    assert_eq!(store.retry(cancelled.id, t1).await.unwrap(), RetryStatus::Retried);
    let r = store.get(cancelled.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.scheduled_at, r.max_attempts, r.follow_ups_due), (State::Pending, t1, 1, false));
    assert_eq!(kinds(&store, cancelled.id).await.pop(), Some(JournalKind::RetryRequested));
    assert!(store.follow_ups_due(&["c".into()], 10).await.unwrap().is_empty());

    assert_eq!(store.retry(pending.id, t1).await.unwrap(), RetryStatus::NotRetryable(State::Pending));
    assert_eq!(store.retry(done.id, t1).await.unwrap(), RetryStatus::NotRetryable(State::Succeeded));
    assert_eq!(store.retry(failing.id, t1).await.unwrap(), RetryStatus::NotRetryable(State::Running));
    assert_eq!(store.retry(CommandId::generate(t1), t1).await.unwrap(), RetryStatus::NotFound);
    assert_eq!(kinds(&store, pending.id).await, vec![JournalKind::Enqueued]);
    drop_tables(&store).await;
}

/// Reads a whole listing a page of `params.limit` at a time, each page after the
/// cursor of the last record of the one before.
async fn list_pages(store: &MysqlStore, params: ListParams) -> Vec<CommandRecord> {
    let mut all: Vec<CommandRecord> = Vec::new();
    loop {
        let after = all.last().map(|r| ListCursor::of(r, params.order));
        let page = store.list(ListParams { after, ..params.clone() }).await.unwrap();
        assert!(page.len() <= params.limit, "{} rows in a page of {}", page.len(), params.limit);
        let last = page.len() < params.limit;
        all.extend(page);
        if last {
            return all;
        }
    }
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn list_sorts_pages_and_filters() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(13_000_000);
    // Few distinct keys, so that most pages end inside a run of ties broken by id.
    let rows: Vec<InsertCommand> = (0..23u64)
        .map(|i| {
            NewCommand::raw("job", serde_json::json!({}))
                .delay(Duration::from_secs(i % 5))
                .resolve(t0)
                .unwrap()
        })
        .collect();
    store.enqueue(rows.clone()).await.unwrap();
    let attempts = |i: usize| u32::try_from(i % 4).unwrap();
    {
        let mut conn = store.conn().await.unwrap();
        for (i, r) in rows.iter().enumerate() {
            conn.batch_execute(&format!(
                "UPDATE {} SET attempts = {} WHERE id = '{}'",
                store.inner.tables.commands,
                attempts(i),
                r.id
            ))
            .await
            .unwrap();
        }
    }

    // Most attempts first, ties by id descending: every page size reads every row once.
    let mut by_attempts: Vec<(u32, CommandId)> =
        rows.iter().enumerate().map(|(i, r)| (attempts(i), r.id)).collect();
    by_attempts.sort_by(|a, b| b.cmp(a));
    for limit in [1, 3, 4, 23, 100] {
        let params = ListParams { order: ListOrder::Attempts, descending: true, limit, ..Default::default() };
        let listed = list_pages(&store, params).await;
        assert_eq!(
            listed.iter().map(|r| (r.attempts, r.id)).collect::<Vec<_>>(),
            by_attempts,
            "pages of {limit}"
        );
    }
    // One page after a cursor in the middle of a run of ties.
    let all =
        store.list(ListParams { order: ListOrder::Attempts, descending: true, ..Default::default() }).await;
    let all = all.unwrap();
    let after = Some(ListCursor::of(&all[8], ListOrder::Attempts));
    let page = store
        .list(ListParams {
            order: ListOrder::Attempts,
            descending: true,
            after,
            limit: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| (r.attempts, r.id)).collect::<Vec<_>>(), by_attempts[9..13]);
    // With a filter, and ascending by due time.
    let params = ListParams {
        order: ListOrder::Attempts,
        descending: true,
        min_attempts: Some(2),
        limit: 2,
        ..Default::default()
    };
    let listed = list_pages(&store, params).await;
    let expected: Vec<_> = by_attempts.iter().copied().filter(|&(a, _)| a >= 2).collect();
    assert_eq!(listed.iter().map(|r| (r.attempts, r.id)).collect::<Vec<_>>(), expected);
    let mut by_due: Vec<(Timestamp, CommandId)> = rows.iter().map(|r| (r.scheduled_at, r.id)).collect();
    by_due.sort();
    let listed =
        list_pages(&store, ListParams { order: ListOrder::Scheduled, limit: 5, ..Default::default() });
    assert_eq!(listed.await.iter().map(|r| (r.scheduled_at, r.id)).collect::<Vec<_>>(), by_due);
    // Creation order, newest first.
    let listed = list_pages(&store, ListParams { descending: true, limit: 7, ..Default::default() }).await;
    let mut by_id: Vec<CommandId> = rows.iter().map(|r| r.id).collect();
    by_id.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), by_id);

    // Error text: ASCII case-insensitive, `%`, `_`, `!` and `\` taken literally.
    let messages = [
        "Timeout after 100% of the budget",
        "TIMEOUT_X reached",
        "timeoutAx reached",
        "1000 retries",
        r"wow! C:\temp\x",
    ];
    let failing: Vec<InsertCommand> = messages.iter().map(|_| insert("e", t0)).collect();
    store.enqueue(failing.clone()).await.unwrap();
    let claimed = store.claim(claim_params(&["e"], t0, "w", messages.len())).await.unwrap();
    assert_eq!(claimed.len(), messages.len());
    let mut by_message = HashMap::new();
    let completions: Vec<Completion> = claimed
        .iter()
        .zip(messages)
        .map(|(c, m)| {
            by_message.insert(m, c.lease.id);
            let failure = Failure::new(FailureKind::Error, m);
            completion(c.lease, t0, Outcome::Failed { failure, follow_ups: Vec::new() })
        })
        .collect();
    let statuses = store.complete(completions).await.unwrap();
    assert_eq!(statuses, vec![CompletionStatus::Applied; messages.len()]);
    let cases: [(&str, &[&str]); 9] = [
        ("timeout", &messages[..3]),
        ("TIMEOUT_x", &messages[1..2]),
        ("0%", &messages[..1]),
        ("%", &messages[..1]),
        ("_", &messages[1..2]),
        ("w!", &messages[4..]),
        (r"\t", &messages[4..]),
        ("", &messages[..]),
        ("timeout%x", &[]),
    ];
    for (needle, expected) in cases {
        let params = ListParams { error_contains: Some(needle.to_owned()), ..Default::default() };
        let mut found: Vec<CommandId> = store.list(params).await.unwrap().iter().map(|r| r.id).collect();
        found.sort();
        let mut expected: Vec<CommandId> = expected.iter().map(|m| by_message[m]).collect();
        expected.sort();
        assert_eq!(found, expected, "error containing {needle:?}");
    }
    let params = ListParams {
        error_contains: Some("REACHED".into()),
        state: Some(State::Failed),
        min_attempts: Some(1),
        ..Default::default()
    };
    assert_eq!(store.list(params).await.unwrap().len(), 2);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn list_filters_by_time_parent_and_workflow() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(14_000_000);
    let s = |n: u64| t0 + Duration::from_secs(n);
    let (old, mid, new) = (insert("job", s(0)), insert("job", s(1)), insert("job", s(2)));
    let child = InsertCommand { parent_id: Some(mid.id), ..insert("child", s(3)) };
    let w = WorkflowId::generate(s(4));
    let a = step(w, "a", s(4), &[]);
    store.enqueue(vec![old.clone(), mid.clone(), new.clone(), child.clone(), a.clone()]).await.unwrap();
    let ids = |params: ListParams| {
        let store = &store;
        async move { store.list(params).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>() }
    };
    assert_eq!(ids(ListParams { created_before: Some(s(1)), ..Default::default() }).await, vec![old.id]);
    assert_eq!(
        ids(ListParams { created_after: Some(s(1)), created_before: Some(s(3)), ..Default::default() }).await,
        vec![mid.id, new.id]
    );
    assert_eq!(ids(ListParams { parent: Some(mid.id), ..Default::default() }).await, vec![child.id]);
    assert_eq!(ids(ListParams { workflow: Some(w), ..Default::default() }).await, vec![a.id]);
    assert!(
        ids(ListParams { workflow: Some(WorkflowId::generate(t0)), ..Default::default() }).await.is_empty()
    );
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn workflows_are_summarized_newest_first() {
    let Some(store) = fresh().await else { return };
    let t0 = Timestamp::from_millis(15_000_000);
    let s = |n: u64| t0 + Duration::from_secs(n);
    assert!(store.workflows(WorkflowQuery::default()).await.unwrap().is_empty());
    // w1 succeeded, w2 failed (its second step cancelled), w3 still running.
    let (w1, w2, w3) = (WorkflowId::generate(s(0)), WorkflowId::generate(s(1)), WorkflowId::generate(s(2)));
    let w1a = step(w1, "w1a", s(0), &[]);
    let w1b = step(w1, "w1b", s(0), &[&w1a]);
    let w2a = step(w2, "w2a", s(1), &[]);
    let w2b = step(w2, "w2b", s(1), &[&w2a]);
    let w3a = step(w3, "w3a", s(2), &[]);
    let w3b = step(w3, "w3b", s(2), &[&w3a]);
    let plain = insert("plain", s(3));
    store.enqueue(vec![w1a, w1b, w2a, w2b, w3a, w3b, plain]).await.unwrap();
    run_step(&store, "w1a", s(10), succeeded()).await;
    run_step(&store, "w1b", s(11), succeeded()).await;
    let failure = Failure::new(FailureKind::Error, "boom");
    run_step(&store, "w2a", s(12), Outcome::Failed { failure, follow_ups: Vec::new() }).await;

    let summary =
        |id, [blocked, pending, running, succeeded, failed, cancelled]: [u64; 6], created, updated| {
            WorkflowSummary {
                id,
                blocked,
                pending,
                running,
                succeeded,
                failed,
                cancelled,
                created_at: created,
                updated_at: updated,
            }
        };
    let s1 = summary(w1, [0, 0, 0, 2, 0, 0], s(0), s(11));
    let s2 = summary(w2, [0, 0, 0, 0, 1, 1], s(1), s(12));
    let s3 = summary(w3, [1, 1, 0, 0, 0, 0], s(2), s(2));
    let query = |state, before, limit| store.workflows(WorkflowQuery { state, before, limit });
    assert_eq!(query(None, None, 0).await.unwrap(), vec![s3.clone(), s2.clone(), s1.clone()]);
    assert_eq!(
        [s1.state(), s2.state(), s3.state()],
        [orch::WorkflowState::Succeeded, orch::WorkflowState::Failed, orch::WorkflowState::Running]
    );
    assert_eq!(query(Some(orch::WorkflowState::Running), None, 0).await.unwrap(), vec![s3.clone()]);
    assert_eq!(query(Some(orch::WorkflowState::Succeeded), None, 0).await.unwrap(), vec![s1.clone()]);
    assert_eq!(query(Some(orch::WorkflowState::Failed), None, 0).await.unwrap(), vec![s2.clone()]);
    // Keyset pages, newest first.
    assert_eq!(query(None, None, 2).await.unwrap(), vec![s3.clone(), s2.clone()]);
    assert_eq!(query(None, Some(w2), 2).await.unwrap(), vec![s1.clone()]);
    assert_eq!(query(Some(orch::WorkflowState::Failed), Some(w2), 0).await.unwrap(), vec![]);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn migration_5_upgrades_a_version_4_database() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, &fresh_prefix()).await;
    let t = &store.inner.tables;
    let t0 = Timestamp::from_millis(29_000_000);
    {
        // The schema as version 4 left it, and a first run of migration 5 that stopped
        // after one index.
        schema_at_version(&store, 4).await;
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!("ALTER TABLE {} ADD KEY commands_attempts (attempts, id)", t.commands))
            .await
            .unwrap();
    }
    let old = insert("job", t0);
    insert_old_row(&store, &old).await;
    let indexes = || async {
        let mut conn = store.conn().await.unwrap();
        let rows: Vec<IndexColumn> = diesel::sql_query(
            "SELECT CAST(index_name AS CHAR) AS `index`, CAST(column_name AS CHAR) AS `column` \
             FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? \
             AND index_name IN ('commands_scheduled', 'commands_attempts') ORDER BY index_name, seq_in_index",
        )
        .bind::<Text, _>(format!("{}commands", store.prefix()))
        .load(&mut conn)
        .await
        .unwrap();
        rows.into_iter().map(|r| format!("{}.{}", r.index, r.column)).collect::<Vec<_>>()
    };
    let expected = [
        "commands_attempts.attempts",
        "commands_attempts.id",
        "commands_scheduled.scheduled_at",
        "commands_scheduled.id",
    ]
    .map(String::from)
    .to_vec();

    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(indexes().await, expected);
    // Migration 5 again, as after a crash before its version was recorded.
    {
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!("DELETE FROM {} WHERE version = 5", t.migrations)).await.unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(indexes().await, expected);
    assert_eq!(state_of(&store, old.id).await, State::Pending);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn migration_6_upgrades_a_version_5_database() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, &fresh_prefix()).await;
    let t = &store.inner.tables;
    let t0 = Timestamp::from_millis(31_000_000);
    {
        // The schema as version 5 left it.
        schema_at_version(&store, 5).await;
    }
    let old = insert("job", t0);
    insert_old_row(&store, &old).await;
    let claim_indexes = || async {
        let mut conn = store.conn().await.unwrap();
        let rows: Vec<IndexColumn> = diesel::sql_query(
            "SELECT CAST(index_name AS CHAR) AS `index`, CAST(column_name AS CHAR) AS `column` \
             FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? \
             AND index_name IN ('commands_claim', 'commands_due') ORDER BY index_name, seq_in_index",
        )
        .bind::<Text, _>(format!("{}commands", store.prefix()))
        .load(&mut conn)
        .await
        .unwrap();
        rows.into_iter().map(|r| format!("{}.{}", r.index, r.column)).collect::<Vec<_>>().join(" ")
    };
    let expected = "commands_claim.state commands_claim.target commands_claim.name commands_claim.priority \
                    commands_claim.scheduled_at commands_claim.id commands_due.state commands_due.target \
                    commands_due.priority commands_due.scheduled_at commands_due.id commands_due.name";

    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(claim_indexes().await, expected);
    // Migration 6 again, as after a crash before its version was recorded: nothing to do.
    {
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!("DELETE FROM {} WHERE version = 6", t.migrations)).await.unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(claim_indexes().await, expected);
    // The old row has the default priority and is claimed behind a more urgent one.
    assert_eq!(store.get(old.id).await.unwrap().unwrap().priority, 0);
    let urgent = InsertCommand { priority: -1, ..insert("job", t0) };
    store.enqueue(vec![urgent.clone()]).await.unwrap();
    let claimed = store.claim(claim_params(&["job"], t0, "w", 1)).await.unwrap();
    assert_eq!(claimed[0].lease.id, urgent.id);
    let claimed = store.claim(claim_params(&["job", "other"], t0, "w", 1)).await.unwrap();
    assert_eq!(claimed[0].lease.id, old.id);
    drop_tables(&store).await;
}

#[tokio::test]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn migration_8_upgrades_a_version_7_database() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, &fresh_prefix()).await;
    let t = &store.inner.tables;
    let t0 = Timestamp::from_millis(31_000_000);
    schema_at_version(&store, 7).await;
    let old = insert("job", t0);
    insert_old_row(&store, &old).await;

    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    // Migration 8 again, as after a crash before its version was recorded: nothing to do.
    {
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!("DELETE FROM {} WHERE version = 8", t.migrations)).await.unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(versions(&store).await, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    // The old row has no key; keyed rows written after the upgrade deduplicate, and the
    // generated column frees a key when its holder leaves the unfinished states.
    assert_eq!(store.get(old.id).await.unwrap().unwrap().unique, None);
    let keyed = |now| InsertCommand {
        unique: Some(orch::UniqueKey { key: "k".into(), until: None }),
        ..insert("job", now)
    };
    let first = keyed(t0);
    assert_eq!(store.enqueue(vec![first.clone()]).await.unwrap(), vec![first.id]);
    assert_eq!(store.enqueue(vec![keyed(t0)]).await.unwrap(), vec![first.id]);
    {
        let mut conn = store.conn().await.unwrap();
        conn.batch_execute(&format!(
            "UPDATE {} SET state = 'cancelled' WHERE id = '{}'",
            t.commands, first.id
        ))
        .await
        .unwrap();
    }
    let second = keyed(t0);
    assert_eq!(store.enqueue(vec![second.clone()]).await.unwrap(), vec![second.id]);
    drop_tables(&store).await;
}
