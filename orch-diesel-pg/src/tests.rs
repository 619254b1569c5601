//! Unit tests. Those that need a server read its URL from `ORCH_PG_URL` and skip (with
//! a printed reason) when it is not set; each uses a random table prefix and drops its
//! tables at the end.

use std::collections::HashSet;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use orch::store::backend::{NewJournalEntry, dependency_failure_message};
use orch::store::sql::{self, Placeholders};
use orch::store::{
    ClaimParams, Completion, CompletionStatus, HeartbeatParams, InsertCommand, LeaseStatus, ListCursor,
    ListOrder, ListParams, Outcome, SagaQuery, SagaRecord, SagaStatus, SagaWrite, SagaWriteStatus, StepOf,
    WorkflowId, WorkflowQuery,
};
use orch::workflow::WorkflowState;
use orch::{CancelStatus, Failure, FailureKind, JournalKind, NewCommand, QueueStats, RetryStatus, State};

use super::*;

fn server_url() -> Option<String> {
    match std::env::var("ORCH_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "ORCH_PG_URL is not set and CI=true: these tests must run"
            );
            eprintln!("skipped: ORCH_PG_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)");
            None
        }
    }
}

fn fresh_prefix() -> String {
    format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

async fn store_at(url: &str, prefix: &str) -> PgStore {
    let store = PgStore::builder(url).prefix(prefix).max_connections(4).connect().await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn row(name: &str, now: Timestamp) -> InsertCommand {
    NewCommand::raw(name, serde_json::json!({})).resolve(now).expect("valid command")
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

async fn kinds(store: &PgStore, id: CommandId) -> Vec<JournalKind> {
    store.journal(id).await.unwrap().into_iter().map(|e| e.kind).collect()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query(sql).load::<Count>(&mut conn).await.unwrap()[0].n
}

#[test]
fn table_names_are_lower_case() {
    let tables = Tables::new(&TablePrefix::new("Jobs_").unwrap());
    assert_eq!((tables.commands.as_str(), tables.channel.as_str()), ("jobs_commands", "jobs_wake"));
}

#[tokio::test]
async fn invalid_options_are_rejected_before_connecting() {
    // 192.0.2.1 (TEST-NET-1) never answers: a connection attempt would hang, not fail.
    let unreachable = "postgres://postgres@192.0.2.1:5432/test";
    let attempt = |builder: PgBuilder| async move {
        tokio::time::timeout(Duration::from_secs(2), builder.connect())
            .await
            .expect("rejected without trying to connect")
            .unwrap_err()
    };
    for bad in ["x; DROP TABLE y", "", "1abc", "naïve", &"p".repeat(64)] {
        let err = attempt(PgStore::builder(unreachable).prefix(bad)).await;
        assert!(matches!(&err, Error::InvalidPrefix { prefix, .. } if prefix == bad), "{bad:?}: {err}");
    }
    let err = attempt(PgStore::builder(unreachable).max_connections(0)).await;
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let err = attempt(PgStore::builder("mysql://root@192.0.2.1/test")).await;
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn unreachable_database_is_a_backend_error() {
    for listen in [true, false] {
        let err = PgStore::builder("postgres://orch:hunter2@127.0.0.1:1/test")
            .connect_timeout(Duration::from_secs(3))
            .listen(listen)
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Backend { backend: "postgres", .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("127.0.0.1:1"), "names the server: {message}");
        assert!(!message.contains("hunter2"), "no password in messages: {message}");
        assert!(message.contains("postgres://orch:***@127.0.0.1:1/test"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let store = store_at(&url, &prefix).await;
    store.migrate().await.unwrap();
    let versions = i64::try_from(migrations::MIGRATIONS.len()).unwrap();
    assert_eq!(count(&url, &format!("SELECT COUNT(*) AS n FROM {prefix}migrations")).await, versions);
    store.drop_tables().await.unwrap();

    // Four processes starting at once on an empty database.
    let prefix = fresh_prefix();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(PgStore::builder(&url).prefix(&prefix).listen(false).connect().await.unwrap());
    }
    let tasks: Vec<_> =
        stores.iter().cloned().map(|s| tokio::spawn(async move { s.migrate().await })).collect();
    for task in tasks {
        task.await.unwrap().expect("every concurrent migrate succeeds");
    }
    assert_eq!(count(&url, &format!("SELECT COUNT(*) AS n FROM {prefix}migrations")).await, versions);
    let now = Timestamp::from_millis(1_000);
    stores[0].enqueue(vec![row("job", now)]).await.unwrap();
    assert_eq!(stores[3].list(ListParams::default()).await.unwrap().len(), 1);

    // A schema from the future is refused.
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    diesel::sql_query(format!("INSERT INTO {prefix}migrations (version, applied_at) VALUES (999, 0)"))
        .execute(&mut conn)
        .await
        .unwrap();
    let err = stores[0].migrate().await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    stores[0].drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn lifecycle_matches_the_contract() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(1_000_000);

    // Claim order is (scheduled_at, id), whatever the insert order.
    let late = NewCommand::raw("job", serde_json::json!({"n": 1}))
        .delay(Duration::from_secs(1))
        .resolve(t0)
        .unwrap();
    let early = row("job", t0);
    let other = row("other", t0);
    store.enqueue(vec![late.clone(), early.clone(), other.clone()]).await.unwrap();
    assert!(store.claim(claim_params(&[], t0, "w", 10)).await.unwrap().is_empty());
    assert!(store.claim(claim_params(&["job"], t0, "w", 0)).await.unwrap().is_empty());
    let t1 = t0 + Duration::from_secs(1);
    let claimed = store.claim(claim_params(&["job"], t1, "w", 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.lease.id).collect::<Vec<_>>(), vec![early.id, late.id]);
    assert_eq!(claimed[0].lease.token, claimed[1].lease.token, "one token per claim call");
    assert_eq!(claimed[0].attempt, 1);
    assert_eq!(claimed[0].lease_expires_at, t1 + Duration::from_secs(6));
    let r = store.get(early.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.worker.as_deref(), r.started_at), (State::Running, Some("w"), Some(t1)));

    // Heartbeats: held ones renewed, a stale one lost and journaled.
    let stale = orch::store::Lease { id: other.id, token: claimed[0].lease.token };
    assert_eq!(store.cancel(late.id, t1).await.unwrap(), CancelStatus::Requested);
    let beat = store
        .heartbeat(HeartbeatParams {
            leases: vec![claimed[1].lease, stale, claimed[0].lease],
            now: t1,
            lease_buffer: Duration::from_secs(60),
        })
        .await
        .unwrap();
    assert_eq!(
        beat,
        vec![
            LeaseStatus::Held { cancel_requested: true },
            LeaseStatus::Lost,
            LeaseStatus::Held { cancel_requested: false }
        ]
    );
    assert_eq!(
        store.get(early.id).await.unwrap().unwrap().lease_expires_at,
        Some(t1 + Duration::from_secs(65))
    );
    assert_eq!(kinds(&store, other.id).await, vec![JournalKind::Enqueued, JournalKind::LeaseLost]);

    // A batch: success with a follow-up, a cancellation, and a stale lease.
    let follow = row("follow", t1);
    let statuses = store
        .complete(vec![
            Completion {
                lease: claimed[0].lease,
                now: t1,
                worker: "w".into(),
                outcome: Outcome::Succeeded { output: "7".into(), follow_ups: vec![follow.clone()] },
            },
            Completion {
                lease: claimed[1].lease,
                now: t1,
                worker: "w".into(),
                outcome: Outcome::Cancelled { follow_ups: vec![] },
            },
            Completion {
                lease: stale,
                now: t1,
                worker: "w".into(),
                outcome: Outcome::Released { at: t1, started: true },
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        statuses,
        vec![CompletionStatus::Applied, CompletionStatus::Applied, CompletionStatus::LeaseLost]
    );
    let done = store.get(early.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.output.as_deref(), done.lease_token), (State::Succeeded, Some("7"), None));
    assert_eq!(store.get(follow.id).await.unwrap().unwrap().parent_id, None);
    let entries = store.journal(follow.id).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].message, NewJournalEntry::enqueued(&follow).message);
    assert_eq!(store.get(late.id).await.unwrap().unwrap().state, State::Cancelled);
    assert_eq!(
        kinds(&store, early.id).await,
        vec![JournalKind::Enqueued, JournalKind::Claimed, JournalKind::Succeeded]
    );
    let journal = store.journal(early.id).await.unwrap();
    assert_eq!(journal[2].message.as_deref(), Some("follow-ups: follow"));
    assert!(journal.windows(2).all(|w| w[0].seq < w[1].seq));

    // Retry, rescue (attempts left → pending; none left → failed with follow-ups due).
    let flaky = NewCommand::raw("flaky", serde_json::json!({})).retries(1).resolve(t1).unwrap();
    store.enqueue(vec![flaky.clone()]).await.unwrap();
    let first = store.claim(claim_params(&["flaky"], t1, "w1", 1)).await.unwrap().remove(0);
    let t2 = t1 + Duration::from_secs(10);
    let rescued = store.rescue(t2, 10).await.unwrap();
    assert_eq!(rescued, vec![Rescued { id: flaky.id, state: State::Pending }]);
    let r = store.get(flaky.id).await.unwrap().unwrap();
    assert_eq!(r.error, Some(Failure::new(FailureKind::LeaseExpired, "lease of worker w1 expired")));
    assert_eq!((r.scheduled_at, r.follow_ups_due, r.lease_token), (t2, false, None));
    let second = store.claim(claim_params(&["flaky"], t2, "w2", 1)).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    let lost = store
        .complete(vec![Completion {
            lease: first.lease,
            now: t2,
            worker: "w1".into(),
            outcome: Outcome::Retry { failure: Failure::new(FailureKind::Error, "x"), retry_at: t2 },
        }])
        .await
        .unwrap();
    assert_eq!(lost, vec![CompletionStatus::LeaseLost]);
    let t3 = t2 + Duration::from_secs(10);
    assert_eq!(store.rescue(t3, 10).await.unwrap(), vec![Rescued { id: flaky.id, state: State::Failed }]);
    let r = store.get(flaky.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.finished_at, r.follow_ups_due), (State::Failed, Some(t3), true));
    let journal = store.journal(flaky.id).await.unwrap();
    let rescued_entry = journal.iter().find(|e| e.kind == JournalKind::Rescued).unwrap();
    assert_eq!(rescued_entry.message.as_deref(), Some("lease of worker w1 expired; now pending"));
    assert_eq!(rescued_entry.worker.as_deref(), Some("w1"));

    // Follow-ups of commands finished outside a worker.
    let due = store.follow_ups_due(&["flaky".into(), "job".into()], 10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), vec![flaky.id]);
    let alert = row("alert", t3);
    assert!(store.resolve_follow_ups(flaky.id, vec![alert.clone()], t3).await.unwrap());
    assert!(!store.resolve_follow_ups(flaky.id, vec![row("alert", t3)], t3).await.unwrap());
    assert!(store.follow_ups_due(&["flaky".into()], 10).await.unwrap().is_empty());
    assert_eq!(store.get(alert.id).await.unwrap().unwrap().state, State::Pending);
    assert_eq!(kinds(&store, flaky.id).await.last(), Some(&JournalKind::FollowUpsEnqueued));

    // Cancel statuses.
    assert_eq!(store.cancel(alert.id, t3).await.unwrap(), CancelStatus::Cancelled);
    assert!(store.get(alert.id).await.unwrap().unwrap().follow_ups_due);
    assert_eq!(store.cancel(alert.id, t3).await.unwrap(), CancelStatus::AlreadyFinished(State::Cancelled));
    assert_eq!(store.cancel(CommandId::generate(t3), t3).await.unwrap(), CancelStatus::NotFound);

    // Listing, pagination and counts.
    let all = store.list(ListParams::default()).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let page = store
        .list(ListParams { after: Some(ListCursor::id(all[1].id)), limit: 2, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), vec![all[2].id, all[3].id]);
    let jobs = store
        .list(ListParams { name: Some("job".into()), state: Some(State::Succeeded), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(jobs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![early.id]);
    let by_correlation = store
        .list(ListParams { correlation_id: Some(flaky.correlation_id.clone()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(by_correlation.len(), 1);
    let counts = store.counts().await.unwrap();
    let summary: Vec<(&str, State, u64)> =
        counts.iter().map(|c| (c.name.as_str(), c.state, c.count)).collect();
    assert_eq!(
        summary,
        vec![
            ("alert", State::Cancelled, 1),
            ("flaky", State::Failed, 1),
            ("follow", State::Pending, 1),
            ("job", State::Cancelled, 1),
            ("job", State::Succeeded, 1),
            ("other", State::Pending, 1),
        ]
    );
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn a_failing_follow_up_fails_the_whole_batch() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(5_000_000);
    let (a, b, existing) = (row("a", t0), row("a", t0), row("other", t0));
    store.enqueue(vec![a.clone(), b.clone(), existing.clone()]).await.unwrap();
    let claimed = store.claim(claim_params(&["a"], t0, "w", 2)).await.unwrap();
    let mut clash = row("child", t0);
    clash.id = existing.id;
    let good = row("child", t0);
    let completions = vec![
        Completion {
            lease: claimed[0].lease,
            now: t0,
            worker: "w".into(),
            outcome: Outcome::Succeeded { output: "1".into(), follow_ups: vec![good.clone()] },
        },
        Completion {
            lease: claimed[1].lease,
            now: t0,
            worker: "w".into(),
            outcome: Outcome::Succeeded { output: "2".into(), follow_ups: vec![clash] },
        },
    ];
    assert!(matches!(store.complete(completions).await, Err(Error::Backend { backend: "postgres", .. })));
    for c in &claimed {
        let r = store.get(c.lease.id).await.unwrap().unwrap();
        assert_eq!((r.state, r.lease_token), (State::Running, Some(c.lease.token)));
    }
    assert!(store.get(good.id).await.unwrap().is_none());
    // The connection went back to the pool in a usable state.
    assert_eq!(store.list(ListParams::default()).await.unwrap().len(), 3);
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn concurrent_claims_never_share_a_command() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(1_000);
    // More rows than one INSERT chunk (commands) and one journal chunk.
    let rows: Vec<InsertCommand> = (0..6_000).map(|_| row("job", t0)).collect();
    store.enqueue(rows).await.unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim(claim_params(&["job"], t0, &format!("w{i}"), 50)).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|c| c.lease.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for task in tasks {
        for id in task.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "{id} claimed twice");
        }
    }
    assert_eq!(total, 6_000);
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].state, counts[0].count), (State::Running, 6_000));
    store.drop_tables().await.unwrap();
}

#[derive(Debug)]
#[allow(dead_code, reason = "the payloads are read through Debug in failure messages")]
enum TestTxError {
    Db(diesel::result::Error),
    Orch(Error),
    RolledBack(CommandId),
}

impl From<diesel::result::Error> for TestTxError {
    fn from(e: diesel::result::Error) -> Self {
        TestTxError::Db(e)
    }
}

impl From<Error> for TestTxError {
    fn from(e: Error) -> Self {
        TestTxError::Orch(e)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn push_in_follows_the_callers_transaction() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let store = store_at(&url, &prefix).await;
    let now = Timestamp::from_millis(2_000);
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let store_ref = &store;

    let rolled_back = conn
        .transaction::<(), TestTxError, _>(async |conn| {
            let ids =
                store_ref.push_in(conn, now, vec![NewCommand::raw("job", serde_json::json!({}))]).await?;
            assert!(store_ref.get(ids[0]).await?.is_none(), "not visible before commit");
            Err(TestTxError::RolledBack(ids[0]))
        })
        .await;
    let Err(TestTxError::RolledBack(rolled_back)) = rolled_back else { panic!("{rolled_back:?}") };
    assert!(store.get(rolled_back).await.unwrap().is_none());
    assert!(store.journal(rolled_back).await.unwrap().is_empty());

    // A failed push inside the transaction leaves it usable (the push had a savepoint).
    let taken = CommandId::generate(now);
    let committed = conn
        .transaction::<Vec<CommandId>, TestTxError, _>(async |conn| {
            let ids = store_ref
                .push_in(conn, now, vec![NewCommand::raw("job", serde_json::json!({"n": 1})).id(taken)])
                .await?;
            let clash = NewCommand::raw("job", serde_json::json!({})).id(taken);
            assert!(store_ref.push_in(conn, now, vec![clash]).await.is_err());
            let more =
                store_ref.push_in(conn, now, vec![NewCommand::raw("job", serde_json::json!({}))]).await?;
            Ok(ids.into_iter().chain(more).collect())
        })
        .await
        .unwrap();
    for id in &committed {
        assert_eq!(store.get(*id).await.unwrap().unwrap().state, State::Pending);
        assert_eq!(kinds(&store, *id).await, vec![JournalKind::Enqueued]);
    }

    // Outside any transaction it commits on its own.
    let alone =
        store.push_in(&mut conn, now, vec![NewCommand::raw("job", serde_json::json!({}))]).await.unwrap();
    assert!(store.get(alone[0]).await.unwrap().is_some());
    assert!(store.push_in(&mut conn, now, vec![]).await.unwrap().is_empty());
    store.drop_tables().await.unwrap();
}

/// Waits for `signal` to fire within `within`, after `trigger` runs.
async fn fires<F: std::future::Future>(signal: &Notify, within: Duration, trigger: F) -> bool {
    let mut notified = pin!(signal.notified());
    notified.as_mut().enable();
    trigger.await;
    tokio::time::timeout(within, notified).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn pushes_from_another_store_wake_this_one() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let listening = store_at(&url, &prefix).await;
    let other = PgStore::builder(&url).prefix(&prefix).listen(false).connect().await.unwrap();
    let signal = listening.wake_signal().expect("a wake signal");
    let now = Timestamp::from_millis(3_000);

    // Another store (another pool, as another process would be) pushes.
    assert!(fires(&signal, Duration::from_secs(2), other.enqueue(vec![row("job", now)])).await);
    // Its follow-ups wake it too.
    let claimed = other.claim(claim_params(&["job"], now, "w", 1)).await.unwrap().remove(0);
    let completion = Completion {
        lease: claimed.lease,
        now,
        worker: "w".into(),
        outcome: Outcome::Succeeded { output: "null".into(), follow_ups: vec![row("next", now)] },
    };
    assert!(fires(&signal, Duration::from_secs(2), other.complete(vec![completion])).await);
    // A transactional push wakes it when the caller commits.
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let push = async {
        conn.transaction::<_, TestTxError, _>(async |conn| {
            other.push_in(conn, now, vec![NewCommand::raw("job", serde_json::json!({}))]).await?;
            Ok(())
        })
        .await
        .unwrap()
    };
    assert!(fires(&signal, Duration::from_secs(2), push).await);

    // Without LISTEN, a store still wakes for its own pushes.
    let local = other.wake_signal().expect("a local wake signal");
    assert!(fires(&local, Duration::from_secs(2), other.enqueue(vec![row("job", now)])).await);
    listening.drop_tables().await.unwrap();
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

async fn listener_pids(url: &str, channel: &str) -> Vec<i32> {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query(format!(
        "SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN \"{channel}\"' AND pid <> pg_backend_pid()"
    ))
    .load::<Pid>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|p| p.pid)
    .collect()
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn listener_reconnects_and_stops_with_the_store() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let store = store_at(&url, &prefix).await;
    let channel = format!("{prefix}wake");
    let signal = store.wake_signal().unwrap();
    let pids = listener_pids(&url, &channel).await;
    assert_eq!(pids.len(), 1, "one listening connection");

    // The server drops the listener: it reconnects and fires (a wake-up may be lost).
    let terminate = async {
        let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
        diesel::sql_query("SELECT pg_terminate_backend($1)")
            .bind::<Integer, _>(pids[0])
            .execute(&mut conn)
            .await
            .unwrap();
    };
    assert!(fires(&signal, Duration::from_secs(10), terminate).await, "fired after reconnecting");
    let other = PgStore::builder(&url).prefix(&prefix).listen(false).connect().await.unwrap();
    let now = Timestamp::from_millis(4_000);
    assert!(fires(&signal, Duration::from_secs(2), other.enqueue(vec![row("job", now)])).await);

    // Clones share the listener; it goes when the last one does.
    let clone = store.clone();
    drop(store);
    assert_eq!(listener_pids(&url, &channel).await.len(), 1);
    drop(clone);
    wait_for("the listener to disconnect", || async { listener_pids(&url, &channel).await.is_empty() }).await;
    other.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn store_debug_shows_no_password() {
    let Some(url) = server_url() else { return };
    let store = PgStore::builder(&url).listen(false).connect().await.unwrap();
    let debug = format!("{store:?}");
    assert!(debug.contains("PgStore") && debug.contains("orch_"), "{debug}");
    assert_eq!(store.backend(), "postgres");
    assert_eq!(store.prefix().as_str(), "orch_");
}

// ---------------------------------------------------------------------------
// Workflows: dependency edges, unblocking, cascades.

/// Rows of one workflow, each step a command named after it: `(step, dependencies)`.
/// Ids increase in the order given.
fn workflow_rows(now: Timestamp, steps: &[(&str, &[&str])]) -> (WorkflowId, Vec<InsertCommand>) {
    let workflow_id = WorkflowId::generate(now);
    let ids: Vec<CommandId> = (0..steps.len())
        .map(|i| CommandId::generate(Timestamp::from_millis(now.as_millis() + i as i64)))
        .collect();
    let id_of = |name: &str| ids[steps.iter().position(|(n, _)| *n == name).expect("a known step")];
    let rows = steps
        .iter()
        .zip(&ids)
        .map(|((name, deps), id)| {
            let mut r = row(name, now);
            r.id = *id;
            r.correlation_id = workflow_id.to_string();
            r.workflow = Some(StepOf { workflow_id, step: (*name).to_owned() });
            r.depends_on = deps.iter().map(|d| id_of(d)).collect();
            r
        })
        .collect();
    (workflow_id, rows)
}

fn id_of(rows: &[InsertCommand], step: &str) -> CommandId {
    rows.iter().find(|r| r.workflow.as_ref().is_some_and(|w| w.step == step)).expect("a known step").id
}

async fn state_of(store: &PgStore, id: CommandId) -> State {
    store.get(id).await.unwrap().expect("stored").state
}

async fn claim_one(store: &PgStore, name: &str, now: Timestamp) -> orch::store::ClaimedCommand {
    let mut claimed = store.claim(claim_params(&[name], now, "w", 1)).await.unwrap();
    assert_eq!(claimed.len(), 1, "{name} is claimable");
    claimed.remove(0)
}

fn completion(claimed: &orch::store::ClaimedCommand, now: Timestamp, outcome: Outcome) -> Completion {
    Completion { lease: claimed.lease, now, worker: "w".into(), outcome }
}

fn success(claimed: &orch::store::ClaimedCommand, now: Timestamp) -> Completion {
    completion(claimed, now, Outcome::Succeeded { output: "null".into(), follow_ups: vec![] })
}

fn failure(claimed: &orch::store::ClaimedCommand, now: Timestamp) -> Completion {
    let failure = Failure::new(FailureKind::Error, "broken");
    completion(claimed, now, Outcome::Failed { failure, follow_ups: vec![] })
}

/// Asserts that `id` was cancelled at `at` because `origin` ended `state`.
async fn assert_cancelled_by(store: &PgStore, id: CommandId, origin: CommandId, state: State, at: Timestamp) {
    let r = store.get(id).await.unwrap().unwrap();
    let message = dependency_failure_message(origin, state);
    assert_eq!(r.state, State::Cancelled, "{id}");
    assert_eq!(r.error, Some(Failure::new(FailureKind::Cancelled, message.clone())), "{id}");
    assert_eq!((r.finished_at, r.updated_at, r.follow_ups_due, r.attempts), (Some(at), at, true, 0), "{id}");
    let journal = store.journal(id).await.unwrap();
    let kinds: Vec<JournalKind> = journal.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![JournalKind::Enqueued, JournalKind::Cancelled], "{id}");
    assert_eq!(journal[1].message.as_deref(), Some(message.as_str()));
    assert_eq!(journal[1].at, at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn diamond_unblocks_when_every_dependency_succeeded() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let listening = store_at(&url, &prefix).await;
    // Another pool, as another process: its unblocking reaches the listener by NOTIFY.
    let store = PgStore::builder(&url).prefix(&prefix).listen(false).connect().await.unwrap();
    let signal = listening.wake_signal().unwrap();
    let t0 = Timestamp::from_millis(10_000_000);
    // Inserted dependents first: the store does not rely on the order of a batch.
    let (workflow_id, rows) =
        workflow_rows(t0, &[("d", &["b", "c"]), ("b", &["a"]), ("c", &["a"]), ("a", &[])]);
    let (a, b, c, d) = (id_of(&rows, "a"), id_of(&rows, "b"), id_of(&rows, "c"), id_of(&rows, "d"));
    store.enqueue(rows.clone()).await.unwrap();
    assert_eq!(state_of(&store, a).await, State::Pending);
    for id in [b, c, d] {
        assert_eq!(state_of(&store, id).await, State::Blocked);
    }
    assert!(store.claim(claim_params(&["b", "c", "d"], t0, "w", 10)).await.unwrap().is_empty());

    // The steps with their edges, by command id, dependencies in the order listed.
    let steps = store.workflow_steps(workflow_id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.command.id).collect::<Vec<_>>(), vec![d, b, c, a]);
    let edges: Vec<(&str, Vec<CommandId>)> = steps
        .iter()
        .map(|s| (s.command.workflow.as_ref().unwrap().step.as_str(), s.depends_on.clone()))
        .collect();
    assert_eq!(edges, vec![("d", vec![b, c]), ("b", vec![a]), ("c", vec![a]), ("a", vec![])]);
    assert!(steps.iter().all(|s| s.command.workflow.as_ref().unwrap().workflow_id == workflow_id));
    assert!(store.workflow_steps(WorkflowId::generate(t0)).await.unwrap().is_empty());
    assert_eq!(store.get(a).await.unwrap().unwrap().workflow, rows[3].workflow);

    // A succeeds: B and C unblocked (due when they were), and the listener woken.
    let claimed_a = claim_one(&store, "a", t0).await;
    assert_eq!(claimed_a.workflow, Some(StepOf { workflow_id, step: "a".into() }));
    let t1 = t0 + Duration::from_secs(1);
    assert!(fires(&signal, Duration::from_secs(2), store.complete(vec![success(&claimed_a, t1)])).await);
    for id in [b, c] {
        let r = store.get(id).await.unwrap().unwrap();
        assert_eq!((r.state, r.updated_at, r.scheduled_at), (State::Pending, t1, t0));
        let journal = store.journal(id).await.unwrap();
        assert_eq!(
            journal.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [JournalKind::Enqueued, JournalKind::Unblocked]
        );
        assert_eq!(
            journal[1],
            orch::JournalEntry { seq: journal[1].seq, ..entry(NewJournalEntry::unblocked(id, t1)) }
        );
    }
    assert_eq!(state_of(&store, d).await, State::Blocked);

    // B alone leaves D blocked; C then unblocks it.
    let claimed_b = claim_one(&store, "b", t1).await;
    store.complete(vec![success(&claimed_b, t1)]).await.unwrap();
    assert_eq!(state_of(&store, d).await, State::Blocked);
    assert_eq!(kinds(&store, d).await, vec![JournalKind::Enqueued]);
    let claimed_c = claim_one(&store, "c", t1).await;
    let t2 = t1 + Duration::from_secs(1);
    store.complete(vec![success(&claimed_c, t2)]).await.unwrap();
    assert_eq!(state_of(&store, d).await, State::Pending);
    assert_eq!(kinds(&store, d).await, vec![JournalKind::Enqueued, JournalKind::Unblocked]);
    let claimed_d = claim_one(&store, "d", t2).await;
    assert_eq!(claimed_d.lease.id, d);
    assert_eq!(claimed_d.workflow.as_ref().map(|w| w.step.as_str()), Some("d"));
    listening.drop_tables().await.unwrap();
}

/// A journal entry as read back, from the entry written.
fn entry(e: NewJournalEntry) -> orch::JournalEntry {
    orch::JournalEntry {
        seq: 0,
        command_id: e.command_id,
        at: e.at,
        kind: e.kind,
        attempt: e.attempt,
        worker: e.worker,
        message: e.message,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn failures_and_cancels_cascade_to_dependents() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(20_000_000);
    let t1 = t0 + Duration::from_secs(1);

    // A fails for good: B and C (through B) are cancelled in A's name; the
    // independent step still runs.
    let (_, mut rows) = workflow_rows(t0, &[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("other", &[])]);
    rows[0].max_attempts = 1;
    let (a, b, c, other) = (rows[0].id, rows[1].id, rows[2].id, rows[3].id);
    store.enqueue(rows).await.unwrap();
    let claimed = claim_one(&store, "a", t0).await;
    assert_eq!(store.complete(vec![failure(&claimed, t1)]).await.unwrap(), vec![CompletionStatus::Applied]);
    assert_eq!(state_of(&store, a).await, State::Failed);
    assert_cancelled_by(&store, b, a, State::Failed, t1).await;
    assert_cancelled_by(&store, c, a, State::Failed, t1).await;
    assert_eq!(state_of(&store, other).await, State::Pending);
    assert_eq!(store.cancel(c, t1).await.unwrap(), CancelStatus::AlreadyFinished(State::Cancelled));

    // cancel() of a pending step cascades.
    let (_, rows) = workflow_rows(t0, &[("a2", &[]), ("b2", &["a2"]), ("c2", &["b2"])]);
    let (a2, b2, c2) = (rows[0].id, rows[1].id, rows[2].id);
    store.enqueue(rows).await.unwrap();
    assert_eq!(store.cancel(a2, t1).await.unwrap(), CancelStatus::Cancelled);
    assert!(store.get(a2).await.unwrap().unwrap().follow_ups_due);
    assert_cancelled_by(&store, b2, a2, State::Cancelled, t1).await;
    assert_cancelled_by(&store, c2, a2, State::Cancelled, t1).await;

    // cancel() of a blocked step cascades to what follows it, not to what it follows.
    let (_, rows) = workflow_rows(t0, &[("a3", &[]), ("b3", &["a3"]), ("c3", &["b3"])]);
    let (a3, b3, c3) = (rows[0].id, rows[1].id, rows[2].id);
    store.enqueue(rows).await.unwrap();
    assert_eq!(store.cancel(b3, t1).await.unwrap(), CancelStatus::Cancelled);
    assert_eq!(kinds(&store, b3).await, vec![JournalKind::Enqueued, JournalKind::Cancelled]);
    assert_cancelled_by(&store, c3, b3, State::Cancelled, t1).await;
    assert_eq!(state_of(&store, a3).await, State::Pending);

    // A running step cancelled on request cascades; so does one a rescue fails.
    let (_, mut rows) = workflow_rows(t0, &[("a4", &[]), ("b4", &["a4"]), ("a5", &[]), ("b5", &["a5"])]);
    rows[2].max_attempts = 1;
    let (a4, b4, a5, b5) = (rows[0].id, rows[1].id, rows[2].id, rows[3].id);
    store.enqueue(rows).await.unwrap();
    let claimed = claim_one(&store, "a4", t0).await;
    let cancelled = completion(&claimed, t1, Outcome::Cancelled { follow_ups: vec![] });
    store.complete(vec![cancelled]).await.unwrap();
    assert_cancelled_by(&store, b4, a4, State::Cancelled, t1).await;
    claim_one(&store, "a5", t0).await;
    let t9 = t0 + Duration::from_secs(60);
    assert_eq!(store.rescue(t9, 10).await.unwrap(), vec![Rescued { id: a5, state: State::Failed }]);
    assert_cancelled_by(&store, b5, a5, State::Failed, t9).await;

    // A dependent of two: one fails, so it is cancelled; the other's success later
    // leaves it cancelled.
    let (_, rows) = workflow_rows(t0, &[("p", &[]), ("q", &[]), ("r", &["p", "q"])]);
    let (p, r) = (rows[0].id, rows[2].id);
    store.enqueue(rows).await.unwrap();
    let (claimed_p, claimed_q) = (claim_one(&store, "p", t0).await, claim_one(&store, "q", t0).await);
    store.complete(vec![failure(&claimed_p, t1)]).await.unwrap();
    assert_cancelled_by(&store, r, p, State::Failed, t1).await;
    store.complete(vec![success(&claimed_q, t1)]).await.unwrap();
    assert_cancelled_by(&store, r, p, State::Failed, t1).await;

    // One batch with both: the cascade wins over the unblocking.
    let (_, rows) = workflow_rows(t0, &[("s", &[]), ("u", &[]), ("v", &["s", "u"]), ("w2", &["s"])]);
    let (s, u, v, w2) = (rows[0].id, rows[1].id, rows[2].id, rows[3].id);
    store.enqueue(rows).await.unwrap();
    let (claimed_s, claimed_u) = (claim_one(&store, "s", t0).await, claim_one(&store, "u", t0).await);
    store.complete(vec![success(&claimed_s, t1), failure(&claimed_u, t1)]).await.unwrap();
    assert_cancelled_by(&store, v, u, State::Failed, t1).await;
    assert_eq!(state_of(&store, w2).await, State::Pending);
    assert_eq!(state_of(&store, s).await, State::Succeeded);
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn a_requested_cancel_survives_a_retry_or_a_release() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(25_000_000);
    let (t1, t2, t9) =
        (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2), t0 + Duration::from_secs(60));
    let (_, rows) = workflow_rows(
        t0,
        &[("r", &[]), ("rd", &["r"]), ("l", &[]), ("ld", &["l"]), ("plain", &[]), ("pd", &["plain"])],
    );
    let (r, rd, l, ld, plain, pd) = (rows[0].id, rows[1].id, rows[2].id, rows[3].id, rows[4].id, rows[5].id);
    store.enqueue(rows).await.unwrap();
    let cancelled_entry = |id: CommandId| {
        entry(NewJournalEntry {
            command_id: id,
            at: t2,
            kind: JournalKind::Cancelled,
            attempt: 1,
            worker: Some("w".into()),
            message: Some("cancel requested; not retried".to_owned()),
        })
    };

    // A retry of a command whose cancellation was requested cancels it instead, keeps
    // the failure, and cascades to its dependents.
    let claimed = claim_one(&store, "r", t0).await;
    assert_eq!(store.cancel(r, t1).await.unwrap(), CancelStatus::Requested);
    let retry = Outcome::Retry { failure: Failure::new(FailureKind::Error, "broken"), retry_at: t9 };
    assert_eq!(
        store.complete(vec![completion(&claimed, t2, retry)]).await.unwrap(),
        vec![CompletionStatus::Applied]
    );
    let rec = store.get(r).await.unwrap().unwrap();
    assert_eq!(rec.state, State::Cancelled);
    assert_eq!((rec.finished_at, rec.updated_at, rec.scheduled_at), (Some(t2), t2, t0));
    assert_eq!((rec.follow_ups_due, rec.lease_token, rec.lease_expires_at), (true, None, None));
    assert_eq!(rec.error, Some(Failure::new(FailureKind::Error, "broken")));
    let journal = store.journal(r).await.unwrap();
    let kinds_r: Vec<JournalKind> = journal.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds_r,
        vec![
            JournalKind::Enqueued,
            JournalKind::Claimed,
            JournalKind::CancelRequested,
            JournalKind::Failed,
            JournalKind::Cancelled
        ]
    );
    let last = journal.last().unwrap();
    assert_eq!(*last, orch::JournalEntry { seq: last.seq, ..cancelled_entry(r) });
    assert_cancelled_by(&store, rd, r, State::Cancelled, t2).await;
    assert!(store.claim(claim_params(&["r", "rd"], t9, "w", 10)).await.unwrap().is_empty());

    // A release likewise.
    let claimed = claim_one(&store, "l", t0).await;
    assert_eq!(store.cancel(l, t1).await.unwrap(), CancelStatus::Requested);
    let released = completion(&claimed, t2, Outcome::Released { at: t9, started: true });
    assert_eq!(store.complete(vec![released]).await.unwrap(), vec![CompletionStatus::Applied]);
    let rec = store.get(l).await.unwrap().unwrap();
    assert_eq!(rec.state, State::Cancelled);
    assert_eq!(
        (rec.finished_at, rec.scheduled_at, rec.follow_ups_due, rec.error),
        (Some(t2), t0, true, None)
    );
    let journal = store.journal(l).await.unwrap();
    assert_eq!(
        journal.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![
            JournalKind::Enqueued,
            JournalKind::Claimed,
            JournalKind::CancelRequested,
            JournalKind::Cancelled
        ]
    );
    let last = journal.last().unwrap();
    assert_eq!(*last, orch::JournalEntry { seq: last.seq, ..cancelled_entry(l) });
    assert_cancelled_by(&store, ld, l, State::Cancelled, t2).await;
    let due = store.follow_ups_due(&["r".into(), "l".into()], 10).await.unwrap();
    assert_eq!(due.iter().map(|c| c.id).collect::<Vec<_>>(), vec![r, l]);

    // Without a cancel request, a retry still goes back to pending.
    let claimed = claim_one(&store, "plain", t0).await;
    let retry = Outcome::Retry { failure: Failure::new(FailureKind::Error, "broken"), retry_at: t9 };
    assert_eq!(
        store.complete(vec![completion(&claimed, t2, retry)]).await.unwrap(),
        vec![CompletionStatus::Applied]
    );
    let rec = store.get(plain).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.scheduled_at, rec.finished_at, rec.follow_ups_due),
        (State::Pending, t9, None, false)
    );
    assert_eq!(rec.error, Some(Failure::new(FailureKind::Error, "broken")));
    assert_eq!(
        kinds(&store, plain).await,
        vec![JournalKind::Enqueued, JournalKind::Claimed, JournalKind::Failed, JournalKind::RetryScheduled]
    );
    assert_eq!(state_of(&store, pd).await, State::Blocked);
    assert_eq!(claim_one(&store, "plain", t9).await.attempt, 2);
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn dependencies_finishing_at_once_never_miss_each_other() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(30_000_000);
    for i in 0..20 {
        // B and C succeed in two transactions racing each other: D is unblocked once.
        let (_, rows) = workflow_rows(t0, &[("b", &[]), ("c", &[]), ("d", &["b", "c"])]);
        let d = rows[2].id;
        store.enqueue(rows).await.unwrap();
        let claimed = store.claim(claim_params(&["b", "c"], t0, "w", 2)).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = claimed
            .iter()
            .map(|c| {
                let (store, barrier, done) = (store.clone(), Arc::clone(&barrier), success(c, t0));
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.complete(vec![done]).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), vec![CompletionStatus::Applied]);
        }
        assert_eq!(state_of(&store, d).await, State::Pending, "iteration {i}");
        assert_eq!(kinds(&store, d).await, vec![JournalKind::Enqueued, JournalKind::Unblocked]);
        assert_eq!(claim_one(&store, "d", t0).await.lease.id, d);

        // One fails while the other succeeds: D is cancelled, whichever commits first.
        let (_, rows) = workflow_rows(t0, &[("b", &[]), ("c", &[]), ("d", &["b", "c"])]);
        let (b, d) = (rows[0].id, rows[2].id);
        store.enqueue(rows).await.unwrap();
        let claimed = store.claim(claim_params(&["b", "c"], t0, "w", 2)).await.unwrap();
        let tasks: Vec<_> = claimed
            .iter()
            .map(|c| {
                let done = if c.lease.id == b { failure(c, t0) } else { success(c, t0) };
                let (store, barrier) = (store.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.complete(vec![done]).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), vec![CompletionStatus::Applied]);
        }
        assert_cancelled_by(&store, d, b, State::Failed, t0).await;

        // A cascade and a cancel() of a blocked step in between, at once: X depends on
        // A and on Y, Y on A, and X sorts before Y, so locking X then Y (the cascade)
        // against Y then X (a cancel locking Y alone first) would deadlock.
        let (_, mut rows) = workflow_rows(t0, &[("a", &[]), ("x", &["a", "y"]), ("y", &["a"])]);
        rows[0].max_attempts = 1;
        let (x, y) = (rows[1].id, rows[2].id);
        assert!(x < y);
        store.enqueue(rows).await.unwrap();
        let claimed_a = claim_one(&store, "a", t0).await;
        let failing = {
            let (store, barrier, done) = (store.clone(), Arc::clone(&barrier), failure(&claimed_a, t0));
            tokio::spawn(async move {
                barrier.wait().await;
                store.complete(vec![done]).await
            })
        };
        let cancelling = {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.cancel(y, t0).await
            })
        };
        assert_eq!(failing.await.unwrap().unwrap(), vec![CompletionStatus::Applied]);
        let cancel = cancelling.await.unwrap().unwrap();
        assert!(
            matches!(cancel, CancelStatus::Cancelled | CancelStatus::AlreadyFinished(State::Cancelled)),
            "{cancel:?}"
        );
        for id in [x, y] {
            assert_eq!(state_of(&store, id).await, State::Cancelled);
            assert_eq!(kinds(&store, id).await, vec![JournalKind::Enqueued, JournalKind::Cancelled]);
        }
    }
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn a_version_1_database_migrates_to_workflows() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    // Version 1 as an older orch-diesel-pg left it, with a command in it.
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let (version, sql) = migrations::MIGRATIONS[0];
    assert_eq!(version, 1);
    let old = CommandId::generate(Timestamp::from_millis(1_000));
    conn.batch_execute(&format!(
        "CREATE TABLE {prefix}migrations (version INTEGER PRIMARY KEY NOT NULL, applied_at BIGINT NOT NULL); \
         {schema}; \
         INSERT INTO {prefix}migrations (version, applied_at) VALUES (1, 0); \
         INSERT INTO {prefix}commands (id, name, target, state, input, max_attempts, timeout_ms, retry_policy, \
           scheduled_at, created_at, updated_at, correlation_id) \
         VALUES ('{old}', 'job', 'default', 'pending', '{{}}', 1, 1000, '{policy}', 1000, 1000, 1000, 'c')",
        schema = sql.replace("{prefix}", &prefix),
        policy = orch::store::backend::encode_policy(&orch::RetryPolicy::default()).unwrap(),
    ))
    .await
    .unwrap();

    let stores = migrate_concurrently(&url, &prefix).await;
    assert_eq!(
        applied_versions(&mut conn, &prefix).await,
        migrations::MIGRATIONS.iter().map(|(v, _)| *v).collect::<Vec<_>>()
    );

    // The old command reads back outside any workflow, and runs.
    let store = &stores[0];
    let record = store.get(old).await.unwrap().unwrap();
    assert_eq!((record.state, record.workflow), (State::Pending, None));
    let now = Timestamp::from_millis(2_000);
    let claimed = claim_one(store, "job", now).await;
    assert_eq!((claimed.lease.id, claimed.workflow), (old, None));
    // Workflows work on the upgraded schema.
    let (workflow_id, rows) = workflow_rows(now, &[("a", &[]), ("b", &["a"])]);
    store.enqueue(rows.clone()).await.unwrap();
    let steps = store.workflow_steps(workflow_id).await.unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].depends_on, vec![rows[0].id]);
    assert_eq!(steps[1].command.state, State::Blocked);
    store.drop_tables().await.unwrap();
    assert_eq!(
        count(&url, &format!("SELECT COUNT(*) AS n FROM pg_tables WHERE tablename LIKE '{prefix}%'")).await,
        0,
        "drop_tables drops the dependencies table too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn dependencies_outside_the_insert_are_refused() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let now = Timestamp::from_millis(40_000_000);
    let (_, rows) = workflow_rows(now, &[("a", &[]), ("b", &["a"])]);
    store.enqueue(vec![rows[0].clone()]).await.unwrap();
    let err = store.enqueue(vec![rows[1].clone()]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(store.get(rows[1].id).await.unwrap().is_none(), "nothing stored");
    // Follow-ups depending on each other are a batch of their own, and may.
    let (_, follow_ups) = workflow_rows(now, &[("f1", &[]), ("f2", &["f1"])]);
    let claimed = claim_one(&store, "a", now).await;
    let done =
        completion(&claimed, now, Outcome::Succeeded { output: "1".into(), follow_ups: follow_ups.clone() });
    store.complete(vec![done]).await.unwrap();
    assert_eq!(state_of(&store, follow_ups[0].id).await, State::Pending);
    assert_eq!(state_of(&store, follow_ups[1].id).await, State::Blocked);
    store.drop_tables().await.unwrap();
}

/// A workflow step for the end-to-end case: returns `name(outputs of reads…)`, or fails.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StepCommand {
    name: String,
    reads: Vec<String>,
    fail: bool,
}

