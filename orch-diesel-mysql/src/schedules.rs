//! The schedules table: recurring commands and where each stands.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};
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

/// Inserts the schedule or updates its definition in one statement; the stored next
/// slot stays unless the cadence or zone changed. MySQL applies the assignments left
/// to right, so `next_fire` is decided first, against the old cadence and zone.
pub(crate) async fn save(
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    r: &ScheduleRecord,
) -> TxResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO {t} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, ?, ?, 0) \
         ON DUPLICATE KEY UPDATE \
         next_fire = IF(cadence <> VALUES(cadence) OR zone <> VALUES(zone), VALUES(next_fire), next_fire), \
         cadence = VALUES(cadence), zone = VALUES(zone), command = VALUES(command), \
         on_missed = VALUES(on_missed), missed_after_ms = VALUES(missed_after_ms), \
         updated_at = VALUES(updated_at), version = version + 1",
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

pub(crate) async fn remove(conn: &mut AsyncMysqlConnection, tables: &Tables, name: &str) -> TxResult<bool> {
    let removed = diesel::sql_query(format!("DELETE FROM {} WHERE name = ?", tables.schedules))
        .bind::<Text, _>(name)
        .execute(conn)
        .await?;
    Ok(removed == 1)
}

pub(crate) async fn list(conn: &mut AsyncMysqlConnection, tables: &Tables) -> TxResult<Vec<ScheduleRecord>> {
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
    conn: &mut AsyncMysqlConnection,
    tables: &Tables,
    f: &ScheduleFire,
) -> TxResult<FireStatus> {
    let rows: Vec<ScheduleRow> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM {} WHERE name = ? FOR UPDATE", tables.schedules))
            .bind::<Text, _>(&f.name)
            .load(conn)
            .await?;
    let stored = rows.into_iter().next().map(|r| (r.next_fire, r.last_fire, r.version));
    let fired = match ScheduleStep::decide(stored, f) {
        ScheduleStep::Lost => return Ok(FireStatus::Lost),
        ScheduleStep::Advance => None,
        ScheduleStep::Fire(slot, command) => {
            commands::insert(conn, tables, &[command]).await?;
            Some((slot, command.id))
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
    .execute(conn)
    .await?;
    Ok(fired.map_or(FireStatus::Skipped, |(_, id)| FireStatus::Fired(id)))
}
