//! [`Client`]: a cheap handle on one hyper-util client bound to one runtime.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::{CONNECTION, HeaderMap, HeaderValue};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client as HyperClient, ResponseFuture};
use hyper_util::rt::TokioTimer;
use tokio::runtime::{self, Handle};
use tokio::sync::Notify;

use crate::body::{Body, ResponseBody};
use crate::config::Config;
use crate::connect::{
    ConnTracker, DnsCache, Limits, Resolver, TrackingConnector, TrackingExecutor,
};
use crate::error::{Error, Kind};
use crate::lifecycle::{Lifecycle, Phase};
use crate::manager::Shared;
use crate::runtime::CleanupHandle;
use crate::slot::SlotClient;
use crate::stats::Counters;

/// Identifies one client a manager built. Unique for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ClientId(NonZeroU64);

impl ClientId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // Relaxed: uniqueness needs only atomicity.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        ClientId(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client-{}", self.0)
    }
}

/// An HTTP client bound to the tokio runtime it was built on.
///
/// A `Client` is one `Arc`: clone it freely. Get one from
/// [`HttpClientManager::client`](crate::HttpClientManager::client) or [`crate::client`];
/// the same thread on the same live runtime always gets the same client
/// ([`id`](Client::id) equal).
///
/// # Used from another runtime, or after it was closed
///
/// A client's connections are tasks on its own runtime, so a request sent from another
/// runtime could hang on a connection nobody polls. `request` never does that: when it
/// is called on a runtime other than the client's own, or after the client was closed,
/// it is transparently re-routed to the manager's client for the *current* thread and
/// runtime. Only if the manager itself is gone does it fail, at once, with
/// [`Error::is_closed`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rtlocal::Error> {
/// let client = rtlocal::client().await?;
/// assert_eq!(client.runtime_id(), tokio::runtime::Handle::current().id());
/// assert_eq!(client.id(), rtlocal::client().await?.id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    id: ClientId,
    runtime: runtime::Id,
    hyper: HyperClient<TrackingConnector, Body>,
    tracker: Arc<ConnTracker>,
    /// Open → closing (draining) → closed, and the requests in flight.
    life: Lifecycle,
    drained: Notify,
    hook: parking_lot::Mutex<Option<CleanupHandle>>,
    manager: Weak<Shared>,
    /// The client's own runtime, for closing it gracefully from elsewhere.
    handle: Handle,
    counters: Arc<Counters>,
    default_headers: Arc<HeaderMap>,
    keep_alive: bool,
    request_timeout: Option<Duration>,
}

/// The result of closing one client.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CloseOutcome {
    /// This call performed the close (it was not already closed).
    pub(crate) closed_now: bool,
    /// The deadline passed with requests still in flight.
    pub(crate) forced: bool,
    /// How many requests were cut.
    pub(crate) cut: u64,
}

impl Client {
    pub(crate) fn build(
        config: &Config,
        handle: Handle,
        manager: Weak<Shared>,
        counters: Arc<Counters>,
        dns: Option<Arc<DnsCache>>,
    ) -> Client {
        let tracker = ConnTracker::new(Arc::clone(&counters));
        let mut http = HttpConnector::new_with_resolver(Resolver::new(dns, Arc::clone(&counters)));
        http.set_nodelay(config.tcp_nodelay);
        http.set_connect_timeout(config.connect_timeout);
        // The connector handles `https` itself (TLS over the tracked socket).
        http.enforce_http(false);
        let connector = TrackingConnector {
            http,
            tracker: Arc::clone(&tracker),
            limits: Limits::new(config.max_connections, config.max_connections_per_host),
            #[cfg(feature = "rustls")]
            tls: config.tls.clone().map(tokio_rustls::TlsConnector::from),
        };
        let exec = TrackingExecutor {
            handle: handle.clone(),
            tracker: Arc::clone(&tracker),
        };
        let mut builder = HyperClient::builder(exec);
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(if config.keep_alive {
                config.pool_max_idle_per_host
            } else {
                0
            })
            .http2_only(config.http2_prior_knowledge);
        let hyper = builder.build(connector);
        Counters::inc(&counters.clients_created);
        let inner = ClientInner {
            id: ClientId::next(),
            runtime: handle.id(),
            hyper,
            tracker,
            life: Lifecycle::new(),
            drained: Notify::new(),
            hook: parking_lot::Mutex::new(None),
            manager,
            handle,
            counters,
            default_headers: Arc::clone(&config.default_headers),
            keep_alive: config.keep_alive,
            request_timeout: config.request_timeout,
        };
        tracing::debug!(
            client = %inner.id,
            runtime = %inner.runtime,
            thread = ?std::thread::current().id(),
            "client created"
        );
        Client {
            inner: Arc::new(inner),
        }
    }

