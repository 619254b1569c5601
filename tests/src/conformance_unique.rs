//! The unique-key cases of the conformance suite: concurrent pushes of one key insert
//! one command, a finished holder frees its key, a period key holds for its period,
//! and keys where no push deduplicates are refused.

use std::sync::Arc;
use std::time::Duration;

use orch::store::{ClaimParams, ClaimedCommand, Completion, CompletionStatus, ListParams, Outcome};
use orch::{
    Clock, Error, JournalKind, ManualClock, NewCommand, Orch, Pushed, State, Store, SystemClock, Timestamp,
    UniqueKey, Workflow,
};

use crate::harness::Harness;

/// Pushers running at once in the concurrency case.
pub const UNIQUE_TASKS: usize = 8;
/// Pushes each of them makes.
pub const UNIQUE_PUSHES_PER_TASK: usize = 1_000;

fn keyed(key: &str) -> NewCommand {
    NewCommand::raw("keyed", serde_json::json!({ "key": key })).unique_key(key)
}

async fn named(store: &Arc<dyn Store>, name: &str) -> Vec<orch::CommandRecord> {
    store.list(ListParams { name: Some(name.into()), limit: 100_000, ..ListParams::default() }).await.unwrap()
}

fn claim_params(name: &str, now: Timestamp) -> ClaimParams {
    ClaimParams {
        names: vec![name.into()],
        target: orch::DEFAULT_TARGET.into(),
        now,
        limit: 100,
        worker: "unique-test".into(),
        lease_buffer: Duration::from_secs(60),
    }
}

/// Completes the claimed commands as succeeded at `now`; returns how many.
async fn succeed(store: &Arc<dyn Store>, claimed: &[ClaimedCommand], now: Timestamp) -> usize {
    let completions: Vec<Completion> = claimed
        .iter()
        .map(|c| Completion {
            lease: c.lease,
            now,
            worker: "unique-test".into(),
            outcome: Outcome::Succeeded { output: "null".into(), follow_ups: Vec::new() },
        })
        .collect();
    let applied = store.complete(completions).await.unwrap();
    assert!(applied.iter().all(|s| *s == CompletionStatus::Applied), "{applied:?}");
    applied.len()
}

/// Claims every due `name` command at `now` and completes them; returns how many.
async fn run_all(store: &Arc<dyn Store>, name: &str, now: Timestamp) -> usize {
    let claimed = store.claim(claim_params(name, now)).await.unwrap();
    succeed(store, &claimed, now).await
}

/// Many tasks pushing one key at once store one command and all get its id back;
/// exactly one push reports an insert. A duplicate writes nothing, not even a journal
/// entry. Once the holder finishes, the key is free again.
pub async fn unique_key_admits_one_of_concurrent_pushes(h: &dyn Harness) {
    let store = h.store().await;
    let backend = h.backend();
    let orch = Orch::new(Arc::clone(&store));
    let tasks: Vec<_> = (0..UNIQUE_TASKS)
        .map(|_| {
            let orch = orch.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::with_capacity(UNIQUE_PUSHES_PER_TASK);
                for _ in 0..UNIQUE_PUSHES_PER_TASK {
                    outcomes.push(orch.push_outcome(keyed("report-42")).await.unwrap());
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes: Vec<Pushed> = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    assert_eq!(outcomes.len(), UNIQUE_TASKS * UNIQUE_PUSHES_PER_TASK);
    let stored = named(&store, "keyed").await;
    assert_eq!(stored.len(), 1, "{backend}: one command for the key");
    let holder = stored[0].id;
    assert!(outcomes.iter().all(|p| p.id == holder), "{backend}: every push got the holder's id");
    assert_eq!(outcomes.iter().filter(|p| !p.duplicate).count(), 1, "{backend}: one insert");
    assert_eq!(stored[0].unique, Some(UniqueKey { key: "report-42".into(), until: None }), "{backend}");
    let journal = store.journal(holder).await.unwrap();
    assert_eq!(journal.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![JournalKind::Enqueued], "{backend}");

    // Pushes of two keys in opposite orders at once neither deadlock nor insert twice.
    let crossed: Vec<_> = [["x", "y"], ["y", "x"]]
        .into_iter()
        .map(|keys| {
            let orch = orch.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    orch.push_many_outcomes(keys.iter().map(|k| keyed(k)).collect()).await.unwrap();
                }
            })
        })
        .collect();
    for task in crossed {
        task.await.unwrap();
    }
    let xy = named(&store, "keyed")
        .await
        .into_iter()
        .filter(|r| r.unique.as_ref().is_some_and(|u| u.key != "report-42"));
    assert_eq!(xy.count(), 2, "{backend}: one command for x, one for y");

    // Other keys and keyless commands are not affected.
    let other = orch.push_outcome(keyed("report-43")).await.unwrap();
    assert!(!other.duplicate && other.id != holder, "{backend}");
    let plain = orch.push_new(NewCommand::raw("keyed", serde_json::json!({}))).await.unwrap();
    assert_ne!(plain, holder);

    // A running holder still holds its key; a finished one does not.
    let claimed = store.claim(claim_params("keyed", SystemClock.now())).await.unwrap();
    assert_eq!(claimed.len(), 5, "{backend}");
    assert_eq!(store.get(holder).await.unwrap().unwrap().state, State::Running);
    assert_eq!(orch.push_outcome(keyed("report-42")).await.unwrap(), Pushed { id: holder, duplicate: true });
    succeed(&store, &claimed, SystemClock.now()).await;
    let again = orch.push_outcome(keyed("report-42")).await.unwrap();
    assert!(!again.duplicate && again.id != holder, "{backend}: a finished holder frees its key");
    assert_eq!(
        orch.push_outcome(keyed("report-42")).await.unwrap(),
        Pushed { id: again.id, duplicate: true }
    );
}

