//! The order saga on SQLite: created → awaiting payment → awaiting inventory →
//! awaiting shipment → completed, and the failure path where inventory fails and the
//! payment is refunded by compensation.
//!
//! ```text
//! cargo run -p orch-sqlite --example saga
//! ```
//!
//! Two orders are placed: order 1 goes all the way; order 2 is out of stock, so its
//! saga compensates. The program prints each saga's path (every transition, in order)
//! and exits 0 when order 1 completed and order 2 was compensated.

use std::sync::Arc;
use std::time::Duration;

use orch_sqlite::SqliteStore;
use orch_sqlite::orch::saga::event_command_name;
use orch_sqlite::orch::store::ListParams;
use orch_sqlite::orch::{
    Command, Context, HandlerError, NewCommand, Orch, Registry, SagaEvent, SagaMachine, SagaStatus, State,
    Store, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    order: u64,
    payment: Option<String>,
    tracking: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order: u64,
}
impl SagaEvent for OrderCreated {}

#[derive(Serialize, Deserialize)]
struct PaymentReceived {
    payment: String,
}
impl SagaEvent for PaymentReceived {}

#[derive(Serialize, Deserialize)]
struct InventoryReserved;
impl SagaEvent for InventoryReserved {}

#[derive(Serialize, Deserialize)]
struct InventoryFailed {
    reason: String,
}
impl SagaEvent for InventoryFailed {}

#[derive(Serialize, Deserialize)]
struct OrderShipped {
    tracking: String,
}
impl SagaEvent for OrderShipped {}

#[derive(Serialize, Deserialize)]
struct ChargeCommand {
    order: u64,
}
impl Command for ChargeCommand {
    type Output = ();
}

#[derive(Serialize, Deserialize)]
struct ReserveStockCommand {
    order: u64,
}
impl Command for ReserveStockCommand {
    type Output = ();
}

#[derive(Serialize, Deserialize)]
struct ShipCommand {
    order: u64,
}
impl Command for ShipCommand {
    type Output = ();
}

#[derive(Serialize, Deserialize)]
struct RefundCommand {
    payment: String,
}
impl Command for RefundCommand {
    type Output = ();
}

fn order_saga() -> orch_sqlite::orch::Result<SagaMachine<Order>> {
    SagaMachine::<Order>::builder("order")
        .initially()
        .when::<OrderCreated>()
        .then(|step, created| {
            step.data_mut().order = created.order;
            step.push(NewCommand::of(&ChargeCommand { order: created.order }));
            Ok(())
        })
        .transition_to("awaiting_payment")
        .during("awaiting_payment")
        .when::<PaymentReceived>()
        .then(|step, paid| {
            step.data_mut().payment = Some(paid.payment.clone());
            // Registered now, run only if a later step fails.
            step.compensate_with(NewCommand::of(&RefundCommand { payment: paid.payment.clone() }));
            let order = step.data().order;
            step.push(NewCommand::of(&ReserveStockCommand { order }));
            Ok(())
        })
        .transition_to("awaiting_inventory")
        .during("awaiting_inventory")
        .when::<InventoryReserved>()
        .then(|step, _| {
            let order = step.data().order;
            step.push(NewCommand::of(&ShipCommand { order }));
            Ok(())
        })
        .transition_to("awaiting_shipment")
        .during("awaiting_inventory")
        .when::<InventoryFailed>()
        .compensate()
        .during("awaiting_shipment")
        .when::<OrderShipped>()
        .then(|step, shipped| {
            step.data_mut().tracking = Some(shipped.tracking.clone());
            Ok(())
        })
        .transition_to("completed")
        .final_states(["completed"])
        .timeout(Duration::from_secs(3_600))
        .build()
}

async fn charge(cmd: ChargeCommand, ctx: Context) -> Result<(), HandlerError> {
    let payment = format!("pay-{}", cmd.order);
    ctx.orch().publish("order", &cmd.order.to_string(), &PaymentReceived { payment }).await?;
    Ok(())
}

async fn reserve_stock(cmd: ReserveStockCommand, ctx: Context) -> Result<(), HandlerError> {
    let key = cmd.order.to_string();
    if cmd.order.is_multiple_of(2) {
        ctx.orch().publish("order", &key, &InventoryFailed { reason: "out of stock".into() }).await?;
    } else {
        ctx.orch().publish("order", &key, &InventoryReserved).await?;
    }
    Ok(())
}

async fn ship(cmd: ShipCommand, ctx: Context) -> Result<(), HandlerError> {
    let tracking = format!("TRACK-{}", cmd.order);
    ctx.orch().publish("order", &cmd.order.to_string(), &OrderShipped { tracking }).await?;
    Ok(())
}

async fn refund(cmd: RefundCommand, _ctx: Context) -> Result<(), HandlerError> {
    println!("  (refunding {})", cmd.payment);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,orch::worker=error")),
        )
        .init();

    let path = std::env::temp_dir().join("orch-saga.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    println!("database: {}", path.display());
    let store = SqliteStore::open(&path)?;
    store.migrate().await?;
    let orch = Orch::new(Arc::new(store));

    let mut registry = Registry::new();
    registry.register_saga(order_saga()?)?;
    registry.register_fn(charge)?.register_fn(reserve_stock)?.register_fn(ship)?.register_fn(refund)?;
    let config = WorkerConfig { poll_interval: Duration::from_millis(200), ..WorkerConfig::default() };
    let worker = Worker::new(orch.clone(), registry, config)?.start();

    for order in [1u64, 2] {
        orch.publish("order", &order.to_string(), &OrderCreated { order }).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = 0;
        for key in ["1", "2"] {
            if orch.saga("order", key).await?.is_some_and(|s| s.status.is_final()) {
                done += 1;
            }
        }
        if done == 2 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            worker.shutdown().await;
            return Err("the sagas did not finish within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;

    let mut ok = true;
    for (key, expected) in [("1", SagaStatus::Completed), ("2", SagaStatus::Compensated)] {
        let saga = orch.saga("order", key).await?.ok_or("a saga vanished")?;
        println!();
        println!("order {key}: {} in state `{}`, version {}", saga.status, saga.state, saga.version);
        let params = ListParams {
            name: Some(event_command_name("order")),
            correlation_id: Some(key.to_owned()),
            state: Some(State::Succeeded),
            ..ListParams::default()
        };
        for event in orch.store().list(params).await? {
            let note: String = serde_json::from_str(event.output.as_deref().unwrap_or("\"\""))?;
            println!("  {note}");
        }
        ok &= saga.status == expected;
    }
    println!();
    println!("{}", if ok { "order 1 completed; order 2 was refunded" } else { "unexpected outcome" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
