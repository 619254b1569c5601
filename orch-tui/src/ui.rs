//! Drawing: one function per view, all reading the [`App`] and nothing else, so a
//! fixed snapshot always draws the same screen.

use orch::store::{CommandRecord, JournalEntry, ListOrder, SagaRecord, WorkflowStepRecord};
use orch::{State, Timestamp};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Tabs, Wrap};

use crate::app::{App, KEYMAP, Level, Mode, View};
use crate::data::{Detail, Flows, Snapshot};
use crate::filter::{FILTER_HELP, short_duration};

/// The style of the `STALE` badge.
pub const STALE_STYLE: Style = Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD);
/// The style of the `READ-ONLY` badge.
pub const READ_ONLY_STYLE: Style = Style::new().fg(Color::Black).bg(Color::Yellow);
/// The style of the `WRITES ON` badge.
pub const WRITES_STYLE: Style = Style::new().fg(Color::White).bg(Color::Magenta).add_modifier(Modifier::BOLD);
/// Failed counts above zero.
pub const FAILED_STYLE: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const HEADER_STYLE: Style = Style::new().add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().fg(Color::DarkGray);
const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);

/// The style of a state's name and count.
pub fn state_style(state: &str, count: u64) -> Style {
    if count == 0 {
        return DIM;
    }
    match state {
        "failed" => FAILED_STYLE,
        "succeeded" => Style::new().fg(Color::Green),
        "running" => Style::new().fg(Color::Cyan),
        "pending" => Style::new().fg(Color::Yellow),
        "cancelled" => Style::new().fg(Color::Magenta),
        _ => Style::new(),
    }
}

fn state_of(state: State) -> Style {
    state_style(state.as_str(), 1)
}

