//! Payload encryption against a real database: what the tables hold, read with plain
//! SQL, and what the encrypting store does with values moved, altered, sealed with a
//! retired key, or written before encryption was switched on. Each case takes a plain
//! harness and wraps its stores in [`EncryptedStore`]s itself, so that it can reach the
//! same tables with several keyrings or none.

use std::sync::Arc;

use orch::encryption::{EncryptedStore, Keyring};
use orch::{
    Command, CommandId, CommandRecord, Context, Error, FailureKind, HandlerError, JournalKind, ListParams,
    NewCommand, Orch, Registry, State, Status, Store, Worker, Workflow, WorkflowState,
};
use serde::{Deserialize, Serialize};

use crate::harness::{Harness, StoreLocation};
use crate::support::{eventually, fast_config};

/// The text every case's inputs carry; it must never appear in a sealed column.
pub const MARKER: &str = "confidential-marker-7f3a";

/// Returns `done:<secret>`; on success pushes a [`NoteCommand`] carrying its output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretCommand {
    /// Carried through to the output and the follow-up.
    pub secret: String,
}
impl Command for SecretCommand {
    type Output = String;
    const NAME: Option<&'static str> = Some("enc.secret");
    fn on_success(&self, output: &String) -> Vec<NewCommand> {
        vec![NewCommand::of(&NoteCommand { secret: format!("{output}/note") })]
    }
}

/// Returns its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoteCommand {
    /// Returned as the output.
    pub secret: String,
}
impl Command for NoteCommand {
    type Output = String;
    const NAME: Option<&'static str> = Some("enc.note");
}

/// A workflow step that returns the output of its dependency `first`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinCommand;
impl Command for JoinCommand {
    type Output = String;
    const NAME: Option<&'static str> = Some("enc.join");
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register_fn(|c: SecretCommand, _: Context| async move {
            Ok::<_, HandlerError>(format!("done:{}", c.secret))
        })
        .unwrap();
    registry
        .register_fn(|c: NoteCommand, _: Context| async move { Ok::<_, HandlerError>(c.secret) })
        .unwrap();
    registry
        .register_fn(|_: JoinCommand, ctx: Context| async move {
            Ok::<_, HandlerError>(ctx.dependency_output::<SecretCommand>("first").await?)
        })
        .unwrap();
    registry
}

fn encrypted(inner: &Arc<dyn Store>, keyring: &Keyring) -> Orch {
    Orch::new(Arc::new(EncryptedStore::new(Arc::clone(inner), keyring.clone())))
}

fn key() -> [u8; 32] {
    Keyring::generate_key().unwrap()
}

fn secret(text: &str) -> SecretCommand {
    SecretCommand { secret: format!("{text}-{MARKER}") }
}

/// The start of every value sealed with key `key_id`, as stored.
fn sealed_with(key_id: &str) -> String {
    format!("\"orch-sealed:v1:{key_id}:")
}

/// One command's payload columns, read with plain SQL.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct StoredPayload {
    /// The id, as text.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub id: String,
    /// The name.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub name: String,
    /// The input column as stored.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub input: String,
    /// The output column as stored.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub output: Option<String>,
}

/// Every row of the commands table at `location`, by id, read with plain SQL.
pub async fn stored_payloads(location: &StoreLocation) -> Vec<StoredPayload> {
    use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection};
    use orch_diesel_pg::diesel_async::AsyncPgConnection;
    let table = format!("{}commands", location.prefix);
    if let Some(path) = location.url.strip_prefix("sqlite://") {
        use diesel::{Connection, RunQueryDsl, SqliteConnection};
        let mut conn = SqliteConnection::establish(path).expect("open the SQLite file");
        let sql = format!("SELECT id, name, input, output FROM {table} ORDER BY id");
        diesel::sql_query(sql).load(&mut conn).expect("read the payloads")
    } else if location.url.starts_with("postgres") {
        use orch_diesel_pg::diesel_async::RunQueryDsl;
        let mut conn = AsyncPgConnection::establish(&location.url).await.expect("connect");
        let sql = format!("SELECT id::text AS id, name, input, output FROM \"{table}\" ORDER BY id");
        diesel::sql_query(sql).load(&mut conn).await.expect("read the payloads")
    } else {
        use orch_diesel_mysql::diesel_async::RunQueryDsl;
        let mut conn = AsyncMysqlConnection::establish(&location.url).await.expect("connect");
        let sql = format!(
            "SELECT CAST(id AS CHAR) AS id, name, CAST(input AS CHAR) AS input, CAST(output AS CHAR) AS output \
             FROM `{table}` ORDER BY id"
        );
        diesel::sql_query(sql).load(&mut conn).await.expect("read the payloads")
    }
}

