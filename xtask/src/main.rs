//! Developer automation: `cargo xtask <command>`.
//!
//! - `ci`: formatting check, clippy with warnings denied, the whole test suite, and
//!   the quick start.
//! - `test [--backend sqlite|pg|mysql|all]`: the conformance suite, property test and
//!   backend tests per backend, with a summary of which backends ran and which were
//!   skipped (a server backend runs when `ORCH_PG_URL` / `ORCH_MYSQL_URL` is set).
//! - `bench [--backend …] [--commands N]`: the release-mode benchmark, figures printed
//!   and written as JSON under `target/bench/`.
//! - `chaos [--backend …] [--commands N] [--kills K] [--restarts R]`: the fault soak's
//!   long profile, worker processes killed and paused and servers restarted under load,
//!   then checked.
//! - `demo [--url …]`: fills a store with demo work and keeps workers running, to
//!   watch with `orch-tui`.

mod bench;
mod chaos;
mod ci;
mod demo;
mod test;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    let commands = [
        ("ci", "fmt check, clippy -D warnings, all tests, the quick start"),
        ("test [--backend sqlite|pg|mysql|all]", "the suite per backend, with a summary of what ran;"),
        ("", "pg and mysql run when ORCH_PG_URL / ORCH_MYSQL_URL are set"),
        ("demo [--url U] [--scale N] [--once]", "fill a store (default sqlite://target/demo.db) with demo"),
        ("", "work and keep workers running; watch it with orch-tui"),
        (
            "bench [--backend B] [--commands N] [--prefetch P] [--max-pull M]",
            "release-mode benchmark per backend (push, process,",
        ),
        ("", "pickup latency, idle calls, 1M-row history); JSON in target/bench/"),
        (
            "chaos [--backend B] [--commands N] [--kills K] [--pauses P]",
            "fault soak: worker processes killed (SIGKILL) and",
        ),
        ("", "paused (SIGSTOP), connections killed and servers restarted"),
        ("", "(--connection-kills C --restarts R) under load, then checked;"),
        ("", "JSON in target/chaos/"),
        ("help", "this text"),
    ];
    println!("cargo xtask <command>\n\ncommands:");
    for (command, what) in commands {
        println!("  {command:<38} {what}");
    }
}

/// Runs `cargo` with `args` from the workspace root, echoing the command line.
pub(crate) fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`cargo {}` failed ({status})", args.join(" "))) }
}

fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(std::path::Path::to_path_buf).unwrap_or(manifest)
}
