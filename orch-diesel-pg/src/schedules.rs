//! The schedules table: recurring commands and where each stands.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orch::store::backend::{ScheduleStep, millis, schedule_record};
use orch::store::{FireStatus, ScheduleFire, ScheduleRecord};

use crate::commands;
use crate::{Tables, TxResult};

#[derive(QueryableByName)]
struct ScheduleRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    cadence: String,
    #[diesel(sql_type = Text)]
    zone: String,
    #[diesel(sql_type = Text)]
    command: String,
    #[diesel(sql_type = Text)]
    on_missed: String,
    #[diesel(sql_type = BigInt)]
    missed_after_ms: i64,
    #[diesel(sql_type = BigInt)]
    next_fire: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_fire: Option<i64>,
    #[diesel(sql_type = Nullable<Uuid>)]
    last_command: Option<uuid::Uuid>,
    #[diesel(sql_type = BigInt)]
    missed: i64,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = BigInt)]
    updated_at: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

const COLUMNS: &str = "name, cadence, zone, command, on_missed, missed_after_ms, next_fire, last_fire, \
                       last_command, missed, created_at, updated_at, version";

impl ScheduleRow {
    fn into_record(self) -> orch::Result<ScheduleRecord> {
        schedule_record(
            self.name,
            self.cadence,
            self.zone,
            self.command,
            self.on_missed,
            self.missed_after_ms,
            self.next_fire,
            self.last_fire,
            self.last_command.map(|id| id.hyphenated().to_string()),
            self.missed,
            self.created_at,
            self.updated_at,
            self.version,
        )
    }
}

/// Inserts the schedule or updates its definition in one statement; the stored next
/// slot stays unless the cadence or zone changed.
pub(crate) async fn save(conn: &mut AsyncPgConnection, tables: &Tables, r: &ScheduleRecord) -> TxResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO {t} AS s ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, 0, $8, $9, 0) \
         ON CONFLICT (name) DO UPDATE SET \
         next_fire = CASE WHEN s.cadence <> EXCLUDED.cadence OR s.zone <> EXCLUDED.zone \
         THEN EXCLUDED.next_fire ELSE s.next_fire END, \
         cadence = EXCLUDED.cadence, zone = EXCLUDED.zone, command = EXCLUDED.command, \
         on_missed = EXCLUDED.on_missed, missed_after_ms = EXCLUDED.missed_after_ms, \
         updated_at = EXCLUDED.updated_at, version = s.version + 1",
        t = tables.schedules
    ))
    .bind::<Text, _>(&r.name)
    .bind::<Text, _>(&r.cadence)
    .bind::<Text, _>(&r.zone)
    .bind::<Text, _>(&r.command)
    .bind::<Text, _>(&r.on_missed)
    .bind::<BigInt, _>(millis(r.missed_after))
    .bind::<BigInt, _>(r.next_fire.as_micros())
    .bind::<BigInt, _>(r.created_at.as_micros())
    .bind::<BigInt, _>(r.updated_at.as_micros())
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn remove(conn: &mut AsyncPgConnection, tables: &Tables, name: &str) -> TxResult<bool> {
    let removed = diesel::sql_query(format!("DELETE FROM {} WHERE name = $1", tables.schedules))
        .bind::<Text, _>(name)
        .execute(conn)
        .await?;
    Ok(removed == 1)
}

pub(crate) async fn list(conn: &mut AsyncPgConnection, tables: &Tables) -> TxResult<Vec<ScheduleRecord>> {
    let rows: Vec<ScheduleRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM {} ORDER BY name", tables.schedules))
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(ScheduleRow::into_record).collect::<orch::Result<_>>()?)
}

/// Applies one step of a schedule inside the caller's transaction. The row is read
/// with `FOR UPDATE`: a concurrent step waits for this one to commit and then reads
/// the moved-on next slot, so it changes nothing.
pub(crate) async fn fire(
    conn: &mut AsyncPgConnection,
    tables: &Tables,
    f: &ScheduleFire,
) -> TxResult<FireStatus> {
    let rows: Vec<ScheduleRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM {} WHERE name = $1 FOR UPDATE", tables.schedules))
            .bind::<Text, _>(&f.name)
            .load(conn)
            .await?;
    let stored = rows.into_iter().next().map(|r| (r.next_fire, r.last_fire, r.version));
    let fired = match ScheduleStep::decide(stored, f) {
        ScheduleStep::Lost => return Ok(FireStatus::Lost),
        ScheduleStep::Advance => None,
        ScheduleStep::Fire(slot, command) => {
            let ids = commands::insert(conn, tables, std::slice::from_ref(command)).await?;
            Some((slot, ids[0]))
        }
    };
    diesel::sql_query(format!(
        "UPDATE {} SET next_fire = $1, last_fire = COALESCE($2, last_fire), \
         last_command = COALESCE($3, last_command), missed = missed + $4, updated_at = $5, version = version + 1 WHERE name = $6",
        tables.schedules
    ))
    .bind::<BigInt, _>(f.next_fire.as_micros())
    .bind::<Nullable<BigInt>, _>(fired.map(|(slot, _)| slot.as_micros()))
    .bind::<Nullable<Uuid>, _>(fired.map(|(_, id)| id.as_uuid()))
    .bind::<BigInt, _>(i64::try_from(f.missed).unwrap_or(i64::MAX))
    .bind::<BigInt, _>(f.now.as_micros())
    .bind::<Text, _>(&f.name)
    .execute(conn)
    .await?;
    Ok(fired.map_or(FireStatus::Skipped, |(_, id)| FireStatus::Fired(id)))
}
