//! Every kind of client rtlocal manages, in one process, against real servers: an
//! [`HttpClientManager`], a [`ReqwestManager`], a [`PgManager`], a [`RedisManager`] and a
//! [`ChannelManager`] — and one [`rtlocal::shutdown_all`] for all of them.
//!
//! Not published: the crate holds what its test (`tests/shutdown_all.rs`) and its example
//! (`examples/task_runner_all.rs`) share:
//!
//! * [`Managers`]: the five managers, named, pointed at [`Targets`] (one server of each
//!   kind), and [`Managers::round_trip`], one real request through each;
//! * [`block_on_outside`]: drives a future (such as `shutdown_all`) on a plain thread, with
//!   no tokio runtime at all.
//!
//! The servers themselves (hyper, redis-server, PostgreSQL, tonic's health service, each
//! on 127.0.0.1 and able to say how many connections it has open) are the workspace's
//! dev-only fixtures, `rtlocal-testkit`, which the test and the example take as a
//! dev-dependency.
//!
//! ```no_run
//! use std::time::Duration;
//! use rtlocal_all::{Managers, Targets, block_on_outside};
//!
//! let targets = Targets {
//!     http_url: "http://127.0.0.1:8080/".into(),
//!     redis_url: "redis://127.0.0.1:6379/".into(),
//!     postgres: "postgres://postgres@127.0.0.1:5432/postgres".parse()?,
//!     grpc_uri: "http://127.0.0.1:50051".into(),
//! };
//! let managers = Managers::build(&targets)?;
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(managers.round_trip(1))?;
//! let report = block_on_outside(
//!     Duration::from_secs(20),
//!     rtlocal::shutdown_all(Duration::from_secs(5)),
//! )
//! .expect("shutdown_all finished");
//! println!("{report}");
//! # Ok::<(), rtlocal_all::Error>(())
//! ```
//!
//! [`HttpClientManager`]: rtlocal::HttpClientManager
//! [`ReqwestManager`]: rtlocal::ReqwestManager
//! [`PgManager`]: rtlocal_sqlx::PgManager
//! [`RedisManager`]: rtlocal_redis::RedisManager
//! [`ChannelManager`]: rtlocal_tonic::ChannelManager

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use rtlocal::{HttpClientManager, Manager, ReqwestFactory, ReqwestManager};
use rtlocal_redis::{ManagedRedisExt, RedisFactory, RedisManager};
use rtlocal_sqlx::{PgManager, PgPoolFactory};
use rtlocal_tonic::{ChannelFactory, ChannelManager};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Errors of this crate's helpers: whatever went wrong, with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Bounds every round trip and every connect: a hang shows as an error saying so.
pub const BOUND: Duration = Duration::from_secs(5);

/// The names the managers report under in a [`rtlocal::ShutdownReport`].
pub const NAMES: [&str; 5] = ["http", "reqwest", "postgres", "redis", "grpc"];

/// Where the managers' clients go: one server of each kind.
#[derive(Debug, Clone)]
pub struct Targets {
    /// An HTTP/1.1 server's URL, answering `GET` with "hello": for the HTTP and reqwest
    /// managers.
    pub http_url: String,
    /// A redis server's URL.
    pub redis_url: String,
    /// A PostgreSQL server.
    pub postgres: PgConnectOptions,
    /// A gRPC server serving the standard health service.
    pub grpc_uri: String,
}

/// The five managers, one per kind of client, named as in [`NAMES`] and pointed at
/// [`Targets`].
#[derive(Debug)]
pub struct Managers {
    /// hyper-util clients; named "http" (the name every `HttpClientManager` has).
    pub http: HttpClientManager,
    /// reqwest clients, named "reqwest".
    pub reqwest: ReqwestManager,
    /// sqlx `PgPool`s, named "postgres".
    pub postgres: PgManager,
    /// redis `ConnectionManager`s, named "redis".
    pub redis: RedisManager,
    /// tonic `Channel`s, named "grpc".
    pub grpc: ChannelManager,
    /// What the HTTP and reqwest round trips get.
    http_url: String,
}

