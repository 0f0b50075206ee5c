//! [`Body`]: what a request sends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use crate::error::BoxError;

/// A request body: empty, a single buffer, or any streaming [`http_body::Body`].
///
/// `From` conversions exist for `&'static str`, `String`, `Vec<u8>`, [`Bytes`] and `()`,
/// so `Request<&str>` and friends can be passed to [`Client::request`](crate::Client::request)
/// directly.
///
/// ```
/// use rtlocal::Body;
///
/// let req = http::Request::post("http://127.0.0.1:8080/echo").body(Body::from("hi"))?;
/// let streamed = Body::wrap(http_body_util::Full::new(bytes::Bytes::from_static(b"chunk")));
/// let empty = Body::empty();
/// # let _ = (req, streamed, empty);
/// # Ok::<(), http::Error>(())
/// ```
pub struct Body {
    kind: BodyKind,
}

// `Full` holds an empty `Bytes` once sent (or when empty): no `Option` around it, so the
// enum fits in `Bytes`' own niche and a `Request<Body>` stays at 256 bytes, which hyper
// moves through its dispatch channel several times per request (past 256 bytes each
// move takes memcpy's slower loop).
enum BodyKind {
    Full(Bytes),
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body {
            kind: BodyKind::Full(Bytes::new()),
        }
    }

    /// Wraps a streaming body. Its errors abort the request.
    pub fn wrap<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body {
            kind: BodyKind::Stream(body.map_err(Into::into).boxed_unsync()),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BodyKind::Full(b) => f.debug_struct("Body").field("len", &b.len()).finish(),
            BodyKind::Stream(_) => f.debug_struct("Body").field("stream", &true).finish(),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body {
            kind: BodyKind::Full(b),
        }
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<()> for Body {
    fn from(_: ()) -> Self {
        Body::empty()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full(b) if b.is_empty() => Poll::Ready(None),
            BodyKind::Full(b) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(b))))),
            BodyKind::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(b) => b.is_empty(),
            BodyKind::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(b) => SizeHint::with_exact(b.len() as u64),
            BodyKind::Stream(s) => s.size_hint(),
        }
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[test]
    fn conversions_report_exact_sizes() {
        assert_eq!(Body::from("abc").size_hint().exact(), Some(3));
        assert_eq!(
            Body::from(String::from("hello")).size_hint().exact(),
            Some(5)
        );
        assert_eq!(Body::from(vec![1u8; 7]).size_hint().exact(), Some(7));
        assert!(Body::empty().is_end_stream());
        assert!(Body::from(Bytes::new()).is_end_stream());
        assert!(!Body::from("x").is_end_stream());
    }

    #[test]
    fn a_request_with_a_body_fits_memcpys_fast_path() {
        assert_eq!(std::mem::size_of::<Body>(), std::mem::size_of::<Bytes>());
        assert!(std::mem::size_of::<http::Request<Body>>() <= 256);
    }
}
