//! Managed tonic [`Channel`]s for [`rtlocal`]: one per thread (or runtime), bound to
//! the tokio runtime it runs on, its connections closed on the wire when it is closed.
//!
//! # The problem
//!
//! A tonic `Channel` spawns its buffer worker on the runtime current when it is built,
//! and that worker spawns the HTTP/2 connection task there too. Share one channel between
//! runtimes — a `static` used by several `#[tokio::test]` functions, or a pool of threads
//! that each own a runtime — and every call from another runtime goes through tasks of
//! the first:
//!
//! * while that runtime idles, the call waits for a worker nobody polls: it hangs;
//! * once that runtime is dropped, calls fail with "Service was not ready: …",
//!   "transport error" or `Closed` (grpc-rust#1751, #2194).
//!
//! [`ChannelManager`] hands every thread its own channel, built on the runtime it is used
//! on, and closes it when that runtime changes or ends.
//!
//! # Examples
//!
//! ```
//! use std::sync::LazyLock;
//! use rtlocal_tonic::{ChannelFactory, ChannelManager};
//!
//! static GRPC: LazyLock<ChannelManager> = LazyLock::new(|| {
//!     let factory = ChannelFactory::from_shared("http://127.0.0.1:50051").expect("a valid URI");
//!     ChannelManager::new(factory)
//! });
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rtlocal::Error> {
//! // Lazily connected: nothing is dialled until the first call.
//! let channel = GRPC.client().await?.channel();
//! // Generated clients take the channel by value, e.g.
//! // `HealthClient::new(channel).check(request).await?`.
//! # let _ = channel;
//! # Ok(()) }
//! ```
//!
//! # What "closed" means
//!
//! Every connection a managed channel opens goes through a connector that keeps a
//! handle on its socket. A close (on a runtime change,
//! [`close_all`](rtlocal::Manager::close_all), [`shutdown`](rtlocal::Manager::shutdown))
//! stops the manager handing the channel out, waits (up to the close timeout) for calls
//! counted with [`Managed::track`](rtlocal::Managed::track), then shuts every open
//! connection down on the wire (`shutdown(2)`: the server sees the connection end at
//! once), drops the tasks that drive them and refuses new ones: every call through a
//! clone of the closed channel still held somewhere, the first one included, fails at
//! once with `Unavailable` and a message saying the rtlocal manager closed the channel,
//! instead of reconnecting. Nothing in that needs the channel's runtime to run, so it
//! closes even while that runtime idles.
//! [`CloseReport`](rtlocal::CloseReport) counts it as closed; a forced close does the
//! same, cutting calls still in flight.
//!
//! **What is left behind:** the channel's buffer worker belongs to its runtime; it ends
//! when the last clone of the channel is dropped and that runtime next runs, or when the
//! runtime is dropped. Calls not counted with `track` that are in flight
//! at the close are cut, not drained: tonic has no graceful close for a channel.
//!
//! # Used on another runtime
//!
//! A handle kept and used on a runtime other than its channel's would send its calls to
//! a connection task of a runtime that may not run: they would wait forever. Dereferenced
//! there, the handle gives a channel whose every call fails at once, `Unavailable`,
//! naming both runtimes, and nothing is sent; get the current runtime's channel with
//! `manager.client().await`. A `Channel` cloned out of the handle earlier is tonic's own
//! and is not checked.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod connector;
mod executor;

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;
use rtlocal::{ClientFactory, Manager};
use tokio::runtime::Handle;
use tonic::transport::{Channel, Endpoint};

use connector::{Sockets, TrackingConnector};
use executor::ChannelExecutor;

/// A [`Manager`] of tonic [`Channel`]s: one per thread (or runtime, see
/// [`rtlocal::Sharing`]), built on the runtime it runs on.
///
/// `Managed<ChannelFactory>` derefs to [`TrackedChannel`], which derefs to `Channel`;
/// [`TrackedChannel::channel`] gives the clone a generated client takes. See the
/// [crate docs](crate) for what closing means.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rtlocal::Error> {
/// let manager = rtlocal_tonic::ChannelManager::new(
///     rtlocal_tonic::ChannelFactory::from_shared("http://127.0.0.1:50051").unwrap(),
/// );
/// let client = manager.client().await?;
/// assert_eq!(client.open_connections(), 0); // lazily connected: nothing dialled yet
/// let report = manager.close_all().await;
/// assert_eq!((report.closed, report.forced), (1, 0));
/// assert!(client.is_closed()); // its connections shut down, new ones refused
/// # Ok(()) }
/// ```
pub type ChannelManager = Manager<ChannelFactory>;

/// Builds lazily connected tonic [`Channel`]s for a [`ChannelManager`]
/// ([`Endpoint::connect_with_connector_lazy`]): building a channel dials nothing, the
/// first call does. The endpoint's settings (timeouts, HTTP/2 options, TLS when tonic's
/// TLS features are on) apply to every channel.
///
/// Closing a channel shuts its connections down on the wire and refuses new ones,
/// reported as closed in [`CloseReport`](rtlocal::CloseReport) (forced when calls
/// counted with `track` were still in flight at the close timeout) — see the
/// [crate docs](crate#what-closed-means).
///
/// ```
/// use std::time::Duration;
/// use tonic::transport::Endpoint;
///
/// let endpoint = Endpoint::from_static("http://127.0.0.1:50051")
///     .connect_timeout(Duration::from_secs(2))
///     .timeout(Duration::from_secs(10));
/// let manager = rtlocal::Manager::builder(rtlocal_tonic::ChannelFactory::new(endpoint))
///     .close_timeout(Duration::from_secs(3))
///     .build()?;
/// # let _ = manager;
/// # Ok::<(), rtlocal::Error>(())
/// ```
#[derive(Clone)]
pub struct ChannelFactory {
    endpoint: Endpoint,
    http: HttpConnector,
}

impl ChannelFactory {
    /// Channels to `endpoint`, dialled with a hyper-util `HttpConnector` (TCP_NODELAY
    /// on, as tonic's own connector sets it).
    ///
    /// Every dial goes through [`rtlocal::Target::of`]: an endpoint URI that does not say
    /// exactly where to connect fails its calls (`Unavailable`) and dials nothing, and an
    /// `https` endpoint without TLS configured fails rather than send in cleartext.
    ///
    /// The endpoint's executor is replaced: a managed channel spawns its tasks on the
    /// runtime it is built for, and keeps its connection tasks where a close can drop
    /// them (see the [crate docs](crate#what-closed-means)).
    pub fn new(endpoint: Endpoint) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        // tonic hands `https` URIs to the connector when it wraps it in TLS itself.
        http.enforce_http(false);
        ChannelFactory { endpoint, http }
    }

    /// Channels to `uri` (`http://host:port`).
    ///
    /// # Errors
    /// [`rtlocal::Error::is_invalid_uri`] when `uri` does not parse, or does not say
    /// exactly where to connect ([`rtlocal::Target::of`]: a scheme other than
    /// `http`/`https`, a port outside 1..=65535, not digits or empty, credentials in it).
    /// The message masks credentials. Nothing connects here.
    ///
    /// ```
    /// let err = rtlocal_tonic::ChannelFactory::from_shared("http://127.0.0.1:99999").unwrap_err();
    /// assert!(err.is_invalid_uri() && err.to_string().contains("99999"));
    /// ```
    pub fn from_shared(uri: impl Into<String>) -> Result<Self, rtlocal::Error> {
        let uri = uri.into();
        let parsed: http::Uri = uri.parse().map_err(|_| {
            rtlocal::Error::invalid_uri(format!(
                "{:?} does not parse as a URI: give one such as http://host:port",
                rtlocal::redact::text(&uri)
            ))
        })?;
        rtlocal::Target::of(&parsed)?;
        let endpoint = Endpoint::from_shared(uri).map_err(|e| {
            rtlocal::Error::invalid_uri(format!(
                "{:?} is refused by tonic: {e}",
                rtlocal::redact::uri(&parsed)
            ))
        })?;
        Ok(ChannelFactory::new(endpoint))
    }

    /// Dials with `http` instead: its DNS resolver, TCP keepalive, local address, connect
    /// timeout and so on. (The endpoint's `tcp_keepalive`, `tcp_nodelay` and
    /// `local_address` are settings of tonic's own connector, which a managed channel
    /// does not use: set them here.) `enforce_http(false)` is needed for TLS endpoints.
    pub fn with_connector(mut self, http: HttpConnector) -> Self {
        self.http = http;
        self
    }

    /// The endpoint every channel connects to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl fmt::Debug for ChannelFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelFactory")
            .field("uri", &rtlocal::redact::uri(self.endpoint.uri()))
            .finish_non_exhaustive()
    }
}

