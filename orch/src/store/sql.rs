//! Read statements shared by the SQL backends. Their text is the same in every dialect
//! but for the placeholders, so it is written once here; each backend binds the values
//! with its own column types (a UUID column on PostgreSQL, text elsewhere).

use crate::store::{CommandId, ListOrder, ListParams, State, WorkflowId, WorkflowQuery, WorkflowSummary};
use crate::workflow::WorkflowState;

/// How a dialect writes bind placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// `?` (SQLite, MySQL).
    Question,
    /// `$1`, `$2`, … (PostgreSQL).
    Numbered,
}

/// A value to bind, in placeholder order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    /// A text column.
    Text(String),
    /// A BIGINT column (times in microseconds, counts).
    Int(i64),
    /// A command id column.
    Id(CommandId),
    /// A workflow id column.
    Workflow(WorkflowId),
}

/// A statement and the values of its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlStatement {
    /// The SQL text.
    pub sql: String,
    /// The values, in placeholder order.
    pub binds: Vec<SqlValue>,
}

fn builder(placeholders: Placeholders, sql: String) -> Builder {
    Builder { placeholders, statement: SqlStatement { sql, binds: Vec::new() } }
}

struct Builder {
    placeholders: Placeholders,
    statement: SqlStatement,
}

impl Builder {
    /// Binds `value` and returns its placeholder.
    fn param(&mut self, value: SqlValue) -> String {
        self.statement.binds.push(value);
        match self.placeholders {
            Placeholders::Question => "?".to_owned(),
            Placeholders::Numbered => format!("${}", self.statement.binds.len()),
        }
    }

    fn push(&mut self, sql: &str) {
        self.statement.sql.push_str(sql);
    }

    fn condition(&mut self, template: &str, value: SqlValue) {
        let p = self.param(value);
        self.push(" AND ");
        self.push(&template.replace('?', &p));
    }
}

/// The most rows one [`Store::list`](crate::Store::list) call returns.
pub const LIST_MAX: usize = 10_000;

