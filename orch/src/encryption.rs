//! Payload encryption (cargo feature `encryption`): command inputs and outputs sealed
//! with XChaCha20-Poly1305 before they reach the database.
//!
//! [`EncryptedStore`] wraps any [`Store`]. Every input it writes (pushes, follow-ups,
//! workflow steps, commands pushed by saga transitions) and every output a worker
//! records is sealed with the [`Keyring`]'s current key; every input and output it
//! reads is opened again, so the client, the workers and the handlers see plain JSON.
//! Names, targets, correlation ids, errors, the journal and saga data are not sealed.
//!
//! # The stored form
//!
//! A sealed value is a JSON string, so it stays valid JSON for columns and tools that
//! expect JSON:
//!
//! ```text
//! "orch-sealed:v1:<key id>:<base64url(nonce || ciphertext || tag)>"
//! ```
//!
//! The nonce is 24 random bytes from the operating system for every value. The
//! associated data binds the ciphertext to its place: the format version, the field
//! (`input` or `output`), the command id, the key id and the command name. A sealed
//! value copied into another row, or from the input column to the output column, or a
//! row renamed to reach another handler, does not open; neither does one with any byte
//! changed.
//!
//! # Reading what does not open
//!
//! - [`Store::get`], [`Store::list`] and [`Store::workflow_steps`] fail with
//!   [`Error::Decrypt`], naming the command.
//! - [`Store::claim`] fails such a command alone, for good (failure kind `decode`, the
//!   reason in its journal), through the inner store's ordinary completion, and returns
//!   the other commands it leased.
//! - [`Store::follow_ups_due`] hands such a command to the worker with an input no
//!   type decodes, so it gets no follow-ups, as any undecodable input.
//!
//! # Plaintext rows
//!
//! A stored value that is not a sealed string (one that does not start with
//! `"orch-sealed:`) is passed through as it is. Encryption can therefore be switched on
//! for a live queue: rows written before keep running, and everything written after is
//! sealed. A plaintext input that is itself a JSON string starting with `orch-sealed:`
//! is taken for a sealed value and does not open. Pushes that bypass the wrapper (such
//! as a backend's `push_in` inside the caller's transaction) are stored in plaintext.
//!
//! # Key rotation
//!
//! Keys are 32 random bytes ([`Keyring::generate_key`]), each with a short id stored
//! beside every value it sealed. To rotate, make the new key current and keep the old
//! one for opening ([`Keyring::with_key`]) on every process, then remove the old key
//! once every row sealed with it has finished and been pruned (its output, too, is
//! read with the key that sealed it). A row whose key was removed fails as a tampered
//! one does. Deploy a new key for opening everywhere before any process seals with it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use tokio::sync::Notify;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::store::backend::unreadable_completion;
use crate::store::{
    CancelStatus, ClaimParams, ClaimedCommand, CommandId, CommandRecord, Completion, CompletionStatus,
    CountRow, HeartbeatParams, InsertCommand, JournalEntry, LeaseStatus, ListParams, Outcome, PauseRecord,
    PauseScope, QueueStats, Rescued, RetryStatus, SagaQuery, SagaRecord, SagaWrite, SagaWriteStatus, Store,
    WorkerRecord, WorkflowId, WorkflowQuery, WorkflowStepRecord, WorkflowSummary,
};

/// The length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// The longest key id accepted, in bytes.
pub const MAX_KEY_ID_LEN: usize = 32;

/// What every sealed value starts with, after the opening quote of its JSON string.
pub const SEALED_PREFIX: &str = "orch-sealed:";

/// The version of the sealed form written.
const VERSION: &str = "v1";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// How many claimed commands' names an [`EncryptedStore`] remembers until their
/// outcomes are recorded; past this it forgets them all and looks names up instead.
const MAX_REMEMBERED_NAMES: usize = 65_536;

/// Which column a sealed value belongs to; part of its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Input,
    Output,
}

impl Field {
    fn as_str(self) -> &'static str {
        match self {
            Field::Input => "input",
            Field::Output => "output",
        }
    }
}

/// The associated data of a value: fields of fixed alphabets first, the free-form
/// name last, so no two places give the same bytes.
fn associated_data(field: Field, id: CommandId, key_id: &str, name: &str) -> Vec<u8> {
    format!("orch-sealed:{VERSION}\n{}\n{id}\n{key_id}\n{name}", field.as_str()).into_bytes()
}

