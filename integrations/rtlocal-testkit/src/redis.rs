//! A private redis-server on 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use crate::process::{self, Attempt, Readiness, Supervised};

/// Bounds every question the fixture asks the server.
const ASK_BOUND: Duration = Duration::from_secs(2);

const REDIS_BINS: [&str; 2] = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"];

/// The installed redis-server.
pub(crate) fn redis_bin() -> Option<&'static str> {
    REDIS_BINS.into_iter().find(|p| Path::new(p).exists())
}

/// A private redis-server on 127.0.0.1, in a temporary directory, without persistence.
/// Stopped (and its directory removed) when dropped, or when the process ends.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    // Dropped last: stops the server.
    _process: Supervised,
}

impl Redis {
    /// Starts redis-server and waits (up to 60 s) for it to answer.
    ///
    /// # Panics
    /// redis-server is missing or did not start (its log is in the message).
    pub fn start() -> Redis {
        Redis::start_trying(process::candidate_ports())
    }

    /// As [`start`](Self::start), trying `ports` in turn: a port the server's log says is
    /// taken ("Address already in use") is left for the next.
    ///
    /// # Panics
    /// As `start`; also when every port is taken.
    pub fn start_trying(ports: impl IntoIterator<Item = u16>) -> Redis {
        let bin = redis_bin().unwrap_or_else(|| {
            panic!(
                "redis-server is not installed: run `bash .ci/servers` (as root) to install \
                 the Debian package redis-server"
            )
        });
        process::on_a_free_port("redis-server", ports, |port| Redis::attempt(bin, port))
    }

    fn attempt(bin: &str, port: u16) -> Attempt<Redis> {
        let dir = process::temp_dir("rtlocal-redis-");
        let d = dir.display();
        let server = format!(
            "{bin} --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir '{d}' \
             --daemonize no --loglevel warning --logfile '{d}/redis.log'"
        );
        let mut process = Supervised::spawn(None, "", &server, "TERM", &dir);
        // redis-server works in the directory's canonical path.
        let own_dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        let readiness = process::wait_ready(&mut process, || serves(port, &own_dir));
        let log = || process::read_log(&dir.join("redis.log"));
        match readiness {
            Readiness::Ready => Attempt::Started(Redis {
                port,
                _process: process,
            }),
            Readiness::Exited(_) if process::port_taken(&log()) => Attempt::PortTaken,
            Readiness::Exited(status) => {
                panic!(
                    "redis-server exited at start ({status}); its log:\n{}",
                    log()
                )
            }
            Readiness::TimedOut => panic!(
                "redis-server on port {port} did not start in {:?}; its log:\n{}",
                process::START_BOUND,
                log()
            ),
        }
    }

    /// The TCP port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        url(self.port)
    }

    /// A blocking connection of its own, for asking the server what it sees.
    ///
    /// # Errors
    /// The server could not be reached.
    pub fn admin(&self) -> redis::RedisResult<redis::Connection> {
        admin(self.port)
    }

    /// Client connections the server has open (`CLIENT LIST`), not counting the one
    /// asking.
    ///
    /// # Panics
    /// The server could not be asked.
    pub fn connections(&self) -> usize {
        let asked = self
            .admin()
            .and_then(|mut con| redis::cmd("CLIENT").arg("LIST").query::<String>(&mut con));
        match asked {
            Ok(list) => list.lines().filter(|l| !l.trim().is_empty()).count() - 1,
            Err(e) => panic!("asking redis-server for CLIENT LIST failed: {e}"),
        }
    }

    /// Waits (up to `within`, a hang guard) for the server to have `n`
    /// [`connections`](Self::connections); returns how many it has then.
    pub fn wait_connections(&self, n: usize, within: Duration) -> usize {
        crate::settle(within, n, || self.connections())
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

fn admin(port: u16) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(url(port))?.get_connection_with_timeout(ASK_BOUND)?;
    // Bounded: whatever listens on the port may never answer.
    con.set_read_timeout(Some(ASK_BOUND))?;
    con.set_write_timeout(Some(ASK_BOUND))?;
    Ok(con)
}

/// Whether the server on `port` answers, working in `dir`.
fn serves(port: u16, dir: &Path) -> bool {
    let Ok(mut con) = admin(port) else {
        return false;
    };
    let answer: redis::RedisResult<Vec<String>> =
        redis::cmd("CONFIG").arg("GET").arg("dir").query(&mut con);
    matches!(answer, Ok(pair) if pair.get(1).is_some_and(|d| Path::new(d) == dir))
}