/// Draws the whole screen at `now`.
pub fn draw(frame: &mut Frame, app: &App, now: Timestamp) {
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, app, now);
    let titles = View::ALL.iter().enumerate().map(|(i, v)| format!("{} {}", i + 1, v.title()));
    let selected = View::ALL.iter().position(|v| *v == app.view).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles).select(selected).highlight_style(SELECTED).divider("|").padding("", ""),
        tabs,
    );
    match &app.snapshot {
        None => {
            let text = match &app.refresh_error {
                Some(e) => format!("cannot read the store: {e}"),
                None => "reading the store…".to_owned(),
            };
            frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), body);
        }
        Some(s) => match app.view {
            View::Overview => draw_overview(frame, body, app, s),
            View::Names => draw_names(frame, body, app, s),
            View::Commands => draw_commands(frame, body, app, s),
            View::Detail => draw_detail(frame, body, app),
            View::Workers => draw_workers(frame, body, app, s),
            View::Flows => draw_flows(frame, body, app, s),
        },
    }
    draw_footer(frame, footer, app);
    if app.help {
        draw_help(frame, body);
    }
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App, now: Timestamp) {
    let mut spans = vec![Span::styled("orch-tui ", HEADER_STYLE)];
    if app.is_stale(now) {
        spans.push(Span::styled(" STALE ", STALE_STYLE));
        spans.push(Span::raw(" "));
    }
    if app.allow_writes {
        spans.push(Span::styled(" WRITES ON ", WRITES_STYLE));
    } else {
        spans.push(Span::styled(" READ-ONLY ", READ_ONLY_STYLE));
    }
    if app.paused {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(" PAUSED ", Style::new().fg(Color::Black).bg(Color::Cyan)));
    }
    spans.push(Span::raw(format!(" {} {} │ every {}", app.backend, app.url, short_duration(app.refresh))));
    match &app.snapshot {
        Some(s) => {
            let age = now.saturating_duration_since(s.taken_at);
            spans.push(Span::raw(format!(
                " │ age {} │ {} q {}ms",
                short_duration(age),
                s.cost.queries,
                s.cost.elapsed.as_millis()
            )));
        }
        None => spans.push(Span::raw(" │ no snapshot yet")),
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let line = match (&app.mode, &app.message, &app.refresh_error) {
        (Mode::Filter(text), _, _) => Line::from(vec![
            Span::styled("/", HEADER_STYLE),
            Span::raw(text.clone()),
            Span::styled("█", DIM),
            Span::styled(format!("  Enter apply · Esc cancel · {FILTER_HELP}"), DIM),
        ]),
        (Mode::Confirm(write), _, _) => {
            let what = match write {
                crate::app::Write::Retry(id) => format!("retry {id}"),
                crate::app::Write::Cancel(id) => format!("cancel {id}"),
            };
            Line::from(Span::styled(format!("{what}? y to confirm, any other key to abort"), WRITES_STYLE))
        }
        (_, _, Some(error)) => Line::from(Span::styled(format!("refresh failed: {error}"), FAILED_STYLE)),
        (_, Some((Level::Error, m)), _) => Line::from(Span::styled(m.clone(), FAILED_STYLE)),
        (_, Some((Level::Info, m)), _) => Line::from(m.clone()),
        _ => Line::from(Span::styled("? help · q quit · 1-6 views · / filter · Enter open", DIM)),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_overview(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let [top, bottom] = Layout::vertical([Constraint::Length(10), Constraint::Min(3)]).areas(area);
    let [states, side] = Layout::horizontal([Constraint::Length(34), Constraint::Min(20)]).areas(top);
    let rows = s.overview.counts.labelled().into_iter().enumerate().map(|(i, (label, count))| {
        let delta = match app.deltas {
            Some(d) if d[i] != 0 => format!("{:+}", d[i]),
            Some(_) => "·".to_owned(),
            None => String::new(),
        };
        let style = state_style(label, count);
        Row::new(vec![
            Cell::from(label).style(style),
            Cell::from(count.to_string()).style(style),
            Cell::from(delta),
        ])
    });
    let table = Table::new(rows, [Constraint::Length(10), Constraint::Length(10), Constraint::Length(8)])
        .header(Row::new(["state", "count", "change"]).style(HEADER_STYLE))
        .block(Block::bordered().title(" Commands "));
    frame.render_widget(table, states);

    let latency = match s.overview.oldest_due {
        Some(due) => short_duration(s.taken_at.saturating_duration_since(due)),
        None => "none due".to_owned(),
    };
    let live = s.workers.iter().filter(|w| !w.stale).count();
    let stale = s.workers.len() - live;
    let running: u32 = s.workers.iter().filter(|w| !w.stale).map(|w| w.record.running).sum();
    let capacity: u32 = s.workers.iter().filter(|w| !w.stale).map(|w| w.record.concurrency).sum();
    let no_worker = s.names.iter().filter(|r| r.no_worker).count();
    let mut lines = vec![
        Line::from(vec![Span::raw("oldest due pending  "), Span::styled(latency, HEADER_STYLE)]),
        Line::from(format!("total commands      {}", s.overview.counts.total())),
        Line::from(format!("workers             {live} live, {stale} stale")),
        Line::from(format!("handlers busy       {running} of {capacity}")),
    ];
    if no_worker > 0 {
        lines.push(Line::from(Span::styled(
            format!("NO WORKER for {no_worker} name/target (see 2)"),
            FAILED_STYLE,
        )));
    }
    for pause in &s.pauses {
        lines.push(Line::from(Span::styled(
            format!(
                "PAUSED {} ({} ago)",
                pause.scope,
                short_duration(s.taken_at.saturating_duration_since(pause.paused_at))
            ),
            FAILED_STYLE,
        )));
    }
    for schedule in &s.schedules {
        lines.push(schedule_line(schedule, s.taken_at));
    }
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Queue ")), side);

    let [ok_area, failed_area] =
        Layout::vertical([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(bottom);
    let (ok, failed) = app.throughput(usize::from(ok_area.width.saturating_sub(2)));
    let per = short_duration(app.refresh);
    let title = |what: &str, data: &[u64]| {
        format!(
            " {what} per {per}: last {} max {} ",
            data.last().copied().unwrap_or(0),
            data.iter().max().copied().unwrap_or(0)
        )
    };
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title("succeeded", &ok)))
            .data(&ok)
            .style(Style::new().fg(Color::Green)),
        ok_area,
    );
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title("failed", &failed)))
            .data(&failed)
            .style(Style::new().fg(Color::Red)),
        failed_area,
    );
}

