//! The monitor's state and its keymap. Keys become [`Action`]s through [`KEYMAP`]
//! alone, and [`App::handle`] turns actions into state changes and [`Effect`]s for the
//! runtime to carry out, so all of it is tested without a terminal.

use std::collections::VecDeque;
use std::time::Duration;

use orch::store::{ListCursor, ListOrder};
use orch::{CommandId, State, Timestamp, WorkflowId, WorkflowState};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::data::{CommandPage, Detail, ListQuery, Query, Snapshot, StateCounts};
use crate::filter::Filter;

/// The views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Counts, latency, throughput.
    Overview,
    /// One row per name and target.
    Names,
    /// The command list.
    Commands,
    /// One command.
    Detail,
    /// Worker processes.
    Workers,
    /// Workflows and sagas.
    Flows,
}

impl View {
    /// Every view, in tab order.
    pub const ALL: [View; 6] =
        [View::Overview, View::Names, View::Commands, View::Detail, View::Workers, View::Flows];

    /// The tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Names => "Names",
            View::Commands => "Commands",
            View::Detail => "Detail",
            View::Workers => "Workers",
            View::Flows => "Workflows & sagas",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Show a view.
    Show(View),
    /// Next view.
    NextView,
    /// Previous view.
    PrevView,
    /// Toggle the help screen.
    Help,
    /// Leave.
    Quit,
    /// Selection up.
    Up,
    /// Selection down.
    Down,
    /// First row.
    Top,
    /// Last row.
    Bottom,
    /// Previous page.
    PageUp,
    /// Next page.
    PageDown,
    /// Edit the command filter.
    Filter,
    /// Clear the filter, close help, go back from the detail.
    Clear,
    /// Open the selected command or workflow.
    Open,
    /// Refresh now.
    Refresh,
    /// Pause or resume updates.
    Pause,
    /// Refresh more often.
    Faster,
    /// Refresh less often.
    Slower,
    /// Next sort key of the command list.
    Sort,
    /// Reverse the command list's order.
    Reverse,
    /// Retry the selected failed or cancelled command.
    Retry,
    /// Cancel the selected command.
    Cancel,
}

/// One key of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character, typed as is.
    Char(char),
    /// A character with Ctrl.
    Ctrl(char),
    /// A special key.
    Code(KeyCode),
}

impl Key {
    /// How the help screen writes it.
    pub fn label(self) -> String {
        match self {
            Key::Char(' ') => "Space".into(),
            Key::Char(c) => c.to_string(),
            Key::Ctrl(c) => format!("Ctrl-{}", c.to_ascii_uppercase()),
            Key::Code(KeyCode::Up) => "↑".into(),
            Key::Code(KeyCode::Down) => "↓".into(),
            Key::Code(KeyCode::Left) => "←".into(),
            Key::Code(KeyCode::Right) => "→".into(),
            Key::Code(KeyCode::PageUp) => "PgUp".into(),
            Key::Code(KeyCode::PageDown) => "PgDn".into(),
            Key::Code(KeyCode::Home) => "Home".into(),
            Key::Code(KeyCode::End) => "End".into(),
            Key::Code(KeyCode::Enter) => "Enter".into(),
            Key::Code(KeyCode::Esc) => "Esc".into(),
            Key::Code(KeyCode::Tab) => "Tab".into(),
            Key::Code(KeyCode::BackTab) => "Shift-Tab".into(),
            Key::Code(other) => format!("{other:?}"),
        }
    }

    /// The key event it stands for.
    pub fn event(self) -> KeyEvent {
        match self {
            Key::Char(c) if c.is_ascii_uppercase() => KeyEvent::new(KeyCode::Char(c), KeyModifiers::SHIFT),
            Key::Char(c) => KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE),
            Key::Ctrl(c) => KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL),
            Key::Code(KeyCode::BackTab) => KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT),
            Key::Code(code) => KeyEvent::new(code, KeyModifiers::NONE),
        }
    }

    fn matches(self, event: &KeyEvent) -> bool {
        let ctrl = event.modifiers.contains(KeyModifiers::CONTROL);
        match (self, event.code) {
            (Key::Char(c), KeyCode::Char(e)) => !ctrl && c == e,
            (Key::Ctrl(c), KeyCode::Char(e)) => ctrl && c.eq_ignore_ascii_case(&e),
            (Key::Code(c), code) => c == code,
            _ => false,
        }
    }
}