impl orch::Command for StepCommand {
    type Output = String;
    const RETRIES: u32 = 0;
}

fn step_command(name: &str, reads: &[&str], fail: bool) -> NewCommand {
    NewCommand::of(&StepCommand {
        name: name.into(),
        reads: reads.iter().map(|r| r.to_string()).collect(),
        fail,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn workflows_run_end_to_end_through_the_client() {
    use orch::{HandlerError, Orch, Registry, Worker, WorkerConfig, Workflow, WorkflowState};
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let store: Arc<dyn Store> = Arc::new(store_at(&url, &prefix).await);
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let mut registry = Registry::new();
            registry
                .register_fn(|c: StepCommand, ctx: orch::Context| async move {
                    let mut inputs = Vec::new();
                    for dependency in &c.reads {
                        inputs.push(ctx.dependency_output::<StepCommand>(dependency).await?);
                    }
                    if c.fail {
                        return Err(HandlerError::permanent(format!("{} failed", c.name)));
                    }
                    Ok(format!("{}({})", c.name, inputs.join(",")))
                })
                .unwrap();
            let config = WorkerConfig {
                instance_key: orch::DEFAULT_TARGET.into(),
                concurrency: 4,
                max_pull: 4,
                poll_interval: Duration::from_millis(50),
                heartbeat_interval: Duration::from_millis(100),
                rescue_interval: Duration::from_millis(100),
                worker_id: Some(format!("e2e{i}")),
                ..WorkerConfig::default()
            };
            Worker::new(Orch::new(Arc::clone(&store)), registry, config).unwrap().start()
        })
        .collect();
    let orch = Orch::new(Arc::clone(&store));
    let diamond = Workflow::builder()
        .step_after("d", step_command("d", &["b", "c"], false), ["b", "c"])
        .step_after("b", step_command("b", &["a"], false), ["a"])
        .step_after("c", step_command("c", &["a"], false), ["a"])
        .step("a", step_command("a", &[], false))
        .build()
        .unwrap();
    let failing = Workflow::builder()
        .step("a", step_command("a", &[], true))
        .step_after("b", step_command("b", &[], false), ["a"])
        .step_after("c", step_command("c", &[], false), ["b"])
        .build()
        .unwrap();
    let (diamond, failing) =
        (orch.start_workflow(diamond).await.unwrap(), orch.start_workflow(failing).await.unwrap());
    let wait = |id| {
        let orch = orch.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), orch.wait_workflow(id)).await.unwrap().unwrap()
        }
    };
    let (diamond, failing) = (wait(diamond).await, wait(failing).await);
    for w in workers {
        w.shutdown().await;
    }
    assert_eq!(diamond.state, WorkflowState::Succeeded);
    assert_eq!(diamond.step("d").unwrap().depends_on, vec!["b".to_string(), "c".to_string()]);
    let d = diamond.step("d").unwrap().command_id;
    assert_eq!(orch.output::<StepCommand>(d).await.unwrap().as_deref(), Some("d(b(a()),c(a()))"));
    assert_eq!(failing.state, WorkflowState::Failed);
    let states: Vec<State> = ["a", "b", "c"].iter().map(|n| failing.step(n).unwrap().state).collect();
    assert_eq!(states, [State::Failed, State::Cancelled, State::Cancelled]);
    PgStore::builder(&url)
        .prefix(&prefix)
        .listen(false)
        .connect()
        .await
        .unwrap()
        .drop_tables()
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// Sagas: instances saved compare-and-set on their version, with their commands.

