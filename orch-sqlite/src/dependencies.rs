//! The dependencies table: edges between workflow steps, and what a finished step does
//! to the steps waiting on it.
//!
//! Every function here runs inside the caller's write transaction. SQLite has one
//! writer at a time, so a dependent cannot be unblocked twice or missed by two
//! dependencies finishing at once.

use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use orch::store::backend::{NewJournalEntry, dependency_edges, dependency_failure_message};
use orch::store::{CommandId, InsertCommand, WorkflowId, WorkflowStepRecord};
use orch::{State, Timestamp};

use crate::commands::{COLUMNS, CommandRow, placeholders};
use crate::prepared::{Prepare, shaped_chunks};
use crate::{Tables, TxResult, journal};

/// Most rows per INSERT, a power of two (`shaped_chunks`): 2 binds each.
const CHUNK: usize = 256;

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(QueryableByName)]
struct Edge {
    #[diesel(sql_type = Text)]
    command_id: String,
    #[diesel(sql_type = Text)]
    depends_on: String,
}

/// Stores the dependency edges of newly inserted commands.
pub(crate) fn insert_edges<C: std::borrow::Borrow<InsertCommand>>(
    conn: &mut SqliteConnection,
    tables: &Tables,
    commands: &[C],
) -> TxResult<()> {
    let edges: Vec<(CommandId, CommandId)> =
        dependency_edges(commands)?.into_iter().map(|e| (e.command, e.dependency)).collect();
    for chunk in shaped_chunks(&edges, CHUNK) {
        let mut sql = format!("INSERT INTO {} (command_id, depends_on) VALUES ", tables.dependencies);
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?)" } else { ", (?, ?)" });
        }
        let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
        for (command, dependency) in chunk {
            query = query.bind::<Text, _>(command.to_string()).bind::<Text, _>(dependency.to_string());
        }
        query.prepared().execute(conn)?;
    }
    Ok(())
}

fn ids_query(conn: &mut SqliteConnection, sql: String, ids: &[String]) -> TxResult<Vec<String>> {
    let mut query = diesel::sql_query(sql).into_boxed::<Sqlite>();
    for id in ids {
        query = query.bind::<Text, _>(id.clone());
    }
    // One id (a single completion's dependents) is the hot shape; longer lists vary.
    let rows: Vec<Id> = if ids.len() == 1 { query.prepared().load(conn)? } else { query.load(conn)? };
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// The blocked commands that depend directly on any of `ids`.
fn blocked_dependents(conn: &mut SqliteConnection, tables: &Tables, ids: &[String]) -> TxResult<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT d.command_id AS id FROM {d} d JOIN {c} c ON c.id = d.command_id \
         WHERE d.depends_on IN ({ids}) AND c.state = 'blocked' ORDER BY d.command_id",
        d = tables.dependencies,
        c = tables.commands,
        ids = placeholders(ids.len())
    );
    ids_query(conn, sql, ids)
}

/// Makes pending every blocked dependent of `id` (which just succeeded) whose
/// dependencies have now all succeeded. Returns how many became pending.
pub(crate) fn unblock_dependents(
    conn: &mut SqliteConnection,
    tables: &Tables,
    id: CommandId,
    now: Timestamp,
) -> TxResult<usize> {
    let candidates = blocked_dependents(conn, tables, &[id.to_string()])?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let waiting = ids_query(
        conn,
        format!(
            "SELECT DISTINCT d.command_id AS id FROM {d} d JOIN {c} p ON p.id = d.depends_on \
             WHERE d.command_id IN ({ids}) AND p.state <> 'succeeded'",
            d = tables.dependencies,
            c = tables.commands,
            ids = placeholders(candidates.len())
        ),
        &candidates,
    )?;
    let ready: Vec<String> = candidates.into_iter().filter(|c| !waiting.contains(c)).collect();
    if ready.is_empty() {
        return Ok(0);
    }
    let mut query = diesel::sql_query(format!(
        "UPDATE {} SET state = 'pending', updated_at = ? WHERE state = 'blocked' AND id IN ({})",
        tables.commands,
        placeholders(ready.len())
    ))
    .into_boxed::<Sqlite>()
    .bind::<diesel::sql_types::BigInt, _>(now.as_micros());
    for id in &ready {
        query = query.bind::<Text, _>(id.clone());
    }
    query.execute(conn)?;
    let entries = ready
        .iter()
        .map(|id| Ok(NewJournalEntry::unblocked(id.parse()?, now)))
        .collect::<Result<Vec<_>, orch::Error>>()?;
    journal::append(conn, tables, &entries)?;
    Ok(ready.len())
}

/// Cancels every blocked command that depends on `origin`, transitively, because
/// `origin` ended `state` (failed or cancelled).
pub(crate) fn cancel_dependents(
    conn: &mut SqliteConnection,
    tables: &Tables,
    origin: CommandId,
    state: State,
    now: Timestamp,
) -> TxResult<()> {
    let message = dependency_failure_message(origin, state);
    let mut frontier = vec![origin.to_string()];
    while !frontier.is_empty() {
        let dependents = blocked_dependents(conn, tables, &frontier)?;
        if dependents.is_empty() {
            break;
        }
        let mut query = diesel::sql_query(format!(
            "UPDATE {} SET state = 'cancelled', finished_at = ?1, updated_at = ?1, error_kind = 'cancelled', \
             error = ?2, follow_ups_due = 1 WHERE state = 'blocked' AND id IN ({})",
            tables.commands,
            (0..dependents.len()).map(|i| format!("?{}", i + 3)).collect::<Vec<_>>().join(", ")
        ))
        .into_boxed::<Sqlite>()
        .bind::<diesel::sql_types::BigInt, _>(now.as_micros())
        .bind::<Text, _>(message.clone());
        for id in &dependents {
            query = query.bind::<Text, _>(id.clone());
        }
        query.execute(conn)?;
        let entries = dependents
            .iter()
            .map(|id| Ok(NewJournalEntry::dependency_cancelled(id.parse()?, now, origin, state)))
            .collect::<Result<Vec<_>, orch::Error>>()?;
        journal::append(conn, tables, &entries)?;
        frontier = dependents;
    }
    Ok(())
}

/// The steps of a workflow with their edges.
pub(crate) fn workflow_steps(
    conn: &mut SqliteConnection,
    tables: &Tables,
    workflow_id: WorkflowId,
) -> TxResult<Vec<WorkflowStepRecord>> {
    let rows: Vec<CommandRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM {} WHERE workflow_id = ? ORDER BY id",
        tables.commands
    ))
    .bind::<Text, _>(workflow_id.to_string())
    .prepared()
    .load(conn)?;
    let edges: Vec<Edge> = diesel::sql_query(format!(
        "SELECT d.command_id, d.depends_on FROM {d} d JOIN {c} c ON c.id = d.command_id \
         WHERE c.workflow_id = ? ORDER BY d.command_id, d.depends_on",
        d = tables.dependencies,
        c = tables.commands
    ))
    .bind::<Text, _>(workflow_id.to_string())
    .prepared()
    .load(conn)?;
    let mut steps = Vec::with_capacity(rows.len());
    for row in rows {
        let command = row.into_record()?;
        let id = command.id.to_string();
        let depends_on = edges
            .iter()
            .filter(|e| e.command_id == id)
            .map(|e| e.depends_on.parse())
            .collect::<Result<Vec<CommandId>, _>>()?;
        steps.push(WorkflowStepRecord { command, depends_on });
    }
    Ok(steps)
}
