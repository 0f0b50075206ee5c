//! [`HttpClientManager`]: the ready-made [`Manager`] of HTTP clients (a connection pool on
//! hyper each), with HTTP settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::http::client::Client;
use crate::http::config::{Builder, Config};
use crate::http::factory::HyperFactory;
use crate::manager::{CloseReport, Counters, Stats};
use crate::manager::{Manager, Sharing};

/// Hands every thread an HTTP [`Client`] bound to the tokio runtime it is running on.
///
/// * Same thread, same live runtime → the same client.
/// * The thread's runtime changed → the stale client is closed (in-flight requests get
///   up to [`close_timeout`](Builder::close_timeout)), *then* the slot is reset, *then*
///   the new client is published. Concurrent callers during a replacement all receive
///   the one new client.
/// * A runtime torn down → the clients bound to it are closed right then.
///
/// `HttpClientManager` is `Send + Sync`; share it behind an `Arc` or in a `static`
/// (e.g. `static M: LazyLock<HttpClientManager> = LazyLock::new(HttpClientManager::new)`).
/// [`crate::client`] uses a process-wide default one.
///
/// It is a [`Manager`] over an HTTP client factory: the lifecycle (slots, replacement,
/// teardown release, `close_all`, `shutdown`, stats) is the generic manager's.
///
/// # Runtime requirements
/// The runtime must have its I/O and time drivers enabled, as for any tokio networking
/// (`#[tokio::main]`, `#[tokio::test]` and `Builder::enable_all()` do this).
///
/// # Examples
///
/// ```
/// use rtlocal::HttpClientManager;
///
/// # fn main() -> Result<(), rtlocal::Error> {
/// let manager = HttpClientManager::new();
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let first = rt.block_on(manager.client())?;
/// assert_eq!(first.id(), rt.block_on(manager.client())?.id());
///
/// // A new runtime on the same thread gets a new client; the old one was closed.
/// drop(rt);
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let second = rt.block_on(manager.client())?;
/// assert_ne!(first.id(), second.id());
/// assert!(!first.is_open());
/// # Ok(()) }
/// ```
pub struct HttpClientManager {
    inner: Manager<HyperFactory>,
}

impl HttpClientManager {
    /// A manager with the default configuration (see [`Builder`]).
    pub fn new() -> Self {
        // The defaults always validate; should building the TLS configuration ever fail,
        // https requests report it rather than `new` panicking.
        Builder::new()
            .build()
            .unwrap_or_else(|_| Self::from_config(Config::default()))
    }

    /// Configures a manager.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        let counters = Arc::new(Counters::default());
        let mut options = config.options();
        options.name.get_or_insert_with(|| "http".into());
        let factory = HyperFactory::new(config, Arc::clone(&counters));
        // The series only this layer records, described before the manager registers its
        // own (the generic manager knows nothing of HTTP).
        #[cfg(feature = "metrics")]
        crate::http::metrics::describe();
        HttpClientManager {
            inner: Manager::from_parts(factory, options, counters),
        }
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
    /// [`Error::is_shut_down`] after [`shutdown`](Self::shutdown).
    ///
    /// # Cancel safety
    /// Cancelling the future while it replaces a stale client force-closes that client
    /// and leaves the slot empty; other callers waiting on the replacement retry.
    #[inline]
    pub async fn client(&self) -> Result<Client, Error> {
        self.inner.client().await.map(|inner| Client { inner })
    }

    /// Closes every thread's client — including those whose runtime is idle or gone —
    /// and waits up to the close timeout for their in-flight requests; then forces the
    /// rest shut on the wire. The manager stays usable: the next `client()` builds anew.
    ///
    /// Safe to call concurrently and repeatedly: each call reports what it closed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rtlocal::Error> {
    /// let manager = rtlocal::HttpClientManager::new();
    /// let before = manager.client().await?;
    /// let report = manager.close_all().await;
    /// assert_eq!((report.closed, report.forced), (1, 0));
    /// assert_ne!(manager.client().await?.id(), before.id()); // still usable
    /// # Ok(()) }
    /// ```
    pub async fn close_all(&self) -> CloseReport {
        self.inner.close_all().await
    }

    /// Shuts the manager down: from now on `client()` fails with
    /// [`Error::is_shut_down`]; every thread's client stops taking requests, in-flight
    /// requests may finish until `timeout`, then the rest are cut and every connection is
    /// shut down on the wire — across every thread's slot, including slots whose runtime
    /// is idle or gone.
    ///
    /// Idempotent and safe to call concurrently: a later call closes whatever is left and
    /// reports only that. A request racing the call may still be handed a client that
    /// the shutdown then closes; it is cut like any other in-flight request.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    ///
    /// let manager = rtlocal::HttpClientManager::new();
    /// let _client = manager.client().await.unwrap();
    /// let report = manager.shutdown(Duration::from_secs(5)).await;
    /// assert_eq!(report.closed, 1);
    /// assert!(manager.client().await.unwrap_err().is_shut_down());
    /// println!("{report}");
    /// # }
    /// ```
    pub async fn shutdown(&self, timeout: Duration) -> CloseReport {
        self.inner.shutdown(timeout).await
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.is_shut_down()
    }

    /// A snapshot of the counters.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rtlocal::Error> {
    /// let manager = rtlocal::HttpClientManager::new();
    /// manager.client().await?;
    /// let stats = manager.stats();
    /// assert_eq!((stats.clients_created, stats.clients_live), (1, 1));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Who shares a client (see [`Sharing`]).
    pub fn sharing(&self) -> Sharing {
        self.inner.sharing()
    }
}

impl Builder {
    /// Validates the settings and builds the manager.
    ///
    /// # Errors
    /// [`Error::is_config`], with a message naming the setting and the value, when a
    /// timeout or limit is zero, a connect or request timeout is under 1 ms, settings
    /// contradict each other, a header value is invalid, or a root certificate does not
    /// parse. Values past a setting's "at most" (see each setter) are not errors: they
    /// mean no deadline or no limit.
    pub fn build(self) -> Result<HttpClientManager, Error> {
        self.into_config().map(HttpClientManager::from_config)
    }
}

impl Default for HttpClientManager {
    fn default() -> Self {
        HttpClientManager::new()
    }
}

impl fmt::Debug for HttpClientManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("HttpClientManager")
            .field("clients_live", &stats.clients_live)
            .field("connections_open", &stats.connections_open)
            .field("requests_in_flight", &stats.requests_in_flight)
            .field("close_timeout", &self.inner.close_timeout())
            .field("sharing", &self.inner.sharing())
            .finish()
    }
}
