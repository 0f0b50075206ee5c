//! One request in progress on a client's pool: [`Exchange`] (what a request holds
//! until its response body ends) and [`Dispatch`] (the future from hand-off to the
//! response headers), with the request's `http.request` span.
//!
//! The path is shaped for size: every request future is moved by its caller, and past
//! 256 bytes each move takes memcpy's slow loop. So the request is handed to the pool
//! on the first poll and never carried through nested `async fn` frames, the runtime
//! handle is borrowed from the client the request's guard already holds, and the
//! deadline is armed only when the response is not there at the first poll, and then
//! carried on into the response body rather than armed twice.
//!
//! Everything a request observes (method, target, client, runtime at the start; status
//! or error at the end) goes through [`Dispatch::start`] and `settle`, where the span and
//! (feature `metrics`) the request timer record it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tracing::Span;

use crate::error::{Error, Kind};
use crate::http::body::request::Body;
use crate::http::body::response::ResponseBody;
use crate::http::connect::Busy;
use crate::http::enter::poll_in;
use crate::http::factory::{HyperParts, InFlight};
use crate::http::pool::{Pooled, SendFuture};
use crate::http::uri::Target;
use crate::manager::Counters;
use crate::manager::timer::{self, Deadline};
use crate::redact;

/// A request counted in flight (graceful drain) and busy (idle reaper), until dropped.
pub(crate) struct Exchange {
    /// Released before `guard` (field order): the reaper's count ends first.
    busy: Option<Busy>,
    guard: InFlight,
    /// The connection serving the response (feature `metrics`): marked idle when the
    /// exchange ends with its body.
    #[cfg(feature = "metrics")]
    conn: Option<crate::http::connect::socket::ConnState>,
    /// The HTTP/1 connection the response arrives on: back to the pool once the body
    /// has been read to its end ([`Exchange::body_read`]), closed otherwise.
    pooled: Option<Pooled>,
}

impl Exchange {
    /// The response body was read to its end: its connection may serve another request.
    pub(crate) fn body_read(&mut self) {
        if let Some(pooled) = self.pooled.take() {
            pooled.reuse();
        }
    }

    /// Counts a request on `guard`'s client: taken before the pool can pick a pooled
    /// connection (see `connect/idle.rs`).
    #[inline]
    pub(crate) fn new(guard: InFlight) -> Self {
        Exchange {
            busy: guard.client().tracker.busy(),
            guard,
            #[cfg(feature = "metrics")]
            conn: None,
            pooled: None,
        }
    }

    #[inline]
    pub(crate) fn parts(&self) -> &HyperParts {
        self.guard.client()
    }

    /// Counts the request as failed (it still ends when dropped).
    pub(crate) fn failed(&self) {
        Counters::inc(&self.parts().counters.requests_failed);
    }

    /// Whether the client was closed under the request (a forced close cut it).
    pub(crate) fn client_closed(&self) -> bool {
        self.guard.client_closed()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        if let Some(conn) = self.conn.take() {
            conn.0.set_active(false);
        }
        if let Some(busy) = self.busy.take() {
            self.guard.client().tracker.release(busy);
        }
    }
}

/// A request handed to the pool, until its response headers arrive: polled inside the
/// client's runtime from anywhere, under the request timeout, inside its span.
pub(crate) struct Dispatch {
    sent: SendFuture,
    /// `None` once the future has completed.
    exchange: Option<Exchange>,
    /// Armed on the first `Pending`; handed on to the response body.
    deadline: Option<Deadline>,
    span: Span,
    /// `http.client.request.duration`: recorded at the headers or the error, or as
    /// cancelled when the request is dropped before either.
    #[cfg(feature = "metrics")]
    timer: Option<crate::http::metrics::RequestTimer>,
}

impl Dispatch {
    /// Hands `req` to the client `exchange` counts it on; `span` is its
    /// [`request_span`].
    pub(crate) fn start(exchange: Exchange, req: Request<Body>, span: Span) -> Self {
        let parts = exchange.parts();
        // A timeout too large to add to `now` means no deadline (build() clamps it anyway).
        let deadline = parts
            .request_timeout
            .and_then(timer::after)
            .map(Deadline::new);
        #[cfg(feature = "metrics")]
        let timer = Some(crate::http::metrics::RequestTimer::start(parts, &req));
        let sent = parts.send(req);
        Dispatch {
            sent,
            exchange: Some(exchange),
            deadline,
            span,
            #[cfg(feature = "metrics")]
            timer,
        }
    }
}