/// A new instance of `saga` keyed `key`, created and saved at `now`.
fn saga_record(saga: &str, key: &str, now: Timestamp) -> SagaRecord {
    SagaRecord {
        saga: saga.into(),
        correlation_id: key.into(),
        state: "initial".into(),
        status: SagaStatus::Active,
        data: r#"{"n":0}"#.into(),
        version: 1,
        compensations: "[]".into(),
        last_event: None,
        timeout_at: None,
        created_at: now,
        updated_at: now,
    }
}

fn create(record: &SagaRecord, commands: Vec<InsertCommand>) -> SagaWrite {
    SagaWrite { record: record.clone(), expected_version: None, commands }
}

/// `record` moved on to its next version at `now`, written expecting its current one.
fn next_version(record: &SagaRecord, now: Timestamp, commands: Vec<InsertCommand>) -> SagaWrite {
    let next = SagaRecord { version: record.version + 1, updated_at: now, ..record.clone() };
    SagaWrite { record: next, expected_version: Some(record.version), commands }
}

/// A command carrying the instance's correlation id, as the saga runtime pushes them.
fn saga_command(name: &str, key: &str, now: Timestamp) -> InsertCommand {
    NewCommand::raw(name, serde_json::json!({})).correlation_id(key).resolve(now).expect("valid command")
}

