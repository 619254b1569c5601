//! The fault harness's short profile on every backend: worker processes killed with
//! SIGKILL and paused past their leases while they run commands, and on the servers
//! every database connection killed again and again; nothing lost, nothing completed
//! from a stale lease, every duplicate execution explained by a fault, no worker
//! process gone.
//! `cargo xtask chaos` runs the long profile. `ORCH_CHAOS_SEED` replays a run.

use orch_tests::chaos::{self, Plan};

const BINARY: &str = env!("CARGO_BIN_EXE_orch-test-worker");

async fn short_soak(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some((target, store)) = chaos::fresh_target(backend, BINARY.as_ref(), dir.path(), None).await else {
        return;
    };
    let report = chaos::soak(&target, store, Plan::short(chaos::seed()), None).await;
    eprintln!("{report}");
    report.assert_clean();
    assert!(report.kills >= 10 && report.pauses >= 1, "the faults happened: {report}");
    if backend != "sqlite" {
        assert!(report.connections_killed >= 12, "connections were killed: {report}");
    }
    // The pause caught work in flight: other workers took leases back from it.
    assert!(report.paused_leases_taken_back > 0, "the pause caught work in flight: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_soak_under_kills_and_pauses() {
    short_soak("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn postgres_soak_under_kills_and_pauses() {
    short_soak("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_soak_under_kills_and_pauses() {
    short_soak("mysql").await;
}
