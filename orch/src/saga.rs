//! Sagas: persisted state machines whose completed steps are compensated, last first,
//! when a later step fails.
//!
//! A [`SagaMachine`] is built once, fluently: the transitions taken from the initial
//! state (`initially()`) and from named states (`during(state)`), each on one event
//! type, running actions and moving to a state (or starting compensation), plus the
//! final states and an optional timeout. Workers run it once it is registered
//! ([`Registry::register_saga`](crate::Registry::register_saga)).
//!
//! Instances live in the store, one per (saga, correlation id), with their data,
//! state, status, and a version. [`Orch::publish`](crate::Orch::publish) delivers an
//! event durably: it is itself a command. The worker that runs it loads the instance,
//! applies the transition (its actions change the data, push commands and register
//! compensations), and saves the new state and version together with the pushed
//! commands in one transaction, compare-and-set on the version; a conflict re-delivers
//! the event. Events of one instance are applied one at a time, in publish order: an
//! event waits while an earlier one is unfinished. The instance records the last event
//! it applied, so a redelivered event is not applied twice.
//!
//! When an action fails, a transition says so, or the instance outlives its timeout,
//! the saga compensates: its registered compensations run as a chain of durable
//! commands, last registered first, each after the previous one succeeded; then the
//! saga is `compensated`. A compensation that fails for good leaves it
//! `compensation_failed`.
//!
//! ```
//! use orch::{Command, NewCommand, SagaEvent, SagaMachine};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Order { total: u64 }
//! #[derive(Serialize, Deserialize)]
//! struct OrderPlaced { total: u64 }
//! impl SagaEvent for OrderPlaced {}
//! #[derive(Serialize, Deserialize)]
//! struct PaymentReceived;
//! impl SagaEvent for PaymentReceived {}
//! #[derive(Serialize, Deserialize)]
//! struct RefundCommand { total: u64 }
//! impl Command for RefundCommand { type Output = (); }
//!
//! let machine = SagaMachine::<Order>::builder("order")
//!     .initially()
//!     .when::<OrderPlaced>()
//!     .then(|step, placed| {
//!         step.data_mut().total = placed.total;
//!         Ok(())
//!     })
//!     .transition_to("awaiting_payment")
//!     .during("awaiting_payment")
//!     .when::<PaymentReceived>()
//!     .then(|step, _| {
//!         let total = step.data().total;
//!         step.compensate_with(NewCommand::of(&RefundCommand { total }));
//!         Ok(())
//!     })
//!     .transition_to("paid")
//!     .final_states(["paid"])
//!     .build()?;
//! assert_eq!(machine.name(), "order");
//! # Ok::<(), orch::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::Orch;
use crate::clock::Timestamp;
use crate::command::{Command, CommandSpec, NewCommand, default_name};
use crate::error::{Error, HandlerError, Result};
use crate::handler::{Context, Handler};
use crate::retry::RetryPolicy;
use crate::store::{
    CommandId, InsertCommand, ListParams, SagaQuery, SagaRecord, SagaStatus, SagaWrite, SagaWriteStatus,
    WorkflowId,
};
use crate::workflow::Workflow;

/// The state an instance is in before its first transition.
pub const INITIAL_STATE: &str = "initial";

/// An event a saga reacts to: any serde type. Its name (how transitions find it) is
/// the type name in snake_case unless [`SagaEvent::NAME`] says otherwise.
pub trait SagaEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// An explicit event name.
    const NAME: Option<&'static str> = None;

    /// The event's name.
    fn event_name() -> String {
        Self::NAME.map_or_else(default_name::<Self>, str::to_owned)
    }
}

/// The data a saga instance carries: created with `Default` by the first transition,
/// stored as JSON.
pub trait SagaData: Serialize + DeserializeOwned + Default + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Default + Send + Sync + 'static> SagaData for T {}

