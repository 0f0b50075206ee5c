//! [`ReqwestFactory`]: managed `reqwest::Client`s (feature `reqwest`).

use std::fmt;
use std::task::{Context, Poll};

use tokio::runtime::{self, Handle};

use crate::error::{Error, ForeignRuntime};
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
///         ReqwestFactory::client_builder().user_agent("my-app/1.0")
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
/// # Used on another runtime
///
/// A handle ([`Managed`](crate::Managed), or a clone of it) kept and used on a runtime
/// other than its client's would hand that runtime's requests the client's pooled
/// connections — tasks of a runtime that may not run, so the request would wait forever
/// (reqwest#2501). Instead, dereferenced there, the handle gives a client whose every
/// request fails at once with a connect error naming both runtimes, and nothing is sent.
/// Get the current runtime's client with `manager.client().await` (the native
/// [`Client`](crate::Client) re-routes by itself; a `reqwest::Client` cannot be told to).
/// A `reqwest::Client` cloned out of the handle (`(*handle).clone()`) is reqwest's own and
/// is not checked.
///
/// # What rtlocal cannot do for reqwest
///
/// reqwest lets nothing outside it see a request start or reach a connection's socket:
/// its connector layers (`ClientBuilder::connector_layer`) see a connection being made,
/// and receive it as a sealed type. So, unlike [`HttpClientManager`](crate::HttpClientManager):
///
/// * a close drains only requests counted with [`Managed::track`](crate::Managed::track);
///   others in flight are not waited for;
/// * idle connections are closed on the wire only by their runtime (when it next runs,
///   or is dropped), and reqwest's `pool_idle_timeout` holds only while it runs;
/// * there is no limit on open connections, in total or per host (reqwest's
///   `pool_max_idle_per_host` caps idle ones only).
///
/// The close report says exactly what was left open (see below).
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
    /// Clients with reqwest's defaults, and the proxy variables read as
    /// [`HttpClientManager`](crate::HttpClientManager) reads them: built from
    /// [`client_builder`](ReqwestFactory::client_builder).
    ///
    /// ```
    /// let manager = rtlocal::ReqwestManager::new(rtlocal::ReqwestFactory::new());
    /// # let _ = manager;
    /// ```
    pub fn new() -> Self {
        ReqwestFactory::with_builder(ReqwestFactory::client_builder)
    }

    /// `reqwest::Client::builder()`, except that the proxy variables (`HTTP_PROXY`,
    /// `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, and lower case) are read by rtlocal, with
    /// the rules of [`Builder::no_proxy`](crate::Builder::no_proxy): they never apply to
    /// `localhost` and loopback addresses (Go's rule), `NO_PROXY` takes `[::1]` and
    /// ports, and an unusable value is ignored with a warning. reqwest's own reading of
    /// the variables sends loopback requests to the proxy, and on macOS and Windows also
    /// reads the system's proxy settings, which this does not.
    ///
    /// How: reqwest's automatic proxy is turned off (`no_proxy()`) and, when the
    /// variables set a proxy, one `reqwest::Proxy::custom` asks rtlocal's rule for each
    /// request. The variables are read when this is called (once per client). A proxy
    /// of your own added with `.proxy(..)` comes after that one (reqwest uses the first
    /// that matches): call `.no_proxy()` first to use yours alone.
    ///
    /// Start [`with_builder`](ReqwestFactory::with_builder) closures from this rather
    /// than from `reqwest::Client::builder()` to keep that rule.
    pub fn client_builder() -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder().no_proxy();
        match crate::http::config::env_rule() {
            None => builder,
            Some(rule) => builder.proxy(reqwest::Proxy::custom(move |url: &reqwest::Url| {
                let dst: http::Uri = url.as_str().parse().ok()?;
                let intercept = rule.intercept(&dst)?;
                let mut proxy = reqwest::Url::parse(&intercept.uri().to_string()).ok()?;
                if let Some((user, password)) = intercept.raw_auth() {
                    // The URL percent-encodes them; reqwest decodes them for the header.
                    proxy.set_username(user).ok()?;
                    proxy.set_password(Some(password)).ok()?;
                }
                Some(proxy)
            })),
        }
    }

    /// Clients built from the builder `configure` returns, called once per client.
    ///
    /// The builder is used as it is: one from `reqwest::Client::builder()` reads the
    /// proxy variables with reqwest's rules (loopback requests included); start from
    /// [`client_builder`](ReqwestFactory::client_builder) for rtlocal's.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let factory = rtlocal::ReqwestFactory::with_builder(|| {
    ///     rtlocal::ReqwestFactory::client_builder()
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

    /// A kept handle used on another runtime would hand that runtime's requests this
    /// client's pooled connections, tasks of a runtime that may not run (reqwest#2501):
    /// it dereferences to a client that refuses instead (see the type docs).
    const CHECKS_RUNTIME_ON_DEREF: bool = true;

    fn foreign_runtime_client(&self, owner: runtime::Id) -> Option<reqwest::Client> {
        // No pool and a connector that refuses before dialling: every request fails at
        // once, and nothing is sent anywhere.
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .connector_layer(RefuseLayer { owner })
            .build()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "could not build the refusing reqwest client");
            })
            .ok()
    }
}

/// The connector layer of the client a handle gives on a foreign runtime: refuses every
/// connection, naming the client's runtime and the one it was used on.
#[derive(Clone, Copy)]
struct RefuseLayer {
    owner: runtime::Id,
}

#[derive(Clone)]
struct Refuse<S> {
    owner: runtime::Id,
    _inner: S,
}

impl<S> tower_layer::Layer<S> for RefuseLayer {
    type Service = Refuse<S>;

    fn layer(&self, inner: S) -> Refuse<S> {
        Refuse {
            owner: self.owner,
            _inner: inner,
        }
    }
}

impl<S, R> tower_service::Service<R> for Refuse<S>
where
    S: tower_service::Service<R>,
    S::Error: From<ForeignRuntime>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::future::Ready<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        std::future::ready(Err(
            ForeignRuntime::here("reqwest client", self.owner).into()
        ))
    }
}