fn count_cell(state: &str, n: u64) -> Cell<'static> {
    Cell::from(n.to_string()).style(state_style(state, n))
}

fn draw_names(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let rows = s.names.iter().map(|r| {
        let c = &r.counts;
        let oldest =
            r.oldest_due.map(|d| short_duration(s.taken_at.saturating_duration_since(d))).unwrap_or_default();
        let mark = if r.no_worker { Cell::from("NO WORKER").style(FAILED_STYLE) } else { Cell::from("") };
        Row::new(vec![
            Cell::from(r.name.clone()),
            Cell::from(r.target.clone()),
            count_cell("blocked", c.blocked),
            count_cell("pending", c.pending),
            count_cell("scheduled", c.scheduled),
            count_cell("running", c.running),
            count_cell("succeeded", c.succeeded),
            count_cell("failed", c.failed),
            count_cell("cancelled", c.cancelled),
            Cell::from(oldest),
            mark,
        ])
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(10),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(9),
    ];
    let header =
        Row::new(["name", "target", "blk", "due", "later", "run", "ok", "fail", "canc", "oldest", ""])
            .style(HEADER_STYLE);
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .block(Block::bordered().title(format!(" Names × targets ({}) ", s.names.len())));
    let mut state = TableState::default().with_selected(selected_row(app, s.names.len()));
    frame.render_stateful_widget(table, area, &mut state);
}

fn selected_row(app: &App, rows: usize) -> Option<usize> {
    (rows > 0).then(|| app.selected[View::ALL.iter().position(|v| *v == app.view).unwrap_or(0)].min(rows - 1))
}

/// The last 8 characters of an id: the random part, enough to tell rows apart.
pub fn short_id(id: impl std::fmt::Display) -> String {
    let s = id.to_string();
    s[s.len().saturating_sub(8)..].to_owned()
}

fn draw_commands(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let [info, list] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let order = match app.list.order {
        ListOrder::Created => "created",
        ListOrder::Scheduled => "scheduled",
        ListOrder::Attempts => "attempts",
    };
    let filter =
        if app.filter_text.is_empty() { "none (/ to filter)".to_owned() } else { app.filter_text.clone() };
    // A page read for an older query stays on screen, marked, until the new one lands.
    let current = app.current_page();
    let page = current.or(s.commands.as_ref());
    let more = if current.is_some_and(|p| p.has_more) { " · PgDn more" } else { "" };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("filter ", DIM),
            Span::raw(filter),
            Span::styled(format!(" · sort {order} {}", if app.list.descending { "↓" } else { "↑" }), DIM),
            Span::styled(format!(" · page {}{more}", app.pages.len() + 1), DIM),
        ])),
        info,
    );
    let empty = Vec::new();
    let rows_src: &Vec<CommandRecord> = page.map_or(&empty, |p| &p.rows);
    let rows = rows_src.iter().map(|r| {
        let age = short_duration(s.taken_at.saturating_duration_since(r.created_at));
        let due = if r.state == State::Pending && r.scheduled_at > s.taken_at {
            format!("in {}", short_duration(r.scheduled_at.saturating_duration_since(s.taken_at)))
        } else {
            String::new()
        };
        let error = r.error.as_ref().map(|e| e.message.replace('\n', " ")).unwrap_or_default();
        Row::new(vec![
            Cell::from(short_id(r.id)),
            Cell::from(r.name.clone()),
            Cell::from(r.target.clone()),
            Cell::from(r.state.as_str()).style(state_of(r.state)),
            Cell::from(format!("{}/{}", r.attempts, r.max_attempts)),
            Cell::from(age),
            Cell::from(due),
            Cell::from(error).style(if r.error.is_some() { FAILED_STYLE } else { Style::new() }),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Fill(1),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    let header =
        Row::new(["id", "name", "target", "state", "att", "age", "due", "error"]).style(HEADER_STYLE);
    let table = Table::new(rows, widths).header(header).row_highlight_style(SELECTED).block(
        Block::bordered().title(if current.is_some() {
            format!(" Commands ({} on page) ", rows_src.len())
        } else {
            " Commands (loading…) ".to_owned()
        }),
    );
    let selected = if current.is_some() { selected_row(app, rows_src.len()) } else { None };
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, list, &mut state);
}

fn time(t: Timestamp) -> String {
    let s = t.to_string();
    s.get(..19).map(|x| x.replace('T', " ")).unwrap_or(s)
}

fn pretty_json(text: &str) -> Vec<Line<'static>> {
    let pretty = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| format!("{text} (not JSON)"));
    pretty.lines().map(|l| Line::from(format!("  {l}"))).collect()
}

