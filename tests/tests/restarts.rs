//! Database restarts under load: a private PostgreSQL cluster and a private MariaDB
//! instance (the machine's own binaries, in a temporary directory, on a free port) are
//! stopped and started five times each while worker processes run commands, among
//! SIGKILLs and connection kills; nothing is lost or stuck, no worker process exits,
//! and processing resumes within 10 s of the server taking connections again.
//! `cargo xtask chaos --restarts N` runs the long profile.

use orch_tests::chaos::{self, Plan};
use orch_tests::server::PrivateServer;

const BINARY: &str = env!("CARGO_BIN_EXE_orch-test-worker");

async fn restart_soak(backend: &str) {
    let mut server = match PrivateServer::start_new(backend).await {
        Ok(server) => server,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true: {e}"),
        Err(e) => {
            eprintln!("skipped: no private {backend} server: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (target, store) = chaos::fresh_target(backend, BINARY.as_ref(), dir.path(), Some(&server))
        .await
        .expect("a target on the private server");
    let report = chaos::soak(&target, store, Plan::restarts(chaos::seed()), Some(&mut server)).await;
    eprintln!("{report}");
    report.assert_clean();
    assert_eq!(report.restarts, 5, "the server was restarted: {report}");
    assert!(report.connections_killed > 0, "connections were killed: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_under_load() {
    restart_soak("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_restarts_under_load() {
    restart_soak("mysql").await;
}
