//! The crate's one error type: opaque, cheap to clone, with `is_*` predicates.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// The error a closed client's connector and executor give hyper-util; found again in
/// the source chain to tell "the client was closed" from other failures.
#[derive(Debug)]
pub(crate) struct ClientClosed;

impl fmt::Display for ClientClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client is closed: it opens no new connections")
    }
}

impl StdError for ClientClosed {}

/// A managed client's handle used on a runtime other than its client's: the error of the
/// requests a [`ClientFactory::foreign_runtime_client`](crate::ClientFactory::foreign_runtime_client)
/// refuses, naming both runtimes. For factories outside this crate too.
///
/// ```
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let owner = rt.handle().id();
/// let e = rt.block_on(async { rtlocal::ForeignRuntime::here("channel", owner) });
/// assert!(e.to_string().starts_with(&format!("this managed channel belongs to runtime {owner}")));
/// ```
#[derive(Debug, Clone)]
pub struct ForeignRuntime {
    what: &'static str,
    owner: tokio::runtime::Id,
    used_on: Option<tokio::runtime::Id>,
}

impl ForeignRuntime {
    /// The handle of a managed `what` (`"reqwest client"`, `"channel"`) whose client
    /// belongs to runtime `owner` was used on the current runtime (if any).
    pub fn here(what: &'static str, owner: tokio::runtime::Id) -> Self {
        ForeignRuntime {
            what,
            owner,
            used_on: tokio::runtime::Handle::try_current().ok().map(|h| h.id()),
        }
    }
}

impl fmt::Display for ForeignRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.what;
        write!(
            f,
            "this managed {what} belongs to runtime {}, and was used on ",
            self.owner
        )?;
        match self.used_on {
            Some(id) => write!(f, "runtime {id}")?,
            None => f.write_str("another runtime")?,
        }
        write!(
            f,
            ": its connections are tasks of its own runtime, so nothing was sent; get this \
             runtime's {what} with `manager.client().await`"
        )
    }
}

impl StdError for ForeignRuntime {}

