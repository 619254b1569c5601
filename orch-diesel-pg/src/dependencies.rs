//! The dependencies table: edges between workflow steps, and what a finished step does
//! to the steps waiting on it.
//!
//! Every function here runs inside the caller's transaction, after the caller changed
//! (and so locked) the commands that finished. The blocked commands a transaction
//! changes are then locked in ONE statement, in id order: two transactions that lock
//! blocked commands this way wait on each other but never deadlock, and a transaction
//! that waited reads, in its next statement, what the other committed.
//!
//! That is what makes two dependencies finishing at once safe under READ COMMITTED.
//! B and C succeed in two transactions, and D depends on both. Each locks D, then
//! checks D's dependencies in a new statement. The second to lock D waited for the
//! first to commit, so its check sees both B and C succeeded and unblocks D; the first
//! saw the other one still running and left D blocked.

use std::collections::HashMap;

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orch::store::backend::{NewJournalEntry, dependency_edges, dependency_failure_message};
use orch::store::{CommandId, InsertCommand, WorkflowId, WorkflowStepRecord};
use orch::{FailureKind, State, Timestamp};

use crate::commands::{C_COLUMNS, CommandRow};
use crate::prepared::Prepare;
use crate::{Tables, TxResult};

/// Stores the dependency edges of newly inserted commands, in one statement.
pub(crate) async fn insert_edges(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    commands: &[&InsertCommand],
) -> TxResult<()> {
    let edges = dependency_edges(commands)?;
    if edges.is_empty() {
        return Ok(());
    }
    let command_ids: Vec<uuid::Uuid> = edges.iter().map(|e| e.command.as_uuid()).collect();
    let dependency_ids: Vec<uuid::Uuid> = edges.iter().map(|e| e.dependency.as_uuid()).collect();
    let positions: Vec<i32> = edges.iter().map(|e| i32::try_from(e.position).unwrap_or(i32::MAX)).collect();
    diesel::sql_query(format!(
        "INSERT INTO {} (command_id, depends_on, position) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::integer[])",
        tables.dependencies
    ))
    .bind::<Array<Uuid>, _>(&command_ids)
    .bind::<Array<Uuid>, _>(&dependency_ids)
    .bind::<Array<Integer>, _>(&positions)
    .prepared()
    .execute(conn)
    .await?;
    Ok(())
}

/// A command locked by [`lock`].
#[derive(QueryableByName)]
pub(crate) struct LockedRow {
    #[diesel(sql_type = Uuid)]
    pub(crate) id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    pub(crate) state: String,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    /// For a dependent of an ended command: the (1-based) index of that command in
    /// `ended`, the lowest when several; `None` for a dependent of a succeeded one only.
    #[diesel(sql_type = Nullable<BigInt>)]
    origin: Option<i64>,
}

/// Locks, in one statement and in id order, the blocked commands that depend directly
/// on `succeeded` and those that depend on `ended`, transitively (through blocked
/// commands); with `with_ended`, the `ended` commands themselves too, whatever their
/// state. The dependency graph is walked in the statement's snapshot; the lock then
/// re-checks `state = 'blocked'` on rows changed meanwhile.
async fn lock(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    succeeded: &[uuid::Uuid],
    ended: &[uuid::Uuid],
    with_ended: bool,
) -> TxResult<Vec<LockedRow>> {
    let sql = format!(
        "WITH RECURSIVE ended(id, ord) AS ( \
           SELECT e.id, e.ord FROM unnest($1::uuid[]) WITH ORDINALITY AS e(id, ord) \
         ), down(id, ord) AS ( \
           SELECT d.command_id, e.ord FROM ended AS e JOIN {d} AS d ON d.depends_on = e.id \
           UNION \
           SELECT d.command_id, down.ord FROM down \
             JOIN {c} AS b ON b.id = down.id AND b.state = 'blocked' \
             JOIN {d} AS d ON d.depends_on = down.id \
         ), touched(id, ord) AS ( \
           SELECT id, ord FROM down \
           UNION ALL SELECT d.command_id, NULL::bigint FROM {d} AS d WHERE d.depends_on = ANY($2::uuid[]) \
           UNION ALL SELECT id, ord FROM ended WHERE $3 \
         ) \
         SELECT c.id, c.state, c.attempts, t.origin FROM {c} AS c \
           JOIN (SELECT id, MIN(ord) AS origin FROM touched GROUP BY id) AS t ON t.id = c.id \
         WHERE c.state = 'blocked' OR ($3 AND c.id = ANY($1::uuid[])) \
         ORDER BY c.id FOR UPDATE OF c",
        c = tables.commands,
        d = tables.dependencies,
    );
    Ok(diesel::sql_query(sql)
        .bind::<Array<Uuid>, _>(ended)
        .bind::<Array<Uuid>, _>(succeeded)
        .bind::<Bool, _>(with_ended)
        .prepared()
        .load(conn)
        .await?)
}

