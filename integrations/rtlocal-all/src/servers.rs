//! Real servers on 127.0.0.1, each on a free port, each stopped when dropped, each able to
//! say how many client connections it has open:
//!
//! * [`HttpServer`]: hyper (HTTP/1.1) on a runtime and thread of its own; `/` answers
//!   "hello", `/slow/MS` answers after MS milliseconds;
//! * [`Redis`]: a private `redis-server` in a temporary directory, no persistence;
//! * [`Postgres`]: a private cluster (`initdb`, then `postgres`) in a temporary directory,
//!   trust authentication, run as the `postgres` user when we are root (PostgreSQL refuses
//!   to run as root);
//! * [`Grpc`]: tonic's health service, in process, on a runtime and thread of its own.
//!
//! The external servers run under a shell that waits on a pipe from this process: when the
//! handle is dropped — or the process dies — the shell stops the server and removes its
//! directory.

use std::convert::Infallible;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{BOUND, Error};

/// The application name the managed PostgreSQL pools connect with, so
/// `pg_stat_activity` tells their connections from the checker's.
pub const PG_APP: &str = "rtlocal-all";

/// How long a server may take to start before it is reported as failed.
const START_BOUND: Duration = Duration::from_secs(60);

const REDIS_BINS: [&str; 2] = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"];

/// `Ok` when redis-server and PostgreSQL (`initdb`, `postgres`) are installed; otherwise a
/// message naming what is missing and how to install it.
///
/// ```no_run
/// if let Err(missing) = rtlocal_all::servers::check_installed() {
///     eprintln!("{missing}");
///     std::process::exit(2);
/// }
/// ```
///
/// # Errors
/// The message, when something is missing.
pub fn check_installed() -> Result<(), String> {
    let mut missing = Vec::new();
    if redis_bin().is_none() {
        missing.push("redis-server (Debian package redis-server)");
    }
    if pg_bin_dir().is_none() {
        missing.push("PostgreSQL: no /usr/lib/postgresql/*/bin/initdb (Debian package postgresql)");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing: {}; run `bash .ci/servers` (as root) to install them",
            missing.join(", ")
        ))
    }
}

/// The four servers.
#[derive(Debug)]
pub struct Servers {
    /// HTTP/1.1 (hyper): for the HTTP and reqwest managers.
    pub http: HttpServer,
    /// redis-server.
    pub redis: Redis,
    /// PostgreSQL.
    pub postgres: Postgres,
    /// gRPC (tonic's health service).
    pub grpc: Grpc,
}

/// Client connections each server has open, as the server sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Open {
    /// The HTTP server's open connections.
    pub http: usize,
    /// redis `CLIENT LIST`, not counting the connection asking.
    pub redis: usize,
    /// `pg_stat_activity`: client backends of the managed pools' user or application
    /// name, not counting the connection asking.
    pub postgres: usize,
    /// The gRPC server's open connections.
    pub grpc: usize,
}

impl Open {
    /// Whether every server has 0 connections from us.
    pub fn is_zero(&self) -> bool {
        *self == Open::default()
    }
}

impl std::fmt::Display for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "http {}, redis {}, postgres {}, grpc {}",
            self.http, self.redis, self.postgres, self.grpc
        )
    }
}

impl Servers {
    /// Starts all four (PostgreSQL and redis-server must be installed: see
    /// [`check_installed`]).
    ///
    /// # Errors
    /// A server that could not be started, with its log.
    pub fn start() -> Result<Servers, Error> {
        check_installed()?;
        // The slowest (initdb) on a thread of its own while the others start.
        let postgres = std::thread::spawn(Postgres::start);
        let http = HttpServer::start()?;
        let redis = Redis::start()?;
        let grpc = Grpc::start()?;
        let postgres = postgres
            .join()
            .map_err(|_| "the thread starting PostgreSQL panicked")??;
        Ok(Servers {
            http,
            redis,
            postgres,
            grpc,
        })
    }

    /// What each server has open now.
    ///
    /// # Errors
    /// redis or PostgreSQL could not be asked.
    pub fn open(&self) -> Result<Open, Error> {
        Ok(Open {
            http: self.http.open(),
            redis: self.redis.connections()?,
            postgres: self.postgres.connections()?,
            grpc: self.grpc.open(),
        })
    }