/// What a transition's action sees and does: the instance data, commands to push, and
/// compensations to register, all committed with the new state or not at all.
#[derive(Debug)]
pub struct SagaStep<D> {
    data: D,
    correlation_id: String,
    now: Timestamp,
    pushes: Vec<NewCommand>,
    compensations: Vec<NewCommand>,
}

impl<D> SagaStep<D> {
    /// The instance data.
    pub fn data(&self) -> &D {
        &self.data
    }

    /// The instance data, to change.
    pub fn data_mut(&mut self) -> &mut D {
        &mut self.data
    }

    /// The instance's correlation id.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// The time of the transition (from the injected clock).
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Pushes a command when the transition commits. Its correlation id is the
    /// instance's unless it sets its own.
    pub fn push(&mut self, command: NewCommand) {
        self.pushes.push(command);
    }

    /// Registers a compensation: a command run, if the saga compensates, after every
    /// compensation registered later has succeeded.
    pub fn compensate_with(&mut self, command: NewCommand) {
        self.compensations.push(command);
    }
}

type Action<D> =
    Box<dyn Fn(&mut SagaStep<D>, &serde_json::Value) -> std::result::Result<(), HandlerError> + Send + Sync>;

enum Target {
    State(String),
    Compensate,
}

/// Checks that an event payload decodes as the transition's event type.
type Decodes = Box<dyn Fn(&serde_json::Value) -> std::result::Result<(), String> + Send + Sync>;

struct Transition<D> {
    from: String,
    event: String,
    decodes: Decodes,
    actions: Vec<Action<D>>,
    target: Target,
}

/// A saga's state machine; build it with [`SagaMachine::builder`].
pub struct SagaMachine<D> {
    name: String,
    transitions: Vec<Transition<D>>,
    finals: HashSet<String>,
    timeout: Option<Duration>,
}

impl<D> std::fmt::Debug for SagaMachine<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaMachine")
            .field("name", &self.name)
            .field("transitions", &self.transitions.len())
            .field("finals", &self.finals)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<D: SagaData> SagaMachine<D> {
    /// Starts declaring the machine of the saga called `name`.
    pub fn builder(name: impl Into<String>) -> SagaBuilder<D> {
        SagaBuilder {
            machine: SagaMachine {
                name: name.into(),
                transitions: Vec::new(),
                finals: HashSet::new(),
                timeout: None,
            },
        }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Declares a [`SagaMachine`].
pub struct SagaBuilder<D> {
    machine: SagaMachine<D>,
}

impl<D> std::fmt::Debug for SagaBuilder<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.machine.fmt(f)
    }
}

impl<D: SagaData> SagaBuilder<D> {
    /// Transitions taken by an instance that does not exist yet (its first event).
    pub fn initially(self) -> During<D> {
        During { builder: self, from: INITIAL_STATE.to_owned() }
    }

    /// Transitions taken from `state`.
    pub fn during(self, state: impl Into<String>) -> During<D> {
        During { builder: self, from: state.into() }
    }

    /// The states in which the saga is complete.
    pub fn final_states<I, S>(mut self, states: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.machine.finals.extend(states.into_iter().map(Into::into));
        self
    }

    /// An instance that makes no transition for this long compensates (checked by
    /// workers at their rescue interval, by their injected clock).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.machine.timeout = Some(timeout);
        self
    }

    /// Checks the machine: a name, at least one initial transition, at least one
    /// final state, no two transitions on one (state, event), no transition out of a
    /// final state, and every target state either final or left by some transition.
    pub fn build(self) -> Result<SagaMachine<D>> {
        let m = self.machine;
        let fail = |message: String| Err(Error::InvalidSaga { saga: m.name.clone(), message });
        if m.name.is_empty() {
            return fail("the saga needs a name".into());
        }
        if !m.transitions.iter().any(|t| t.from == INITIAL_STATE) {
            return fail("no transition starts an instance; declare one with `initially()`".into());
        }
        if m.finals.is_empty() {
            return fail("no final state; declare them with `final_states`".into());
        }
        let mut seen = HashSet::new();
        for t in &m.transitions {
            if !seen.insert((t.from.as_str(), t.event.as_str())) {
                return fail(format!("two transitions from `{}` on `{}`", t.from, t.event));
            }
            if m.finals.contains(&t.from) {
                return fail(format!("`{}` is final, yet a transition leaves it on `{}`", t.from, t.event));
            }
            if let Target::State(to) = &t.target {
                if to.is_empty() || to == INITIAL_STATE {
                    return fail(format!("a transition on `{}` goes to the invalid state {to:?}", t.event));
                }
                if !m.finals.contains(to) && !m.transitions.iter().any(|u| &u.from == to) {
                    return fail(format!("state `{to}` is neither final nor left by any transition"));
                }
            }
        }
        Ok(m)
    }
}