/// Whether a command and its journal are absent.
async fn absent(store: &PgStore, id: CommandId) -> bool {
    store.get(id).await.unwrap().is_none() && store.journal(id).await.unwrap().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn sagas_save_compare_and_set_on_their_version() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_micros(50_000_000_123_457);
    assert_eq!(store.saga("order", "1").await.unwrap(), None);

    // Created once; a second create is a conflict that writes nothing, not its commands.
    let created = saga_record("order", "1", t0);
    let first = saga_command("charge", "1", t0);
    assert_eq!(store.save_saga(create(&created, vec![first.clone()])).await.unwrap(), SagaWriteStatus::Saved);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&created));
    assert_eq!(state_of(&store, first.id).await, State::Pending);
    let again = SagaRecord { state: "other".into(), data: "{}".into(), ..saga_record("order", "1", t0) };
    let lost = saga_command("charge", "1", t0);
    assert_eq!(store.save_saga(create(&again, vec![lost.clone()])).await.unwrap(), SagaWriteStatus::Conflict);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&created));
    assert!(absent(&store, lost.id).await, "a conflicting save inserts no commands");
    // The same correlation id in another saga is another instance.
    let other = saga_record("refund", "1", t0);
    assert_eq!(store.save_saga(create(&other, vec![])).await.unwrap(), SagaWriteStatus::Saved);

    // Replaced expecting the right version, through every status, with and without a
    // last event and a timeout; created_at stays what it was.
    let mut current = created.clone();
    for (i, status) in SagaStatus::ALL.into_iter().chain([SagaStatus::Active]).enumerate() {
        let now = t0 + Duration::from_micros(1_000_001 * (i as u64 + 1));
        let mut write = next_version(&current, now, vec![]);
        let r = &mut write.record;
        r.state = format!("state-{i}");
        r.status = status;
        r.data = format!(r#"{{"n":{i},"text":"é ✓ \u0000-free"}}"#);
        r.compensations = format!(r#"[{{"step":{i}}}]"#);
        r.last_event = (i % 2 == 0).then(|| CommandId::generate(now));
        r.timeout_at = (i % 3 != 2).then(|| now + Duration::from_micros(3_600_000_001));
        r.created_at = now; // ignored by a replace
        assert_eq!(store.save_saga(write.clone()).await.unwrap(), SagaWriteStatus::Saved, "{status}");
        let expected = SagaRecord { created_at: t0, ..write.record.clone() };
        assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&expected), "{status}");
        current = expected;
    }
    assert_eq!(current.version, 7);
    assert_eq!(store.saga("refund", "1").await.unwrap().as_ref(), Some(&other), "the other is untouched");

    // A stale version is a conflict: nothing changes, its commands are not inserted.
    let mut stale = next_version(&current, t0 + Duration::from_secs(60), vec![saga_command("x", "1", t0)]);
    stale.expected_version = Some(current.version - 1);
    stale.record.state = "stale".into();
    assert_eq!(store.save_saga(stale.clone()).await.unwrap(), SagaWriteStatus::Conflict);
    assert_eq!(store.saga("order", "1").await.unwrap().as_ref(), Some(&current));
    assert!(absent(&store, stale.commands[0].id).await);
    // So is a replace of an instance that does not exist.
    let missing = next_version(&saga_record("order", "missing", t0), t0, vec![saga_command("y", "m", t0)]);
    assert_eq!(store.save_saga(missing.clone()).await.unwrap(), SagaWriteStatus::Conflict);
    assert_eq!(store.saga("order", "missing").await.unwrap(), None);
    assert!(absent(&store, missing.commands[0].id).await);
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn saga_saves_insert_their_commands_as_enqueue_does() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let listening = store_at(&url, &prefix).await;
    // Another pool, as another process: its saves reach the listener by NOTIFY.
    let store = PgStore::builder(&url).prefix(&prefix).listen(false).connect().await.unwrap();
    let (signal, local) = (listening.wake_signal().unwrap(), store.wake_signal().unwrap());
    let t0 = Timestamp::from_millis(60_000_000);

    // A create with a command and a compensation chain pushed as a workflow.
    let created = saga_record("order", "7", t0);
    let charge = saga_command("charge", "7", t0);
    let (workflow_id, chain) = workflow_rows(t0, &[("undo2", &[]), ("undo1", &["undo2"])]);
    let mut commands = vec![charge.clone()];
    commands.extend(chain.iter().cloned());
    let save = store.save_saga(create(&created, commands));
    assert!(fires(&signal, Duration::from_secs(2), save).await, "the NOTIFY reaches other processes");
    assert_eq!(state_of(&store, charge.id).await, State::Pending);
    let charged = store.get(charge.id).await.unwrap().unwrap();
    assert_eq!((charged.correlation_id.as_str(), charged.created_at), ("7", t0));
    let (undo2, undo1) = (id_of(&chain, "undo2"), id_of(&chain, "undo1"));
    assert_eq!(state_of(&store, undo2).await, State::Pending);
    assert_eq!(state_of(&store, undo1).await, State::Blocked);
    let steps = store.workflow_steps(workflow_id).await.unwrap();
    let edges: Vec<(CommandId, Vec<CommandId>)> =
        steps.iter().map(|s| (s.command.id, s.depends_on.clone())).collect();
    assert_eq!(edges, vec![(undo2, vec![]), (undo1, vec![undo2])]);
    for id in [charge.id, undo2, undo1] {
        assert_eq!(kinds(&store, id).await, vec![JournalKind::Enqueued], "{id}");
    }
    // The blocked step is unblocked when its dependency succeeds, as any other.
    let claimed = claim_one(&store, "undo2", t0).await;
    store.complete(vec![success(&claimed, t0)]).await.unwrap();
    assert_eq!(state_of(&store, undo1).await, State::Pending);

    // A replace with a command wakes this store's workers at once.
    let next = next_version(&created, t0, vec![saga_command("reserve", "7", t0)]);
    assert!(fires(&local, Duration::from_secs(2), store.save_saga(next.clone())).await);
    assert_eq!(state_of(&store, next.commands[0].id).await, State::Pending);

    // All or nothing: commands that cannot be inserted fail the save, instance included.
    let (_, outside) = workflow_rows(t0, &[("a", &[]), ("b", &["a"])]);
    let refused = next_version(&next.record, t0, vec![outside[1].clone()]);
    let err = store.save_saga(refused).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert_eq!(store.saga("order", "7").await.unwrap().as_ref(), Some(&next.record));
    let clash = create(&saga_record("order", "8", t0), vec![saga_command("z", "8", t0), charge.clone()]);
    assert!(store.save_saga(clash.clone()).await.is_err(), "a command id already stored");
    assert_eq!(store.saga("order", "8").await.unwrap(), None);
    assert!(absent(&store, clash.commands[0].id).await);
    listening.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn sagas_are_queried_by_every_filter() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t = |s: i64| Timestamp::from_millis(70_000_000 + s * 1_000);
    // (saga, key, state, status, updated at, timeout at); keys sort byte-wise ("B" < "a").
    let rows = [
        ("order", "a", "paying", SagaStatus::Active, 10, Some(100)),
        ("order", "B", "paying", SagaStatus::Active, 20, Some(200)),
        ("order", "c", "shipping", SagaStatus::Active, 30, None),
        ("order", "d", "done", SagaStatus::Completed, 5, None),
        ("order", "e", "paying", SagaStatus::Compensating, 15, Some(150)),
        ("refund", "a", "paying", SagaStatus::Active, 1, Some(50)),
        ("Refund", "z", "paying", SagaStatus::CompensationFailed, 40, Some(100)),
    ];
    for (saga, key, state, status, updated, timeout) in rows {
        let record = SagaRecord {
            state: state.into(),
            status,
            timeout_at: timeout.map(t),
            updated_at: t(updated),
            ..saga_record(saga, key, t(0))
        };
        assert_eq!(store.save_saga(create(&record, vec![])).await.unwrap(), SagaWriteStatus::Saved);
    }
    let keys = |query: SagaQuery| {
        let store = store.clone();
        async move {
            store
                .sagas(query)
                .await
                .unwrap()
                .into_iter()
                .map(|r| format!("{}/{}", r.saga, r.correlation_id))
                .collect::<Vec<_>>()
        }
    };
    let all = ["Refund/z", "order/B", "order/a", "order/c", "order/d", "order/e", "refund/a"];
    assert_eq!(keys(SagaQuery::default()).await, all);
    let saga = |s: &str| Some(s.to_owned());
    assert_eq!(
        keys(SagaQuery { saga: saga("order"), ..Default::default() }).await,
        ["order/B", "order/a", "order/c", "order/d", "order/e"]
    );
    assert_eq!(
        keys(SagaQuery { state: saga("paying"), ..Default::default() }).await,
        ["Refund/z", "order/B", "order/a", "order/e", "refund/a"]
    );
    assert_eq!(
        keys(SagaQuery { status: Some(SagaStatus::Active), ..Default::default() }).await,
        ["order/B", "order/a", "order/c", "refund/a"]
    );
    assert_eq!(
        keys(SagaQuery { status: Some(SagaStatus::Compensated), ..Default::default() }).await,
        Vec::<String>::new()
    );
    // updated_before is strict; timeout_before is inclusive and skips instances without one.
    assert_eq!(
        keys(SagaQuery { updated_before: Some(t(15)), ..Default::default() }).await,
        ["order/a", "order/d", "refund/a"]
    );
    assert_eq!(
        keys(SagaQuery { timeout_before: Some(t(150)), ..Default::default() }).await,
        ["Refund/z", "order/a", "order/e", "refund/a"]
    );
    assert_eq!(
        keys(SagaQuery { timeout_before: Some(t(49)), ..Default::default() }).await,
        Vec::<String>::new()
    );
    // Combined, every filter applies.
    assert_eq!(
        keys(SagaQuery {
            saga: saga("order"),
            state: saga("paying"),
            status: Some(SagaStatus::Active),
            ..Default::default()
        })
        .await,
        ["order/B", "order/a"]
    );
    assert_eq!(
        keys(SagaQuery {
            saga: saga("order"),
            status: Some(SagaStatus::Active),
            updated_before: Some(t(25)),
            timeout_before: Some(t(150)),
            ..Default::default()
        })
        .await,
        ["order/a"]
    );
    assert_eq!(
        keys(SagaQuery {
            saga: saga("order"),
            state: saga("paying"),
            status: Some(SagaStatus::Active),
            updated_before: Some(t(25)),
            timeout_before: Some(t(300)),
            limit: 1,
        })
        .await,
        ["order/B"]
    );
    // Limits: the first n in order; 0 and anything over the cap mean the cap.
    assert_eq!(keys(SagaQuery { limit: 3, ..Default::default() }).await, all[..3]);
    assert_eq!(keys(SagaQuery { limit: 0, ..Default::default() }).await, all);
    assert_eq!(keys(SagaQuery { limit: usize::MAX, ..Default::default() }).await, all);
    // Records come back whole.
    let found = store.sagas(SagaQuery { saga: saga("refund"), ..Default::default() }).await.unwrap();
    assert_eq!(found, vec![store.saga("refund", "a").await.unwrap().unwrap()]);
    assert_eq!((found[0].timeout_at, found[0].updated_at, found[0].created_at), (Some(t(50)), t(1), t(0)));
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn sagas_over_the_cap_are_cut_at_ten_thousand() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let now = Timestamp::from_millis(75_000_000);
    // Filled in one statement: 10,001 saves would be slow for nothing.
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    diesel::sql_query(format!(
        "INSERT INTO {} (saga, correlation_id, state, status, data, version, compensations, created_at, \
         updated_at) SELECT 'bulk', lpad(i::text, 6, '0'), 's', 'active', '{{}}', 1, '[]', $1, $1 \
         FROM generate_series(1, 10001) AS i",
        store.inner.tables.sagas
    ))
    .bind::<BigInt, _>(now.as_micros())
    .execute(&mut conn)
    .await
    .unwrap();
    for limit in [0, 10_001, usize::MAX] {
        let found = store.sagas(SagaQuery { limit, ..Default::default() }).await.unwrap();
        assert_eq!(found.len(), 10_000, "limit {limit}");
        assert_eq!(found[9_999].correlation_id, "010000");
    }
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn concurrent_saga_saves_let_exactly_one_win() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(80_000_000);
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    // Two writers racing with the same expected version (None: both creating).
    let race = |writes: [SagaWrite; 2]| {
        let tasks: Vec<_> = writes
            .into_iter()
            .map(|write| {
                let (store, barrier) = (store.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.save_saga(write).await.unwrap()
                })
            })
            .collect();
        async move {
            let mut statuses = Vec::new();
            for task in tasks {
                statuses.push(task.await.unwrap());
            }
            statuses
        }
    };
    for i in 0..20 {
        let key = format!("k{i}");
        let writes = ["a", "b"].map(|who| {
            let record = SagaRecord { state: who.into(), ..saga_record("race", &key, t0) };
            create(&record, vec![saga_command(who, &key, t0)])
        });
        let statuses = race(writes.clone()).await;
        let mut current = check_one_won(&store, &writes, &statuses, &format!("create {i}")).await;

        for round in 0..3 {
            let writes = ["a", "b"].map(|who| {
                let mut write = next_version(&current, t0, vec![saga_command(who, &key, t0)]);
                write.record.state = format!("{who}{round}");
                write
            });
            let statuses = race(writes.clone()).await;
            current = check_one_won(&store, &writes, &statuses, &format!("update {i}/{round}")).await;
        }
        assert_eq!(current.version, 4);
    }
    store.drop_tables().await.unwrap();
}

