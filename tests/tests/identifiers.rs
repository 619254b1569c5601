//! Table prefixes are the only identifiers a caller hands to SQL. 10,000 generated ones
//! (quotes, comment markers, statement separators, keywords, spaces, NUL, non-ASCII,
//! overlong) go through `TablePrefix::new` and each store's builder: only plain
//! identifiers pass, the rejected ones never reach the database, and the ones that pass
//! create their own tables and nothing else, while a canary table beside them is never
//! touched (SQLite always; PostgreSQL and MariaDB when their URLs are set).

use std::collections::BTreeSet;

use diesel::{Connection, SqliteConnection};
use orch::{Error, NewCommand, Orch, Store, TablePrefix};
use orch_tests::harness::{Server, ServerHarness};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// The canary keeps its one row, and every table belongs to the canary or to an
/// accepted prefix (compared in lower case).
fn assert_untouched(canary_notes: &[Name], tables: &[Name], accepted: &BTreeSet<String>) {
    let notes: Vec<&str> = canary_notes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(notes, ["untouched"], "the canary row");
    for t in tables {
        let lower = t.name.to_ascii_lowercase();
        let owned = lower == "canary" || accepted.iter().any(|p| lower.starts_with(p.as_str()));
        assert!(owned, "table {} belongs to no accepted prefix", t.name);
    }
}

fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= TablePrefix::MAX_LEN
}

/// Strings built from pieces an injection would use, and plain identifiers among them.
fn prefixes() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("orch_".to_owned()),
        Just("canary".to_owned()),
        Just(";".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("`".to_owned()),
        Just("--".to_owned()),
        Just("/*".to_owned()),
        Just(" ".to_owned()),
        Just("\0".to_owned()),
        Just("DROP TABLE canary".to_owned()),
        Just("x; DELETE FROM canary; --".to_owned()),
        Just("é".to_owned()),
        Just(".".to_owned()),
        "[A-Za-z_][A-Za-z0-9_]{0,12}",
        "[ -~]{1,6}",
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 1..5).prop_map(|pieces| pieces.concat())
}