/// Transitions from one state; see [`SagaBuilder::during`].
pub struct During<D> {
    builder: SagaBuilder<D>,
    from: String,
}

impl<D: SagaData> During<D> {
    /// A transition on event type `E`.
    pub fn when<E: SagaEvent>(self) -> When<D, E> {
        When { during: self, actions: Vec::new(), _event: PhantomData }
    }
}

/// One transition being declared; see [`During::when`].
pub struct When<D, E> {
    during: During<D>,
    actions: Vec<Action<D>>,
    _event: PhantomData<fn(E)>,
}

impl<D: SagaData, E: SagaEvent> When<D, E> {
    /// An action run when the transition is taken, after the ones declared before it.
    /// An error makes the saga compensate instead of moving on.
    pub fn then<F>(mut self, action: F) -> Self
    where
        F: Fn(&mut SagaStep<D>, &E) -> std::result::Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.actions.push(Box::new(move |step, payload| {
            let event: E = serde_json::from_value(payload.clone()).map_err(|e| {
                HandlerError::permanent(format!("event does not decode as `{}`: {e}", E::event_name()))
            })?;
            action(step, &event)
        }));
        self
    }

    /// Ends the transition in `state`.
    pub fn transition_to(self, state: impl Into<String>) -> SagaBuilder<D> {
        self.finish(Target::State(state.into()))
    }

    /// Ends the transition by compensating: the registered compensations run, last
    /// first, and the saga ends compensated.
    pub fn compensate(self) -> SagaBuilder<D> {
        self.finish(Target::Compensate)
    }

    fn finish(self, target: Target) -> SagaBuilder<D> {
        let During { mut builder, from } = self.during;
        let decodes: Decodes = Box::new(|payload| {
            serde_json::from_value::<E>(payload.clone()).map(drop).map_err(|e| e.to_string())
        });
        builder.machine.transitions.push(Transition {
            from,
            event: E::event_name(),
            decodes,
            actions: self.actions,
            target,
        });
        builder
    }
}

/// The command that carries an event (or a saga's own signal) to a saga instance.
/// Its name is `orch.saga.<saga>` ([`event_command_name`]), so only workers that have
/// that saga registered claim it; applications use [`Orch::publish`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SagaEventCommand {
    /// The saga's name.
    pub saga: String,
    /// The instance.
    pub correlation_id: String,
    /// What is delivered.
    pub signal: Signal,
}

/// What a [`SagaEventCommand`] delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    /// An application event.
    Event {
        /// The event's name.
        name: String,
        /// The event as JSON.
        payload: serde_json::Value,
    },
    /// The instance at this version outlived its timeout.
    Timeout {
        /// The version that timed out; a later one ignores the signal.
        version: i64,
    },
    /// Every compensation succeeded.
    CompensationsDone,
    /// A compensation failed for good.
    CompensationFailed,
}

/// The command name of the events of the saga called `saga`.
pub fn event_command_name(saga: &str) -> String {
    format!("orch.saga.{saga}")
}

