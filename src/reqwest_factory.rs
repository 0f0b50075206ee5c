//! [`ReqwestFactory`]: managed `reqwest::Client`s (feature `reqwest`).

use std::fmt;

use tokio::runtime::Handle;

use crate::error::Error;
use crate::manager::ClientFactory;
use crate::manager::Manager;

/// A [`Manager`] of `reqwest::Client`s: one per thread (or runtime), bound to the runtime
/// it runs on.
///
/// A plain shared `reqwest::Client` hangs when it hands a request from one runtime a
/// pooled connection of another, idle runtime (reqwest#2501), and fails with "dispatch
/// task is gone" when that runtime is dropped mid-request (reqwest#1148). Getting the
/// client from a `ReqwestManager` each time avoids both: each runtime's connections are
/// used only by that runtime's client.
///
/// # Examples
///
/// ```no_run
/// use std::sync::LazyLock;
/// use rtlocal::{ReqwestFactory, ReqwestManager};
///
/// static HTTP: LazyLock<ReqwestManager> = LazyLock::new(|| {
///     ReqwestManager::new(ReqwestFactory::with_builder(|| {
///         reqwest::Client::builder().user_agent("my-app/1.0")
///     }))
/// });
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // `Managed<ReqwestFactory>` derefs to `reqwest::Client`.
/// let body = HTTP.client().await?.get("http://127.0.0.1:8080/").send().await?.text().await?;
/// # let _ = body; Ok(()) }
/// ```
pub type ReqwestManager = Manager<ReqwestFactory>;

/// Builds `reqwest::Client`s for a [`ReqwestManager`].
///
/// # What closing means for reqwest
///
/// reqwest offers no way to close a client or reach its sockets. Closing one (on a
/// runtime change, `close_all`, `shutdown`) stops the manager handing it out and waits
/// for requests counted with [`Managed::track`](crate::Managed::track); its connections
/// close when the last handle on the client is dropped and its runtime next runs, or when
/// that runtime is dropped (the usual case: a runtime change happens because the old
/// runtime ended). [`HttpClientManager`](crate::HttpClientManager) tracks every socket and
/// also shuts idle runtimes' connections down on the wire.
///
/// ```
/// let manager = rtlocal::ReqwestManager::new(rtlocal::ReqwestFactory::new());
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let client = rt.block_on(manager.client()).unwrap();
/// let _: &reqwest::Client = &client; // derefs to the reqwest client
/// drop(rt);
/// assert!(!client.is_open()); // released with its runtime
/// ```
pub struct ReqwestFactory {
    configure: Box<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>,
}

impl ReqwestFactory {
    /// Clients with reqwest's defaults (`reqwest::Client::builder()`).
    ///
    /// ```
    /// let manager = rtlocal::ReqwestManager::new(rtlocal::ReqwestFactory::new());
    /// # let _ = manager;
    /// ```
    pub fn new() -> Self {
        ReqwestFactory::with_builder(reqwest::Client::builder)
    }

    /// Clients built from the builder `configure` returns, called once per client.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let factory = rtlocal::ReqwestFactory::with_builder(|| {
    ///     reqwest::Client::builder()
    ///         .connect_timeout(Duration::from_secs(3))
    ///         .pool_idle_timeout(Duration::from_secs(30))
    /// });
    /// let manager = rtlocal::ReqwestManager::new(factory);
    /// # let _ = manager;
    /// ```
    pub fn with_builder(
        configure: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        ReqwestFactory {
            configure: Box::new(configure),
        }
    }
}

impl Default for ReqwestFactory {
    fn default() -> Self {
        ReqwestFactory::new()
    }
}

impl fmt::Debug for ReqwestFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestFactory").finish_non_exhaustive()
    }
}

impl ClientFactory for ReqwestFactory {
    type Client = reqwest::Client;

    async fn build(&self, _runtime: &Handle) -> Result<reqwest::Client, Error> {
        (self.configure)().build().map_err(Error::build)
    }
}
