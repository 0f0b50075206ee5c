//! Connection tracking: the executor every connection task is spawned through, and a
//! connector that keeps a handle on every socket, enforces the connection limits and
//! (with the `rustls` feature) speaks TLS.
//!
//! Closing a client must shut its connections down *on the wire* even when the runtime
//! that owns their tasks is alive but idle (nobody polls an aborted task there). So every
//! socket's fd is kept in the tracker, and close calls `shutdown(2)` on it: the peer sees
//! the connection end at once. Soundness: a socket's entry is removed under the tracker
//! lock by the owning stream's `Drop`, which runs before the fd is closed; `shutdown` runs
//! under the same lock, so it only ever sees open fds. TLS wraps the tracked TCP stream,
//! so the same holds for HTTPS connections.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use crate::error::{BoxError, ClientClosed};
use crate::http::uri::Target;
use crate::idmap::IdMap;
use crate::stats::Counters;

#[cfg(unix)]
type RawSocket = std::os::fd::RawFd;
#[cfg(not(unix))]
type RawSocket = ();

/// Every connection task and socket of one client.
pub(crate) struct ConnTracker {
    state: parking_lot::Mutex<TrackerState>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct TrackerState {
    closed: bool,
    next_id: u64,
    /// `None` between registration and `spawn` returning.
    tasks: IdMap<u64, Option<AbortHandle>>,
    sockets: IdMap<u64, RawSocket>,
}

impl ConnTracker {
    pub(crate) fn new(counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(ConnTracker {
            state: parking_lot::Mutex::new(TrackerState::default()),
            counters,
        })
    }

    /// Spawns `fut` on `handle`, tracked until it finishes. A closed tracker drops it.
    fn spawn<F>(self: &Arc<Self>, handle: &Handle, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.next_id += 1;
            let id = st.next_id;
            st.tasks.insert(id, None);
            id
        };
        let guard = TaskGuard {
            tracker: Arc::clone(self),
            id,
        };
        let abort = handle
            .spawn(async move {
                let _guard = guard;
                fut.await;
            })
            .abort_handle();
        let mut st = self.state.lock();
        if st.closed {
            drop(st);
            abort.abort();
        } else if let Some(slot) = st.tasks.get_mut(&id) {
            *slot = Some(abort);
        }
    }

    fn register(
        self: &Arc<Self>,
        stream: TcpStream,
        permits: Permits,
    ) -> Result<TrackedTcp, BoxError> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Box::new(ClientClosed));
        }
        st.next_id += 1;
        let id = st.next_id;
        #[cfg(unix)]
        let raw = std::os::fd::AsRawFd::as_raw_fd(&stream);
        #[cfg(not(unix))]
        let raw = ();
        st.sockets.insert(id, raw);
        drop(st);
        Counters::inc(&self.counters.connections_opened);
        Counters::inc(&self.counters.connections_open);
        Ok(TrackedTcp {
            stream,
            id,
            tracker: Arc::clone(self),
            _permits: permits,
        })
    }

    /// Refuses new connections and tasks, shuts every socket down on the wire and
    /// aborts every connection task. Idempotent.
    pub(crate) fn close(&self) {
        let tasks = {
            let mut st = self.state.lock();
            st.closed = true;
            for (_, raw) in st.sockets.drain() {
                shutdown_socket(raw);
                Counters::dec(&self.counters.connections_open);
            }
            std::mem::take(&mut st.tasks)
        };
        // Outside the lock: a task's guard takes it when the task is dropped.
        for abort in tasks.into_values().flatten() {
            abort.abort();
        }
    }

    /// Refuses new connections and tasks, and nothing else: for a runtime teardown, where
    /// the runtime itself is dropping every connection task (closing their sockets).
    pub(crate) fn refuse_new(&self) {
        self.state.lock().closed = true;
    }

    pub(crate) fn open_sockets(&self) -> usize {
        self.state.lock().sockets.len()
    }
}

impl fmt::Debug for ConnTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("ConnTracker")
            .field("closed", &st.closed)
            .field("tasks", &st.tasks.len())
            .field("sockets", &st.sockets.len())
            .finish()
    }
}

#[cfg(unix)]
fn shutdown_socket(raw: RawSocket) {
    // SAFETY: `raw` was taken from the tracker's map under its lock, and the lock is still
    // held. A socket's entry is removed (under this lock) by `TrackedTcp::drop` before the
    // stream that owns the fd is dropped, so the fd is open and is that socket.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    // ENOTCONN when the peer is already gone: nothing left to shut down.
    let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
}

#[cfg(not(unix))]
fn shutdown_socket(_: RawSocket) {}

struct TaskGuard {
    tracker: Arc<ConnTracker>,
    id: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.tracker.state.lock().tasks.remove(&self.id);
    }
}

/// The executor given to hyper-util: spawns on the client's own runtime, tracked.
#[derive(Clone)]
pub(crate) struct TrackingExecutor {
    pub(crate) handle: Handle,
    pub(crate) tracker: Arc<ConnTracker>,
}

