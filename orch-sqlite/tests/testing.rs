//! The test helpers of `orch::testing` on a real SQLite store: a queue driven step by
//! step on a manual clock, with retries, follow-ups, workflows, delays, targets and
//! timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use orch_sqlite::SqliteStore;
use orch_sqlite::orch::store::Outcome;
use orch_sqlite::orch::testing::TestQueue;
use orch_sqlite::orch::{
    Command, Context, FailureKind, HandlerError, ManualClock, NewCommand, Registry, Schedule, State, Status,
    Store, WorkerConfig, Workflow, WorkflowState,
};
use serde::{Deserialize, Serialize};

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let store = SqliteStore::open(dir.path().join("orch.db")).expect("open the SQLite file");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FetchCommand {
    url: String,
    /// How many attempts fail before one succeeds.
    flaky: u32,
}

impl Command for FetchCommand {
    type Output = u16;
    const RETRIES: u32 = 3;

    fn on_success(&self, status: &u16) -> Vec<NewCommand> {
        vec![NewCommand::of(&IndexCommand { url: self.url.clone(), status: *status })]
    }

    fn on_failure(&self, error: &orch_sqlite::orch::Failure) -> Vec<NewCommand> {
        vec![NewCommand::of(&AlertCommand { message: format!("{}: {}", self.url, error.message) })]
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct IndexCommand {
    url: String,
    status: u16,
}

impl Command for IndexCommand {
    type Output = ();
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct AlertCommand {
    message: String,
}

impl Command for AlertCommand {
    type Output = ();
}

async fn fetch(cmd: FetchCommand, ctx: Context) -> Result<u16, HandlerError> {
    if ctx.attempt() <= cmd.flaky { Err(HandlerError::new("connection reset")) } else { Ok(200) }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register_fn(fetch)
        .unwrap()
        .register_fn(|_: IndexCommand, _ctx| async { Ok::<_, HandlerError>(()) })
        .unwrap()
        .register_fn(|_: AlertCommand, _ctx| async { Ok::<_, HandlerError>(()) })
        .unwrap();
    registry
}

#[tokio::test]
async fn a_retry_waits_for_its_backoff_on_the_manual_clock() {
    let dir = tempfile::tempdir().unwrap();
    let queue = TestQueue::new(store(&dir).await, registry()).unwrap();
    let url = "https://example.com/a".to_owned();
    let id = queue.push(&FetchCommand { url: url.clone(), flaky: 1 }).await.unwrap();

    let first = queue.run_until_idle().await.unwrap();
    assert_eq!((first.ran(), first.retried(), first.succeeded()), (1, 1, 0));
    let Some(Outcome::Retry { retry_at, .. }) = &first.attempts[0].outcome else {
        panic!("expected a retry, got {first:?}");
    };
    // The default backoff: 1 s ± 20 %.
    let wait = retry_at.saturating_duration_since(queue.now());
    assert!(wait >= Duration::from_millis(800) && wait <= Duration::from_millis(1_200), "{wait:?}");
    assert_eq!(queue.next_due().await.unwrap(), Some(*retry_at));

    // Not due yet: nothing runs.
    queue.advance(Duration::from_millis(700));
    assert_eq!(queue.run_until_idle().await.unwrap().ran(), 0);
    assert_eq!(queue.status(id).await.unwrap(), Status::InProgress(State::Pending));

    // Due: the retry succeeds, and its follow-up runs in the same call.
    queue.advance(Duration::from_millis(600));
    let second = queue.run_until_idle().await.unwrap();
    assert_eq!((second.ran(), second.succeeded()), (2, 2));
    assert_eq!(second.of::<FetchCommand>()[0].attempt, 2);
    assert_eq!(second.of::<IndexCommand>().len(), 1);
    assert_eq!(queue.output::<FetchCommand>(id).await.unwrap(), Some(200));
    queue.assert_pushed(&IndexCommand { url: url.clone(), status: 200 }).await.unwrap();
    assert!(queue.pushed::<AlertCommand>().await.unwrap().is_empty());
    assert_eq!(queue.next_due().await.unwrap(), None);

    let index = &queue.records::<IndexCommand>().await.unwrap()[0];
    assert_eq!((index.state, index.parent_id), (State::Succeeded, Some(id)));
}

#[tokio::test]
async fn run_until_done_follows_every_backoff_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let queue = TestQueue::new(store(&dir).await, registry()).unwrap();
    let start = queue.now();
    let id = queue.push(&FetchCommand { url: "https://down.example".into(), flaky: 99 }).await.unwrap();

    let summary = queue.run_until_done().await.unwrap();
    // Four attempts (three retries), then the alert chained by `on_failure`.
    assert_eq!(summary.of::<FetchCommand>().len(), 4);
    assert_eq!((summary.retried(), summary.failed(), summary.succeeded()), (3, 1, 1));
    queue
        .assert_pushed(&AlertCommand { message: "https://down.example: connection reset".into() })
        .await
        .unwrap();
    match queue.status(id).await.unwrap() {
        Status::Failed(failure) => assert_eq!(failure.kind, FailureKind::Error),
        other => panic!("expected failed, got {other:?}"),
    }
    // Backoff of 1 + 2 + 4 s, ± 20 % each.
    let elapsed = queue.now().saturating_duration_since(start);
    assert!(
        elapsed >= Duration::from_millis(5_600) && elapsed <= Duration::from_millis(8_400),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn delayed_commands_and_other_targets_wait() {
    let dir = tempfile::tempdir().unwrap();
    let queue = TestQueue::new(store(&dir).await, registry()).unwrap();
    let later = queue
        .push_new(NewCommand::of(&AlertCommand { message: "later".into() }).delay(Duration::from_secs(60)))
        .await
        .unwrap();
    let elsewhere = queue
        .push_new(NewCommand::of(&AlertCommand { message: "elsewhere".into() }).target("eu"))
        .await
        .unwrap();
    assert_eq!(queue.run_until_idle().await.unwrap().ran(), 0);

    let due = queue.advance_to_next_due().await.unwrap().expect("the delayed command is pending");
    assert_eq!(due, queue.now());
    let summary = queue.run_until_idle().await.unwrap();
    assert_eq!(summary.attempts.iter().map(|a| a.id).collect::<Vec<_>>(), vec![later]);
    assert_eq!(queue.status(elsewhere).await.unwrap(), Status::InProgress(State::Pending));
    assert_eq!(queue.pushed::<AlertCommand>().await.unwrap().len(), 2);

    // A queue for the other target runs it.
    let eu = TestQueue::with_config(
        Arc::clone(queue.orch().store()),
        registry(),
        queue.clock().clone(),
        WorkerConfig { instance_key: "eu".into(), ..WorkerConfig::default() },
    )
    .unwrap();
    assert_eq!(eu.run_until_idle().await.unwrap().succeeded(), 1);
    assert_eq!(queue.status(elsewhere).await.unwrap(), Status::Success("null".into()));
}

#[tokio::test]
async fn workflow_steps_run_as_their_dependencies_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = TestQueue::new(store(&dir).await, registry()).unwrap();
    let workflow = Workflow::builder()
        .step("fetch", NewCommand::of(&FetchCommand { url: "https://example.com/w".into(), flaky: 0 }))
        .step_after("alert", NewCommand::of(&AlertCommand { message: "fetched".into() }), ["fetch"])
        .build()
        .unwrap();
    let id = queue.orch().start_workflow(workflow).await.unwrap();

    let summary = queue.run_until_idle().await.unwrap();
    // The fetch, its `on_success` follow-up and the step it unblocked.
    assert_eq!((summary.ran(), summary.succeeded()), (3, 3));
    let status = queue.orch().workflow(id).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);
}

#[tokio::test]
async fn a_timeout_fires_when_the_clock_is_advanced_past_it() {
    #[derive(Debug, Serialize, Deserialize)]
    struct HangCommand;
    impl Command for HangCommand {
        type Output = ();
        const RETRIES: u32 = 0;
        const TIMEOUT: Duration = Duration::from_secs(30);
    }
    let started = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let counter = Arc::clone(&started);
    registry
        .register_fn(move |_: HangCommand, ctx: Context| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                ctx.cancellation_token().cancelled().await;
                Err::<(), _>(HandlerError::new("stopped"))
            }
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_2030();
    let queue =
        TestQueue::with_config(store(&dir).await, registry, clock.clone(), WorkerConfig::default()).unwrap();
    let id = queue.push(&HangCommand).await.unwrap();

    // Another task moves the clock once the handler runs and its timeout is armed.
    let mover = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while started.load(Ordering::SeqCst) == 0 || clock.sleepers() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the handler never started");
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_secs(31));
    });
    let summary = queue.run_until_idle().await.unwrap();
    mover.await.unwrap();
    assert_eq!(summary.failed(), 1);
    assert!(matches!(queue.status(id).await.unwrap(), Status::TimedOut(_)));
}

