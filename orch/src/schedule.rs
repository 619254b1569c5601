//! Recurring commands: a [`Schedule`] pushes a command at every slot of a cron
//! expression or a fixed interval.
//!
//! Schedules are stored ([`Orch::schedule`](crate::Orch::schedule)), and every running
//! [`Worker`](crate::Worker) fires the ones that are due: it reads the schedule, and in
//! one transaction moves its next slot on *only if it is still the one it read*
//! (compare-and-set on the stored row) and inserts the slot's command. However many
//! workers run, in however many processes, one of them wins each slot and the others
//! change nothing, so each slot fires exactly once; the database decides, not a leader
//! that could be split. A slot also fires only if it is later than the latest fired
//! slot, so redefining a schedule can never fire a slot twice.
//!
//! # Slots
//!
//! - [`Schedule::every`]: slots are the multiples of the period since the Unix epoch
//!   (every minute fires at each whole minute UTC), counted in real time, so daylight
//!   saving time does not move them.
//! - [`Schedule::cron`]: slots are the wall-clock times matching the expression in the
//!   schedule's time zone ([`Schedule::in_zone`], UTC by default); see [`crate::cron`]
//!   for the syntax. On a daylight-saving transition, a wall time that does not exist
//!   (clocks spring forward) fires at the end of the gap, once however many slots fell
//!   in it; a wall time that happens twice (clocks fall back) fires at its first
//!   occurrence only.
//!
//! A slot's command is due at the slot (plus the command's delay) and its correlation
//! id is `schedule name@slot` unless the command sets one.
//!
//! # Missed slots
//!
//! A slot fires late as long as it is at most [`Schedule::missed_after`] (default
//! [`DEFAULT_MISSED_AFTER`], one minute) behind; a worker that was busy or restarting
//! fires every such slot, once each. Slots further behind, as after an outage with no
//! worker running, are missed, and [`Missed`] says what happens to them: skipped (the
//! default), or folded into one catch-up fire of the latest missed slot. Either way the
//! stored count of missed slots grows, and the monitor shows it, along with a schedule
//! whose next slot is overdue.
//!
//! ```
//! use std::time::Duration;
//! use orch::{Missed, NewCommand, Schedule};
//! # fn demo() -> orch::Result<()> {
//! let coordinate = NewCommand::raw("coordinate_services", serde_json::json!({}));
//! let every_minute = Schedule::every("coordinate", Duration::from_secs(60), coordinate)?;
//! let nightly = Schedule::cron("nightly-report", "0 30 2 * * *", NewCommand::raw("report", serde_json::json!({})))?
//!     .in_zone("Europe/Berlin")?
//!     .on_missed(Missed::RunOnce);
//! # let _ = (every_minute, nightly); Ok(()) }
//! ```

use std::time::Duration;

use crate::clock::Timestamp;
use crate::command::{CommandSpec, NewCommand};
use crate::cron::{CronExpr, next_fire};
use crate::error::{Error, Result};
use crate::store::{FireStatus, ScheduleFire, ScheduleRecord, Store};

/// How late a slot may fire before it counts as missed, by default.
pub const DEFAULT_MISSED_AFTER: Duration = Duration::from_secs(60);

/// The longest name of a schedule, in bytes.
pub const MAX_SCHEDULE_NAME_BYTES: usize = 200;

/// Slots one firing round counts through before it jumps to the present (after a very
/// long outage of a very frequent schedule).
const MAX_SLOTS_COUNTED: u64 = 100_000;

/// What happens to slots that were missed (more than [`Schedule::missed_after`] behind
/// when a worker got to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Missed {
    /// Missed slots do not fire; the schedule goes on from the next slot that is not
    /// missed. The default.
    #[default]
    Skip,
    /// The latest missed slot fires once, standing for all of them; then the schedule
    /// goes on.
    RunOnce,
}

