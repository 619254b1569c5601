//! The fault soak's long profile (`cargo xtask chaos`): worker processes killed with
//! SIGKILL and paused past their leases while they run commands, then the checker's
//! report per backend. Exits non-zero when any rule broke.
//!
//! `orch-chaos [--backend pg|mysql|sqlite|all] [--commands N] [--kills K] [--pauses P]
//! [--connection-kills C] [--restarts R] [--workers W] [--seed S]`; PostgreSQL and MariaDB
//! run when `ORCH_PG_URL` / `ORCH_MYSQL_URL` are set, on a private server of the
//! machine's own binaries when `--restarts` is above 0 (10 by default). Reports are also written as JSON under `target/chaos/`.

use std::process::ExitCode;

use orch_tests::chaos::{self, Plan};

fn value<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{name} needs a value")),
    }
}

async fn run(args: &[String]) -> Result<bool, String> {
    let known = [
        "--backend",
        "--commands",
        "--kills",
        "--pauses",
        "--connection-kills",
        "--restarts",
        "--workers",
        "--seed",
    ];
    if let Some(unknown) = args.iter().step_by(2).find(|a| !known.contains(&a.as_str())) {
        return Err(format!("unknown argument {unknown}; expected one of {known:?}"));
    }
    let mut plan = Plan::long(value(args, "--seed")?.unwrap_or_else(chaos::seed));
    plan.commands = value(args, "--commands")?.unwrap_or(plan.commands);
    plan.kills = value(args, "--kills")?.unwrap_or(plan.kills);
    plan.pauses = value(args, "--pauses")?.unwrap_or(plan.pauses);
    plan.connection_kills = value(args, "--connection-kills")?.unwrap_or(plan.connection_kills);
    plan.workers = value(args, "--workers")?.unwrap_or(plan.workers);
    plan.restarts = value(args, "--restarts")?.unwrap_or(plan.restarts);
    if plan.workers == 0 || plan.commands == 0 {
        return Err("--workers and --commands must be at least 1".into());
    }
    let backends: Vec<&str> = match value::<String>(args, "--backend")?.as_deref().unwrap_or("all") {
        "all" => vec!["sqlite", "postgres", "mysql"],
        "sqlite" => vec!["sqlite"],
        "pg" | "postgres" => vec!["postgres"],
        "mysql" | "mariadb" => vec!["mysql"],
        other => return Err(format!("unknown backend {other}; expected pg, mysql, sqlite or all")),
    };
    let binary = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("orch-test-worker");
    if !binary.exists() {
        return Err(format!(
            "{} is missing; build it with `cargo build --release -p orch-tests --bins`",
            binary.display()
        ));
    }
    let out = std::path::Path::new("target/chaos");
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut clean = true;
    for backend in backends {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut server = None;
        if backend != "sqlite" && plan.restarts > 0 && configured(backend) {
            let started = orch_tests::server::PrivateServer::start_new(backend).await;
            server = Some(started.map_err(|e| format!("a private {backend} server for the restarts: {e}"))?);
        }
        let Some((target, store)) = chaos::fresh_target(backend, &binary, dir.path(), server.as_ref()).await
        else {
            println!("== {backend}: skipped (no server URL)");
            continue;
        };
        println!("== {backend}: {plan:?}");
        let report = chaos::soak(&target, store, plan, server.as_mut()).await;
        println!("{report}");
        let file = out.join(format!("{backend}-{}.json", plan.seed));
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(&file, json).map_err(|e| format!("writing {}: {e}", file.display()))?;
        clean &= report.is_clean();
    }
    Ok(clean)
}

/// Whether the backend's URL is set (the private server stands in for it).
fn configured(backend: &str) -> bool {
    let var = if backend == "postgres" { "ORCH_PG_URL" } else { "ORCH_MYSQL_URL" };
    std::env::var(var).is_ok_and(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("orch-chaos: a rule broke; see the report above");
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("orch-chaos: {message}");
            ExitCode::from(2)
        }
    }
}
