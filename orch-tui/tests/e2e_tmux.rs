//! The real binary in a real terminal (tmux) on a SQLite demo store: the overview
//! shows the store's counts, `3` and `/state:failed` narrow the list to failed
//! commands, `Enter` opens one with its journal, `q` exits 0.
//!
//! Every wait polls the captured pane with a deadline. Without tmux the test is
//! skipped with a message, except under `CI=true`, where it fails.

#![allow(clippy::disallowed_methods, reason = "deadlines for polling a real terminal")]

mod store;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "mon"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "mon"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    /// Polls the pane until `check` accepts it, or fails with the last capture.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.capture();
            if check(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn tmux_available() -> bool {
    Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// The number after `label` on the overview's state table (`│failed     14 …`).
fn count_on_screen(screen: &str, label: &str) -> Option<i64> {
    screen.lines().find_map(|line| {
        let rest = line.trim_start_matches('│').strip_prefix(label)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_in_tmux() {
    if !tmux_available() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "tmux is required under CI=true");
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = store::settled(dir.path()).await;
    let counts = store::state_counts(&url);
    let exit_file = dir.path().join("exit");
    let tmux = Tmux { socket: format!("orch-e2e-{}", std::process::id()) };
    let command = format!(
        "{} {url} --refresh 250ms; echo $? > {}",
        env!("CARGO_BIN_EXE_orch-tui"),
        exit_file.display()
    );
    let out = tmux.cmd(&["new-session", "-d", "-s", "mon", "-x", "120", "-y", "40", &command]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));

    // The overview, with the store's own counts.
    let screen = tmux.wait_for("the overview", |s| count_on_screen(s, "succeeded").is_some());
    assert!(screen.contains("READ-ONLY"), "{screen}");
    let get = |state: &str| counts.get(state).copied().unwrap_or(0);
    for state in ["blocked", "running", "succeeded", "failed", "cancelled"] {
        assert_eq!(count_on_screen(&screen, state), Some(get(state)), "{state} on screen vs SQL:\n{screen}");
    }
    let pending =
        count_on_screen(&screen, "pending").unwrap() + count_on_screen(&screen, "scheduled").unwrap();
    assert_eq!(pending, get("pending"), "pending + scheduled on screen vs SQL:\n{screen}");
    let failed = get("failed");
    assert!(failed > 0, "the demo mix has failures: {counts:?}");

    // `3`, then a filter: only failed commands are listed, all of them.
    tmux.keys(&["3"]);
    tmux.wait_for("the command list", |s| s.contains("filter none"));
    tmux.keys(&["/", "state:failed", "Enter"]);
    let screen = tmux.wait_for("the filtered list", |s| {
        s.contains("filter state:failed") && s.contains(&format!("Commands ({failed} on page)"))
    });
    let rows: Vec<&str> =
        screen.lines().filter(|l| l.contains(" default ") || l.contains(" warehouse ")).collect();
    assert_eq!(rows.len() as i64, failed, "{screen}");
    assert!(rows.iter().all(|r| r.contains(" failed ")), "{screen}");

    // Enter opens the first one, journal included.
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the detail", |s| s.contains("journal (") && s.contains("enqueued"));
    assert!(screen.contains("state       failed"), "{screen}");

    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(&exit_file).exists() {
        assert!(Instant::now() < deadline, "the monitor did not exit; the screen:\n{}", tmux.capture());
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = std::fs::read_to_string(&exit_file).unwrap();
    assert_eq!(code.trim(), "0", "exit status");
}
