//! `orch-tui`: a live terminal monitor for `orch` queues on PostgreSQL, MySQL/MariaDB
//! or SQLite.
//!
//! The binary is the product; the library holds its parts so they are tested without
//! a terminal: [`data`] reads snapshots from any [`orch::Store`], [`app`] holds the
//! state and the keymap, [`ui`] draws, [`run`] ties them to a terminal, [`headless`]
//! serves scripts (`snapshot --json`, `check`), and [`demo`] fills a store with
//! sample work to watch.

#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod data;
pub mod demo;
pub mod filter;
pub mod headless;
pub mod run;
pub mod source;
pub mod ui;
