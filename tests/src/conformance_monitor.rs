//! The monitor's reads on every backend: filtered, sorted, keyset-paged lists, the
//! workflow summary, and `orch-tui`'s data layer, whose counts must equal plain
//! `SELECT state, COUNT(*) … GROUP BY state`.

use std::collections::BTreeMap;
use std::time::Duration;

use orch::store::{
    ClaimParams, Completion, InsertCommand, ListCursor, ListOrder, ListParams, Outcome, WorkflowQuery,
};
use orch::{
    CommandId, CommandRecord, Failure, FailureKind, NewCommand, State, Store, Timestamp, WorkflowState,
};
use orch_tui::data::{ListQuery, Query, load};
use orch_tui::filter::Filter;
use orch_tui::source::Source;

use crate::harness::Harness;

fn t0() -> Timestamp {
    Timestamp::from_millis(1_900_000_000_000)
}

fn at(secs: u64) -> Timestamp {
    t0() + Duration::from_secs(secs)
}

fn insert(name: &str, delay: u64) -> InsertCommand {
    NewCommand::raw(name, serde_json::json!({ "delay": delay }))
        .delay(Duration::from_secs(delay))
        .retries(5)
        .resolve(t0())
        .unwrap()
}

fn claim(names: &[&str], now: Timestamp) -> ClaimParams {
    ClaimParams {
        target: orch::DEFAULT_TARGET.into(),
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        limit: 1000,
        now,
        worker: "w".into(),
        lease_buffer: Duration::from_secs(1),
    }
}

/// 24 commands over two names with spread due times, one to two attempts, and
/// failures with distinct error texts; returns them all as stored.
async fn varied(store: &dyn Store) -> Vec<CommandRecord> {
    let mut rows: Vec<InsertCommand> =
        (0..24).map(|i| insert(if i % 2 == 0 { "a" } else { "b" }, i * 10)).collect();
    let parent = rows[0].id;
    for r in rows.iter_mut().skip(20) {
        r.parent_id = Some(parent);
    }
    store.enqueue(rows).await.unwrap();
    let claimed = store.claim(claim(&["a", "b"], at(1000))).await.unwrap();
    assert_eq!(claimed.len(), 24);
    let completion = |c: &orch::store::ClaimedCommand, i: usize| {
        let outcome = match i % 3 {
            0 => Outcome::Failed {
                failure: Failure::new(FailureKind::Error, format!("Timeout_{i}% upstream")),
                follow_ups: Vec::new(),
            },
            1 => Outcome::Retry {
                failure: Failure::new(FailureKind::Error, "refused"),
                retry_at: at(2000 + i as u64),
            },
            _ => Outcome::Succeeded { output: "null".into(), follow_ups: Vec::new() },
        };
        Completion { lease: c.lease, now: at(1000), worker: "w".into(), outcome }
    };
    let done =
        store.complete(claimed.iter().enumerate().map(|(i, c)| completion(c, i)).collect()).await.unwrap();
    assert_eq!(done.len(), 24);
    // The retried ones run a second attempt; half of those fail again.
    let again = store.claim(claim(&["a", "b"], at(3000))).await.unwrap();
    assert_eq!(again.len(), 8);
    let second: Vec<Completion> = again
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, c)| Completion {
            lease: c.lease,
            now: at(3000),
            worker: "w".into(),
            outcome: Outcome::Failed {
                failure: Failure::new(FailureKind::Error, "TIMEOUT again"),
                follow_ups: Vec::new(),
            },
        })
        .collect();
    store.complete(second).await.unwrap();
    let all = store.list(ListParams::default()).await.unwrap();
    assert_eq!(all.len(), 24);
    all
}

/// Which records a filter keeps, computed in memory.
type Keep = Box<dyn Fn(&CommandRecord) -> bool>;

/// Reads every page of `params` with `page` rows each, following the cursors.
async fn pages(store: &dyn Store, mut params: ListParams, page: usize) -> Vec<CommandId> {
    let mut ids = Vec::new();
    params.limit = page;
    for _ in 0..100 {
        let rows = store.list(params.clone()).await.unwrap();
        ids.extend(rows.iter().map(|r| r.id));
        match rows.last() {
            Some(last) if rows.len() == page => params.after = Some(ListCursor::of(last, params.order)),
            _ => return ids,
        }
    }
    panic!("paging did not end");
}

fn expected(
    all: &[CommandRecord],
    params: &ListParams,
    keep: impl Fn(&CommandRecord) -> bool,
) -> Vec<CommandId> {
    let mut rows: Vec<&CommandRecord> = all.iter().filter(|r| keep(r)).collect();
    rows.sort_by_key(|r| (params.order.key_of(r), r.id));
    if params.descending {
        rows.reverse();
    }
    rows.into_iter().map(|r| r.id).collect()
}

