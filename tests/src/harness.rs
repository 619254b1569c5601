//! Harnesses: each hands out stores of one backend, isolated from each other.

use std::sync::Arc;

use async_trait::async_trait;
use orch::{Error, Store};

/// Gives the conformance suite fresh stores of one backend.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend's name, for messages.
    fn backend(&self) -> &'static str;

    /// A fresh, migrated store that shares nothing with any other store handed out.
    async fn store(&self) -> Arc<dyn Store>;

    /// A store in this harness's shared database with the given table prefix (not yet
    /// migrated); errors as the backend reports them.
    async fn store_with_prefix(&self, prefix: &str) -> Result<Arc<dyn Store>, Error>;
}

/// SQLite files in a temporary directory, one per store (one shared file for
/// [`Harness::store_with_prefix`]).
#[derive(Debug)]
pub struct SqliteHarness {
    dir: tempfile::TempDir,
}

impl SqliteHarness {
    /// A harness with its own temporary directory.
    pub fn new() -> Self {
        SqliteHarness { dir: tempfile::tempdir().expect("create a temporary directory") }
    }
}

impl Default for SqliteHarness {
    fn default() -> Self {
        Self::new()
    }
}

fn sqlite(path: &std::path::Path, prefix: &str) -> Result<orch_sqlite::SqliteStore, Error> {
    // NORMAL sync keeps the suite fast; durability on power loss is not what it checks.
    orch_sqlite::SqliteStore::builder(path)
        .prefix(prefix)
        .synchronous(orch_sqlite::Synchronous::Normal)
        .open()
}

#[async_trait]
impl Harness for SqliteHarness {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn store(&self) -> Arc<dyn Store> {
        let path = self.dir.path().join(format!("{}.db", uuid::Uuid::new_v4().simple()));
        let store = sqlite(&path, "orch_").expect("open sqlite store");
        store.migrate().await.expect("migrate sqlite store");
        Arc::new(store)
    }

    async fn store_with_prefix(&self, prefix: &str) -> Result<Arc<dyn Store>, Error> {
        let path = self.dir.path().join("shared.db");
        Ok(Arc::new(sqlite(&path, prefix)?))
    }
}
