//! [`Client`]: a cheap handle on one hyper-util client bound to one runtime.

use std::fmt;
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper_util::client::legacy::ResponseFuture;
use tokio::runtime::{self, Handle};

use crate::error::{Error, Kind};
use crate::http::body::request::Body;
use crate::http::body::response::ResponseBody;
use crate::http::connect::Busy;
use crate::http::deadline::{Deadline, with_deadline};
use crate::http::enter::InRuntime;
use crate::http::factory::{HyperFactory, HyperParts, InFlight};
use crate::http::uri::{self, Target};
use crate::manager::{ClientId, Counters, Managed};

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
    pub(crate) inner: Managed<HyperFactory>,
}

impl Client {
    /// This client's id: equal for every clone, different for every client built.
    pub fn id(&self) -> ClientId {
        self.inner.id()
    }

    /// The runtime this client's connections live on.
    pub fn runtime_id(&self) -> runtime::Id {
        self.inner.runtime_id()
    }

    /// Whether the client has not been closed. A closed client's requests are re-routed
    /// to the manager's current client.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rtlocal::Error> {
    /// let manager = rtlocal::HttpClientManager::new();
    /// let client = manager.client().await?;
    /// assert!(client.is_open());
    /// manager.close_all().await;
    /// assert!(!client.is_open());
    /// # Ok(()) }
    /// ```
    pub fn is_open(&self) -> bool {
        self.inner.is_open()
    }