/// Checks a key id: 1 to [`MAX_KEY_ID_LEN`] ASCII letters, digits, `_` or `-`.
fn check_key_id(id: &str) -> Result<()> {
    let reject =
        |reason: &str| Err(Error::invalid_config(format!("invalid encryption key id {id:?}: {reason}")));
    if id.is_empty() {
        return reject("it is empty");
    }
    if id.len() > MAX_KEY_ID_LEN {
        return reject("it is longer than 32 bytes");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return reject("use ASCII letters, digits, `_` and `-` only");
    }
    Ok(())
}

fn cipher_of(id: &str, key: &[u8]) -> Result<XChaCha20Poly1305> {
    let bytes: [u8; KEY_LEN] = key.try_into().map_err(|_| {
        Error::invalid_config(format!(
            "encryption key {id:?} is {} bytes; keys are {KEY_LEN} bytes",
            key.len()
        ))
    })?;
    Ok(XChaCha20Poly1305::new(&Key::from(bytes)))
}

/// The keys of an [`EncryptedStore`]: one current key, which seals everything written,
/// and any number of older keys, by id, that still open what they sealed.
///
/// Keys live only inside the ciphers, which wipe them when dropped; `Debug` shows the
/// ids alone.
///
/// ```
/// use orch::encryption::Keyring;
///
/// let old = [7u8; 32];
/// let new = Keyring::generate_key()?;
/// let keyring = Keyring::new("2026-06", &new)?.with_key("2026-01", &old)?;
/// assert_eq!(keyring.current_key_id(), "2026-06");
/// assert_eq!(keyring.key_ids().collect::<Vec<_>>(), ["2026-01", "2026-06"]);
///
/// assert!(matches!(Keyring::new("", &new), Err(orch::Error::InvalidConfig(_))));
/// assert!(matches!(Keyring::new("k:1", &new), Err(orch::Error::InvalidConfig(_))));
/// assert!(matches!(Keyring::new("k1", &new[..31]), Err(orch::Error::InvalidConfig(_))));
/// assert!(matches!(keyring.with_key("2026-06", &old), Err(orch::Error::InvalidConfig(_))));
/// # Ok::<(), orch::Error>(())
/// ```
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: BTreeMap<String, XChaCha20Poly1305>,
}

impl Keyring {
    /// A keyring whose current key is `key` (32 bytes), with id `id` (1 to 32 ASCII
    /// letters, digits, `_` or `-`).
    pub fn new(id: &str, key: &[u8]) -> Result<Self> {
        check_key_id(id)?;
        let cipher = cipher_of(id, key)?;
        Ok(Keyring { current: id.to_owned(), keys: BTreeMap::from([(id.to_owned(), cipher)]) })
    }

