//! The saga cases of the conformance suite: the seed's order saga (happy path and
//! refund by compensation), compensation order, concurrent events, optimistic
//! concurrency, timeouts on the manual clock, failed compensations, queries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch::store::{SagaQuery, SagaRecord, SagaWrite, SagaWriteStatus};
use orch::{
    Command, Context, HandlerError, JournalKind, ManualClock, NewCommand, Orch, Registry, RetryPolicy,
    SagaEvent, SagaMachine, SagaStatus, State, Store, Worker, WorkerHandle,
};
use serde::{Deserialize, Serialize};

use crate::harness::Harness;
use crate::support::{drive_until, eventually, fast_config, manual_config};

// ---------------------------------------------------------------------------
// The seed's order saga: created → awaiting payment → awaiting inventory →
// awaiting shipment → completed; a refund compensates the payment when inventory fails.

/// The order saga's data.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order number.
    pub order: u64,
    /// The payment, once received.
    pub payment: Option<String>,
    /// The tracking number, once shipped.
    pub tracking: Option<String>,
    /// Whether reserving stock is to fail (the failure path).
    pub out_of_stock: bool,
}

/// An order was placed.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderCreated {
    /// The order number.
    pub order: u64,
    /// Make the inventory step fail.
    pub out_of_stock: bool,
}
impl SagaEvent for OrderCreated {}

/// The payment went through.
#[derive(Debug, Serialize, Deserialize)]
pub struct PaymentReceived {
    /// The payment reference.
    pub payment: String,
}
impl SagaEvent for PaymentReceived {}

/// Stock was reserved.
#[derive(Debug, Serialize, Deserialize)]
pub struct InventoryReserved;
impl SagaEvent for InventoryReserved {}

/// Stock could not be reserved.
#[derive(Debug, Serialize, Deserialize)]
pub struct InventoryFailed {
    /// Why.
    pub reason: String,
}
impl SagaEvent for InventoryFailed {}

/// The order left the warehouse.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderShipped {
    /// The tracking number.
    pub tracking: String,
}
impl SagaEvent for OrderShipped {}

/// Charges the order; publishes `PaymentReceived`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChargeOrderCommand {
    /// The order number.
    pub order: u64,
}
impl Command for ChargeOrderCommand {
    type Output = ();
}

/// Reserves stock; publishes `InventoryReserved` or `InventoryFailed`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReserveStockCommand {
    /// The order number.
    pub order: u64,
    /// Fail.
    pub out_of_stock: bool,
}
impl Command for ReserveStockCommand {
    type Output = ();
}

/// Ships the order; publishes `OrderShipped`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShipOrderCommand {
    /// The order number.
    pub order: u64,
}
impl Command for ShipOrderCommand {
    type Output = ();
}

/// Compensation: refunds a payment.
#[derive(Debug, Serialize, Deserialize)]
pub struct RefundPaymentCommand {
    /// The payment reference.
    pub payment: String,
}
impl Command for RefundPaymentCommand {
    type Output = ();
}