/// The payload columns of command `id`.
pub async fn stored_payload(location: &StoreLocation, id: CommandId) -> StoredPayload {
    let id = id.to_string();
    stored_payloads(location)
        .await
        .into_iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("command {id} is not in the table"))
}

/// Sets a payload column of command `id` to `value` (a sealed value or JSON without
/// quotes) with plain SQL.
async fn set_column(h: &dyn Harness, location: &StoreLocation, id: CommandId, column: &str, value: &str) {
    assert!(!value.contains('\''), "{value}");
    h.sql_execute(location, &format!("UPDATE {{commands}} SET {column} = '{value}' WHERE id = '{id}'"))
        .await
        .unwrap_or_else(|e| panic!("set {column} of {id}: {e}"));
}

/// The record of `id` as the wrapped store holds it, polled until it is finished.
async fn finished(plain: &Arc<dyn Store>, id: CommandId) -> CommandRecord {
    eventually(&format!("command {id} to finish"), || async move {
        let record = plain.get(id).await.unwrap().expect("the command exists");
        record.state.is_terminal().then_some(record)
    })
    .await
}

async fn wait_success(orch: &Orch, id: CommandId) -> String {
    match tokio::time::timeout(crate::support::WAIT, orch.wait(id)).await {
        Ok(Ok(Status::Success(output))) => output,
        other => panic!("command {id}: expected a success, got {other:?}"),
    }
}

/// Asserts that command `id` was failed alone, for good, by the claim that met it,
/// because its sealed input did not open, with `why` in the error and the journal.
async fn assert_failed_sealed_shut(plain: &Arc<dyn Store>, id: CommandId, why: &str) {
    let record = finished(plain, id).await;
    assert_eq!((record.state, record.attempts), (State::Failed, 1), "{id}: not retried");
    let error = record.error.expect("a recorded error");
    assert_eq!(error.kind, FailureKind::Decode, "{error}");
    assert!(error.message.contains("sealed payload does not open") && error.message.contains(why), "{error}");
    let journal = plain.journal(id).await.unwrap();
    assert!(
        journal.iter().any(|e| e.kind == JournalKind::Failed
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("sealed payload does not open") && m.contains(why))),
        "{journal:?}"
    );
}

fn assert_decrypt_error<T: std::fmt::Debug>(result: orch::Result<T>, id: CommandId, why: &str) {
    match result {
        Err(Error::Decrypt { id: failed, reason }) => {
            assert_eq!(failed, id);
            assert!(reason.contains(why), "{reason}");
        }
        other => panic!("{id}: expected Error::Decrypt ({why}), got {other:?}"),
    }
}

/// Everything a run writes (inputs of pushes, follow-ups and workflow steps, outputs)
/// is stored sealed with the current key, without a trace of the plaintext, and reads
/// back as plaintext through the encrypting store.
pub async fn payloads_are_sealed_at_rest(h: &dyn Harness) {
    let (plain, location) = h.located_store().await;
    let keyring = Keyring::new("k-2026", &key()).unwrap();
    let orch = encrypted(&plain, &keyring);
    let worker = Worker::new(orch.clone(), registry(), fast_config("default")).unwrap().start();
    let id = orch.push(&secret("push")).await.unwrap();
    let workflow = Workflow::builder()
        .step("first", NewCommand::of(&secret("step")))
        .step_after("second", NewCommand::of(&JoinCommand), ["first"])
        .build()
        .unwrap();
    let workflow = orch.start_workflow(workflow).await.unwrap();
    assert_eq!(wait_success(&orch, id).await, format!("\"done:push-{MARKER}\""));
    let status =
        tokio::time::timeout(crate::support::WAIT, orch.wait_workflow(workflow)).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);
    // Both secrets' notes, too.
    eventually("every command to succeed", || async {
        let counts = h.sql_state_counts(&location).await;
        (counts.len() == 1 && counts.get("succeeded") == Some(&5)).then_some(())
    })
    .await;
    worker.shutdown().await;

    let rows = stored_payloads(&location).await;
    assert_eq!(rows.len(), 5);
    for row in &rows {
        let output = row.output.as_deref().expect("every command succeeded");
        for value in [row.input.as_str(), output] {
            assert!(value.starts_with(&sealed_with("k-2026")), "{}: {value}", row.name);
            assert!(!value.contains(MARKER) && !value.contains("done:"), "{}: {value}", row.name);
            let text: String = serde_json::from_str(value).expect("a sealed value is a JSON string");
            assert!(text.starts_with("orch-sealed:v1:k-2026:"));
        }
    }
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["enc.join", "enc.note", "enc.note", "enc.secret", "enc.secret"]);

    // Through the encrypting store everything reads as plaintext.
    let records = orch.store().list(ListParams::default()).await.unwrap();
    let note = records.iter().find(|r| r.parent_id == Some(id)).expect("the follow-up");
    assert_eq!(note.input, format!("{{\"secret\":\"done:push-{MARKER}/note\"}}"));
    assert_eq!(note.output.as_deref(), Some(format!("\"done:push-{MARKER}/note\"").as_str()));
    let join = records.iter().find(|r| r.name == "enc.join").unwrap();
    assert_eq!(join.output.as_deref(), Some(format!("\"done:step-{MARKER}\"").as_str()));
    assert_eq!(orch.output::<SecretCommand>(id).await.unwrap(), Some(format!("done:push-{MARKER}")));
}

