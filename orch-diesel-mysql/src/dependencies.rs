//! Workflow dependencies: the edges between steps, the unblocking of a command whose
//! dependencies have all succeeded, and the cancelling (transitively) of the commands
//! that depend on one that failed or was cancelled.
//!
//! Everything runs inside the caller's transaction, right after the change that
//! finished the dependency. The edges are written once, with their commands, and never
//! change, so they are read without locks; the dependent command rows are locked
//! (`SELECT … FOR UPDATE`, in id order) before anything is decided about them.
//!
//! Why that lock is enough when two dependencies of one command finish at once: each
//! transaction has updated its own dependency before it locks the dependent, and holds
//! that lock until it commits. The second one to lock the dependent therefore waits
//! for the first to commit, and its next statement (a fresh snapshot, since sessions
//! run in `READ COMMITTED`) sees the first one's dependency finished. MySQL cannot
//! read the table an `UPDATE` changes in a subquery of that `UPDATE`, so the rows to
//! change are selected first and then updated by id.

use std::collections::{BTreeMap, BTreeSet};

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};
use orch::store::backend::{NewJournalEntry, dependency_edges, dependency_failure_message};
use orch::store::{CommandId, InsertCommand, WorkflowId, WorkflowStepRecord};
use orch::{FailureKind, State, Timestamp};

use crate::commands::{CommandRow, ID_CHUNK, IdRow, bind_ids, placeholders, query, records};
use crate::{Tables, TxResult, journal};

/// Edges per multi-row INSERT: 2 binds each.
const EDGE_CHUNK: usize = 1_000;

#[derive(QueryableByName)]
struct EdgeRow {
    #[diesel(sql_type = Text)]
    command_id: String,
    #[diesel(sql_type = Text)]
    depends_on: String,
}

/// Stores the dependency edges of newly inserted commands (a dependency named twice
/// is stored once).
pub(crate) async fn insert_edges(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    commands: &[&InsertCommand],
) -> TxResult<()> {
    let edges: Vec<(CommandId, CommandId)> =
        dependency_edges(commands)?.into_iter().map(|e| (e.command, e.dependency)).collect();
    for chunk in edges.chunks(EDGE_CHUNK) {
        let mut sql = format!("INSERT INTO {} (command_id, depends_on) VALUES ", tables.dependencies);
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?)" } else { ", (?, ?)" });
        }
        let mut q = query(sql);
        for (command, dependency) in chunk {
            q = q.bind::<Text, _>(command.to_string()).bind::<Text, _>(dependency.to_string());
        }
        q.execute(conn).await?;
    }
    Ok(())
}

/// The commands depending on each of `ids` (those with any), by dependency. A plain
/// read: edges never change once committed.
async fn dependents(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    ids: &BTreeSet<String>,
) -> TxResult<BTreeMap<String, BTreeSet<String>>> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for chunk in ids.chunks(ID_CHUNK) {
        let q = query(format!(
            "SELECT command_id, depends_on FROM {} WHERE depends_on IN ({})",
            tables.dependencies,
            placeholders(chunk.len())
        ));
        let rows: Vec<EdgeRow> = bind_ids(q, chunk.iter().copied()).load(conn).await?;
        for r in rows {
            out.entry(r.depends_on).or_default().insert(r.command_id);
        }
    }
    Ok(out)
}

/// Locks the commands of `ids` that are `blocked`, in id order, and returns their ids
/// (in id order). A row another transaction holds is waited for, then judged by its
/// latest committed state.
async fn lock_blocked(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    ids: &BTreeSet<String>,
) -> TxResult<Vec<String>> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut locked = Vec::new();
    for chunk in ids.chunks(ID_CHUNK) {
        let q = query(format!(
            "SELECT id FROM {} WHERE state = 'blocked' AND id IN ({}) ORDER BY id FOR UPDATE",
            tables.commands,
            placeholders(chunk.len())
        ));
        let rows: Vec<IdRow> = bind_ids(q, chunk.iter().copied()).load(conn).await?;
        locked.extend(rows.into_iter().map(|r| r.id));
    }
    Ok(locked)
}

