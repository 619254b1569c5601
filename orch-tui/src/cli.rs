//! Command-line arguments.

use std::time::Duration;

use crate::filter::parse_duration;
use crate::source::Source;

/// The usage text.
pub const USAGE: &str = "\
orch-tui: a live terminal monitor for orch queues

USAGE:
    orch-tui [OPTIONS] <URL>                      the live monitor
    orch-tui snapshot --json [OPTIONS] <URL>      print the overview counts as JSON
    orch-tui check [OPTIONS] <URL> [--max-pending-age D] [--max-failed N]
                                                  exit 0 (ok), 1 (threshold exceeded), 2 (cannot read)

URL:  postgres://user:pass@host/db   mysql://user:pass@host/db   sqlite://path/to/file.db

OPTIONS:
    --prefix P          table prefix (default orch_)
    --refresh D         time between refreshes (default 1s; e.g. 500ms, 2s, 1m)
    --allow-writes      let R retry and C cancel the selected command (after a confirmation)
    -h, --help          this text
    -V, --version       the version
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cli {
    /// The live monitor.
    Monitor {
        /// The store.
        source: Source,
        /// Time between refreshes.
        refresh: Duration,
        /// Whether `R` and `C` may write.
        allow_writes: bool,
    },
    /// `snapshot --json`.
    Snapshot {
        /// The store.
        source: Source,
    },
    /// `check`.
    Check {
        /// The store.
        source: Source,
        /// Thresholds.
        thresholds: Thresholds,
    },
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// What `check` compares the queue against; absent thresholds are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Thresholds {
    /// The oldest due pending command may not have waited longer than this.
    pub max_pending_age: Option<Duration>,
    /// At most this many failed commands.
    pub max_failed: Option<u64>,
}

/// The default table prefix.
pub const DEFAULT_PREFIX: &str = "orch_";
/// The default time between refreshes.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
    let mut args = args.into_iter().peekable();
    let mode = match args.peek().map(String::as_str) {
        Some("snapshot") | Some("check") => args.next(),
        _ => None,
    };
    let mut url = None;
    let mut prefix = DEFAULT_PREFIX.to_owned();
    let mut refresh = DEFAULT_REFRESH;
    let mut allow_writes = false;
    let mut json = false;
    let mut thresholds = Thresholds::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Cli::Help),
            "-V" | "--version" => return Ok(Cli::Version),
            "--prefix" => prefix = value("--prefix")?,
            "--refresh" => {
                let v = value("--refresh")?;
                refresh = parse_duration(&v).map_err(|e| format!("--refresh: {e}"))?;
                let (min, max) = crate::app::REFRESH_RANGE;
                if refresh < min || refresh > max {
                    return Err(format!("--refresh must be between {min:?} and {max:?}, not {refresh:?}"));
                }
            }
            "--allow-writes" => allow_writes = true,
            "--json" => json = true,
            "--max-pending-age" => {
                let v = value("--max-pending-age")?;
                thresholds.max_pending_age =
                    Some(parse_duration(&v).map_err(|e| format!("--max-pending-age: {e}"))?);
            }
            "--max-failed" => {
                let v = value("--max-failed")?;
                thresholds.max_failed =
                    Some(v.parse().map_err(|_| format!("--max-failed: {v:?} is not a whole number"))?);
            }
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(format!("unknown option {other}"));
            }
            _ if url.is_none() => url = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let url = url.ok_or("a store URL is required")?;
    orch::TablePrefix::new(&prefix).map_err(|e| format!("--prefix: {e}"))?;
    let source = Source { url, prefix };
    source.backend().map_err(|e| e.to_string())?;
    let only_monitor = |used: bool, name: &str| {
        if used { Err(format!("{name} applies to the live monitor only")) } else { Ok(()) }
    };
    match mode.as_deref() {
        Some("snapshot") => {
            only_monitor(allow_writes, "--allow-writes")?;
            if !json {
                return Err("snapshot prints JSON: add --json".into());
            }
            if thresholds != Thresholds::default() {
                return Err("--max-* thresholds apply to check only".into());
            }
            Ok(Cli::Snapshot { source })
        }
        Some("check") => {
            only_monitor(allow_writes, "--allow-writes")?;
            Ok(Cli::Check { source, thresholds })
        }
        _ => {
            if json {
                return Err("--json applies to `snapshot` only".into());
            }
            if thresholds != Thresholds::default() {
                return Err("--max-* thresholds apply to `check` only".into());
            }
            Ok(Cli::Monitor { source, refresh, allow_writes })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn monitor_defaults() {
        let cli = parse(args("sqlite://q.db")).unwrap();
        assert_eq!(
            cli,
            Cli::Monitor {
                source: Source { url: "sqlite://q.db".into(), prefix: "orch_".into() },
                refresh: Duration::from_secs(1),
                allow_writes: false
            }
        );
        let cli = parse(args("--prefix=app_ --refresh 500ms --allow-writes postgres://u@h/db")).unwrap();
        assert!(
            matches!(cli, Cli::Monitor { refresh, allow_writes: true, .. } if refresh == Duration::from_millis(500))
        );
    }

    #[test]
    fn headless_modes() {
        assert!(matches!(parse(args("snapshot --json mysql://r@h/t")).unwrap(), Cli::Snapshot { .. }));
        let cli = parse(args("check sqlite://q.db --max-pending-age 60s --max-failed 10")).unwrap();
        let Cli::Check { thresholds, .. } = cli else { panic!("{cli:?}") };
        assert_eq!(thresholds.max_pending_age, Some(Duration::from_secs(60)));
        assert_eq!(thresholds.max_failed, Some(10));
    }

    #[test]
    fn clear_errors() {
        assert_eq!(parse(args("")).unwrap_err(), "a store URL is required");
        assert!(parse(args("snapshot sqlite://q.db")).unwrap_err().contains("--json"));
        assert!(parse(args("--prefix x;drop sqlite://q.db")).unwrap_err().contains("--prefix"));
        assert!(parse(args("--refresh 10ms sqlite://q.db")).unwrap_err().contains("between"));
        assert!(parse(args("--bogus sqlite://q.db")).unwrap_err().contains("unknown option --bogus"));
        assert!(parse(args("redis://h")).unwrap_err().contains("unsupported"));
        assert!(parse(args("check --max-failed x sqlite://q.db")).unwrap_err().contains("whole number"));
    }
}