/// Every filter of the list, each sort in both directions, read in pages of 5 by
/// keyset: the same rows in the same order as sorting everything in memory.
pub async fn list_filters_sort_and_page(h: &dyn Harness) {
    let store = h.store().await;
    let all = varied(store.as_ref()).await;
    let parent = all.iter().find(|r| r.parent_id.is_some()).and_then(|r| r.parent_id).unwrap();
    for order in [ListOrder::Created, ListOrder::Scheduled, ListOrder::Attempts] {
        for descending in [false, true] {
            let base = ListParams { order, descending, ..Default::default() };
            let cases: Vec<(&str, ListParams, Keep)> = vec![
                ("everything", base.clone(), Box::new(|_| true)),
                (
                    "failed",
                    ListParams { state: Some(State::Failed), ..base.clone() },
                    Box::new(|r| r.state == State::Failed),
                ),
                (
                    "name b, attempts >= 2",
                    ListParams { name: Some("b".into()), min_attempts: Some(2), ..base.clone() },
                    Box::new(|r| r.name == "b" && r.attempts >= 2),
                ),
                (
                    "error contains `timeout` (any case); `%` is literal",
                    ListParams { error_contains: Some("timeout".into()), ..base.clone() },
                    Box::new(|r| {
                        r.error.as_ref().is_some_and(|e| e.message.to_lowercase().contains("timeout"))
                    }),
                ),
                (
                    "error contains `_1%`",
                    ListParams { error_contains: Some("_1%".into()), ..base.clone() },
                    Box::new(|r| r.error.as_ref().is_some_and(|e| e.message.contains("_1%"))),
                ),
                (
                    "follow-ups of one parent",
                    ListParams { parent: Some(parent), ..base.clone() },
                    Box::new(move |r| r.parent_id == Some(parent)),
                ),
                (
                    "created in a window",
                    ListParams { created_after: Some(t0()), created_before: Some(at(1)), ..base.clone() },
                    Box::new(|r| r.created_at >= t0() && r.created_at < at(1)),
                ),
            ];
            for (what, params, keep) in cases {
                let want = expected(&all, &params, keep);
                let got = pages(store.as_ref(), params.clone(), 5).await;
                assert_eq!(got, want, "{what}, order {order:?}, descending {descending}");
            }
        }
    }
    let matches = store
        .list(ListParams { error_contains: Some("timeout_1".into()), ..Default::default() })
        .await
        .unwrap();
    assert!(
        matches.iter().all(|r| r.error.as_ref().unwrap().message.starts_with("Timeout_1")),
        "{matches:?}"
    );
    assert!(!matches.is_empty());
}

