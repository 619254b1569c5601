//! The quick start: two command types on a SQLite file, one chaining the other.
//!
//! ```text
//! cargo run -p orch-sqlite --example quickstart
//! ```
//!
//! Pushes a `send_email` and a `generate_report`; the report, once generated, chains a
//! `send_email` to its owner. A worker runs all three; the program prints every stored
//! command and exits 0 when all succeeded. `RUST_LOG=orch=debug` shows the worker's log.

use std::sync::Arc;
use std::time::Duration;

use orch_sqlite::SqliteStore;
use orch_sqlite::orch::store::ListParams;
use orch_sqlite::orch::{
    Command, Context, HandlerError, NewCommand, Orch, Registry, Store, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};

/// Input only: the output is `()`.
#[derive(Debug, Serialize, Deserialize)]
struct SendEmailCommand {
    to: String,
    subject: String,
}

impl Command for SendEmailCommand {
    type Output = ();
    const TIMEOUT: Duration = Duration::from_secs(120);
    const RETRIES: u32 = 5;
}

/// Input and output; chains an email on success.
#[derive(Debug, Serialize, Deserialize)]
struct GenerateReportCommand {
    report_id: u32,
    owner: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    url: String,
    rows: u64,
}

impl Command for GenerateReportCommand {
    type Output = Report;

    fn on_success(&self, report: &Report) -> Vec<NewCommand> {
        vec![NewCommand::of(&SendEmailCommand {
            to: self.owner.clone(),
            subject: format!("Report {} is ready: {} rows at {}", self.report_id, report.rows, report.url),
        })]
    }
}

async fn send_email(cmd: SendEmailCommand, ctx: Context) -> Result<(), HandlerError> {
    tracing::info!(to = %cmd.to, subject = %cmd.subject, attempt = ctx.attempt(), "sending email");
    Ok(())
}

async fn generate_report(cmd: GenerateReportCommand, _ctx: Context) -> Result<Report, HandlerError> {
    Ok(Report { url: format!("https://reports.example.com/{}", cmd.report_id), rows: 1_204 })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("orch-quickstart.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    println!("database: {}", path.display());

    let store = SqliteStore::open(&path)?;
    store.migrate().await?;
    let orch = Orch::new(Arc::new(store));

    let mut registry = Registry::new();
    registry.register_fn(send_email)?.register_fn(generate_report)?;
    let config = WorkerConfig { poll_interval: Duration::from_millis(200), ..WorkerConfig::default() };
    let worker = Worker::new(orch.clone(), registry, config)?.start();

    let email = orch
        .push(&SendEmailCommand { to: "ada@example.com".into(), subject: "Welcome to orch".into() })
        .await?;
    let report =
        orch.push(&GenerateReportCommand { report_id: 42, owner: "grace@example.com".into() }).await?;
    println!("pushed send_email {email} and generate_report {report}");

    // Both commands, then the email chained by the report.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = orch.store().list(ListParams::default()).await?;
        if all.len() >= 3 && all.iter().all(|c| c.state.is_terminal()) {
            break all;
        }
        if tokio::time::Instant::now() > deadline {
            worker.shutdown().await;
            return Err("commands did not finish within 30 s".into());
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), orch.wait(report)).await;
    };
    worker.shutdown().await;

    println!();
    println!("{:<36}  {:<16}  {:<9}  {:>8}  output", "id", "name", "state", "attempts");
    for c in &all {
        let parent = c.parent_id.map(|p| format!("  (follow-up of {p})")).unwrap_or_default();
        println!(
            "{:<36}  {:<16}  {:<9}  {:>8}  {}{parent}",
            c.id.to_string(),
            c.name,
            c.state.as_str(),
            format!("{}/{}", c.attempts, c.max_attempts),
            c.output.as_deref().unwrap_or("-"),
        );
    }
    let ok = all.iter().all(|c| c.state == orch_sqlite::orch::State::Succeeded);
    println!();
    println!("{}", if ok { "all commands succeeded" } else { "some commands did not succeed" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
