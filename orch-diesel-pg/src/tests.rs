//! Unit tests. Those that need a server read its URL from `ORCH_PG_URL` and skip (with
//! a printed reason) when it is not set; each uses a random table prefix and drops its
//! tables at the end.

use std::collections::HashSet;
use std::pin::pin;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use orch::store::backend::NewJournalEntry;
use orch::store::{
    ClaimParams, Completion, CompletionStatus, HeartbeatParams, InsertCommand, LeaseStatus, ListParams,
    Outcome,
};
use orch::{CancelStatus, Failure, FailureKind, JournalKind, NewCommand, State};

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
    assert_eq!(count(&url, &format!("SELECT COUNT(*) AS n FROM {prefix}migrations")).await, 1);
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
    assert_eq!(count(&url, &format!("SELECT COUNT(*) AS n FROM {prefix}migrations")).await, 1);
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
            Completion { lease: stale, now: t1, worker: "w".into(), outcome: Outcome::Released { at: t1 } },
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
    let page =
        store.list(ListParams { after: Some(all[1].id), limit: 2, ..Default::default() }).await.unwrap();
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