/// Asserts that exactly one of two racing writes was saved, with its commands, and
/// that the other left no trace; returns the instance as stored.
async fn check_one_won(
    store: &PgStore,
    writes: &[SagaWrite; 2],
    statuses: &[SagaWriteStatus],
    what: &str,
) -> SagaRecord {
    let saved: Vec<usize> = (0..2).filter(|&i| statuses[i] == SagaWriteStatus::Saved).collect();
    assert_eq!(saved.len(), 1, "{what}: {statuses:?}");
    let (won, lost) = (&writes[saved[0]], &writes[1 - saved[0]]);
    assert_eq!(statuses[1 - saved[0]], SagaWriteStatus::Conflict, "{what}");
    let stored = store.saga(&won.record.saga, &won.record.correlation_id).await.unwrap().unwrap();
    assert_eq!(stored, won.record, "{what}");
    assert_eq!(state_of(store, won.commands[0].id).await, State::Pending, "{what}");
    assert!(absent(store, lost.commands[0].id).await, "{what}: the loser's command");
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn a_save_waiting_on_a_newer_version_conflicts() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let store = store_at(&url, &prefix).await;
    let t0 = Timestamp::from_millis(85_000_000);
    let created = saga_record("order", "1", t0);
    store.save_saga(create(&created, vec![])).await.unwrap();

    // Another transaction moves the row to version 2 and holds its lock.
    let mut holder = AsyncPgConnection::establish(&url).await.unwrap();
    holder
        .batch_execute(&format!(
            "BEGIN; UPDATE {prefix}sagas SET version = 2, state = 'theirs' WHERE saga = 'order'"
        ))
        .await
        .unwrap();
    let write = next_version(&created, t0, vec![saga_command("mine", "1", t0)]);
    let command = write.commands[0].id;
    let saving = tokio::spawn({
        let store = store.clone();
        async move { store.save_saga(write).await.unwrap() }
    });
    let waiting = format!(
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND query LIKE 'UPDATE {prefix}sagas%'"
    );
    wait_for("the save to wait on the row lock", || async { count(&url, &waiting).await == 1 }).await;
    holder.batch_execute("COMMIT").await.unwrap();
    // It re-checks the version against the committed row: a conflict, nothing written.
    assert_eq!(saving.await.unwrap(), SagaWriteStatus::Conflict);
    let stored = store.saga("order", "1").await.unwrap().unwrap();
    assert_eq!((stored.version, stored.state.as_str()), (2, "theirs"));
    assert!(absent(&store, command).await);

    // Holding the lock without changing the version: the waiting save goes through.
    holder.batch_execute(&format!("BEGIN; SELECT * FROM {prefix}sagas FOR UPDATE")).await.unwrap();
    let write = next_version(&stored, t0, vec![]);
    let saving = tokio::spawn({
        let (store, write) = (store.clone(), write.clone());
        async move { store.save_saga(write).await.unwrap() }
    });
    wait_for("the save to wait on the row lock", || async { count(&url, &waiting).await == 1 }).await;
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(saving.await.unwrap(), SagaWriteStatus::Saved);
    assert_eq!(store.saga("order", "1").await.unwrap(), Some(write.record));
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn a_version_2_database_migrates_to_sagas() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    // Version 2 as an older orch-diesel-pg left it, with a workflow in it.
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let schema: String = migrations::MIGRATIONS
        .iter()
        .filter(|(version, _)| *version <= 2)
        .map(|(_, sql)| sql.replace("{prefix}", &prefix))
        .collect::<Vec<_>>()
        .join(";\n");
    conn.batch_execute(&format!(
        "CREATE TABLE {prefix}migrations (version INTEGER PRIMARY KEY NOT NULL, applied_at BIGINT NOT NULL); \
         {schema}; \
         INSERT INTO {prefix}migrations (version, applied_at) VALUES (1, 0), (2, 0); \
         ALTER TABLE {prefix}commands ADD COLUMN priority SMALLINT NOT NULL DEFAULT 0; \
         ALTER TABLE {prefix}commands ADD COLUMN unique_key TEXT COLLATE \"C\" NULL; \
         ALTER TABLE {prefix}commands ADD COLUMN unique_window BIGINT NOT NULL DEFAULT 0;"
    ))
    .await
    .unwrap();
    // (Today's store writes the priority column of migration 7 and the unique-key
    // columns of migration 9, added above ahead of their time so that the old rows can
    // be written with them; those migrations keep them.)
    let now = Timestamp::from_millis(90_000_000);
    let (workflow_id, rows) = workflow_rows(now, &[("a", &[]), ("b", &["a"])]);
    {
        // Enqueued by the old schema's store (no sagas table yet).
        let old = PgStore::builder(&url).prefix(&prefix).listen(false).connect().await.unwrap();
        old.enqueue(rows.clone()).await.unwrap();
        let err = old.saga("order", "1").await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "no sagas table before migrating: {err}");
    }

    let stores = migrate_concurrently(&url, &prefix).await;
    let versions =
        count(&url, &format!("SELECT COUNT(*) AS n FROM {prefix}migrations WHERE version IN (1, 2, 3)"))
            .await;
    assert_eq!(versions, 3);
    let all = i64::try_from(migrations::MIGRATIONS.len()).unwrap();
    assert_eq!(count(&url, &format!("SELECT COUNT(*) AS n FROM {prefix}migrations")).await, all);
    let indexes =
        count(&url, &format!("SELECT COUNT(*) AS n FROM pg_indexes WHERE tablename = '{prefix}sagas'")).await;
    assert_eq!(indexes, 4, "the primary key and three indexes");

    // The old workflow is intact and runs; sagas work on the upgraded schema.
    let store = &stores[0];
    assert_eq!(store.workflow_steps(workflow_id).await.unwrap().len(), 2);
    assert_eq!(state_of(store, rows[1].id).await, State::Blocked);
    let created = saga_record("order", "1", now);
    let command = saga_command("charge", "1", now);
    assert_eq!(
        store.save_saga(create(&created, vec![command.clone()])).await.unwrap(),
        SagaWriteStatus::Saved
    );
    assert_eq!(store.saga("order", "1").await.unwrap(), Some(created));
    assert_eq!(state_of(store, command.id).await, State::Pending);
    store.drop_tables().await.unwrap();
    assert_eq!(
        count(&url, &format!("SELECT COUNT(*) AS n FROM pg_tables WHERE tablename LIKE '{prefix}%'")).await,
        0,
        "drop_tables drops the sagas table too"
    );
}

