//! Handlers, the context they run in, and the registry that maps names to them.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::client::Orch;
use crate::command::{Command, NewCommand};
use crate::error::{Error, Failure, FailureKind, HandlerError, Result};
use crate::saga::{SagaData, SagaEventCommand, SagaHandler, SagaMachine, SagaRuntime, event_command_name};
use crate::store::{CommandId, State, StepOf};

/// Runs one command type.
///
/// Implement it on a struct that holds what the work needs (a mail client, a pool),
/// or register a closure with [`Registry::register_fn`].
///
/// ```
/// use orch::{Command, Context, Handler, HandlerError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct AddCommand { a: i64, b: i64 }
/// # impl Command for AddCommand { type Output = i64; }
///
/// struct Adder;
///
/// impl Handler<AddCommand> for Adder {
///     async fn handle(&self, cmd: AddCommand, _ctx: Context) -> Result<i64, HandlerError> {
///         Ok(cmd.a + cmd.b)
///     }
/// }
/// ```
pub trait Handler<C: Command>: Send + Sync + 'static {
    /// Runs one attempt of `command`. The future is dropped (and `ctx`'s cancellation
    /// token fires) when the attempt times out, is cancelled, or its lease is lost.
    fn handle(
        &self,
        command: C,
        ctx: Context,
    ) -> impl Future<Output = std::result::Result<C::Output, HandlerError>> + Send;
}

/// What a handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) id: CommandId,
    pub(crate) name: String,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) correlation_id: String,
    pub(crate) workflow: Option<StepOf>,
    pub(crate) token: CancellationToken,
    pub(crate) orch: Orch,
}

impl Context {
    /// The command's id.
    pub fn id(&self) -> CommandId {
        self.id
    }

    /// The command's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which attempt this is, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The number of attempts allowed (retries + 1).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The correlation id shared with follow-ups.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// Fires when the attempt is timed out, cancelled, loses its lease, or the worker
    /// shuts down. Pass it to work spawned outside the handler's future.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether the attempt has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The client, to read or push other commands.
    pub fn orch(&self) -> &Orch {
        &self.orch
    }

    /// The workflow step this command is, if it is one.
    pub fn workflow(&self) -> Option<&StepOf> {
        self.workflow.as_ref()
    }

    /// The output of the dependency named `step` (which must have succeeded, as every
    /// dependency has by the time a step runs), decoded as `C`'s output.
    ///
    /// ```no_run
    /// # use orch::{Command, Context, HandlerError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct ChargeCommand;
    /// # impl Command for ChargeCommand { type Output = u64; }
    /// # async fn demo(ctx: Context) -> Result<(), HandlerError> {
    /// let charged_cents = ctx.dependency_output::<ChargeCommand>("payments").await?;
    /// # Ok(()) }
    /// ```
    pub async fn dependency_output<C: Command>(&self, step: &str) -> Result<C::Output> {
        let missing = || Error::NoSuchDependency {
            step: self.workflow.as_ref().map_or_else(|| self.id.to_string(), |w| w.step.clone()),
            dependency: step.to_owned(),
        };
        let workflow = self.workflow.as_ref().ok_or_else(missing)?;
        let steps = self.orch.store().workflow_steps(workflow.workflow_id).await?;
        let depends_on = steps.iter().find(|s| s.command.id == self.id).map(|s| s.depends_on.as_slice());
        let dependency = steps
            .iter()
            .filter(|s| depends_on.is_some_and(|d| d.contains(&s.command.id)))
            .find(|s| s.command.workflow.as_ref().is_some_and(|w| w.step == step))
            .filter(|s| s.command.state == State::Succeeded)
            .ok_or_else(missing)?;
        let json = dependency.command.output.as_deref().unwrap_or("null");
        serde_json::from_str(json)
            .map_err(|source| Error::Decode { what: format!("output of step `{step}`"), source })
    }

    /// Pushes a command now (not tied to this attempt's outcome) as a child of this
    /// one: it records this command as its parent and shares its correlation id.
    pub async fn push(&self, command: NewCommand) -> Result<CommandId> {
        self.orch.push_child(command, self.id, &self.correlation_id).await
    }
}

/// The boxed future of one erased handler run.
pub(crate) type RunFuture = Pin<Box<dyn Future<Output = RunResult> + Send>>;

/// What an erased handler run produced.
pub(crate) enum RunResult {
    Succeeded { output: String, follow_ups: Vec<NewCommand> },
    Failed(HandlerError),
}

/// A handler with its command type erased, as the worker sees it.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Decodes the input and starts the handler; a decode error is returned at once.
    fn run(&self, input: &str, ctx: Context) -> std::result::Result<RunFuture, Failure>;
    /// The `on_failure` follow-ups of the command with this input.
    fn failure_follow_ups(&self, input: &str, failure: &Failure) -> Vec<NewCommand>;
    /// The `on_cancel` follow-ups of the command with this input.
    fn cancel_follow_ups(&self, input: &str) -> Vec<NewCommand>;
}