    /// Adds an older key, which opens what it sealed but seals nothing. An id already
    /// in the keyring is an error.
    pub fn with_key(mut self, id: &str, key: &[u8]) -> Result<Self> {
        check_key_id(id)?;
        if self.keys.contains_key(id) {
            return Err(Error::invalid_config(format!("encryption key id {id:?} is given twice")));
        }
        let cipher = cipher_of(id, key)?;
        self.keys.insert(id.to_owned(), cipher);
        Ok(self)
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Every key id, in order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// A new random key from the operating system's generator.
    pub fn generate_key() -> Result<[u8; KEY_LEN]> {
        <[u8; KEY_LEN]>::try_generate()
            .map_err(|e| Error::invalid_config(format!("the system's random number generator failed: {e}")))
    }

    /// A key from its base64 text (standard alphabet, padding optional), as kept in a
    /// secret store or an environment variable; anything but 32 bytes is an error.
    ///
    /// ```
    /// let key = orch::encryption::Keyring::key_from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
    /// assert_eq!(key[31], 31);
    /// # Ok::<(), orch::Error>(())
    /// ```
    pub fn key_from_base64(text: &str) -> Result<[u8; KEY_LEN]> {
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let bytes = LENIENT
            .decode(text.trim())
            .map_err(|e| Error::invalid_config(format!("encryption key is not base64: {e}")))?;
        let len = bytes.len();
        bytes.try_into().map_err(|_| {
            Error::invalid_config(format!("encryption key is {len} bytes; keys are {KEY_LEN} bytes"))
        })
    }

    /// `plaintext` sealed with the current key for `field` of command `id` named `name`.
    fn seal(&self, plaintext: &str, field: Field, id: CommandId, name: &str) -> Result<String> {
        let cipher = &self.keys[&self.current];
        let nonce = XNonce::try_generate().map_err(|e| Error::Encrypt {
            id,
            reason: format!("the system's random number generator failed: {e}"),
        })?;
        let aad = associated_data(field, id, &self.current, name);
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: &aad })
            .map_err(|e| Error::Encrypt { id, reason: format!("{} too long: {e}", field.as_str()) })?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(format!("\"{SEALED_PREFIX}{VERSION}:{}:{}\"", self.current, URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The plaintext of `stored`, the value of `field` of command `id` named `name`;
    /// a value that is not sealed is returned as it is. The error says why a sealed
    /// value does not open.
    fn open(
        &self,
        stored: &str,
        field: Field,
        id: CommandId,
        name: &str,
    ) -> std::result::Result<String, String> {
        let Some(rest) = stored.strip_prefix('"').and_then(|s| s.strip_prefix(SEALED_PREFIX)) else {
            return Ok(stored.to_owned());
        };
        let why = |reason: String| format!("{}: {reason}", field.as_str());
        let body = rest.strip_suffix('"').ok_or_else(|| why("the sealed value is cut short".into()))?;
        let (version, rest) =
            body.split_once(':').ok_or_else(|| why("the sealed value has no version".into()))?;
        if version != VERSION {
            return Err(why(format!("unknown sealed format {:?}", truncated(version))));
        }
        let (key_id, encoded) =
            rest.split_once(':').ok_or_else(|| why("the sealed value has no key id".into()))?;
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| why(format!("no key with id {:?} in the keyring", truncated(key_id))))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|e| why(format!("the sealed value is not base64: {e}")))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(why("the sealed value is too short".into()));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| why("the nonce is malformed".into()))?;
        let aad = associated_data(field, id, key_id, name);
        let plain = cipher.decrypt(&nonce, Payload { msg: sealed, aad: &aad }).map_err(|_| {
            why(format!(
                "authentication with key {key_id:?} failed: the value was altered, or sealed for another row or field"
            ))
        })?;
        String::from_utf8(plain).map_err(|_| why("the opened value is not UTF-8".into()))
    }
}

/// At most 40 characters of text from a row, for error messages.
fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A [`Store`] that seals command inputs and outputs on their way in and opens them on
/// their way out; everything else passes through to the store it wraps. See the
/// [module documentation](self) for the stored form, what happens to values that do
/// not open, plaintext rows and key rotation.
///
/// Give it to [`Orch::new`](crate::Orch::new) in place of the store it wraps, in every
/// process that pushes, works or reads (monitors without the keys show the sealed
/// text).
///
/// ```
/// use std::sync::Arc;
/// use orch::encryption::{EncryptedStore, Keyring};
/// use orch::{Orch, Store};
///
/// fn encrypted(store: Arc<dyn Store>) -> orch::Result<Orch> {
///     // The current key seals; the older one still opens rows it sealed.
///     let current = Keyring::key_from_base64(&std::env::var("ORCH_KEY_2026_06").unwrap_or_default())?;
///     let previous = Keyring::key_from_base64(&std::env::var("ORCH_KEY_2026_01").unwrap_or_default())?;
///     let keyring = Keyring::new("2026-06", &current)?.with_key("2026-01", &previous)?;
///     Ok(Orch::new(Arc::new(EncryptedStore::new(store, keyring))))
/// }
/// ```
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    keyring: Keyring,
    /// The names of the commands claimed through this store whose outcomes are not yet
    /// recorded: an output's associated data includes its command's name, which a
    /// completion does not carry.
    names: Mutex<HashMap<CommandId, String>>,
}

impl EncryptedStore {
    /// Wraps `inner`, sealing with `keyring`'s current key.
    pub fn new(inner: Arc<dyn Store>, keyring: Keyring) -> Self {
        EncryptedStore { inner, keyring, names: Mutex::new(HashMap::new()) }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The keys.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<CommandId, String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, id: CommandId, name: &str) {
        let mut names = self.names();
        if names.len() >= MAX_REMEMBERED_NAMES {
            names.clear();
        }
        names.insert(id, name.to_owned());
    }

