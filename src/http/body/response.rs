//! [`ResponseBody`]: what a response brings back, counted in flight until it ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::error::{Error, Kind};
use crate::http::exchange::Exchange;
use crate::manager::timer::Deadline;

/// A response body: the bytes the server sent, as an [`http_body::Body`].
///
/// The request counts as in flight until this body has been read to the end or dropped;
/// a graceful close waits for that (up to its deadline).
///
/// The body can be read anywhere: on another runtime, by another executor on a plain
/// thread, or after its client's runtime is gone (then it ends with an error). The bytes
/// come from the connection, which runs on the client's runtime: a `current_thread`
/// runtime that nobody drives delivers nothing, and the read then ends when the request
/// timeout passes (the timeout is kept by a timer thread, not by the runtime). Use
/// [`http_body_util::BodyExt::collect`] to read it whole.
///
/// ```
/// # async fn serve() -> std::net::SocketAddr {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     tokio::spawn(async move {
/// #         while let Ok((stream, _)) = listener.accept().await {
/// #             let svc = hyper::service::service_fn(|_req| async {
/// #                 let body = http_body_util::Full::new(bytes::Bytes::from_static(b"hello"));
/// #                 Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
/// #             });
/// #             let io = hyper_util::rt::TokioIo::new(stream);
/// #             tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
/// #         }
/// #     });
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let addr = serve().await;
/// use http_body_util::BodyExt;
///
/// let manager = rtlocal::HttpClientManager::new();
/// let resp = manager.client().await?.get(&format!("http://{addr}/")).await?;
/// assert_eq!(manager.stats().requests_in_flight, 1); // until the body is read or dropped
/// let body = resp.into_body().collect().await?.to_bytes();
/// assert_eq!(body, "hello");
/// assert_eq!(manager.stats().requests_in_flight, 0);
/// # Ok(()) }
/// ```
pub struct ResponseBody {
    incoming: hyper::body::Incoming,
    /// The request, counted in flight (and busy for the idle reaper) until the body ends.
    exchange: Option<Exchange>,
    /// The request timeout's deadline, carried on from the request.
    deadline: Option<Deadline>,
}

impl ResponseBody {
    pub(crate) fn new(
        incoming: hyper::body::Incoming,
        exchange: Option<Exchange>,
        deadline: Option<Deadline>,
    ) -> Self {
        let mut body = ResponseBody {
            incoming,
            exchange,
            deadline,
        };
        if http_body::Body::is_end_stream(&body.incoming) {
            body.finish_read();
        }
        body
    }

    /// The body was read to its end: its connection may serve another request.
    fn finish_read(&mut self) {
        if let Some(mut exchange) = self.finish() {
            exchange.body_read();
        }
    }

    /// The request is over: no longer in flight, its deadline and connection released.
    fn finish(&mut self) -> Option<Exchange> {
        self.deadline = None;
        self.exchange.take()
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("in_flight", &self.exchange.is_some())
            .finish()
    }
}

// Safe to poll from any executor or thread, inside or outside a runtime, and after the
// client's runtime is gone: the bytes arrive through a channel from the connection task,
// and the request timeout is a `Deadline`, which needs no runtime.
impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let res = match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(res) => res,
            Poll::Pending => {
                let Some(deadline) = this.deadline.as_mut() else {
                    return Poll::Pending;
                };
                if deadline.poll_elapsed(cx).is_pending() {
                    return Poll::Pending;
                }
                let mut timeout = std::time::Duration::ZERO;
                if let Some(exchange) = this.finish() {
                    timeout = exchange.parts().request_timeout.unwrap_or_default();
                    exchange.failed();
                }
                return Poll::Ready(Some(Err(Error::timeout(format!(
                    "request_timeout ({timeout:?}) passed while reading the response body; \
                     raise it with Builder::request_timeout if the server sends this slowly"
                )))));
            }
        };
        match res {
            Some(Ok(frame)) => {
                if http_body::Body::is_end_stream(&this.incoming) {
                    this.finish_read();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let cut = this.exchange.as_ref().is_some_and(Exchange::client_closed);
                if let Some(exchange) = this.finish() {
                    exchange.failed();
                }
                let err = if cut {
                    Error::cut(e)
                } else {
                    Error::with_source(Kind::Body, e)
                };
                Poll::Ready(Some(Err(err)))
            }
            None => {
                this.finish_read();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