/// Workflows are summarized newest first with their step counts, filtered by state.
pub async fn workflows_are_summarized(h: &dyn Harness) {
    let store = h.store().await;
    let orch =
        orch::Orch::new(store.clone()).with_clock(std::sync::Arc::new(orch::ManualClock::starting_2030()));
    let flow = |tag: &str| {
        orch::Workflow::builder()
            .step("first", NewCommand::raw("wf_step", serde_json::json!({ "tag": tag })))
            .step_after("second", NewCommand::raw("wf_step", serde_json::json!({ "tag": tag })), ["first"])
            .build()
            .unwrap()
    };
    let older = orch.start_workflow(flow("older")).await.unwrap();
    let newer = orch.start_workflow(flow("newer")).await.unwrap();
    // The older workflow's first step fails, which cancels the second.
    let now = orch::Clock::now(orch.clock().as_ref());
    let claimed = store.claim(claim(&["wf_step"], now)).await.unwrap();
    let first_of_older = claimed
        .iter()
        .find(|c| c.workflow.as_ref().is_some_and(|w| w.workflow_id == older))
        .expect("the older workflow's first step is claimable");
    store
        .complete(vec![Completion {
            lease: first_of_older.lease,
            now,
            worker: "w".into(),
            outcome: Outcome::Failed {
                failure: Failure::new(FailureKind::Error, "x"),
                follow_ups: Vec::new(),
            },
        }])
        .await
        .unwrap();

    let all = store.workflows(WorkflowQuery::default()).await.unwrap();
    assert_eq!(all.iter().map(|w| w.id).collect::<Vec<_>>(), vec![newer, older], "newest first");
    assert_eq!((all[0].pending, all[0].blocked, all[0].running, all[0].steps()), (0, 1, 1, 2));
    assert_eq!(all[0].state(), WorkflowState::Running);
    assert_eq!((all[1].failed, all[1].cancelled, all[1].state()), (1, 1, WorkflowState::Failed));
    let failed = store
        .workflows(WorkflowQuery { state: Some(WorkflowState::Failed), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(failed.iter().map(|w| w.id).collect::<Vec<_>>(), vec![older]);
    let running = store
        .workflows(WorkflowQuery { state: Some(WorkflowState::Running), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(running.iter().map(|w| w.id).collect::<Vec<_>>(), vec![newer]);
    let page =
        store.workflows(WorkflowQuery { before: Some(newer), limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(page.iter().map(|w| w.id).collect::<Vec<_>>(), vec![older], "keyset: older than `newer`");
    assert!(
        store
            .workflows(WorkflowQuery { state: Some(WorkflowState::Succeeded), ..Default::default() })
            .await
            .unwrap()
            .is_empty()
    );
}

/// `orch-tui`'s data layer, opened by URL like the binary does: the overview equals
/// plain SQL counts; the list page, the detail and the workflow list load.
pub async fn monitor_counts_match_sql(h: &dyn Harness) {
    let (store, location) = h.located_store().await;
    let all = varied(store.as_ref()).await;
    // More shapes: a blocked step, a delayed command, a cancelled one, a running one.
    let wf = orch::Workflow::builder()
        .step("one", NewCommand::raw("wf_step", serde_json::json!({})))
        .step_after("two", NewCommand::raw("wf_step", serde_json::json!({})), ["one"])
        .build()
        .unwrap();
    let orch = orch::Orch::new(store.clone());
    orch.start_workflow(wf).await.unwrap();
    orch.push_new(NewCommand::raw("later", serde_json::json!({})).delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    let cancelled = orch.push_new(NewCommand::raw("c", serde_json::json!({}))).await.unwrap();
    orch.cancel(cancelled).await.unwrap();
    let now = orch::Clock::now(&orch::SystemClock);
    assert_eq!(store.claim(claim(&["wf_step"], now)).await.unwrap().len(), 1);

    orch.pause(orch::PauseScope::target("eu")).await.unwrap();
    // A schedule no worker fires: an hour-long period, saved by a clock two hours
    // behind, so its next slot is an hour overdue when the monitor looks.
    let behind = orch::Orch::new(store.clone()).with_clock(std::sync::Arc::new(orch::ManualClock::new(
        orch::Clock::now(&orch::SystemClock) - Duration::from_secs(7_200),
    )));
    let hourly = orch::Schedule::every(
        "hourly-report",
        Duration::from_secs(3_600),
        NewCommand::raw("report", serde_json::json!({})),
    );
    behind.schedule(hourly.unwrap()).await.unwrap();
    let monitor = Source { url: location.url.clone(), prefix: location.prefix.clone() }
        .open()
        .await
        .expect("open by URL");
    let failed_filter = Filter::parse("state:failed").unwrap();
    let query = Query {
        list: Some(ListQuery { filter: failed_filter, limit: 50, descending: true, ..Default::default() }),
        detail: Some(all[0].id),
        flows: true,
        workflow: None,
        flow_state: None,
    };
    let snapshot = load(monitor.as_ref(), &query, now).await.unwrap();
    let sql = h.sql_state_counts(&location).await;
    let c = snapshot.overview.counts;
    let from_screen: BTreeMap<String, i64> = [
        ("blocked", c.blocked),
        ("pending", c.pending + c.scheduled),
        ("running", c.running),
        ("succeeded", c.succeeded),
        ("failed", c.failed),
        ("cancelled", c.cancelled),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(s, n)| (s.to_owned(), n as i64))
    .collect();
    assert_eq!(from_screen, sql, "the overview vs SELECT state, COUNT(*) … GROUP BY state");
    assert_eq!(c.scheduled, 1, "only the delayed command is scheduled; the retried ones ran again");
    assert!(snapshot.cost.queries >= 5, "{:?}", snapshot.cost);

    // The pause, on screen and in the JSON overview.
    assert_eq!(snapshot.pauses.iter().map(|p| p.scope.to_string()).collect::<Vec<_>>(), vec!["target eu"]);
    let json = orch_tui::data::OverviewJson::of(h.backend(), &snapshot);
    assert_eq!(json.paused, vec!["target eu".to_owned()]);
    // The schedule, with its next slot and flagged late.
    assert_eq!(snapshot.schedules.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["hourly-report"]);
    assert_eq!(json.schedules.len(), 1);
    assert!(json.schedules[0].late && json.schedules[0].last_fire_us.is_none(), "{:?}", json.schedules);
    assert_eq!(json.schedules[0].cadence, "every 3600000000");
    let page = snapshot.commands.unwrap();
    assert_eq!(page.rows.len() as i64, sql["failed"]);
    assert!(page.rows.iter().all(|r| r.state == State::Failed));
    assert!(page.rows.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let detail = snapshot.detail.unwrap();
    assert_eq!(detail.record.as_ref().map(|r| r.id), Some(all[0].id));
    assert!(!detail.journal.is_empty());
    assert_eq!(detail.follow_ups.len(), 4, "the varied mix gives the first command 4 follow-ups");
    let flows = snapshot.flows.unwrap();
    assert_eq!(flows.workflows.len(), 1);
    assert_eq!((flows.workflows[0].running, flows.workflows[0].blocked), (1, 1));
}
