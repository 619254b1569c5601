//! `cargo xtask bench [--backend pg|mysql|sqlite|all] [--commands N] [--concurrency C]
//! [--prefetch P] [--max-pull M] [--poll-ms MS] [--history H] [--skip-push]`: the
//! release-mode benchmark (`orch-bench` in the `tests` crate). It
//! prints a table and writes JSON under `target/bench/`. Server backends run when
//! `ORCH_PG_URL` / `ORCH_MYSQL_URL` are set.

use crate::cargo;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut command = vec!["run", "--release", "-p", "orch-tests", "--bin", "orch-bench", "--"];
    command.extend(args.iter().map(String::as_str));
    cargo(&command)
}
