//! [`TrackingConnector`]: hyper-util's HTTP connector with the URI checked again, the
//! connection limits, every socket registered in the tracker, proxies (see `proxy.rs`),
//! and TLS for `https`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::error::BoxError;
use crate::http::connect::dns::Resolver;
use crate::http::connect::limits::{Limits, Permits};
use crate::http::connect::proxy::{self, ProxyRules};
use crate::http::connect::socket::TrackedTcp;
use crate::http::connect::stream::Conn;
#[cfg(feature = "rustls")]
use crate::http::connect::tls;
use crate::http::connect::tracker::ConnTracker;
use crate::http::uri::Target;
use crate::manager::timer::Deadline;

/// hyper-util's HTTP connector (over our resolver), with connection limits, every socket
/// registered in the tracker, proxies, and TLS for `https` URIs.
#[derive(Clone)]
pub(crate) struct TrackingConnector {
    pub(crate) http: HttpConnector<Resolver>,
    pub(crate) tracker: Arc<ConnTracker>,
    pub(crate) limits: Arc<Limits>,
    /// `None`: every connection goes direct.
    pub(crate) proxies: Option<Arc<ProxyRules>>,
    #[cfg(feature = "rustls")]
    pub(crate) tls: Option<tokio_rustls::TlsConnector>,
    /// The deadlines every connection attempt carries (see [`AttemptTimeouts`]).
    pub(crate) timeouts: AttemptTimeouts,
}

/// The deadlines of one connection attempt, each holding whether or not the request
/// that started the attempt still waits for it (the pool moves a connect into the
/// background when a pooled connection serves its request first):
///
/// * DNS and the TCP connect, to the origin or a proxy: `connect_timeout`;
/// * a proxy's `CONNECT`: `request_timeout` from the attempt's start (the proxy connects
///   on to the origin inside it);
/// * the TLS handshake: `connect_timeout` from its start, and never past the
///   `CONNECT`'s bound.
///
/// When the `CONNECT` or the handshake runs out of time, its socket is shut down on the
/// wire at once — by a timer job, so even while the runtime idles — and the attempt
/// fails with a connect timeout. Without a `request_timeout`, the `CONNECT` is bounded by
/// `connect_timeout` instead; with neither, nothing is.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AttemptTimeouts {
    pub(crate) connect: Option<Duration>,
    pub(crate) request: Option<Duration>,
}

impl AttemptTimeouts {
    fn after(start: Instant, d: Option<Duration>) -> Option<Instant> {
        d.and_then(|d| start.checked_add(d))
    }

    /// DNS and TCP, from `start`.
    fn connect(&self, start: Instant) -> Option<Instant> {
        Self::after(start, self.connect)
    }

    /// The whole attempt through a proxy, from `start`.
    fn tunnel(&self, start: Instant) -> Option<Instant> {
        Self::after(start, self.request.or(self.connect))
    }

    /// A TLS handshake starting now, within the attempt's bound `outer`.
    #[cfg(feature = "rustls")]
    fn handshake(&self, outer: Option<Instant>) -> Option<Instant> {
        earliest(Self::after(Instant::now(), self.connect), outer)
    }
}

#[cfg(feature = "rustls")]
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `fut`, failed with a connect timeout naming `what` once `deadline` passes.
async fn bounded<T>(
    deadline: Option<Instant>,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    let Some(at) = deadline else {
        return fut.await;
    };
    let mut fut = std::pin::pin!(fut);
    let mut deadline = Deadline::new(at);
    let timed_out = std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        deadline.poll_elapsed(cx).map(|()| None)
    })
    .await;
    match timed_out {
        Some(out) => out,
        None => Err(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{} did not finish before its deadline", what()),
        ))),
    }
}

/// A connection attempt of the pool's (see [`TrackingConnector::connect`]).
pub(crate) type Opening = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