/// The order saga's machine.
pub fn order_saga() -> SagaMachine<Order> {
    SagaMachine::<Order>::builder("order")
        .initially()
        .when::<OrderCreated>()
        .then(|step, created| {
            step.data_mut().order = created.order;
            step.data_mut().out_of_stock = created.out_of_stock;
            step.push(NewCommand::of(&ChargeOrderCommand { order: created.order }));
            Ok(())
        })
        .transition_to("awaiting_payment")
        .during("awaiting_payment")
        .when::<PaymentReceived>()
        .then(|step, paid| {
            step.data_mut().payment = Some(paid.payment.clone());
            step.compensate_with(NewCommand::of(&RefundPaymentCommand { payment: paid.payment.clone() }));
            let (order, out_of_stock) = (step.data().order, step.data().out_of_stock);
            step.push(NewCommand::of(&ReserveStockCommand { order, out_of_stock }));
            Ok(())
        })
        .transition_to("awaiting_inventory")
        .during("awaiting_inventory")
        .when::<InventoryReserved>()
        .then(|step, _| {
            let order = step.data().order;
            step.push(NewCommand::of(&ShipOrderCommand { order }));
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
        .expect("the order saga is valid")
}

/// Refunds made, by payment.
pub type Refunds = Arc<Mutex<Vec<String>>>;

/// A registry running the order saga and the commands it pushes.
pub fn order_registry(refunds: &Refunds) -> Registry {
    let mut registry = Registry::new();
    registry.register_saga(order_saga()).unwrap();
    registry
        .register_fn(|c: ChargeOrderCommand, ctx: Context| async move {
            let key = c.order.to_string();
            ctx.orch()
                .publish("order", &key, &PaymentReceived { payment: format!("pay-{}", c.order) })
                .await?;
            Ok::<_, HandlerError>(())
        })
        .unwrap()
        .register_fn(|c: ReserveStockCommand, ctx: Context| async move {
            let key = c.order.to_string();
            if c.out_of_stock {
                ctx.orch().publish("order", &key, &InventoryFailed { reason: "out of stock".into() }).await?;
            } else {
                ctx.orch().publish("order", &key, &InventoryReserved).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .unwrap()
        .register_fn(|c: ShipOrderCommand, ctx: Context| async move {
            let key = c.order.to_string();
            ctx.orch()
                .publish("order", &key, &OrderShipped { tracking: format!("TRACK-{}", c.order) })
                .await?;
            Ok::<_, HandlerError>(())
        })
        .unwrap();
    let refunds = Arc::clone(refunds);
    registry
        .register_fn(move |c: RefundPaymentCommand, _: Context| {
            let refunds = Arc::clone(&refunds);
            async move {
                refunds.lock().unwrap().push(c.payment);
                Ok::<_, HandlerError>(())
            }
        })
        .unwrap();
    registry
}

fn start(store: &Arc<dyn Store>, registry: Registry, id: &str) -> WorkerHandle {
    let config = orch::WorkerConfig { instance_key: orch::DEFAULT_TARGET.into(), ..fast_config(id) };
    Worker::new(Orch::new(Arc::clone(store)), registry, config).unwrap().start()
}

async fn until_final(orch: &Orch, saga: &str, key: &str) -> SagaRecord {
    eventually(&format!("saga {saga} {key} to end"), || async {
        orch.saga(saga, key).await.unwrap().filter(|r| r.status.is_final())
    })
    .await
}

/// The happy path: every transition, in order, to `completed`, with nothing compensated.
pub async fn saga_order_completes(h: &dyn Harness) {
    let store = h.store().await;
    let refunds: Refunds = Arc::default();
    let workers =
        [start(&store, order_registry(&refunds), "s1"), start(&store, order_registry(&refunds), "s2")];
    let orch = Orch::new(Arc::clone(&store));
    orch.publish("order", "1", &OrderCreated { order: 1, out_of_stock: false }).await.unwrap();
    let done = until_final(&orch, "order", "1").await;
    for w in workers {
        w.shutdown().await;
    }
    assert_eq!((done.status, done.state.as_str(), done.version), (SagaStatus::Completed, "completed", 4));
    let instance = orch.saga_instance::<Order>("order", "1").await.unwrap().unwrap();
    assert_eq!(instance.data.payment.as_deref(), Some("pay-1"));
    assert_eq!(instance.data.tracking.as_deref(), Some("TRACK-1"));
    assert!(refunds.lock().unwrap().is_empty(), "nothing is compensated on the happy path");
    assert_eq!(done.timeout_at, None, "a finished saga has no timeout");
    let completed = orch
        .sagas(SagaQuery {
            saga: Some("order".into()),
            state: Some("completed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(completed.iter().map(|r| r.correlation_id.as_str()).collect::<Vec<_>>(), ["1"]);
    // Every event and pushed command shares the instance's correlation id.
    let journal = orch.saga_journal("1").await.unwrap();
    let succeeded = journal.iter().filter(|e| e.kind == JournalKind::Succeeded).count();
    assert_eq!(succeeded, 4 + 3, "four events and three pushed commands succeeded: {journal:#?}");
}

/// The failure path: inventory fails, so the payment is refunded by compensation and
/// the saga ends compensated.
pub async fn saga_order_refunds_when_inventory_fails(h: &dyn Harness) {
    let store = h.store().await;
    let refunds: Refunds = Arc::default();
    let worker = start(&store, order_registry(&refunds), "s1");
    let orch = Orch::new(Arc::clone(&store));
    orch.publish("order", "2", &OrderCreated { order: 2, out_of_stock: true }).await.unwrap();
    let done = until_final(&orch, "order", "2").await;
    worker.shutdown().await;
    assert_eq!((done.status, done.state.as_str()), (SagaStatus::Compensated, "awaiting_inventory"));
    assert_eq!(*refunds.lock().unwrap(), ["pay-2"], "the payment was refunded exactly once");
    let refund = orch
        .store()
        .list(orch::store::ListParams { name: Some("refund_payment".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(refund.len(), 1);
    assert_eq!((refund[0].state, refund[0].correlation_id.as_str()), (State::Succeeded, "2"));
}

// ---------------------------------------------------------------------------
// A saga of three steps, each registering a compensation, then a failing action.

#[derive(Debug, Default, Serialize, Deserialize)]
struct Steps {
    done: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Step {
    n: u32,
}
impl SagaEvent for Step {}

#[derive(Debug, Serialize, Deserialize)]
struct Break;
impl SagaEvent for Break {}

#[derive(Debug, Serialize, Deserialize)]
struct UndoCommand {
    n: u32,
    fail: bool,
}
impl Command for UndoCommand {
    type Output = u32;
    const RETRIES: u32 = 1;
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::immediate()
    }
}

/// `Step` events register `Undo(n)` and stay in `open`; `Break` fails its action (so
/// the saga compensates); the steps saga times out after 60 s.
fn steps_saga(fail_undo: Option<u32>) -> SagaMachine<Steps> {
    let register = move |step: &mut orch::SagaStep<Steps>, e: &Step| {
        step.data_mut().done.push(e.n);
        step.compensate_with(NewCommand::of(&UndoCommand { n: e.n, fail: Some(e.n) == fail_undo }));
        Ok(())
    };
    SagaMachine::<Steps>::builder("steps")
        .initially()
        .when::<Step>()
        .then(register)
        .transition_to("open")
        .during("open")
        .when::<Step>()
        .then(register)
        .transition_to("open")
        .during("open")
        .when::<Break>()
        .then(|_, _| Err(HandlerError::new("the last step broke")))
        .transition_to("closed")
        .final_states(["closed"])
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn steps_registry(fail_undo: Option<u32>) -> Registry {
    let mut registry = Registry::new();
    registry.register_saga(steps_saga(fail_undo)).unwrap();
    registry
        .register_fn(|c: UndoCommand, _: Context| async move {
            if c.fail {
                return Err(HandlerError::new(format!("undo {} failed", c.n)));
            }
            Ok::<_, HandlerError>(c.n)
        })
        .unwrap();
    registry
}

/// The `n` of each undo, in the order the journal records their successes.
async fn undo_order(orch: &Orch, key: &str) -> Vec<u32> {
    let undos = orch
        .store()
        .list(orch::store::ListParams {
            name: Some("undo".into()),
            correlation_id: Some(key.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut finished: Vec<(i64, u32)> = Vec::new();
    for undo in undos {
        let n = serde_json::from_str::<serde_json::Value>(&undo.input).unwrap()["n"].as_u64().unwrap() as u32;
        let journal = orch.journal(undo.id).await.unwrap();
        if let Some(entry) = journal.iter().find(|e| e.kind == JournalKind::Succeeded) {
            // Each compensation is claimed only after the previous one succeeded.
            let claimed = journal.iter().find(|e| e.kind == JournalKind::Claimed).unwrap();
            finished.push((claimed.seq, n));
            finished.push((entry.seq, n));
        }
    }
    finished.sort();
    finished.dedup_by_key(|(_, n)| *n);
    finished.into_iter().map(|(_, n)| n).collect()
}

/// Compensations run last registered first, each after the previous one succeeded
/// (asserted from the journal), and the saga ends compensated.
pub async fn saga_compensations_run_last_first(h: &dyn Harness) {
    let store = h.store().await;
    let worker = start(&store, steps_registry(None), "s1");
    let orch = Orch::new(Arc::clone(&store));
    for n in 1..=3 {
        orch.publish("steps", "k", &Step { n }).await.unwrap();
    }
    orch.publish("steps", "k", &Break).await.unwrap();
    let done = until_final(&orch, "steps", "k").await;
    worker.shutdown().await;
    assert_eq!(done.status, SagaStatus::Compensated);
    assert_eq!(undo_order(&orch, "k").await, [3, 2, 1]);
    let journal = orch.saga_journal("k").await.unwrap();
    let claims: Vec<i64> =
        journal.iter().filter(|e| e.kind == JournalKind::Unblocked).map(|e| e.seq).collect();
    assert_eq!(
        claims.len(),
        3,
        "undo 2, undo 1 and the final signal waited for their predecessors: {journal:#?}"
    );
}

/// A compensation that fails for good leaves the saga visibly `compensation_failed`;
/// the compensations after it never run.
pub async fn saga_failed_compensation_is_visible(h: &dyn Harness) {
    let store = h.store().await;
    let worker = start(&store, steps_registry(Some(2)), "s1");
    let orch = Orch::new(Arc::clone(&store));
    for n in 1..=3 {
        orch.publish("steps", "f", &Step { n }).await.unwrap();
    }
    orch.publish("steps", "f", &Break).await.unwrap();
    let done = until_final(&orch, "steps", "f").await;
    worker.shutdown().await;
    assert_eq!(done.status, SagaStatus::CompensationFailed);
    assert_eq!(undo_order(&orch, "f").await, [3], "undo 3 ran, undo 2 failed, undo 1 never ran");
    let failed = orch
        .sagas(SagaQuery { status: Some(SagaStatus::CompensationFailed), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
}

/// Two workers receive events for one instance at once: both are applied, in publish
/// order, version + 2. A save with a stale version is refused and writes nothing.
pub async fn saga_concurrent_events_apply_in_order(h: &dyn Harness) {
    let store = h.store().await;
    let workers = [start(&store, steps_registry(None), "s1"), start(&store, steps_registry(None), "s2")];
    let orch = Orch::new(Arc::clone(&store));
    orch.publish("steps", "c", &Step { n: 1 }).await.unwrap();
    eventually("the instance to exist", || async { orch.saga("steps", "c").await.unwrap() }).await;
    let before = orch.saga("steps", "c").await.unwrap().unwrap();
    let events = vec![
        orch::saga::event_for("steps", "c", &Step { n: 2 }).unwrap(),
        orch::saga::event_for("steps", "c", &Step { n: 3 }).unwrap(),
    ];
    orch.push_many(events).await.unwrap();
    let after = eventually("both events to apply", || async {
        orch.saga("steps", "c").await.unwrap().filter(|r| r.version == before.version + 2)
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    let data: Steps = serde_json::from_str(&after.data).unwrap();
    assert_eq!(data.done, [1, 2, 3], "applied once each, in publish order");

    // Optimistic concurrency: a writer holding the old version loses.
    let mut stale = before.clone();
    stale.version = before.version + 1;
    stale.state = "tampered".into();
    let write = SagaWrite {
        record: stale,
        expected_version: Some(before.version),
        commands: vec![
            NewCommand::raw("never", serde_json::json!({})).resolve(orch::Timestamp::from_millis(1)).unwrap(),
        ],
    };
    assert_eq!(store.save_saga(write).await.unwrap(), SagaWriteStatus::Conflict);
    assert_eq!(orch.saga("steps", "c").await.unwrap().unwrap(), after, "a conflict writes nothing");
    let never = store
        .list(orch::store::ListParams { name: Some("never".into()), ..Default::default() })
        .await
        .unwrap();
    assert!(never.is_empty(), "nor its commands");
    // Creating an instance that exists is a conflict too.
    let write = SagaWrite { record: after.clone(), expected_version: None, commands: Vec::new() };
    assert_eq!(store.save_saga(write).await.unwrap(), SagaWriteStatus::Conflict);
}

/// An instance that does not move for its timeout compensates, driven by the manual
/// clock; stale and by-state queries see it before.
pub async fn saga_timeout_compensates(h: &dyn Harness) {
    let store = h.store().await;
    let clock = ManualClock::starting_2030();
    let orch = Orch::new(Arc::clone(&store)).with_clock(Arc::new(clock.clone()));
    let worker = Worker::new(orch.clone(), steps_registry(None), manual_config("timeouts")).unwrap().start();
    orch.publish("steps", "t", &Step { n: 1 }).await.unwrap();
    orch.publish("steps", "u", &Step { n: 1 }).await.unwrap();
    drive_until(&clock, Duration::from_millis(50), "both instances to exist", || async {
        let open = orch
            .sagas(SagaQuery { saga: Some("steps".into()), state: Some("open".into()), ..Default::default() })
            .await
            .unwrap();
        (open.len() == 2).then_some(())
    })
    .await;
    assert!(orch.stale_sagas("steps", Duration::from_secs(30)).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(31));
    // `u` moves on; `t` does not.
    orch.publish("steps", "u", &Step { n: 2 }).await.unwrap();
    drive_until(&clock, Duration::from_millis(10), "u to take its second step", || async {
        orch.saga("steps", "u").await.unwrap().filter(|r| r.version == 2)
    })
    .await;
    let stale: Vec<String> = orch
        .stale_sagas("steps", Duration::from_secs(30))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.correlation_id)
        .collect();
    assert_eq!(stale, ["t"]);

    // Past t's timeout (60 s after its step) in one move, then the clock creeps, so that
    // t's compensation ends long before u's timeout (60 s after its second step)
    // however slowly the database answers.
    clock.advance(Duration::from_secs(30));
    let t = drive_until(&clock, Duration::from_millis(10), "saga t to time out and compensate", || async {
        orch.saga("steps", "t").await.unwrap().filter(|r| r.status.is_final())
    })
    .await;
    assert_eq!(t.status, SagaStatus::Compensated);
    assert_eq!(undo_order(&orch, "t").await, [1]);
    let u = orch.saga("steps", "u").await.unwrap().unwrap();
    assert_eq!(u.status, SagaStatus::Active, "u moved within its timeout");
    worker.shutdown().await;
}

/// Events are commands named after their saga, so a worker claims only the events of
/// sagas it has registered: an event for another saga waits, visible, for a worker
/// that has it. An event that does not decode fails on its own and leaves the
/// instance as it was.
pub async fn saga_events_reach_only_their_saga(h: &dyn Harness) {
    let store = h.store().await;
    let worker = start(&store, steps_registry(None), "s1");
    let orch = Orch::new(Arc::clone(&store));
    let elsewhere = orch.publish("elsewhere", "x", &Step { n: 1 }).await.unwrap();
    orch.publish("steps", "d", &Step { n: 1 }).await.unwrap();
    eventually("the steps instance to exist", || async { orch.saga("steps", "d").await.unwrap() }).await;
    let before = orch.saga("steps", "d").await.unwrap().unwrap();
    // A `step` event whose payload is not a `Step`.
    let raw = NewCommand::raw(
        orch::saga::event_command_name("steps"),
        serde_json::json!({
            "saga": "steps",
            "correlation_id": "d",
            "signal": { "kind": "event", "name": "step", "payload": { "n": "one" } }
        }),
    )
    .correlation_id("d");
    let raw = orch.push_new(raw).await.unwrap();
    let status = tokio::time::timeout(crate::support::WAIT, orch.wait(raw)).await.unwrap().unwrap();
    worker.shutdown().await;
    match status {
        orch::Status::Failed(failure) => assert!(failure.message.contains("does not decode"), "{failure}"),
        other => panic!("expected the undecodable event to fail, got {other:?}"),
    }
    assert_eq!(orch.saga("steps", "d").await.unwrap().unwrap(), before, "the instance is untouched");
    let waiting = store.get(elsewhere).await.unwrap().unwrap();
    assert_eq!((waiting.state, waiting.attempts), (State::Pending, 0), "no worker here runs `elsewhere`");
    assert!(orch.saga("elsewhere", "x").await.unwrap().is_none());
}