/// Locks a command that was blocked together with its blocked dependents,
/// transitively, for [`cancel`](crate::commands::cancel); the command's own row is
/// among the result (whatever its state now) unless it does not exist.
pub(crate) async fn lock_with_dependents(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    id: CommandId,
) -> TxResult<Vec<LockedRow>> {
    lock(conn, tables, &[], &[id.as_uuid()], true).await
}

/// What a transaction did to the dependents of the commands that finished in it.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// Their journal entries.
    pub(crate) entries: Vec<NewJournalEntry>,
    /// How many became pending.
    pub(crate) unblocked: usize,
}

/// Applies the end of commands to the commands depending on them: each blocked
/// dependent of `succeeded` (id, time) whose dependencies have now all succeeded
/// becomes pending; each blocked dependent of `ended` (id, failed or cancelled, time),
/// transitively, becomes cancelled. `ended` should be in id order: a command reached
/// from several is cancelled in the name of the first.
pub(crate) async fn settle(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    succeeded: &[(CommandId, Timestamp)],
    ended: &[(CommandId, State, Timestamp)],
) -> TxResult<Settled> {
    if succeeded.is_empty() && ended.is_empty() {
        return Ok(Settled::default());
    }
    let succeeded_ids: Vec<uuid::Uuid> = succeeded.iter().map(|(id, _)| id.as_uuid()).collect();
    let ended_ids: Vec<uuid::Uuid> = ended.iter().map(|(id, _, _)| id.as_uuid()).collect();
    let locked = lock(conn, tables, &succeeded_ids, &ended_ids, false).await?;
    let mut settled = cascade(conn, tables, &locked, ended, None).await?;
    // The latest of the successes: any of them may be the one that completed a set.
    if let Some(now) = succeeded.iter().map(|(_, at)| *at).max() {
        let candidates: Vec<uuid::Uuid> =
            locked.iter().filter(|r| r.origin.is_none() && r.state == "blocked").map(|r| r.id).collect();
        let unblocked = unblock(conn, tables, &candidates, now).await?;
        settled.unblocked = unblocked.len();
        settled.entries.extend(unblocked.into_iter().map(|id| NewJournalEntry::unblocked(id, now)));
    }
    Ok(settled)
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
}

fn sorted_ids(rows: Vec<Id>) -> Vec<CommandId> {
    let mut ids: Vec<CommandId> = rows.into_iter().map(|r| CommandId::from_uuid(r.id)).collect();
    ids.sort();
    ids
}

/// Makes pending those of the locked blocked `candidates` whose dependencies have all
/// succeeded. A statement of its own, after the lock: it sees every transaction that
/// held one of the candidates committed.
async fn unblock(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    candidates: &[uuid::Uuid],
    now: Timestamp,
) -> TxResult<Vec<CommandId>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    // A dependency row that is missing counts as not succeeded.
    let rows: Vec<Id> = diesel::sql_query(format!(
        "UPDATE {c} AS c SET state = 'pending', updated_at = $1 \
         WHERE c.id = ANY($2) AND c.state = 'blocked' AND NOT EXISTS ( \
           SELECT 1 FROM {d} AS d LEFT JOIN {c} AS p ON p.id = d.depends_on \
           WHERE d.command_id = c.id AND p.state IS DISTINCT FROM 'succeeded') \
         RETURNING c.id",
        c = tables.commands,
        d = tables.dependencies,
    ))
    .bind::<BigInt, _>(now.as_micros())
    .bind::<Array<Uuid>, _>(candidates)
    .prepared()
    .load(conn)
    .await?;
    Ok(sorted_ids(rows))
}

