//! Every view drawn from a fixed snapshot at 80×24 and 120×40 and compared with the
//! committed text in `tests/snapshots/`, plus the styles of the cells that matter.
//!
//! After an intended change to the screens, rewrite the files with
//! `ORCH_TUI_BLESS=1 cargo test -p orch-tui --test render` and review the diff.

mod fixture;

use std::path::PathBuf;

use orch_tui::app::{Action, App, View};
use orch_tui::ui::{self, FAILED_STYLE, READ_ONLY_STYLE, STALE_STYLE, WRITES_STYLE};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Style;

use fixture::{T0, at};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

fn render(app: &App, width: u16, height: u16, now: orch::Timestamp) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| ui::draw(f, app, now)).unwrap();
    terminal.backend().buffer().clone()
}

fn text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.txt"));
    if std::env::var_os("ORCH_TUI_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with ORCH_TUI_BLESS=1 to write it", path.display()));
    assert_eq!(
        actual,
        expected,
        "{name} differs from {}; rerun with ORCH_TUI_BLESS=1 if intended",
        path.display()
    );
}

/// Finds `needle` on screen and returns the style of its first cell.
fn style_of(buffer: &Buffer, needle: &str) -> Style {
    let area = buffer.area;
    for y in 0..area.height {
        let row: Vec<&str> = (0..area.width).map(|x| buffer[(x, y)].symbol()).collect();
        let line = row.concat();
        if let Some(byte) = line.find(needle) {
            let x = line[..byte].chars().count() as u16;
            return buffer[(x, y)].style();
        }
    }
    panic!("{needle:?} not on screen:\n{}", text(buffer));
}

fn app_on(view: View) -> App {
    let mut app = fixture::app();
    app.handle(Action::Show(view));
    if view == View::Detail {
        app.detail =
            Some(app.snapshot.as_ref().unwrap().detail.as_ref().unwrap().record.as_ref().unwrap().id);
    }
    if view == View::Flows {
        app.workflow = Some(app.snapshot.as_ref().unwrap().flows.as_ref().unwrap().workflows[0].id);
    }
    app
}

#[test]
fn every_view_at_both_sizes() {
    let now = at(0) + std::time::Duration::from_millis(400);
    for view in View::ALL {
        for (w, h) in SIZES {
            let screen = text(&render(&app_on(view), w, h, now));
            let name =
                format!("{}_{w}x{h}", view.title().to_lowercase().replace([' ', '&'], "").replace("__", "_"));
            check_snapshot(&name, &screen);
        }
    }
    let mut help = fixture::app();
    help.handle(Action::Help);
    for (w, h) in SIZES {
        check_snapshot(&format!("help_{w}x{h}"), &text(&render(&help, w, h, now)));
    }
}

#[test]
fn the_help_screen_shows_every_binding() {
    let mut app = fixture::app();
    app.handle(Action::Help);
    for (w, h) in SIZES {
        let screen = text(&render(&app, w, h, T0));
        // Each entry exactly as the help box writes it: its keys, padded, then its text
        // (nothing else on screen has that shape).
        for (keys, help) in ui::help_entries() {
            let entry = format!("{keys:<11}{help}");
            assert!(screen.contains(&entry), "{w}x{h} help lacks {entry:?}:\n{screen}");
        }
        assert_eq!(ui::help_entries().len(), orch_tui::app::KEYMAP.len());
    }
}

#[test]
fn key_cells_are_styled() {
    let now = at(0);
    let overview = render(&app_on(View::Overview), 120, 40, now);
    // The failed count (10 in the fixture) is red and bold, its label too; a zero
    // count is dimmed.
    for cell in ["failed     ", "10         +2"] {
        let style = style_of(&overview, cell);
        assert_eq!((style.fg, style.add_modifier), (FAILED_STYLE.fg, FAILED_STYLE.add_modifier), "{cell}");
    }
    let names = render(&app_on(View::Names), 120, 40, now);
    let zero = style_of(&names, "0     0     2     0     0       3");
    assert_eq!(zero.fg, Some(ratatui::style::Color::DarkGray), "zero counts are dim");
    assert_eq!(style_of(&overview, "READ-ONLY").bg, READ_ONLY_STYLE.bg);
    let mark = style_of(&names, "NO WORKER");
    assert_eq!((mark.fg, mark.add_modifier), (FAILED_STYLE.fg, FAILED_STYLE.add_modifier));

    // A failed refresh marks the snapshot STALE, in its own colours.
    let mut app = app_on(View::Overview);
    app.on_error("connection refused".into());
    let stale = render(&app, 120, 40, now);
    assert_eq!(style_of(&stale, "STALE").bg, STALE_STYLE.bg);
    assert!(text(&stale).contains("refresh failed: connection refused"));
    // A late snapshot is stale too, a fresh one is not.
    let app = app_on(View::Overview);
    assert!(!text(&render(&app, 120, 40, at(2))).contains("STALE"));
    assert!(text(&render(&app, 120, 40, at(4))).contains("STALE"));

    let mut writes = App::new("sqlite", "sqlite://demo.db".into(), std::time::Duration::from_secs(1), true);
    writes.on_snapshot(fixture::snapshot());
    let screen = render(&writes, 120, 40, T0);
    assert_eq!(style_of(&screen, "WRITES ON").bg, WRITES_STYLE.bg);
    assert!(!text(&screen).contains("READ-ONLY"));
}

#[test]
fn no_snapshot_yet_and_unreachable_store() {
    let mut app =
        App::new("postgres", "postgres://app:***@db/jobs".into(), std::time::Duration::from_secs(1), false);
    let screen = text(&render(&app, 80, 24, T0));
    assert!(screen.contains("reading the store"), "{screen}");
    app.on_error("connection refused (os error 111)".into());
    let screen = text(&render(&app, 80, 24, T0));
    assert!(screen.contains("cannot read the store: connection refused"), "{screen}");
    assert!(screen.contains("STALE"), "{screen}");
    assert!(screen.contains("postgres://app:***@db/jobs"), "{screen}");
}
