//! Managed redis [`ConnectionManager`]s for [`rtlocal`]: one per thread (or runtime),
//! bound to the tokio runtime it runs on.
//!
//! # The problem
//!
//! A `ConnectionManager` (and the `MultiplexedConnection` inside it) spawns the task
//! that drives its socket on the runtime current when it connects. Share one between
//! runtimes — a `static` built with `OnceCell`/`LazyLock` and used by several
//! `#[tokio::test]` functions, or a pool of threads that each own a runtime — and:
//!
//! * while the runtime that connected idles (its thread left `block_on`), every command
//!   from another runtime waits for a task nobody polls: it hangs, or fails with
//!   redis's response timeout (500 ms by default) — again and again, because a timeout
//!   does not make the `ConnectionManager` reconnect (redis-rs#295, #735);
//! * once that runtime is dropped, the next command fails with a broken pipe or a
//!   dropped-connection error (redis-rs#394) before the manager reconnects.
//!
//! [`RedisManager`] hands every thread its own `ConnectionManager`, connected from the
//! runtime it is used on, and closes it when that runtime changes or ends.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::LazyLock;
//! use redis::AsyncCommands;
//! use rtlocal_redis::{ManagedRedisExt, RedisFactory, RedisManager};
//!
//! static REDIS: LazyLock<RedisManager> = LazyLock::new(|| {
//!     RedisManager::new(RedisFactory::open("redis://127.0.0.1:6379/").expect("a valid URL"))
//! });
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Commands take `&mut self`: clone the handle (one `Arc`) for the call.
//! let mut con = REDIS.client().await?.connection();
//! let () = con.set("greeting", "hello").await?;
//! let greeting: String = con.get("greeting").await?;
//! assert_eq!(greeting, "hello");
//! # Ok(()) }
//! ```
//!
//! # What "closed" means
//!
//! redis offers no way to close a `ConnectionManager` or reach its socket: the socket is
//! owned by a task of the runtime that connected, aborted when the last clone is dropped,
//! and an abort takes effect only when that runtime next polls the task (or drops it). So
//! a close (on a runtime change, [`close_all`](rtlocal::Manager::close_all),
//! [`shutdown`](rtlocal::Manager::shutdown), [`shutdown_all`](rtlocal::shutdown_all))
//! stops the manager handing the client out, waits (up to the close timeout) for
//! requests counted with [`Managed::track`](rtlocal::Managed::track), checks whether the
//! client's runtime is running (see
//! [`ClientFactory::needs_runtime_to_close`]:
//! a no-op task spawned on it must run within 100 ms) and lets go of the manager's
//! handle. There is nothing else to await, so [`CloseReport`](rtlocal::CloseReport)
//! counts it as closed, not forced. Then the socket closes:
//!
//! * at once when the last clone is dropped while its runtime runs (a `multi_thread`
//!   runtime, or a `current_thread` runtime being driven, e.g. the one awaiting the
//!   close);
//! * when its runtime is dropped (the usual runtime change: the old runtime ended).
//!
//! **What cannot be closed, and is reported:** a connection whose `current_thread`
//! runtime is alive but not running when the close ends (its thread left `block_on`, or
//! is blocked in synchronous code) stays open until that runtime runs again or is
//! dropped — the abort is queued on a runtime nobody drives. The close counts it in
//! [`CloseReport::not_closed_on_wire`](rtlocal::CloseReport::not_closed_on_wire) (and
//! [`Stats::clients_not_closed_on_wire`](rtlocal::Stats::clients_not_closed_on_wire)),
//! and the report's `Display` names the runtime holding it. To get 0 there, close before
//! the runtimes leave `block_on`, or drop them. A connection some caller still holds a
//! clone of also stays open (not counted: the manager cannot see clones): take the clone
//! for a call, not for keeps.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

use std::fmt;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisResult};
use rtlocal::{ClientFactory, Manager};
use tokio::runtime::Handle;

