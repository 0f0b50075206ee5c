//! The tokio adapter: [`Manager`] hands every thread (or every runtime) a client built by
//! a [`ClientFactory`], bound to the runtime it runs on.
//!
//! Everything that decides a client's fate is in `lifecycle/`; this folder supplies what
//! only tokio can: runtime handles and their teardown (`runtime`), time and a thread that
//! closes without an idle runtime's help (`timer`, `closer`; `timer` also times the HTTP
//! layer's requests, bodies and sockets), thread-locals (`hot`, `thread_slots`), and the
//! driver the core runs (`shared`).
//!
//! # Lock order
//! A manager's thread-slot list lock and its runtime-slot map lock are never held while a
//! slot lock is taken, nor while a client is built.

mod all;
mod client;
pub(crate) mod closer;
mod factory;
mod hot;
mod id;
mod managed;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
mod options;
pub(crate) mod runtime;
mod shared;
mod stats;
mod thread_slots;
pub(crate) mod timer;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use all::{ManagerReport, ShutdownReport, shutdown_all};
pub use factory::ClientFactory;
pub use id::ClientId;
pub use managed::{Managed, RequestGuard, runtime_is_running, sleep};
pub(crate) use options::Options;
pub use options::Sharing;
pub(crate) use shared::Shared;
pub(crate) use stats::Counters;
pub use stats::{CloseReport, Stats};

use crate::error::Error;

/// Hands every thread (or every runtime, see [`Sharing`]) a client built by a
/// [`ClientFactory`], bound to the tokio runtime it is running on.
///
/// * Same thread, same live runtime → the same client.
/// * The thread's runtime changed → the stale client is closed (its tracked requests
///   get up to the close timeout), *then* the slot is reset, *then* the new client is
///   published. Concurrent callers during a replacement all receive the one new client.
/// * A runtime torn down → the clients bound to it are released right then.
/// * [`close_all`](Manager::close_all) and [`shutdown`](Manager::shutdown) close every
///   thread's client, including those whose runtime is idle or gone.
///
/// [`HttpClientManager`](crate::HttpClientManager) is this over hyper-util, with HTTP
/// configuration on top; [`ReqwestManager`](crate::ReqwestManager) (feature `reqwest`)
/// over reqwest.
///
/// `Manager` is `Send + Sync`: share it behind an `Arc` or in a `static`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use rtlocal::{ClientFactory, Manager, Sharing};
///
/// struct Unit;
/// impl ClientFactory for Unit {
///     type Client = ();
///     async fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
/// }
///
/// let manager = std::sync::Arc::new(
///     Manager::builder(Unit)
///         .close_timeout(Duration::from_secs(2))
///         .sharing(Sharing::PerRuntime)
///         .build()?,
/// );
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let ids: Vec<_> = rt.block_on(async {
///     let tasks: Vec<_> = (0..8)
///         .map(|_| {
///             let manager = manager.clone();
///             tokio::spawn(async move { manager.client().await.map(|c| c.id()) })
///         })
///         .collect();
///     let mut ids = Vec::new();
///     for t in tasks { ids.push(t.await.unwrap()?); }
///     Ok::<_, rtlocal::Error>(ids)
/// })?;
/// // Per-runtime sharing: every worker thread got the same client.
/// assert!(ids.windows(2).all(|w| w[0] == w[1]));
/// # Ok::<(), rtlocal::Error>(())
/// ```
pub struct Manager<F: ClientFactory> {
    pub(crate) shared: Arc<Shared<F>>,
}

/// Configures a [`Manager`]: see [`Manager::builder`].
///
/// ```
/// use std::time::Duration;
/// # struct Unit;
/// # impl rtlocal::ClientFactory for Unit {
/// #     type Client = ();
/// #     async fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
/// # }
///
/// let err = rtlocal::Manager::builder(Unit).close_timeout(Duration::ZERO).build().unwrap_err();
/// assert!(err.is_config());
/// assert!(err.to_string().contains("close_timeout"));
/// ```
pub struct ManagerBuilder<F: ClientFactory> {
    factory: F,
    options: Options,
}

impl<F: ClientFactory> ManagerBuilder<F> {
    /// How long closing a stale client (on a runtime change), `close_all` or a forced
    /// `shutdown` waits for in-flight requests and the factory's close before it forces
    /// the close. Must be greater than zero.
    ///
    /// Default is 5 seconds.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.options.close_timeout = timeout;
        self
    }

    /// How long building a client ([`ClientFactory::build`]) may take. Past it, the build
    /// is dropped and every caller waiting on it fails with [`Error::is_timeout`]; the next
    /// call builds again. Must be greater than zero; `Duration::MAX` means no limit.
    ///
    /// Default is 30 seconds.
    pub fn build_timeout(mut self, timeout: Duration) -> Self {
        self.options.build_timeout = timeout;
        self
    }

    /// Who shares a client: see [`Sharing`].
    ///
    /// Default is [`Sharing::PerThread`].
    pub fn sharing(mut self, sharing: Sharing) -> Self {
        self.options.sharing = sharing;
        self
    }

    /// What [`shutdown_all`]'s report calls this manager (e.g. `"orders-db"`).
    ///
    /// Default is the factory's type name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.options.name = Some(Arc::from(name.into()));
        self
    }

    /// Builds the manager.
    ///
    /// # Errors
    /// [`Error::is_config`] when `close_timeout` or `build_timeout` is zero.
    pub fn build(self) -> Result<Manager<F>, Error> {
        self.options.validate()?;
        Ok(Manager::from_parts(
            self.factory,
            self.options,
            Arc::new(Counters::default()),
        ))
    }
}

