//! Typed commands and the untyped form in which they are pushed.

use std::borrow::Cow;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Failure, Result};
use crate::retry::RetryPolicy;
use crate::store::{CommandId, InsertCommand, MAX_UNIQUE_KEY_BYTES, UniqueKey};

/// The default timeout of a command: 5 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default retry count of a command: 3, so at most 4 attempts.
pub const DEFAULT_RETRIES: u32 = 3;
/// The default target (instance key) of a command.
pub const DEFAULT_TARGET: &str = "default";

/// A typed unit of work: its fields are the input, stored as JSON.
///
/// Only [`Command::Output`] is required; everything else has the defaults the
/// lifecycle documents (timeout 5 s, 3 retries, no delay, target `"default"`,
/// exponential backoff) and can be overridden per type here or per push with
/// [`NewCommand`].
///
/// ```
/// use std::time::Duration;
/// use orch::{Command, NewCommand, Failure};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmailCommand { to: String }
///
/// impl Command for SendEmailCommand {
///     type Output = ();
///     const TIMEOUT: Duration = Duration::from_secs(120);
///     const RETRIES: u32 = 5;
/// }
///
/// #[derive(Serialize, Deserialize)]
/// struct ChargeCommand { cents: u64 }
///
/// impl Command for ChargeCommand {
///     type Output = String;
///     const NAME: Option<&'static str> = Some("billing.charge");
///
///     fn on_failure(&self, _error: &Failure) -> Vec<NewCommand> {
///         vec![NewCommand::of(&SendEmailCommand { to: "ops@example.com".into() })]
///     }
/// }
///
/// assert_eq!(SendEmailCommand::name(), "send_email");
/// assert_eq!(ChargeCommand::name(), "billing.charge");
/// ```
pub trait Command: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What a successful run produces; `()` for nothing.
    type Output: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// An explicit name; when `None`, the name is derived from the type name (see
    /// [`default_name`]).
    const NAME: Option<&'static str> = None;
    /// How long one attempt may run before it is cancelled.
    const TIMEOUT: Duration = DEFAULT_TIMEOUT;
    /// How many times a failed attempt is retried (attempts = retries + 1).
    const RETRIES: u32 = DEFAULT_RETRIES;
    /// How long after being pushed the command becomes due.
    const DELAY: Duration = Duration::ZERO;
    /// The instance key of the workers that may run this command.
    const TARGET: &'static str = DEFAULT_TARGET;
    /// The claim priority, a rank: among due commands, the lowest value is claimed
    /// first (then the earlier due, then the older). Default 0; a negative value goes
    /// ahead of the default, a positive one behind it.
    const PRIORITY: i16 = 0;

    /// The command's name: how handlers are found and how it is stored.
    fn name() -> Cow<'static, str> {
        match Self::NAME {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(default_name::<Self>()),
        }
    }

    /// The backoff between attempts.
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Follow-up commands pushed when this command succeeds, in the same transaction
    /// that records the success.
    fn on_success(&self, output: &Self::Output) -> Vec<NewCommand> {
        let _ = output;
        Vec::new()
    }

    /// Follow-up commands pushed when this command fails for good (no attempts left,
    /// a permanent error, or an expired lease with no attempts left). Never called for
    /// an attempt that will be retried.
    fn on_failure(&self, error: &Failure) -> Vec<NewCommand> {
        let _ = error;
        Vec::new()
    }

    /// Follow-up commands pushed when this command is cancelled. By default, the
    /// [`Command::on_failure`] follow-ups, given [`Failure::cancelled`].
    fn on_cancel(&self) -> Vec<NewCommand> {
        self.on_failure(&Failure::cancelled())
    }
}

/// A command stored to be pushed later (a saga's compensations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CommandSpec {
    pub(crate) name: String,
    pub(crate) input: String,
    pub(crate) timeout_ms: u64,
    pub(crate) retries: u32,
    pub(crate) delay_ms: u64,
    pub(crate) target: String,
    pub(crate) retry_policy: RetryPolicy,
    pub(crate) correlation_id: Option<String>,
    /// Absent in specs stored before priorities existed.
    #[serde(default)]
    pub(crate) priority: i16,
}

/// The default name of a command type: the type name without its path, generics and a
/// `Command` suffix, in snake_case.
///
/// ```
/// struct SendEmailCommand;
/// struct HTTPFetch;
/// assert_eq!(orch::default_name::<SendEmailCommand>(), "send_email");
/// assert_eq!(orch::default_name::<HTTPFetch>(), "http_fetch");
/// ```
pub fn default_name<T: ?Sized>() -> String {
    name_from_type_name(std::any::type_name::<T>())
}