struct Typed<C, H> {
    handler: Arc<H>,
    _command: PhantomData<fn() -> C>,
}

fn decode<C: Command>(input: &str) -> std::result::Result<C, Failure> {
    serde_json::from_str(input).map_err(|e| {
        Failure::new(FailureKind::Decode, format!("input does not decode as `{}`: {e}", C::name()))
    })
}

impl<C: Command, H: Handler<C>> ErasedHandler for Typed<C, H> {
    fn run(&self, input: &str, ctx: Context) -> std::result::Result<RunFuture, Failure> {
        let command: C = decode(input)?;
        // A second copy computes the success follow-ups after `handle` consumed the first.
        let for_hooks: C = decode(input)?;
        let handler = Arc::clone(&self.handler);
        Ok(Box::pin(async move {
            match handler.handle(command, ctx).await {
                Ok(output) => match serde_json::to_string(&output) {
                    Ok(json) => {
                        RunResult::Succeeded { output: json, follow_ups: for_hooks.on_success(&output) }
                    }
                    Err(e) => RunResult::Failed(HandlerError::permanent(format!(
                        "output of `{}` could not be encoded: {e}",
                        C::name()
                    ))),
                },
                Err(e) => RunResult::Failed(e),
            }
        }))
    }

    fn failure_follow_ups(&self, input: &str, failure: &Failure) -> Vec<NewCommand> {
        decode::<C>(input).map(|c| c.on_failure(failure)).unwrap_or_default()
    }

    fn cancel_follow_ups(&self, input: &str) -> Vec<NewCommand> {
        decode::<C>(input).map(|c| c.on_cancel()).unwrap_or_default()
    }
}

struct FnHandler<F>(F);

impl<C, F, Fut> Handler<C> for FnHandler<F>
where
    C: Command,
    F: Fn(C, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<C::Output, HandlerError>> + Send + 'static,
{
    fn handle(
        &self,
        command: C,
        ctx: Context,
    ) -> impl Future<Output = std::result::Result<C::Output, HandlerError>> + Send {
        (self.0)(command, ctx)
    }
}

/// Maps command names to handlers. A worker claims only the names registered here.
///
/// ```
/// use orch::{Command, Registry, HandlerError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct PingCommand;
/// # impl Command for PingCommand { type Output = String; }
///
/// let mut registry = Registry::new();
/// registry.register_fn(|_: PingCommand, _ctx| async { Ok::<_, HandlerError>("pong".to_string()) })?;
/// assert_eq!(registry.names(), vec!["ping".to_string()]);
/// // A second handler for the same name is refused.
/// assert!(registry.register_fn(|_: PingCommand, _ctx| async { Ok::<_, HandlerError>(String::new()) }).is_err());
/// # Ok::<(), orch::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    sagas: Option<SagaRuntime>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("names", &self.names()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for command type `C`; fails when `C`'s name is taken.
    pub fn register<C: Command, H: Handler<C>>(&mut self, handler: H) -> Result<&mut Self> {
        let name = C::name().into_owned();
        if self.handlers.contains_key(&name) {
            return Err(Error::DuplicateHandler(name));
        }
        let erased: Arc<dyn ErasedHandler> =
            Arc::new(Typed::<C, H> { handler: Arc::new(handler), _command: PhantomData });
        self.handlers.insert(name, erased);
        Ok(self)
    }

    /// Registers an async closure as the handler for command type `C`.
    pub fn register_fn<C, F, Fut>(&mut self, f: F) -> Result<&mut Self>
    where
        C: Command,
        F: Fn(C, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<C::Output, HandlerError>> + Send + 'static,
    {
        self.register::<C, FnHandler<F>>(FnHandler(f))
    }

    /// Registers a saga: workers with this registry apply the events published to its
    /// instances and publish their timeouts. Fails when a saga of that name is
    /// registered already.
    pub fn register_saga<D: SagaData>(&mut self, machine: SagaMachine<D>) -> Result<&mut Self> {
        let runtime = self.sagas.get_or_insert_with(SagaRuntime::default).clone();
        let name = event_command_name(machine.name());
        if self.handlers.contains_key(&name) {
            return Err(Error::DuplicateHandler(name));
        }
        runtime.add(machine)?;
        let handler = SagaHandler { runtime };
        let erased: Arc<dyn ErasedHandler> = Arc::new(Typed::<SagaEventCommand, SagaHandler> {
            handler: Arc::new(handler),
            _command: PhantomData,
        });
        self.handlers.insert(name, erased);
        Ok(self)
    }

    pub(crate) fn sagas(&self) -> Option<&SagaRuntime> {
        self.sagas.as_ref()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether no handler is registered.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn ErasedHandler>> {
        self.handlers.get(name)
    }
}
