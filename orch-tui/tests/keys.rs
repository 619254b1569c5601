//! Key handling without a terminal: every key of the keymap triggers its action, every
//! entry is on the help screen, and the modes (filter, confirmation, read-only) hold.

mod fixture;

use orch::State;
use orch_tui::app::{Action, App, Effect, KEYMAP, Key, Mode, View, Write, action_for};
use orch_tui::ui::help_lines;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[test]
fn every_key_maps_to_its_action() {
    let mut seen = std::collections::HashSet::new();
    for binding in KEYMAP {
        for key in binding.keys {
            assert!(seen.insert(format!("{key:?}")), "{key:?} is bound twice");
            assert_eq!(action_for(&key.event()), Some(binding.action), "{key:?}");
        }
    }
    // Ctrl-C quits, a plain `c` does nothing, an unbound key does nothing.
    assert_eq!(action_for(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
    assert_eq!(action_for(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE)), None);
    assert_eq!(action_for(&KeyEvent::new(KeyCode::Char('z'), KeyModifiers::NONE)), None);
}

#[test]
fn help_lists_every_binding() {
    // Tall screens list one binding per line, short ones two per line; either way,
    // every binding's keys and text are on the screen (render.rs checks the drawn help).
    for height in [100, 14] {
        let help: Vec<String> = help_lines(height)
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect::<String>())
            .collect();
        assert!(help.len() <= height.max(KEYMAP.len().div_ceil(2)));
        for binding in KEYMAP {
            let keys: Vec<String> = binding.keys.iter().map(|k| k.label()).collect();
            let entry = format!("{:<11}{}", keys.join(" / "), binding.help);
            assert!(help.iter().any(|line| line.contains(&entry)), "help lacks {entry:?}: {help:#?}");
        }
    }
}

fn press(app: &mut App, key: Key) -> Effect {
    app.on_key(key.event())
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, Key::Char(c));
    }
}

#[test]
fn views_and_navigation() {
    let mut app = fixture::app();
    assert_eq!(press(&mut app, Key::Char('3')), Effect::Reload);
    assert_eq!(app.view, View::Commands);
    press(&mut app, Key::Char('j'));
    press(&mut app, Key::Code(KeyCode::Down));
    assert_eq!(app.selected[2], 2);
    press(&mut app, Key::Char('G'));
    assert_eq!(app.selected[2], 3, "the fixture page has 4 rows");
    press(&mut app, Key::Char('g'));
    assert_eq!(app.selected[2], 0);
    press(&mut app, Key::Code(KeyCode::Tab));
    assert_eq!(app.view, View::Detail);
    press(&mut app, Key::Code(KeyCode::BackTab));
    assert_eq!(app.view, View::Commands);
    // Enter opens the selected command; Esc goes back to the list.
    assert_eq!(press(&mut app, Key::Code(KeyCode::Enter)), Effect::Reload);
    assert_eq!(app.view, View::Detail);
    assert_eq!(app.query().detail, app.detail);
    press(&mut app, Key::Code(KeyCode::Esc));
    assert_eq!(app.view, View::Commands);
    // PgDn follows the keyset to the next page (the fixture says there is more); PgUp returns.
    let last = app.snapshot.as_ref().unwrap().commands.as_ref().unwrap().rows[3].id;
    assert_eq!(press(&mut app, Key::Code(KeyCode::PageDown)), Effect::Reload);
    assert_eq!(app.list.start.map(|c| c.id), Some(last));
    assert_eq!(press(&mut app, Key::Code(KeyCode::PageUp)), Effect::Reload);
    assert_eq!(app.list.start, None);
    // Sort and order.
    press(&mut app, Key::Char('s'));
    assert_eq!(app.list.order, orch::store::ListOrder::Scheduled);
    press(&mut app, Key::Char('o'));
    assert!(!app.list.descending);
    // Refresh rate steps, pause, help, quit.
    press(&mut app, Key::Char('+'));
    assert_eq!(app.refresh, std::time::Duration::from_millis(500));
    press(&mut app, Key::Char('-'));
    press(&mut app, Key::Char('-'));
    assert_eq!(app.refresh, std::time::Duration::from_secs(2));
    assert_eq!(press(&mut app, Key::Char('r')), Effect::Reload);
    press(&mut app, Key::Char('p'));
    assert!(app.paused);
    press(&mut app, Key::Char('?'));
    assert!(app.help);
    press(&mut app, Key::Code(KeyCode::Esc));
    assert!(!app.help);
    assert_eq!(press(&mut app, Key::Char('q')), Effect::Quit);
    assert_eq!(press(&mut app, Key::Ctrl('c')), Effect::Quit);
}