impl ClientFactory for ChannelFactory {
    type Client = TrackedChannel;

    async fn build(&self, runtime: &Handle) -> Result<TrackedChannel, rtlocal::Error> {
        let sockets = Arc::new(Sockets::default());
        let connector = TrackingConnector::new(self.http.clone(), sockets.clone());
        let executor = ChannelExecutor::new(runtime.clone(), sockets.clone());
        // The buffer worker, and later the connection tasks, are spawned on the channel's
        // runtime; the connection tasks where a close can drop them.
        let channel = self
            .endpoint
            .clone()
            .executor(executor.clone())
            .connect_with_connector_lazy(connector);
        executor.channel_built();
        Ok(TrackedChannel { channel, sockets })
    }

    async fn close(&self, channel: &TrackedChannel) {
        channel.sockets.close();
    }

    fn abort(&self, channel: &TrackedChannel) {
        channel.sockets.close();
    }

    /// A kept handle used on another runtime would send its calls to a connection task
    /// of a runtime that may not run (they would wait forever): it dereferences there to
    /// a channel whose every call fails at once, `Unavailable`, naming both runtimes.
    const CHECKS_RUNTIME_ON_DEREF: bool = true;

    fn foreign_runtime_client(&self, owner: tokio::runtime::Id) -> Option<TrackedChannel> {
        // Built on the runtime the handle is used on (its buffer worker goes there).
        let channel = self
            .endpoint
            .clone()
            .connect_with_connector_lazy(connector::RefuseForeign { owner });
        Some(TrackedChannel {
            channel,
            sockets: Arc::new(Sockets::default()),
        })
    }
}

