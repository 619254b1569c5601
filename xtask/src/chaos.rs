//! `cargo xtask chaos [--backend pg|mysql|sqlite|all] [--commands N] [--kills K]
//! [--pauses P] [--connection-kills C] [--restarts R] [--workers W] [--seed S]`: the fault
//! soak's long profile (`orch-chaos` in the `tests` crate), in release mode; with
//! restarts (10 by default) the server backends run on private servers the soak starts. Server backends run when
//! `ORCH_PG_URL` / `ORCH_MYSQL_URL` are set; reports are printed and written as JSON
//! under `target/chaos/`.

use crate::cargo;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    // The soak starts `orch-test-worker` processes from beside its own executable.
    cargo(&["build", "--release", "-p", "orch-tests", "--bin", "orch-test-worker"])?;
    let mut command = vec!["run", "--release", "-p", "orch-tests", "--bin", "orch-chaos", "--"];
    command.extend(args.iter().map(String::as_str));
    cargo(&command)
}
