//! The schedule cases of the conformance suite: several workers firing one schedule
//! fire each slot once, missed slots follow the schedule's policy, and cron slots
//! across daylight-saving transitions follow the documented rule.

use std::sync::Arc;
use std::time::Duration;

use orch::store::{FireStatus, ListParams, ScheduleFire};
use orch::{
    Context, HandlerError, ManualClock, Missed, NewCommand, Orch, Registry, Schedule, ScheduleRecord, Store,
    Timestamp, Worker, WorkerHandle,
};

use crate::harness::Harness;
use crate::support::{eventually, manual_config};

/// Workers firing the schedule at once in [`schedule_fires_each_slot_once_across_workers`].
pub const SCHEDULE_WORKERS: usize = 3;
/// Slots driven through in it.
pub const SCHEDULE_SLOTS: i64 = 30;

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.unsigned_abs())
}

async fn fired(store: &Arc<dyn Store>, name: &str) -> Vec<Timestamp> {
    let params = ListParams { name: Some(name.into()), limit: 100_000, ..ListParams::default() };
    let mut slots: Vec<Timestamp> =
        store.list(params).await.unwrap().into_iter().map(|r| r.scheduled_at).collect();
    slots.sort();
    slots
}

async fn schedule_of(orch: &Orch, name: &str) -> ScheduleRecord {
    orch.schedules().await.unwrap().into_iter().find(|s| s.name == name).expect("the schedule is stored")
}

/// A command no schedule pushes: the workers' only handler.
#[derive(serde::Serialize, serde::Deserialize)]
struct UnrelatedCommand;

impl orch::Command for UnrelatedCommand {
    type Output = ();
}

/// Starts a worker with no handler for the scheduled commands (they stay pending, to
/// be counted); it fires schedules.
fn start_worker(orch: &Orch, n: usize) -> WorkerHandle {
    let mut registry = Registry::new();
    registry.register_fn(|_: UnrelatedCommand, _ctx: Context| async { Ok::<_, HandlerError>(()) }).unwrap();
    Worker::new(orch.clone(), registry, manual_config(&format!("scheduler-{n}"))).unwrap().start()
}

/// Moves the clock to `at` and waits until a worker has stepped the schedule past it.
async fn drive_to(clock: &ManualClock, orch: &Orch, name: &str, at: Timestamp) -> ScheduleRecord {
    clock.set(at);
    eventually(&format!("schedule {name} stepped past {at}"), || async {
        let record = schedule_of(orch, name).await;
        (record.next_fire > at).then_some(record)
    })
    .await
}

/// Three workers on one manual clock fire a schedule of every second for 30 slots:
/// exactly 30 commands, one per slot, each due at its slot. After an outage, missed
/// slots are skipped (the monitor sees the schedule late first), or folded into one
/// catch-up fire once the policy says so.
pub async fn schedule_fires_each_slot_once_across_workers(h: &dyn Harness) {
    let store = h.store().await;
    let backend = h.backend();
    let t0 = Timestamp::from_millis(1_900_000_000_000);
    let clock = Arc::new(ManualClock::new(t0));
    let orch = Orch::new(Arc::clone(&store)).with_clock(clock.clone());
    let tick = || NewCommand::raw("tick", serde_json::json!({}));
    let schedule = Schedule::every("tick", secs(1), tick()).unwrap().missed_after(Duration::from_millis(500));
    orch.schedule(schedule.clone()).await.unwrap();
    let saved = schedule_of(&orch, "tick").await;
    assert_eq!((saved.next_fire, saved.last_fire, saved.missed), (t0 + secs(1), None, 0), "{backend}");

    let workers: Vec<WorkerHandle> = (0..SCHEDULE_WORKERS).map(|n| start_worker(&orch, n)).collect();
    for i in 1..=SCHEDULE_SLOTS {
        drive_to(&clock, &orch, "tick", t0 + secs(i)).await;
    }
    let expected: Vec<Timestamp> = (1..=SCHEDULE_SLOTS).map(|i| t0 + secs(i)).collect();
    assert_eq!(fired(&store, "tick").await, expected, "{backend}: each slot once");
    let record = schedule_of(&orch, "tick").await;
    assert_eq!(record.last_fire, Some(t0 + secs(SCHEDULE_SLOTS)), "{backend}");
    assert_eq!(record.next_fire, t0 + secs(SCHEDULE_SLOTS + 1), "{backend}");
    assert_eq!(record.missed, 0, "{backend}");
    let last = store.get(record.last_command.expect("the last fire's command")).await.unwrap().unwrap();
    assert_eq!(last.scheduled_at, t0 + secs(SCHEDULE_SLOTS), "{backend}");
    assert_eq!(last.correlation_id, format!("tick@{}", t0 + secs(SCHEDULE_SLOTS)), "{backend}");
    for w in workers {
        w.shutdown().await;
    }

    // Ten minutes with no worker: the schedule is late, then its missed slots are
    // skipped and only the current one fires.
    let down_until = t0 + secs(SCHEDULE_SLOTS + 600);
    clock.set(down_until);
    assert!(schedule_of(&orch, "tick").await.is_late(down_until), "{backend}: flagged late");
    let worker = start_worker(&orch, 9);
    let record = drive_to(&clock, &orch, "tick", down_until).await;
    assert_eq!(record.missed, 599, "{backend}: slots 31..=629 missed");
    assert_eq!(record.last_fire, Some(down_until), "{backend}");
    assert!(!record.is_late(down_until));
    assert_eq!(fired(&store, "tick").await.len(), 31, "{backend}");
    worker.shutdown().await;

    // Saved again with a catch-up policy: same cadence, so the next slot stays. After
    // 100 s down, the latest missed slot fires once for all 99, then the current one.
    let before = schedule_of(&orch, "tick").await;
    orch.schedule(schedule.on_missed(Missed::RunOnce)).await.unwrap();
    let after = schedule_of(&orch, "tick").await;
    assert_eq!(after.next_fire, down_until + secs(1), "{backend}: kept");
    assert_eq!((after.on_missed.as_str(), after.version), ("once", before.version + 1), "{backend}");
    // A step planned from the read before the save changes nothing.
    let stale = ScheduleFire {
        name: "tick".into(),
        expected_next: before.next_fire,
        expected_version: before.version,
        fire: None,
        next_fire: before.next_fire + secs(1),
        missed: 1,
        now: down_until,
    };
    assert_eq!(store.fire_schedule(stale).await.unwrap(), FireStatus::Lost, "{backend}");
    let back = down_until + secs(100);
    clock.set(back);
    let worker = start_worker(&orch, 10);
    let record = drive_to(&clock, &orch, "tick", back).await;
    worker.shutdown().await;
    let slots = fired(&store, "tick").await;
    assert_eq!(slots.len(), 33, "{backend}");
    assert_eq!(&slots[31..], &[back - secs(1), back], "{backend}: one catch-up fire, then the current slot");
    assert_eq!(record.missed, 599 + 98, "{backend}");

    // Removed: nothing fires any more.
    assert!(orch.unschedule("tick").await.unwrap(), "{backend}");
    assert!(!orch.unschedule("tick").await.unwrap(), "{backend}");
    assert!(orch.schedules().await.unwrap().is_empty(), "{backend}");
}