impl<F: ClientFactory + fmt::Debug> fmt::Debug for ManagerBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("factory", &self.factory)
            .field("close_timeout", &self.options.close_timeout)
            .field("build_timeout", &self.options.build_timeout)
            .field("sharing", &self.options.sharing)
            .finish()
    }
}

impl<F: ClientFactory> Manager<F> {
    /// A manager over `factory` with the default settings: a 5 second close timeout,
    /// [`Sharing::PerThread`].
    pub fn new(factory: F) -> Self {
        Manager::from_parts(factory, Options::default(), Arc::new(Counters::default()))
    }

    /// Configures a manager over `factory`.
    pub fn builder(factory: F) -> ManagerBuilder<F> {
        ManagerBuilder {
            factory,
            options: Options::default(),
        }
    }

    pub(crate) fn from_parts(factory: F, options: Options, counters: Arc<Counters>) -> Self {
        let manager = Manager {
            shared: Shared::new(factory, options, counters),
        };
        #[cfg(feature = "metrics")]
        metrics::register(&manager.shared.counters, manager.name());
        manager
    }

    /// The factory this manager builds clients with.
    pub fn factory(&self) -> &F {
        &self.shared.factory
    }

    /// Who shares a client (see [`Sharing`]).
    pub fn sharing(&self) -> Sharing {
        self.shared.options.sharing
    }

    /// The client for this thread (or runtime, see [`Sharing`]) and the runtime it is
    /// running on.
    ///
    /// On an unchanged runtime this is a thread-local lookup, a runtime id and liveness
    /// check and one `Arc` clone: no allocation, no global lock.
    ///
    /// # Errors
    /// [`Error::is_no_runtime`] at once when called outside a tokio runtime;
    /// [`Error::is_runtime_gone`] when the runtime is shutting down;
    /// [`Error::is_shut_down`] after [`shutdown`](Manager::shutdown); whatever the
    /// factory's `build` returned.
    ///
    /// # Cancel safety
    /// Cancelling the future while it replaces a stale client force-closes that client
    /// and leaves the slot empty; other callers waiting on the replacement retry.
    #[must_use = "futures do nothing unless polled"]
    pub fn client(&self) -> impl Future<Output = Result<Managed<F>, Error>> + Send + '_ {
        self.shared.client()
    }

    /// Closes every client this manager handed out — including those whose runtime is
    /// idle or gone — waiting up to the close timeout for their in-flight requests; then
    /// forces the rest. The manager stays usable: the next `client()` builds anew.
    ///
    /// Safe to call concurrently and repeatedly: each call reports what it closed.
    pub async fn close_all(&self) -> CloseReport {
        let report = self
            .shared
            .retire_all(self.shared.options.close_timeout)
            .await;
        tracing::debug!(%report, "close_all finished");
        report
    }

    /// Shuts the manager down: from now on `client()` fails with
    /// [`Error::is_shut_down`]; every client stops taking requests, in-flight requests
    /// may finish until `timeout`, then the rest are cut — across every slot, including
    /// slots whose runtime is idle or gone.
    ///
    /// ```
    /// # struct Unit;
    /// # impl rtlocal::ClientFactory for Unit {
    /// #     type Client = ();
    /// #     async fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rtlocal::Error> {
    /// let manager = rtlocal::Manager::new(Unit);
    /// let client = manager.client().await?;
    /// let report = manager.shutdown(std::time::Duration::from_secs(5)).await;
    /// assert_eq!(report.closed, 1);
    /// assert!(!client.is_open());
    /// assert!(manager.client().await.unwrap_err().is_shut_down());
    /// assert_eq!(manager.stats().clients_live, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// Idempotent and safe to call concurrently: a later call closes whatever is left and
    /// reports only that. A request racing the call may still be handed a client that
    /// the shutdown then closes; it is cut like any other in-flight request.
    pub async fn shutdown(&self, timeout: Duration) -> CloseReport {
        self.shared.shutdown(timeout).await
    }

    /// What [`shutdown_all`]'s report calls this manager (see
    /// [`ManagerBuilder::name`]).
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.gate.is_closed()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let runtime_slots = self.shared.runtime_slots.len() as u64;
        self.shared
            .counters
            .snapshot(self.shared.thread_slot_count(), runtime_slots)
    }

    pub(crate) fn close_timeout(&self) -> Duration {
        self.shared.options.close_timeout
    }
}

impl<F: ClientFactory> fmt::Debug for Manager<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("Manager")
            .field("factory", &std::any::type_name::<F>())
            .field("sharing", &self.shared.options.sharing)
            .field("clients_live", &stats.clients_live)
            .field("requests_in_flight", &stats.requests_in_flight)
            .field("close_timeout", &self.shared.options.close_timeout)
            .field("build_timeout", &self.shared.options.build_timeout)
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}
