//! `cargo xtask test --backend …`: the conformance suite, the property test and the
//! backend's own integration tests, per backend, with a summary of which ran.

use crate::cargo;

/// A backend: its name, the variable holding its server URL (none for SQLite), and
/// the `cargo test` argument lists that run its tests (the backend crate's own, the
/// conformance suite, the multi-process test, the fault and security tests).
struct Backend {
    name: &'static str,
    aliases: &'static [&'static str],
    url_var: Option<&'static str>,
    runs: &'static [&'static [&'static str]],
}

const BACKENDS: &[Backend] = &[
    Backend {
        name: "sqlite",
        aliases: &[],
        url_var: None,
        runs: &[
            &["-p", "orch-sqlite"],
            &["-p", "orch-tests", "--test", "sqlite"],
            &["-p", "orch-tests", "--test", "chaos", "sqlite"],
            &["-p", "orch-tests", "--test", "skew", "sqlite"],
            &["-p", "orch-tests", "--test", "readonly", "sqlite"],
            &["-p", "orch-tests", "--test", "encryption", "sqlite"],
            &[
                "-p",
                "orch-tests",
                "--test",
                "identifiers",
                "--",
                "--exact",
                "generated_prefixes_never_reach_other_tables",
            ],
        ],
    },
    Backend {
        name: "pg",
        aliases: &["postgres", "postgresql"],
        url_var: Some("ORCH_PG_URL"),
        runs: &[
            &["-p", "orch-diesel-pg"],
            &["-p", "orch-tests", "--test", "postgres"],
            &["-p", "orch-tests", "--test", "multiprocess", "postgres"],
            &["-p", "orch-tests", "--test", "privilege", "pg"],
            &["-p", "orch-tests", "--test", "readonly", "pg"],
            &["-p", "orch-tests", "--test", "encryption", "pg"],
            &["-p", "orch-tests", "--test", "chaos", "postgres"],
            &["-p", "orch-tests", "--test", "restarts", "postgres"],
            &["-p", "orch-tests", "--test", "skew", "postgres"],
            &["-p", "orch-tests", "--test", "identifiers", "postgres"],
            &["-p", "orch-tests", "--test", "cancellation", "postgres"],
        ],
    },
    Backend {
        name: "mysql",
        aliases: &["mariadb"],
        url_var: Some("ORCH_MYSQL_URL"),
        runs: &[
            &["-p", "orch-diesel-mysql"],
            &["-p", "orch-tests", "--test", "mysql"],
            &["-p", "orch-tests", "--test", "multiprocess", "mysql"],
            &["-p", "orch-tests", "--test", "privilege", "mysql"],
            &["-p", "orch-tests", "--test", "readonly", "mysql"],
            &["-p", "orch-tests", "--test", "encryption", "mysql"],
            &["-p", "orch-tests", "--test", "chaos", "mysql"],
            &["-p", "orch-tests", "--test", "restarts", "mysql"],
            &["-p", "orch-tests", "--test", "skew", "mysql"],
            &["-p", "orch-tests", "--test", "identifiers", "mysql"],
            &["-p", "orch-tests", "--test", "cancellation", "mysql"],
        ],
    },
];

enum Outcome {
    Passed,
    Failed,
    Skipped(String),
}

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
    let chosen: Vec<&Backend> = if selected == "all" {
        BACKENDS.iter().collect()
    } else {
        match BACKENDS.iter().find(|b| b.name == selected || b.aliases.contains(&selected.as_str())) {
            Some(b) => vec![b],
            None => {
                let known: Vec<&str> = BACKENDS.iter().map(|b| b.name).collect();
                return Err(format!(
                    "unknown backend `{selected}`; choose one of: {}, all",
                    known.join(", ")
                ));
            }
        }
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut summary = Vec::new();
    for backend in chosen {
        if let Some(var) = backend.url_var
            && std::env::var(var).map_or(true, |v| v.is_empty())
        {
            let reason = format!("{var} is not set");
            if ci {
                return Err(format!("{reason}, and CI=true requires the {} tests to run", backend.name));
            }
            summary.push((backend.name, Outcome::Skipped(reason)));
            continue;
        }
        let mut ok = true;
        for args in backend.runs {
            let mut cmd = vec!["test"];
            cmd.extend_from_slice(args);
            ok &= cargo(&cmd).is_ok();
        }
        summary.push((backend.name, if ok { Outcome::Passed } else { Outcome::Failed }));
    }
    println!("\nbackend results:");
    for (name, result) in &summary {
        match result {
            Outcome::Passed => println!("  {name:<8} ran, passed"),
            Outcome::Failed => println!("  {name:<8} ran, FAILED"),
            Outcome::Skipped(why) => println!("  {name:<8} skipped ({why})"),
        }
    }
    if summary.iter().any(|(_, r)| matches!(r, Outcome::Failed)) {
        Err("some backends failed".into())
    } else {
        Ok(())
    }
}