impl Command for SagaEventCommand {
    type Output = String;
    /// The type's own name; every event is pushed under its saga's
    /// [`event_command_name`] instead.
    const NAME: Option<&'static str> = Some("orch.saga");
    /// Retries carry conflicts and waits behind earlier events, so there are many.
    const RETRIES: u32 = 100_000;
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn retry_policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
            ..RetryPolicy::default()
        }
    }

    /// The end of a compensation chain is cancelled when a compensation fails for
    /// good; the saga then learns so.
    fn on_cancel(&self) -> Vec<NewCommand> {
        match self.signal {
            Signal::CompensationsDone => {
                vec![event_command(&self.saga, &self.correlation_id, Signal::CompensationFailed)]
            }
            _ => Vec::new(),
        }
    }
}

/// The result of applying one event to one instance, before it is saved.
struct Applied {
    state: String,
    status: SagaStatus,
    data: String,
    pushes: Vec<NewCommand>,
    compensations: Vec<NewCommand>,
    note: String,
}

/// A machine with its data type erased, as the runtime sees it.
trait ErasedMachine: Send + Sync {
    fn timeout(&self) -> Option<Duration>;
    /// `None` when no transition matches.
    fn apply(
        &self,
        state: &str,
        data: Option<&str>,
        event: &str,
        payload: &serde_json::Value,
        correlation_id: &str,
        now: Timestamp,
    ) -> std::result::Result<Option<Applied>, HandlerError>;
}

impl<D: SagaData> ErasedMachine for SagaMachine<D> {
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn apply(
        &self,
        state: &str,
        data: Option<&str>,
        event: &str,
        payload: &serde_json::Value,
        correlation_id: &str,
        now: Timestamp,
    ) -> std::result::Result<Option<Applied>, HandlerError> {
        let Some(transition) = self.transitions.iter().find(|t| t.from == state && t.event == event) else {
            return Ok(None);
        };
        // An event that does not decode fails on its own and leaves the saga as it is.
        (transition.decodes)(payload)
            .map_err(|e| HandlerError::permanent(format!("event `{event}` does not decode: {e}")))?;
        let data: D = match data {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| HandlerError::permanent(format!("saga data does not decode: {e}")))?,
            None => D::default(),
        };
        let mut step = SagaStep {
            data,
            correlation_id: correlation_id.to_owned(),
            now,
            pushes: Vec::new(),
            compensations: Vec::new(),
        };
        let mut failure = None;
        for action in &transition.actions {
            if let Err(e) = action(&mut step, payload) {
                failure = Some(e);
                break;
            }
        }
        let encode = |data: &D| {
            serde_json::to_string(data)
                .map_err(|e| HandlerError::permanent(format!("saga data does not encode: {e}")))
        };
        Ok(Some(match (failure, &transition.target) {
            (Some(error), _) => Applied {
                state: state.to_owned(),
                status: SagaStatus::Compensating,
                data: encode(&step.data)?,
                // A failed action commits nothing it asked for, but what earlier
                // transitions registered is compensated.
                pushes: Vec::new(),
                compensations: Vec::new(),
                note: format!("`{event}` in `{state}`: action failed ({}); compensating", error.message()),
            },
            (None, Target::Compensate) => Applied {
                state: state.to_owned(),
                status: SagaStatus::Compensating,
                data: encode(&step.data)?,
                pushes: step.pushes,
                compensations: step.compensations,
                note: format!("`{event}` in `{state}`: compensating"),
            },
            (None, Target::State(to)) => Applied {
                state: to.clone(),
                status: if self.finals.contains(to) { SagaStatus::Completed } else { SagaStatus::Active },
                data: encode(&step.data)?,
                pushes: step.pushes,
                compensations: step.compensations,
                note: format!("`{event}`: {state} -> {to}"),
            },
        }))
    }
}

/// The sagas a registry runs, shared by its saga-event handler.
#[derive(Default, Clone)]
pub(crate) struct SagaRuntime {
    machines: Arc<RwLock<HashMap<String, Arc<dyn ErasedMachine>>>>,
}

