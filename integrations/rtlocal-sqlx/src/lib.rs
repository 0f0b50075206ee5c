//! Managed sqlx PostgreSQL pools ([`PgPool`]) for [`rtlocal`]: one per thread (or
//! runtime), bound to the tokio runtime it runs on.
//!
//! # The problem
//!
//! A sqlx pool's connections are sockets registered with the I/O driver of the runtime
//! that opened them, and its maintenance tasks run there. Share one pool between
//! runtimes — a `static` used by several `#[tokio::test]` functions, or a pool of threads
//! that each own a runtime — and a connection opened by one runtime is handed to
//! another:
//!
//! * while the runtime that opened it idles, nobody reads its socket's readiness: the
//!   query (or the ping before it) waits until `acquire_timeout` and fails with
//!   `PoolTimedOut`;
//! * once that runtime is gone, its sockets fail with "A Tokio 1.x context was found,
//!   but it is being shutdown" or "IO driver has terminated".
//!
//! (sqlx#531, #1639, #2567, #2881, #2938, #3393.) [`PgManager`] hands every thread its
//! own pool, connected from the runtime it is used on, and closes it when that runtime
//! changes or ends.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::LazyLock;
//! use rtlocal_sqlx::{PgManager, PgPoolFactory};
//! use sqlx::postgres::PgPoolOptions;
//!
//! static DB: LazyLock<PgManager> = LazyLock::new(|| {
//!     let factory = PgPoolFactory::from_url("postgres://app@127.0.0.1/app")
//!         .expect("a valid URL")
//!         .with_pool_options(PgPoolOptions::new().max_connections(4));
//!     PgManager::new(factory)
//! });
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = DB.client().await?; // derefs to `PgPool`
//! let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&*pool).await?;
//! assert_eq!(one, 1);
//! # Ok(()) }
//! ```
//!
//! # What "closed" means
//!
//! A close (on a runtime change, [`close_all`](rtlocal::Manager::close_all),
//! [`shutdown`](rtlocal::Manager::shutdown)) stops the manager handing the pool out,
//! waits for requests counted with [`Managed::track`](rtlocal::Managed::track), then
//! awaits [`Pool::close`](sqlx::Pool::close): new acquires fail with `PoolClosed`,
//! checked-out connections are closed as they are returned, and idle ones are closed on
//! the wire (PostgreSQL's `Terminate` message). That works from any runtime, even while
//! the pool's own runtime idles: nothing in it needs that runtime's tasks.
//! [`CloseReport`](rtlocal::CloseReport) counts it as closed.
//!
//! **What cannot be closed in time:** a connection checked out by a task that never
//! gives it back — a task of an idle runtime, a query stuck in the server. `Pool::close`
//! waits for it, so the close overruns the close timeout and is reported as *forced*;
//! the pool is then marked closed (the connection closes when its holder returns or
//! drops it) and its idle connections close when the last handle on the pool is
//! dropped. A runtime torn down drops its tasks, and the connections they held with
//! them.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

use std::fmt;

use rtlocal::{ClientFactory, Manager};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::runtime::Handle;

/// A [`Manager`] of sqlx [`PgPool`]s: one per thread (or runtime, see
/// [`rtlocal::Sharing`]), its connections opened from the runtime it runs on.
///
/// `Managed<PgPoolFactory>` derefs to `PgPool`: pass `&*pool` as the executor. See the
/// [crate docs](crate) for what closing means.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rtlocal::Error> {
/// let factory = rtlocal_sqlx::PgPoolFactory::from_url("postgres://app@127.0.0.1:5432/app").unwrap();
/// let manager = rtlocal_sqlx::PgManager::new(factory);
/// let pool = manager.client().await?; // lazily connected: no connection opened yet
/// assert_eq!(pool.size(), 0);
/// let report = manager.close_all().await; // Pool::close, reported as closed
/// assert_eq!((report.closed, report.forced), (1, 0));
/// assert!(pool.is_closed());
/// # Ok(()) }
/// ```
pub type PgManager = Manager<PgPoolFactory>;

/// Builds lazily connected [`PgPool`]s for a [`PgManager`]
/// ([`PgPoolOptions::connect_lazy_with`]): building a pool opens no connection, the
/// first query does.
///
/// Every pool gets the same options, so the connections a process may open are
/// `max_connections` × the number of pools (one per thread with
/// [`Sharing::PerThread`](rtlocal::Sharing::PerThread), one per runtime with
/// [`Sharing::PerRuntime`](rtlocal::Sharing::PerRuntime)): size `max_connections` for
/// that.
///
/// Closing a pool is `Pool::close().await`, reported as closed in
/// [`CloseReport`](rtlocal::CloseReport); forced when a checked-out connection is not
/// returned within the close timeout — see the [crate docs](crate#what-closed-means).
///
/// ```
/// use std::time::Duration;
/// use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
///
/// let connect = PgConnectOptions::new()
///     .host("127.0.0.1")
///     .username("app")
///     .database("app")
///     .application_name("my-service");
/// let factory = rtlocal_sqlx::PgPoolFactory::new(connect).with_pool_options(
///     PgPoolOptions::new()
///         .max_connections(2)
///         .acquire_timeout(Duration::from_secs(5)),
/// );
/// let manager = rtlocal::Manager::builder(factory)
///     .sharing(rtlocal::Sharing::PerRuntime)
///     .build()?;
/// # let _ = manager;
/// # Ok::<(), rtlocal::Error>(())
/// ```
#[derive(Clone)]
pub struct PgPoolFactory {
    connect: PgConnectOptions,
    pool: PgPoolOptions,
}

impl PgPoolFactory {
    /// Pools connecting with `connect`, with sqlx's default pool options.
    pub fn new(connect: PgConnectOptions) -> Self {
        PgPoolFactory {
            connect,
            pool: PgPoolOptions::new(),
        }
    }

    /// Pools connecting to `url` (`postgres://user:password@host:port/database?…`).
    ///
    /// # Errors
    /// When `url` is not a valid PostgreSQL URL. Nothing connects here.
    pub fn from_url(url: &str) -> Result<Self, sqlx::Error> {
        Ok(PgPoolFactory::new(url.parse()?))
    }

    /// Every pool is built with `options` (pool size, timeouts, …).
    pub fn with_pool_options(mut self, options: PgPoolOptions) -> Self {
        self.pool = options;
        self
    }

    /// The connect options every pool uses.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.connect
    }

    /// The pool options every pool is built with.
    pub fn pool_options(&self) -> &PgPoolOptions {
        &self.pool
    }
}

impl fmt::Debug for PgPoolFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPoolFactory")
            .field("host", &self.connect.get_host())
            .field("port", &self.connect.get_port())
            .field("database", &self.connect.get_database())
            .field("max_connections", &self.pool.get_max_connections())
            .finish_non_exhaustive()
    }
}

impl ClientFactory for PgPoolFactory {
    type Client = PgPool;

    async fn build(&self, _runtime: &Handle) -> Result<PgPool, rtlocal::Error> {
        // Runs in a task on the pool's runtime: the maintenance tasks `connect_lazy_with`
        // spawns, and every connection the pool opens later, belong to it.
        Ok(self.pool.clone().connect_lazy_with(self.connect.clone()))
    }

    async fn close(&self, pool: &PgPool) {
        pool.close().await;
    }

    fn abort(&self, pool: &PgPool) {
        // `close` marks the pool closed before its future first runs: no new acquires,
        // returned connections are closed. The idle ones go with the last handle.
        drop(pool.close());
    }
}