impl Missed {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::RunOnce => "once",
        }
    }

    /// From the stored form.
    pub fn parse(s: &str) -> Result<Missed> {
        match s {
            "skip" => Ok(Missed::Skip),
            "once" => Ok(Missed::RunOnce),
            other => Err(Error::Corrupt(format!("unknown missed-slot policy {other:?}"))),
        }
    }
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// Wall-clock slots of a cron expression in a time zone.
    Cron {
        /// The expression.
        expr: CronExpr,
        /// The zone's IANA name.
        zone_name: String,
        /// The zone.
        zone: jiff::tz::TimeZone,
    },
    /// Every multiple of a period since the Unix epoch.
    Every(Duration),
}

impl Cadence {
    /// The first slot strictly after `t`, if any (a cron expression that matches no
    /// time in the next 8 years has none).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Cadence::Cron { expr, zone, .. } => {
                next_fire(expr, zone, t.as_micros()).map(Timestamp::from_micros)
            }
            Cadence::Every(period) => {
                let p = i64::try_from(period.as_micros()).ok()?;
                let next = t.as_micros().div_euclid(p).checked_add(1)?.checked_mul(p)?;
                Some(Timestamp::from_micros(next))
            }
        }
    }

    /// The stored form of the cadence and its zone.
    pub fn stored(&self) -> (String, String) {
        match self {
            Cadence::Cron { expr, zone_name, .. } => (format!("cron {expr}"), zone_name.clone()),
            Cadence::Every(period) => (format!("every {}", period.as_micros()), "UTC".to_owned()),
        }
    }

    /// From the stored form.
    pub fn parse(cadence: &str, zone: &str) -> Result<Cadence> {
        if let Some(expr) = cadence.strip_prefix("cron ") {
            let expr = CronExpr::parse(expr).map_err(|e| Error::Corrupt(e.to_string()))?;
            let tz = crate::cron::zone(zone).map_err(|e| Error::Corrupt(e.to_string()))?;
            return Ok(Cadence::Cron { expr, zone_name: zone.to_owned(), zone: tz });
        }
        if let Some(micros) = cadence.strip_prefix("every ") {
            let micros: u64 =
                micros.parse().map_err(|_| Error::Corrupt(format!("invalid stored cadence {cadence:?}")))?;
            if micros == 0 {
                return Err(Error::Corrupt(format!("invalid stored cadence {cadence:?}")));
            }
            return Ok(Cadence::Every(Duration::from_micros(micros)));
        }
        Err(Error::Corrupt(format!("invalid stored cadence {cadence:?}")))
    }
}

/// A recurring command: a name, a cadence, the command each slot pushes and what to do
/// with missed slots. Saved with [`Orch::schedule`](crate::Orch::schedule).
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    cadence: Cadence,
    command: NewCommand,
    on_missed: Missed,
    missed_after: Duration,
}

impl Schedule {
    /// A schedule firing at the wall-clock times matching a cron expression (six fields
    /// with seconds, or five), in UTC until [`Schedule::in_zone`] says otherwise.
    pub fn cron(name: impl Into<String>, expression: &str, command: NewCommand) -> Result<Schedule> {
        let expr = CronExpr::parse(expression).map_err(|e| Error::invalid_config(e.to_string()))?;
        let zone = jiff::tz::TimeZone::UTC;
        Schedule::new(name.into(), Cadence::Cron { expr, zone_name: "UTC".into(), zone }, command)
    }

    /// A schedule firing at every multiple of `period` since the Unix epoch (at least
    /// one millisecond).
    pub fn every(name: impl Into<String>, period: Duration, command: NewCommand) -> Result<Schedule> {
        let name = name.into();
        if period < Duration::from_millis(1) {
            return Err(Error::invalid_config(format!(
                "period {period:?} of schedule `{name}` is shorter than a millisecond"
            )));
        }
        Schedule::new(name, Cadence::Every(period), command)
    }