/// A schedule in the queue panel: when it fires next and last, and how many slots it
/// missed; a schedule whose next slot no worker has fired in time is flagged LATE.
fn schedule_line(schedule: &orch::ScheduleRecord, now: Timestamp) -> Line<'static> {
    let next = if schedule.next_fire > now {
        format!("next in {}", short_duration(schedule.next_fire.saturating_duration_since(now)))
    } else {
        format!("due {} ago", short_duration(now.saturating_duration_since(schedule.next_fire)))
    };
    let last = match schedule.last_fire {
        Some(t) => format!("last {} ago", short_duration(now.saturating_duration_since(t))),
        None => "never fired".to_owned(),
    };
    let late = schedule.is_late(now);
    let mut text = format!("SCHEDULE {}{}: {next}, {last}", schedule.name, if late { " LATE" } else { "" });
    if schedule.missed > 0 {
        text.push_str(&format!(", {} missed", schedule.missed));
    }
    if late { Line::from(Span::styled(text, FAILED_STYLE)) } else { Line::from(text) }
}

fn field(label: &str, value: impl Into<String>) -> Line<'static> {
    Line::from(vec![Span::styled(format!("{label:<12}"), DIM), Span::raw(value.into())])
}

fn draw_detail(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Command ");
    let Some(lines) = detail_lines(app) else {
        let text = match (app.detail, app.current_detail()) {
            (None, _) => "no command open: select one in the list (3) and press Enter",
            (Some(_), None) => "loading…",
            (Some(_), Some(_)) => "the command no longer exists",
        };
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    };
    let scroll = app.detail_scroll.min(app.detail_max_scroll());
    let paragraph =
        Paragraph::new(Text::from(lines)).block(block).wrap(Wrap { trim: false }).scroll((scroll, 0));
    frame.render_widget(paragraph, area);
}