    /// This client's id: equal for every clone, different for every client built.
    pub fn id(&self) -> ClientId {
        self.inner.id
    }

    /// The runtime this client's connections live on.
    pub fn runtime_id(&self) -> runtime::Id {
        self.inner.runtime
    }

    /// Whether the client has not been closed. A closed client's requests are re-routed
    /// to the manager's current client.
    pub fn is_open(&self) -> bool {
        self.inner.life.phase() == Phase::Open
    }

    /// Sends a request.
    ///
    /// Called from a runtime other than the client's own, or after the client was closed,
    /// the request is re-routed to the manager's client for the current thread and
    /// runtime (see the type docs). The request counts as in flight until the response
    /// body is finished or dropped.
    ///
    /// # Errors
    /// [`Error::is_no_runtime`] outside a runtime; [`Error::is_connect`] when connecting
    /// fails; [`Error::is_timeout`] when a deadline passes; [`Error::is_request`] for other
    /// failures; [`Error::is_closed`] when the client is closed and its manager is gone.
    pub async fn request<B: Into<Body>>(
        &self,
        req: Request<B>,
    ) -> Result<Response<ResponseBody>, Error> {
        let handle = Handle::try_current().map_err(|_| Error::no_runtime())?;
        let req = req.map(Into::into);
        if handle.id() == self.inner.runtime {
            if let Some(guard) = self.inner.begin_request() {
                return self.inner.dispatch(req, guard).await;
            }
        }
        // Boxed: the cold path would otherwise double the size of every request future.
        Box::pin(self.reroute(req)).await
    }

    #[cold]
    async fn reroute(&self, req: Request<Body>) -> Result<Response<ResponseBody>, Error> {
        // A fresh client can be closed again before we use it (close_all racing us);
        // a few attempts settle that, and the error after them is honest.
        for _ in 0..3 {
            let Some(manager) = self.inner.manager.upgrade() else {
                return Err(Error::with_detail(
                    Kind::Closed,
                    "its manager is gone, so the request cannot be re-routed: get a client \
                     from a live manager",
                ));
            };
            let fresh = Shared::client(&manager).await?;
            if let Some(guard) = fresh.inner.begin_request() {
                tracing::trace!(from = %self.inner.id, to = %fresh.inner.id, "request re-routed");
                return fresh.inner.dispatch(req, guard).await;
            }
        }
        Err(Error::with_detail(
            Kind::Closed,
            "every client handed out was closed before the request could start",
        ))
    }

    /// Sends a `GET` request to `uri`.
    ///
    /// # Errors
    /// [`Error::is_invalid_uri`] (naming the URI) when it does not parse; otherwise as
    /// [`request`](Client::request).
    pub async fn get(&self, uri: &str) -> Result<Response<ResponseBody>, Error> {
        let uri: Uri = uri
            .parse()
            .map_err(|e| Error::with_detail_and_source(Kind::InvalidUri, format!("{uri:?}"), e))?;
        let req = Request::get(uri)
            .body(Body::empty())
            .map_err(|e| Error::with_source(Kind::InvalidUri, e))?;
        self.request(req).await
    }

