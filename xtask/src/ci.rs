//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.

use crate::cargo;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if let Some(extra) = args.first() {
        return Err(format!("`ci` takes no arguments, got `{extra}`"));
    }
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    cargo(&["test", "--workspace"])?;
    cargo(&["run", "-p", "orch-sqlite", "--example", "quickstart"])?;
    println!("ci: all checks passed");
    Ok(())
}