#[test]
fn answers_to_an_old_query_are_not_acted_on() {
    let mut app = fixture::app();
    press(&mut app, Key::Char('3'));
    // Two PgDn before the next page arrives: the second has no page of the new query
    // to take a cursor from, so it does nothing.
    assert_eq!(press(&mut app, Key::Code(KeyCode::PageDown)), Effect::Reload);
    assert!(app.current_page().is_none());
    assert_eq!(press(&mut app, Key::Code(KeyCode::PageDown)), Effect::None);
    assert_eq!(app.pages.len(), 1);
    // Nor is a row of the old page opened, retried or cancelled.
    app.allow_writes = true;
    assert_eq!(press(&mut app, Key::Code(KeyCode::Enter)), Effect::None);
    assert_eq!(press(&mut app, Key::Char('R')), Effect::None);
    assert_eq!(app.mode, Mode::Normal);
    // The detail of another command than the one read is "loading", not a target.
    press(&mut app, Key::Code(KeyCode::PageUp));
    let mut snapshot = app.snapshot.clone().unwrap();
    snapshot.commands.as_mut().unwrap().query = app.list.clone();
    app.on_snapshot(snapshot);
    press(&mut app, Key::Char('j'));
    assert_eq!(press(&mut app, Key::Code(KeyCode::Enter)), Effect::Reload);
    assert_eq!(app.view, View::Detail);
    assert_ne!(app.detail, app.snapshot.as_ref().unwrap().detail.as_ref().map(|d| d.id));
    assert!(app.current_detail().is_none());
    assert_eq!(press(&mut app, Key::Char('C')), Effect::None);
}

#[test]
fn detail_scroll_stops_at_the_end() {
    let mut app = fixture::app();
    app.detail = app.snapshot.as_ref().unwrap().detail.as_ref().map(|d| d.id);
    app.handle(Action::Show(View::Detail));
    app.viewport = (80, 24);
    let max = app.detail_max_scroll();
    assert!(max > 0, "the fixture's detail is longer than a 24-row screen");
    press(&mut app, Key::Char('G'));
    assert_eq!(app.detail_scroll, max);
    press(&mut app, Key::Char('j'));
    assert_eq!(app.detail_scroll, max, "no scrolling past the end");
    press(&mut app, Key::Char('k'));
    assert_eq!(app.detail_scroll, max - 1);
    press(&mut app, Key::Code(KeyCode::PageUp));
    press(&mut app, Key::Code(KeyCode::PageUp));
    assert_eq!(app.detail_scroll, 0);
    app.viewport = (120, 80);
    assert_eq!(app.detail_max_scroll(), 0, "all of it fits");
}

#[test]
fn throughput_is_per_refresh_interval() {
    let mut app = fixture::app();
    let t = |s: i64| fixture::at(s);
    // Snapshots at irregular times (a key press reloads between ticks).
    app.samples = [
        (t(0), 100, 10),
        (t(1), 110, 10),
        (t(1) + std::time::Duration::from_millis(300), 115, 11),
        (t(2), 120, 12),
        (t(4), 150, 12),
    ]
    .into();
    let (ok, failed) = app.throughput(10);
    // 1 s buckets ending at t(4): (0,1] (1,2] (2,3] (3,4] — the work seen at t(4)
    // lands in the last one.
    assert_eq!(ok, vec![10, 10, 0, 30]);
    assert_eq!(failed, vec![0, 2, 0, 0]);
    app.refresh = std::time::Duration::from_secs(2);
    assert_eq!(app.throughput(10).0, vec![20, 30]);
    assert_eq!(app.throughput(1).0, vec![30], "the newest bars when the screen is narrow");
}

