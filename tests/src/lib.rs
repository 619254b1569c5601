//! Cross-backend proof for `orch`.
//!
//! - [`harness`]: hands out isolated stores of one backend;
//! - [`conformance`]: the suite every backend must pass, written once against the
//!   `Store` trait and the public API;
//! - [`property`]: a model-based property test of the lifecycle under a manual clock.
//!
//! A backend's test file runs everything with one macro call:
//!
//! ```ignore
//! mod sqlite {
//!     orch_tests::conformance_suite!(Some(orch_tests::harness::SqliteHarness::new()));
//! }
//! ```
//! which produces tests named `sqlite::claim_is_exclusive` and so on.

pub mod conformance;
pub mod harness;
pub mod property;
pub mod support;

/// Expands to one `#[tokio::test]` per conformance case (and the property test) for the
/// harness that `$make` evaluates to; `$make` is an `Option<H>` where `None` means the
/// backend is unavailable and the tests skip (the harness prints why).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_cases!(
            $make;
            claim_is_exclusive,
            stale_lease_changes_nothing,
            retries_then_failure_follow_ups,
            backoff_delays_next_attempt,
            timeout_cancels_and_retries,
            delayed_command_waits,
            target_routing,
            success_follow_ups_commit_with_success,
            cancel_defaults_to_failure_follow_ups,
            undecodable_input_fails_at_once,
            unknown_name_stays_pending,
            expired_lease_is_rescued,
            invalid_prefix_is_rejected,
            prefixes_are_isolated,
            journal_records_every_step,
            wait_reports_statuses,
            unstorable_follow_up_fails_the_command,
            shutdown_releases_unfinished,
        );

        #[test]
        fn lifecycle_property() {
            let Some(harness) = $make else { return };
            $crate::property::run(::std::sync::Arc::new(harness), 256);
        }
    };
}

/// Implementation detail of [`conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_cases {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(harness) = $make else { return };
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
}
