//! Demo data: a store filled with the kind of work a real queue holds (e-mails, image
//! resizes, card charges that get declined, a webhook that keeps timing out, reports
//! due later, work for an instance nobody runs, a workflow and order sagas), and
//! workers that keep processing a trickle of new commands, so the monitor moves.
//!
//! Used by `cargo xtask demo` (through the `demo` example) and by the end-to-end test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch::{
    Command, Context, Error, HandlerError, NewCommand, Orch, Registry, RetryPolicy, SagaEvent, SagaMachine,
    Schedule, Store, Worker, WorkerConfig, WorkerHandle, Workflow,
};
use serde::{Deserialize, Serialize};

use crate::source::{Access, Backend, Source, sqlite_path};

/// Sends an e-mail; addresses at `bounce.example` fail for good.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendEmail {
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
}
impl Command for SendEmail {
    type Output = String;
    const NAME: Option<&'static str> = Some("send_email");
}

/// Resizes an image; takes a while, so workers show as busy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResizeImage {
    /// The image.
    pub image: String,
    /// The target width.
    pub width: u32,
}
impl Command for ResizeImage {
    type Output = u32;
    const NAME: Option<&'static str> = Some("resize_image");
}

/// Charges a card; amounts over 500.00 are declined.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeCard {
    /// The order.
    pub order: u64,
    /// The amount in cents.
    pub cents: u64,
}
impl Command for ChargeCard {
    type Output = String;
    const NAME: Option<&'static str> = Some("charge_card");
}

/// Calls a webhook that never answers: retried with backoff, then failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallWebhook {
    /// The endpoint.
    pub url: String,
}
impl Command for CallWebhook {
    type Output = ();
    const NAME: Option<&'static str> = Some("call_webhook");
    const RETRIES: u32 = 4;
    fn retry_policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(20),
            max_delay: Duration::from_secs(600),
            ..RetryPolicy::default()
        }
    }
}

/// Builds a report; pushed with a delay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateReport {
    /// The report.
    pub report: String,
}
impl Command for GenerateReport {
    type Output = ();
    const NAME: Option<&'static str> = Some("generate_report");
}

/// Synchronizes stock; targeted at the `warehouse` instance, which no demo worker runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncInventory {
    /// The SKU.
    pub sku: String,
}
impl Command for SyncInventory {
    type Output = ();
    const NAME: Option<&'static str> = Some("sync_inventory");
}

/// One stage of the nightly ETL workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtlStage {
    /// The stage.
    pub stage: String,
}
impl Command for EtlStage {
    type Output = u64;
    const NAME: Option<&'static str> = Some("etl_stage");
}

/// Reserves stock for an order saga; orders divisible by 3 are out of stock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveStock {
    /// The order.
    pub order: u64,
}
impl Command for ReserveStock {
    type Output = ();
    const NAME: Option<&'static str> = Some("reserve_stock");
}

/// Releases an order's payment hold (the saga's compensation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseHold {
    /// The order.
    pub order: u64,
}
impl Command for ReleaseHold {
    type Output = ();
    const NAME: Option<&'static str> = Some("release_hold");
}

/// The order saga's data.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct OrderData {
    /// The order.
    pub order: u64,
}

/// An order was placed and its payment held.
#[derive(Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order.
    pub order: u64,
}
impl SagaEvent for OrderPlaced {}

/// Stock was reserved.
#[derive(Serialize, Deserialize)]
pub struct StockReserved;
impl SagaEvent for StockReserved {}

/// Stock was missing.
#[derive(Serialize, Deserialize)]
pub struct StockMissing;
impl SagaEvent for StockMissing {}