    /// Closes this client: no new requests (they are re-routed), in-flight ones may finish
    /// until `timeout`, then every connection is shut down on the wire.
    pub(crate) async fn close_graceful(&self, timeout: Duration) -> CloseOutcome {
        let inner = &self.inner;
        inner.life.begin_close();
        if inner.life.phase() == Phase::Closed {
            return CloseOutcome::default();
        }
        let drained = tokio::time::timeout(timeout, inner.wait_drained())
            .await
            .is_ok();
        let (closed_now, cut) = inner.shut(if drained { "closed" } else { "deadline" });
        CloseOutcome {
            closed_now,
            forced: closed_now && cut > 0,
            cut,
        }
    }

    /// Stops new requests (they are re-routed) without waiting for anything.
    pub(crate) fn begin_close(&self) {
        self.inner.life.begin_close();
    }

    /// Closes at once, cutting whatever is in flight. Returns whether this call closed it.
    pub(crate) fn close_now(&self, why: &'static str) -> bool {
        self.inner.shut(why).0
    }

    /// Closes gracefully on the client's own runtime, in the background (for a thread
    /// that exits while requests of its client may still be in flight elsewhere). If that
    /// runtime is gone, the task is dropped at once, and with it this handle.
    pub(crate) fn close_in_background(self, timeout: Duration) {
        self.begin_close();
        let handle = self.inner.handle.clone();
        drop(handle.spawn(async move {
            self.close_graceful(timeout).await;
        }));
    }

    /// Releases the client from its runtime's teardown: the runtime is dropping every
    /// connection task (so their sockets close) and whatever is in flight with them, so
    /// there is nothing to wait for and nothing to shut down by hand.
    pub(crate) fn release_at_teardown(&self) -> bool {
        self.inner
            .shut_with("runtime torn down", ConnTracker::refuse_new)
            .0
    }

    pub(crate) fn set_hook(&self, hook: CleanupHandle) {
        let mut slot = self.inner.hook.lock();
        if self.inner.life.phase() == Phase::Closed {
            drop(slot);
            hook.cancel();
        } else {
            *slot = Some(hook);
        }
    }

    /// Whether this client was built by the manager whose shared state is at `ptr`.
    /// (Its `Weak` keeps that allocation from being reused while the client exists.)
    #[inline]
    pub(crate) fn belongs_to(&self, ptr: *const Shared) -> bool {
        std::ptr::eq(self.inner.manager.as_ptr(), ptr)
    }

    /// Sockets currently open (for tests and `Debug`).
    pub(crate) fn open_sockets(&self) -> usize {
        self.inner.tracker.open_sockets()
    }
}

impl ClientInner {
    /// Counts a request in flight, unless the client is closing.
    #[inline]
    fn begin_request(self: &Arc<Self>) -> Option<InFlight> {
        if !self.life.begin_request() {
            return None;
        }
        Counters::inc(&self.counters.requests_started);
        Counters::inc(&self.counters.requests_in_flight);
        Some(InFlight {
            inner: Arc::clone(self),
        })
    }

    fn end_request(&self) {
        if self.life.end_request() {
            self.drained.notify_waiters();
        }
    }

    async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.life.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Sends a request counted by `guard`, under the request timeout. The request is
    /// handed to hyper-util before the first await, so the future holds little more than
    /// hyper-util's boxed future and the guard.
    async fn dispatch(
        &self,
        req: Request<Body>,
        guard: InFlight,
    ) -> Result<Response<ResponseBody>, Error> {
        // A timeout too large to add to `now` (e.g. `Duration::MAX`) means no deadline.
        let Some((timeout, deadline)) = self
            .request_timeout
            .and_then(|t| Some((t, tokio::time::Instant::now().checked_add(t)?)))
        else {
            return Self::finish(self.send(req), guard, None).await;
        };
        let sent = self.send(req);
        match tokio::time::timeout_at(deadline, Self::finish(sent, guard, Some(deadline))).await {
            Ok(result) => result,
            Err(_) => {
                Counters::inc(&self.counters.requests_failed);
                Err(Error::timeout(format!(
                    "request_timeout ({timeout:?}) passed before the response headers arrived"
                )))
            }
        }
    }