/// Keys, the action they trigger, and what the help screen says of it.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// The keys (any of them).
    pub keys: &'static [Key],
    /// The action.
    pub action: Action,
    /// The help text.
    pub help: &'static str,
}

/// Every key the monitor knows (outside filter editing and confirmations).
pub const KEYMAP: &[Binding] = &[
    Binding { keys: &[Key::Char('1')], action: Action::Show(View::Overview), help: "overview" },
    Binding { keys: &[Key::Char('2')], action: Action::Show(View::Names), help: "names and targets" },
    Binding { keys: &[Key::Char('3')], action: Action::Show(View::Commands), help: "command list" },
    Binding { keys: &[Key::Char('4')], action: Action::Show(View::Detail), help: "command detail" },
    Binding { keys: &[Key::Char('5')], action: Action::Show(View::Workers), help: "workers" },
    Binding { keys: &[Key::Char('6')], action: Action::Show(View::Flows), help: "workflows and sagas" },
    Binding { keys: &[Key::Code(KeyCode::Tab)], action: Action::NextView, help: "next view" },
    Binding { keys: &[Key::Code(KeyCode::BackTab)], action: Action::PrevView, help: "previous view" },
    Binding { keys: &[Key::Char('j'), Key::Code(KeyCode::Down)], action: Action::Down, help: "move down" },
    Binding { keys: &[Key::Char('k'), Key::Code(KeyCode::Up)], action: Action::Up, help: "move up" },
    Binding { keys: &[Key::Char('g'), Key::Code(KeyCode::Home)], action: Action::Top, help: "first row" },
    Binding { keys: &[Key::Char('G'), Key::Code(KeyCode::End)], action: Action::Bottom, help: "last row" },
    Binding { keys: &[Key::Code(KeyCode::PageUp)], action: Action::PageUp, help: "previous page" },
    Binding { keys: &[Key::Code(KeyCode::PageDown)], action: Action::PageDown, help: "next page" },
    Binding { keys: &[Key::Code(KeyCode::Enter)], action: Action::Open, help: "open command or workflow" },
    Binding { keys: &[Key::Char('/')], action: Action::Filter, help: "filter commands" },
    Binding { keys: &[Key::Code(KeyCode::Esc)], action: Action::Clear, help: "clear filter, back" },
    Binding { keys: &[Key::Char('s')], action: Action::Sort, help: "sort (3), state filter (6)" },
    Binding { keys: &[Key::Char('o')], action: Action::Reverse, help: "reverse sort order" },
    Binding { keys: &[Key::Char('r')], action: Action::Refresh, help: "refresh now" },
    Binding { keys: &[Key::Char('p')], action: Action::Pause, help: "pause / resume updates" },
    Binding { keys: &[Key::Char('+')], action: Action::Faster, help: "refresh faster" },
    Binding { keys: &[Key::Char('-')], action: Action::Slower, help: "refresh slower" },
    Binding { keys: &[Key::Char('R')], action: Action::Retry, help: "retry (--allow-writes)" },
    Binding { keys: &[Key::Char('C')], action: Action::Cancel, help: "cancel (--allow-writes)" },
    Binding { keys: &[Key::Char('?')], action: Action::Help, help: "help" },
    Binding { keys: &[Key::Char('q'), Key::Ctrl('c')], action: Action::Quit, help: "quit" },
];

/// The action bound to `event`, if any.
pub fn action_for(event: &KeyEvent) -> Option<Action> {
    KEYMAP.iter().find(|b| b.keys.iter().any(|k| k.matches(event))).map(|b| b.action)
}

/// A write the monitor can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Run a failed or cancelled command again.
    Retry(CommandId),
    /// Cancel a command.
    Cancel(CommandId),
}

/// What the runtime must do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond redrawing.
    None,
    /// Read a new snapshot now (the query changed or a refresh was asked for).
    Reload,
    /// Carry out a confirmed write, then reload.
    Write(Write),
    /// Restore the terminal and exit.
    Quit,
}

/// What keys do right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Keys go through the keymap.
    Normal,
    /// Typing the filter; Enter applies, Esc abandons.
    Filter(String),
    /// Waiting for `y` to confirm a write.
    Confirm(Write),
}

/// How serious a status message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Information.
    Info,
    /// Something went wrong.
    Error,
}

