//! The live monitor on a terminal: a loader task reads snapshots in the background
//! and sends them over a channel, a thread reads keys, and the loop in between only
//! draws and handles keys, so a slow or dead database never freezes the screen.

use std::sync::Arc;
use std::time::Duration;

use orch::{CancelStatus, Clock, Orch, RetryStatus, Store, SystemClock};
use ratatui::crossterm::event::{self, Event};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::app::{App, Effect, Level, Write};
use crate::data::{Query, Snapshot, load};
use crate::filter::short_duration;
use crate::source::{Access, Source};

/// What the loader needs to know from the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// What to read.
    pub query: Query,
    /// Time between automatic refreshes.
    pub refresh: Duration,
    /// No automatic refreshes (asked-for ones still run).
    pub paused: bool,
}

/// What the UI asks of the loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Read a snapshot now.
    Reload,
    /// Carry out a confirmed write, then read.
    Write(Write),
}

/// What the loader sends back.
#[derive(Debug, Clone)]
pub enum Update {
    /// A new snapshot.
    Snapshot(Box<Snapshot>),
    /// A refresh (or the connection) failed; the loader keeps trying.
    Failed(String),
    /// The outcome of a write.
    Wrote(Level, String),
}

/// Runs the monitor until the user quits; the terminal is restored on every exit path
/// (including panics).
pub async fn run(source: Source, refresh: Duration, allow_writes: bool) -> Result<(), String> {
    let backend = source.backend().map_err(|e| e.to_string())?;
    let mut app = App::new(backend.name(), source.redacted(), refresh, allow_writes);
    let (control_tx, control_rx) = watch::channel(Control { query: app.query(), refresh, paused: false });
    let (request_tx, request_rx) = mpsc::unbounded_channel();
    let (update_tx, mut updates) = mpsc::unbounded_channel();
    let loader = tokio::spawn(loader(source, allow_writes, control_rx, request_rx, update_tx));

    let (key_tx, mut keys) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if key_tx.send(ev).is_err() {
                break;
            }
        }
    });

    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    // ratatui's hook restores the terminal on a panic; this one also ends the loop, so
    // nothing is drawn on a terminal that is no longer in raw mode.
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let previous_hook = std::panic::take_hook();
    let flag = Arc::clone(&panicked);
    std::panic::set_hook(Box::new(move |info| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        previous_hook(info);
    }));
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let result = loop {
        if panicked.load(std::sync::atomic::Ordering::SeqCst) {
            break Err("stopped after a panic".to_owned());
        }
        if let Ok(size) = terminal.size() {
            app.viewport = (size.width, size.height);
        }
        if let Err(e) = terminal.draw(|f| crate::ui::draw(f, &app, SystemClock.now())) {
            break Err(format!("cannot draw: {e}"));
        }
        tokio::select! {
            ev = keys.recv() => {
                let Some(ev) = ev else { break Ok(()) };
                if let Event::Key(key) = ev {
                    let effect = app.on_key(key);
                    // A changed query reaches the loader through the watch channel, which
                    // makes it read at once; an explicit reload is only for an unchanged one.
                    let changed = control_tx.send_if_modified(|c| {
                        let next = Control { query: app.query(), refresh: app.refresh, paused: app.paused };
                        let changed = *c != next;
                        *c = next;
                        changed
                    });
                    match effect {
                        Effect::Quit => break Ok(()),
                        Effect::Reload if !changed => {
                            let _ = request_tx.send(Request::Reload);
                        }
                        Effect::Write(write) => {
                            let _ = request_tx.send(Request::Write(write));
                        }
                        Effect::Reload | Effect::None => {}
                    }
                }
            }
            _ = terminate.recv() => break Ok(()),
            _ = hangup.recv() => break Ok(()),
            update = updates.recv() => match update {
                Some(Update::Snapshot(s)) => app.on_snapshot(*s),
                Some(Update::Failed(e)) => app.on_error(e),
                Some(Update::Wrote(level, message)) => app.message = Some((level, message)),
                None => break Err("the loader stopped".to_owned()),
            },
            _ = tick.tick() => {}
        }
    };
    ratatui::restore();
    // Later panics (none expected) go to the default hook again.
    let _ = std::panic::take_hook();
    loader.abort();
    result
}