impl std::fmt::Debug for SagaRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> =
            self.machines.read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("SagaRuntime").field("sagas", &names).finish()
    }
}

impl SagaRuntime {
    pub(crate) fn add<D: SagaData>(&self, machine: SagaMachine<D>) -> Result<()> {
        let mut machines = self.machines.write().unwrap_or_else(|e| e.into_inner());
        if machines.contains_key(&machine.name) {
            return Err(Error::DuplicateHandler(format!("saga `{}`", machine.name)));
        }
        machines.insert(machine.name.clone(), Arc::new(machine));
        Ok(())
    }

    fn get(&self, saga: &str) -> Option<Arc<dyn ErasedMachine>> {
        self.machines.read().unwrap_or_else(|e| e.into_inner()).get(saga).cloned()
    }

    fn with_timeouts(&self) -> Vec<String> {
        let machines = self.machines.read().unwrap_or_else(|e| e.into_inner());
        machines.iter().filter(|(_, m)| m.timeout().is_some()).map(|(n, _)| n.clone()).collect()
    }

    /// Publishes a timeout signal to every active instance past its timeout. A
    /// duplicate (from another worker, or an earlier tick) is ignored when applied.
    pub(crate) async fn publish_timeouts(&self, orch: &Orch, now: Timestamp) -> Result<usize> {
        let mut published = 0;
        for saga in self.with_timeouts() {
            let query = SagaQuery {
                saga: Some(saga.clone()),
                status: Some(SagaStatus::Active),
                timeout_before: Some(now),
                limit: 100,
                ..SagaQuery::default()
            };
            for instance in orch.store().sagas(query).await? {
                if timeout_pending(orch, &saga, &instance.correlation_id).await? {
                    continue;
                }
                let signal = Signal::Timeout { version: instance.version };
                orch.push_new(event_command(&saga, &instance.correlation_id, signal)).await?;
                tracing::info!(saga = %saga, correlation_id = %instance.correlation_id, "saga timed out");
                published += 1;
            }
        }
        Ok(published)
    }
}

/// The command that delivers `event` to an instance, for pushing it yourself (with
/// [`Orch::push_many`](crate::Orch::push_many), say); [`Orch::publish`] pushes one.
pub fn event_for<E: SagaEvent>(saga: &str, correlation_id: &str, event: &E) -> Result<NewCommand> {
    let payload = serde_json::to_value(event)
        .map_err(|source| Error::Encode { what: format!("saga event `{}`", E::event_name()), source })?;
    Ok(event_command(saga, correlation_id, Signal::Event { name: E::event_name(), payload }))
}

/// Whether a timeout signal for the instance is already waiting to be applied.
async fn timeout_pending(orch: &Orch, saga: &str, correlation_id: &str) -> Result<bool> {
    let params = ListParams {
        name: Some(event_command_name(saga)),
        correlation_id: Some(correlation_id.to_owned()),
        unfinished: true,
        limit: 10_000,
        ..ListParams::default()
    };
    Ok(orch.store().list(params).await?.iter().any(|r| {
        serde_json::from_str::<SagaEventCommand>(&r.input)
            .is_ok_and(|e| matches!(e.signal, Signal::Timeout { .. }))
    }))
}

pub(crate) fn event_command(saga: &str, correlation_id: &str, signal: Signal) -> NewCommand {
    NewCommand::of(&SagaEventCommand {
        saga: saga.to_owned(),
        correlation_id: correlation_id.to_owned(),
        signal,
    })
    .named(event_command_name(saga))
    .correlation_id(correlation_id)
}

/// Runs [`SagaEventCommand`]s for the registered machines.
pub(crate) struct SagaHandler {
    pub(crate) runtime: SagaRuntime,
}

