//! [`Client`] as a [`tower_service::Service`], so tower's and tower-http's layers (retry,
//! redirects, decompression, tracing, timeouts, ...) stack on a managed client.
//!
//! A call goes through [`Client::request`], so it keeps every managed guarantee: it is
//! re-routed when made on another runtime or after the client was closed, it counts in
//! flight until its response body ends, and the request timeout holds.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};

use crate::error::{BoxError, Error};
use crate::http::body::request::Body;
use crate::http::body::response::ResponseBody;
use crate::http::client::Client;
use crate::http::factory::BelowLayers;

type Sending = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Error>> + Send>>;

/// The future of a [`Client`] called as a [`tower_service::Service`]: the response, as
/// [`Client::request`] returns it.
///
/// `'static` and `Send` (it owns a clone of the client), so it can be spawned, buffered
/// (`tower::buffer`) or retried.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: Sending,
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A managed [`Client`] is a tower [`Service`](tower_service::Service): stack tower's and
/// tower-http's layers on it.
///
/// Each call goes through [`Client::request`], so nothing of the managed behaviour is
/// lost: a call made on another runtime, or after the client was closed, is re-routed to
/// the manager's client for the current runtime; the request counts in flight until its
/// response body ends or is dropped (a graceful close waits for it); the request timeout
/// holds. The request body may be any [`http_body::Body`] of [`Bytes`] (tower-http's
/// layers keep the caller's body type); a [`Body`] is passed on as it is, other bodies
/// are boxed once.
///
/// # Default headers
///
/// Every default header ([`Builder::default_headers`](crate::Builder::default_headers))
/// is added to a call that does not set it, **except credentials** (`Authorization`,
/// `Proxy-Authorization`, `Cookie`, values marked sensitive): a layer above may have
/// made this request — a redirect hop to another origin, whose policy stripped them —
/// and the client cannot tell. Put
/// [`Client::default_credentials_layer`] above your redirect layer to send them with
/// your own requests.
///
/// # Readiness
///
/// `poll_ready` is always ready, as hyper-util's own client is. There is nothing to
/// reserve ahead of a call: which client serves it is decided when the call starts (the
/// runtime current then), a closed client re-routes rather than refuses, and connection
/// limits (`max_connections*`) are waited for inside the call, bounded by the request
/// timeout. Use `tower::limit` or `tower::load_shed` on top to bound concurrency.
///
/// # Examples
///
/// Redirects followed, responses decompressed, requests traced, and a `GET` retried once
/// when its connection fails:
///
/// ```no_run
/// use http_body_util::{BodyExt, Empty};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_http::{
///     decompression::DecompressionLayer, follow_redirect::FollowRedirectLayer,
///     trace::TraceLayer,
/// };
///
/// /// Retries an idempotent request once after an error.
/// #[derive(Clone)]
/// struct RetryOnce(bool);
///
/// impl<B: Clone, R> tower::retry::Policy<http::Request<B>, R, rtlocal::Error> for RetryOnce {
///     type Future = std::future::Ready<()>;
///
///     fn retry(
///         &mut self,
///         req: &mut http::Request<B>,
///         result: &mut Result<R, rtlocal::Error>,
///     ) -> Option<Self::Future> {
///         let again = result.is_err() && req.method().is_idempotent() && !self.0;
///         self.0 |= again;
///         again.then(|| std::future::ready(()))
///     }
///
///     fn clone_request(&mut self, req: &http::Request<B>) -> Option<http::Request<B>> {
///         Some(req.clone())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let client = rtlocal::client().await?;
/// let http = ServiceBuilder::new()
///     .layer(TraceLayer::new_for_http())
///     // Default credentials above the redirect layer, so its policy can strip them.
///     .layer(client.default_credentials_layer())
///     .layer(FollowRedirectLayer::new())
///     .retry(RetryOnce(false))
///     .layer(DecompressionLayer::new())
///     .service(client);
///
/// let req = http::Request::get("http://127.0.0.1:8080/").body(Empty::<bytes::Bytes>::new())?;
/// let resp = http.oneshot(req).await?;
/// let body = resp.into_body().collect().await?.to_bytes();
/// # let _ = body; Ok(()) }
/// ```
impl<B> tower_service::Service<Request<B>> for Client
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Error;
    type Future = ResponseFuture;

    /// Always ready: see "Readiness" above.
    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        call(self, req)
    }
}

/// As the impl for [`Client`], through a shared reference (the call clones the handle).
impl<B> tower_service::Service<Request<B>> for &Client
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Error;
    type Future = ResponseFuture;

    /// Always ready, as for [`Client`].
    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        call(self, req)
    }
}

fn call<B>(client: &Client, req: Request<B>) -> ResponseFuture
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // The future must be 'static (layers spawn, buffer and retry it): it owns a clone of
    // the handle, one `Arc`.
    let client = client.clone();
    let mut req = req.map(into_body);
    // Layers above may have made this request (a redirect hop): default credentials are
    // for `DefaultCredentialsLayer` to add above them, not for the client to add here.
    req.extensions_mut().insert(BelowLayers);
    ResponseFuture {
        inner: Box::pin(async move { client.request(req).await }),
    }
}

/// `body` as a [`Body`]: moved as it is when it already is one, boxed once otherwise.
fn into_body<B>(mut body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(body) = (&mut body as &mut dyn Any).downcast_mut::<Body>() {
        // What is left behind is an empty body: no allocation.
        return std::mem::take(body);
    }
    Body::wrap(body)
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use http_body::Body as _;
    use http_body_util::{BodyExt, Full};

    use super::*;

    /// A `Body` is passed on as it is (its exact size kept), not boxed again as a stream.
    #[test]
    fn a_body_is_not_boxed_again() {
        let body = into_body(Body::from("abc"));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(format!("{body:?}"), "Body { len: 3 }");
        let streamed = into_body(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(format!("{streamed:?}"), "Body { stream: true }");
    }

    #[tokio::test]
    async fn foreign_bodies_keep_their_bytes() {
        let body = into_body(Full::new(Bytes::from_static(b"chunk")));
        let bytes = body.collect().await.expect("full body").to_bytes();
        assert_eq!(bytes, "chunk");
        let body = into_body(Body::from("kept"));
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(bytes, "kept");
    }
}