impl TrackingConnector {
    /// Opens a connection to `uri`'s origin holding `permits` (the pool waits for them
    /// itself, racing an idle connection coming back).
    pub(crate) fn connect(&self, uri: Uri, permits: Permits) -> Opening {
        // Checked again here, whoever built the request: this connector never guesses a
        // scheme or a port.
        let target = match Target::check(&uri) {
            Ok(t) => t,
            Err(e) => return Box::pin(std::future::ready(Err(BoxError::from(e)))),
        };
        let (https, host_port) = (target.https, target.host_port());
        #[cfg(feature = "rustls")]
        let server_name = target.bare_host().to_owned();
        // A name TLS cannot verify against is refused before anything is dialled (a
        // proxy would otherwise be asked to CONNECT to it first).
        #[cfg(feature = "rustls")]
        if https {
            if let Err(e) = rustls::pki_types::ServerName::try_from(server_name.as_str()) {
                return Box::pin(std::future::ready(Err(BoxError::from(format!(
                    "invalid TLS server name {server_name:?}: {e}"
                )))));
            }
        }
        let dst = match connect_uri(&target) {
            Ok(dst) => dst,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        // The proxy (if any) is chosen for the checked destination.
        let via = self.proxies.as_ref().and_then(|p| p.route(&dst));
        let started = Instant::now();
        let timeouts = self.timeouts;
        let mut open = OpenTcp {
            http: self.http.clone(),
            tracker: Arc::clone(&self.tracker),
            permits: None,
            peer: host_port.clone(),
            arm: None,
            server: (target.host.to_owned(), target.port),
        };
        #[cfg(feature = "rustls")]
        let tls = self.tls.clone();
        Box::pin(async move {
            #[cfg(not(feature = "rustls"))]
            if https {
                return Err(BoxError::from(
                    "https URIs need TLS: build rtlocal with the `rustls` feature",
                ));
            }
            let via = via.transpose()?;
            open.permits = Some(permits);
            // Waiting for a permit is not part of the attempt: its deadlines start here.
            let started = started.max(Instant::now());
            let connect_by = timeouts.connect(started);
            let mut outer = connect_by;
            let tcp = match via {
                None => {
                    bounded(
                        connect_by,
                        || format!("connecting to {host_port}"),
                        open.open(dst),
                    )
                    .await?
                }
                // https: CONNECT, then TLS to the origin below, never cleartext.
                Some(via) if https => {
                    outer = timeouts.tunnel(started);
                    // The socket to the proxy is shut down at `outer` by the timer, should
                    // nothing poll the CONNECT by then.
                    open.arm = outer;
                    let tcp = bounded(
                        outer,
                        || format!("CONNECT through the proxy for {host_port}"),
                        proxy::tunnel(via, open, dst, &host_port),
                    )
                    .await?;
                    tcp.disarm_attempt();
                    tcp
                }
                Some(via) => {
                    let tcp = bounded(
                        connect_by,
                        || format!("connecting to the proxy for {host_port}"),
                        proxy::forward(&via, open, &host_port),
                    )
                    .await?;
                    return Ok(Conn::Proxied(tcp));
                }
            };
            #[cfg(feature = "rustls")]
            if https {
                let by = timeouts.handshake(outer);
                tcp.arm_attempt(by);
                let conn = bounded(
                    by,
                    || format!("the TLS handshake with {host_port}"),
                    tls::handshake(tls, server_name, tcp),
                )
                .await?;
                conn.disarm_attempt();
                return Ok(conn);
            }
            #[cfg(not(feature = "rustls"))]
            let _ = outer;
            Ok(Conn::Plain(tcp))
        })
    }
}

/// What the connector connects to (and chooses a proxy for): `scheme://host:port/`.
/// hyper-util's connector falls back to a default port when it cannot read one, so the
/// checked port is always explicit.
pub(crate) fn connect_uri(target: &Target<'_>) -> Result<Uri, BoxError> {
    let host_port = target.host_port();
    Uri::builder()
        .scheme(if target.https { "https" } else { "http" })
        .authority(host_port.as_str())
        .path_and_query("/")
        .build()
        .map_err(|e| BoxError::from(format!("invalid host {host_port:?}: {e}")))
}

/// Opens one tracked TCP connection holding the connect's permits: to the origin, or
/// to a proxy (then it is the inner connector of hyper-util's CONNECT [`Tunnel`]).
///
/// [`Tunnel`]: hyper_util::client::legacy::connect::proxy::Tunnel
pub(crate) struct OpenTcp {
    http: HttpConnector<Resolver>,
    tracker: Arc<ConnTracker>,
    /// Taken by the one connection opened.
    permits: Option<Permits>,
    /// Where the connection goes, for errors.
    pub(super) peer: String,
    /// The deadline of what runs on the socket once it is open (a `CONNECT`): see
    /// [`ConnTracker::arm_attempt`].
    pub(super) arm: Option<Instant>,
    /// The origin (`host`, `port`), also when the socket goes to a proxy: the
    /// connection's `server.address` and `server.port`.
    pub(super) server: (String, u16),
}

impl OpenTcp {
    /// Connects to `addr` (`scheme://host:port`, the port explicit) and registers the
    /// socket in the tracker.
    pub(super) async fn open(mut self, addr: Uri) -> Result<TrackedTcp, BoxError> {
        let permits = self
            .permits
            .take()
            .ok_or_else(|| BoxError::from("one connect opened two connections"))?;
        let io = tower_service::Service::call(&mut self.http, addr)
            .await
            .map_err(|e| ConnectTo {
                peer: self.peer,
                source: e.into(),
            })?;
        let (host, port) = (self.server.0.as_str(), self.server.1);
        let tcp = self
            .tracker
            .register(io.into_inner(), permits, (host, port))?;
        tcp.arm_attempt(self.arm);
        Ok(tcp)
    }
}

impl tower_service::Service<Uri> for OpenTcp {
    type Response = TokioIo<TrackedTcp>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<TrackedTcp>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // hyper-util's HttpConnector is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: Uri) -> Self::Future {
        let open = OpenTcp {
            http: self.http.clone(),
            tracker: Arc::clone(&self.tracker),
            permits: self.permits.take(),
            peer: self.peer.clone(),
            arm: self.arm,
            server: self.server.clone(),
        };
        Box::pin(async move { open.open(addr).await.map(TokioIo::new) })
    }
}

