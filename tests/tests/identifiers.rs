//! Table prefixes are the only identifiers a caller hands to SQL. 10,000 generated ones
//! (quotes, comment markers, statement separators, keywords, spaces, NUL, non-ASCII,
//! overlong) go through `TablePrefix::new` and the SQLite store's builder: only plain
//! identifiers pass, the rejected ones never reach the database, and the ones that pass
//! create their own tables and nothing else, while a canary table beside them is never
//! touched.

use std::collections::BTreeSet;

use diesel::{Connection, RunQueryDsl, SqliteConnection};
use orch::{Error, NewCommand, Orch, Store, TablePrefix};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_prefixes_never_reach_other_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identifiers.db");
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    diesel::sql_query("CREATE TABLE canary (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("INSERT INTO canary (id, note) VALUES (1, 'untouched')").execute(&mut conn).unwrap();

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
    assert_eq!(notes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["untouched"], "the canary row");
    let tables: Vec<Name> =
        diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .load(&mut conn)
            .unwrap();
    for t in &tables {
        let lower = t.name.to_ascii_lowercase();
        let owned = lower == "canary" || accepted.iter().any(|p| lower.starts_with(p.as_str()));
        assert!(owned, "table {} belongs to no accepted prefix", t.name);
    }
    eprintln!(
        "{} generated prefixes: {rejected} rejected, {} accepted and run ({} tables); canary untouched",
        generated.len(),
        accepted.len(),
        tables.len()
    );
}