/// The lines of the open command's detail, once read (`None` before, or when the
/// command no longer exists).
pub fn detail_lines(app: &App) -> Option<Vec<Line<'static>>> {
    let detail: &Detail = app.current_detail()?;
    let record = detail.record.as_ref()?;
    let now = app.snapshot.as_ref().map_or(record.updated_at, |s| s.taken_at);
    let mut lines = vec![
        field("id", record.id.to_string()),
        Line::from(vec![
            Span::styled(format!("{:<12}", "state"), DIM),
            Span::styled(record.state.as_str(), state_of(record.state)),
            Span::raw(if record.cancel_requested { "  (cancel requested)" } else { "" }),
        ]),
        field("name", format!("{}  →  target {}", record.name, record.target)),
        field(
            "attempts",
            format!(
                "{} of {}  (timeout {})",
                record.attempts,
                record.max_attempts,
                short_duration(record.timeout)
            ),
        ),
        field(
            "created",
            format!(
                "{}  ({} ago)",
                time(record.created_at),
                short_duration(now.saturating_duration_since(record.created_at))
            ),
        ),
        field("scheduled", time(record.scheduled_at)),
    ];
    if let Some(t) = record.started_at {
        lines.push(field("started", time(t)));
    }
    if let Some(t) = record.finished_at {
        lines.push(field("finished", time(t)));
    }
    if let Some(worker) = &record.worker {
        let lease = match (record.state, record.lease_expires_at) {
            (State::Running, Some(exp)) if exp > now => {
                format!("{worker}, lease expires in {}", short_duration(exp.saturating_duration_since(now)))
            }
            (State::Running, Some(exp)) => {
                format!("{worker}, lease EXPIRED {} ago", short_duration(now.saturating_duration_since(exp)))
            }
            _ => format!("{worker} (last holder)"),
        };
        lines.push(field("lease", lease));
    }
    if let Some(parent) = record.parent_id {
        lines.push(field("parent", parent.to_string()));
    }
    lines.push(field("correlation", record.correlation_id.clone()));
    // The default priority is not shown.
    if record.priority != 0 {
        lines.push(field("priority", format!("{} (lowest first)", record.priority)));
    }
    if let Some(unique) = &record.unique {
        let holds = match unique.until {
            None => "while unfinished".to_owned(),
            Some(end) => format!("until {}", time(end)),
        };
        lines.push(field("unique key", format!("{} ({holds})", unique.key)));
    }
    if let Some(step) = &record.workflow {
        lines.push(field("workflow", format!("{} step {}", step.workflow_id, step.step)));
    }
    if let Some(saga) = record.name.strip_prefix("orch.saga.") {
        lines.push(field("saga", format!("{saga} / {}", record.correlation_id)));
    }
    if let Some(error) = &record.error {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<12}", "error"), DIM),
            Span::styled(format!("{}: {}", error.kind, error.message), FAILED_STYLE),
        ]));
    }
    lines.push(Line::from(Span::styled(format!("journal ({})", detail.journal.len()), HEADER_STYLE)));
    lines.extend(journal_lines(&detail.journal, record.created_at));
    lines.push(Line::from(Span::styled("input", HEADER_STYLE)));
    lines.extend(pretty_json(&record.input));
    if let Some(output) = &record.output {
        lines.push(Line::from(Span::styled("output", HEADER_STYLE)));
        lines.extend(pretty_json(output));
    }
    if !detail.follow_ups.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("follow-ups ({})", detail.follow_ups.len()),
            HEADER_STYLE,
        )));
        for f in &detail.follow_ups {
            lines.push(Line::from(vec![
                Span::raw(format!("  {} {} ", short_id(f.id), f.name)),
                Span::styled(f.state.as_str(), state_of(f.state)),
            ]));
        }
    }
    Some(lines)
}

fn journal_lines(journal: &[JournalEntry], start: Timestamp) -> Vec<Line<'static>> {
    journal
        .iter()
        .map(|e| {
            let offset = e.at.saturating_duration_since(start);
            let kind = e.kind.as_str();
            let style = match kind {
                "failed" | "lease_lost" | "rescued" => FAILED_STYLE,
                "retry_scheduled" => Style::new().fg(Color::Yellow),
                "succeeded" => Style::new().fg(Color::Green),
                _ => Style::new(),
            };
            let mut spans = vec![
                Span::styled(format!("  +{:<9}", format!("{:.3}s", offset.as_secs_f64())), DIM),
                Span::styled(format!("{kind:<16}"), style),
                Span::raw(format!("#{}", e.attempt)),
            ];
            if let Some(w) = &e.worker {
                spans.push(Span::styled(format!(" {w}"), DIM));
            }
            if let Some(m) = &e.message {
                spans.push(Span::raw(format!("  {m}")));
            }
            Line::from(spans)
        })
        .collect()
}