fn worker(id: &str, names: &[&str], heartbeat_at: Timestamp) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        instance_key: format!("instance-{id}"),
        host: "host-1.internal".into(),
        pid: 4_242,
        names: names.iter().map(|n| n.to_string()).collect(),
        concurrency: 8,
        running: 0,
        started_at: Timestamp::from_micros(1_700_000_000_000_001),
        heartbeat_at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn workers_are_recorded_listed_pruned_and_removed() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let store = store_at(&url, &prefix).await;
    assert_eq!(store.workers().await.unwrap(), Vec::new());

    // Recorded, then recorded again at a heartbeat: one row, every column replaced.
    let t = |micros: i64| Timestamp::from_micros(1_700_000_000_000_000 + micros);
    let mut b = worker("worker-b", &["charge", "refund", "ship"], t(10));
    store.record_worker(b.clone()).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![b.clone()]);
    b.heartbeat_at = t(20);
    b.running = 5;
    b.pid = u32::MAX;
    store.record_worker(b.clone()).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![b.clone()]);
    assert_eq!(count(&url, &format!("SELECT COUNT(*) AS n FROM {prefix}workers")).await, 1);

    // A second worker, with no names, sorts before it (byte-wise ids: `A` < `w`).
    let a = worker("Worker-a", &[], t(30));
    store.record_worker(a.clone()).await.unwrap();
    let listed = store.workers().await.unwrap();
    assert_eq!(listed, vec![a.clone(), b.clone()]);
    assert_eq!((listed[0].names.len(), listed[1].names.len()), (0, 3));

    // Pruning removes exactly the rows whose heartbeat is before the cutoff.
    assert_eq!(store.prune_workers(t(20)).await.unwrap(), 0, "a heartbeat at the cutoff stays");
    let c = worker("worker-c", &["x"], t(5));
    store.record_worker(c).await.unwrap();
    assert_eq!(store.prune_workers(t(21)).await.unwrap(), 2);
    assert_eq!(store.workers().await.unwrap(), vec![a.clone()]);
    assert_eq!(store.prune_workers(t(21)).await.unwrap(), 0);

    // Removing a present worker, then an absent one.
    store.remove_worker("Worker-a").await.unwrap();
    assert_eq!(store.workers().await.unwrap(), Vec::new());
    store.remove_worker("Worker-a").await.unwrap();
    store.remove_worker("never-recorded").await.unwrap();

    // A corrupt row is an error, never a panic.
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    for (pid, names) in [("-1", "[]"), ("4294967296", "[]"), ("1", "not json")] {
        conn.batch_execute(&format!(
            "DELETE FROM {prefix}workers; \
             INSERT INTO {prefix}workers (id, instance_key, host, pid, names, concurrency, running, \
               started_at, heartbeat_at) VALUES ('bad', 'k', 'h', {pid}, '{names}', 1, 0, 0, 0)"
        ))
        .await
        .unwrap();
        let err = store.workers().await.unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "pid {pid}, names {names}: {err}");
    }
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn a_version_3_database_migrates_to_workers() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    // Version 3 as an older orch-diesel-pg left it, with a saga in it.
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let schema: String = migrations::MIGRATIONS
        .iter()
        .filter(|(version, _)| *version <= 3)
        .map(|(_, sql)| sql.replace("{prefix}", &prefix))
        .collect::<Vec<_>>()
        .join(";\n");
    conn.batch_execute(&format!(
        "CREATE TABLE {prefix}migrations (version INTEGER PRIMARY KEY NOT NULL, applied_at BIGINT NOT NULL); \
         {schema}; \
         INSERT INTO {prefix}migrations (version, applied_at) VALUES (1, 0), (2, 0), (3, 0);"
    ))
    .await
    .unwrap();
    let now = Timestamp::from_millis(90_000_000);
    let saga = saga_record("order", "1", now);
    {
        // Saved by the old schema's store (no workers table yet).
        let old = PgStore::builder(&url).prefix(&prefix).listen(false).connect().await.unwrap();
        assert_eq!(old.save_saga(create(&saga, Vec::new())).await.unwrap(), SagaWriteStatus::Saved);
        let err = old.workers().await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "no workers table before migrating: {err}");
    }

    let stores = migrate_concurrently(&url, &prefix).await;
    let versions = applied_versions(&mut conn, &prefix).await;
    assert_eq!(versions, migrations::MIGRATIONS.iter().map(|(v, _)| *v).collect::<Vec<_>>());
    assert!(versions.contains(&4), "the workers migration is applied");
    let indexes =
        count(&url, &format!("SELECT COUNT(*) AS n FROM pg_indexes WHERE tablename = '{prefix}workers'"))
            .await;
    assert_eq!(indexes, 2, "the primary key and the heartbeat index");

    // The old saga is intact; workers work on the upgraded schema.
    let store = &stores[0];
    assert_eq!(store.saga("order", "1").await.unwrap(), Some(saga));
    let w = worker("worker-1", &["charge"], now);
    store.record_worker(w.clone()).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), vec![w]);
    store.drop_tables().await.unwrap();
    assert_eq!(
        count(&url, &format!("SELECT COUNT(*) AS n FROM pg_tables WHERE tablename LIKE '{prefix}%'")).await,
        0,
        "drop_tables drops the workers table too"
    );
}

