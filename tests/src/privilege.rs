//! Proofs that restricted access really is restricted: the application role of
//! [`LeastPrivilegeHarness`] can do nothing but read and write the `orch` tables, and a
//! store opened read-only (the monitor's default) has every write refused by the
//! database itself while its reads work.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use orch::store::{ClaimParams, CommandId, InsertCommand, ListParams, WorkerRecord};
use orch::{CancelStatus, Clock, NewCommand, Orch, State, Store, SystemClock, Timestamp};

use crate::harness::{APP_ROLE, LeastPrivilegeHarness, Server, run_statements};

/// What the server says when the role lacks a right: PostgreSQL's `permission denied
/// for …` / `must be owner of …`, MariaDB's `… command denied to user …`.
fn is_denial(server: Server, message: &str) -> bool {
    match server {
        Server::Postgres => message.contains("permission denied") || message.contains("must be owner"),
        Server::Mysql => message.contains("command denied to user"),
    }
}

/// Connected as [`APP_ROLE`], everything but reading and writing the prefix's granted
/// tables fails with the server's denial: creating a table, dropping, altering or
/// truncating an `orch` table, writing the migrations table (it may read it), touching a
/// canary table of the owner's, and a `migrate` with a migration to apply (an
/// up-to-date one only reads, and passes). Reading and writing the granted tables
/// works over the same connection URL, and the owner then finds the canary row and the
/// `orch` tables intact and no new table.
pub async fn role_is_limited(h: &LeastPrivilegeHarness) {
    let server = h.owner().server();
    let owner_url = h.owner().url().to_owned();
    let prefix = crate::harness::ServerHarness::fresh_prefix();
    let canary = format!("{prefix}canary");
    let intruder = format!("{prefix}intruder");
    let q = |name: &str| match server {
        Server::Postgres => format!("\"{name}\""),
        Server::Mysql => format!("`{name}`"),
    };
    let commands = q(&format!("{prefix}commands"));
    let journal = q(&format!("{prefix}journal"));
    let migrations = q(&format!("{prefix}migrations"));
    run_statements(
        server,
        &owner_url,
        &[
            format!("CREATE TABLE {} (id INT PRIMARY KEY, note VARCHAR(20))", q(&canary)),
            format!("INSERT INTO {} (id, note) VALUES (1, 'untouched')", q(&canary)),
        ],
    )
    .await
    .expect("create the canary as the owner");
    h.provision(&prefix).await.expect("migrate and grant as the owner");

    // The grants are enough for the store's work.
    let app = h.open_app(&prefix, 2).await.expect("connect as the role");
    let now = SystemClock.now();
    let id = Orch::new(Arc::clone(&app))
        .push_new(NewCommand::raw("limited", serde_json::json!({"n": 1})))
        .await
        .expect("push as the role");
    assert_eq!(app.cancel(id, now).await.expect("cancel as the role"), CancelStatus::Cancelled);
    run_statements(server, h.app_url(), &[format!("SELECT COUNT(*) FROM {commands}")])
        .await
        .expect("the role reads a granted table over a plain connection");

    let refused = [
        format!("CREATE TABLE {} (id INT)", q(&intruder)),
        format!("DROP TABLE {commands}"),
        format!("ALTER TABLE {commands} ADD COLUMN intruder INT"),
        format!("TRUNCATE TABLE {journal}"),
        format!("SELECT COUNT(*) FROM {}", q(&canary)),
        format!("INSERT INTO {} (id, note) VALUES (2, 'intruder')", q(&canary)),
        format!("DELETE FROM {}", q(&canary)),
        format!("INSERT INTO {migrations} (version, applied_at) VALUES (9999, 0)"),
        format!("DELETE FROM {migrations}"),
    ];
    for sql in &refused {
        match run_statements(server, h.app_url(), std::slice::from_ref(sql)).await {
            Ok(()) => panic!("{} let {APP_ROLE} run `{sql}`", server.label()),
            Err(e) => assert!(is_denial(server, &e), "`{sql}` failed, but not for want of a right: {e}"),
        }
    }
    // An up-to-date `migrate` only reads the versions, so the role may call it (at an
    // application's start, say); one with a migration to apply is refused.
    app.migrate().await.expect("an up-to-date migrate as the role");
    let int = if server == Server::Postgres { "BIGINT" } else { "SIGNED" };
    let last =
        count(server, &owner_url, &format!("SELECT CAST(MAX(version) AS {int}) AS n FROM {migrations}"))
            .await;
    run_statements(server, &owner_url, &[format!("DELETE FROM {migrations} WHERE version = {last}")])
        .await
        .expect("the owner forgets the last migration");
    let err = app.migrate().await.expect_err("the role cannot apply a migration").to_string();
    assert!(is_denial(server, &err), "migrate as the role: {err}");
    run_statements(
        server,
        &owner_url,
        &[format!("INSERT INTO {migrations} (version, applied_at) VALUES ({last}, 0)")],
    )
    .await
    .expect("the owner records it again");

    // The owner finds everything as it was.
    let check = [
        format!("SELECT COUNT(*) FROM {} WHERE id = 1 AND note = 'untouched'", q(&canary)),
        format!("SELECT COUNT(*) FROM {commands}"),
        format!("SELECT COUNT(*) FROM {journal}"),
    ];
    run_statements(server, &owner_url, &check).await.expect("the owner's tables are intact");
    assert_eq!(count(server, &owner_url, &format!("SELECT COUNT(*) AS n FROM {}", q(&canary))).await, 1);
    assert_eq!(
        count(
            server,
            &owner_url,
            &format!("SELECT COUNT(*) AS n FROM {} WHERE note = 'untouched'", q(&canary))
        )
        .await,
        1
    );
    assert_eq!(
        count(server, &owner_url, &format!("SELECT COUNT(*) AS n FROM {commands} WHERE state = 'cancelled'"))
            .await,
        1,
        "the role's own push and cancel are there"
    );
    let tables = match server {
        Server::Postgres => format!(
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name = '{intruder}'"
        ),
        Server::Mysql => format!(
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '{intruder}'"
        ),
    };
    assert_eq!(count(server, &owner_url, &tables).await, 0, "no table was created");
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The `n` of a `SELECT COUNT(*) AS n …` run on a new connection to `url`.
async fn count(server: Server, url: &str, sql: &str) -> i64 {
    use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
    use orch_diesel_pg::diesel_async::AsyncPgConnection;
    let row: Count = match server {
        Server::Postgres => {
            let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
            diesel::sql_query(sql).get_result(&mut conn).await.expect(sql)
        }
        Server::Mysql => {
            let mut conn = AsyncMysqlConnection::establish(url).await.expect("connect");
            diesel::sql_query(sql).get_result(&mut conn).await.expect(sql)
        }
    };
    row.n
}

/// What the database says when it refuses a write of a read-only session.
pub fn read_only_refusal(backend: &str) -> &'static str {
    match backend {
        "postgres" => "read-only transaction",
        "mysql" => "READ ONLY transaction",
        _ => "readonly database",
    }
}