    /// Sends a request.
    ///
    /// Called from a runtime other than the client's own, or after the client was closed,
    /// the request is re-routed to the manager's client for the current thread and
    /// runtime (see the type docs). The request counts as in flight until the response
    /// body is finished or dropped.
    ///
    /// # Polling
    /// The future must first be polled inside a tokio runtime (otherwise it fails at once
    /// with [`Error::is_no_runtime`]). Once started it may be finished anywhere, by any
    /// executor: each poll runs inside the client's runtime, so sockets and timers stay
    /// there, and the request timeout holds without any runtime.
    ///
    /// # Errors
    /// [`Error::is_invalid_uri`], before anything is sent, when the URI is not an absolute
    /// `http` or `https` URI with a host and a port from 1 to 65535 (or none), or carries
    /// credentials (`user:password@`); the message names the offending part. An `https`
    /// URI in a build without the `rustls` feature fails with [`Error::is_connect`],
    /// before any socket is opened.
    /// [`Error::is_no_runtime`] outside a runtime; [`Error::is_connect`] when connecting
    /// fails; [`Error::is_timeout`] when a deadline passes; [`Error::is_request`] for other
    /// failures; [`Error::is_closed`] when the client is closed and its manager is gone.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use http_body_util::BodyExt;
    ///
    /// let req = http::Request::post("http://127.0.0.1:8080/items")
    ///     .header("content-type", "application/json")
    ///     .body(r#"{"name":"widget"}"#)?;
    /// let resp = rtlocal::client().await?.request(req).await?;
    /// let body = resp.into_body().collect().await?.to_bytes();
    /// # let _ = body; Ok(()) }
    /// ```
    pub async fn request<B: Into<Body>>(
        &self,
        req: Request<B>,
    ) -> Result<Response<ResponseBody>, Error> {
        // Before anything else: a request never goes anywhere its URI does not say.
        Target::of(req.uri())?;
        let handle = Handle::try_current().map_err(|_| Error::no_runtime())?;
        let req = req.map(Into::into);
        if handle.id() == self.inner.runtime_id() {
            if let Some(guard) = self.inner.track() {
                return dispatch(&self.inner, req, guard).await;
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
            let Some(manager) = self.inner.manager() else {
                return Err(Error::with_detail(
                    Kind::Closed,
                    "its manager is gone, so the request cannot be re-routed: get a client \
                     from a live manager",
                ));
            };
            let fresh = manager.client().await?;
            if let Some(guard) = fresh.track() {
                tracing::trace!(from = %self.id(), to = %fresh.id(), "request re-routed");
                return dispatch(&fresh, req, guard).await;
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
    /// [`Error::is_invalid_uri`] (naming the URI) when it does not parse or is refused
    /// (see [`request`](Client::request)); otherwise as [`request`](Client::request).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rtlocal::Error> {
    /// let err = rtlocal::client().await?.get("not a uri").await.unwrap_err();
    /// assert!(err.is_invalid_uri());
    /// assert!(err.to_string().contains("not a uri"));
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, uri: &str) -> Result<Response<ResponseBody>, Error> {
        let parsed: Uri = uri.parse().map_err(|e| uri::unparsable(uri, e))?;
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = parsed;
        self.request(req).await
    }

    /// Sockets currently open (for tests and `Debug`).
    pub(crate) fn open_sockets(&self) -> usize {
        self.inner.tracker.open_sockets()
    }
}

/// Sends a request counted by `guard`, under the request timeout. The request is handed
/// to hyper-util before the first await, so the future holds little more than
/// hyper-util's boxed future, the guard and the deadline.
///
/// Safe to poll from anywhere once started: hyper-util's future is polled inside the
/// client's runtime ([`InRuntime`]) and the deadline needs no runtime ([`Deadline`]).
async fn dispatch_untimed(
    client: &HyperParts,
    req: Request<Body>,
    guard: InFlight,
) -> Result<Response<ResponseBody>, Error> {
    // Before hyper-util can pick a pooled connection (see connect/idle.rs).
    let busy = client.tracker.busy();
    // A timeout too large to add to `now` means no deadline (build() clamps it anyway).
    let timeout = client
        .request_timeout
        .and_then(|t| Some((t, Instant::now().checked_add(t)?)));
    let sent = InRuntime::new(&client.handle, client.send(req));
    let Some((timeout, at)) = timeout else {
        return finish(sent, guard, busy, None).await;
    };
    // The body carries the deadline on; until the headers arrive it is polled here.
    let mut deadline = Deadline::new(at);
    let body_deadline = Deadline::new(at);
    let finished = finish(sent, guard, busy, Some((timeout, body_deadline)));
    match with_deadline(finished, &mut deadline).await {
        Ok(result) => result,
        Err(()) => {
            Counters::inc(&client.counters.requests_failed);
            Err(Error::timeout(format!(
                "request_timeout ({timeout:?}) passed before the response headers arrived; \
                 raise it with Builder::request_timeout if the server is this slow"
            )))
        }
    }
}

#[cfg(not(feature = "metrics"))]
use dispatch_untimed as dispatch;

/// [`dispatch_untimed`], timed (`http.client.request.duration`, see `http/metrics.rs`).
#[cfg(feature = "metrics")]
async fn dispatch(
    client: &HyperParts,
    req: Request<Body>,
    guard: InFlight,
) -> Result<Response<ResponseBody>, Error> {
    let timer = crate::http::metrics::RequestTimer::start(client, &req);
    let result = dispatch_untimed(client, req, guard).await;
    timer.end(&result);
    result
}

async fn finish(
    sent: InRuntime<ResponseFuture>,
    guard: InFlight,
    busy: Option<Busy>,
    timeout: Option<(Duration, Deadline)>,
) -> Result<Response<ResponseBody>, Error> {
    match sent.await {
        Ok(Ok(resp)) => Ok(resp.map(|b| ResponseBody::new(b, guard, busy, timeout))),
        Ok(Err(e)) => {
            let cut = guard.client_closed();
            guard.failed();
            if cut {
                return Err(Error::cut(e));
            }
            Err(Error::from_client(e))
        }
        Err(e) => {
            guard.failed();
            Err(e)
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.is_open() { "open" } else { "closed" };
        f.debug_struct("Client")
            .field("id", &self.id())
            .field("runtime", &self.runtime_id())
            .field("state", &state)
            .field("in_flight", &self.inner.in_flight())
            .field("open_sockets", &self.open_sockets())
            .finish()
    }
}
