//! Store calls dropped at random points (a caller's timeout, a worker shutting down):
//! on PostgreSQL and MariaDB no connection is left idle in a transaction, nothing is
//! half written (a `push_many` is stored whole or not at all), and the store goes on
//! working. (SQLite's calls run to completion on a blocking thread whatever happens to
//! their future.)

use std::sync::Arc;
use std::time::Duration;

use orch::store::{ClaimParams, Completion, ListParams, Outcome};
use orch::{Clock, NewCommand, Orch, SystemClock};
use orch_tests::harness::{Server, ServerHarness};
use orch_tests::support::eventually;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Open transactions on the harness's database, other than the asking session's.
async fn open_transactions(harness: &ServerHarness) -> i64 {
    use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
    use orch_diesel_pg::diesel_async::AsyncPgConnection;
    let rows: Vec<Count> = match harness.server() {
        Server::Postgres => {
            let mut conn = AsyncPgConnection::establish(harness.url()).await.unwrap();
            diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'",
            )
            .load(&mut conn)
            .await
            .unwrap()
        }
        Server::Mysql => {
            let mut conn = AsyncMysqlConnection::establish(harness.url()).await.unwrap();
            diesel::sql_query(
                "SELECT CAST(count(*) AS SIGNED) AS n FROM information_schema.innodb_trx t \
                 JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
                 WHERE p.db = DATABASE() AND p.id <> CONNECTION_ID() AND p.command = 'Sleep'",
            )
            .load(&mut conn)
            .await
            .unwrap()
        }
    };
    rows.iter().map(|r| r.n).sum()
}

async fn dropped_calls(harness: ServerHarness) {
    let prefix = ServerHarness::fresh_prefix();
    let store = harness.open(&prefix, 4).await.unwrap();
    store.migrate().await.unwrap();
    let orch = Orch::new(Arc::clone(&store));
    let mut seed: u64 = SystemClock.now().as_micros().unsigned_abs() | 1;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let batches = 200;
    let mut cut = 0;
    for b in 0..batches {
        let commands: Vec<NewCommand> = (0..20)
            .map(|i| {
                NewCommand::raw("cut", serde_json::json!({ "i": i })).correlation_id(format!("batch-{b}"))
            })
            .collect();
        // Dropped anywhere from before the first byte is sent to after the commit.
        let limit = Duration::from_micros(next(10_000));
        if tokio::time::timeout(limit, orch.push_many(commands)).await.is_err() {
            cut += 1;
        }
        // Claims and completions, dropped the same way.
        let params = ClaimParams {
            target: orch::DEFAULT_TARGET.into(),
            names: vec!["cut".into()],
            limit: 8,
            now: SystemClock.now(),
            worker: "cutter".into(),
            lease_buffer: Duration::from_secs(60),
        };
        let claimed =
            match tokio::time::timeout(Duration::from_micros(next(10_000)), store.claim(params)).await {
                Ok(Ok(claimed)) => claimed,
                _ => {
                    cut += 1;
                    Vec::new()
                }
            };
        let completions: Vec<Completion> = claimed
            .iter()
            .map(|c| Completion {
                lease: c.lease,
                now: SystemClock.now(),
                worker: "cutter".into(),
                outcome: Outcome::Succeeded { output: "null".into(), follow_ups: Vec::new() },
            })
            .collect();
        if !completions.is_empty()
            && tokio::time::timeout(Duration::from_micros(next(10_000)), store.complete(completions))
                .await
                .is_err()
        {
            cut += 1;
        }
    }
    assert!(cut > 20, "calls were cut short: {cut}");

    eventually("no connection left idle in a transaction", || async {
        (open_transactions(&harness).await == 0).then_some(())
    })
    .await;
    // Each push stored whole or not at all.
    let all = store.list(ListParams { limit: 100_000, ..ListParams::default() }).await.unwrap();
    let mut per_batch = std::collections::HashMap::<String, usize>::new();
    for r in &all {
        *per_batch.entry(r.correlation_id.clone()).or_default() += 1;
    }
    let torn: Vec<_> = per_batch.iter().filter(|(_, n)| **n != 20).collect();
    assert!(torn.is_empty(), "half-written pushes: {torn:?}");
    // The store goes on working.
    let id = orch.push_new(NewCommand::raw("after", serde_json::json!({}))).await.unwrap();
    assert!(store.get(id).await.unwrap().is_some());
    eprintln!(
        "{}: {cut} of {} calls cut short; {} of {batches} pushes stored, none torn",
        harness.server().label(),
        batches * 3,
        per_batch.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn postgres_dropped_calls_leave_nothing_open() {
    let Some(harness) = ServerHarness::postgres() else { return };
    dropped_calls(harness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_dropped_calls_leave_nothing_open() {
    let Some(harness) = ServerHarness::mysql() else { return };
    dropped_calls(harness).await;
}
