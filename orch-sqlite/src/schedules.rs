//! The schedules table: recurring commands and where each stands.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{OptionalExtension, QueryableByName, RunQueryDsl, SqliteConnection};
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
    #[diesel(sql_type = Nullable<Text>)]
    last_command: Option<String>,
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
            self.last_command,
            self.missed,
            self.created_at,
            self.updated_at,
            self.version,
        )
    }
}

/// Inserts the schedule or updates its definition; the stored next slot stays unless
/// the cadence or zone changed.
pub(crate) fn save(conn: &mut SqliteConnection, tables: &Tables, r: &ScheduleRecord) -> TxResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO {t} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, ?, ?, 0) \
         ON CONFLICT (name) DO UPDATE SET \
         next_fire = CASE WHEN {t}.cadence <> excluded.cadence OR {t}.zone <> excluded.zone \
         THEN excluded.next_fire ELSE {t}.next_fire END, \
         cadence = excluded.cadence, zone = excluded.zone, command = excluded.command, \
         on_missed = excluded.on_missed, missed_after_ms = excluded.missed_after_ms, \
         updated_at = excluded.updated_at, version = {t}.version + 1",
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
    .execute(conn)?;
    Ok(())
}

pub(crate) fn remove(conn: &mut SqliteConnection, tables: &Tables, name: &str) -> TxResult<bool> {
    let removed = diesel::sql_query(format!("DELETE FROM {} WHERE name = ?", tables.schedules))
        .bind::<Text, _>(name)
        .execute(conn)?;
    Ok(removed == 1)
}

pub(crate) fn list(conn: &mut SqliteConnection, tables: &Tables) -> TxResult<Vec<ScheduleRecord>> {
    let rows: Vec<ScheduleRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM {} ORDER BY name", tables.schedules)).load(conn)?;
    Ok(rows.into_iter().map(ScheduleRow::into_record).collect::<orch::Result<_>>()?)
}

/// Applies one step of a schedule inside the caller's write transaction, which no
/// other writer can enter between the check and the change.
pub(crate) fn fire(conn: &mut SqliteConnection, tables: &Tables, f: &ScheduleFire) -> TxResult<FireStatus> {
    let row: Option<ScheduleRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM {} WHERE name = ?", tables.schedules))
            .bind::<Text, _>(&f.name)
            .get_result(conn)
            .optional()?;
    let fired = match ScheduleStep::decide(row.map(|r| (r.next_fire, r.last_fire, r.version)), f) {
        ScheduleStep::Lost => return Ok(FireStatus::Lost),
        ScheduleStep::Advance => None,
        ScheduleStep::Fire(slot, command) => {
            let ids = commands::insert(conn, tables, std::slice::from_ref(command))?;
            Some((slot, ids[0]))
        }
    };
    diesel::sql_query(format!(
        "UPDATE {} SET next_fire = ?, last_fire = COALESCE(?, last_fire), \
         last_command = COALESCE(?, last_command), missed = missed + ?, updated_at = ?, version = version + 1 WHERE name = ?",
        tables.schedules
    ))
    .bind::<BigInt, _>(f.next_fire.as_micros())
    .bind::<Nullable<BigInt>, _>(fired.map(|(slot, _)| slot.as_micros()))
    .bind::<Nullable<Text>, _>(fired.map(|(_, id)| id.to_string()))
    .bind::<BigInt, _>(i64::try_from(f.missed).unwrap_or(i64::MAX))
    .bind::<BigInt, _>(f.now.as_micros())
    .bind::<Text, _>(&f.name)
    .execute(conn)?;
    Ok(fired.map_or(FireStatus::Skipped, |(_, id)| FireStatus::Fired(id)))
}