/// The slowest and fastest refresh.
pub const REFRESH_RANGE: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(60));
const REFRESH_STEPS: [u64; 8] = [250, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000];
/// How many snapshots' totals the throughput sparklines keep.
pub const HISTORY: usize = 4096;
const PAGE_ROWS: usize = 50;
const JUMP: usize = 10;

/// The monitor's whole state.
#[derive(Debug, Clone)]
pub struct App {
    /// Backend name for the header.
    pub backend: &'static str,
    /// The redacted URL for the header.
    pub url: String,
    /// The view on screen.
    pub view: View,
    /// Whether the help screen is open.
    pub help: bool,
    /// Key mode.
    pub mode: Mode,
    /// Time between refreshes.
    pub refresh: Duration,
    /// Automatic refreshes paused (moving between views still reads).
    pub paused: bool,
    /// `R` and `C` allowed.
    pub allow_writes: bool,
    /// The last snapshot read.
    pub snapshot: Option<Snapshot>,
    /// The error of the last refresh, if it failed.
    pub refresh_error: Option<String>,
    /// Change of each count since the previous snapshot.
    pub deltas: Option<[i64; 7]>,
    /// (time, succeeded, failed) of every snapshot since the monitor started (the
    /// newest [`HISTORY`]), from which throughput per refresh interval is computed.
    pub samples: VecDeque<(Timestamp, u64, u64)>,
    /// Selected row per view.
    pub selected: [usize; 6],
    /// The command list query.
    pub list: ListQuery,
    /// The filter as typed.
    pub filter_text: String,
    /// Start cursors of the pages before the current one.
    pub pages: Vec<Option<ListCursor>>,
    /// The command whose detail is open.
    pub detail: Option<CommandId>,
    /// Scroll offset of the detail.
    pub detail_scroll: u16,
    /// The workflow whose steps are shown.
    pub workflow: Option<WorkflowId>,
    /// Only workflows and sagas in this state (view 6).
    pub flow_state: Option<WorkflowState>,
    /// The terminal's size (width, height), for scrolling the detail.
    pub viewport: (u16, u16),
    /// A status line message.
    pub message: Option<(Level, String)>,
}

impl App {
    /// A monitor with nothing read yet.
    pub fn new(backend: &'static str, url: String, refresh: Duration, allow_writes: bool) -> Self {
        App {
            backend,
            url,
            view: View::Overview,
            help: false,
            mode: Mode::Normal,
            refresh,
            paused: false,
            allow_writes,
            snapshot: None,
            refresh_error: None,
            deltas: None,
            samples: VecDeque::new(),
            selected: [0; 6],
            list: ListQuery { descending: true, limit: PAGE_ROWS, ..Default::default() },
            filter_text: String::new(),
            pages: Vec::new(),
            detail: None,
            detail_scroll: 0,
            workflow: None,
            flow_state: None,
            viewport: (80, 24),
            message: None,
        }
    }

    /// What the next refresh should read.
    pub fn query(&self) -> Query {
        Query {
            list: matches!(self.view, View::Commands).then(|| self.list.clone()),
            detail: if self.view == View::Detail { self.detail } else { None },
            flows: self.view == View::Flows,
            flow_state: self.flow_state,
            workflow: if self.view == View::Flows { self.workflow } else { None },
        }
    }

    /// Takes a new snapshot: deltas against the previous one, totals for throughput.
    pub fn on_snapshot(&mut self, snapshot: Snapshot) {
        if let Some(previous) = &self.snapshot {
            let before = previous.overview.counts.labelled();
            let after = snapshot.overview.counts.labelled();
            let mut deltas = [0i64; 7];
            for (i, d) in deltas.iter_mut().enumerate() {
                *d = i64::try_from(after[i].1).unwrap_or(i64::MAX)
                    - i64::try_from(before[i].1).unwrap_or(i64::MAX);
            }
            self.deltas = Some(deltas);
        }
        let counts: &StateCounts = &snapshot.overview.counts;
        if self.samples.back().is_none_or(|last| last.0 < snapshot.taken_at) {
            self.samples.push_back((snapshot.taken_at, counts.succeeded, counts.failed));
        }
        while self.samples.len() > HISTORY {
            self.samples.pop_front();
        }
        self.snapshot = Some(snapshot);
        self.refresh_error = None;
        self.clamp_selection();
    }

