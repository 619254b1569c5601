//! A workflow on SQLite: an order is charged, then (concurrently) its stock is reserved
//! and a receipt drafted, then it is shipped with both results.
//!
//! ```text
//! cargo run -p orch-sqlite --example workflow
//! ```
//!
//! `payments` runs first; `inventory` and `receipt` depend on it and run at the same
//! time; `shipping` depends on both and reads their outputs. The program prints each
//! step in the order it finished, with what it read, and exits 0 when the workflow
//! succeeded. `RUST_LOG=orch=debug` shows the worker's log.

use std::sync::Arc;
use std::time::Duration;

use orch_sqlite::SqliteStore;
use orch_sqlite::orch::{
    Command, Context, HandlerError, NewCommand, Orch, Registry, Store, Worker, WorkerConfig, Workflow,
    WorkflowState,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct ChargeCommand {
    order: u64,
    cents: u64,
}

impl Command for ChargeCommand {
    /// The payment reference.
    type Output = String;
}

#[derive(Debug, Serialize, Deserialize)]
struct ReserveStockCommand {
    order: u64,
}

impl Command for ReserveStockCommand {
    /// The warehouse the stock was reserved in.
    type Output = String;
}

#[derive(Debug, Serialize, Deserialize)]
struct DraftReceiptCommand {
    order: u64,
}

impl Command for DraftReceiptCommand {
    /// The receipt text.
    type Output = String;
}

#[derive(Debug, Serialize, Deserialize)]
struct ShipCommand {
    order: u64,
}

impl Command for ShipCommand {
    /// The tracking number.
    type Output = String;
}

async fn charge(cmd: ChargeCommand, _ctx: Context) -> Result<String, HandlerError> {
    Ok(format!("pay-{}-{}", cmd.order, cmd.cents))
}

async fn reserve_stock(cmd: ReserveStockCommand, ctx: Context) -> Result<String, HandlerError> {
    let payment = ctx.dependency_output::<ChargeCommand>("payments").await?;
    println!("  inventory  reserves order {} (paid by {payment})", cmd.order);
    Ok("warehouse-east".to_owned())
}

async fn draft_receipt(cmd: DraftReceiptCommand, ctx: Context) -> Result<String, HandlerError> {
    let payment = ctx.dependency_output::<ChargeCommand>("payments").await?;
    println!("  receipt    drafts a receipt for order {} ({payment})", cmd.order);
    Ok(format!("Receipt for order {}: {payment}", cmd.order))
}

async fn ship(cmd: ShipCommand, ctx: Context) -> Result<String, HandlerError> {
    let warehouse = ctx.dependency_output::<ReserveStockCommand>("inventory").await?;
    let receipt = ctx.dependency_output::<DraftReceiptCommand>("receipt").await?;
    println!("  shipping   ships order {} from {warehouse} with \"{receipt}\"", cmd.order);
    Ok(format!("TRACK-{}", cmd.order))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let path = std::env::temp_dir().join("orch-workflow.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteStore::open(&path)?;
    store.migrate().await?;
    let orch = Orch::new(Arc::new(store));

    let mut registry = Registry::new();
    registry
        .register_fn(charge)?
        .register_fn(reserve_stock)?
        .register_fn(draft_receipt)?
        .register_fn(ship)?;
    let config = WorkerConfig { poll_interval: Duration::from_millis(200), ..WorkerConfig::default() };
    let worker = Worker::new(orch.clone(), registry, config)?.start();

    let order = 1_042;
    let workflow = Workflow::builder()
        .step("payments", NewCommand::of(&ChargeCommand { order, cents: 4_999 }))
        .step_after("inventory", NewCommand::of(&ReserveStockCommand { order }), ["payments"])
        .step_after("receipt", NewCommand::of(&DraftReceiptCommand { order }), ["payments"])
        .step_after("shipping", NewCommand::of(&ShipCommand { order }), ["inventory", "receipt"])
        .build()?;
    println!("database: {}", path.display());
    println!("steps:");
    for (step, depends_on) in workflow.steps() {
        println!(
            "  {step:<10} after {}",
            if depends_on.is_empty() { "-".to_owned() } else { depends_on.join(", ") }
        );
    }
    let id = orch.start_workflow(workflow).await?;
    println!("started workflow {id}; path taken:");

    let status = tokio::time::timeout(Duration::from_secs(30), orch.wait_workflow(id)).await??;
    worker.shutdown().await;

    println!();
    let mut finished: Vec<_> = Vec::new();
    for step in &status.steps {
        let record = orch.get(step.command_id).await?.ok_or("a step vanished")?;
        finished.push((record.finished_at, step.name.clone(), record.state, record.output));
    }
    finished.sort();
    for (_, name, state, output) in &finished {
        println!("{name:<10} {state:<9} {}", output.as_deref().unwrap_or("-"));
    }
    println!();
    println!("workflow {id} {}", status.state);
    if status.state != WorkflowState::Succeeded {
        std::process::exit(1);
    }
    Ok(())
}