    fn new(name: String, cadence: Cadence, command: NewCommand) -> Result<Schedule> {
        if name.is_empty() || name.len() > MAX_SCHEDULE_NAME_BYTES || name.trim() != name {
            return Err(Error::invalid_config(format!(
                "schedule name {name:?} must have 1 to {MAX_SCHEDULE_NAME_BYTES} bytes and no leading or \
                 trailing whitespace"
            )));
        }
        command.check_no_unique_key("pushed by a schedule (each slot fires once already)")?;
        // Checked now, so a schedule whose command could never be pushed is refused
        // when it is saved rather than at every slot.
        command.clone_spec_checked(Timestamp::EPOCH)?;
        Ok(Schedule { name, cadence, command, on_missed: Missed::Skip, missed_after: DEFAULT_MISSED_AFTER })
    }

    /// Reads the cron expression's wall-clock times in this IANA time zone (such as
    /// `Europe/Berlin`). Interval schedules count real time and have no zone.
    pub fn in_zone(mut self, zone: &str) -> Result<Schedule> {
        match &mut self.cadence {
            Cadence::Cron { zone_name, zone: tz, .. } => {
                *tz = crate::cron::zone(zone).map_err(|e| Error::invalid_config(e.to_string()))?;
                *zone_name = zone.to_owned();
                Ok(self)
            }
            Cadence::Every(_) => Err(Error::invalid_config(format!(
                "schedule `{}` fires at a fixed interval, which no time zone changes",
                self.name
            ))),
        }
    }

    /// What happens to missed slots (default [`Missed::Skip`]).
    pub fn on_missed(mut self, policy: Missed) -> Schedule {
        self.on_missed = policy;
        self
    }

    /// How late a slot may still fire before it counts as missed (default
    /// [`DEFAULT_MISSED_AFTER`]).
    pub fn missed_after(mut self, late: Duration) -> Schedule {
        self.missed_after = late;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The record to save at `now`: the next slot is the first after `now`.
    pub(crate) fn to_record(&self, now: Timestamp) -> Result<ScheduleRecord> {
        let next_fire = self.cadence.next_after(now).ok_or_else(|| {
            Error::invalid_config(format!("schedule `{}` has no slot in the next 8 years", self.name))
        })?;
        let (cadence, zone) = self.cadence.stored();
        let spec = self.command.to_spec()?;
        let command = serde_json::to_string(&spec).map_err(|source| Error::Encode {
            what: format!("command of schedule `{}`", self.name),
            source,
        })?;
        Ok(ScheduleRecord {
            name: self.name.clone(),
            cadence,
            zone,
            command,
            on_missed: self.on_missed.as_str().to_owned(),
            missed_after: self.missed_after,
            next_fire,
            last_fire: None,
            last_command: None,
            missed: 0,
            created_at: now,
            updated_at: now,
            version: 0,
        })
    }
}

/// What one step of a schedule does at `now`, given its next slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// The slot to fire, if any.
    pub(crate) fire: Option<Timestamp>,
    /// The schedule's next slot afterwards (`None`: it has no more slots).
    pub(crate) next: Option<Timestamp>,
    /// Slots counted as missed.
    pub(crate) missed: u64,
}

/// Plans the step of a schedule whose next slot `next` is due at `now` (`next <= now`).
pub(crate) fn plan(
    cadence: &Cadence,
    policy: Missed,
    missed_after: Duration,
    next: Timestamp,
    now: Timestamp,
) -> Step {
    let cutoff = now - missed_after;
    if next >= cutoff {
        // On time (or late within the allowance): fire it.
        return Step { fire: Some(next), next: cadence.next_after(next), missed: 0 };
    }
    // Count the missed slots (before the cutoff), remembering the latest.
    let mut latest_missed = next;
    let mut missed: u64 = 1;
    let mut slot = cadence.next_after(next);
    while let Some(s) = slot {
        if s >= cutoff {
            break;
        }
        if missed >= MAX_SLOTS_COUNTED {
            // Too many to count one by one: find the latest slot before the cutoff by
            // bisection, and go on from the one after it.
            latest_missed = latest_before(cadence, s, cutoff);
            slot = cadence.next_after(latest_missed);
            break;
        }
        latest_missed = s;
        missed += 1;
        slot = cadence.next_after(s);
    }
    match policy {
        Missed::Skip => Step { fire: None, next: slot, missed },
        Missed::RunOnce => Step { fire: Some(latest_missed), next: slot, missed: missed - 1 },
    }
}

