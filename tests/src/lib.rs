//! Cross-backend proof for `orch`.
//!
//! - [`harness`]: hands out isolated stores of one backend;
//! - [`conformance`]: the suite every backend must pass, written once against the
//!   `Store` trait and the public API;
//! - [`property`]: a model-based property test of the lifecycle under a manual clock;
//! - [`multiprocess`]: worker processes (`orch-test-worker`) sharing one database;
//! - [`chaos`]: worker processes killed and paused under load, and the checker of what
//!   they left;
//! - [`wake`]: idle workers woken by pushes, and pushes inside a caller's transaction.
//!
//! A backend's test file runs everything with one macro call:
//!
//! ```ignore
//! mod sqlite {
//!     orch_tests::conformance_suite!(Some(orch_tests::harness::SqliteHarness::new()));
//! }
//! ```
//! which produces tests named `sqlite::claim_is_exclusive` and so on.

pub mod bench;
pub mod chaos;
pub mod conformance;
pub mod conformance_monitor;
pub mod conformance_sagas;
pub mod conformance_schedules;
pub mod conformance_unique;
pub mod conformance_workflows;
pub mod crash;
pub mod encryption;
pub mod harness;
pub mod multiprocess;
pub mod privilege;
pub mod property;
pub mod server;
pub mod skew;
pub mod support;
pub mod wake;

/// Expands to one `#[tokio::test]` per conformance case (and the property test) for the
/// harness that `$make` evaluates to; `$make` is an `Option<H>` where `None` means the
/// backend is unavailable and the tests skip (the harness prints why). Attributes after
/// the harness (such as a `cfg_attr(…, ignore = "…")`) are put on every test.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::conformance_suite!(@cases 256, $make $(, #[$attr])*);
    };
    (property_cases = $cases:expr, $make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::conformance_suite!(@cases $cases, $make $(, #[$attr])*);
    };
    (@cases $cases:expr, $make:expr $(, #[$attr:meta])*) => {
        $crate::conformance_cases!(
            $make, [$(#[$attr])*];
            claim_is_exclusive,
            stale_lease_changes_nothing,
            retries_then_failure_follow_ups,
            backoff_delays_next_attempt,
            timeout_cancels_and_retries,
            poison_handlers_spare_the_worker,
            delayed_command_waits,
            claims_follow_priority,
            pause_holds_back_claims_until_resumed,
            retention_prunes_only_old_finished_commands,
            unique_key_admits_one_of_concurrent_pushes,
            unique_key_holds_while_unfinished_or_for_its_period,
            schedule_fires_each_slot_once_across_workers,
            cron_slots_follow_the_dst_rule,
            target_routing,
            success_follow_ups_commit_with_success,
            cancel_defaults_to_failure_follow_ups,
            undecodable_input_fails_at_once,
            malformed_rows_fail_alone,
            oversized_inputs_are_refused_at_push,
            unknown_name_stays_pending,
            expired_lease_is_rescued,
            invalid_prefix_is_rejected,
            prefixes_are_isolated,
            journal_records_every_step,
            wait_reports_statuses,
            unstorable_follow_up_fails_the_command,
            shutdown_releases_unfinished,
            held_commands_wait_for_a_slot,
            held_command_with_lapsed_lease_does_not_start,
            batched_successes_are_fenced,
            dependencies_are_pushed_together,
            list_finds_unfinished,
            cancel_request_wins_over_retry,
            workers_are_recorded,
            queue_stats_count_by_state,
            retry_runs_failed_commands_again,
            retry_waits_for_dependencies,
            workflow_runs_in_dependency_order,
            workflow_steps_run_concurrently,
            workflow_failure_cancels_dependents,
            workflow_cancel_stops_unfinished,
            workflow_builder_rejections,
            saga_order_completes,
            saga_order_refunds_when_inventory_fails,
            saga_compensations_run_last_first,
            saga_failed_compensation_is_visible,
            saga_concurrent_events_apply_in_order,
            saga_timeout_compensates,
            saga_events_reach_only_their_saga,
            list_filters_sort_and_page,
            workflows_are_summarized,
            monitor_counts_match_sql,
        );

        #[test]
        $(#[$attr])*
        fn lifecycle_property() {
            let Some(harness) = $make else { return };
            $crate::property::run(::std::sync::Arc::new(harness), $cases);
        }
    };
}

/// Implementation detail of [`conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_cases {
    ($make:expr, $attrs:tt; $($case:ident),* $(,)?) => {
        $( $crate::conformance_case!($make, $attrs, $case); )*
    };
}

/// Implementation detail of [`conformance_suite!`]: one case.
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_case {
    ($make:expr, [$(#[$attr:meta])*], $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $case() {
            let Some(harness) = $make else { return };
            $crate::conformance::$case(&harness).await;
        }
    };
}
