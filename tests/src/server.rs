//! Private database servers for the restart faults: a PostgreSQL cluster or a MariaDB
//! instance of the machine's own binaries, in a temporary directory, on a free port,
//! which a test may stop and start as often as it likes without touching the shared
//! servers the rest of the suite uses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use orch::{Clock, SystemClock};

/// How a server is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A clean shutdown: PostgreSQL's fast mode, MariaDB on SIGTERM.
    Clean,
    /// A crash: PostgreSQL's immediate mode (recovery on the next start), MariaDB
    /// killed with SIGKILL.
    Crash,
}

/// A database server of its own, stopped and removed on drop.
#[derive(Debug)]
pub struct PrivateServer {
    backend: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// The running `mariadbd` (PostgreSQL runs detached under `pg_ctl`).
    mariadbd: Option<Child>,
    running: bool,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs `program` (as the `postgres` user when this process is root: PostgreSQL
/// refuses to run as root) and returns its combined output on failure.
fn run_as_postgres(program: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?} failed ({}): {}{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The newest PostgreSQL installation's binary directory.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl PrivateServer {
    /// Creates and starts a server of `backend` (`postgres` or `mysql`); an error says
    /// what is missing or what failed.
    pub async fn start_new(backend: &str) -> Result<PrivateServer, String> {
        let backend: &'static str = match backend {
            "postgres" => "postgres",
            "mysql" => "mysql",
            other => return Err(format!("no private server for backend {other}")),
        };
        let bin = match backend {
            "postgres" => postgres_bin().ok_or("PostgreSQL's binaries are not under /usr/lib/postgresql")?,
            _ => {
                let bin = PathBuf::from("/usr/sbin");
                if !bin.join("mariadbd").exists() {
                    return Err("/usr/sbin/mariadbd is missing".into());
                }
                bin
            }
        };
        let dir = tempfile::Builder::new().prefix("orch-server-").tempdir().map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let mut server = PrivateServer { backend, dir, port, bin, mariadbd: None, running: false };
        let setup = {
            let (backend, data, dir, bin) =
                (server.backend, server.data(), server.dir.path().to_owned(), server.bin.clone());
            tokio::task::spawn_blocking(move || init(backend, &bin, &dir, &data))
        };
        setup.await.map_err(|e| e.to_string())??;
        server.start().await?;
        if backend == "mysql" {
            use orch_diesel_mysql::diesel_async::{
                AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection,
            };
            let mut conn = AsyncMysqlConnection::establish(&server.admin_url())
                .await
                .map_err(|e| format!("connect to the private MariaDB: {e}"))?;
            conn.batch_execute("CREATE DATABASE IF NOT EXISTS test").await.map_err(|e| e.to_string())?;
        }
        Ok(server)
    }

    /// The URL of the server's `test` database (PostgreSQL: `postgres`).
    pub fn url(&self) -> String {
        match self.backend {
            "postgres" => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            _ => format!("mysql://root@127.0.0.1:{}/test", self.port),
        }
    }

    fn admin_url(&self) -> String {
        match self.backend {
            "postgres" => self.url(),
            _ => format!("mysql://root@127.0.0.1:{}/mysql", self.port),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server and waits until it accepts connections (at most 60 s).
    pub async fn start(&mut self) -> Result<(), String> {
        match self.backend {
            "postgres" => {
                let options = format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                    self.port,
                    self.dir.path().display()
                );
                let (pg_ctl, data, log) =
                    (self.bin.join("pg_ctl"), self.data(), self.dir.path().join("postgres.log"));
                tokio::task::spawn_blocking(move || {
                    run_as_postgres(
                        &pg_ctl,
                        &[
                            "-D",
                            &data.to_string_lossy(),
                            "-l",
                            &log.to_string_lossy(),
                            "-o",
                            &options,
                            "-w",
                            "-t",
                            "60",
                            "start",
                        ],
                    )
                })
                .await
                .map_err(|e| e.to_string())??;
            }
            _ => {
                let dir = self.dir.path();
                let mut command = Command::new(self.bin.join("mariadbd"));
                command
                    .arg("--no-defaults")
                    .arg(format!("--datadir={}", self.data().display()))
                    .arg(format!("--port={}", self.port))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
                    .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
                    .arg(format!("--log-error={}", dir.join("mariadb.err").display()))
                    .arg("--innodb-buffer-pool-size=64M")
                    .arg("--max-connections=300")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if is_root() {
                    command.arg("--user=root");
                }
                self.mariadbd = Some(command.spawn().map_err(|e| format!("start mariadbd: {e}"))?);
            }
        }
        self.running = true;
        self.wait_accepting(Duration::from_secs(60)).await
    }

    /// Polls until the server accepts a connection (and a query) or `limit` passes.
    async fn wait_accepting(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = SystemClock.now() + limit;
        loop {
            let attempt = self.probe().await;
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if SystemClock.now() > deadline => {
                    return Err(format!("{} did not accept connections within {limit:?}: {e}", self.backend));
                }
                Err(_) => {}
            }
            if let Some(child) = self.mariadbd.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.path().join("mariadb.err")).unwrap_or_default();
                return Err(format!("mariadbd exited ({status}): {log}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn probe(&self) -> Result<(), String> {
        use orch_diesel_mysql::diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};
        use orch_diesel_pg::diesel_async::AsyncPgConnection;
        let url = self.admin_url();
        let connect = async {
            if self.backend == "postgres" {
                let mut conn = AsyncPgConnection::establish(&url).await.map_err(|e| e.to_string())?;
                conn.batch_execute("SELECT 1").await.map_err(|e| e.to_string())
            } else {
                let mut conn = AsyncMysqlConnection::establish(&url).await.map_err(|e| e.to_string())?;
                conn.batch_execute("SELECT 1").await.map_err(|e| e.to_string())
            }
        };
        tokio::time::timeout(Duration::from_secs(2), connect).await.map_err(|_| "timed out".to_owned())?
    }

    /// Stops the server and waits until it is gone.
    pub async fn stop(&mut self, how: Stop) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        match self.backend {
            "postgres" => {
                let mode = if how == Stop::Crash { "immediate" } else { "fast" };
                let (pg_ctl, data) = (self.bin.join("pg_ctl"), self.data());
                tokio::task::spawn_blocking(move || {
                    run_as_postgres(
                        &pg_ctl,
                        &["-D", &data.to_string_lossy(), "-m", mode, "-w", "-t", "60", "stop"],
                    )
                })
                .await
                .map_err(|e| e.to_string())?
            }
            _ => {
                let Some(mut child) = self.mariadbd.take() else { return Ok(()) };
                let signal = if how == Stop::Crash { "KILL" } else { "TERM" };
                let status = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status();
                status.map_err(|e| e.to_string())?;
                tokio::task::spawn_blocking(move || child.wait().map(drop).map_err(|e| e.to_string()))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

/// Creates the data directory of a new server.
fn init(backend: &str, bin: &Path, dir: &Path, data: &Path) -> Result<(), String> {
    if backend == "postgres" {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown {} failed", dir.display()));
            }
        }
        run_as_postgres(
            &bin.join("initdb"),
            &["-D", &data.to_string_lossy(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
        )
    } else {
        let mut command = Command::new("mariadb-install-db");
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdin(Stdio::null());
        if is_root() {
            command.arg("--user=root");
        }
        let output = command.output().map_err(|e| format!("mariadb-install-db: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "mariadb-install-db failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.mariadbd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.running && self.backend == "postgres" {
            let data = self.data();
            let _ = run_as_postgres(
                &self.bin.join("pg_ctl"),
                &["-D", &data.to_string_lossy(), "-m", "immediate", "-w", "stop"],
            );
        }
    }
}
