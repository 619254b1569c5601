//! `cargo xtask test --backend …`: the conformance suite per backend.

use crate::cargo;

/// The backends this workspace has, each with its integration test target.
const BACKENDS: &[(&str, &str)] = &[("sqlite", "sqlite")];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut selected = "all".to_owned();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--backend" => {
                selected = rest.next().ok_or("`--backend` needs a value")?.clone();
            }
            other => return Err(format!("unknown argument `{other}` for `test`")),
        }
    }
    let chosen: Vec<&(&str, &str)> = if selected == "all" {
        BACKENDS.iter().collect()
    } else {
        match BACKENDS.iter().find(|(name, _)| *name == selected) {
            Some(b) => vec![b],
            None => {
                let known: Vec<&str> = BACKENDS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown backend `{selected}`; this workspace has: {}, all",
                    known.join(", ")
                ));
            }
        }
    };
    let mut summary = Vec::new();
    for (name, target) in chosen {
        let result = cargo(&["test", "-p", "orch-tests", "--test", target]);
        summary.push((name, result.is_ok()));
    }
    println!("\nbackend results:");
    for (name, ok) in &summary {
        println!("  {name:<8} {}", if *ok { "passed" } else { "FAILED" });
    }
    if summary.iter().all(|(_, ok)| *ok) { Ok(()) } else { Err("some backends failed".into()) }
}
