//! Tests. Those that need a server read its URL from `ORCH_MYSQL_URL`
//! (e.g. `mysql://root@127.0.0.1:3306/test`) and skip, saying so, when it is unset.
//! Each uses fresh random table prefixes and drops its tables at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};
use orch::store::{
    CancelStatus, ClaimParams, Completion, CompletionStatus, HeartbeatParams, InsertCommand, JournalKind,
    Lease, LeaseStatus, ListParams, Outcome,
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
    conn.batch_execute(&format!("DROP TABLE IF EXISTS {}, {}, {}", t.commands, t.journal, t.migrations))
        .await
        .unwrap();
}

fn insert(name: &str, now: Timestamp) -> InsertCommand {
    NewCommand::raw(name, serde_json::json!({})).resolve(now).unwrap()
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
        "SELECT CAST(version AS CHAR) AS name FROM {}",
        stores[0].inner.tables.migrations
    ))
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(versions.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), vec!["1"]);
    let tables: Vec<TableName> = diesel::sql_query(
        "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE ? ORDER BY table_name",
    )
    .bind::<Text, _>(format!("{prefix}%"))
    .load(&mut conn)
    .await
    .unwrap();
    let expected: Vec<String> =
        ["commands", "journal", "migrations"].iter().map(|t| format!("{prefix}{t}")).collect();
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
            completion(parent_lease, t0, Outcome::Released { at: t0 }),
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
    let page =
        store.list(ListParams { after: Some(all[0].id), limit: 1, ..Default::default() }).await.unwrap();
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
             AND name IN ({names}) AND scheduled_at <= ? ORDER BY scheduled_at, id LIMIT 10 FOR UPDATE SKIP LOCKED",
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
                _ => s.enqueue((0..200).map(|_| insert("b", t0)).collect()).await,
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
