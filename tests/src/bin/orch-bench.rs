//! `orch-bench`: the benchmark run by `cargo xtask bench` (see `orch_tests::bench`).
//!
//! `orch-bench [--backend pg|mysql|sqlite|all] [--commands N] [--concurrency C]
//!             [--prefetch P] [--max-pull M] [--history H] [--poll-ms P] [--skip-push]
//!             [--settle-s S]`
//!
//! Servers come from `ORCH_PG_URL` / `ORCH_MYSQL_URL`; each run creates a database of
//! its own beside the one the URL names and drops it at the end. SQLite files go under
//! `target/bench/`. Prints a table and writes the figures as JSON to
//! `target/bench/<unix time>.json`.

#![allow(clippy::disallowed_methods, reason = "naming the result file by wall-clock time")]

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use orch::store::backend::encode_policy;
use orch::{RetryPolicy, Store};
use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use orch_diesel_pg::diesel_async::AsyncPgConnection;
use orch_tests::bench::{BenchConfig, BenchResult, HistoryWriter, Opener, run_backend};
use orch_tests::harness::with_database;

const CHUNK: u64 = 100_000;

fn value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn number(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    value(args, name).map_or(Ok(default), |v| v.parse().map_err(|_| format!("{name}: {v:?} is not a number")))
}

/// The SELECT list of a finished command numbered `g` (an SQL expression per dialect
/// for the id), written the same way for every backend.
fn history_select(id: &str, policy: &str) -> String {
    format!(
        "{id}, 'history', 'default', 'succeeded', '{{\"seq\":0}}', 'null', 1, 4, 5000, '{policy}', \
         1600000000000000 + g, 1600000000000000 + g, 1600000000000000 + g, 1600000000000000 + g, \
         1600000000000000 + g, 'w', 'c'"
    )
}

const HISTORY_COLUMNS: &str = "id, name, target, state, input, output, attempts, max_attempts, timeout_ms, \
     retry_policy, scheduled_at, created_at, updated_at, started_at, finished_at, worker, correlation_id";

/// Three journal rows per command: enqueued, claimed, succeeded.
fn journal_select(id: &str) -> String {
    format!("{id}, 1600000000000000 + g, k.kind, k.attempt, 'w', NULL")
}

const JOURNAL_KINDS: &str = "(SELECT 'enqueued' AS kind, 0 AS attempt UNION ALL SELECT 'claimed', 1 UNION ALL SELECT 'succeeded', 1) k";