/// A sealed input copied by SQL into another row, one with a byte changed, an output
/// copied into another row and an input moved into its own row's output column: none
/// opens. Reading them is `Error::Decrypt`; a claim fails the damaged commands alone,
/// with the reason in their journals, and the others run.
pub async fn moved_and_altered_payloads_do_not_open(h: &dyn Harness) {
    let (plain, location) = h.located_store().await;
    let keyring = Keyring::new("k1", &key()).unwrap();
    let orch = encrypted(&plain, &keyring);
    let source = orch.push(&secret("source")).await.unwrap();
    let moved = orch.push(&secret("moved")).await.unwrap();
    let flipped = orch.push(&secret("flipped")).await.unwrap();
    let good = orch.push(&secret("good")).await.unwrap();

    let sealed = stored_payload(&location, source).await.input;
    set_column(h, &location, moved, "input", &sealed).await;
    let mut altered = stored_payload(&location, flipped).await.input.into_bytes();
    let at = altered.len() - 10;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    set_column(h, &location, flipped, "input", std::str::from_utf8(&altered).unwrap()).await;

    let store = orch.store();
    assert_decrypt_error(store.get(moved).await, moved, "input: authentication with key \"k1\" failed");
    assert_decrypt_error(store.get(flipped).await, flipped, "input: authentication with key \"k1\" failed");
    assert!(matches!(store.list(ListParams::default()).await, Err(Error::Decrypt { .. })));
    assert_eq!(
        store.get(source).await.unwrap().unwrap().input,
        format!("{{\"secret\":\"source-{MARKER}\"}}")
    );

    let worker = Worker::new(orch.clone(), registry(), fast_config("default")).unwrap().start();
    assert_eq!(wait_success(&orch, source).await, format!("\"done:source-{MARKER}\""));
    assert_eq!(wait_success(&orch, good).await, format!("\"done:good-{MARKER}\""));
    assert_failed_sealed_shut(&plain, moved, "authentication with key \"k1\" failed").await;
    assert_failed_sealed_shut(&plain, flipped, "authentication with key \"k1\" failed").await;
    worker.shutdown().await;

    // Outputs: one copied to another row, one moved from its own input column.
    let output = stored_payload(&location, source).await.output.expect("an output");
    set_column(h, &location, good, "output", &output).await;
    assert_decrypt_error(store.get(good).await, good, "output: authentication");
    let input = stored_payload(&location, source).await.input;
    set_column(h, &location, source, "output", &input).await;
    assert_decrypt_error(store.get(source).await, source, "output: authentication");
}

