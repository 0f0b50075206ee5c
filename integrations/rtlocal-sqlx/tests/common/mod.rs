//! A real PostgreSQL server for the tests: a private cluster per test binary (or per
//! test), made with `initdb` in a temporary directory and run by `postgres` on a free
//! port of 127.0.0.1, trust authentication, as the `postgres` user when we are root
//! (PostgreSQL refuses to run as root).
#![allow(dead_code)] // each test binary uses its own part

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The application name the managed pools connect with, so `pg_stat_activity` tells
/// their connections from the test's own.
pub const APP: &str = "rtlocal-test";

/// A running PostgreSQL server. Stopped when this is dropped — or, for a server kept in
/// a `static`, when the test process exits: its wrapper shell waits on our end of a
/// pipe, then stops the server and removes its directory.
pub struct Server {
    pub port: u16,
    dir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// One server for the whole test binary.
pub static SERVER: LazyLock<Server> = LazyLock::new(Server::start);

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    // The newest version: "15" < "16" as numbers.
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run \
             `bash .ci/servers` (as root) to install the Debian package postgresql"
        )
    })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

impl Server {
    pub fn start() -> Server {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("rtlocal-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let root = is_root();
        if root {
            let status = Command::new("chown")
                .args(["postgres:", &dir.display().to_string()])
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown postgres: {} failed (is there a `postgres` user? `bash .ci/servers` \
                 installs PostgreSQL, which creates it)",
                dir.display()
            );
        }
        let port = free_port();
        let d = dir.display();
        let b = bin.display();
        // initdb, then the server in the background; the shell waits for its stdin (our
        // pipe) to close, then stops the server (fast shutdown) and removes the dir.
        let script = format!(
            "'{b}/initdb' -D '{d}/data' -U postgres -A trust -E UTF8 --no-sync \
               >'{d}/initdb.log' 2>&1 || exit 1; \
             '{b}/postgres' -D '{d}/data' -k '{d}' -p {port} -c listen_addresses=127.0.0.1 \
               -c fsync=off -c max_connections=200 >'{d}/postgres.log' 2>&1 & pid=$!; \
             read _ignored; kill -INT $pid 2>/dev/null; wait $pid; rm -rf '{d}'"
        );
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("a shell to start PostgreSQL");
        let stdin = child.stdin.take();
        let mut server = Server {
            port,
            dir,
            child,
            stdin,
        };
        server.wait_ready();
        server
    }

    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "initdb.log:\n{}\npostgres.log:\n{}",
            read("initdb.log"),
            read("postgres.log")
        )
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("PostgreSQL exited at start ({status}):\n{}", self.logs());
            }
            let opts = self.admin_options();
            if block_on(async move {
                let mut c = PgConnection::connect_with(&opts).await?;
                sqlx::query("SELECT 1").execute(&mut c).await?;
                c.close().await
            })
            .is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "PostgreSQL on port {} did not start in 60s:\n{}",
                    self.port,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn admin_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres")
            .application_name("rtlocal-admin")
    }

    /// What the managed pools connect with: application name [`APP`].
    pub fn options(&self) -> PgConnectOptions {
        self.admin_options().application_name(APP)
    }

    /// Connections the server has open for the managed pools (`pg_stat_activity`, asked
    /// over a connection of its own).
    pub fn connections(&self) -> i64 {
        let opts = self.admin_options();
        block_on(async move {
            let mut c = PgConnection::connect_with(&opts).await?;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(APP)
            .fetch_one(&mut c)
            .await?;
            c.close().await?;
            Ok::<_, sqlx::Error>(n)
        })
        .expect("pg_stat_activity")
    }

    /// Waits (up to `within`) for the server to report `n` connections of the pools.
    pub fn wait_connections(&self, n: i64, within: Duration) -> i64 {
        let deadline = Instant::now() + within;
        loop {
            let now = self.connections();
            if now == n || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own: callable
/// from anywhere, inside a runtime or not.
pub fn block_on<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || current_thread().block_on(fut))
        .join()
        .expect("the helper thread")
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A `current_thread` runtime with every driver.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}