#[tokio::test]
#[should_panic(expected = "expected a `index` command with input IndexCommand")]
async fn assert_pushed_lists_what_was_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = TestQueue::new(store(&dir).await, registry()).unwrap();
    queue.push(&IndexCommand { url: "https://example.com/x".into(), status: 404 }).await.unwrap();
    queue.assert_pushed(&IndexCommand { url: "https://example.com/x".into(), status: 200 }).await.unwrap();
}

#[tokio::test]
async fn run_until_idle_fires_the_schedules_due_now() {
    let dir = tempfile::tempdir().unwrap();
    let queue = TestQueue::new(store(&dir).await, registry()).unwrap();
    let alert = NewCommand::of(&AlertCommand { message: "tick".into() });
    let schedule = Schedule::every("minutely", Duration::from_secs(60), alert).unwrap();
    queue.orch().schedule(schedule).await.unwrap();
    // 2030-01-01T00:00:00Z is a whole minute: the first slot is a minute away.
    assert_eq!(queue.run_until_idle().await.unwrap().ran(), 0);
    queue.advance(Duration::from_secs(60));
    assert_eq!(queue.run_until_idle().await.unwrap().succeeded(), 1);
    assert_eq!(queue.run_until_idle().await.unwrap().ran(), 0, "a slot fires once");
    queue.advance(Duration::from_secs(120));
    // Two slots are due (one a minute late, within the allowance): both fire.
    assert_eq!(queue.run_until_idle().await.unwrap().succeeded(), 2);
    assert_eq!(queue.pushed::<AlertCommand>().await.unwrap().len(), 3);
}
