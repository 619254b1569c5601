//! Testing handlers with `orch::testing`: one handler run inline with no store, then
//! the same handlers on a SQLite file driven step by step on a manual clock.
//!
//! ```text
//! cargo run -p orch-sqlite --example testing
//! ```
//!
//! `create_account` returns the new account's id and chains a `send_welcome`; the mail
//! server refuses the first attempt of every `send_welcome`. Inline, the program checks
//! the output and the chained follow-up, and that a malformed address fails for good.
//! On the store, it runs what is due, sees the email's retry wait for its backoff,
//! moves the clock past it and runs again. It prints each step and exits 0 when every
//! check held; the same calls work in a `#[tokio::test]`.

use std::sync::Arc;
use std::time::Duration;

use orch_sqlite::SqliteStore;
use orch_sqlite::orch::testing::{TestQueue, run_inline};
use orch_sqlite::orch::{Command, Context, HandlerError, NewCommand, Registry, Status, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct CreateAccountCommand {
    email: String,
}

impl Command for CreateAccountCommand {
    /// The account id.
    type Output = u64;

    fn on_success(&self, account: &u64) -> Vec<NewCommand> {
        vec![NewCommand::of(&SendWelcomeCommand { to: self.email.clone(), account: *account })]
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SendWelcomeCommand {
    to: String,
    account: u64,
}

impl Command for SendWelcomeCommand {
    type Output = ();
}

async fn create_account(cmd: CreateAccountCommand, _ctx: Context) -> Result<u64, HandlerError> {
    if !cmd.email.contains('@') {
        return Err(HandlerError::permanent(format!("{:?} is not an email address", cmd.email)));
    }
    Ok(1_000 + cmd.email.len() as u64)
}

async fn send_welcome(_cmd: SendWelcomeCommand, ctx: Context) -> Result<(), HandlerError> {
    if ctx.attempt() == 1 {
        return Err(HandlerError::new("mail server busy: try again later"));
    }
    Ok(())
}

fn registry() -> Result<Registry, orch_sqlite::orch::Error> {
    let mut registry = Registry::new();
    registry.register_fn(create_account)?.register_fn(send_welcome)?;
    Ok(registry)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = registry()?;

    // 1. Inline: the handler runs once in this task; no store, no worker.
    let ada = CreateAccountCommand { email: "ada@example.com".into() };
    let run = run_inline(&registry, &ada).await?;
    assert_eq!(run.result, Ok(1_015));
    run.assert_follow_up(&SendWelcomeCommand { to: "ada@example.com".into(), account: 1_015 });
    println!(
        "inline: create_account -> {:?}, chains {:?}",
        run.result,
        run.follow_ups_of::<SendWelcomeCommand>()
    );

    let run = run_inline(&registry, &CreateAccountCommand { email: "nobody".into() }).await?;
    assert!(run.failed_for_good());
    if let Err(error) = &run.result {
        println!("inline: create_account(\"nobody\") fails for good: {error}");
    }

    let run = run_inline(&registry, &SendWelcomeCommand { to: "ada@example.com".into(), account: 1 }).await?;
    assert!(run.will_retry());
    if let Err(error) = &run.result {
        println!("inline: send_welcome, attempt 1, fails and will be retried: {error}");
    }

    // 2. On a SQLite file, with a manual clock: nothing runs until the test says so.
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("orch.db"))?;
    store.migrate().await?;
    let queue = TestQueue::new(Arc::new(store), registry)?;

    let id = queue.push(&ada).await?;
    let summary = queue.run_until_idle().await?;
    println!(
        "run_until_idle: ran {}, succeeded {}, to retry {} (at {})",
        summary.ran(),
        summary.succeeded(),
        summary.retried(),
        queue.now()
    );
    assert_eq!((summary.ran(), summary.succeeded(), summary.retried()), (2, 1, 1));
    assert_eq!(queue.output::<CreateAccountCommand>(id).await?, Some(1_015));
    let email = SendWelcomeCommand { to: "ada@example.com".into(), account: 1_015 };
    queue.assert_pushed(&email).await?;

    // The retry is due 1 s (± 20 %) after the failure; half a second is not enough.
    queue.advance(Duration::from_millis(500));
    assert_eq!(queue.run_until_idle().await?.ran(), 0);
    queue.advance(Duration::from_secs(1));
    let summary = queue.run_until_idle().await?;
    println!("after 1.5 s: ran {}, succeeded {} (at {})", summary.ran(), summary.succeeded(), queue.now());
    assert_eq!(summary.succeeded(), 1);

    let welcome = &queue.records::<SendWelcomeCommand>().await?[0];
    assert_eq!(queue.status(welcome.id).await?, Status::Success("null".into()));
    println!("send_welcome succeeded on attempt {} of {}", welcome.attempts, welcome.max_attempts);
    println!("all checks held");
    Ok(())
}