fn draw_workers(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let rows = s.workers.iter().map(|w| {
        let r = &w.record;
        let beat = short_duration(s.taken_at.saturating_duration_since(r.heartbeat_at));
        Row::new(vec![
            Cell::from(r.id.clone()),
            Cell::from(r.instance_key.clone()),
            Cell::from(format!("{}/{}", r.host, r.pid)),
            Cell::from(short_duration(s.taken_at.saturating_duration_since(r.started_at))),
            if w.stale { Cell::from(format!("{beat} STALE")).style(FAILED_STYLE) } else { Cell::from(beat) },
            Cell::from(format!("{}/{}", r.running, r.concurrency)),
            Cell::from(r.names.join(",")),
        ])
    });
    let widths = [
        Constraint::Length(16),
        Constraint::Length(9),
        Constraint::Length(14),
        Constraint::Length(7),
        Constraint::Length(13),
        Constraint::Length(5),
        Constraint::Fill(1),
    ];
    let header =
        Row::new(["worker", "instance", "host/pid", "up", "heartbeat", "busy", "names"]).style(HEADER_STYLE);
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(SELECTED)
        .block(Block::bordered().title(format!(" Workers ({}) ", s.workers.len())));
    let mut state = TableState::default().with_selected(selected_row(app, s.workers.len()));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_flows(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let empty = Flows::default();
    let flows = s.flows.as_ref().unwrap_or(&empty);
    let [top, sagas_area] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let [list, steps] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    let rows = flows.workflows.iter().map(|w| {
        let state = w.state().to_string();
        let style = match state.as_str() {
            "failed" => FAILED_STYLE,
            "succeeded" => Style::new().fg(Color::Green),
            _ => Style::new().fg(Color::Cyan),
        };
        Row::new(vec![
            Cell::from(short_id(w.id)),
            Cell::from(state).style(style),
            Cell::from(format!("{}/{}", w.succeeded, w.steps())),
            Cell::from(short_duration(s.taken_at.saturating_duration_since(w.created_at))),
        ])
    });
    let widths = [Constraint::Length(8), Constraint::Length(9), Constraint::Length(7), Constraint::Min(5)];
    let table = Table::new(rows, widths)
        .header(Row::new(["id", "state", "done", "age"]).style(HEADER_STYLE))
        .row_highlight_style(SELECTED)
        .block(Block::bordered().title(format!(
            " Workflows ({}, {}) ",
            flows.workflows.len(),
            app.flow_state.map_or("all".to_owned(), |s| s.to_string())
        )));
    let mut state = TableState::default().with_selected(selected_row(app, flows.workflows.len()));
    frame.render_stateful_widget(table, list, &mut state);

    let title = match app.workflow {
        Some(id) => format!(" Steps of {} ", short_id(id)),
        None => " Steps ".to_owned(),
    };
    let lines = if app.workflow.is_none() {
        vec![
            Line::from(Span::styled("Enter shows the selected workflow's steps;", DIM)),
            Line::from(Span::styled("s filters workflows and sagas by state", DIM)),
        ]
    } else {
        step_tree(&flows.steps)
    };
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), steps);

    let rows = flows.sagas.iter().map(saga_row);
    let widths = [
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(19),
        Constraint::Length(4),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(
            Row::new(["saga", "instance", "state", "status", "ver", "compensation stack (top first)"])
                .style(HEADER_STYLE),
        )
        .block(Block::bordered().title(format!(
            " Sagas ({}, {}) ",
            flows.sagas.len(),
            app.flow_state.map_or("all".to_owned(), |s| s.to_string())
        )));
    frame.render_widget(table, sagas_area);
}

