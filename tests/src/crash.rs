//! The crash test's commands: a workflow and a saga whose steps take long enough for a
//! worker process to be killed in the middle of one (`orch-test-worker --mode crash`).

use std::time::Duration;

use orch::{
    Command, Context, HandlerError, NewCommand, Registry, SagaEvent, SagaMachine, WorkerConfig, Workflow,
};
use serde::{Deserialize, Serialize};

/// Sleeps, then (when it belongs to a saga) publishes `Finished` to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlowCommand {
    /// How long to sleep, in milliseconds.
    pub millis: u64,
    /// The saga instance to tell when done.
    pub saga: Option<String>,
}

impl Command for SlowCommand {
    type Output = ();
    const TIMEOUT: Duration = Duration::from_secs(3);
}

/// Compensation of the saga's slow step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UndoSlowCommand;

impl Command for UndoSlowCommand {
    type Output = ();
}

/// Starts a `crashy` saga instance.
#[derive(Debug, Serialize, Deserialize)]
pub struct Begin {
    /// How long its step sleeps.
    pub millis: u64,
}
impl SagaEvent for Begin {}

/// The saga's step finished.
#[derive(Debug, Serialize, Deserialize)]
pub struct Finished;
impl SagaEvent for Finished {}

/// The crash test's saga: `Begin` pushes a slow step (with a compensation) and waits
/// for `Finished`.
pub fn crashy_saga() -> SagaMachine<()> {
    SagaMachine::<()>::builder("crashy")
        .initially()
        .when::<Begin>()
        .then(|step, begin| {
            let saga = Some(step.correlation_id().to_owned());
            step.push(NewCommand::of(&SlowCommand { millis: begin.millis, saga }));
            step.compensate_with(NewCommand::of(&UndoSlowCommand));
            Ok(())
        })
        .transition_to("working")
        .during("working")
        .when::<Finished>()
        .transition_to("done")
        .final_states(["done"])
        .build()
        .expect("the crash saga is valid")
}

/// A two-step workflow of slow steps.
pub fn slow_workflow(millis: u64) -> Workflow {
    Workflow::builder()
        .step("first", NewCommand::of(&SlowCommand { millis, saga: None }))
        .step_after("second", NewCommand::of(&SlowCommand { millis, saga: None }), ["first"])
        .build()
        .expect("the crash workflow is valid")
}

/// The registry of a crash-test worker.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_saga(crashy_saga()).unwrap();
    registry
        .register_fn(|c: SlowCommand, ctx: Context| async move {
            tokio::time::sleep(Duration::from_millis(c.millis)).await;
            if let Some(key) = c.saga {
                ctx.orch().publish("crashy", &key, &Finished).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .unwrap()
        .register_fn(|_: UndoSlowCommand, _: Context| async move { Ok::<_, HandlerError>(()) })
        .unwrap();
    registry
}

/// Short leases, so the work of a killed worker is rescued within seconds.
pub fn config(instance: &str) -> WorkerConfig {
    WorkerConfig {
        instance_key: instance.to_owned(),
        poll_interval: Duration::from_millis(50),
        lease_buffer: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        rescue_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    }
}

/// A worker process, killed if the test ends before it does.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(binary: &str, backend: &str, url: &str, prefix: &str) -> Process {
    let child = std::process::Command::new(binary)
        .args(["--backend", backend, "--url", url, "--prefix", prefix, "--instance", orch::DEFAULT_TARGET])
        .args(["--mode", "crash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start orch-test-worker");
    Process(child)
}

/// Starts a worker process, a workflow and a saga of slow steps; kills the worker
/// (SIGKILL) while a workflow step and the saga's step are running; starts another
/// worker; and asserts that the workflow ends succeeded or failed and the saga
/// completed or compensated, with nothing left stuck.
pub async fn run(
    binary: &str,
    backend: &str,
    url: &str,
    prefix: &str,
    store: std::sync::Arc<dyn orch::Store>,
) {
    use orch::{Orch, SagaStatus, State, WorkflowState};

    let orch = Orch::new(store);
    let first = spawn(binary, backend, url, prefix);
    let workflow = orch.start_workflow(slow_workflow(1_500)).await.unwrap();
    orch.publish("crashy", "c1", &Begin { millis: 1_500 }).await.unwrap();

    let killed: Vec<orch::CommandId> =
        crate::support::eventually("a workflow step and the saga's step to be running", || async {
            let running = orch
                .store()
                .list(orch::store::ListParams {
                    state: Some(State::Running),
                    name: Some("slow".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            let in_workflow = running.iter().any(|c| c.workflow.is_some());
            let in_saga = running.iter().any(|c| c.correlation_id == "c1");
            (in_workflow && in_saga).then(|| running.iter().map(|c| c.id).collect())
        })
        .await;
    let mut first = first;
    first.0.kill().expect("kill the worker");
    first.0.wait().expect("reap the worker");

    let _second = spawn(binary, backend, url, prefix);
    let status = tokio::time::timeout(crate::support::WAIT, orch.wait_workflow(workflow))
        .await
        .expect("the workflow ended after the crash")
        .unwrap();
    assert!(matches!(status.state, WorkflowState::Succeeded | WorkflowState::Failed), "{status:?}");
    let saga = crate::support::eventually("the saga to end after the crash", || async {
        orch.saga("crashy", "c1").await.unwrap().filter(|s| s.status.is_final())
    })
    .await;
    assert!(matches!(saga.status, SagaStatus::Completed | SagaStatus::Compensated), "{saga:?}");

    // Nothing is left unfinished (the last completions may still be on their way).
    crate::support::eventually("every command to finish", || async {
        let params = orch::store::ListParams { unfinished: true, ..Default::default() };
        orch.store().list(params).await.unwrap().is_empty().then_some(())
    })
    .await;
    // The steps running when the worker was killed were rescued and run again.
    for id in &killed {
        let record = orch.get(*id).await.unwrap().unwrap();
        let kinds: Vec<orch::JournalKind> =
            orch.journal(*id).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&orch::JournalKind::Rescued), "{id} was rescued: {kinds:?}");
        assert!(record.attempts >= 2, "{id} ran again: {record:?}");
    }
    let rescued = killed.len();
    eprintln!(
        "{backend}: workflow {} and saga {} after the crash; {rescued} killed steps rescued and run again",
        status.state, saga.status
    );
}
