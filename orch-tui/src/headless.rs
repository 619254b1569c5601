//! The modes for scripts: `snapshot --json` and `check`.

use std::time::Duration;

use orch::{Clock, SystemClock};

use crate::cli::Thresholds;
use crate::data::{OverviewJson, Query, load};
use crate::filter::short_duration;
use crate::source::Source;

/// Exit code: every threshold holds.
pub const EXIT_OK: i32 = 0;
/// Exit code: a threshold is exceeded.
pub const EXIT_THRESHOLD: i32 = 1;
/// Exit code: the store could not be read.
pub const EXIT_UNREACHABLE: i32 = 2;

/// How long `snapshot` and `check` wait for the store before giving up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the overview once (an error after [`READ_TIMEOUT`]).
pub async fn snapshot(source: &Source) -> Result<OverviewJson, orch::Error> {
    let backend = source.backend()?.name();
    let read = async {
        let store = source.open().await?;
        let snapshot = load(store.as_ref(), &Query::default(), SystemClock.now()).await?;
        Ok(OverviewJson::of(backend, &snapshot))
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.unwrap_or_else(|_| {
        Err(orch::Error::backend(backend, format!("no answer within {}", short_duration(READ_TIMEOUT))))
    })
}

/// What `check` found: its exit code and one line per finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// 0, 1 or 2.
    pub code: i32,
    /// What was found.
    pub lines: Vec<String>,
}

/// Compares the queue with the thresholds.
pub async fn check(source: &Source, thresholds: &Thresholds) -> CheckReport {
    let overview = match snapshot(source).await {
        Ok(o) => o,
        Err(e) => {
            return CheckReport {
                code: EXIT_UNREACHABLE,
                lines: vec![format!("cannot read {}: {e}", source.redacted())],
            };
        }
    };
    let mut failures = Vec::new();
    if let Some(max) = thresholds.max_failed
        && overview.counts.failed > max
    {
        failures.push(format!("{} failed commands, more than {max}", overview.counts.failed));
    }
    if let (Some(max), Some(age_ms)) = (thresholds.max_pending_age, overview.oldest_pending_age_ms) {
        let age = std::time::Duration::from_millis(age_ms);
        if age > max {
            failures.push(format!(
                "the oldest due pending command has waited {}, more than {}",
                short_duration(age),
                short_duration(max)
            ));
        }
    }
    let summary = format!(
        "{} commands: {} pending, {} running, {} failed; oldest due pending {}",
        overview.total,
        overview.counts.pending,
        overview.counts.running,
        overview.counts.failed,
        overview
            .oldest_pending_age_ms
            .map_or("none".to_owned(), |ms| short_duration(std::time::Duration::from_millis(ms)))
    );
    if failures.is_empty() {
        CheckReport { code: EXIT_OK, lines: vec![format!("OK: {summary}")] }
    } else {
        let mut lines: Vec<String> = failures.into_iter().map(|f| format!("FAIL: {f}")).collect();
        lines.push(summary);
        CheckReport { code: EXIT_THRESHOLD, lines }
    }
}
