//! Fills a store with demo work and keeps workers running, to watch in `orch-tui`.
//!
//! ```text
//! cargo xtask demo                                   # sqlite://target/demo.db
//! cargo xtask demo --url postgres://postgres@127.0.0.1/test
//! cargo run -p orch-tui -- sqlite://target/demo.db   # in another terminal
//! ```
//!
//! Options: `--url U` (default `sqlite://target/demo.db`), `--prefix P` (default
//! `orch_`), `--scale N` (rounds of initial work, default 40), `--workers N` (default
//! 2), `--once` (fill, let the workers settle the due work, stop: a still picture).
//! Ctrl-C stops the workers (their running commands finish or are released).

use std::time::Duration;

use orch::{Orch, Store};
use orch_tui::demo;
use orch_tui::source::Source;

struct Options {
    source: Source,
    scale: u64,
    workers: usize,
    once: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        source: Source { url: "sqlite://target/demo.db".into(), prefix: "orch_".into() },
        scale: 40,
        workers: 2,
        once: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => o.source.url = value()?,
            "--prefix" => o.source.prefix = value()?,
            "--scale" => o.scale = value()?.parse().map_err(|e| format!("--scale: {e}"))?,
            "--workers" => o.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--once" => o.once = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let store = demo::open_for_writing(&o.source).await?;
    let orch = Orch::new(store.clone());
    let filled = demo::fill(&orch, o.scale).await?;
    println!("pushed {} commands into {}", filled.commands, o.source.redacted());
    let workers = demo::start_workers(&orch, o.workers)?;
    if o.once {
        settle(store.as_ref()).await?;
    } else {
        println!(
            "{} workers running; watch with:\n  cargo run -p orch-tui -- {}",
            o.workers,
            o.source.redacted()
        );
        println!("Ctrl-C stops them.");
        tokio::select! {
            result = demo::trickle(orch.clone(), Duration::from_millis(700)) => result?,
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    for w in workers {
        w.shutdown().await;
    }
    println!("workers stopped");
    Ok(())
}

/// Waits until nothing the demo workers can run is due or running (the delayed
/// reports, the webhook's backoff and the warehouse work stay), at most a minute.
async fn settle(store: &dyn Store) -> Result<(), orch::Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = orch::Clock::now(&orch::SystemClock);
        let busy: u64 = store
            .queue_stats(now)
            .await?
            .iter()
            .filter(|s| s.target == "default")
            .map(|s| s.due + s.running + s.blocked)
            .sum();
        if busy == 0 || tokio::time::Instant::now() > deadline {
            println!("settled ({busy} still due or running)");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