/// A command of `name` for `target`, due at `at`.
fn row_for(name: &str, target: &str, at: Timestamp, created: Timestamp) -> InsertCommand {
    let mut r = row(name, created);
    r.target = target.to_owned();
    r.scheduled_at = at;
    r
}

async fn claim_for(store: &PgStore, name: &str, target: &str, now: Timestamp) -> orch::store::ClaimedCommand {
    let params = ClaimParams { target: target.into(), ..claim_params(&[name], now, "w", 1) };
    let mut claimed = store.claim(params).await.unwrap();
    assert_eq!(claimed.len(), 1, "{name}@{target} is claimable");
    claimed.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn queue_stats_split_pending_by_due_time() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(60_000_000);
    let (early, now, later) = (t0, t0 + Duration::from_secs(5), t0 + Duration::from_secs(60));
    assert_eq!(store.queue_stats(now).await.unwrap(), vec![]);

    // a@t1: two due (one due exactly now), one delayed, one blocked on the first.
    let (_, mut steps) = workflow_rows(t0, &[("a", &[]), ("blocked", &["a"])]);
    for s in &mut steps {
        s.name = "a".into();
        s.target = "t1".into();
    }
    steps[0].scheduled_at = early;
    steps[1].scheduled_at = early;
    store.enqueue(steps).await.unwrap();
    store.enqueue(vec![row_for("a", "t1", now, t0), row_for("a", "t1", later, t0)]).await.unwrap();
    // a@t2: one running, one succeeded (claimed from a first due batch).
    store.enqueue(vec![row_for("a", "t2", early, t0), row_for("a", "t2", early, t0)]).await.unwrap();
    let _running = claim_for(&store, "a", "t2", now).await;
    let done = claim_for(&store, "a", "t2", now).await;
    store.complete(vec![success(&done, now)]).await.unwrap();
    // b@t1: one failed, one cancelled.
    let mut failing = row_for("b", "t1", early, t0);
    failing.max_attempts = 1;
    let cancelled = row_for("b", "t1", later, t0);
    let cancelled_id = cancelled.id;
    store.enqueue(vec![failing, cancelled]).await.unwrap();
    let claimed = claim_for(&store, "b", "t1", now).await;
    store.complete(vec![failure(&claimed, now)]).await.unwrap();
    assert_eq!(store.cancel(cancelled_id, now).await.unwrap(), CancelStatus::Cancelled);
    // b@t2: only delayed.
    store.enqueue(vec![row_for("b", "t2", later, t0)]).await.unwrap();

    let stats = |name: &str, target: &str| QueueStats {
        name: name.into(),
        target: target.into(),
        ..Default::default()
    };
    let expected = vec![
        QueueStats { blocked: 1, due: 2, scheduled: 1, oldest_due: Some(early), ..stats("a", "t1") },
        QueueStats { running: 1, succeeded: 1, ..stats("a", "t2") },
        QueueStats { failed: 1, cancelled: 1, ..stats("b", "t1") },
        QueueStats { scheduled: 1, ..stats("b", "t2") },
    ];
    assert_eq!(store.queue_stats(now).await.unwrap(), expected);
    // Later, everything pending is due; the oldest due time stays the earliest.
    let expected_later = vec![
        QueueStats { blocked: 1, due: 3, oldest_due: Some(early), ..stats("a", "t1") },
        QueueStats { running: 1, succeeded: 1, ..stats("a", "t2") },
        QueueStats { failed: 1, cancelled: 1, ..stats("b", "t1") },
        QueueStats { due: 1, oldest_due: Some(later), ..stats("b", "t2") },
    ];
    assert_eq!(store.queue_stats(later).await.unwrap(), expected_later);
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn retry_runs_a_failed_or_cancelled_command_again() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(70_000_000);
    let (t1, t2, t3) =
        (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2), t0 + Duration::from_secs(3));

    // Failed for good after its only attempt.
    let mut failing = row("f", t0);
    failing.max_attempts = 1;
    let id = failing.id;
    store.enqueue(vec![failing]).await.unwrap();
    let claimed = claim_one(&store, "f", t0).await;
    store.complete(vec![failure(&claimed, t1)]).await.unwrap();
    let before = store.get(id).await.unwrap().unwrap();
    assert_eq!((before.state, before.attempts), (State::Failed, 1));

    assert_eq!(store.retry(id, t2).await.unwrap(), RetryStatus::Retried);
    let r = store.get(id).await.unwrap().unwrap();
    assert_eq!(r.state, State::Pending);
    assert_eq!((r.scheduled_at, r.updated_at, r.finished_at), (t2, t2, None));
    assert_eq!((r.attempts, r.max_attempts), (1, 2));
    assert_eq!(r.error, before.error, "the last error is kept");
    assert!(!r.follow_ups_due && !r.cancel_requested);
    assert_eq!((r.lease_token, r.lease_expires_at), (None, None));
    let journal = store.journal(id).await.unwrap();
    let last = journal.last().unwrap();
    assert_eq!(last.kind, JournalKind::RetryRequested);
    let want = NewJournalEntry::retry_requested(id, t2, 1, State::Failed);
    assert_eq!(*last, orch::JournalEntry { seq: last.seq, ..entry(want) });
    // Due now: it runs as its second attempt and can succeed.
    let claimed = claim_one(&store, "f", t2).await;
    assert_eq!((claimed.lease.id, claimed.attempt, claimed.max_attempts), (id, 2, 2));
    store.complete(vec![success(&claimed, t3)]).await.unwrap();
    assert_eq!(state_of(&store, id).await, State::Succeeded);
    assert_eq!(store.retry(id, t3).await.unwrap(), RetryStatus::NotRetryable(State::Succeeded));

    // Cancelled while pending (follow-ups due): retried, the follow-ups dropped.
    let cancelled = row("c", t0);
    let cid = cancelled.id;
    store.enqueue(vec![cancelled]).await.unwrap();
    assert_eq!(store.cancel(cid, t1).await.unwrap(), CancelStatus::Cancelled);
    assert!(store.get(cid).await.unwrap().unwrap().follow_ups_due);
    assert_eq!(store.retry(cid, t2).await.unwrap(), RetryStatus::Retried);
    let r = store.get(cid).await.unwrap().unwrap();
    assert_eq!((r.state, r.scheduled_at, r.max_attempts, r.follow_ups_due), (State::Pending, t2, 1, false));
    assert_eq!(kinds(&store, cid).await.last(), Some(&JournalKind::RetryRequested));
    assert_eq!(store.follow_ups_due(&["c".to_owned()], 10).await.unwrap(), vec![]);

    // Pending (the retried one) is not retryable; an unknown id is not found.
    assert_eq!(store.retry(cid, t3).await.unwrap(), RetryStatus::NotRetryable(State::Pending));
    let unknown = CommandId::generate(t0);
    assert_eq!(store.retry(unknown, t3).await.unwrap(), RetryStatus::NotFound);
    assert_eq!(kinds(&store, cid).await.iter().filter(|k| **k == JournalKind::RetryRequested).count(), 1);
    store.drop_tables().await.unwrap();
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// The plan PostgreSQL picks for the list statement of `params`, with its values bound.
async fn list_plan(url: &str, prefix: &str, params: &ListParams) -> String {
    let mut statement =
        sql::list(Placeholders::Numbered, &commands::COLUMNS, &format!("{prefix}commands"), params);
    statement.sql.insert_str(0, "EXPLAIN ");
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    let lines: Vec<PlanLine> = commands::bind(statement).load(&mut conn).await.unwrap();
    lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn list_pages_by_due_time_descending_through_the_index() {
    let Some(url) = server_url() else { return };
    let prefix = fresh_prefix();
    let store = store_at(&url, &prefix).await;
    let t0 = Timestamp::from_millis(30_000_000);
    // 3,000 commands over 500 due times: six share each, so ties cross page boundaries.
    let rows: Vec<InsertCommand> = (0..3_000i64)
        .map(|i| {
            let mut r = row("job", t0);
            r.scheduled_at = Timestamp::from_micros(t0.as_micros() + (i * 7_919 % 500) * 1_000);
            r
        })
        .collect();
    let mut expected: Vec<(i64, CommandId)> =
        rows.iter().map(|r| (r.scheduled_at.as_micros(), r.id)).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    store.enqueue(rows).await.unwrap();

    let order = ListOrder::Scheduled;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let params = ListParams { order, descending: true, after, limit: 64, ..Default::default() };
        let page = store.list(params).await.unwrap();
        assert!(page.len() <= 64);
        let Some(last) = page.last() else { break };
        after = Some(ListCursor::of(last, order));
        seen.extend(page.iter().map(|r| (r.scheduled_at.as_micros(), r.id)));
    }
    assert_eq!(seen.len(), expected.len(), "no duplicates, no gaps");
    assert_eq!(seen, expected, "due time, then id, both descending");
    assert_eq!(seen.iter().map(|(_, id)| *id).collect::<HashSet<_>>().len(), 3_000);

    // Every page, the first and the deep ones, is an index range, not a sort.
    diesel::sql_query(format!("ANALYZE {prefix}commands"))
        .execute(&mut AsyncPgConnection::establish(&url).await.unwrap())
        .await
        .unwrap();
    let cursor = ListCursor { key: expected[1_500].0, id: expected[1_500].1 };
    for after in [None, Some(cursor)] {
        let params = ListParams { order, descending: true, after, limit: 64, ..Default::default() };
        let plan = list_plan(&url, &prefix, &params).await;
        assert!(plan.contains(&format!("Index Scan Backward using {prefix}commands_scheduled")), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
    }
    store.drop_tables().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn workflows_are_summarized_newest_first() {
    let Some(url) = server_url() else { return };
    let store = store_at(&url, &fresh_prefix()).await;
    let t0 = Timestamp::from_millis(40_000_000);
    let (t1, t2, t3) =
        (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2), t0 + Duration::from_secs(3));
    // Oldest: failed (its first step failed, the second was cancelled).
    let (failed, mut rows) = workflow_rows(t0, &[("fa", &[]), ("fb", &["fa"])]);
    rows[0].max_attempts = 1;
    let failed_step = rows[0].id;
    store.enqueue(rows).await.unwrap();
    let claimed = claim_one(&store, "fa", t3).await;
    store.complete(vec![failure(&claimed, t3)]).await.unwrap();
    // Then running: one step pending, one blocked.
    let (running, rows) = workflow_rows(t1, &[("ra", &[]), ("rb", &["ra"])]);
    store.enqueue(rows).await.unwrap();
    // Newest: succeeded.
    let (succeeded, rows) = workflow_rows(t2, &[("sa", &[])]);
    store.enqueue(rows).await.unwrap();
    let claimed = claim_one(&store, "sa", t3).await;
    store.complete(vec![success(&claimed, t3)]).await.unwrap();
    // A command outside any workflow is not one.
    store.enqueue(vec![row("loose", t0)]).await.unwrap();

    let all = store.workflows(WorkflowQuery::default()).await.unwrap();
    assert_eq!(all.iter().map(|w| w.id).collect::<Vec<_>>(), vec![succeeded, running, failed]);
    let counts =
        |w: &orch::WorkflowSummary| (w.blocked, w.pending, w.running, w.succeeded, w.failed, w.cancelled);
    assert_eq!(counts(&all[0]), (0, 0, 0, 1, 0, 0));
    assert_eq!(counts(&all[1]), (1, 1, 0, 0, 0, 0));
    assert_eq!(counts(&all[2]), (0, 0, 0, 0, 1, 1));
    assert_eq!((all[2].created_at, all[2].updated_at), (t0, t3));
    assert_eq!(store.get(failed_step).await.unwrap().unwrap().state, State::Failed);
    for (state, id) in [
        (WorkflowState::Succeeded, succeeded),
        (WorkflowState::Running, running),
        (WorkflowState::Failed, failed),
    ] {
        let query = WorkflowQuery { state: Some(state), ..Default::default() };
        let found = store.workflows(query).await.unwrap();
        assert_eq!(found.iter().map(|w| w.id).collect::<Vec<_>>(), vec![id], "{state:?}");
        assert_eq!(found[0].state(), state);
    }
    let page =
        store.workflows(WorkflowQuery { before: Some(succeeded), limit: 1, ..Default::default() }).await;
    assert_eq!(page.unwrap().iter().map(|w| w.id).collect::<Vec<_>>(), vec![running]);

    // The new list filters, on PostgreSQL's column types.
    let steps = store.list(ListParams { workflow: Some(running), ..Default::default() }).await.unwrap();
    assert_eq!(steps.len(), 2);
    let errors =
        ListParams { error_contains: Some("BROK".into()), min_attempts: Some(1), ..Default::default() };
    let broken = store.list(errors).await.unwrap();
    assert_eq!(broken.iter().map(|r| r.id).collect::<Vec<_>>(), vec![failed_step]);
    let wildcard = ListParams { error_contains: Some("bro%".into()), ..Default::default() };
    assert!(store.list(wildcard).await.unwrap().is_empty(), "% matches itself only");
    let early = ListParams { created_before: Some(t1), created_after: Some(t0), ..Default::default() };
    assert_eq!(
        store.list(early).await.unwrap().len(),
        3,
        "the failed workflow's steps and the loose command"
    );
    let children = ListParams { parent: Some(failed_step), ..Default::default() };
    assert!(store.list(children).await.unwrap().is_empty());
    store.drop_tables().await.unwrap();
}

/// Three stores, as three processes would, upgrade `prefix` at once (each must succeed),
/// then the first migrates again (a no-op); returns them.
async fn migrate_concurrently(url: &str, prefix: &str) -> Vec<PgStore> {
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(PgStore::builder(url).prefix(prefix).listen(false).connect().await.unwrap());
    }
    let tasks: Vec<_> =
        stores.iter().cloned().map(|s| tokio::spawn(async move { s.migrate().await })).collect();
    for task in tasks {
        task.await.unwrap().expect("every concurrent migrate succeeds");
    }
    stores[0].migrate().await.unwrap();
    stores
}

