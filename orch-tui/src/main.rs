//! `orch-tui <url>`: the live monitor; `orch-tui snapshot --json <url>` and
//! `orch-tui check <url> …` for scripts. See `orch-tui --help`.

use std::process::ExitCode;

use orch_tui::cli::{self, Cli, USAGE};
use orch_tui::headless;

/// Exit code for a command line that does not parse.
const EXIT_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("orch-tui: {e}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli {
        Cli::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Cli::Version => {
            println!("orch-tui {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Cli::Snapshot { source } => match headless::snapshot(&source).await {
            Ok(overview) => {
                println!("{}", serde_json::to_string_pretty(&overview).expect("overview serializes"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("orch-tui: cannot read {}: {e}", source.redacted());
                ExitCode::from(headless::EXIT_UNREACHABLE as u8)
            }
        },
        Cli::Check { source, thresholds } => {
            let report = headless::check(&source, &thresholds).await;
            for line in &report.lines {
                println!("{line}");
            }
            ExitCode::from(report.code as u8)
        }
        Cli::Monitor { source, refresh, allow_writes } => {
            match orch_tui::run::run(source, refresh, allow_writes).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("orch-tui: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
