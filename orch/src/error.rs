//! Errors: what the library reports to callers, and what handlers report to the library.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::CommandId;

/// Everything that can go wrong in a call to `orch` or to a [`Store`](crate::Store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent; the message names it.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A table prefix that is not a plain identifier. Checked before any SQL is built.
    #[error(
        "invalid table prefix {prefix:?}: {reason}; use 1 to {max} ASCII letters, digits or `_`, starting with a letter or `_`",
        max = crate::store::TablePrefix::MAX_LEN
    )]
    InvalidPrefix {
        /// The rejected prefix.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A workflow's graph was rejected when it was built.
    #[error("invalid workflow: {0}")]
    InvalidWorkflow(#[from] crate::workflow::WorkflowError),

    /// A saga's state machine was rejected when it was built.
    #[error("invalid saga `{saga}`: {message}")]
    InvalidSaga {
        /// The saga's name.
        saga: String,
        /// What is wrong.
        message: String,
    },

    /// A step asked for the output of a step it does not depend on, or of a
    /// dependency that has not succeeded.
    #[error("step {step:?} has no succeeded dependency named {dependency:?}")]
    NoSuchDependency {
        /// The asking command's step (or id, outside a workflow).
        step: String,
        /// The dependency asked for.
        dependency: String,
    },

    /// Two handlers were registered for one command name.
    #[error("a handler for command `{0}` is already registered")]
    DuplicateHandler(String),

    /// No command with this id exists.
    #[error("command {0} not found")]
    NotFound(CommandId),

    /// No workflow with this id exists.
    #[error("workflow {0} not found")]
    WorkflowNotFound(crate::store::WorkflowId),

    /// The caller's lease on a command is no longer valid (it expired and was rescued,
    /// or the command was finished by someone else), so nothing was changed.
    #[error("lease on command {0} was lost; the change was not applied")]
    LeaseLost(CommandId),

    /// A command input or output could not be serialized.
    #[error("could not encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A command's input is larger than the configured limit; nothing was stored.
    ///
    /// The limit is [`crate::DEFAULT_MAX_INPUT_BYTES`] unless changed with
    /// [`crate::Orch::with_max_input_bytes`].
    #[error("input of command `{name}` is {bytes} bytes, over the limit of {limit} bytes")]
    InputTooLarge {
        /// The command's name.
        name: String,
        /// The size of its JSON input.
        bytes: usize,
        /// The limit in force.
        limit: usize,
    },

    /// Stored JSON could not be decoded into the requested type.
    #[error("could not decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A sealed input or output does not open: it was altered, moved from another row
    /// or field, or sealed with a key the keyring no longer holds. Reported by the
    /// encrypting store (feature `encryption`) when it reads a command.
    #[error("command {id}: sealed payload does not open: {reason}")]
    Decrypt {
        /// The command read.
        id: CommandId,
        /// Which field, and why it does not open.
        reason: String,
    },

    /// An input or output could not be sealed (the system's random number generator
    /// failed). Reported by the encrypting store (feature `encryption`); nothing was
    /// stored.
    #[error("command {id}: could not seal payload: {reason}")]
    Encrypt {
        /// The command written.
        id: CommandId,
        /// Why.
        reason: String,
    },

    /// A stored row holds a value this version of `orch` does not understand.
    #[error("corrupt row: {0}")]
    Corrupt(String),

    /// The database could not be reached or refused the operation.
    #[error("{backend} store error: {source}")]
    Backend {
        /// The backend's name (`sqlite`, `postgres`, `mysql`).
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The worker or client is shutting down.
    #[error("shutting down")]
    Shutdown,
}

impl Error {
    /// An [`Error::InvalidConfig`] with this message.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error::InvalidConfig(message.into())
    }

    /// An [`Error::Backend`] wrapping `source`.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend { backend, source: source.into() }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a handler returns when it fails.
///
/// Any `std::error::Error` converts into it with `?`. A retryable error (the
/// default) lets the command run again while attempts are left;
/// [`HandlerError::permanent`] fails the command at once.
///
/// ```
/// use orch::HandlerError;
///
/// fn parse(s: &str) -> Result<u32, HandlerError> {
///     let n: u32 = s.parse()?; // ParseIntError converts
///     if n == 0 {
///         return Err(HandlerError::permanent("zero is not a valid quantity"));
///     }
///     Ok(n)
/// }
/// assert!(parse("x").unwrap_err().is_retryable());
/// assert!(!parse("0").unwrap_err().is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    retryable: bool,
}

impl HandlerError {
    /// A retryable error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError { message: message.into(), retryable: true }
    }

    /// An error that fails the command at once, whatever attempts are left.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError { message: message.into(), retryable: false }
    }

    /// The error text, as recorded in the journal.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt may be made.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        // Keep the whole chain of causes: the top message alone often hides the reason.
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        HandlerError::new(message)
    }
}

/// Why an attempt (or a whole command) did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler returned an error.
    Error,
    /// The handler ran longer than the command's timeout and was cancelled.
    Timeout,
    /// The handler panicked.
    Panic,
    /// The stored input could not be decoded into the command type.
    Decode,
    /// The worker holding the lease vanished; the lease expired and was rescued.
    LeaseExpired,
    /// The command was cancelled.
    Cancelled,
}

impl FailureKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Timeout => "timeout",
            FailureKind::Panic => "panic",
            FailureKind::Decode => "decode",
            FailureKind::LeaseExpired => "lease_expired",
            FailureKind::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "error" => FailureKind::Error,
            "timeout" => FailureKind::Timeout,
            "panic" => FailureKind::Panic,
            "decode" => FailureKind::Decode,
            "lease_expired" => FailureKind::LeaseExpired,
            "cancelled" => FailureKind::Cancelled,
            _ => return None,
        })
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recorded failure: its kind and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure it was.
    pub kind: FailureKind,
    /// What happened, in words.
    pub message: String,
}

impl Failure {
    /// A failure of this kind with this message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure { kind, message: message.into() }
    }

    /// The failure given to `on_failure` when a command was cancelled and defines no
    /// `on_cancel` follow-ups of its own.
    pub fn cancelled() -> Self {
        Failure::new(FailureKind::Cancelled, "cancelled")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn handler_error_keeps_cause_chain() {
        let e: HandlerError = Outer(std::io::Error::other("inner")).into();
        assert_eq!(e.message(), "outer: inner");
        assert!(e.is_retryable());
    }

    #[test]
    fn failure_kinds_round_trip() {
        for kind in [
            FailureKind::Error,
            FailureKind::Timeout,
            FailureKind::Panic,
            FailureKind::Decode,
            FailureKind::LeaseExpired,
            FailureKind::Cancelled,
        ] {
            assert_eq!(FailureKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(FailureKind::parse("nope"), None);
    }
}