fn saga_row(saga: &SagaRecord) -> Row<'static> {
    let stack: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&saga.compensations)
        .map(|items| {
            items
                .iter()
                .rev()
                .map(|v| v.get("name").and_then(|n| n.as_str()).unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let status = saga.status.as_str();
    let style = match status {
        "compensation_failed" => FAILED_STYLE,
        "compensating" | "compensated" => Style::new().fg(Color::Yellow),
        "completed" => Style::new().fg(Color::Green),
        _ => Style::new().fg(Color::Cyan),
    };
    Row::new(vec![
        Cell::from(saga.saga.clone()),
        Cell::from(saga.correlation_id.clone()),
        Cell::from(saga.state.clone()),
        Cell::from(status).style(style),
        Cell::from(saga.version.to_string()),
        Cell::from(if stack.is_empty() { "—".to_owned() } else { stack.join(" ← ") }),
    ])
}

/// A workflow's steps as a tree: each step under the dependency that finishes last in
/// topological depth, indented by its depth, other dependencies named after it.
pub fn step_tree(steps: &[WorkflowStepRecord]) -> Vec<Line<'static>> {
    let name = |r: &WorkflowStepRecord| {
        r.command.workflow.as_ref().map_or_else(|| short_id(r.command.id), |w| w.step.clone())
    };
    let index: std::collections::HashMap<_, _> =
        steps.iter().enumerate().map(|(i, r)| (r.command.id, i)).collect();
    let mut depth = vec![0usize; steps.len()];
    // Longest path from a root; steps come in id order, so iterate to a fixpoint.
    for _ in 0..steps.len() {
        let mut changed = false;
        for (i, r) in steps.iter().enumerate() {
            let d =
                r.depends_on.iter().filter_map(|d| index.get(d)).map(|j| depth[*j] + 1).max().unwrap_or(0);
            if d != depth[i] {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by_key(|i| (depth[*i], *i));
    order
        .into_iter()
        .map(|i| {
            let r = &steps[i];
            let deps: Vec<String> =
                r.depends_on.iter().filter_map(|d| index.get(d)).map(|j| name(&steps[*j])).collect();
            let mut spans = vec![
                Span::raw(format!("{}{} ", "  ".repeat(depth[i]), if depth[i] == 0 { "●" } else { "└" })),
                Span::raw(format!("{} ", name(r))),
                Span::styled(r.command.state.as_str(), state_of(r.command.state)),
            ];
            if !deps.is_empty() {
                spans.push(Span::styled(format!("  after {}", deps.join(", ")), DIM));
            }
            Line::from(spans)
        })
        .collect()
}

/// The help screen's entries, one per keymap binding: (keys, what they do).
pub fn help_entries() -> Vec<(String, &'static str)> {
    KEYMAP
        .iter()
        .map(|b| (b.keys.iter().map(|k| k.label()).collect::<Vec<_>>().join(" / "), b.help))
        .collect()
}

/// The help screen's lines: one column of entries, or two when the screen is short.
pub fn help_lines(height: usize) -> Vec<Line<'static>> {
    let entries = help_entries();
    let rows = if entries.len() <= height { entries.len() } else { entries.len().div_ceil(2) };
    let cell = |i: usize| -> Vec<Span<'static>> {
        match entries.get(i) {
            Some((keys, help)) => {
                vec![Span::styled(format!("{keys:<11}"), HEADER_STYLE), Span::raw(format!("{help:<27}"))]
            }
            None => Vec::new(),
        }
    };
    (0..rows)
        .map(|r| {
            let mut spans = cell(r);
            if rows < entries.len() {
                spans.push(Span::raw(" "));
                spans.extend(cell(r + rows));
            }
            Line::from(spans)
        })
        .collect()
}

fn draw_help(frame: &mut Frame, body: Rect) {
    let lines = help_lines(usize::from(body.height.saturating_sub(2)));
    let two_columns = lines.len() < KEYMAP.len();
    let height = (lines.len() as u16 + 2).min(body.height);
    let width = if two_columns { 80 } else { 42 }.min(body.width);
    let area = Rect { x: body.x + (body.width - width) / 2, y: body.y, width, height };
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Keys (? or Esc to close) ")),
        area,
    );
}