/// `SELECT columns FROM commands WHERE …filters… ORDER BY …keyset… LIMIT n`.
///
/// `columns` and `commands` are the backend's (already quoted) select list and table.
/// The keyset comparison is written out (`key > k OR (key = k AND id > i)`) rather
/// than as a row value, which MySQL's optimizer does not turn into an index range.
pub fn list(placeholders: Placeholders, columns: &str, commands: &str, p: &ListParams) -> SqlStatement {
    let mut b = builder(placeholders, format!("SELECT {columns} FROM {commands} WHERE 1 = 1"));
    if p.unfinished {
        b.push(" AND state IN ('blocked', 'pending', 'running')");
    }
    if let Some(state) = p.state {
        b.condition("state = ?", SqlValue::Text(state.as_str().to_owned()));
    }
    if let Some(name) = &p.name {
        b.condition("name = ?", SqlValue::Text(name.clone()));
    }
    if let Some(target) = &p.target {
        b.condition("target = ?", SqlValue::Text(target.clone()));
    }
    if let Some(correlation_id) = &p.correlation_id {
        b.condition("correlation_id = ?", SqlValue::Text(correlation_id.clone()));
    }
    if let Some(n) = p.min_attempts {
        b.condition("attempts >= ?", SqlValue::Int(i64::from(n)));
    }
    if let Some(t) = p.created_before {
        b.condition("created_at < ?", SqlValue::Int(t.as_micros()));
    }
    if let Some(t) = p.created_after {
        b.condition("created_at >= ?", SqlValue::Int(t.as_micros()));
    }
    if let Some(text) = &p.error_contains {
        b.condition("LOWER(error) LIKE LOWER(?) ESCAPE '!'", SqlValue::Text(like_pattern(text)));
    }
    if let Some(parent) = p.parent {
        b.condition("parent_id = ?", SqlValue::Id(parent));
    }
    if let Some(workflow) = p.workflow {
        b.condition("workflow_id = ?", SqlValue::Workflow(workflow));
    }
    let (cmp, dir) = if p.descending { ("<", "DESC") } else { (">", "ASC") };
    let key = match p.order {
        ListOrder::Created => None,
        ListOrder::Scheduled => Some("scheduled_at"),
        ListOrder::Attempts => Some("attempts"),
    };
    if let Some(after) = p.after {
        match key {
            None => b.condition(&format!("id {cmp} ?"), SqlValue::Id(after.id)),
            Some(key) => {
                let k1 = b.param(SqlValue::Int(after.key));
                let k2 = b.param(SqlValue::Int(after.key));
                let i = b.param(SqlValue::Id(after.id));
                b.push(&format!(" AND ({key} {cmp} {k1} OR ({key} = {k2} AND id {cmp} {i}))"));
            }
        }
    }
    match key {
        None => b.push(&format!(" ORDER BY id {dir}")),
        Some(key) => b.push(&format!(" ORDER BY {key} {dir}, id {dir}")),
    }
    let limit = if p.limit == 0 { LIST_MAX } else { p.limit.min(LIST_MAX) };
    let l = b.param(SqlValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    b.push(&format!(" LIMIT {l}"));
    b.statement
}

/// `%text%` for `LOWER(column) LIKE LOWER(…) ESCAPE '!'`, with `%`, `_` and `!`
/// escaped. The database folds both sides with the same `LOWER`, so ASCII letters
/// match in any case everywhere and other letters where that `LOWER` folds them
/// (PostgreSQL and MySQL do, SQLite does not).
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Commands counted per (name, target, state) for
/// [`Store::queue_stats`](crate::Store::queue_stats): selects `name`, `target`, `state`,
/// `n`, `due` and `oldest` (BIGINT, `oldest` nullable), one row per group, to fold
/// with [`add_queue_count`](crate::store::backend::add_queue_count).
///
/// One statement, so one snapshot, of two grouped scans that indexes can answer alone:
/// everything not pending from the `(state, name, target)` index, and the pending
/// commands, split into due and later at `now`, from the claim index (which holds
/// pending rows only, where the backend has partial indexes).
pub fn queue_stats(placeholders: Placeholders, commands: &str, now: crate::clock::Timestamp) -> SqlStatement {
    let mut b = builder(placeholders, String::new());
    let p1 = b.param(SqlValue::Int(now.as_micros()));
    let p2 = b.param(SqlValue::Int(now.as_micros()));
    b.push(&format!(
        "SELECT name, target, state, COUNT(*) AS n, 0 AS due, NULL AS oldest \
         FROM {commands} WHERE state <> 'pending' GROUP BY state, name, target \
         UNION ALL \
         SELECT name, target, 'pending' AS state, COUNT(*) AS n, \
         COUNT(CASE WHEN scheduled_at <= {p1} THEN 1 END) AS due, \
         MIN(CASE WHEN scheduled_at <= {p2} THEN scheduled_at END) AS oldest \
         FROM {commands} WHERE state = 'pending' GROUP BY target, name"
    ));
    b.statement
}

/// The columns [`workflows`] selects, in order: `workflow_id`, the six step counts
/// (blocked, pending, running, succeeded, failed, cancelled; BIGINT) and the first
/// `created_at` and last `updated_at` (BIGINT).
pub const WORKFLOW_COLUMNS: [&str; 9] = [
    "workflow_id",
    "blocked",
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "created_at",
    "updated_at",
];

/// A [`WorkflowSummary`] from a row of [`workflows`]: the id, the six counts in
/// [`WORKFLOW_COLUMNS`] order, and the first and last times (microseconds).
pub fn workflow_summary(
    id: WorkflowId,
    counts: [i64; 6],
    created_at: i64,
    updated_at: i64,
) -> WorkflowSummary {
    let [blocked, pending, running, succeeded, failed, cancelled] =
        counts.map(|n| u64::try_from(n).unwrap_or(0));
    WorkflowSummary {
        id,
        blocked,
        pending,
        running,
        succeeded,
        failed,
        cancelled,
        created_at: crate::clock::Timestamp::from_micros(created_at),
        updated_at: crate::clock::Timestamp::from_micros(updated_at),
    }
}

/// The most rows one [`Store::workflows`](crate::Store::workflows) call returns.
pub const WORKFLOWS_MAX: usize = 500;

/// Workflows newest first, their steps counted by state in one grouped scan of the
/// workflow index.
pub fn workflows(placeholders: Placeholders, commands: &str, q: &WorkflowQuery) -> SqlStatement {
    let count = |state: State| format!("COUNT(CASE WHEN state = '{}' THEN 1 END)", state.as_str());
    let unfinished = "COUNT(CASE WHEN state IN ('blocked', 'pending', 'running') THEN 1 END)";
    let not_succeeded = "COUNT(CASE WHEN state <> 'succeeded' THEN 1 END)";
    let mut b = builder(
        placeholders,
        format!(
            "SELECT workflow_id, {} AS blocked, {} AS pending, {} AS running, {} AS succeeded, \
             {} AS failed, {} AS cancelled, MIN(created_at) AS created_at, MAX(updated_at) AS updated_at \
             FROM {commands} WHERE workflow_id IS NOT NULL",
            count(State::Blocked),
            count(State::Pending),
            count(State::Running),
            count(State::Succeeded),
            count(State::Failed),
            count(State::Cancelled),
        ),
    );
    if let Some(before) = q.before {
        b.condition("workflow_id < ?", SqlValue::Workflow(before));
    }
    b.push(" GROUP BY workflow_id");
    match q.state {
        None => {}
        Some(WorkflowState::Running) => b.push(&format!(" HAVING {unfinished} > 0")),
        Some(WorkflowState::Succeeded) => b.push(&format!(" HAVING {not_succeeded} = 0")),
        Some(WorkflowState::Failed) => b.push(&format!(" HAVING {unfinished} = 0 AND {not_succeeded} > 0")),
    }
    let limit = if q.limit == 0 { WORKFLOWS_MAX } else { q.limit.min(WORKFLOWS_MAX) };
    let l = b.param(SqlValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    b.push(&format!(" ORDER BY workflow_id DESC LIMIT {l}"));
    b.statement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::store::ListCursor;

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("Time_out 100%!"), "%Time!_out 100!%!!%");
    }

    #[test]
    fn numbered_placeholders_follow_bind_order() {
        let id = CommandId::generate(Timestamp::from_micros(1));
        let p = ListParams {
            state: Some(State::Failed),
            min_attempts: Some(2),
            order: ListOrder::Attempts,
            descending: true,
            after: Some(ListCursor { key: 3, id }),
            limit: 5,
            ..Default::default()
        };
        let s = list(Placeholders::Numbered, "id", "t", &p);
        assert_eq!(
            s.sql,
            "SELECT id FROM t WHERE 1 = 1 AND state = $1 AND attempts >= $2 AND (attempts < $3 OR \
             (attempts = $4 AND id < $5)) ORDER BY attempts DESC, id DESC LIMIT $6"
        );
        assert_eq!(
            s.binds,
            vec![
                SqlValue::Text("failed".into()),
                SqlValue::Int(2),
                SqlValue::Int(3),
                SqlValue::Int(3),
                SqlValue::Id(id),
                SqlValue::Int(5)
            ]
        );
    }

    #[test]
    fn workflow_state_filters_use_having() {
        let q = WorkflowQuery { state: Some(WorkflowState::Failed), limit: 0, before: None };
        let s = workflows(Placeholders::Question, "c", &q);
        assert!(s.sql.contains("GROUP BY workflow_id HAVING COUNT(CASE WHEN state IN"), "{}", s.sql);
        assert!(s.sql.ends_with("ORDER BY workflow_id DESC LIMIT ?"));
        assert_eq!(s.binds, vec![SqlValue::Int(WORKFLOWS_MAX as i64)]);
    }
}