#[test]
fn filter_editing() {
    let mut app = fixture::app();
    press(&mut app, Key::Char('/'));
    assert_eq!(app.view, View::Commands);
    type_text(&mut app, "state:failedx");
    press(&mut app, Key::Code(KeyCode::Backspace));
    // `q` while typing is text, not quit.
    assert_eq!(app.mode, Mode::Filter("state:failed".into()));
    assert_eq!(press(&mut app, Key::Code(KeyCode::Enter)), Effect::Reload);
    assert_eq!(app.list.filter.state, Some(State::Failed));
    assert_eq!(app.query().list.unwrap().filter.state, Some(State::Failed));
    // A bad filter keeps the old one and says why.
    press(&mut app, Key::Char('/'));
    type_text(&mut app, " colour:red");
    assert_eq!(press(&mut app, Key::Code(KeyCode::Enter)), Effect::None);
    assert_eq!(app.list.filter.state, Some(State::Failed));
    assert!(app.message.as_ref().unwrap().1.contains("colour:red"));
    // The typed text stays for mending.
    assert_eq!(app.mode, Mode::Filter("state:failed colour:red".into()));
    press(&mut app, Key::Code(KeyCode::Esc));
    // Esc in the list clears the filter.
    assert_eq!(press(&mut app, Key::Code(KeyCode::Esc)), Effect::Reload);
    assert!(app.list.filter.is_empty());
}

#[test]
fn writes_need_the_flag_and_a_confirmation() {
    let mut app = fixture::app();
    press(&mut app, Key::Char('3'));
    assert_eq!(press(&mut app, Key::Char('R')), Effect::None);
    assert!(app.message.as_ref().unwrap().1.contains("read-only"));
    assert_eq!(app.mode, Mode::Normal);

    app.allow_writes = true;
    // Row 0 is failed: R asks, `n` aborts, R again and `y` confirms.
    press(&mut app, Key::Char('R'));
    let id = app.snapshot.as_ref().unwrap().commands.as_ref().unwrap().rows[0].id;
    assert_eq!(app.mode, Mode::Confirm(Write::Retry(id)));
    assert_eq!(press(&mut app, Key::Char('n')), Effect::None);
    press(&mut app, Key::Char('R'));
    assert_eq!(press(&mut app, Key::Char('y')), Effect::Write(Write::Retry(id)));
    // Row 1 is running: retry is refused, cancel is asked.
    press(&mut app, Key::Char('j'));
    assert_eq!(press(&mut app, Key::Char('R')), Effect::None);
    press(&mut app, Key::Char('C'));
    let running = app.snapshot.as_ref().unwrap().commands.as_ref().unwrap().rows[1].id;
    assert_eq!(press(&mut app, Key::Char('y')), Effect::Write(Write::Cancel(running)));
    // Ctrl-C while a confirmation waits quits.
    press(&mut app, Key::Char('C'));
    assert_eq!(press(&mut app, Key::Ctrl('c')), Effect::Quit);
}

#[test]
fn the_flows_view_filters_by_state() {
    let mut app = fixture::app();
    press(&mut app, Key::Char('6'));
    assert_eq!(app.query().flow_state, None);
    for expected in [
        Some(orch::WorkflowState::Running),
        Some(orch::WorkflowState::Failed),
        Some(orch::WorkflowState::Succeeded),
        None,
    ] {
        assert_eq!(press(&mut app, Key::Char('s')), Effect::Reload);
        assert_eq!(app.query().flow_state, expected);
    }
    assert_eq!(app.list.order, orch::store::ListOrder::Created, "the list's sort is untouched");
}