impl<F> hyper::rt::Executor<F> for TrackingExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.tracker.spawn(&self.handle, fut);
    }
}

/// The connection limits of one client: open sockets in all, and per host.
///
/// Permits are owned by the socket and returned when it closes, so every path (success,
/// error, timeout, a request future dropped mid-way) returns them: there is no path that
/// forgets to.
pub(crate) struct Limits {
    total: Option<Arc<Semaphore>>,
    per_host: Option<usize>,
    hosts: parking_lot::Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The permits one socket holds.
pub(crate) struct Permits {
    _host: Option<OwnedSemaphorePermit>,
    _total: Option<OwnedSemaphorePermit>,
}

impl Limits {
    pub(crate) fn new(total: Option<usize>, per_host: Option<usize>) -> Arc<Self> {
        Arc::new(Limits {
            total: total.map(|n| Arc::new(Semaphore::new(n))),
            per_host,
            hosts: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a permit for `host` and then one in all (always in that order, so two
    /// connects cannot each hold what the other waits for).
    async fn acquire(&self, host: &str) -> Permits {
        let host_sem = self.per_host.map(|n| {
            let mut hosts = self.hosts.lock();
            // Hosts nobody is connected to (only the map holds their semaphore, all
            // permits free) are forgotten, so a client that visits many hosts stays small.
            if hosts.len() >= 256 {
                hosts.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < n);
            }
            Arc::clone(
                hosts
                    .entry(host.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(n))),
            )
        });
        // The semaphores are never closed, so acquiring cannot fail.
        let host = match host_sem {
            Some(s) => s.acquire_owned().await.ok(),
            None => None,
        };
        let total = match &self.total {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        };
        Permits {
            _host: host,
            _total: total,
        }
    }
}

/// A TTL cache in front of the system resolver (`getaddrinfo`), shared by every client
/// of a manager. DNS answers do not belong to a runtime, so sharing them is safe.
///
/// Why not hickory-resolver: measured here, `hickory-resolver` 0.26 (tokio) adds 62
/// crates to this crate's 45-crate default dependency tree and ~60 s to a release build
/// on a 2-core machine, and it replaces the system's resolution (nsswitch, search
/// domains, mDNS) with its own. A fixed-TTL cache over `getaddrinfo` keeps the system's
/// answers and costs a map lookup.
#[derive(Clone)]
pub(crate) struct Resolver {
    gai: GaiResolver,
    cache: Option<Arc<DnsCache>>,
    counters: Arc<Counters>,
}

pub(crate) struct DnsCache {
    ttl: Duration,
    entries: parking_lot::Mutex<HashMap<String, (Vec<SocketAddr>, Instant)>>,
}

impl DnsCache {
    pub(crate) fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(DnsCache {
            ttl,
            entries: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    fn get(&self, host: &str) -> Option<Vec<SocketAddr>> {
        let mut entries = self.entries.lock();
        match entries.get(host) {
            Some((addrs, expires)) if *expires > Instant::now() => Some(addrs.clone()),
            Some(_) => {
                entries.remove(host);
                None
            }
            None => None,
        }
    }

    fn put(&self, host: &str, addrs: Vec<SocketAddr>) {
        const MAX_ENTRIES: usize = 4096;
        let mut entries = self.entries.lock();
        // Expired entries go when next looked up, and all of them when the table is
        // full; if it is still full, an arbitrary entry makes room (hard cap).
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        let now = Instant::now();
        // A TTL too large to add (e.g. `Duration::MAX`) means "never expires".
        let expires = now
            .checked_add(self.ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        entries.insert(host.to_owned(), (addrs, expires));
    }
}

impl Resolver {
    pub(crate) fn new(cache: Option<Arc<DnsCache>>, counters: Arc<Counters>) -> Self {
        Resolver {
            gai: GaiResolver::new(),
            cache,
            counters,
        }
    }
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, io::Error>> + Send>>;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        if let Some(addrs) = self.cache.as_ref().and_then(|c| c.get(name.as_str())) {
            return Box::pin(std::future::ready(Ok(addrs.into_iter())));
        }
        let mut gai = self.gai.clone();
        let (cache, counters) = (self.cache.clone(), Arc::clone(&self.counters));
        Box::pin(async move {
            Counters::inc(&counters.dns_lookups);
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tower_service::Service::call(&mut gai, name)
                .await?
                .collect();
            if let Some(cache) = cache {
                cache.put(&host, addrs.clone());
            }
            Ok(addrs.into_iter())
        })
    }
}

/// hyper-util's HTTP connector (over our resolver), with connection limits, every socket
/// registered in the tracker, and TLS for `https` URIs.
#[derive(Clone)]
pub(crate) struct TrackingConnector {
    pub(crate) http: HttpConnector<Resolver>,
    pub(crate) tracker: Arc<ConnTracker>,
    pub(crate) limits: Arc<Limits>,
    #[cfg(feature = "rustls")]
    pub(crate) tls: Option<tokio_rustls::TlsConnector>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<Conn>, BoxError>> + Send>>;

impl tower_service::Service<Uri> for TrackingConnector {
    type Response = TokioIo<Conn>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        // Checked again here, whoever built the request: this connector never guesses a
        // scheme or a port.
        let target = match Target::of(&uri) {
            Ok(t) => t,
            Err(e) => return Box::pin(std::future::ready(Err(BoxError::from(e)))),
        };
        let (https, host_port) = (target.https, target.host_port());
        #[cfg(feature = "rustls")]
        let server_name = target.bare_host().to_owned();
        // hyper-util's connector falls back to a default port when it cannot read one:
        // hand it the checked host and port explicitly.
        let dst = Uri::builder()
            .scheme(if https { "https" } else { "http" })
            .authority(host_port.as_str())
            .path_and_query("/")
            .build();
        let mut http = self.http.clone();
        let (tracker, limits) = (Arc::clone(&self.tracker), Arc::clone(&self.limits));
        #[cfg(feature = "rustls")]
        let tls = self.tls.clone();
        // hyper-util polls a new connect inside the request's task; if a pooled
        // connection serves the request first, it moves the connect into a background
        // task of its own. A connect still waiting for a permit then is not needed: it
        // would sit in the queue and later open a connection nobody asked for.
        let origin = tokio::task::try_id();
        Box::pin(async move {
            let dst =
                dst.map_err(|e| BoxError::from(format!("invalid host {host_port:?}: {e}")))?;
            #[cfg(not(feature = "rustls"))]
            if https {
                return Err(BoxError::from(
                    "https URIs need TLS: build rtlocal with the `rustls` feature",
                ));
            }
            let acquire = limits.acquire(&host_port);
            let mut acquire = std::pin::pin!(acquire);
            let permits = std::future::poll_fn(|cx| {
                if tokio::task::try_id() != origin {
                    return Poll::Ready(Err(BoxError::from(
                        "connect abandoned while waiting for a connection-limit permit: \
                         a pooled connection served the request",
                    )));
                }
                acquire.as_mut().poll(cx).map(Ok)
            })
            .await?;
            let io = tower_service::Service::call(&mut http, dst)
                .await
                .map_err(|e| ConnectTo {
                    host_port: host_port.clone(),
                    source: e.into(),
                })?;
            let tcp = tracker.register(io.into_inner(), permits)?;
            #[cfg(feature = "rustls")]
            if https {
                let tls = tls.ok_or_else(|| {
                    BoxError::from(
                        "https is unavailable: the TLS configuration could not be built when \
                         the manager was created (build it with HttpClientManager::builder() \
                         to see why)",
                    )
                })?;
                let name =
                    rustls::pki_types::ServerName::try_from(server_name.clone()).map_err(|e| {
                        BoxError::from(format!("invalid TLS server name {server_name:?}: {e}"))
                    })?;
                let stream = tls.connect(name, tcp).await?;
                return Ok(TokioIo::new(Conn::Tls(Box::new(stream))));
            }
            Ok(TokioIo::new(Conn::Plain(tcp)))
        })
    }
}

/// A failed TCP connect, naming where it went; the cause stays in the chain (a
/// connect timeout is recognised there).
#[derive(Debug)]
struct ConnectTo {
    host_port: String,
    source: BoxError,
}

impl fmt::Display for ConnectTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connecting to {} failed", self.host_port)
    }
}

impl std::error::Error for ConnectTo {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A tracked TCP stream holding its connection-limit permits.
pub(crate) struct TrackedTcp {
    stream: TcpStream,
    id: u64,
    tracker: Arc<ConnTracker>,
    _permits: Permits,
}

impl Drop for TrackedTcp {
    fn drop(&mut self) {
        // Before `stream` (and its fd) is dropped: see the module docs. A socket that
        // `close` already shut down was uncounted there.
        if self.tracker.state.lock().sockets.remove(&self.id).is_some() {
            Counters::dec(&self.tracker.counters.connections_open);
        }
    }
}

impl AsyncRead for TrackedTcp {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedTcp {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// One connection: plain TCP or TLS over it.
pub(crate) enum Conn {
    Plain(TrackedTcp),
    #[cfg(feature = "rustls")]
    Tls(Box<tokio_rustls::client::TlsStream<TrackedTcp>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(_) => Connected::new(),
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => {
                let c = Connected::new();
                if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            #[cfg(feature = "rustls")]
            Conn::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    fn connector() -> TrackingConnector {
        let counters = Arc::new(Counters::default());
        let mut http = HttpConnector::new_with_resolver(Resolver::new(None, Arc::clone(&counters)));
        http.enforce_http(false);
        TrackingConnector {
            http,
            tracker: ConnTracker::new(counters),
            limits: Limits::new(None, None),
            #[cfg(feature = "rustls")]
            tls: None,
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
        let mut conn = connector();
        for uri in [
            format!("ftp://127.0.0.1:{port}"),
            format!("htps://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{wrapped}"),
            "http://127.0.0.1:0".to_owned(),
            format!("http://u:p@127.0.0.1:{port}"),
        ] {
            let uri: Uri = uri.parse().expect("parses");
            let err = tower_service::Service::call(&mut conn, uri.clone())
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