/// The latest slot before `cutoff`, given that `from` is a slot before it: bisects for
/// the latest instant whose next slot is still before the cutoff (the next slot never
/// goes down as the instant grows), in about 64 steps however many slots lie between.
fn latest_before(cadence: &Cadence, from: Timestamp, cutoff: Timestamp) -> Timestamp {
    let before_cutoff = |t: i64| cadence.next_after(Timestamp::from_micros(t)).is_some_and(|n| n < cutoff);
    // `lo` always has its next slot before the cutoff, `hi` never.
    let (mut lo, mut hi) = (from.as_micros() - 1, cutoff.as_micros());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if before_cutoff(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    cadence.next_after(Timestamp::from_micros(lo)).unwrap_or(from)
}

/// Fires the due slots of every stored schedule at `now`, one step per transaction.
/// Returns the earliest next slot of any schedule, to sleep until.
pub(crate) async fn fire_due(store: &dyn Store, now: Timestamp) -> Result<Option<Timestamp>> {
    let mut earliest: Option<Timestamp> = None;
    for record in store.schedules().await? {
        let name = record.name.clone();
        match fire_one(store, record, now).await {
            Ok(next) => earliest = Some(earliest.map_or(next, |e| e.min(next))),
            Err(e) => tracing::warn!(schedule = %name, error = %e, "firing the schedule failed; will retry"),
        }
    }
    Ok(earliest)
}

/// Steps one schedule until its next slot is in the future or another worker steps it.
/// Returns when to look again: its next slot, or now when another worker stepped it.
async fn fire_one(store: &dyn Store, record: ScheduleRecord, now: Timestamp) -> Result<Timestamp> {
    let cadence = Cadence::parse(&record.cadence, &record.zone)?;
    let policy = Missed::parse(&record.on_missed)?;
    let spec: CommandSpec = serde_json::from_str(&record.command)
        .map_err(|e| Error::Corrupt(format!("invalid command of schedule `{}`: {e}", record.name)))?;
    let mut next = record.next_fire;
    let mut version = record.version;
    while next <= now {
        let step = plan(&cadence, policy, record.missed_after, next, now);
        let after = step.next.unwrap_or_else(|| {
            tracing::warn!(schedule = %record.name, "the schedule has no more slots");
            Timestamp::from_micros(i64::MAX)
        });
        let fire = match step.fire {
            None => None,
            Some(slot) => Some((slot, slot_command(&record.name, &spec, slot, now)?)),
        };
        let params = ScheduleFire {
            name: record.name.clone(),
            expected_next: next,
            expected_version: version,
            fire,
            next_fire: after,
            missed: step.missed,
            now,
        };
        match store.fire_schedule(params).await? {
            FireStatus::Fired(id) => {
                tracing::info!(schedule = %record.name, slot = %step.fire.unwrap_or(next), command = %id, "schedule fired");
            }
            FireStatus::Skipped if step.fire.is_some() => {
                tracing::debug!(schedule = %record.name, next = %after, "slot fired already; moved on");
            }
            FireStatus::Skipped => {
                tracing::warn!(schedule = %record.name, missed = step.missed, next = %after, "missed slots skipped");
            }
            // Another worker stepped it: look again at once, from what it stored.
            FireStatus::Lost => return Ok(now),
        }
        if step.missed > 0 && step.fire.is_some() {
            tracing::warn!(schedule = %record.name, missed = step.missed, "missed slots folded into one catch-up fire");
        }
        next = after;
        version += 1;
    }
    Ok(next)
}

/// The command a slot pushes: due at the slot (plus its delay), correlated by the
/// schedule and slot unless the command sets its own correlation id.
fn slot_command(
    schedule: &str,
    spec: &CommandSpec,
    slot: Timestamp,
    now: Timestamp,
) -> Result<crate::store::InsertCommand> {
    let command = NewCommand::from_spec(spec.clone()).correlation_id_if_unset(&format!("{schedule}@{slot}"));
    let delay = command.delay;
    let mut row = command.into_insert(now, None)?;
    row.scheduled_at = slot + delay;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_micros(secs * 1_000_000)
    }

    #[test]
    fn interval_slots_are_multiples_of_the_period() {
        let c = Cadence::Every(Duration::from_secs(60));
        assert_eq!(c.next_after(at(0)), Some(at(60)));
        assert_eq!(c.next_after(at(59)), Some(at(60)));
        assert_eq!(c.next_after(at(60)), Some(at(120)));
        let (cadence, zone) = c.stored();
        assert!(
            matches!(Cadence::parse(&cadence, &zone).unwrap(), Cadence::Every(d) if d == Duration::from_secs(60))
        );
    }

    #[test]
    fn on_time_and_late_slots_fire_and_missed_ones_follow_the_policy() {
        let c = Cadence::Every(Duration::from_secs(10));
        let grace = Duration::from_secs(60);
        // Due now: fires.
        assert_eq!(
            plan(&c, Missed::Skip, grace, at(100), at(100)),
            Step { fire: Some(at(100)), next: Some(at(110)), missed: 0 }
        );
        // 50 s late, within the allowance: fires the slot, the next one follows.
        assert_eq!(
            plan(&c, Missed::Skip, grace, at(100), at(150)),
            Step { fire: Some(at(100)), next: Some(at(110)), missed: 0 }
        );
        // Down from 100 to 1000: slots before 940 are missed (100..=930: 84 slots).
        assert_eq!(
            plan(&c, Missed::Skip, grace, at(100), at(1000)),
            Step { fire: None, next: Some(at(940)), missed: 84 }
        );
        assert_eq!(
            plan(&c, Missed::RunOnce, grace, at(100), at(1000)),
            Step { fire: Some(at(930)), next: Some(at(940)), missed: 83 }
        );
    }

    #[test]
    fn a_very_long_outage_is_counted_up_to_the_cap_then_jumped() {
        let c = Cadence::Every(Duration::from_millis(1));
        let step = plan(&c, Missed::Skip, Duration::ZERO, at(0), at(1_000));
        assert_eq!(step.fire, None);
        assert_eq!(step.next, Some(at(1_000)));
        assert_eq!(step.missed, MAX_SLOTS_COUNTED);
        // The catch-up fire is the latest missed slot, a millisecond before the cutoff.
        let step = plan(&c, Missed::RunOnce, Duration::ZERO, at(0), at(1_000));
        assert_eq!(step.fire, Some(at(1_000) - Duration::from_millis(1)));
        assert_eq!(step.next, Some(at(1_000)));
        // The same for a cron schedule of every second, two days down.
        let cron = Cadence::Cron {
            expr: CronExpr::parse("* * * * * *").unwrap(),
            zone_name: "UTC".into(),
            zone: jiff::tz::TimeZone::UTC,
        };
        let step = plan(&cron, Missed::RunOnce, Duration::from_secs(60), at(0), at(172_800));
        assert_eq!(step.fire, Some(at(172_800 - 61)));
        assert_eq!(step.next, Some(at(172_800 - 60)));
    }

    #[test]
    fn bad_definitions_are_refused() {
        let cmd = || NewCommand::raw("x", serde_json::json!({}));
        assert!(matches!(Schedule::cron("s", "61 * * * * *", cmd()), Err(Error::InvalidConfig(_))));
        assert!(matches!(Schedule::every("s", Duration::ZERO, cmd()), Err(Error::InvalidConfig(_))));
        assert!(matches!(Schedule::every("", Duration::from_secs(1), cmd()), Err(Error::InvalidConfig(_))));
        assert!(matches!(
            Schedule::every("tick ", Duration::from_secs(1), cmd()),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Schedule::cron("s", "* * * * * *", cmd()).unwrap().in_zone("Mars/Olympus"),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Schedule::every("s", Duration::from_secs(1), cmd()).unwrap().in_zone("UTC"),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Schedule::every("s", Duration::from_secs(1), cmd().unique_key("k")),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Schedule::every("s", Duration::from_secs(1), cmd().target("")),
            Err(Error::InvalidConfig(_))
        ));
    }
}