fn name_from_type_name(full: &str) -> String {
    let without_generics = full.split('<').next().unwrap_or(full);
    let last = without_generics.rsplit("::").next().unwrap_or(without_generics);
    let base = match last.strip_suffix("Command") {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => last,
    };
    snake_case(base)
}

fn snake_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None | Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                // An acronym ends where a lowercase letter follows: `HTTPFetch` → `http_fetch`.
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                Some(_) => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The largest JSON input a push accepts unless configured otherwise: 4 MiB.
///
/// Every database `orch` supports can store more, but a queue row that large slows
/// each claim that reads it and, on MariaDB, runs into `max_allowed_packet` (16 MiB by
/// default) once a batch holds a few of them. Large data belongs in a blob store, with
/// its address in the input. [`crate::Orch::with_max_input_bytes`] changes the limit.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// Checks each row's input against `limit` (`None`: no limit).
pub(crate) fn check_input_sizes(rows: &[InsertCommand], limit: Option<usize>) -> Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    match rows.iter().find(|row| row.input.len() > limit) {
        Some(row) => Err(Error::InputTooLarge { name: row.name.clone(), bytes: row.input.len(), limit }),
        None => Ok(()),
    }
}

/// A command ready to push: its name, JSON input and options, each overridable.
///
/// Built from a typed command with [`NewCommand::of`] (which takes the type's
/// defaults), or from a name and raw JSON with [`NewCommand::raw`].
///
/// ```
/// use std::time::Duration;
/// use orch::{Command, NewCommand};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct PingCommand;
/// # impl Command for PingCommand { type Output = (); }
///
/// let cmd = NewCommand::of(&PingCommand)
///     .timeout(Duration::from_secs(30))
///     .retries(0)
///     .delay(Duration::from_secs(10))
///     .target("eu-west");
/// assert_eq!(cmd.name(), "ping");
/// ```
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub(crate) id: Option<CommandId>,
    pub(crate) name: String,
    pub(crate) input: std::result::Result<String, String>,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) delay: Duration,
    pub(crate) target: String,
    pub(crate) retry_policy: RetryPolicy,
    pub(crate) correlation_id: Option<String>,
    pub(crate) priority: i16,
    pub(crate) unique: Option<(String, Option<Duration>)>,
}

impl NewCommand {
    /// A command from a typed value, with the type's name and defaults.
    ///
    /// Serialization errors are reported when the command is pushed.
    pub fn of<C: Command>(command: &C) -> Self {
        let input = serde_json::to_string(command).map_err(|e| e.to_string());
        NewCommand {
            id: None,
            name: C::name().into_owned(),
            input,
            timeout: C::TIMEOUT,
            retries: C::RETRIES,
            delay: C::DELAY,
            target: C::TARGET.to_owned(),
            retry_policy: C::retry_policy(),
            correlation_id: None,
            priority: C::PRIORITY,
            unique: None,
        }
    }

    /// A command by name with raw JSON input and the global defaults.
    pub fn raw(name: impl Into<String>, input: serde_json::Value) -> Self {
        NewCommand {
            id: None,
            name: name.into(),
            input: Ok(input.to_string()),
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            delay: Duration::ZERO,
            target: DEFAULT_TARGET.to_owned(),
            retry_policy: RetryPolicy::default(),
            correlation_id: None,
            priority: 0,
            unique: None,
        }
    }

    /// The command name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the command (saga events carry their saga's name).
    pub(crate) fn named(mut self, name: String) -> Self {
        self.name = name;
        self
    }

    /// Checks the options as a push at `now` would, without consuming the command.
    pub(crate) fn clone_spec_checked(&self, now: Timestamp) -> Result<()> {
        Self::from_spec(self.to_spec()?).resolve(now).map(drop)
    }

    /// Sets the correlation id unless one is set already.
    pub(crate) fn correlation_id_if_unset(self, correlation_id: &str) -> Self {
        if self.correlation_id.is_some() { self } else { self.correlation_id(correlation_id) }
    }