/// 10,000 generated prefixes, each checked against the allowlist on the way.
fn generate() -> Vec<String> {
    let generated: std::cell::RefCell<Vec<String>> = std::cell::RefCell::default();
    let mut runner =
        TestRunner::new(Config { cases: 10_000, failure_persistence: None, ..Config::default() });
    let result = runner.run(&prefixes(), |prefix| {
        // The allowlist: accepted exactly when the text is a plain identifier.
        let accepted = TablePrefix::new(&prefix);
        prop_assert_eq!(accepted.is_ok(), is_plain_identifier(&prefix), "{:?}", prefix);
        if let Err(e) = accepted {
            prop_assert!(matches!(e, Error::InvalidPrefix { .. }), "{:?}: {}", prefix, e);
        }
        generated.borrow_mut().push(prefix);
        Ok(())
    });
    result.unwrap();
    let generated = generated.into_inner();
    assert!(generated.len() >= 10_000, "{} generated", generated.len());
    generated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_prefixes_never_reach_other_tables() {
    use diesel::RunQueryDsl;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identifiers.db");
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    diesel::sql_query("CREATE TABLE canary (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("INSERT INTO canary (id, note) VALUES (1, 'untouched')").execute(&mut conn).unwrap();

    let generated = generate();
    assert!(generated.len() >= 10_000, "{} generated", generated.len());

    // Through the store: rejected prefixes fail at open, before any SQL; a sample of the
    // accepted ones migrate and run a command in the same file.
    let mut accepted: BTreeSet<String> = BTreeSet::new();
    let mut rejected = 0;
    for prefix in &generated {
        match orch_sqlite::SqliteStore::builder(&path).prefix(prefix.clone()).open() {
            Err(Error::InvalidPrefix { .. }) => rejected += 1,
            Err(other) => panic!("{prefix:?}: expected InvalidPrefix, got {other}"),
            Ok(store) => {
                // SQLite names are case-insensitive: `A_` and `a_` are one set of tables.
                if accepted.len() < 150 && accepted.insert(prefix.to_ascii_lowercase()) {
                    store.migrate().await.unwrap();
                    let orch = Orch::new(std::sync::Arc::new(store));
                    orch.push_new(NewCommand::raw("probe", serde_json::json!({}))).await.unwrap();
                }
            }
        }
    }
    assert!(rejected > 1_000 && !accepted.is_empty(), "{rejected} rejected, {} accepted", accepted.len());

    let notes: Vec<Name> = diesel::sql_query("SELECT note AS name FROM canary").load(&mut conn).unwrap();
    let tables: Vec<Name> =
        diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .load(&mut conn)
            .unwrap();
    assert_untouched(&notes, &tables, &accepted);
    eprintln!(
        "{} generated prefixes: {rejected} rejected, {} accepted and run ({} tables); canary untouched",
        generated.len(),
        accepted.len(),
        tables.len()
    );
}

/// The same on a server: rejected prefixes fail `connect` before any connection, a
/// sample of the accepted ones migrate and store a command beside a canary table in the
/// harness's database.
async fn on_server(harness: ServerHarness) {
    use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl as _};
    use orch_diesel_pg::diesel_async::AsyncPgConnection;
    let url = harness.url().to_owned();
    let postgres = matches!(harness.server(), Server::Postgres);
    let setup = [
        "CREATE TABLE canary (id INTEGER PRIMARY KEY, note TEXT NOT NULL)",
        "INSERT INTO canary (id, note) VALUES (1, 'untouched')",
    ];
    let (notes_sql, tables_sql) = if postgres {
        (
            "SELECT note AS name FROM canary",
            "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = current_schema()",
        )
    } else {
        (
            "SELECT note AS name FROM canary",
            "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables WHERE table_schema = DATABASE()",
        )
    };
    let run = |sql: &'static str| {
        let url = url.clone();
        async move {
            if postgres {
                let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
                diesel::sql_query(sql).load::<Name>(&mut conn).await
            } else {
                let mut conn = AsyncMysqlConnection::establish(&url).await.unwrap();
                diesel::sql_query(sql).load::<Name>(&mut conn).await
            }
        }
    };
    for sql in setup {
        if postgres {
            let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
            diesel::sql_query(sql).execute(&mut conn).await.unwrap();
        } else {
            let mut conn = AsyncMysqlConnection::establish(&url).await.unwrap();
            diesel::sql_query(sql).execute(&mut conn).await.unwrap();
        }
    }
    let generated = generate();
    let mut accepted: BTreeSet<String> = BTreeSet::new();
    let mut rejected = 0;
    for prefix in &generated {
        // A sample of the accepted ones runs (PostgreSQL folds unquoted names to lower case).
        if TablePrefix::new(prefix).is_ok()
            && (accepted.len() >= 20 || accepted.contains(&prefix.to_ascii_lowercase()))
        {
            continue;
        }
        let store: Result<std::sync::Arc<dyn Store>, Error> = if postgres {
            orch_diesel_pg::PgStore::builder(url.clone())
                .prefix(prefix.clone())
                .connect()
                .await
                .map(|s| std::sync::Arc::new(s) as _)
        } else {
            orch_diesel_mysql::MysqlStore::builder(url.clone())
                .prefix(prefix.clone())
                .connect()
                .await
                .map(|s| std::sync::Arc::new(s) as _)
        };
        match store {
            Err(Error::InvalidPrefix { .. }) => rejected += 1,
            Err(other) => panic!("{prefix:?}: expected InvalidPrefix, got {other}"),
            Ok(store) => {
                accepted.insert(prefix.to_ascii_lowercase());
                store.migrate().await.unwrap();
                Orch::new(store).push_new(NewCommand::raw("probe", serde_json::json!({}))).await.unwrap();
            }
        }
    }
    assert!(rejected > 1_000 && !accepted.is_empty(), "{rejected} rejected, {} accepted", accepted.len());
    let notes = run(notes_sql).await.unwrap();
    let tables = run(tables_sql).await.unwrap();
    assert_untouched(&notes, &tables, &accepted);
    eprintln!(
        "{}: {} generated prefixes, {rejected} rejected, {} accepted and run ({} tables); canary untouched",
        harness.server().label(),
        generated.len(),
        accepted.len(),
        tables.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn postgres_generated_prefixes_never_reach_other_tables() {
    let Some(harness) = ServerHarness::postgres() else { return };
    on_server(harness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_generated_prefixes_never_reach_other_tables() {
    let Some(harness) = ServerHarness::mysql() else { return };
    on_server(harness).await;
}