/// Opens the store (again after a failure), then reads a snapshot at every interval
/// (unless paused), when asked, or when the query changes, until the UI's channels
/// close. A failed read is reported and retried at the next interval; the store's pool
/// reconnects by itself once the database is back.
pub async fn loader(
    source: Source,
    allow_writes: bool,
    mut control: watch::Receiver<Control>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    updates: mpsc::UnboundedSender<Update>,
) {
    let mut store: Option<Arc<dyn Store>> = None;
    let mut forced = true;
    loop {
        let Control { query, refresh, paused } = control.borrow_and_update().clone();
        let limit = read_limit(refresh);
        if forced || !paused {
            if store.is_none() {
                match timeout(limit, source.open_with(Access::allowing_writes(allow_writes))).await {
                    Ok(Ok(s)) => store = Some(s),
                    Ok(Err(e)) => {
                        if updates.send(Update::Failed(e.to_string())).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let message = format!("connecting timed out after {}", short_duration(limit));
                        if updates.send(Update::Failed(message)).is_err() {
                            return;
                        }
                    }
                }
            }
            if let Some(s) = &store {
                let update = match timeout(limit, load(s.as_ref(), &query, SystemClock.now())).await {
                    Ok(Ok(snapshot)) => Update::Snapshot(Box::new(snapshot)),
                    Ok(Err(e)) => Update::Failed(e.to_string()),
                    Err(_) => {
                        // A server that stopped answering: start over with a new pool.
                        store = None;
                        Update::Failed(format!("refresh timed out after {}", short_duration(limit)))
                    }
                };
                if updates.send(update).is_err() {
                    return;
                }
            }
        }
        forced = false;
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            changed = control.changed() => {
                if changed.is_err() {
                    return;
                }
                forced = true;
            }
            request = requests.recv() => match request {
                None => return,
                Some(Request::Reload) => forced = true,
                Some(Request::Write(write)) => {
                    let (level, message) = match (&store, allow_writes) {
                        (Some(s), true) => match timeout(limit, perform(Arc::clone(s), write)).await {
                            Ok(done) => done,
                            Err(_) => (Level::Error, "the write timed out; check whether it happened".to_owned()),
                        },
                        (None, _) => (Level::Error, "not connected; nothing was changed".to_owned()),
                        (_, false) => (Level::Error, "read-only monitor; nothing was changed".to_owned()),
                    };
                    if updates.send(Update::Wrote(level, message)).is_err() {
                        return;
                    }
                    forced = true;
                }
            },
        }
    }
}

/// How long one refresh (or a connection attempt) may take before it counts as failed:
/// two intervals, at least 5 s.
pub fn read_limit(refresh: Duration) -> Duration {
    (refresh * 2).max(Duration::from_secs(5))
}

/// Carries out a confirmed write through the library's client.
pub async fn perform(store: Arc<dyn Store>, write: Write) -> (Level, String) {
    let orch = Orch::new(store);
    match write {
        Write::Retry(id) => match orch.retry(id).await {
            Ok(RetryStatus::Retried) => (Level::Info, format!("{id} will run again")),
            Ok(RetryStatus::NotRetryable(state)) => (Level::Error, format!("{id} is {state}; not retried")),
            Ok(RetryStatus::NotFound) => (Level::Error, format!("{id} no longer exists")),
            Err(e) => (Level::Error, format!("retry failed: {e}")),
        },
        Write::Cancel(id) => match orch.cancel(id).await {
            Ok(CancelStatus::Cancelled) => (Level::Info, format!("{id} cancelled")),
            Ok(CancelStatus::Requested) => (Level::Info, format!("cancellation of running {id} requested")),
            Ok(other) => (Level::Error, format!("{id} not cancelled: {other:?}")),
            Err(e) => (Level::Error, format!("cancel failed: {e}")),
        },
    }
}