/// A managed tonic [`Channel`] and the sockets of its connections. Derefs to `Channel`.
///
/// Closing it (see the [crate docs](crate)) shuts its connections down on the wire and
/// makes every clone of the channel fail its calls.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rtlocal::Error> {
/// # let manager = rtlocal_tonic::ChannelManager::new(
/// #     rtlocal_tonic::ChannelFactory::from_shared("http://127.0.0.1:50051").unwrap(),
/// # );
/// let managed = manager.client().await?;
/// let channel: tonic::transport::Channel = managed.channel(); // for a generated client
/// # let _ = channel;
/// assert_eq!((managed.open_connections(), managed.connections_opened()), (0, 0));
/// assert!(!managed.is_closed());
/// # Ok(()) }
/// ```
pub struct TrackedChannel {
    channel: Channel,
    sockets: Arc<Sockets>,
}

impl TrackedChannel {
    /// A clone of the channel (cheap), for a generated client:
    /// `HealthClient::new(managed.channel())`. A clone kept past the close fails its
    /// calls; take one per use.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Connections this channel has open now (opened and not yet closed or shut down).
    pub fn open_connections(&self) -> usize {
        self.sockets.open()
    }

    /// Connections this channel has opened since it was built.
    pub fn connections_opened(&self) -> u64 {
        self.sockets.opened()
    }

    /// Whether the channel's connections have been shut down (the manager closed it).
    pub fn is_closed(&self) -> bool {
        self.sockets.is_closed()
    }
}

impl Deref for TrackedChannel {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.channel
    }
}

impl fmt::Debug for TrackedChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedChannel")
            .field("open_connections", &self.open_connections())
            .field("connections_opened", &self.connections_opened())
            .field("closed", &self.is_closed())
            .finish()
    }
}