    /// Waits (up to `within`, a hang guard) for every server to have 0 connections from
    /// us; returns what they have then.
    ///
    /// # Errors
    /// redis or PostgreSQL could not be asked.
    pub fn wait_closed(&self, within: Duration) -> Result<Open, Error> {
        let deadline = Instant::now() + within;
        loop {
            let open = self.open()?;
            if open.is_zero() || Instant::now() >= deadline {
                return Ok(open);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

#[derive(Debug, Default)]
struct HttpCounts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
}

/// A hyper HTTP/1.1 server on 127.0.0.1, on a runtime of its own (always driven, whatever
/// the clients' runtimes do), counting the connections it accepts and has open.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    counts: Arc<HttpCounts>,
    rt: Option<tokio::runtime::Runtime>,
}

impl HttpServer {
    /// Starts the server. Routes: `/` → "hello"; `/slow/MS` → "slow" after MS ms.
    ///
    /// # Errors
    /// Its runtime or listener could not be made.
    pub fn start() -> Result<HttpServer, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("http-server")
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(HttpCounts::default());
        let c = Arc::clone(&counts);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                c.open.fetch_add(1, Ordering::SeqCst);
                let conn = Arc::clone(&c);
                tokio::spawn(async move {
                    let req_counts = Arc::clone(&conn);
                    let svc = service_fn(move |req| http_route(req, Arc::clone(&req_counts)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    conn.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(HttpServer {
            addr,
            counts,
            rt: Some(rt),
        })
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections open now, as the server sees them.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since the server started.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Requests received since the server started (counted when they arrive, before the
    /// answer).
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn http_route(
    req: Request<Incoming>,
    counts: Arc<HttpCounts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(ms) = req.uri().path().strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"slow"))));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

// ---------------------------------------------------------------------------------------
// Shared by the external servers

/// A server run by `sh -c script` (directly, or as another user): the script starts it
/// in the background, then waits for a line (or end of file) on its stdin — our pipe —
/// and stops it. So dropping the handle, or this process ending, stops the server.
#[derive(Debug)]
struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Supervised {
    fn spawn(mut cmd: Command) -> Result<Supervised, Error> {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
        let stdin = child.stdin.take();
        Ok(Supervised { child, stdin })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn temp_dir(prefix: &str) -> Result<PathBuf, Error> {
    Ok(tempfile::Builder::new().prefix(prefix).tempdir()?.keep())
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Redis

fn redis_bin() -> Option<&'static str> {
    REDIS_BINS.into_iter().find(|p| Path::new(p).exists())
}

/// A private redis-server on 127.0.0.1, in a temporary directory, without persistence.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    process: Supervised,
}

impl Redis {
    /// Starts redis-server and waits (up to 60 s) for it to answer `PING`.
    ///
    /// # Errors
    /// redis-server is missing or did not start (its log is in the message).
    pub fn start() -> Result<Redis, Error> {
        let bin = redis_bin().ok_or_else(check_installed_message)?;
        let dir = temp_dir("rtlocal-all-redis-")?;
        let port = free_port()?;
        let d = dir.display();
        let script = format!(
            "{bin} --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir '{d}' \
             --daemonize no --loglevel warning --logfile '{d}/redis.log' & pid=$!; \
             read _ignored; kill $pid 2>/dev/null; wait $pid; rm -rf '{d}'"
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let mut redis = Redis {
            port,
            process: Supervised::spawn(cmd)?,
        };
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Ok(mut con) = redis.admin()
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return Ok(redis);
            }
            if redis.process.exited().is_some() || Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {port} did not start; its log:\n{}",
                    read_log(&dir.join("redis.log"))
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A blocking connection of its own, for asking the server what it sees.
    fn admin(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Client connections the server has open (`CLIENT LIST`), not counting the
    /// connection asking.
    ///
    /// # Errors
    /// The server could not be asked.
    pub fn connections(&self) -> Result<usize, Error> {
        let mut con = self.admin()?;
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con)?;
        Ok(list.lines().filter(|l| !l.trim().is_empty()).count() - 1)
    }
}

fn check_installed_message() -> Error {
    check_installed()
        .err()
        .unwrap_or_else(|| "a server binary vanished".into())
        .into()
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

fn pg_bin_dir() -> Option<PathBuf> {
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

/// A private PostgreSQL cluster on 127.0.0.1: `initdb` in a temporary directory, trust
/// authentication, run as the `postgres` user when we are root.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    process: Supervised,
}

impl Postgres {
    /// Makes the cluster, starts the server and waits (up to 60 s) for a query to run.
    ///
    /// # Errors
    /// PostgreSQL is missing or did not start (its logs are in the message).
    pub fn start() -> Result<Postgres, Error> {
        let bin = pg_bin_dir().ok_or_else(check_installed_message)?;
        let dir = temp_dir("rtlocal-all-pg-")?;
        let root = is_root();
        if root {
            let status = Command::new("chown")
                .args(["postgres:", &dir.display().to_string()])
                .status()?;
            if !status.success() {
                return Err(format!(
                    "chown postgres: {} failed (is there a `postgres` user? `bash .ci/servers` \
                     installs PostgreSQL, which creates it)",
                    dir.display()
                )
                .into());
            }
        }
        let port = free_port()?;
        let (b, d) = (bin.display(), dir.display());
        let script = format!(
            "'{b}/initdb' -D '{d}/data' -U postgres -A trust -E UTF8 --no-sync \
               >'{d}/initdb.log' 2>&1 || exit 1; \
             '{b}/postgres' -D '{d}/data' -k '{d}' -p {port} -c listen_addresses=127.0.0.1 \
               -c fsync=off -c max_connections=100 >'{d}/postgres.log' 2>&1 & pid=$!; \
             read _ignored; kill -INT $pid 2>/dev/null; wait $pid; rm -rf '{d}'"
        );
        let cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let mut pg = Postgres {
            port,
            process: Supervised::spawn(cmd)?,
        };
        let logs = || {
            format!(
                "initdb.log:\n{}\npostgres.log:\n{}",
                read_log(&dir.join("initdb.log")),
                read_log(&dir.join("postgres.log"))
            )
        };
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Some(status) = pg.process.exited() {
                return Err(format!("PostgreSQL exited at start ({status}):\n{}", logs()).into());
            }
            if pg.connections().is_ok() {
                return Ok(pg);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "PostgreSQL on port {port} did not start in {START_BOUND:?}:\n{}",
                    logs()
                )
                .into());
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
            .application_name("rtlocal-all-checker")
    }

    /// What the managed pools connect with: user `postgres`, application name [`PG_APP`].
    pub fn options(&self) -> PgConnectOptions {
        self.admin_options().application_name(PG_APP)
    }

    /// Client connections of the pools' user or application name (`pg_stat_activity`),
    /// not counting the connection asking.
    ///
    /// # Errors
    /// The server could not be asked.
    pub fn connections(&self) -> Result<usize, Error> {
        let opts = self.admin_options();
        let n = on_own_runtime(async move {
            let mut c = PgConnection::connect_with(&opts).await?;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
                   AND (usename = 'postgres' OR application_name = $1)",
            )
            .bind(PG_APP)
            .fetch_one(&mut c)
            .await?;
            c.close().await?;
            Ok::<_, sqlx::Error>(n)
        })??;
        Ok(usize::try_from(n)?)
    }
}

/// Runs `fut` on a runtime of its own, on a thread of its own, bounded by [`BOUND`]:
/// callable from anywhere, inside a runtime or not.
fn on_own_runtime<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, Error> {
    std::thread::spawn(move || {
        crate::current_thread().block_on(async { tokio::time::timeout(BOUND, fut).await })
    })
    .join()
    .map_err(|_| "the helper thread panicked")?
    .map_err(|_| format!("no answer within {BOUND:?}").into())
}

// ---------------------------------------------------------------------------------------
// gRPC

/// tonic's health service on 127.0.0.1, in process, on a runtime and thread of its own,
/// counting the connections it accepts and has open.
#[derive(Debug)]
pub struct Grpc {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Grpc {
    /// Starts the server.
    ///
    /// # Errors
    /// Its thread, runtime or listener could not be made.
    pub fn start() -> Result<Grpc, Error> {
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (a, o) = (Arc::clone(&accepted), Arc::clone(&open));
        let thread = std::thread::Builder::new()
            .name("grpc-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr());
                    let incoming = TcpListenerStream::new(listener).map(move |accepted| {
                        accepted.map(|io| {
                            a.fetch_add(1, Ordering::SeqCst);
                            o.fetch_add(1, Ordering::SeqCst);
                            Counted {
                                io,
                                open: Arc::clone(&o),
                            }
                        })
                    });
                    let (_reporter, health) = tonic_health::server::health_reporter();
                    let serve = tonic::transport::Server::builder()
                        .add_service(health)
                        .serve_with_incoming(incoming);
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
                // Drops the connections still open.
                rt.shutdown_background();
            })?;
        let addr = addr_rx
            .recv()
            .map_err(|_| "the gRPC server thread ended before it had an address")??;
        Ok(Grpc {
            addr,
            open,
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections open now, as the server sees them.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since the server started.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Grpc {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A gRPC health check through `channel`: `Ok` when the server says SERVING.
///
/// # Errors
/// The call failed, or the server is not serving.
pub async fn grpc_health_check(channel: Channel) -> Result<(), Error> {
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    let status = resp.get_ref().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("health check: status {status}, not SERVING").into())
    }
}

/// An accepted connection that counts itself out when the server drops it.
struct Counted {
    io: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