    /// The command as a serializable spec (for storing it to push later).
    pub(crate) fn to_spec(&self) -> Result<CommandSpec> {
        self.check_no_unique_key("stored for a later push (a saga compensation)")?;
        let input = self.input.clone().map_err(|message| Error::Encode {
            what: format!("input of command `{}`", self.name),
            source: <serde_json::Error as serde::ser::Error>::custom(message),
        })?;
        Ok(CommandSpec {
            name: self.name.clone(),
            input,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            retries: self.retries,
            delay_ms: u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX),
            target: self.target.clone(),
            retry_policy: self.retry_policy,
            correlation_id: self.correlation_id.clone(),
            priority: self.priority,
        })
    }

    /// The command a spec describes (with a fresh id when pushed).
    pub(crate) fn from_spec(spec: CommandSpec) -> Self {
        NewCommand {
            id: None,
            name: spec.name,
            input: Ok(spec.input),
            timeout: Duration::from_millis(spec.timeout_ms),
            retries: spec.retries,
            delay: Duration::from_millis(spec.delay_ms),
            target: spec.target,
            retry_policy: spec.retry_policy,
            correlation_id: spec.correlation_id,
            priority: spec.priority,
            unique: None,
        }
    }

    /// Rejects a unique key where the command is not pushed through
    /// [`Orch::push`](crate::Orch::push) and its kin, the only paths that deduplicate.
    pub(crate) fn check_no_unique_key(&self, where_: &str) -> Result<()> {
        match &self.unique {
            None => Ok(()),
            Some((key, _)) => Err(Error::invalid_config(format!(
                "command `{}` has unique key {key:?}, but a command {where_} cannot carry one: \
                 unique keys apply to commands pushed with Orch::push, push_new, push_many, \
                 push_outcome or Context::push",
                self.name
            ))),
        }
    }

    pub(crate) fn preset_id(&self) -> Option<CommandId> {
        self.id
    }

    pub(crate) fn preset_correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// Uses this id instead of a generated one.
    pub fn id(mut self, id: CommandId) -> Self {
        self.id = Some(id);
        self
    }

    /// Overrides the timeout of each attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Overrides the retry count (attempts = retries + 1).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Overrides the delay before the command becomes due.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Overrides the target instance key.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    /// Overrides the backoff between attempts.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// Overrides the claim priority (see [`Command::PRIORITY`]): the lowest value is
    /// claimed first.
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Deduplicates by `key`: while a command pushed with the same key is blocked,
    /// pending or running, pushing this one inserts nothing and returns that command's
    /// id ([`Orch::push_outcome`](crate::Orch::push_outcome) says which happened). Once
    /// the holder finishes, the key is free again.
    ///
    /// The key is 1 to [`MAX_UNIQUE_KEY_BYTES`](crate::store::MAX_UNIQUE_KEY_BYTES) bytes.
    /// A unique index enforces it, so concurrent pushes from any number of processes
    /// insert one command. Keys apply to commands pushed directly (`Orch::push*`,
    /// [`Context::push`](crate::Context::push)); follow-ups, workflow steps and saga
    /// commands with a key are rejected as invalid.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique = Some((key.into(), None));
        self
    }

    /// Deduplicates by `key` within a fixed period: of all pushes with this key in one
    /// period (periods of length `period` aligned to the Unix epoch, so one hour means
    /// each clock hour in UTC), the first inserts and the rest return its id, whether it
    /// has finished or not. The next period starts afresh.
    pub fn unique_within(mut self, key: impl Into<String>, period: Duration) -> Self {
        self.unique = Some((key.into(), Some(period)));
        self
    }

    /// Sets the correlation id (by default a command's own id, inherited by follow-ups).
    pub fn correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// Resolves the options into the row a store inserts, as a push at `now` would:
    /// validates them (the input against [`DEFAULT_MAX_INPUT_BYTES`]), generates the
    /// id and computes the due time.
    pub fn resolve(self, now: Timestamp) -> Result<InsertCommand> {
        let row = self.into_insert(now, None)?;
        check_input_sizes(std::slice::from_ref(&row), Some(DEFAULT_MAX_INPUT_BYTES))?;
        Ok(row)
    }

    /// Resolves the options into the row a store inserts.
    pub(crate) fn into_insert(
        self,
        now: Timestamp,
        parent: Option<(CommandId, &str)>,
    ) -> Result<InsertCommand> {
        let input = self.input.map_err(|message| Error::Encode {
            what: format!("input of command `{}`", self.name),
            source: <serde_json::Error as serde::ser::Error>::custom(message),
        })?;
        if self.name.is_empty() {
            return Err(Error::invalid_config("command name must not be empty"));
        }
        if self.target.is_empty() {
            return Err(Error::invalid_config(format!(
                "target of command `{}` must not be empty",
                self.name
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid_config(format!(
                "timeout of command `{}` must be greater than zero",
                self.name
            )));
        }
        if self.retries >= i32::MAX as u32 {
            return Err(Error::invalid_config(format!(
                "retry count {} of command `{}` is too large",
                self.retries, self.name
            )));
        }
        self.retry_policy.validate()?;
        let unique = match self.unique {
            None => None,
            Some((key, period)) => Some(unique_key_at(&self.name, key, period, now)?),
        };
        let id = self.id.unwrap_or_else(|| CommandId::generate(now));
        let correlation_id = match (self.correlation_id, parent) {
            (Some(c), _) => c,
            (None, Some((_, parent_correlation))) => parent_correlation.to_owned(),
            (None, None) => id.to_string(),
        };
        Ok(InsertCommand {
            id,
            name: self.name,
            target: self.target,
            input,
            max_attempts: self.retries + 1,
            timeout: self.timeout,
            retry_policy: self.retry_policy,
            scheduled_at: now + self.delay,
            created_at: now,
            parent_id: parent.map(|(p, _)| p),
            correlation_id,
            workflow: None,
            depends_on: Vec::new(),
            priority: self.priority,
            unique,
        })
    }
}

/// Validates a unique key and, for a period, finds the end of the period `now` is in.
fn unique_key_at(name: &str, key: String, period: Option<Duration>, now: Timestamp) -> Result<UniqueKey> {
    if key.is_empty() || key.len() > MAX_UNIQUE_KEY_BYTES {
        return Err(Error::invalid_config(format!(
            "unique key of command `{name}` has {} bytes; it must have 1 to {MAX_UNIQUE_KEY_BYTES}",
            key.len()
        )));
    }
    let until = match period {
        None => None,
        Some(period) => {
            let micros = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
            if micros < 1_000 {
                return Err(Error::invalid_config(format!(
                    "unique period {period:?} of command `{name}` is shorter than a millisecond"
                )));
            }
            let start = now.as_micros().div_euclid(micros).saturating_mul(micros);
            Some(Timestamp::from_micros(start.saturating_add(micros)))
        }
    };
    Ok(UniqueKey { key, until })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_convention() {
        let cases = [
            ("app::SendEmailCommand", "send_email"),
            ("GenerateReportCommand", "generate_report"),
            ("a::b::Ping", "ping"),
            ("Command", "command"),
            ("HTTPFetchCommand", "http_fetch"),
            ("ResizeImage2xCommand", "resize_image2x"),
            ("app::Wrapper<app::Inner>", "wrapper"),
            ("already_snake", "already_snake"),
            ("V2Upload", "v2_upload"),
        ];
        for (input, expected) in cases {
            assert_eq!(name_from_type_name(input), expected, "for {input}");
        }
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct SendEmailCommand {
        to: String,
    }
    impl Command for SendEmailCommand {
        type Output = ();
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Named;
    impl Command for Named {
        type Output = ();
        const NAME: Option<&'static str> = Some("custom.name");
    }

    #[test]
    fn trait_name_uses_convention_or_override() {
        assert_eq!(SendEmailCommand::name(), "send_email");
        assert_eq!(Named::name(), "custom.name");
    }

    #[test]
    fn into_insert_applies_defaults_and_overrides() {
        let now = Timestamp::from_millis(1_000);
        let row = NewCommand::of(&SendEmailCommand { to: "a".into() }).into_insert(now, None).unwrap();
        assert_eq!(row.max_attempts, 4);
        assert_eq!(row.timeout, Duration::from_secs(5));
        assert_eq!(row.target, "default");
        assert_eq!(row.scheduled_at, now);
        assert_eq!(row.correlation_id, row.id.to_string());
        assert_eq!(row.input, r#"{"to":"a"}"#);

        let row = NewCommand::of(&SendEmailCommand { to: "a".into() })
            .retries(0)
            .delay(Duration::from_secs(2))
            .target("b")
            .into_insert(now, None)
            .unwrap();
        assert_eq!(row.max_attempts, 1);
        assert_eq!(row.scheduled_at, Timestamp::from_millis(3_000));
        assert_eq!(row.target, "b");
    }

    #[test]
    fn into_insert_rejects_bad_options() {
        let now = Timestamp::from_millis(0);
        let e = NewCommand::raw("x", serde_json::json!({})).target("").into_insert(now, None);
        assert!(matches!(e, Err(Error::InvalidConfig(_))));
        let e = NewCommand::raw("x", serde_json::json!({})).timeout(Duration::ZERO).into_insert(now, None);
        assert!(matches!(e, Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn follow_ups_inherit_correlation() {
        let now = Timestamp::from_millis(0);
        let parent = CommandId::generate(now);
        let row =
            NewCommand::raw("x", serde_json::json!(1)).into_insert(now, Some((parent, "corr"))).unwrap();
        assert_eq!(row.parent_id, Some(parent));
        assert_eq!(row.correlation_id, "corr");
    }
}