impl Handler<SagaEventCommand> for SagaHandler {
    async fn handle(&self, cmd: SagaEventCommand, ctx: Context) -> std::result::Result<String, HandlerError> {
        let machine = self
            .runtime
            .get(&cmd.saga)
            .ok_or_else(|| HandlerError::permanent(format!("no saga named `{}` is registered", cmd.saga)))?;
        if let Some(earlier) = earlier_unfinished_event(&ctx, &cmd).await? {
            return Err(HandlerError::new(format!(
                "waiting for the earlier event {earlier} of this instance"
            )));
        }
        let orch = ctx.orch();
        let now = orch.clock().now();
        let current = orch.store().saga(&cmd.saga, &cmd.correlation_id).await?;
        if let Some(record) = &current
            && record.last_event == Some(ctx.id())
        {
            return Ok("already applied".to_owned());
        }
        let status = current.as_ref().map_or(SagaStatus::Active, |r| r.status);
        let state = current.as_ref().map_or(INITIAL_STATE, |r| r.state.as_str()).to_owned();
        let applied = match &cmd.signal {
            Signal::Event { name, payload } => {
                if status != SagaStatus::Active {
                    return Ok(format!("ignored `{name}`: the saga is {status}"));
                }
                let data = current.as_ref().map(|r| r.data.as_str());
                match machine.apply(&state, data, name, payload, &cmd.correlation_id, now)? {
                    Some(applied) => applied,
                    None => return Ok(format!("ignored `{name}`: no transition from `{state}`")),
                }
            }
            Signal::Timeout { version } => {
                let Some(record) =
                    current.as_ref().filter(|r| r.status == SagaStatus::Active && r.version == *version)
                else {
                    return Ok("ignored a stale timeout".to_owned());
                };
                Applied {
                    state,
                    status: SagaStatus::Compensating,
                    data: record.data.clone(),
                    pushes: Vec::new(),
                    compensations: Vec::new(),
                    note: "timed out; compensating".to_owned(),
                }
            }
            Signal::CompensationsDone | Signal::CompensationFailed => {
                let Some(record) = current.as_ref().filter(|r| r.status == SagaStatus::Compensating) else {
                    return Ok(format!("ignored: the saga is {status}"));
                };
                let done = cmd.signal == Signal::CompensationsDone;
                Applied {
                    state,
                    status: if done { SagaStatus::Compensated } else { SagaStatus::CompensationFailed },
                    data: record.data.clone(),
                    pushes: Vec::new(),
                    compensations: Vec::new(),
                    note: if done {
                        "compensated".to_owned()
                    } else {
                        "a compensation failed for good".to_owned()
                    },
                }
            }
        };
        let (write, note) = build_write(&cmd, current.as_ref(), applied, machine.timeout(), ctx.id(), now)?;
        crate::command::check_input_sizes(&write.commands, orch.max_input_bytes())
            .map_err(|e| HandlerError::permanent(format!("the transition's commands are invalid: {e}")))?;
        match orch.store().save_saga(write).await? {
            SagaWriteStatus::Saved => {
                tracing::info!(saga = %cmd.saga, correlation_id = %cmd.correlation_id, "{note}");
                Ok(note)
            }
            SagaWriteStatus::Conflict => Err(HandlerError::new(format!(
                "saga `{}` instance {} changed concurrently; the event will be delivered again",
                cmd.saga, cmd.correlation_id
            ))),
        }
    }
}

/// The id of an unfinished event of the same instance published before this one and
/// already due. One query reads every unfinished state at once: reading them one by one
/// could miss an event that moves from one to another in between. An earlier event
/// pushed with a delay, not yet due and not yet tried, does not hold later ones back.
async fn earlier_unfinished_event(
    ctx: &Context,
    cmd: &SagaEventCommand,
) -> std::result::Result<Option<CommandId>, HandlerError> {
    let params = ListParams {
        name: Some(event_command_name(&cmd.saga)),
        correlation_id: Some(cmd.correlation_id.clone()),
        unfinished: true,
        limit: 10_000,
        ..ListParams::default()
    };
    let now = ctx.orch().clock().now();
    Ok(ctx
        .orch()
        .store()
        .list(params)
        .await?
        .into_iter()
        .take_while(|r| r.id < ctx.id())
        // Only an event pushed with a delay and not tried yet steps aside; one waiting
        // out a retry backoff is still ahead in line.
        .find(|r| !(r.state == crate::store::State::Pending && r.attempts == 0 && r.scheduled_at > now))
        .map(|r| r.id))
}