    /// Succeeded and failed per refresh interval, oldest first, for the last `bars`
    /// intervals ending at the newest snapshot (intervals before the monitor started
    /// are left out). Totals between snapshots are taken as those of the snapshot
    /// before, so a snapshot arriving late puts its work in the interval it lands in.
    pub fn throughput(&self, bars: usize) -> (Vec<u64>, Vec<u64>) {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return (Vec::new(), Vec::new());
        };
        let width = i64::try_from(self.refresh.as_micros()).unwrap_or(i64::MAX).max(1);
        let at = |t: i64| -> (u64, u64) {
            let i = self.samples.partition_point(|s| s.0.as_micros() <= t);
            let s = self.samples[i.saturating_sub(1)];
            (s.1, s.2)
        };
        let end = last.0.as_micros();
        let span = end - first.0.as_micros();
        let n = usize::try_from(span / width).unwrap_or(usize::MAX).min(bars);
        let (mut ok, mut failed) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for k in (0..n as i64).rev() {
            let (a, b) = (at(end - (k + 1) * width), at(end - k * width));
            ok.push(b.0.saturating_sub(a.0));
            failed.push(b.1.saturating_sub(a.1));
        }
        (ok, failed)
    }

    /// Records a failed refresh; the last snapshot stays on screen, marked stale.
    pub fn on_error(&mut self, error: String) {
        self.refresh_error = Some(error);
    }

    /// Whether the snapshot on screen is stale at `now`: the last refresh failed, or
    /// none arrived for two intervals and a second.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        if self.refresh_error.is_some() {
            return true;
        }
        match &self.snapshot {
            None => false,
            Some(s) => {
                !self.paused
                    && now.saturating_duration_since(s.taken_at) > self.refresh * 2 + Duration::from_secs(1)
            }
        }
    }

    /// Handles one key event.
    pub fn on_key(&mut self, event: KeyEvent) -> Effect {
        if event.kind == KeyEventKind::Release {
            return Effect::None;
        }
        match self.mode.clone() {
            Mode::Filter(mut text) => self.filter_key(event, &mut text),
            Mode::Confirm(write) => {
                self.mode = Mode::Normal;
                if event.modifiers.contains(KeyModifiers::CONTROL) && event.code == KeyCode::Char('c') {
                    return Effect::Quit;
                }
                match event.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => Effect::Write(write),
                    _ => {
                        self.message = Some((Level::Info, "not done".into()));
                        Effect::None
                    }
                }
            }
            Mode::Normal => match action_for(&event) {
                Some(action) => self.handle(action),
                None => Effect::None,
            },
        }
    }

    fn filter_key(&mut self, event: KeyEvent, text: &mut String) -> Effect {
        match event.code {
            KeyCode::Enter => {
                self.mode = Mode::Normal;
                match Filter::parse(text) {
                    Ok(filter) => {
                        self.filter_text = text.clone();
                        self.list.filter = filter;
                        self.first_page();
                        self.message = None;
                        Effect::Reload
                    }
                    Err(e) => {
                        self.mode = Mode::Filter(text.clone());
                        self.message = Some((Level::Error, format!("filter: {e}")));
                        Effect::None
                    }
                }
            }
            KeyCode::Esc => {
                self.mode = Mode::Normal;
                self.message = None;
                Effect::None
            }
            KeyCode::Backspace => {
                text.pop();
                self.mode = Mode::Filter(text.clone());
                Effect::None
            }
            KeyCode::Char('c') if event.modifiers.contains(KeyModifiers::CONTROL) => Effect::Quit,
            KeyCode::Char(c) => {
                text.push(c);
                self.mode = Mode::Filter(text.clone());
                Effect::None
            }
            _ => Effect::None,
        }
    }

    /// Carries out one action.
    pub fn handle(&mut self, action: Action) -> Effect {
        if self.help && !matches!(action, Action::Help | Action::Clear | Action::Quit) {
            self.help = false;
        }
        match action {
            Action::Quit => Effect::Quit,
            Action::Help => {
                self.help = !self.help;
                Effect::None
            }
            Action::Show(view) => self.show(view),
            Action::NextView => self.show(View::ALL[(self.view.index() + 1) % View::ALL.len()]),
            Action::PrevView => {
                self.show(View::ALL[(self.view.index() + View::ALL.len() - 1) % View::ALL.len()])
            }
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::Top => self.move_to(0),
            Action::Bottom => self.move_to(usize::MAX),
            Action::PageDown => self.page_down(),
            Action::PageUp => self.page_up(),
            Action::Filter => {
                if self.view != View::Commands {
                    self.view = View::Commands;
                }
                self.mode = Mode::Filter(self.filter_text.clone());
                Effect::Reload
            }
            Action::Clear => self.clear(),
            Action::Open => self.open(),
            Action::Refresh => Effect::Reload,
            Action::Pause => {
                self.paused = !self.paused;
                self.message = Some((
                    Level::Info,
                    if self.paused { "updates paused" } else { "updates resumed" }.into(),
                ));
                if self.paused { Effect::None } else { Effect::Reload }
            }
            Action::Faster => self.step_refresh(-1),
            Action::Slower => self.step_refresh(1),
            Action::Sort if self.view == View::Flows => {
                self.flow_state = match self.flow_state {
                    None => Some(WorkflowState::Running),
                    Some(WorkflowState::Running) => Some(WorkflowState::Failed),
                    Some(WorkflowState::Failed) => Some(WorkflowState::Succeeded),
                    Some(WorkflowState::Succeeded) => None,
                };
                self.selected[View::Flows.index()] = 0;
                Effect::Reload
            }
            Action::Sort => {
                self.list.order = match self.list.order {
                    ListOrder::Created => ListOrder::Scheduled,
                    ListOrder::Scheduled => ListOrder::Attempts,
                    ListOrder::Attempts => ListOrder::Created,
                };
                self.first_page();
                Effect::Reload
            }
            Action::Reverse => {
                self.list.descending = !self.list.descending;
                self.first_page();
                Effect::Reload
            }
            Action::Retry | Action::Cancel => self.ask_write(action),
        }
    }

    fn show(&mut self, view: View) -> Effect {
        self.view = view;
        Effect::Reload
    }

    fn clear(&mut self) -> Effect {
        if self.help {
            self.help = false;
            return Effect::None;
        }
        match self.view {
            View::Detail => {
                self.view = View::Commands;
                Effect::Reload
            }
            View::Commands if !self.filter_text.is_empty() => {
                self.filter_text.clear();
                self.list.filter = Filter::default();
                self.first_page();
                self.message = None;
                Effect::Reload
            }
            View::Flows if self.workflow.is_some() => {
                self.workflow = None;
                Effect::Reload
            }
            _ => {
                self.message = None;
                Effect::None
            }
        }
    }

    fn first_page(&mut self) {
        self.pages.clear();
        self.list.start = None;
        self.selected[View::Commands.index()] = 0;
    }

    fn rows(&self) -> usize {
        let Some(s) = &self.snapshot else { return 0 };
        match self.view {
            View::Overview | View::Detail => 0,
            View::Names => s.names.len(),
            View::Commands => self.current_page().map_or(0, |p| p.rows.len()),
            View::Workers => s.workers.len(),
            View::Flows => s.flows.as_ref().map_or(0, |f| f.workflows.len()),
        }
    }

    /// The furthest the detail scrolls: its wrapped lines less the lines on screen.
    pub fn detail_max_scroll(&self) -> u16 {
        let (width, height) = self.viewport;
        let inner_width = usize::from(width.saturating_sub(2)).max(1);
        let visible = height.saturating_sub(5);
        let lines: usize = crate::ui::detail_lines(self)
            .map(|lines| lines.iter().map(|l| l.width().div_ceil(inner_width).max(1)).sum())
            .unwrap_or(0);
        u16::try_from(lines).unwrap_or(u16::MAX).saturating_sub(visible)
    }

    fn scroll_detail(&mut self, to: i64) -> Effect {
        self.detail_scroll = u16::try_from(to.clamp(0, i64::from(self.detail_max_scroll()))).unwrap_or(0);
        Effect::None
    }

    fn move_by(&mut self, delta: isize) -> Effect {
        if self.view == View::Detail {
            return self.scroll_detail(i64::from(self.detail_scroll) + delta as i64);
        }
        let current = self.selected[self.view.index()];
        let next =
            if delta < 0 { current.saturating_sub(delta.unsigned_abs()) } else { current + delta as usize };
        self.move_to(next)
    }

    fn move_to(&mut self, row: usize) -> Effect {
        if self.view == View::Detail {
            return self.scroll_detail(i64::try_from(row).unwrap_or(i64::MAX));
        }
        let rows = self.rows();
        self.selected[self.view.index()] = row.min(rows.saturating_sub(1));
        Effect::None
    }

    fn clamp_selection(&mut self) {
        let view = self.view;
        if view != View::Detail {
            let rows = self.rows();
            let i = view.index();
            self.selected[i] = self.selected[i].min(rows.saturating_sub(1));
        }
    }

    fn page_down(&mut self) -> Effect {
        match self.view {
            View::Commands => {
                let Some(page) = self.current_page() else {
                    return Effect::None;
                };
                let next = page
                    .rows
                    .last()
                    .filter(|_| page.has_more)
                    .map(|last| ListCursor::of(last, self.list.order));
                match next {
                    Some(cursor) => {
                        self.pages.push(self.list.start);
                        self.list.start = Some(cursor);
                        self.selected[View::Commands.index()] = 0;
                        Effect::Reload
                    }
                    None => self.move_to(usize::MAX),
                }
            }
            _ => self.move_by(JUMP as isize),
        }
    }

    fn page_up(&mut self) -> Effect {
        match self.view {
            View::Commands => match self.pages.pop() {
                Some(start) => {
                    self.list.start = start;
                    self.selected[View::Commands.index()] = 0;
                    Effect::Reload
                }
                None => self.move_to(0),
            },
            _ => self.move_by(-(JUMP as isize)),
        }
    }

    /// The command page on screen, if it answers the list query as it is now (a
    /// snapshot read before a key changed the query does not).
    pub fn current_page(&self) -> Option<&CommandPage> {
        self.snapshot.as_ref()?.commands.as_ref().filter(|p| p.query == self.list)
    }

    /// The open command's detail, if the snapshot has read it.
    pub fn current_detail(&self) -> Option<&Detail> {
        self.snapshot.as_ref()?.detail.as_ref().filter(|d| Some(d.id) == self.detail)
    }

    /// The command under the cursor: the selected row of the list, or the open detail.
    pub fn selected_command(&self) -> Option<(CommandId, State)> {
        match self.view {
            View::Commands => {
                let row = self.current_page()?.rows.get(self.selected[View::Commands.index()])?;
                Some((row.id, row.state))
            }
            View::Detail => {
                let record = self.current_detail()?.record.as_ref()?;
                Some((record.id, record.state))
            }
            _ => None,
        }
    }

    fn open(&mut self) -> Effect {
        match self.view {
            View::Commands => match self.selected_command() {
                Some((id, _)) => {
                    self.detail = Some(id);
                    self.detail_scroll = 0;
                    self.view = View::Detail;
                    Effect::Reload
                }
                None => Effect::None,
            },
            View::Flows => {
                let selected = self.selected[View::Flows.index()];
                let id = self
                    .snapshot
                    .as_ref()
                    .and_then(|s| s.flows.as_ref())
                    .and_then(|f| f.workflows.get(selected))
                    .map(|w| w.id);
                self.workflow = id;
                Effect::Reload
            }
            _ => Effect::None,
        }
    }

    fn step_refresh(&mut self, direction: i32) -> Effect {
        let ms = u64::try_from(self.refresh.as_millis()).unwrap_or(u64::MAX);
        let next = if direction < 0 {
            REFRESH_STEPS.iter().rev().find(|s| **s < ms).copied().unwrap_or(REFRESH_STEPS[0])
        } else {
            REFRESH_STEPS.iter().find(|s| **s > ms).copied().unwrap_or(REFRESH_STEPS[REFRESH_STEPS.len() - 1])
        };
        self.refresh = Duration::from_millis(next);
        self.message =
            Some((Level::Info, format!("refresh every {}", crate::filter::short_duration(self.refresh))));
        Effect::Reload
    }

    fn ask_write(&mut self, action: Action) -> Effect {
        if !self.allow_writes {
            self.message = Some((
                Level::Error,
                "read-only monitor: start it with --allow-writes to retry or cancel".into(),
            ));
            return Effect::None;
        }
        let Some((id, state)) = self.selected_command() else {
            self.message = Some((Level::Error, "select a command first (views 3 and 4)".into()));
            return Effect::None;
        };
        let write = match action {
            Action::Retry if matches!(state, State::Failed | State::Cancelled) => Write::Retry(id),
            Action::Retry => {
                self.message = Some((
                    Level::Error,
                    format!("only failed or cancelled commands can be retried; this one is {state}"),
                ));
                return Effect::None;
            }
            _ if state.is_terminal() => {
                self.message = Some((Level::Error, format!("the command has already finished ({state})")));
                return Effect::None;
            }
            _ => Write::Cancel(id),
        };
        self.mode = Mode::Confirm(write);
        Effect::None
    }
}
