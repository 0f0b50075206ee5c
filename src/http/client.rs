//! [`Client`]: a cheap handle on one HTTP client (one connection pool) bound to one runtime.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use tokio::runtime::{self, Handle};

use crate::error::{Error, Kind};
use crate::http::body::request::Body;
use crate::http::body::response::ResponseBody;
use crate::http::exchange::{Dispatch, Exchange, request_span};
use crate::http::factory::HyperFactory;
use crate::http::uri::{self, Target};
use crate::manager::{ClientId, Managed};

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
    /// # Tracing
    /// Each request that gets past the URI and runtime checks runs in one DEBUG span named
    /// `http.request`, from the hand-off to the pool until the response headers arrive
    /// or the request fails (the body is the caller's to read; its errors come back from
    /// the body). Fields, by OpenTelemetry's HTTP client conventions as
    /// `tracing-opentelemetry` reads them: `otel.name` (the method), `otel.kind`
    /// (`client`), `http.request.method`, `server.address`, `server.port`, `url.full`
    /// (credentials masked), `client` and `runtime` (the client that sends it, after any
    /// re-routing), then `http.response.status_code`, or `error.type` (`connect`,
    /// `timeout`, …) with `otel.status_code = "ERROR"` and `otel.status_description` (the
    /// error's message); a 4xx/5xx status sets `error.type` to the code and
    /// `otel.status_code = "ERROR"`. DEBUG, like the
    /// crate's lifecycle events: with no subscriber interested in it the span is never
    /// built (no allocation, no formatting).
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
    pub fn request<B: Into<Body>>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send + '_ {
        RequestFuture {
            client: self,
            state: State::Start(req.map(Into::into)),
        }
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

/// [`Client::request`]'s future. Holds the request until the first poll, because which
/// client sends it is decided there (the runtime polling it may not be the one it was
/// created on); from then on, the [`Dispatch`] of the client that sends it.
///
/// Hand-written rather than an `async fn`: nested `async fn` frames would each take a
/// copy of the 256-byte request, and every move of a bigger future costs a slower memcpy.
#[must_use = "futures do nothing unless polled"]
struct RequestFuture<'a> {
    client: &'a Client,
    state: State<'a>,
}

enum State<'a> {
    Start(Request<Body>),
    Sending(Dispatch),
    /// The cold path, boxed so it does not grow every request future.
    Rerouting(Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Error>> + Send + 'a>>),
    Done,
}

impl Future for RequestFuture<'_> {
    type Output = Result<Response<ResponseBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            return match &mut this.state {
                State::Sending(sending) => {
                    let out = Pin::new(sending).poll(cx);
                    if out.is_ready() {
                        this.state = State::Done;
                    }
                    out
                }
                State::Start(_) => {
                    let State::Start(req) = std::mem::replace(&mut this.state, State::Done) else {
                        unreachable!("matched just above")
                    };
                    this.state = this.client.start(req)?;
                    continue;
                }
                State::Rerouting(fut) => {
                    let out = fut.as_mut().poll(cx);
                    if out.is_ready() {
                        this.state = State::Done;
                    }
                    out
                }
                State::Done => Poll::Ready(Err(Error::with_detail(
                    Kind::Request,
                    "the request future was polled after it completed",
                ))),
            };
        }
    }
}

impl Client {
    /// The first poll: checks the URI and the runtime, and hands the request to this
    /// client, or re-routes it.
    #[inline]
    fn start(&self, req: Request<Body>) -> Result<State<'_>, Error> {
        // Before anything else: a request never goes anywhere its URI does not say.
        let target = Target::check(req.uri())?;
        let handle = Handle::try_current().map_err(|_| Error::no_runtime())?;
        if handle.id() == self.inner.runtime_id() {
            if let Some(guard) = self.inner.track() {
                let span = request_span(&req, &target, &guard);
                return Ok(State::Sending(Dispatch::start(
                    Exchange::new(guard),
                    req,
                    span,
                )));
            }
        }
        Ok(State::Rerouting(Box::pin(self.reroute(req))))
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
                let span = request_span(&req, &Target::check(req.uri())?, &guard);
                return Dispatch::start(Exchange::new(guard), req, span).await;
            }
        }
        Err(Error::with_detail(
            Kind::Closed,
            "every client handed out was closed before the request could start",
        ))
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