    /// The name of command `id`: remembered from its claim, or read from the store.
    async fn name_of(&self, id: CommandId) -> Result<String> {
        if let Some(name) = self.names().get(&id).cloned() {
            return Ok(name);
        }
        // No such command: its completion is refused anyway, so the name does not matter.
        Ok(self.inner.get(id).await?.map(|r| r.name).unwrap_or_default())
    }

    fn seal_rows(&self, rows: &mut [InsertCommand]) -> Result<()> {
        for row in rows {
            row.input = self.keyring.seal(&row.input, Field::Input, row.id, &row.name)?;
        }
        Ok(())
    }

    /// `record` with its input and output opened, or [`Error::Decrypt`].
    fn open_record(&self, mut record: CommandRecord) -> Result<CommandRecord> {
        let (id, name) = (record.id, record.name.as_str());
        let decrypt = |reason| Error::Decrypt { id, reason };
        let input = self.keyring.open(&record.input, Field::Input, id, name).map_err(decrypt)?;
        let output = match &record.output {
            Some(output) => Some(self.keyring.open(output, Field::Output, id, name).map_err(decrypt)?),
            None => None,
        };
        record.input = input;
        record.output = output;
        Ok(record)
    }

    fn open_records(&self, records: Vec<CommandRecord>) -> Result<Vec<CommandRecord>> {
        records.into_iter().map(|r| self.open_record(r)).collect()
    }
}

