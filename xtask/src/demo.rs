//! `cargo xtask demo [--url …] [--scale N] [--workers N] [--once]`: fills a store with
//! demo work and keeps workers running (the `demo` example of `orch-tui`), so the
//! monitor can be watched moving: `cargo run -p orch-tui -- <url>` in another terminal.

use crate::cargo;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut command = vec!["run", "-p", "orch-tui", "--example", "demo", "--"];
    command.extend(args.iter().map(String::as_str));
    cargo(&command)
}