/// Cancels the locked blocked dependents of `ended` (those [`lock`] tied to one of
/// them), except `skip`, naming the ended command each was reached from.
pub(crate) async fn cascade(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    locked: &[LockedRow],
    ended: &[(CommandId, State, Timestamp)],
    skip: Option<CommandId>,
) -> TxResult<Settled> {
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    let mut finished_at = Vec::new();
    let mut origins: HashMap<CommandId, (CommandId, State, Timestamp)> = HashMap::new();
    for row in locked {
        let id = CommandId::from_uuid(row.id);
        let Some(ord) = row.origin else { continue };
        if row.state != "blocked" || Some(id) == skip {
            continue;
        }
        let Some(&origin) =
            usize::try_from(ord).ok().and_then(|i| i.checked_sub(1)).and_then(|i| ended.get(i))
        else {
            continue;
        };
        ids.push(row.id);
        errors.push(dependency_failure_message(origin.0, origin.1));
        finished_at.push(origin.2.as_micros());
        origins.insert(id, origin);
    }
    if ids.is_empty() {
        return Ok(Settled::default());
    }
    let rows: Vec<Id> = diesel::sql_query(format!(
        "UPDATE {} AS c SET state = 'cancelled', finished_at = v.at, updated_at = v.at, error_kind = $1, \
           error = v.error, follow_ups_due = TRUE \
         FROM unnest($2::uuid[], $3::text[], $4::bigint[]) AS v(id, error, at) \
         WHERE c.id = v.id AND c.state = 'blocked' RETURNING c.id",
        tables.commands
    ))
    .bind::<Text, _>(FailureKind::Cancelled.as_str())
    .bind::<Array<Uuid>, _>(&ids)
    .bind::<Array<Text>, _>(&errors)
    .bind::<Array<BigInt>, _>(&finished_at)
    .prepared()
    .load(conn)
    .await?;
    let entries = sorted_ids(rows)
        .into_iter()
        .filter_map(|id| {
            let (origin, state, at) = *origins.get(&id)?;
            Some(NewJournalEntry::dependency_cancelled(id, at, origin, state))
        })
        .collect();
    Ok(Settled { entries, unblocked: 0 })
}

#[derive(QueryableByName)]
struct StepRow {
    #[diesel(embed)]
    command: CommandRow,
    #[diesel(sql_type = Array<Uuid>)]
    depends_on: Vec<uuid::Uuid>,
}

/// The steps of a workflow with their dependencies (in the order each step listed
/// them), by command id; one statement, so one snapshot.
pub(crate) async fn workflow_steps(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    workflow_id: WorkflowId,
) -> TxResult<Vec<WorkflowStepRecord>> {
    let rows: Vec<StepRow> = diesel::sql_query(format!(
        "SELECT {columns}, ARRAY(SELECT d.depends_on FROM {d} AS d WHERE d.command_id = c.id \
           ORDER BY d.position, d.depends_on) AS depends_on \
         FROM {c} AS c WHERE c.workflow_id = $1 ORDER BY c.id",
        columns = *C_COLUMNS,
        c = tables.commands,
        d = tables.dependencies,
    ))
    .bind::<Uuid, _>(workflow_id.as_uuid())
    .prepared()
    .load(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(WorkflowStepRecord {
                command: row.command.into_record()?,
                depends_on: row.depends_on.into_iter().map(CommandId::from_uuid).collect(),
            })
        })
        .collect()
}