/// Placed → reserving → completed, or compensated (the hold released) when stock is
/// missing. Orders that end in 7 wait for a payment that never comes.
pub fn order_saga() -> Result<SagaMachine<OrderData>, Error> {
    SagaMachine::<OrderData>::builder("order")
        .initially()
        .when::<OrderPlaced>()
        .then(|step, placed| {
            step.data_mut().order = placed.order;
            step.compensate_with(NewCommand::of(&ReleaseHold { order: placed.order }));
            if placed.order % 10 != 7 {
                step.push(NewCommand::of(&ReserveStock { order: placed.order }));
            }
            Ok(())
        })
        .transition_to("reserving")
        .during("reserving")
        .when::<StockReserved>()
        .then(|_, _| Ok(()))
        .transition_to("completed")
        .during("reserving")
        .when::<StockMissing>()
        .compensate()
        .final_states(["completed"])
        .build()
}

fn pause(ms: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(ms))
}

/// A spread of work times from a number, without a random number generator.
fn spread(n: u64, low: u64, high: u64) -> u64 {
    low + (n.wrapping_mul(2_654_435_761) % (high - low + 1))
}

/// Handlers for every demo command and the order saga.
pub fn registry() -> Result<Registry, Error> {
    let mut r = Registry::new();
    r.register_fn(|c: SendEmail, ctx: Context| async move {
        pause(spread(ctx.id().as_uuid().as_u128() as u64, 20, 200)).await;
        if c.to.ends_with("@bounce.example") {
            return Err(HandlerError::permanent(format!("550 mailbox unavailable: {}", c.to)));
        }
        Ok(format!("msg-{}", &ctx.id().to_string()[24..]))
    })?;
    r.register_fn(|c: ResizeImage, _ctx: Context| async move {
        pause(spread(u64::from(c.width), 300, 1500)).await;
        Ok(c.width)
    })?;
    r.register_fn(|c: ChargeCard, _ctx: Context| async move {
        pause(spread(c.order, 30, 120)).await;
        if c.cents > 50_000 {
            return Err(HandlerError::permanent(format!("card declined: {} cents over the limit", c.cents)));
        }
        Ok(format!("ch_{}", c.order))
    })?;
    r.register_fn(|c: CallWebhook, _ctx: Context| async move {
        pause(50).await;
        Err::<(), _>(HandlerError::new(format!("connect timeout after 5s: {}", c.url)))
    })?;
    r.register_fn(|_: GenerateReport, _ctx: Context| async move {
        pause(400).await;
        Ok(())
    })?;
    r.register_fn(|c: EtlStage, _ctx: Context| async move {
        pause(spread(c.stage.len() as u64, 200, 900)).await;
        Ok(c.stage.len() as u64 * 1000)
    })?;
    r.register_fn(|c: ReserveStock, ctx: Context| async move {
        let key = c.order.to_string();
        if c.order.is_multiple_of(3) {
            ctx.orch().publish("order", &key, &StockMissing).await?;
        } else {
            ctx.orch().publish("order", &key, &StockReserved).await?;
        }
        Ok(())
    })?;
    r.register_fn(|_: ReleaseHold, _ctx: Context| async move { Ok(()) })?;
    r.register_saga(order_saga()?)?;
    Ok(r)
}

/// Opens the store for the demo, creating a SQLite file if needed, and migrates it.
pub async fn open_for_writing(source: &Source) -> Result<Arc<dyn Store>, Error> {
    if source.backend()? == Backend::Sqlite {
        let path = sqlite_path(&source.url);
        if let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::invalid_config(format!("cannot create {dir:?}: {e}")))?;
        }
        if !std::path::Path::new(path).exists() {
            std::fs::File::create(path)
                .map_err(|e| Error::invalid_config(format!("cannot create {path:?}: {e}")))?;
        }
    }
    let store = source.open_with(Access::ReadWrite).await?;
    store.migrate().await?;
    Ok(store)
}

/// What [`fill`] pushed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filled {
    /// Commands pushed (workflow steps and saga events included).
    pub commands: usize,
}

