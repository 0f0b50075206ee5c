//! A real redis-server for the tests: a private one per test binary, on a free port of
//! 127.0.0.1, in a temporary directory, without persistence.
#![allow(dead_code)] // each test binary uses its own part

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// A running redis-server. Stopped when this is dropped — or, for a server kept in a
/// `static`, when the test process exits: its wrapper shell waits on our end of a pipe,
/// so the server cannot outlive the test binary.
pub struct Server {
    pub port: u16,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// One server for the whole test binary.
pub static SERVER: LazyLock<Server> = LazyLock::new(Server::start);

impl Server {
    pub fn start() -> Server {
        let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "redis-server is not installed: run `bash .ci/servers` (as root) to install \
                     the Debian package redis-server"
                )
            });
        let dir = tempfile::Builder::new()
            .prefix("rtlocal-redis-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let port = free_port();
        // The shell starts the server, then waits for its stdin (our pipe) to close: when
        // this process exits or drops the Server, it stops the server and removes the dir.
        let script = format!(
            "{bin} --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir '{dir}' \
             --daemonize no --loglevel warning --logfile '{dir}/redis.log' & pid=$!; \
             read _ignored; kill $pid 2>/dev/null; wait $pid; rm -rf '{dir}'",
            dir = dir.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sh to start redis-server");
        let stdin = child.stdin.take();
        let server = Server { port, child, stdin };
        server.wait_ready(&dir);
        server
    }

    fn wait_ready(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut con) = self.admin()
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                panic!(
                    "redis-server on port {} did not start in 20s; its log:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A blocking connection of its own, for asking the server what it sees.
    pub fn admin(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        client.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Client connections the server has open, not counting the one asking.
    pub fn connections(&self) -> usize {
        let mut con = self.admin().expect("an admin connection");
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut con)
            .expect("CLIENT LIST");
        list.lines().filter(|l| !l.trim().is_empty()).count() - 1
    }

    /// Waits (up to `within`) for the server to report `n` connections from others.
    pub fn wait_connections(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let now = self.connections();
            if now == n || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