/// The compensations registered so far, as stored.
fn stack(record: Option<&SagaRecord>) -> std::result::Result<Vec<CommandSpec>, HandlerError> {
    match record {
        Some(r) if !r.compensations.is_empty() => serde_json::from_str(&r.compensations)
            .map_err(|e| HandlerError::permanent(format!("stored compensations do not decode: {e}"))),
        _ => Ok(Vec::new()),
    }
}

/// The saga write for an applied event, and the note describing it.
fn build_write(
    cmd: &SagaEventCommand,
    current: Option<&SagaRecord>,
    applied: Applied,
    timeout: Option<Duration>,
    event_id: CommandId,
    now: Timestamp,
) -> std::result::Result<(SagaWrite, String), HandlerError> {
    let mut compensations = stack(current)?;
    let invalid = |e: Error| HandlerError::permanent(format!("the transition's commands are invalid: {e}"));
    for command in applied.compensations {
        // Checked now, so a compensation that could never be pushed fails this event
        // instead of the compensation later.
        command.clone_spec_checked(now).map_err(invalid)?;
        compensations.push(command.to_spec().map_err(invalid)?);
    }
    let version = current.map_or(1, |r| r.version + 1);
    let mut commands: Vec<InsertCommand> = Vec::new();
    for command in applied.pushes {
        command.check_no_unique_key("pushed by a saga transition").map_err(invalid)?;
        let command = command.correlation_id_if_unset(&cmd.correlation_id);
        commands.push(command.into_insert(now, Some((event_id, &cmd.correlation_id))).map_err(invalid)?);
    }
    let mut status = applied.status;
    let mut note = applied.note;
    if status == SagaStatus::Compensating {
        if compensations.is_empty() {
            status = SagaStatus::Compensated;
            note.push_str("; nothing to compensate");
        } else {
            commands.extend(compensation_chain(cmd, &compensations, now).map_err(|e| {
                HandlerError::permanent(format!("the compensations cannot be pushed: {}", e.message()))
            })?);
            note.push_str(&format!("; {} compensation(s) to run", compensations.len()));
        }
    }
    let record = SagaRecord {
        saga: cmd.saga.clone(),
        correlation_id: cmd.correlation_id.clone(),
        state: applied.state,
        status,
        data: applied.data,
        version,
        compensations: serde_json::to_string(&compensations)
            .map_err(|e| HandlerError::permanent(format!("compensations do not encode: {e}")))?,
        last_event: Some(event_id),
        timeout_at: match (status, timeout) {
            (SagaStatus::Active, Some(t)) => Some(now + t),
            _ => None,
        },
        created_at: current.map_or(now, |r| r.created_at),
        updated_at: now,
    };
    Ok((SagaWrite { record, expected_version: current.map(|r| r.version), commands }, note))
}

/// The compensations as a chain of workflow steps, last registered first, ending in
/// the signal that the saga is compensated.
fn compensation_chain(
    cmd: &SagaEventCommand,
    compensations: &[CommandSpec],
    now: Timestamp,
) -> std::result::Result<Vec<InsertCommand>, HandlerError> {
    let mut builder = Workflow::builder();
    let mut previous: Option<String> = None;
    for (i, spec) in compensations.iter().enumerate().rev() {
        let name = format!("compensate-{}-{}", i + 1, spec.name);
        let command = NewCommand::from_spec(spec.clone()).correlation_id_if_unset(&cmd.correlation_id);
        builder = match previous {
            Some(p) => builder.step_after(name.clone(), command, [p]),
            None => builder.step(name.clone(), command),
        };
        previous = Some(name);
    }
    let done = event_command(&cmd.saga, &cmd.correlation_id, Signal::CompensationsDone);
    builder = match previous {
        Some(p) => builder.step_after("compensated", done, [p]),
        None => builder.step("compensated", done),
    };
    let workflow = builder.build()?;
    Ok(workflow.into_rows(WorkflowId::generate(now), now)?)
}