/// A [`Manager`] of redis [`ConnectionManager`]s: one per thread (or runtime, see
/// [`rtlocal::Sharing`]), connected from the runtime it runs on.
///
/// `Managed<RedisFactory>` derefs to `ConnectionManager`; commands take `&mut self`, so
/// call [`ManagedRedisExt::connection`] (or `.clone()`) for each use. See the
/// [crate docs](crate) for what closing means.
///
/// ```no_run
/// use std::time::Duration;
/// use rtlocal_redis::{ManagedRedisExt, RedisFactory, RedisManager};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager: RedisManager = rtlocal::Manager::builder(RedisFactory::open("redis://127.0.0.1/")?)
///     .build_timeout(Duration::from_secs(5)) // bounds the connect
///     .build()?;
/// let mut con = manager.client().await?.connection();
/// let pong: String = redis::cmd("PING").query_async(&mut con).await?;
/// drop(con); // a clone kept would keep the connection open past the close
/// // Nothing to await: closed, not forced. This runtime runs the close, so the socket
/// // closes on the wire too.
/// let report = manager.close_all().await;
/// assert_eq!((report.closed, report.forced, report.not_closed_on_wire), (1, 0, 0));
/// # let _ = pong; Ok(()) }
/// ```
pub type RedisManager = Manager<RedisFactory>;

/// Builds redis [`ConnectionManager`]s for a [`RedisManager`]: `ConnectionManager::new`
/// (an async connect, bounded by the manager's
/// [`build_timeout`](rtlocal::ManagerBuilder::build_timeout)).
///
/// Closing has nothing to await (redis has no close): the manager lets go of the
/// client, reported as closed in [`CloseReport`](rtlocal::CloseReport), and the socket
/// closes with the last clone, once its runtime runs or is dropped; a close that ends
/// while that runtime is not running is counted in
/// [`CloseReport::not_closed_on_wire`](rtlocal::CloseReport::not_closed_on_wire) — see
/// the [crate docs](crate#what-closed-means).
///
/// ```
/// use std::time::Duration;
/// use redis::aio::ConnectionManagerConfig;
///
/// let factory = rtlocal_redis::RedisFactory::open("redis://127.0.0.1:6379/")?
///     .with_config(|| ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(2))));
/// let manager = rtlocal::Manager::builder(factory)
///     .build_timeout(Duration::from_secs(5))
///     .build()?;
/// # let _ = manager;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisFactory {
    client: Client,
    config: Box<dyn Fn() -> ConnectionManagerConfig + Send + Sync>,
}

impl RedisFactory {
    /// Connections to the server `info` names (a `redis://` URL, a
    /// `redis::ConnectionInfo`, …), with redis's default `ConnectionManagerConfig`.
    ///
    /// # Errors
    /// When `info` is not a valid redis address. Nothing connects here.
    pub fn open(info: impl IntoConnectionInfo) -> RedisResult<Self> {
        Ok(RedisFactory::new(Client::open(info)?))
    }

    /// Connections made with `client` (a `redis::Client` only holds the address and
    /// settings; it has no connection of its own).
    pub fn new(client: Client) -> Self {
        RedisFactory {
            client,
            config: Box::new(ConnectionManagerConfig::new),
        }
    }

    /// Each `ConnectionManager` is built with the config `config` returns, called once
    /// per client.
    pub fn with_config(
        mut self,
        config: impl Fn() -> ConnectionManagerConfig + Send + Sync + 'static,
    ) -> Self {
        self.config = Box::new(config);
        self
    }

    /// The `redis::Client` connections are made with.
    pub fn redis_client(&self) -> &Client {
        &self.client
    }
}

impl fmt::Debug for RedisFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFactory")
            .field("server", &self.client.get_connection_info().addr())
            .finish_non_exhaustive()
    }
}

impl ClientFactory for RedisFactory {
    type Client = ConnectionManager;

    async fn build(&self, _runtime: &Handle) -> Result<ConnectionManager, rtlocal::Error> {
        // Connects now, from a task on the runtime the client is for: the connection's
        // driver task lands on that runtime.
        ConnectionManager::new_with_config(self.client.clone(), (self.config)())
            .await
            .map_err(rtlocal::Error::build)
    }

    // `close`, `abort` and `release` keep their defaults (nothing to do): redis has no
    // close, and the socket's task is aborted when the last clone is dropped.

    /// `true`: the socket is a task of the client's runtime, closed only when that runtime
    /// polls it (see the [crate docs](crate#what-closed-means)).
    fn needs_runtime_to_close(&self) -> bool {
        true
    }
}

/// `connection()` on a managed `ConnectionManager`: the clone a command needs.
pub trait ManagedRedisExt {
    /// A clone of the managed `ConnectionManager` (one `Arc`), for commands that take
    /// `&mut self`. Drop it after the call: a clone kept keeps the connection open after
    /// the manager closed it.
    fn connection(&self) -> ConnectionManager;
}

impl ManagedRedisExt for rtlocal::Managed<RedisFactory> {
    fn connection(&self) -> ConnectionManager {
        self.get_ref().clone()
    }
}