    /// Hands the request to hyper-util, adding the default headers (and
    /// `Connection: close` without keep-alive).
    #[inline]
    fn send(&self, mut req: Request<Body>) -> ResponseFuture {
        if !self.default_headers.is_empty() {
            let headers = req.headers_mut();
            for name in self.default_headers.keys() {
                if !headers.contains_key(name) {
                    for value in self.default_headers.get_all(name) {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
        }
        if !self.keep_alive {
            req.headers_mut()
                .entry(CONNECTION)
                .or_insert(HeaderValue::from_static("close"));
        }
        self.hyper.request(req)
    }

    async fn finish(
        sent: ResponseFuture,
        guard: InFlight,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<ResponseBody>, Error> {
        match sent.await {
            Ok(resp) => Ok(resp.map(|b| ResponseBody::new(b, guard, deadline))),
            Err(e) => {
                let cut = guard.client_closed();
                guard.failed();
                if cut {
                    return Err(Error::cut(e));
                }
                Err(Error::from_client(e))
            }
        }
    }

    /// The one place a client becomes closed: connections shut, hook cancelled, counted.
    /// Returns whether this call closed it, and how many requests it cut.
    fn shut(&self, why: &'static str) -> (bool, u64) {
        self.shut_with(why, ConnTracker::close)
    }

    fn shut_with(&self, why: &'static str, shut_connections: fn(&ConnTracker)) -> (bool, u64) {
        let (first, cut) = self.life.finish_close();
        if !first {
            return (false, 0);
        }
        let forced = cut > 0;
        shut_connections(&self.tracker);
        if let Some(hook) = self.hook.lock().take() {
            hook.cancel();
        }
        self.drained.notify_waiters();
        Counters::inc(&self.counters.clients_closed);
        if forced {
            Counters::inc(&self.counters.forced_closes);
            tracing::warn!(
                client = %self.id,
                runtime = %self.runtime,
                in_flight = cut,
                "client close forced: requests still in flight were cut"
            );
        } else {
            tracing::debug!(client = %self.id, runtime = %self.runtime, reason = why, "client closed");
        }
        (true, cut)
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // Last handle gone without a close (e.g. the manager was dropped): shut the
        // connections so nothing outlives the client.
        self.shut("dropped");
    }
}

impl SlotClient for Client {
    #[inline]
    fn is_open(&self) -> bool {
        Client::is_open(self)
    }

    fn begin_close(&self) {
        Client::begin_close(self);
    }

    fn force_close(&self) {
        self.close_now("force-closed");
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.inner.life.phase() {
            Phase::Open => "open",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        };
        f.debug_struct("Client")
            .field("id", &self.inner.id)
            .field("runtime", &self.inner.runtime)
            .field("state", &state)
            .field("in_flight", &self.inner.life.in_flight())
            .field("open_sockets", &self.open_sockets())
            .finish()
    }
}

/// A request in flight; ends when the response body finishes or is dropped.
pub(crate) struct InFlight {
    inner: Arc<ClientInner>,
}

impl InFlight {
    pub(crate) fn failed(self) {
        Counters::inc(&self.inner.counters.requests_failed);
    }

    /// Whether the client this request belongs to was closed under it.
    pub(crate) fn client_closed(&self) -> bool {
        self.inner.life.phase() == Phase::Closed
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        Counters::dec(&self.inner.counters.requests_in_flight);
        self.inner.end_request();
    }
}