/// A saga instance read back with typed data.
#[derive(Debug, Clone)]
pub struct SagaInstance<D> {
    /// The stored row.
    pub record: SagaRecord,
    /// Its data, decoded.
    pub data: D,
}

pub(crate) fn decode_instance<D: DeserializeOwned>(record: SagaRecord) -> Result<SagaInstance<D>> {
    let data = serde_json::from_str(&record.data).map_err(|source| Error::Decode {
        what: format!("data of saga `{}` instance {}", record.saga, record.correlation_id),
        source,
    })?;
    Ok(SagaInstance { record, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Serialize, Deserialize)]
    struct Data {
        n: u32,
    }
    #[derive(Serialize, Deserialize)]
    struct Start;
    impl SagaEvent for Start {}
    #[derive(Serialize, Deserialize)]
    struct Next;
    impl SagaEvent for Next {}

    fn invalid(builder: SagaBuilder<Data>) -> String {
        match builder.build() {
            Err(Error::InvalidSaga { message, .. }) => message,
            other => panic!("expected InvalidSaga, got {other:?}"),
        }
    }

    #[test]
    fn builder_rejects_incomplete_machines() {
        assert!(invalid(SagaMachine::<Data>::builder("s").final_states(["done"])).contains("initially"));
        assert!(
            invalid(SagaMachine::<Data>::builder("s").initially().when::<Start>().transition_to("done"))
                .contains("final")
        );
        let dangling = SagaMachine::<Data>::builder("s")
            .initially()
            .when::<Start>()
            .transition_to("limbo")
            .final_states(["done"]);
        assert!(invalid(dangling).contains("limbo"));
        let twice = SagaMachine::<Data>::builder("s")
            .initially()
            .when::<Start>()
            .transition_to("done")
            .initially()
            .when::<Start>()
            .transition_to("done")
            .final_states(["done"]);
        assert!(invalid(twice).contains("two transitions"));
        let out_of_final = SagaMachine::<Data>::builder("s")
            .initially()
            .when::<Start>()
            .transition_to("done")
            .during("done")
            .when::<Next>()
            .transition_to("done")
            .final_states(["done"]);
        assert!(invalid(out_of_final).contains("final"));
    }

    #[test]
    fn transitions_apply_actions_and_failures_compensate() {
        let machine = SagaMachine::<Data>::builder("s")
            .initially()
            .when::<Start>()
            .then(|step, _| {
                step.data_mut().n += 1;
                step.compensate_with(NewCommand::raw("undo", serde_json::json!({})));
                Ok(())
            })
            .transition_to("middle")
            .during("middle")
            .when::<Next>()
            .then(|_, _| Err(HandlerError::new("no stock")))
            .transition_to("done")
            .final_states(["done"])
            .build()
            .unwrap();
        let now = Timestamp::from_millis(1);
        let start =
            machine.apply(INITIAL_STATE, None, "start", &serde_json::json!(null), "c", now).unwrap().unwrap();
        assert_eq!(
            (start.state.as_str(), start.status, start.data.as_str()),
            ("middle", SagaStatus::Active, r#"{"n":1}"#)
        );
        assert_eq!(start.compensations.len(), 1);
        let next = machine
            .apply("middle", Some(&start.data), "next", &serde_json::json!(null), "c", now)
            .unwrap()
            .unwrap();
        assert_eq!((next.state.as_str(), next.status), ("middle", SagaStatus::Compensating));
        assert!(
            machine.apply("middle", None, "start", &serde_json::json!(null), "c", now).unwrap().is_none()
        );
    }
}