impl Managers {
    /// The five managers for `targets`.
    ///
    /// # Errors
    /// A manager's settings were refused or a server's address did not parse.
    pub fn build(targets: &Targets) -> Result<Managers, Error> {
        let http = HttpClientManager::builder().build()?;
        let reqwest = Manager::builder(ReqwestFactory::with_builder(|| {
            ReqwestFactory::client_builder().timeout(BOUND)
        }))
        .name("reqwest")
        .build()?;
        let pg = PgPoolFactory::new(targets.postgres.clone()).with_pool_options(
            PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(BOUND),
        );
        let postgres = Manager::builder(pg).name("postgres").build()?;
        let redis = Manager::builder(RedisFactory::open(targets.redis_url.as_str())?)
            .name("redis")
            .build_timeout(BOUND)
            .build()?;
        let grpc = Manager::builder(ChannelFactory::from_shared(targets.grpc_uri.clone())?)
            .name("grpc")
            .build()?;
        Ok(Managers {
            http,
            reqwest,
            postgres,
            redis,
            grpc,
            http_url: targets.http_url.clone(),
        })
    }

    /// One real request through each manager's client for the current thread and
    /// runtime: an HTTP GET, a reqwest GET, a PostgreSQL `SELECT $n`, a redis `INCR` and
    /// a gRPC health check, each checked and each bounded by [`BOUND`]. No client handle
    /// is kept.
    ///
    /// # Errors
    /// The first request that failed, hung or answered wrongly, naming its client.
    pub async fn round_trip(&self, n: i32) -> Result<(), Error> {
        let url = self.http_url.clone();
        bounded("http", async {
            let resp = self.http.client().await?.get(&url).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            expect("http", &body[..], b"hello")
        })
        .await?;
        bounded("reqwest", async {
            let client = self.reqwest.client().await?;
            let body = client.get(&url).send().await?.bytes().await?;
            expect("reqwest", &body[..], b"hello")
        })
        .await?;
        bounded("postgres", async {
            let pool = self.postgres.client().await?;
            let got: i32 = sqlx::query_scalar("SELECT $1::int4")
                .bind(n)
                .fetch_one(&*pool)
                .await?;
            expect("postgres", got, n)
        })
        .await?;
        bounded("redis", async {
            // The clone a command takes, dropped after the call.
            let mut con = self.redis.client().await?.connection();
            let count: i64 = redis::cmd("INCR")
                .arg("rtlocal-all:jobs")
                .query_async(&mut con)
                .await?;
            if count < 1 {
                return Err(format!("redis: INCR returned {count}").into());
            }
            Ok(())
        })
        .await?;
        bounded("grpc", async {
            let channel = self.grpc.client().await?.channel();
            grpc_health_check(channel).await
        })
        .await
    }

    /// Whether every manager refuses `client()` with [`rtlocal::Error::is_shut_down`], as
    /// after [`rtlocal::shutdown_all`]: the names of those that do not.
    pub async fn not_refusing(&self) -> Vec<&'static str> {
        let refused = [
            self.http.client().await.err(),
            self.reqwest.client().await.err(),
            self.postgres.client().await.err(),
            self.redis.client().await.err(),
            self.grpc.client().await.err(),
        ];
        NAMES
            .into_iter()
            .zip(refused)
            .filter(|(_, e)| !e.as_ref().is_some_and(rtlocal::Error::is_shut_down))
            .map(|(name, _)| name)
            .collect()
    }
}

/// A gRPC health check through `channel`: `Ok` when the server says SERVING.
async fn grpc_health_check(channel: Channel) -> Result<(), Error> {
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

async fn bounded(what: &str, fut: impl Future<Output = Result<(), Error>>) -> Result<(), Error> {
    match tokio::time::timeout(BOUND, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{what}: {e:#}").into()),
        Err(_) => Err(format!("{what}: no answer within {BOUND:?}").into()),
    }
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {want:?}").into())
    }
}

/// Drives `fut` on the calling thread with no tokio runtime at all: polls it, parks the
/// thread until its waker is called, and gives up (`None`) once `bound` passes — a hang
/// guard, for calling [`rtlocal::shutdown_all`] from outside every runtime.
///
/// ```
/// use std::time::Duration;
///
/// let got = rtlocal_all::block_on_outside(Duration::from_secs(1), async { 7 });
/// assert_eq!(got, Some(7));
/// ```
pub fn block_on_outside<F: Future>(bound: Duration, fut: F) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + bound;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// Polls `probe` until it returns `want` or `within` passes; returns its last value. A
/// hang guard for state that settles on the other end of a socket.
pub fn settle<T: PartialEq>(within: Duration, want: T, mut probe: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + within;
    loop {
        let now = probe();
        if now == want || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `current_thread` runtime with every driver.
///
/// # Panics
/// When the runtime cannot be built (out of file descriptors or threads).
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current_thread runtime")
}