/// An error from `rtlocal`.
///
/// Opaque on purpose: ask it what happened with the `is_*` predicates, and walk
/// [`source()`](StdError::source) for the underlying hyper, hyper-util or I/O error.
///
/// `Display` (`{}`) is this error's own message only: a lowercase sentence that says
/// what to do about it, never the cause's text, which is reached through `source()`.
/// So anyhow's `{:?}` and `{:#}`, and tracing's error reporters, print each link of
/// the chain once. The alternate form `{:#}` prints the whole chain on one line,
/// joined by ": " (as anyhow's `{:#}` does), for code that prints errors with `{}`.
///
/// Cloning is cheap (one `Arc`), so one failure can be handed to every caller that
/// was waiting on the same client build.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Nothing listens on port 1 of the loopback address.
/// let err = rtlocal::client().await.unwrap().get("http://127.0.0.1:1/").await.unwrap_err();
/// assert!(err.is_connect());
/// assert!(std::error::Error::source(&err).is_some()); // the underlying hyper-util error
/// println!("{err}"); // could not connect to the server (...)
/// println!("{err:#}"); // ...: client error (Connect): ...: Connection refused (os error 111)
/// assert!(format!("{err:#}").contains("127.0.0.1:1"));
/// assert!(!err.to_string().contains("127.0.0.1:1")); // the cause's text is not repeated
/// # }
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    detail: Option<String>,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NoRuntime,
    RuntimeGone,
    Closed,
    ShutDown,
    Connect,
    ConnectTimeout,
    /// `https` in a build without TLS: nothing can connect, so it is a connect error.
    NoTls,
    Timeout,
    Request,
    Body,
    InvalidUri,
    Config,
    Build,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                detail: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_detail(kind: Kind, detail: impl Into<String>) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                detail: Some(detail.into()),
                source: None,
            }),
        }
    }

    pub(crate) fn with_detail_and_source(
        kind: Kind,
        detail: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                detail: Some(detail.into()),
                source: Some(source.into()),
            }),
        }
    }

    /// An error of `kind` caused by `source`, reached through `source()` (`Display`
    /// shows only the kind's message; `{:#}` adds the chain).
    pub(crate) fn with_source(kind: Kind, source: impl Into<BoxError>) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                detail: None,
                source: Some(source.into()),
            }),
        }
    }

    pub(crate) fn no_runtime() -> Self {
        Error::new(Kind::NoRuntime)
    }

    pub(crate) fn runtime_gone() -> Self {
        Error::new(Kind::RuntimeGone)
    }

    pub(crate) fn timeout(detail: impl Into<String>) -> Self {
        Error::with_detail(Kind::Timeout, detail)
    }

    pub(crate) fn shut_down() -> Self {
        Error::new(Kind::ShutDown)
    }

    /// A request or body read that failed because its client was force-closed under it.
    pub(crate) fn cut(source: impl Into<BoxError>) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind: Kind::Closed,
                detail: Some(
                    "the request was cut because its client was force-closed (close deadline \
                     passed, or its runtime was torn down)"
                        .to_owned(),
                ),
                source: Some(source.into()),
            }),
        }
    }

    pub(crate) fn config(detail: impl Into<String>) -> Self {
        Error::with_detail(Kind::Config, detail)
    }

    /// Classifies an HTTP client error (`connect`: the connection could not be made):
    /// connect failures, timeouts found in the source chain, and everything else as a
    /// request error.
    #[cfg(not(rtlocal_loom))]
    pub(crate) fn from_client(connect: bool, err: impl StdError + Send + Sync + 'static) -> Self {
        if connect {
            let kind = if chain_has_timeout(&err) {
                Kind::ConnectTimeout
            } else {
                Kind::Connect
            };
            return Error::with_source(kind, err);
        }
        if chain_is_closed_client(&err) {
            return Error::with_detail_and_source(
                Kind::Closed,
                "its connections were shut down while the request was being sent; send the \
                 request again: it goes to a fresh client",
                err,
            );
        }
        Error::with_source(Kind::Request, err)
    }

    /// An error from a [`ClientFactory`](crate::ClientFactory) that could not build a
    /// client: wraps `source`, which [`source()`](StdError::source) returns.
    ///
    /// ```
    /// let io = std::io::Error::other("no credentials configured");
    /// let e = rtlocal::Error::build(io);
    /// assert!(e.is_build());
    /// assert_eq!(e.to_string(), "the client factory could not build a client");
    /// assert_eq!(
    ///     format!("{e:#}"),
    ///     "the client factory could not build a client: no credentials configured"
    /// );
    /// ```
    pub fn build(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Error::with_source(Kind::Build, source)
    }

    /// A URI refused before anything was sent, for connectors and factories outside this
    /// crate: `detail` says what was wrong (mask credentials with
    /// [`redact`](crate::redact) first). [`is_invalid_uri`](Error::is_invalid_uri) is true.
    ///
    /// ```
    /// let e = rtlocal::Error::invalid_uri("\"grpc://h\" has no http or https scheme");
    /// assert!(e.is_invalid_uri());
    /// ```
    pub fn invalid_uri(detail: impl Into<String>) -> Self {
        Error::with_detail(Kind::InvalidUri, detail)
    }

    /// `client()` was called outside a tokio runtime.
    pub fn is_no_runtime(&self) -> bool {
        self.inner.kind == Kind::NoRuntime
    }

    /// The runtime the call was made on is shutting down or already gone.
    pub fn is_runtime_gone(&self) -> bool {
        self.inner.kind == Kind::RuntimeGone
    }

    /// The request was cut by a forced close of its client, or the client was closed and
    /// the request could not be re-routed to a fresh one (its manager is gone).
    pub fn is_closed(&self) -> bool {
        self.inner.kind == Kind::Closed
    }

    /// The manager was shut down: it hands out no more clients.
    pub fn is_shut_down(&self) -> bool {
        self.inner.kind == Kind::ShutDown
    }

    /// Connecting to the server failed (refused, unreachable, DNS, ...), or could not be
    /// tried: an `https` URI in a build without the `rustls` feature.
    pub fn is_connect(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Connect | Kind::ConnectTimeout | Kind::NoTls
        )
    }

    /// A deadline passed: the request timeout (waiting for a connection, the response or
    /// its body), or the connect timeout (then [`is_connect`](Self::is_connect) too).
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::Timeout | Kind::ConnectTimeout)
    }

    /// The request failed after the connection was established.
    pub fn is_request(&self) -> bool {
        self.inner.kind == Kind::Request
    }

    /// Reading the response body failed.
    pub fn is_body(&self) -> bool {
        self.inner.kind == Kind::Body
    }

    /// A request's URI was refused before anything was sent: it does not parse, is
    /// relative, names no host, has a scheme other than `http`/`https`, a port outside
    /// 1..=65535, or credentials (`user:password@`). `Display` names the offending part.
    pub fn is_invalid_uri(&self) -> bool {
        self.inner.kind == Kind::InvalidUri
    }

    /// The manager's configuration was rejected by [`Builder::build`](crate::Builder::build).
    pub fn is_config(&self) -> bool {
        self.inner.kind == Kind::Config
    }

    /// A [`ClientFactory`](crate::ClientFactory) failed to build a client (see
    /// [`Error::build`]).
    pub fn is_build(&self) -> bool {
        self.inner.kind == Kind::Build
    }
}