async fn pg_admin(url: &str, sql: &str) -> Result<(), String> {
    let mut conn = AsyncPgConnection::establish(url).await.map_err(|e| e.to_string())?;
    diesel::sql_query(sql).execute(&mut conn).await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn mysql_admin(url: &str, sql: &str) -> Result<(), String> {
    let mut conn = AsyncMysqlConnection::establish(url).await.map_err(|e| e.to_string())?;
    diesel::sql_query(sql).execute(&mut conn).await.map_err(|e| e.to_string())?;
    Ok(())
}

fn table(results: &[BenchResult]) -> String {
    let mut out = format!(
        "{:<8} {:>8} {:>10} {:>12} {:>11} {:>10} {:>9} {:>9} {:>9} {:>10} {:>13} {:>5}\n",
        "backend",
        "N",
        "push/s",
        "push_many/s",
        "process/s",
        "calls/cmd",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "idle q/s",
        "hist proc/s",
        "dup"
    );
    for r in results {
        out.push_str(&format!(
            "{:<8} {:>8} {:>10.0} {:>12.0} {:>11.0} {:>10.3} {:>9.1} {:>9.1} {:>9.1} {:>10.2} {:>13} {:>5}\n",
            r.backend,
            r.commands,
            r.push_per_s,
            r.push_many_per_s,
            r.process_per_s,
            r.process_calls_per_command,
            r.latency_p50_ms,
            r.latency_p95_ms,
            r.latency_p99_ms,
            r.idle_calls_per_s,
            r.process_with_history_per_s.map_or("-".to_owned(), |v| format!("{v:.0}")),
            r.duplicates
        ));
    }
    out
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let defaults = BenchConfig::default();
    let cfg = BenchConfig {
        commands: number(&args, "--commands", defaults.commands)?,
        concurrency: number(&args, "--concurrency", defaults.concurrency as u64)? as usize,
        prefetch: number(&args, "--prefetch", defaults.prefetch as u64)? as usize,
        max_pull: number(&args, "--max-pull", defaults.max_pull as u64)? as usize,
        poll: Duration::from_millis(number(&args, "--poll-ms", defaults.poll.as_millis() as u64)?),
        history: number(&args, "--history", defaults.history)?,
        skip_single_push: args.iter().any(|a| a == "--skip-push"),
        settle: Duration::from_secs(number(&args, "--settle-s", 0)?),
        ..defaults
    };
    let which = value(&args, "--backend").unwrap_or_else(|| "all".into());
    let backends: Vec<&str> = match which.as_str() {
        "all" => vec!["pg", "mysql", "sqlite"],
        "pg" | "postgres" => vec!["pg"],
        "mysql" | "mariadb" => vec!["mysql"],
        "sqlite" => vec!["sqlite"],
        other => return Err(format!("unknown backend {other:?}: pg, mysql, sqlite or all")),
    };
    let policy = encode_policy(&RetryPolicy::default()).map_err(|e| e.to_string())?;
    let out_dir = std::path::PathBuf::from("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let run = std::process::id();
    let mut results = Vec::new();
    for backend in backends {
        eprintln!(
            "== {backend}: {} commands, {} handlers, prefetch {}, max_pull {}, poll {:?}",
            cfg.commands, cfg.concurrency, cfg.prefetch, cfg.max_pull, cfg.poll
        );
        let result = match backend {
            "pg" => {
                let Ok(admin) = std::env::var("ORCH_PG_URL") else {
                    eprintln!("skipped: ORCH_PG_URL is not set");
                    continue;
                };
                let db = format!("orch_bench_{run}");
                pg_admin(&admin, &format!("CREATE DATABASE {db}")).await?;
                let url = with_database(&admin, &db);
                let open_url = url.clone();
                let open: Box<Opener> = Box::new(move |prefix| {
                    let url = open_url.clone();
                    async move {
                        let store = orch_diesel_pg::PgStore::builder(url)
                            .prefix(prefix)
                            .max_connections(20)
                            .connect()
                            .await?;
                        store.migrate().await?;
                        Ok(Arc::new(store) as Arc<dyn Store>)
                    }
                    .boxed()
                });
                let (hist_url, policy) = (url.clone(), policy.clone());
                let history: Box<HistoryWriter> = Box::new(move |prefix, rows| {
                    let (url, policy) = (hist_url.clone(), policy.clone());
                    async move {
                        let id = "('00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid";
                        for start in (1..=rows).step_by(CHUNK as usize) {
                            let end = (start + CHUNK - 1).min(rows);
                            let series = format!("generate_series({start}, {end}) g");
                            pg_admin(&url, &format!("INSERT INTO {prefix}commands ({HISTORY_COLUMNS}) SELECT {} FROM {series}", history_select(id, &policy))).await?;
                            pg_admin(&url, &format!("INSERT INTO {prefix}journal (command_id, at, kind, attempt, worker, message) SELECT {} FROM {series}, {JOURNAL_KINDS}", journal_select(id))).await?;
                        }
                        pg_admin(&url, &format!("VACUUM ANALYZE {prefix}commands")).await?;
                        pg_admin(&url, &format!("VACUUM ANALYZE {prefix}journal")).await?;
                        // Rows that piled up over days would long be on disk: the bulk
                        // write is flushed now, not during the measurement.
                        pg_admin(&url, "CHECKPOINT").await
                    }
                    .boxed()
                });
                let result = run_backend("pg", open.as_ref(), history.as_ref(), &cfg).await;
                pg_admin(&admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await?;
                result.map_err(|e| e.to_string())?
            }
            "mysql" => {
                let Ok(admin) = std::env::var("ORCH_MYSQL_URL") else {
                    eprintln!("skipped: ORCH_MYSQL_URL is not set");
                    continue;
                };
                let db = format!("orch_bench_{run}");
                mysql_admin(&admin, &format!("CREATE DATABASE {db} CHARACTER SET utf8mb4")).await?;
                let url = with_database(&admin, &db);
                let open_url = url.clone();
                let open: Box<Opener> = Box::new(move |prefix| {
                    let url = open_url.clone();
                    async move {
                        let store = orch_diesel_mysql::MysqlStore::builder(url)
                            .prefix(prefix)
                            .max_connections(20)
                            .connect()
                            .await?;
                        store.migrate().await?;
                        Ok(Arc::new(store) as Arc<dyn Store>)
                    }
                    .boxed()
                });
                let (hist_url, policy) = (url.clone(), policy.clone());
                let history: Box<HistoryWriter> = Box::new(move |prefix, rows| {
                    let (url, policy) = (hist_url.clone(), policy.clone());
                    async move {
                        let id = "CONCAT('00000000-0000-7000-8000-', LPAD(LOWER(HEX(g)), 12, '0'))";
                        for start in (1..=rows).step_by(CHUNK as usize) {
                            let end = (start + CHUNK - 1).min(rows);
                            let series = format!("(SELECT seq AS g FROM seq_{start}_to_{end}) s");
                            mysql_admin(&url, &format!("INSERT INTO `{prefix}commands` ({HISTORY_COLUMNS}) SELECT {} FROM {series}", history_select(id, &policy))).await?;
                            mysql_admin(&url, &format!("INSERT INTO `{prefix}journal` (command_id, at, kind, attempt, worker, message) SELECT {} FROM {series}, {JOURNAL_KINDS}", journal_select(id))).await?;
                        }
                        mysql_admin(&url, &format!("ANALYZE TABLE `{prefix}commands`, `{prefix}journal`")).await
                    }
                    .boxed()
                });
                let result = run_backend("mysql", open.as_ref(), history.as_ref(), &cfg).await;
                mysql_admin(&admin, &format!("DROP DATABASE IF EXISTS {db}")).await?;
                result.map_err(|e| e.to_string())?
            }
            _ => {
                let dir = out_dir.join(format!("sqlite-{run}"));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let open_dir = dir.clone();
                let open: Box<Opener> = Box::new(move |prefix| {
                    let path = open_dir.join(format!("{prefix}.db"));
                    async move {
                        let store = orch_sqlite::SqliteStore::open(&path)?;
                        store.migrate().await?;
                        Ok(Arc::new(store) as Arc<dyn Store>)
                    }
                    .boxed()
                });
                let (hist_dir, policy) = (dir.clone(), policy.clone());
                let history: Box<HistoryWriter> = Box::new(move |prefix, rows| {
                    let path = hist_dir.join(format!("{prefix}.db"));
                    let policy = policy.clone();
                    async move {
                        tokio::task::spawn_blocking(move || {
                            use diesel::{Connection, SqliteConnection};
                            let mut conn = SqliteConnection::establish(path.to_str().unwrap_or_default()).map_err(|e| e.to_string())?;
                            let id = "printf('00000000-0000-7000-8000-%012x', g)";
                            for start in (1..=rows).step_by(CHUNK as usize) {
                                let end = (start + CHUNK - 1).min(rows);
                                let series = format!("WITH RECURSIVE s(g) AS (SELECT {start} UNION ALL SELECT g + 1 FROM s WHERE g < {end})");
                                for sql in [
                                    format!("{series} INSERT INTO orch_commands ({HISTORY_COLUMNS}) SELECT {} FROM s", history_select(id, &policy)),
                                    format!("{series} INSERT INTO orch_journal (command_id, at, kind, attempt, worker, message) SELECT {} FROM s, {JOURNAL_KINDS}", journal_select(id)),
                                ] {
                                    diesel::RunQueryDsl::execute(diesel::sql_query(sql), &mut conn).map_err(|e| e.to_string())?;
                                }
                            }
                            diesel::RunQueryDsl::execute(diesel::sql_query("ANALYZE"), &mut conn).map_err(|e| e.to_string())?;
                            diesel::RunQueryDsl::execute(diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)"), &mut conn).map_err(|e| e.to_string())?;
                            Ok(())
                        })
                        .await
                        .map_err(|e| e.to_string())?
                    }
                    .boxed()
                });
                let result = run_backend("sqlite", open.as_ref(), history.as_ref(), &cfg).await;
                let _ = std::fs::remove_dir_all(&dir);
                result.map_err(|e| e.to_string())?
            }
        };
        results.push(result);
    }
    let table = table(&results);
    println!("{table}");
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let file = out_dir.join(format!("{secs}.json"));
    let json = serde_json::json!({ "config": format!("{cfg:?}"), "results": results });
    std::fs::write(&file, serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    println!("written to {}", file.display());
    Ok(())
}
