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
//! checked-out connections are closed as they are returned, and once every connection
//! is back, the idle ones are closed on the wire (PostgreSQL's `Terminate` message).
//! Closing idle connections works from any runtime, even while the pool's own runtime
//! idles. [`CloseReport`](rtlocal::CloseReport) counts the pool as closed.
//!
//! **Connections left to the pool's runtime.** A connection that is not idle is checked
//! out, or on its way back: sqlx returns a released connection to the pool through a
//! task it spawns on the pool's runtime, which pings the connection first. A thread that
//! leaves `block_on` right after its last query leaves that task queued, and while
//! nobody drives the runtime, it never runs. Nothing outside the task can reach the
//! connection, so the close cannot close it. When only such connections are left
//! (none idle), the close checks whether the pool's runtime runs
//! ([`rtlocal::runtime_is_running`], 50 ms at a time):
//!
//! * it runs: the close waits for the connections as `Pool::close` does. One held past
//!   the close timeout (a query stuck in the server, a task that keeps it) makes the
//!   close *forced*: the pool stays marked closed and the connection is closed when it
//!   is returned;
//! * it does not run: the close stops waiting. The pool is marked closed, the report
//!   counts it in [`not_closed_on_wire`](rtlocal::CloseReport::not_closed_on_wire) and
//!   names the runtime, and those connections stay open on the server until the runtime
//!   runs again (the task returns each to the closed pool, which closes it) or is
//!   dropped (its tasks are dropped, and each connection's socket with them).
//!
//! A pool with idle connections *and* connections left to a runtime that does not run
//! cannot have its idle ones closed either (`Pool::close` closes them last): that close
//! waits out the close timeout and is reported as forced.
//!
//! A close counted as closed, and not in `not_closed_on_wire`, has closed every
//! connection of the pool on the wire.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

use std::fmt;
use std::pin::pin;
use std::time::Duration;

use futures_util::future::Either;
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
/// Closing a pool is `Pool::close().await`, cut short when only connections left to a
/// pool's runtime that does not run remain (reported in
/// [`CloseReport::not_closed_on_wire`](rtlocal::CloseReport::not_closed_on_wire)); forced
/// when a checked-out connection is not returned within the close timeout — see the
/// [crate docs](crate#what-closed-means).
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

    /// A released connection goes back to the pool through a task on the pool's
    /// runtime (sqlx's `PoolConnection::drop`): `Pool::close` waits for it.
    fn needs_runtime_to_close(&self) -> bool {
        true
    }

    async fn close_on(&self, pool: &PgPool, runtime: Option<&Handle>) {
        match runtime {
            Some(runtime) => close_unless_idle(pool, runtime).await,
            None => pool.close().await,
        }
    }

    fn left_to_runtime(&self, pool: &PgPool) -> bool {
        // `Pool::close` zeroes the size once it has closed every connection; a close
        // cut short leaves the connections it could not reach counted.
        pool.size() > 0
    }

    fn abort(&self, pool: &PgPool) {
        // `close` marks the pool closed before its future first runs: no new acquires,
        // returned connections are closed. The idle ones go with the last handle.
        drop(pool.close());
    }
}

/// How long a close gives the pool's runtime to run a probe task, and then waits before
/// asking again.
const RUNTIME_POLL: Duration = Duration::from_millis(50);

/// `Pool::close`, given up once only connections the pool's runtime holds are left and
/// that runtime does not run (see the [crate docs](crate#what-closed-means)).
///
/// Every connection that is not idle is checked out, or on its way back through a task
/// on the pool's runtime (`PoolConnection::drop` spawns one and moves the connection
/// into it): nothing outside that task can reach it, and `Pool::close` waits for it.
async fn close_unless_idle(pool: &PgPool, runtime: &Handle) {
    // Marks the pool closed at once: no new acquires, returned connections are closed.
    let mut closing = pin!(pool.close());
    loop {
        let probe = pin!(rtlocal::runtime_is_running(runtime, RUNTIME_POLL));
        let runs = match futures_util::future::select(closing.as_mut(), probe).await {
            Either::Left(((), _)) => return,
            Either::Right((runs, _)) => runs,
        };
        if !runs {
            // Idle connections are closed by `Pool::close` only once every other
            // connection is back: with some left, go on waiting (the close is forced at
            // the timeout).
            if pool.num_idle() == 0 && pool.size() > 0 {
                return;
            }
            continue;
        }
        // The runtime runs: wait a while (on rtlocal's timer thread, so the pause ends
        // even if the runtime stops running meanwhile) before asking again.
        let pause = pin!(rtlocal::sleep(RUNTIME_POLL));
        if let Either::Left(((), _)) = futures_util::future::select(closing.as_mut(), pause).await {
            return;
        }
    }
}
