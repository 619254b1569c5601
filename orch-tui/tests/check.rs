//! `orch-tui check` and `orch-tui snapshot --json`, run as a script would: exit 0 when
//! the thresholds hold, 1 (with the reason) when one is exceeded, 2 when the store
//! cannot be read.

mod store;

use std::process::{Command, Output};

fn orch_tui(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orch-tui")).args(args).output().expect("run orch-tui")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exit_codes_and_snapshot_json() {
    let dir = tempfile::tempdir().unwrap();
    let url = store::settled(dir.path()).await;
    let counts = store::state_counts(&url);
    let failed = counts.get("failed").copied().unwrap_or(0);
    assert!(failed > 0);

    let ok = orch_tui(&["check", &url, "--max-failed", &failed.to_string(), "--max-pending-age", "1h"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).starts_with("OK: "), "{}", stdout(&ok));

    let too_many = orch_tui(&["check", &url, "--max-failed", &(failed - 1).to_string()]);
    assert_eq!(too_many.status.code(), Some(1));
    assert!(stdout(&too_many).contains(&format!("FAIL: {failed} failed commands, more than {}", failed - 1)));

    // The warehouse commands are due and nobody runs them, so they wait.
    let too_old = orch_tui(&["check", &url, "--max-pending-age", "1ms"]);
    assert_eq!(too_old.status.code(), Some(1));
    assert!(stdout(&too_old).contains("the oldest due pending command has waited"), "{}", stdout(&too_old));

    let missing = orch_tui(&["check", &format!("sqlite://{}/absent.db", dir.path().display())]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stdout(&missing).contains("no SQLite database"), "{}", stdout(&missing));
    let refused = orch_tui(&["check", "postgres://monitor:secret@127.0.0.1:9/jobs"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stdout(&refused).contains("postgres://monitor:***@127.0.0.1:9/jobs"), "{}", stdout(&refused));
    assert!(!stdout(&refused).contains("secret"));

    let snapshot = orch_tui(&["snapshot", "--json", &url]);
    assert_eq!(snapshot.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&snapshot.stdout).expect("JSON");
    assert_eq!(json["counts"]["failed"].as_i64(), Some(failed));
    assert_eq!(json["counts"]["succeeded"].as_i64(), counts.get("succeeded").copied());
    assert_eq!(json["backend"], "sqlite");

    let usage = orch_tui(&["check"]);
    assert_eq!(usage.status.code(), Some(64));
}