/// One call with several commands of one key inserts the first; a finished holder
/// frees the key for the next push; a period key holds, finished or not, until its
/// period ends; bad keys and keys where pushes do not deduplicate are refused.
pub async fn unique_key_holds_while_unfinished_or_for_its_period(h: &dyn Harness) {
    let store = h.store().await;
    let backend = h.backend();
    let t0 = Timestamp::from_millis(1_900_000_000_000); // 2030-03-17T17:46:40Z
    let clock = Arc::new(ManualClock::new(t0));
    let orch = Orch::new(Arc::clone(&store)).with_clock(clock.clone());

    let batch = orch
        .push_many_outcomes(vec![
            keyed("a"),
            NewCommand::raw("keyed", serde_json::json!({})),
            keyed("a"),
            keyed("b"),
        ])
        .await
        .unwrap();
    assert!(!batch[0].duplicate && !batch[1].duplicate && !batch[3].duplicate, "{backend}: {batch:?}");
    assert_eq!(batch[2], Pushed { id: batch[0].id, duplicate: true }, "{backend}");
    assert_eq!(named(&store, "keyed").await.len(), 3, "{backend}");
    assert_eq!(
        orch.push_new(keyed("a")).await.unwrap(),
        batch[0].id,
        "{backend}: push_new returns the holder"
    );
    // Keys compare byte for byte: a trailing space makes another key.
    assert!(!orch.push_outcome(keyed("a ")).await.unwrap().duplicate, "{backend}");

    // A period key: the hour 17:00–18:00 UTC holds it, whatever becomes of the holder.
    let hourly = || {
        NewCommand::raw("hourly", serde_json::json!({})).unique_within("digest", Duration::from_secs(3_600))
    };
    let first = orch.push_outcome(hourly()).await.unwrap();
    assert!(!first.duplicate, "{backend}");
    let hour_end = Timestamp::from_millis(1_900_000_800_000);
    let record = store.get(first.id).await.unwrap().unwrap();
    assert_eq!(record.unique, Some(UniqueKey { key: "digest".into(), until: Some(hour_end) }), "{backend}");
    assert_eq!(run_all(&store, "hourly", t0).await, 1, "{backend}");
    // Retention keeps a finished holder until its period is over.
    store.prune_finished(hour_end - Duration::from_millis(1), 100).await.unwrap();
    assert!(store.get(first.id).await.unwrap().is_some(), "{backend}: pruned within its period");
    clock.set(hour_end - Duration::from_millis(1));
    assert_eq!(
        orch.push_outcome(hourly()).await.unwrap(),
        Pushed { id: first.id, duplicate: true },
        "{backend}"
    );
    clock.set(hour_end);
    let next = orch.push_outcome(hourly()).await.unwrap();
    assert!(!next.duplicate && next.id != first.id, "{backend}: a new period");
    // A period key and a while-unfinished key of the same text do not meet.
    let unfinished =
        orch.push_outcome(NewCommand::raw("hourly", serde_json::json!({})).unique_key("digest")).await;
    assert!(!unfinished.unwrap().duplicate, "{backend}");

    // Refused before anything is stored.
    let before = store.list(ListParams { limit: 1_000, ..ListParams::default() }).await.unwrap().len();
    for bad in [keyed(""), keyed(&"k".repeat(orch::MAX_UNIQUE_KEY_BYTES + 1))] {
        assert!(matches!(orch.push_new(bad).await, Err(Error::InvalidConfig(_))), "{backend}");
    }
    let short_period =
        NewCommand::raw("x", serde_json::json!({})).unique_within("x", Duration::from_micros(10));
    assert!(matches!(orch.push_new(short_period).await, Err(Error::InvalidConfig(_))), "{backend}");
    let workflow = Workflow::builder().step("only", keyed("in-workflow")).build().unwrap();
    assert!(matches!(orch.start_workflow(workflow).await, Err(Error::InvalidConfig(_))), "{backend}");
    let after = store.list(ListParams { limit: 1_000, ..ListParams::default() }).await.unwrap().len();
    assert_eq!(before, after, "{backend}: nothing stored by refused pushes");
    // The longest key is accepted and read back whole.
    let longest = "ü".repeat(orch::MAX_UNIQUE_KEY_BYTES / 2);
    let id = orch.push_new(keyed(&longest)).await.unwrap();
    assert_eq!(store.get(id).await.unwrap().unwrap().unique.map(|u| u.key), Some(longest), "{backend}");
}
