//! A private PostgreSQL cluster on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::process::{self, Attempt, Readiness, Supervised};

/// The application name [`Postgres::options`] connects with, so `pg_stat_activity`
/// tells the connections under test from the fixture's own.
pub const APP: &str = "rtlocal-test";

/// What the fixture's own connections (readiness, counting) call themselves.
const ADMIN_APP: &str = "rtlocal-testkit-admin";

/// Bounds every question the fixture asks the server.
const ASK_BOUND: Duration = Duration::from_secs(10);

/// A private PostgreSQL cluster on 127.0.0.1: `initdb` in a temporary directory, trust
/// authentication, `fsync` off, run as the `postgres` user when we are root. Stopped
/// (and its directory removed) when dropped, or when the process ends.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    dir: PathBuf,
    // Dropped last: stops the server.
    _process: Supervised,
}

/// The newest installed PostgreSQL's `bin` directory.
pub(crate) fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    // The newest version, by number ("9" < "16").
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl Postgres {
    /// Makes a cluster, starts the server and waits (up to 60 s) for it to answer.
    ///
    /// # Panics
    /// PostgreSQL is missing or did not start (its logs are in the message).
    pub fn start() -> Postgres {
        Postgres::start_trying(process::candidate_ports())
    }

    /// As [`start`](Self::start), trying `ports` in turn: a port the server's log says is
    /// taken ("Address already in use") is left for the next.
    ///
    /// # Panics
    /// As `start`; also when every port is taken.
    pub fn start_trying(ports: impl IntoIterator<Item = u16>) -> Postgres {
        let bin = bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run \
                 `bash .ci/servers` (as root) to install the Debian package postgresql"
            )
        });
        process::on_a_free_port("PostgreSQL", ports, |port| Postgres::attempt(&bin, port))
    }

    fn attempt(bin: &Path, port: u16) -> Attempt<Postgres> {
        let dir = process::temp_dir("rtlocal-pg-");
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
        let (b, d) = (bin.display(), dir.display());
        let prelude = format!(
            "'{b}/initdb' -D '{d}/data' -U postgres -A trust -E UTF8 --no-sync \
               >'{d}/initdb.log' 2>&1 || exit 1;"
        );
        let server = format!(
            "'{b}/postgres' -D '{d}/data' -k '{d}' -p {port} -c listen_addresses=127.0.0.1 \
               -c fsync=off -c max_connections=200 >'{d}/postgres.log' 2>&1"
        );
        let mut process =
            Supervised::spawn(root.then_some("postgres"), &prelude, &server, "INT", &dir);
        let data_dir = dir.join("data");
        let admin = admin_options(port);
        let readiness = process::wait_ready(&mut process, || {
            // Ours, not a server that already listened on this port.
            serves(&admin, &data_dir)
        });
        let logs = || {
            format!(
                "initdb.log:\n{}\npostgres.log:\n{}",
                process::read_log(&dir.join("initdb.log")),
                process::read_log(&dir.join("postgres.log"))
            )
        };
        match readiness {
            Readiness::Ready => Attempt::Started(Postgres {
                port,
                dir,
                _process: process,
            }),
            Readiness::Exited(_)
                if process::port_taken(&process::read_log(&dir.join("postgres.log"))) =>
            {
                Attempt::PortTaken
            }
            Readiness::Exited(status) => {
                panic!("PostgreSQL exited at start ({status}):\n{}", logs())
            }
            Readiness::TimedOut => panic!(
                "PostgreSQL on port {port} did not start in {:?}:\n{}",
                process::START_BOUND,
                logs()
            ),
        }
    }

    /// The TCP port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its temporary directory (the cluster is in `data/`, the logs beside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the connections under test connect with: user and database `postgres`,
    /// application name [`APP`].
    pub fn options(&self) -> PgConnectOptions {
        admin_options(self.port).application_name(APP)
    }

    /// Client connections with application name [`APP`] the server has open
    /// (`pg_stat_activity`, asked over a connection of the fixture's own).
    ///
    /// # Panics
    /// The server could not be asked.
    pub fn connections(&self) -> usize {
        let opts = admin_options(self.port);
        let n = crate::block_on(async move {
            tokio::time::timeout(ASK_BOUND, async {
                let mut c = PgConnection::connect_with(&opts).await?;
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND application_name = $1",
                )
                .bind(APP)
                .fetch_one(&mut c)
                .await?;
                c.close().await?;
                Ok::<_, sqlx::Error>(n)
            })
            .await
        });
        match n {
            Ok(Ok(n)) => usize::try_from(n).expect("a count is not negative"),
            Ok(Err(e)) => panic!("asking PostgreSQL for pg_stat_activity failed: {e}"),
            Err(_) => panic!("PostgreSQL did not answer within {ASK_BOUND:?}"),
        }
    }

    /// Waits (up to `within`, a hang guard) for the server to have `n`
    /// [`connections`](Self::connections); returns how many it has then.
    pub fn wait_connections(&self, n: usize, within: Duration) -> usize {
        crate::settle(within, n, || self.connections())
    }
}

fn admin_options(port: u16) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database("postgres")
        .application_name(ADMIN_APP)
}

/// Whether the server on `admin`'s port answers, from `data_dir`.
fn serves(admin: &PgConnectOptions, data_dir: &Path) -> bool {
    let opts = admin.clone();
    let answer = crate::block_on(async move {
        // Short: whatever listens on the port may never answer.
        tokio::time::timeout(Duration::from_secs(2), async {
            let mut c = PgConnection::connect_with(&opts).await?;
            let dir: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
                .fetch_one(&mut c)
                .await?;
            c.close().await?;
            Ok::<_, sqlx::Error>(dir)
        })
        .await
    });
    matches!(answer, Ok(Ok(dir)) if Path::new(&dir) == data_dir)
}
