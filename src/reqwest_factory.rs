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
/// reqwest offers no way to close a client or reach its sockets: its pooled connections
/// are tasks on the runtime that opened them, and a socket closes only when that runtime
/// next polls its task (after the last handle on the client is dropped) or drops it.
/// Closing a managed reqwest client (on a runtime change, `close_all`, `shutdown`, a
/// thread's exit) stops the manager handing it out, waits for requests counted with
/// [`Managed::track`](crate::Managed::track), lets go of the manager's handle and checks
/// whether the client's runtime is running (a no-op task spawned on it must run within
/// 100 ms; see [`ClientFactory::needs_runtime_to_close`]):
///
/// * the runtime runs (a `multi_thread` runtime, a `current_thread` runtime inside
///   `block_on`), or it is being torn down: the connections close on the wire as soon as
///   no handle (and no clone of the `reqwest::Client`) is left;
/// * it does not (an idle `current_thread` runtime whose thread left `block_on`, a
///   runtime blocked by a long synchronous call): the sockets stay open until that runtime
///   runs again or is dropped. The close says so, honestly:
///   [`CloseReport::not_closed_on_wire`](crate::CloseReport::not_closed_on_wire) and
///   [`Stats::clients_not_closed_on_wire`](crate::Stats::clients_not_closed_on_wire)
///   count it.
///
/// What to do about a count that is not 0: keep each runtime running until `close_all` or
/// `shutdown` returns (close before leaving `block_on`), or drop the idle runtimes (their
/// tasks, connections included, are dropped with them: the usual case, a runtime change
/// happens because the old runtime ended), or use
/// [`HttpClientManager`](crate::HttpClientManager), which tracks every socket and shuts
/// it down on the wire from outside, whatever its runtime is doing.
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

    /// `true`: a reqwest client's connections are tasks of its runtime, closed only when
    /// that runtime polls them (see the type docs).
    fn needs_runtime_to_close(&self) -> bool {
        true
    }
}