/// A failed TCP connect, naming where it went; the cause stays in the chain (a
/// connect timeout is recognised there).
#[derive(Debug)]
struct ConnectTo {
    /// `host:port`, or the proxy and the origin it was for.
    peer: String,
    source: BoxError,
}

impl fmt::Display for ConnectTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connecting to {} failed", self.peer)
    }
}

impl std::error::Error for ConnectTo {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use std::io;

    use super::*;
    use crate::manager::Counters;

    fn connector() -> TrackingConnector {
        let counters = Arc::new(Counters::default());
        let mut http = HttpConnector::new_with_resolver(Resolver::new(None, Arc::clone(&counters)));
        http.enforce_http(false);
        TrackingConnector {
            http,
            tracker: ConnTracker::new(counters, None),
            limits: Limits::new(None, None),
            proxies: None,
            #[cfg(feature = "rustls")]
            tls: None,
            timeouts: AttemptTimeouts::default(),
        }
    }

    /// Whatever URI hyper-util hands the connector, it connects only where the URI says:
    /// an unknown scheme or a bad port is an error, never a guess.
    #[tokio::test]
    async fn connector_refuses_what_it_cannot_honour() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let wrapped = u32::from(port) + 65536;
        let conn = connector();
        for uri in [
            format!("ftp://127.0.0.1:{port}"),
            format!("htps://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{wrapped}"),
            "http://127.0.0.1:0".to_owned(),
            format!("http://u:p@127.0.0.1:{port}"),
        ] {
            let uri: Uri = uri.parse().expect("parses");
            let permits = conn.limits.acquire("127.0.0.1").await;
            let err = conn
                .connect(uri.clone(), permits)
                .await
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some(), "{uri} connected");
        }
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "a refused URI reached the listener: {accepted:?}"
        );
    }
}