fn worker(id: &str, now: Timestamp) -> WorkerRecord {
    WorkerRecord {
        id: id.to_owned(),
        instance_key: "read-only-test".into(),
        host: "localhost".into(),
        pid: std::process::id(),
        names: vec!["ro_pending".into()],
        concurrency: 1,
        running: 0,
        started_at: now,
        heartbeat_at: now,
    }
}

fn insert(name: &str, now: Timestamp) -> InsertCommand {
    NewCommand::raw(name, serde_json::json!({})).resolve(now).expect("a valid command")
}

/// Everything a read-only store could change, read through `store`.
#[derive(Debug, PartialEq)]
struct Contents {
    commands: String,
    counts: String,
    workers: String,
    journals: String,
}

async fn contents(store: &Arc<dyn Store>, ids: &[CommandId]) -> Contents {
    let mut journals = Vec::new();
    for id in ids {
        journals.push(store.journal(*id).await.expect("read a journal"));
    }
    let mut counts = store.counts().await.expect("counts");
    counts.sort_by(|a, b| (&a.name, &a.target, a.state).cmp(&(&b.name, &b.target, b.state)));
    Contents {
        commands: format!("{:?}", store.list(ListParams::default()).await.expect("list")),
        counts: format!("{counts:?}"),
        workers: format!("{:?}", store.workers().await.expect("workers")),
        journals: format!("{journals:?}"),
    }
}