#[cfg(not(rtlocal_loom))]
fn chain_has_timeout(err: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

#[cfg(not(rtlocal_loom))]
fn chain_is_closed_client(err: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<ClientClosed>().is_some() {
            return true;
        }
        cur = e.source();
    }
    false
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.inner.kind {
            Kind::NoRuntime => {
                "no tokio runtime is running on this thread: call client() from inside a \
                 runtime (#[tokio::main], #[tokio::test] or Runtime::block_on)"
            }
            Kind::RuntimeGone => {
                "the tokio runtime is shutting down or gone: use a runtime that is still running"
            }
            Kind::Closed => "the client was closed",
            Kind::ShutDown => {
                "the manager is shut down: it hands out no more clients (build a new manager \
                 if work must go on)"
            }
            Kind::Connect => {
                "could not connect to the server (check that it is running and that the URI's \
                 host and port are right)"
            }
            Kind::NoTls => "cannot connect over https: this build of rtlocal has no TLS",
            Kind::ConnectTimeout => {
                "could not connect to the server: connect_timeout passed (raise it with \
                 Builder::connect_timeout)"
            }
            Kind::Timeout => "a deadline passed before the operation finished",
            Kind::Request => "the request failed after connecting",
            Kind::Body => "reading the response body failed",
            Kind::InvalidUri => "the URI was refused, nothing was sent",
            Kind::Config => "invalid configuration",
            Kind::Build => "the client factory could not build a client",
        };
        f.write_str(what)?;
        if let Some(detail) = &self.inner.detail {
            write!(f, ": {detail}")?;
        }
        if f.alternate() {
            write_chain(f, self.source())?;
        }
        Ok(())
    }
}

/// Writes `": "` and the message of each link from `source` on, outermost first, as
/// anyhow's `{:#}` does (each link's own `Display`, not its alternate form, so a link
/// that prints its own chain in `{:#}` is not printed twice).
fn write_chain(
    f: &mut fmt::Formatter<'_>,
    source: Option<&(dyn StdError + 'static)>,
) -> fmt::Result {
    let mut cur = source;
    // Bounded: a cyclic or absurdly deep chain must not make Display loop.
    for _ in 0..32 {
        let Some(e) = cur else { break };
        write!(f, ": {e}")?;
        cur = e.source();
    }
    Ok(())
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("rtlocal::Error");
        d.field("kind", &self.inner.kind);
        if let Some(detail) = &self.inner.detail {
            d.field("detail", detail);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_and_says_what_to_do() {
        let e = Error::no_runtime();
        let s = e.to_string();
        assert!(s.starts_with("no tokio runtime"), "{s}");
        assert!(s.contains("#[tokio::main]"), "{s}");
        assert!(e.is_no_runtime() && !e.is_timeout());
    }

    #[test]
    fn display_is_its_own_message_and_alternate_adds_the_chain() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error reading a body from connection")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let e = Error::with_source(Kind::Body, Outer(io));
        assert_eq!(e.to_string(), "reading the response body failed");
        assert_eq!(
            format!("{e:#}"),
            "reading the response body failed: error reading a body from connection: \
             connection reset"
        );
        let b = Error::build(std::io::Error::other("no credentials"));
        assert_eq!(b.to_string(), "the client factory could not build a client");
        assert_eq!(
            format!("{b:#}"),
            "the client factory could not build a client: no credentials"
        );
        let d = Error::config("close_timeout must be greater than zero");
        assert_eq!(format!("{d:#}"), d.to_string());
    }

    #[test]
    fn config_detail_is_shown_and_source_chained() {
        let e = Error::config("close_timeout must be greater than zero (got 0ns)");
        assert!(e.to_string().contains("close_timeout"));
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        let e = Error::with_source(Kind::Body, io);
        assert!(e.is_body());
        assert!(e.source().is_some());
        assert!(chain_has_timeout(e.source().unwrap()));
    }
}
