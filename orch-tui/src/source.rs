//! Opening a store from a URL: `postgres://…`, `mysql://…` or `sqlite://path`.
//!
//! The monitor only reads: it never runs migrations, and a SQLite path that does not
//! exist is an error instead of a new empty database. Unless it may write
//! ([`Access::ReadWrite`], the monitor's `--allow-writes`), its sessions are read-only
//! at the database level: PostgreSQL and MySQL/MariaDB connections are read-only
//! sessions (`SET SESSION … READ ONLY`), a SQLite file is opened with SQLite's
//! read-only flag and `query_only`, so the database refuses a write even if one is
//! attempted.

use std::sync::Arc;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::time::Duration;

use orch::store::backend::redact_url;
use orch::{Error, Store};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`.
    Mysql,
    /// `sqlite://path` (or `sqlite:path`).
    Sqlite,
}

impl Backend {
    /// The backend's display name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }

    /// The backend a URL names, from its scheme.
    pub fn of_url(url: &str) -> Result<Backend, Error> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::Mysql),
            "sqlite" => Ok(Backend::Sqlite),
            _ => Err(Error::invalid_config(format!(
                "unsupported store URL {:?}: expected postgres://…, mysql://… or sqlite://path",
                redact_url(url)
            ))),
        }
    }
}

/// What a store opened by [`Source::open_with`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Read only, enforced by the database: every session refuses writes. The default.
    #[default]
    ReadOnly,
    /// Read and write (the monitor's retry and cancel, the demo).
    ReadWrite,
}

impl Access {
    /// [`Access::ReadWrite`] when `writes` is true, else [`Access::ReadOnly`].
    pub fn allowing_writes(writes: bool) -> Self {
        if writes { Access::ReadWrite } else { Access::ReadOnly }
    }

    fn read_only(self) -> bool {
        self == Access::ReadOnly
    }
}

/// Where the monitor reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The URL as given.
    pub url: String,
    /// The table prefix.
    pub prefix: String,
}

impl Source {
    /// The backend the URL names (an error for an unknown scheme).
    pub fn backend(&self) -> Result<Backend, Error> {
        Backend::of_url(&self.url)
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }

    /// Opens the store read-only at the database level (no migrations); see
    /// [`Source::open_with`].
    pub async fn open(&self) -> Result<Arc<dyn Store>, Error> {
        self.open_with(Access::ReadOnly).await
    }

    /// Opens the store (no migrations) with the given access. Server stores get a
    /// small pool: the monitor runs one refresh at a time.
    pub async fn open_with(&self, access: Access) -> Result<Arc<dyn Store>, Error> {
        let backend = self.backend()?;
        let read_only = access.read_only();
        match backend {
            Backend::Sqlite => open_sqlite(&self.url, &self.prefix, read_only),
            Backend::Postgres => open_postgres(&self.url, &self.prefix, read_only).await,
            Backend::Mysql => open_mysql(&self.url, &self.prefix, read_only).await,
        }
    }
}

/// The file path of a `sqlite://path` or `sqlite:path` URL.
pub fn sqlite_path(url: &str) -> &str {
    let rest = &url["sqlite:".len().min(url.len())..];
    rest.strip_prefix("//").unwrap_or(rest)
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(feature = "sqlite")]
fn open_sqlite(url: &str, prefix: &str, read_only: bool) -> Result<Arc<dyn Store>, Error> {
    let path = sqlite_path(url);
    if path.is_empty() {
        return Err(Error::invalid_config("sqlite URL without a path: use sqlite://path/to/file.db"));
    }
    if path != ":memory:" && !std::path::Path::new(path).is_file() {
        return Err(Error::invalid_config(format!("no SQLite database at {path:?}")));
    }
    Ok(Arc::new(orch_sqlite::SqliteStore::builder(path).prefix(prefix).read_only(read_only).open()?))
}

#[cfg(not(feature = "sqlite"))]
fn open_sqlite(_url: &str, _prefix: &str, _read_only: bool) -> Result<Arc<dyn Store>, Error> {
    Err(Error::invalid_config("this orch-tui was built without the `sqlite` feature"))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, prefix: &str, read_only: bool) -> Result<Arc<dyn Store>, Error> {
    let store = orch_diesel_pg::PgStore::builder(url)
        .prefix(prefix)
        .read_only(read_only)
        .max_connections(2)
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str, _prefix: &str, _read_only: bool) -> Result<Arc<dyn Store>, Error> {
    Err(Error::invalid_config("this orch-tui was built without the `postgres` feature"))
}

#[cfg(feature = "mysql")]
async fn open_mysql(url: &str, prefix: &str, read_only: bool) -> Result<Arc<dyn Store>, Error> {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    let store = orch_diesel_mysql::MysqlStore::builder(url)
        .prefix(prefix)
        .read_only(read_only)
        .max_connections(2)
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "mysql"))]
async fn open_mysql(_url: &str, _prefix: &str, _read_only: bool) -> Result<Arc<dyn Store>, Error> {
    Err(Error::invalid_config("this orch-tui was built without the `mysql` feature"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_backends() {
        assert_eq!(Backend::of_url("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("postgresql://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("mysql://root@h/db").unwrap(), Backend::Mysql);
        assert_eq!(Backend::of_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        let err = Backend::of_url("redis://h").unwrap_err().to_string();
        assert!(err.contains("unsupported store URL"), "{err}");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://data/q.db"), "data/q.db");
        assert_eq!(sqlite_path("sqlite:///abs/q.db"), "/abs/q.db");
        assert_eq!(sqlite_path("sqlite:q.db"), "q.db");
    }

    #[tokio::test]
    async fn a_missing_sqlite_file_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        let source = Source { url: format!("sqlite://{}", path.display()), prefix: "orch_".into() };
        let err = source.open().await.err().expect("an error").to_string();
        assert!(err.contains("no SQLite database"), "{err}");
        assert!(!path.exists());
    }
}