/// A cron schedule at :00 and :30 in New York, driven slot by slot through the 2026
/// spring-forward and fall-back days: a slot in the skipped hour fires once at the
/// end of the gap (where 03:00 also falls), and the repeated hour fires on its first
/// pass only.
pub async fn cron_slots_follow_the_dst_rule(h: &dyn Harness) {
    let store = h.store().await;
    let backend = h.backend();
    let utc = |s: &str| Timestamp::from_micros(s.parse::<jiff::Timestamp>().unwrap().as_microsecond());
    for (day, start, end, expected) in [
        (
            "spring",
            utc("2026-03-08T04:50:00Z"), // 23:50 EST on the 7th
            utc("2026-03-08T08:00:00Z"), // 04:00 EDT
            vec![
                "2026-03-08T05:00:00Z", // 00:00 EST
                "2026-03-08T05:30:00Z", // 00:30 EST
                "2026-03-08T06:00:00Z", // 01:00 EST
                "2026-03-08T06:30:00Z", // 01:30 EST
                "2026-03-08T07:00:00Z", // 02:00 and 02:30 do not exist: the gap's end, 03:00 EDT, once
                "2026-03-08T07:30:00Z", // 03:30 EDT
                "2026-03-08T08:00:00Z", // 04:00 EDT
            ],
        ),
        (
            "fall",
            utc("2026-11-01T03:50:00Z"), // 23:50 EDT on Oct 31
            utc("2026-11-01T08:00:00Z"), // 03:00 EST
            vec![
                "2026-11-01T04:00:00Z", // 00:00 EDT
                "2026-11-01T04:30:00Z", // 00:30 EDT
                "2026-11-01T05:00:00Z", // 01:00 EDT (first pass)
                "2026-11-01T05:30:00Z", // 01:30 EDT; 01:00 and 01:30 EST do not fire again
                "2026-11-01T07:00:00Z", // 02:00 EST
                "2026-11-01T07:30:00Z", // 02:30 EST
                "2026-11-01T08:00:00Z", // 03:00 EST
            ],
        ),
    ] {
        let clock = Arc::new(ManualClock::new(start));
        let orch = Orch::new(Arc::clone(&store)).with_clock(clock.clone());
        let name = format!("half-hourly-{day}");
        let command = NewCommand::raw(name.clone(), serde_json::json!({}));
        let schedule =
            Schedule::cron(name.clone(), "0 0,30 * * * *", command).unwrap().in_zone("America/New_York");
        orch.schedule(schedule.unwrap()).await.unwrap();
        let worker = start_worker(&orch, 0);
        loop {
            let next = schedule_of(&orch, &name).await.next_fire;
            if next > end {
                break;
            }
            drive_to(&clock, &orch, &name, next).await;
        }
        worker.shutdown().await;
        let expected: Vec<Timestamp> = expected.into_iter().map(utc).collect();
        assert_eq!(fired(&store, &name).await, expected, "{backend}: {day}");
        assert_eq!(schedule_of(&orch, &name).await.missed, 0, "{backend}: {day}");
    }
}
