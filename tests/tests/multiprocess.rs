//! 10,000 commands shared by separate worker processes on one database: each runs
//! exactly once, and the half targeted at a named instance runs only there.

use orch_tests::harness::ServerHarness;
use orch_tests::multiprocess::Processes;

const PROCESSES: Processes<'static> =
    Processes { binary: env!("CARGO_BIN_EXE_orch-test-worker"), default_workers: 2, special_workers: 2 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn postgres_processes_share_the_queue() {
    let Some(harness) = ServerHarness::postgres() else { return };
    orch_tests::multiprocess::run(&harness, 10_000, PROCESSES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_processes_share_the_queue() {
    let Some(harness) = ServerHarness::mysql() else { return };
    orch_tests::multiprocess::run(&harness, 10_000, PROCESSES).await;
}