impl fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("backend", &self.inner.backend())
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for EncryptedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }

    async fn enqueue(&self, mut commands: Vec<InsertCommand>) -> Result<Vec<CommandId>> {
        self.seal_rows(&mut commands)?;
        self.inner.enqueue(commands).await
    }

    async fn claim(&self, params: ClaimParams) -> Result<Vec<ClaimedCommand>> {
        let (now, worker) = (params.now, params.worker.clone());
        let leased = self.inner.claim(params).await?;
        let mut claimed = Vec::with_capacity(leased.len());
        let mut sealed_shut = Vec::new();
        for mut command in leased {
            match self.keyring.open(&command.input, Field::Input, command.lease.id, &command.name) {
                Ok(input) => {
                    command.input = input;
                    self.remember(command.lease.id, &command.name);
                    claimed.push(command);
                }
                Err(reason) => {
                    tracing::error!(id = %command.lease.id, %reason, "failing a claimed command whose sealed input does not open");
                    let why = format!("sealed payload does not open: {reason}");
                    sealed_shut.push(unreadable_completion(command.lease, now, &worker, &why));
                }
            }
        }
        if !sealed_shut.is_empty()
            && let Err(e) = self.inner.complete(sealed_shut).await
        {
            // The leases lapse and a rescue takes the commands back; the others run.
            tracing::warn!(error = %e, "failing commands whose sealed input does not open failed; will retry");
        }
        Ok(claimed)
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> Result<Vec<LeaseStatus>> {
        self.inner.heartbeat(params).await
    }

    async fn complete(&self, mut completions: Vec<Completion>) -> Result<Vec<CompletionStatus>> {
        for completion in &mut completions {
            let id = completion.lease.id;
            match &mut completion.outcome {
                Outcome::Succeeded { output, follow_ups } => {
                    let name = self.name_of(id).await?;
                    *output = self.keyring.seal(output, Field::Output, id, &name)?;
                    self.seal_rows(follow_ups)?;
                }
                Outcome::Failed { follow_ups, .. } | Outcome::Cancelled { follow_ups } => {
                    self.seal_rows(follow_ups)?;
                }
                Outcome::Retry { .. } | Outcome::Released { .. } => {}
            }
        }
        let ids: Vec<CommandId> = completions.iter().map(|c| c.lease.id).collect();
        let statuses = self.inner.complete(completions).await?;
        // Every completion ends its claim, applied or refused.
        let mut names = self.names();
        for id in ids {
            names.remove(&id);
        }
        Ok(statuses)
    }

    async fn cancel(&self, id: CommandId, now: Timestamp) -> Result<CancelStatus> {
        self.inner.cancel(id, now).await
    }

    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<Vec<Rescued>> {
        self.inner.rescue(now, limit).await
    }

    async fn follow_ups_due(&self, names: &[String], limit: usize) -> Result<Vec<CommandRecord>> {
        let records = self.inner.follow_ups_due(names, limit).await?;
        Ok(records
            .into_iter()
            .map(|mut record| {
                let (id, name) = (record.id, record.name.clone());
                match self.keyring.open(&record.input, Field::Input, id, &name) {
                    Ok(input) => record.input = input,
                    Err(reason) => {
                        tracing::error!(%id, %reason, "a finished command's sealed input does not open; it gets no follow-ups");
                        // Not JSON, so no command type decodes it: no follow-ups.
                        record.input = String::new();
                    }
                }
                record.output = record.output.and_then(|o| self.keyring.open(&o, Field::Output, id, &name).ok());
                record
            })
            .collect())
    }

    async fn resolve_follow_ups(
        &self,
        id: CommandId,
        mut follow_ups: Vec<InsertCommand>,
        now: Timestamp,
    ) -> Result<bool> {
        self.seal_rows(&mut follow_ups)?;
        self.inner.resolve_follow_ups(id, follow_ups, now).await
    }

    async fn get(&self, id: CommandId) -> Result<Option<CommandRecord>> {
        self.inner.get(id).await?.map(|r| self.open_record(r)).transpose()
    }

    async fn list(&self, params: ListParams) -> Result<Vec<CommandRecord>> {
        let records = self.inner.list(params).await?;
        self.open_records(records)
    }

    async fn counts(&self) -> Result<Vec<CountRow>> {
        self.inner.counts().await
    }

    async fn journal(&self, id: CommandId) -> Result<Vec<JournalEntry>> {
        self.inner.journal(id).await
    }

    async fn workflow_steps(&self, workflow_id: WorkflowId) -> Result<Vec<WorkflowStepRecord>> {
        self.inner
            .workflow_steps(workflow_id)
            .await?
            .into_iter()
            .map(|step| {
                Ok(WorkflowStepRecord {
                    command: self.open_record(step.command)?,
                    depends_on: step.depends_on,
                })
            })
            .collect()
    }

    async fn saga(&self, saga: &str, correlation_id: &str) -> Result<Option<SagaRecord>> {
        self.inner.saga(saga, correlation_id).await
    }

    async fn save_saga(&self, mut write: SagaWrite) -> Result<SagaWriteStatus> {
        self.seal_rows(&mut write.commands)?;
        self.inner.save_saga(write).await
    }

    async fn sagas(&self, query: SagaQuery) -> Result<Vec<SagaRecord>> {
        self.inner.sagas(query).await
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>> {
        self.inner.queue_stats(now).await
    }

    async fn retry(&self, id: CommandId, now: Timestamp) -> Result<RetryStatus> {
        self.inner.retry(id, now).await
    }

    async fn workflows(&self, query: WorkflowQuery) -> Result<Vec<WorkflowSummary>> {
        self.inner.workflows(query).await
    }

    async fn record_worker(&self, worker: WorkerRecord) -> Result<()> {
        self.inner.record_worker(worker).await
    }

    async fn remove_worker(&self, id: &str) -> Result<()> {
        self.inner.remove_worker(id).await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.inner.workers().await
    }

    async fn prune_workers(&self, before: Timestamp) -> Result<u64> {
        self.inner.prune_workers(before).await
    }

    async fn server_time(&self) -> Result<Option<Timestamp>> {
        self.inner.server_time().await
    }

    async fn pause(&self, scope: PauseScope, now: Timestamp) -> Result<bool> {
        self.inner.pause(scope, now).await
    }

    async fn prune_finished(&self, before: Timestamp, limit: usize) -> Result<Option<u64>> {
        self.inner.prune_finished(before, limit).await
    }

    async fn resume(&self, scope: &PauseScope) -> Result<bool> {
        self.inner.resume(scope).await
    }

    async fn pauses(&self) -> Result<Vec<PauseRecord>> {
        self.inner.pauses().await
    }

    // A schedule's stored command is its definition, kept as given; each command it
    // pushes is sealed like any other.
    async fn save_schedule(&self, record: crate::store::ScheduleRecord) -> Result<()> {
        self.inner.save_schedule(record).await
    }

    async fn remove_schedule(&self, name: &str) -> Result<bool> {
        self.inner.remove_schedule(name).await
    }

    async fn schedules(&self) -> Result<Vec<crate::store::ScheduleRecord>> {
        self.inner.schedules().await
    }

    async fn fire_schedule(&self, mut fire: crate::store::ScheduleFire) -> Result<crate::store::FireStatus> {
        if let Some((_, row)) = &mut fire.fire {
            self.seal_rows(std::slice::from_mut(row))?;
        }
        self.inner.fire_schedule(fire).await
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        self.inner.wake_signal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::new("k2", &[2; KEY_LEN]).unwrap().with_key("k1", &[1; KEY_LEN]).unwrap()
    }

    #[test]
    fn sealed_values_are_json_strings_that_open_only_in_place() {
        let keys = keyring();
        let id = CommandId::generate(Timestamp::from_millis(1));
        let other = CommandId::generate(Timestamp::from_millis(2));
        let sealed = keys.seal(r#"{"secret":"marker"}"#, Field::Input, id, "job").unwrap();
        let text: String = serde_json::from_str(&sealed).expect("a JSON string");
        assert!(text.starts_with("orch-sealed:v1:k2:"), "{text}");
        assert!(!sealed.contains("marker"));
        assert_eq!(keys.open(&sealed, Field::Input, id, "job").unwrap(), r#"{"secret":"marker"}"#);
        assert!(keys.open(&sealed, Field::Output, id, "job").is_err(), "input moved to output");
        assert!(keys.open(&sealed, Field::Input, other, "job").is_err(), "moved to another row");
        assert!(keys.open(&sealed, Field::Input, id, "other").is_err(), "renamed");
        assert_ne!(
            sealed,
            keys.seal(r#"{"secret":"marker"}"#, Field::Input, id, "job").unwrap(),
            "fresh nonce"
        );
    }

    #[test]
    fn damage_and_missing_keys_do_not_open() {
        let keys = keyring();
        let id = CommandId::generate(Timestamp::from_millis(1));
        let sealed = keys.seal("42", Field::Output, id, "job").unwrap();
        // Every single-character change of the encoded body fails.
        let start = sealed.rfind(':').unwrap() + 1;
        for i in start..sealed.len() - 1 {
            let mut bytes = sealed.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let damaged = String::from_utf8(bytes).unwrap();
            assert!(keys.open(&damaged, Field::Output, id, "job").is_err(), "{damaged}");
        }
        let only_old = Keyring::new("k1", &[1; KEY_LEN]).unwrap();
        let err = only_old.open(&sealed, Field::Output, id, "job").unwrap_err();
        assert!(err.contains("no key with id \"k2\""), "{err}");
        let swapped_id = sealed.replace(":k2:", ":k1:");
        assert!(keys.open(&swapped_id, Field::Output, id, "job").is_err(), "key id is authenticated");
        for bad in [
            "\"orch-sealed:v9:k2:AAAA\"",
            "\"orch-sealed:v1:k2\"",
            "\"orch-sealed:v1:k2:!!\"",
            "\"orch-sealed:",
        ] {
            assert!(keys.open(bad, Field::Output, id, "job").is_err(), "{bad}");
        }
    }

    #[test]
    fn plaintext_passes_through() {
        let keys = keyring();
        let id = CommandId::generate(Timestamp::from_millis(1));
        for plain in ["{\"n\":1}", "\"a string\"", "{not json", "", "\"orch-sealedish\""] {
            assert_eq!(keys.open(plain, Field::Input, id, "job").unwrap(), plain);
        }
    }

    #[test]
    fn keyring_configuration_is_checked() {
        let key = [0u8; KEY_LEN];
        for bad in ["", "a:b", "a b", "é", &"k".repeat(MAX_KEY_ID_LEN + 1)] {
            assert!(matches!(Keyring::new(bad, &key), Err(Error::InvalidConfig(_))), "{bad:?}");
        }
        assert!(matches!(Keyring::new("k", &key[..16]), Err(Error::InvalidConfig(_))));
        assert!(matches!(Keyring::new("k", &[0; 33]), Err(Error::InvalidConfig(_))));
        assert!(matches!(keyring().with_key("k1", &key), Err(Error::InvalidConfig(_))));
        assert!(matches!(Keyring::key_from_base64("AAAA"), Err(Error::InvalidConfig(_))));
        assert!(matches!(Keyring::key_from_base64("not base64!"), Err(Error::InvalidConfig(_))));
        let generated = Keyring::generate_key().unwrap();
        assert_ne!(generated, Keyring::generate_key().unwrap());
        let debug = format!("{:?}", keyring());
        assert!(debug.contains("k1") && debug.contains("k2"), "{debug}");
    }
}