/// Where a request ends before its body: records the outcome on its span (and its
/// duration, with the `metrics` feature).
fn settle(
    span: &Span,
    #[cfg(feature = "metrics")] timer: &mut Option<crate::http::metrics::RequestTimer>,
    result: Result<Response<ResponseBody>, Error>,
) -> Poll<Result<Response<ResponseBody>, Error>> {
    #[cfg(feature = "metrics")]
    if let Some(timer) = timer.take() {
        timer.end(&result);
    }
    if !span.is_disabled() {
        match &result {
            Ok(resp) => {
                let status = resp.status();
                span.record("http.response.status_code", status.as_u16());
                // A client span's status is an error from 400 on (HTTP semconv), with
                // the status code as its `error.type`.
                if status.as_u16() >= 400 {
                    span.record("error.type", status.as_str());
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(e) => {
                span.record("error.type", error_type(e));
                span.record("otel.status_code", "ERROR");
                // The whole chain on one line: a span field has no `source()` to walk.
                span.record(
                    "otel.status_description",
                    tracing::field::display(format_args!("{e:#}")),
                );
            }
        }
    }
    Poll::Ready(result)
}

impl Future for Dispatch {
    type Output = Result<Response<ResponseBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        let Some(exchange) = this.exchange.as_ref() else {
            return Poll::Ready(Err(polled_after_completion()));
        };
        let result = match poll_in(&exchange.parts().handle, &mut this.sent, cx) {
            Poll::Ready(Ok(Ok((resp, pooled)))) => {
                #[cfg(feature = "metrics")]
                let mut resp = resp;
                let mut exchange = this.exchange.take();
                if let Some(exchange) = exchange.as_mut() {
                    #[cfg(feature = "metrics")]
                    {
                        // HTTP/1: the pooled connection's; HTTP/2: the shared one's.
                        let h2 = resp
                            .extensions_mut()
                            .remove::<crate::http::connect::socket::ConnState>();
                        exchange.conn = pooled.as_ref().and_then(Pooled::conn_state).or(h2);
                    }
                    exchange.pooled = pooled;
                }
                let deadline = this.deadline.take();
                let resp = resp.map(|b| ResponseBody::new(b, exchange, deadline));
                return settle(
                    &this.span,
                    #[cfg(feature = "metrics")]
                    &mut this.timer,
                    Ok(resp),
                );
            }
            Poll::Ready(Ok(Err(e))) => {
                if exchange.client_closed() {
                    Error::cut(e)
                } else {
                    Error::from_client(e.is_connect(), e)
                }
            }
            Poll::Ready(Err(e)) => e,
            Poll::Pending => {
                let Some(deadline) = this.deadline.as_mut() else {
                    return Poll::Pending;
                };
                if deadline.poll_elapsed(cx).is_pending() {
                    return Poll::Pending;
                }
                let timeout = exchange.parts().request_timeout.unwrap_or_default();
                Error::timeout(format!(
                    "request_timeout ({timeout:?}) passed before the response headers arrived; \
                     raise it with Builder::request_timeout if the server is this slow"
                ))
            }
        };
        exchange.failed();
        this.exchange = None;
        this.deadline = None;
        settle(
            &this.span,
            #[cfg(feature = "metrics")]
            &mut this.timer,
            Err(result),
        )
    }
}

/// The `http.request` span of a request to `target` on `guard`'s client: DEBUG, so free
/// unless a subscriber wants this crate's debug output (the macro checks the level and
/// the callsite's interest before it evaluates any field, `url.full` included).
///
/// Its fields follow OpenTelemetry's HTTP client conventions, in the form
/// `tracing-opentelemetry` maps: `otel.name` (the method), `otel.kind = "client"`,
/// `http.request.method`, `server.address`, `server.port`, `url.full` (credentials
/// masked, through [`redact`]), then `http.response.status_code`, or `error.type`; with
/// `otel.status_code = "ERROR"` and `otel.status_description` (the error's message) for a
/// failure or a 4xx/5xx status. `client` and `runtime` name who sent it.
#[inline]
pub(crate) fn request_span(req: &Request<Body>, target: &Target<'_>, guard: &InFlight) -> Span {
    tracing::debug_span!(
        "http.request",
        otel.name = req.method().as_str(),
        otel.kind = "client",
        http.request.method = req.method().as_str(),
        server.address = target.host,
        server.port = target.port,
        url.full = redact::uri(req.uri()),
        client = %guard.client_id(),
        runtime = %guard.runtime_id(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// A low-cardinality name for what went wrong: `error.type` on the span and the
/// request-duration metric.
pub(crate) fn error_type(e: &Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_closed() {
        "closed"
    } else if e.is_request() {
        "request"
    } else if e.is_body() {
        "body"
    } else if e.is_no_runtime() {
        "no_runtime"
    } else {
        "_OTHER"
    }
}

#[cold]
fn polled_after_completion() -> Error {
    Error::with_detail(
        Kind::Request,
        "the request future was polled after it completed",
    )
}
