//! A settled SQLite demo store for the tests that run the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use orch::{Clock, Orch, SystemClock};
use orch_tui::demo;
use orch_tui::source::Source;

/// Fills `dir/demo.db` with the demo mix, runs the demo workers until nothing they
/// serve is due, blocked or running, stops them, and returns the file's URL.
pub async fn settled(dir: &Path) -> String {
    let path: PathBuf = dir.join("demo.db");
    let source = Source { url: format!("sqlite://{}", path.display()), prefix: "orch_".into() };
    let store = demo::open_for_writing(&source).await.expect("open the demo store");
    let orch = Orch::new(store.clone());
    demo::fill(&orch, 12).await.expect("fill");
    let workers = demo::start_workers(&orch, 2).expect("workers");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = store.queue_stats(SystemClock.now()).await.unwrap();
        let busy: u64 =
            stats.iter().filter(|s| s.target == "default").map(|s| s.due + s.running + s.blocked).sum();
        if busy == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the demo did not settle: {stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in workers {
        w.shutdown().await;
    }
    source.url
}

/// Counts rows per state with plain SQL, independently of the library.
pub fn state_counts(url: &str) -> std::collections::BTreeMap<String, i64> {
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        state: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let path = orch_tui::source::sqlite_path(url);
    let mut conn = SqliteConnection::establish(path).unwrap();
    diesel::sql_query("SELECT state, COUNT(*) AS n FROM orch_commands GROUP BY state")
        .load::<Row>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| (r.state, r.n))
        .collect()
}