/// Rotation: rows sealed with key A open after B becomes current while A is kept, and
/// new values are sealed with B; once A is removed, A's rows read as `Error::Decrypt`
/// and a claim fails them alone while B's rows run.
pub async fn rotated_keys_open_until_removed(h: &dyn Harness) {
    let (plain, location) = h.located_store().await;
    let (key_a, key_b) = (key(), key());
    let only_a = Keyring::new("a", &key_a).unwrap();
    let b_then_a = Keyring::new("b", &key_b).unwrap().with_key("a", &key_a).unwrap();
    let only_b = Keyring::new("b", &key_b).unwrap();

    // Sealed with A: one finished (input and output), one still pending.
    let orch_a = encrypted(&plain, &only_a);
    let worker = Worker::new(orch_a.clone(), registry(), fast_config("default")).unwrap().start();
    let done_a = orch_a.push(&secret("done-a")).await.unwrap();
    wait_success(&orch_a, done_a).await;
    worker.shutdown().await;
    let pending_a = orch_a.push(&secret("pending-a")).await.unwrap();
    assert!(stored_payload(&location, pending_a).await.input.starts_with(&sealed_with("a")));

    // B current, A kept: A's rows open, new rows are sealed with B, A's pending row runs.
    let orch_ab = encrypted(&plain, &b_then_a);
    let done = orch_ab.get(done_a).await.unwrap().unwrap();
    assert_eq!(done.output.as_deref(), Some(format!("\"done:done-a-{MARKER}\"").as_str()));
    let new_b = orch_ab.push(&secret("new-b")).await.unwrap();
    assert!(stored_payload(&location, new_b).await.input.starts_with(&sealed_with("b")));
    let worker = Worker::new(orch_ab.clone(), registry(), fast_config("default")).unwrap().start();
    assert_eq!(wait_success(&orch_ab, pending_a).await, format!("\"done:pending-a-{MARKER}\""));
    wait_success(&orch_ab, new_b).await;
    worker.shutdown().await;
    let ran = stored_payload(&location, pending_a).await;
    assert!(ran.input.starts_with(&sealed_with("a")), "the input keeps the key that sealed it");
    assert!(ran.output.unwrap().starts_with(&sealed_with("b")), "the output is sealed with the current key");

    // A removed too early: A's rows no longer open, B's do.
    let stale_a = orch_a.push(&secret("stale-a")).await.unwrap();
    let orch_b = encrypted(&plain, &only_b);
    assert_decrypt_error(orch_b.get(done_a).await, done_a, "no key with id \"a\"");
    assert_decrypt_error(orch_b.get(pending_a).await, pending_a, "input: no key with id \"a\"");
    assert_eq!(orch_b.output::<SecretCommand>(new_b).await.unwrap(), Some(format!("done:new-b-{MARKER}")));
    let fresh_b = orch_b.push(&secret("fresh-b")).await.unwrap();
    let worker = Worker::new(orch_b.clone(), registry(), fast_config("default")).unwrap().start();
    wait_success(&orch_b, fresh_b).await;
    assert_failed_sealed_shut(&plain, stale_a, "no key with id \"a\"").await;
    worker.shutdown().await;
}

/// Rows stored before encryption was switched on read and run as they are; what is
/// written from then on is sealed.
pub async fn plaintext_rows_from_before_still_run(h: &dyn Harness) {
    let (plain, location) = h.located_store().await;
    let before = Orch::new(Arc::clone(&plain));
    let worker = Worker::new(before.clone(), registry(), fast_config("default")).unwrap().start();
    let done = before.push(&secret("done-plain")).await.unwrap();
    wait_success(&before, done).await;
    worker.shutdown().await;
    let pending = before.push(&secret("pending-plain")).await.unwrap();
    assert!(stored_payload(&location, pending).await.input.contains(MARKER), "stored in plaintext");

    let keyring = Keyring::new("k1", &key()).unwrap();
    let orch = encrypted(&plain, &keyring);
    assert_eq!(orch.output::<SecretCommand>(done).await.unwrap(), Some(format!("done:done-plain-{MARKER}")));
    let worker = Worker::new(orch.clone(), registry(), fast_config("default")).unwrap().start();
    assert_eq!(wait_success(&orch, pending).await, format!("\"done:pending-plain-{MARKER}\""));
    let note = eventually("the follow-up of the plaintext row to succeed", || async {
        let notes =
            orch.store().list(ListParams { parent: Some(pending), ..Default::default() }).await.unwrap();
        notes.into_iter().find(|n| n.state == State::Succeeded)
    })
    .await;
    worker.shutdown().await;
    let ran = stored_payload(&location, pending).await;
    assert!(ran.input.contains(MARKER), "a stored input is not rewritten");
    let output = ran.output.unwrap();
    assert!(output.starts_with(&sealed_with("k1")) && !output.contains(MARKER), "{output}");
    let follow_up = stored_payload(&location, note.id).await;
    assert!(follow_up.input.starts_with(&sealed_with("k1")) && !follow_up.input.contains(MARKER));
}