/// Asserts that `result` is the database's refusal of a write (`refusal` in its message).
fn assert_refused<T: Debug>(what: &str, result: orch::Result<T>, refusal: &str) {
    match result {
        Ok(value) => panic!("the read-only store let `{what}` through: {value:?}"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains(refusal), "`{what}` failed, but not as a read-only refusal: {message}");
        }
    }
}

/// With `writable` and `read_only` opened on the same tables: every write path of the
/// store trait called on `read_only` (`enqueue`, `claim`, `cancel`, `retry`, `migrate`,
/// `record_worker`, `remove_worker`, `prune_workers`, `rescue`) fails with the
/// database's read-only refusal and leaves the rows, counts, journals and workers as
/// `writable` reads them; the reads (`list`, `get`, `counts`, `journal`,
/// `queue_stats`, `workers`) work on `read_only` and agree with `writable`.
pub async fn read_only_store_refuses_writes(writable: Arc<dyn Store>, read_only: Arc<dyn Store>) {
    let backend = writable.backend();
    let refusal = read_only_refusal(backend);
    let orch = Orch::new(Arc::clone(&writable));
    let pending = orch.push_new(NewCommand::raw("ro_pending", serde_json::json!({"n": 1}))).await.unwrap();
    let cancelled =
        orch.push_new(NewCommand::raw("ro_cancelled", serde_json::json!({"n": 2}))).await.unwrap();
    assert_eq!(orch.cancel(cancelled).await.unwrap(), CancelStatus::Cancelled, "through the writable store");
    let now = SystemClock.now();
    writable.record_worker(worker("ro-worker", now)).await.unwrap();
    let ids = [pending, cancelled];
    let before = contents(&writable, &ids).await;

    let later = now + Duration::from_secs(3_600);
    assert_refused("enqueue", read_only.enqueue(vec![insert("ro_new", now)]).await, refusal);
    let claim = ClaimParams {
        target: orch::DEFAULT_TARGET.into(),
        names: vec!["ro_pending".into()],
        limit: 1,
        now,
        worker: "ro-claimer".into(),
        lease_buffer: Duration::from_secs(1),
    };
    assert_refused("claim", read_only.claim(claim).await, refusal);
    assert_refused("cancel", read_only.cancel(pending, now).await, refusal);
    assert_refused("retry", read_only.retry(cancelled, now).await, refusal);
    // An up-to-date migrate reads the versions and writes nothing (PostgreSQL, MariaDB);
    // SQLite's first statement is a write and is refused.
    if let Err(e) = read_only.migrate().await {
        assert!(e.to_string().contains(refusal), "`migrate` failed, but not as a read-only refusal: {e}");
    }
    assert_refused("record_worker", read_only.record_worker(worker("ro-intruder", now)).await, refusal);
    assert_refused("remove_worker", read_only.remove_worker("ro-worker").await, refusal);
    assert_refused("prune_workers", read_only.prune_workers(later).await, refusal);
    assert_refused("rescue", read_only.rescue(later, 10).await, refusal);
    assert_refused("Orch::cancel", Orch::new(Arc::clone(&read_only)).cancel(pending).await, refusal);

    assert_eq!(contents(&writable, &ids).await, before, "{backend}: the read-only store changed nothing");
    assert_eq!(contents(&read_only, &ids).await, before, "{backend}: the read-only store reads the same");
    let record = read_only.get(pending).await.unwrap().expect("the pending command");
    assert_eq!(record.state, State::Pending);
    let stats = read_only.queue_stats(now).await.expect("queue_stats on the read-only store");
    assert_eq!(stats, writable.queue_stats(now).await.unwrap(), "{backend}");
    assert!(stats.iter().any(|s| s.name == "ro_pending"), "{stats:?}");
    let workers = read_only.workers().await.unwrap();
    assert_eq!(workers.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["ro-worker"]);
}