/// The migration versions recorded for `prefix`, in order.
async fn applied_versions(conn: &mut AsyncPgConnection, prefix: &str) -> Vec<i32> {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Integer)]
        version: i32,
    }
    diesel::sql_query(format!("SELECT version FROM {prefix}migrations ORDER BY version"))
        .load::<Version>(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect()
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    synchronous_commit: String,
}

/// A claim commits without waiting for its WAL flush, and only the claim: the setting
/// ends with the claim's own transaction, so the pushes and completions that follow on
/// the same connection are synced.
#[tokio::test]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn unsynced_claim_leaves_the_connection_synced() {
    let Some(url) = server_url() else { return };
    let store = PgStore::builder(&url).prefix(fresh_prefix()).max_connections(1).connect().await.unwrap();
    store.migrate().await.unwrap();
    let t0 = Timestamp::from_millis(1_000);
    store.enqueue(vec![row("job", t0)]).await.unwrap();
    let claimed = store.claim(claim_params(&["job"], t0, "w", 10)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let mut conn = store.conn().await.unwrap();
    let setting: Setting = diesel::sql_query("SHOW synchronous_commit").get_result(&mut *conn).await.unwrap();
    assert_eq!(setting.synchronous_commit, "on");
    drop(conn);
    store.drop_tables().await.unwrap();
}