/// Pushes the initial mix: `scale` rounds of e-mails, resizes and charges, plus the
/// webhook, delayed reports, warehouse work, one workflow and `scale` orders.
pub async fn fill(orch: &Orch, scale: u64) -> Result<Filled, Error> {
    let mut batch = Vec::new();
    for i in 0..scale {
        let to = if i % 7 == 3 { format!("user{i}@bounce.example") } else { format!("user{i}@example.com") };
        batch.push(NewCommand::of(&SendEmail { to, subject: format!("Your receipt #{i}") }));
        batch.push(NewCommand::of(&ResizeImage {
            image: format!("img/{i}.png"),
            width: 320 + (i as u32 % 5) * 160,
        }));
        let cents = if i % 5 == 4 { 72_000 + i } else { 1_999 + i * 100 };
        batch.push(NewCommand::of(&ChargeCard { order: 1000 + i, cents }));
    }
    for hook in ["https://hooks.example/a", "https://hooks.example/b"] {
        // Keyed: pushing the same webhook again while one is queued adds nothing.
        batch.push(NewCommand::of(&CallWebhook { url: hook.into() }).unique_key(format!("webhook {hook}")));
    }
    for (i, report) in ["daily-sales", "weekly-churn", "monthly-invoices"].into_iter().enumerate() {
        batch.push(
            NewCommand::of(&GenerateReport { report: report.into() })
                .delay(Duration::from_secs(600 * (i as u64 + 1))),
        );
    }
    for sku in ["SKU-1", "SKU-2", "SKU-3"] {
        batch.push(NewCommand::of(&SyncInventory { sku: sku.into() }).target("warehouse"));
    }
    let mut commands = batch.len();
    orch.push_many(batch).await?;
    // A recurring warehouse sync, shown in the queue panel (no demo worker serves the
    // warehouse, so its commands wait there).
    let sync = NewCommand::of(&SyncInventory { sku: "ALL".into() }).target("warehouse");
    orch.schedule(Schedule::every("warehouse-sync", Duration::from_secs(60), sync)?).await?;
    let stage = |s: &str| NewCommand::of(&EtlStage { stage: s.into() });
    let workflow = Workflow::builder()
        .step("extract", stage("extract"))
        .step_after("transform_users", stage("transform_users"), ["extract"])
        .step_after("transform_orders", stage("transform_orders"), ["extract"])
        .step_after("load", stage("load"), ["transform_users", "transform_orders"])
        .build()?;
    commands += 4;
    orch.start_workflow(workflow).await?;
    for order in 1..=scale.clamp(1, 10) {
        orch.publish("order", &order.to_string(), &OrderPlaced { order }).await?;
        commands += 1;
    }
    Ok(Filled { commands })
}

/// Starts `n` workers on the default instance with the demo handlers.
pub fn start_workers(orch: &Orch, n: usize) -> Result<Vec<WorkerHandle>, Error> {
    (0..n)
        .map(|i| {
            let config = WorkerConfig {
                concurrency: 4,
                poll_interval: Duration::from_millis(500),
                worker_id: Some(format!("demo-{}-{i}", std::process::id())),
                ..WorkerConfig::default()
            };
            Ok(Worker::new(orch.clone(), registry()?, config)?.start())
        })
        .collect()
}

/// Pushes a small, varied batch every `every` until the future is dropped.
pub async fn trickle(orch: Orch, every: Duration) -> Result<(), Error> {
    static N: AtomicU64 = AtomicU64::new(10_000);
    loop {
        tokio::time::sleep(every).await;
        let i = N.fetch_add(1, Ordering::Relaxed);
        let mut batch = vec![
            NewCommand::of(&SendEmail { to: format!("live{i}@example.com"), subject: "Hello".into() }),
            NewCommand::of(&ResizeImage { image: format!("live/{i}.jpg"), width: 640 }),
        ];
        if i.is_multiple_of(4) {
            batch.push(NewCommand::of(&ChargeCard {
                order: i,
                cents: if i.is_multiple_of(8) { 99_000 } else { 4_500 },
            }));
        }
        if i.is_multiple_of(10) {
            batch.push(NewCommand::of(&SendEmail {
                to: format!("live{i}@bounce.example"),
                subject: "Oops".into(),
            }));
        }
        orch.push_many(batch).await?;
    }
}