/// In the transaction that made each of `succeeded` (id, time) `succeeded`: every
/// blocked command depending on one of them whose dependencies have now all succeeded
/// becomes `pending` (its `scheduled_at` kept; `updated_at` the latest time of those
/// of `succeeded` it depends on), journaled `unblocked`. Returns how many.
pub(crate) async fn unblock(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    succeeded: &[(CommandId, Timestamp)],
) -> TxResult<usize> {
    if succeeded.is_empty() {
        return Ok(0);
    }
    let ids: BTreeSet<String> = succeeded.iter().map(|(id, _)| id.to_string()).collect();
    // One query for the whole batch; most commands have no dependents.
    let dependents = dependents(conn, tables, &ids).await?;
    if dependents.is_empty() {
        return Ok(0);
    }
    // When each candidate was unblocked: the latest time among its dependencies here.
    let mut times: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for (id, now) in succeeded {
        for dependent in dependents.get(&id.to_string()).into_iter().flatten() {
            let at = times.entry(dependent.as_str()).or_insert(*now);
            *at = (*at).max(*now);
        }
    }
    // The lock comes first (see the module docs), on every candidate of the batch at
    // once, in id order, so that concurrent batches lock in one order.
    let candidates: BTreeSet<String> = times.keys().map(|id| (*id).to_owned()).collect();
    let locked = lock_blocked(conn, tables, &candidates).await?;
    if locked.is_empty() {
        return Ok(0);
    }
    // A fresh snapshot, taken after the locks were granted. A dependency that does not
    // exist (which no insert writes) counts as not succeeded.
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    for chunk in locked.chunks(ID_CHUNK) {
        let q = query(format!(
            "SELECT DISTINCT d.command_id AS id FROM {deps} d LEFT JOIN {commands} c ON c.id = d.depends_on \
             WHERE d.command_id IN ({}) AND (c.id IS NULL OR c.state <> 'succeeded')",
            placeholders(chunk.len()),
            deps = tables.dependencies,
            commands = tables.commands,
        ));
        let rows: Vec<IdRow> = bind_ids(q, chunk.iter().map(String::as_str)).load(conn).await?;
        waiting.extend(rows.into_iter().map(|r| r.id));
    }
    // The ready ones, grouped by time (one group, unless the batch had several).
    let mut ready: BTreeMap<Timestamp, Vec<&str>> = BTreeMap::new();
    for id in locked.iter().map(String::as_str).filter(|id| !waiting.contains(*id)) {
        ready.entry(times[id]).or_default().push(id);
    }
    let mut entries = Vec::new();
    for (now, ids) in &ready {
        for chunk in ids.chunks(ID_CHUNK) {
            let q = query(format!(
                "UPDATE {} SET state = 'pending', updated_at = ? WHERE state = 'blocked' AND id IN ({})",
                tables.commands,
                placeholders(chunk.len())
            ))
            .bind::<BigInt, _>(now.as_micros());
            bind_ids(q, chunk.iter().copied()).execute(conn).await?;
        }
        for id in ids {
            entries.push(NewJournalEntry::unblocked(id.parse()?, *now));
        }
    }
    entries.sort_by_key(|e| e.command_id);
    journal::append(conn, tables, &entries).await?;
    Ok(entries.len())
}

/// In the transaction that made each of `ended` (id, state, time) `failed` or
/// `cancelled`: every blocked command depending on it, directly or through other
/// commands cancelled here, becomes `cancelled` with an error naming it,
/// `follow_ups_due` set, journaled `cancelled`. Breadth-first, one level at a time,
/// each level locked before it is changed.
pub(crate) async fn cascade(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    ended: &[(CommandId, State, Timestamp)],
) -> TxResult<()> {
    if ended.is_empty() {
        return Ok(());
    }
    let ids: BTreeSet<String> = ended.iter().map(|(id, _, _)| id.to_string()).collect();
    let mut first_level = dependents(conn, tables, &ids).await?;
    if first_level.is_empty() {
        return Ok(());
    }
    // Origins in id order, so that concurrent cascades tend to lock in one order.
    let mut ended = ended.to_vec();
    ended.sort_by_key(|(id, _, _)| *id);
    for (origin, state, now) in &ended {
        let Some(mut level) = first_level.remove(&origin.to_string()) else { continue };
        let error = dependency_failure_message(*origin, *state);
        let now_us = now.as_micros();
        loop {
            // Only blocked commands are cancelled, so each is cancelled once, and the
            // walk ends even if the edges had a cycle.
            let locked = lock_blocked(conn, tables, &level).await?;
            if locked.is_empty() {
                break;
            }
            for chunk in locked.chunks(ID_CHUNK) {
                let q = query(format!(
                    "UPDATE {} SET state = 'cancelled', finished_at = ?, updated_at = ?, error_kind = ?, \
                     error = ?, follow_ups_due = 1 WHERE state = 'blocked' AND id IN ({})",
                    tables.commands,
                    placeholders(chunk.len())
                ))
                .bind::<BigInt, _>(now_us)
                .bind::<BigInt, _>(now_us)
                .bind::<Text, _>(FailureKind::Cancelled.as_str())
                .bind::<Text, _>(error.clone());
                bind_ids(q, chunk.iter().map(String::as_str)).execute(conn).await?;
            }
            let entries = locked
                .iter()
                .map(|id| Ok(NewJournalEntry::dependency_cancelled(id.parse()?, *now, *origin, *state)))
                .collect::<orch::Result<Vec<_>>>()?;
            journal::append(conn, tables, &entries).await?;
            let cancelled: BTreeSet<String> = locked.into_iter().collect();
            level = dependents(conn, tables, &cancelled).await?.into_values().flatten().collect();
        }
    }
    Ok(())
}

/// The steps of a workflow with their dependencies, by command id (each step's
/// dependencies by id too).
pub(crate) async fn workflow_steps(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    workflow_id: WorkflowId,
) -> TxResult<Vec<WorkflowStepRecord>> {
    let rows: Vec<CommandRow> = diesel::sql_query(format!(
        "SELECT {} FROM {} WHERE workflow_id = ? ORDER BY id",
        tables.columns, tables.commands
    ))
    .bind::<Text, _>(workflow_id.to_string())
    .load(conn)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let edges: Vec<EdgeRow> = diesel::sql_query(format!(
        "SELECT d.command_id, d.depends_on FROM {deps} d JOIN {commands} c ON c.id = d.command_id \
         WHERE c.workflow_id = ? ORDER BY d.command_id, d.depends_on",
        deps = tables.dependencies,
        commands = tables.commands,
    ))
    .bind::<Text, _>(workflow_id.to_string())
    .load(conn)
    .await?;
    let mut depends_on: BTreeMap<CommandId, Vec<CommandId>> = BTreeMap::new();
    for e in edges {
        depends_on.entry(e.command_id.parse()?).or_default().push(e.depends_on.parse()?);
    }
    Ok(records(rows)?
        .into_iter()
        .map(|command| WorkflowStepRecord {
            depends_on: depends_on.remove(&command.id).unwrap_or_default(),
            command,
        })
        .collect())
}
