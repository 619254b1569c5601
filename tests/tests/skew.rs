//! Clock skew: two worker processes, one with its clock 30 s ahead of the database's
//! and one 30 s behind, share long commands and delayed ones. With the clock
//! correction `Orch` makes by default, no live lease is taken back and no delayed
//! command starts more than a poll interval before its due time by the database's
//! clock. The same run without the correction (SQLite) shows both rules broken, so the
//! checks can fail.

use orch_tests::chaos;
use orch_tests::skew;

const BINARY: &str = env!("CARGO_BIN_EXE_orch-test-worker");

async fn skewed(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some((target, store)) = chaos::fresh_target(backend, BINARY.as_ref(), dir.path(), None).await else {
        return;
    };
    let report = skew::run(&target, store, true, 64, 200).await;
    eprintln!("{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.by_process.len(), 2, "both skewed processes ran commands: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_skewed_clocks_are_corrected() {
    skewed("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn postgres_skewed_clocks_are_corrected() {
    skewed("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_skewed_clocks_are_corrected() {
    skewed("mysql").await;
}

/// Without the correction the process 30 s ahead takes the other's live leases back
/// and starts delayed commands as soon as they are pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_skew_without_correction_breaks_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (target, store) = chaos::fresh_target("sqlite", BINARY.as_ref(), dir.path(), None).await.unwrap();
    let report = skew::run(&target, store, false, 64, 200).await;
    eprintln!("{report}");
    assert!(report.leases_taken_back > 0, "live leases were taken back: {report}");
    assert!(!report.early.is_empty(), "delayed commands ran early: {report}");
}
