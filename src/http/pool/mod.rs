//! [`Pool`]: one client's connections, on hyper's connection API — HTTP/1 connections
//! kept idle per origin and reused (newest first), one shared HTTP/2 connection per
//! origin — with what a pool must do and hyper-util's legacy client did for us before:
//! the request put in the form its connection needs (origin form, absolute form through
//! a forwarding proxy, `Host`), connection limits waited for while an idle connection
//! may come back first, and a request that failed on a reused connection before any of
//! it was written sent again on another connection, once.
//!
//! Built by hand rather than from hyper-util's `client::pool` layers (`map`,
//! `negotiate`, `cache`, `singleton`): carrying a connection to the next runtime needs
//! the pool to reach each idle connection's socket (`io.rs`) and its idle time, which
//! `cache` keeps inside its `Cached` handles with neither idle expiry nor a size cap;
//! HTTP/1 or HTTP/2 is known only once the connector's TLS handshake has run, where
//! `negotiate` wants it decided by the service stack; and the connection limits must
//! race an idle connection coming back, which no layer offers. See `carry.rs` for what
//! happens to idle connections when a runtime ends.
//!
//! One pool per client, so per runtime (or per thread): the request path takes only
//! this pool's lock, which no other runtime's requests contend for.

pub(crate) mod carry;
pub(crate) mod io;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

use crate::error::BoxError;
use crate::http::body::request::Body;
use crate::http::connect::{TrackingConnector, TrackingExecutor};
use crate::http::pool::carry::{CarryTo, Parked};
use crate::http::pool::io::{IoCell, PoolIo};
use crate::http::uri::Target;
use crate::lifecycle::ParkLot;

/// An origin: scheme and authority, the scheme's default port left out (`http://h:80/`
/// and `http://h/` are one origin and share their connections, parked ones included).
/// Equality and hashing ignore case, as [`Authority`]'s do.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    scheme: Scheme,
    authority: Authority,
}

impl Key {
    /// Byte for byte the same origin (a cheaper test than `==`, which ignores case).
    fn same(&self, other: &Key) -> bool {
        self.scheme.as_str() == other.scheme.as_str()
            && self.authority.as_str() == other.authority.as_str()
    }

    /// `scheme://authority` and `path`.
    fn uri(&self, path: PathAndQuery) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).ok()
    }

    /// `host:port`, the port always written: a `CONNECT` request's target (RFC 9110
    /// §9.3.6 requires the port, which the key leaves out when it is the default).
    fn connect_target(&self) -> Option<Uri> {
        let authority = if self.authority.port().is_some() {
            self.authority.clone()
        } else {
            let port = if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            };
            Authority::try_from(format!("{}:{port}", self.authority.as_str())).ok()?
        };
        Uri::builder().authority(authority).build().ok()
    }

    fn of(uri: &Uri) -> Option<Key> {
        // The scheme by its name, in any case: a URI built with
        // `Uri::builder().scheme("HTTPS")` holds `Scheme::Other("HTTPS")`, which is not
        // `== Scheme::HTTPS`; taken for plain `http`, its `:80` would be dropped as the
        // default port and the connection made to 443.
        let (scheme, default) = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("https") => (Scheme::HTTPS, ":443"),
            s if s.eq_ignore_ascii_case("http") => (Scheme::HTTP, ":80"),
            _ => return None,
        };
        let authority = uri.authority()?;
        // A suffix test, not `port_u16()` (a reverse search): this runs per request.
        // `[::1]:80` gives `[::1]`; `[::80]` ends in `]`, not in the suffix.
        let authority = match authority.as_str().strip_suffix(default) {
            Some(host) => Authority::try_from(host).ok()?,
            None => authority.clone(),
        };
        Some(Key { scheme, authority })
    }
}

pub(crate) struct Settings {
    /// Idle HTTP/1 connections kept per origin; `0`: none (keep-alive off).
    pub(crate) max_idle_per_host: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) http2_prior_knowledge: bool,
}

/// Origins that chose HTTP/2 by ALPN, remembered by a manager across its clients (its
/// runtime generations): a new client's concurrent first requests to one of them wait
/// for the one connection the first of them opens, instead of each making a TLS
/// handshake only to find the origin wants one connection. Read when a client first
/// meets an origin and written when a connection says otherwise: never per request.
/// Bounded; forgetting costs handshakes, nothing else.
#[derive(Default)]
pub(crate) struct H2Origins(parking_lot::Mutex<HashSet<Key>>);

impl H2Origins {
    const MAX: usize = 1024;

    fn contains(&self, key: &Key) -> bool {
        self.0.lock().contains(key)
    }

    fn set(&self, key: &Key, h2: bool) {
        let mut set = self.0.lock();
        if !h2 {
            set.remove(key);
            return;
        }
        if set.len() >= Self::MAX && !set.contains(key) {
            set.clear();
        }
        set.insert(key.clone());
    }
}

/// One client's connections. See the module docs.
pub(crate) struct Pool {
    connector: TrackingConnector,
    exec: TrackingExecutor,
    settings: Settings,
    h2_origins: Arc<H2Origins>,
    /// Where idle connections go when the runtime ends, and this client's epoch there.
    carry: Option<(Arc<ParkLot<Parked>>, u64)>,
    hosts: parking_lot::Mutex<Hosts>,
}

/// The pool's origins; the latest one looked up is checked first (most clients talk to
/// one origin at a time), so a request usually finds its origin without hashing.
#[derive(Default)]
struct Hosts {
    last: Option<Arc<Origin>>,
    map: HashMap<Key, Arc<Origin>>,
}

/// One origin's connections.
struct Origin {
    key: Key,
    /// The `Host` header its HTTP/1 requests get when they have none.
    host: HeaderValue,
    state: parking_lot::Mutex<Host>,
}

#[derive(Default)]
struct Host {
    /// Idle HTTP/1 connections, oldest first.
    idle: Vec<Idle>,
    h2: Option<H2>,
    /// The origin spoke HTTP/2 (ALPN): its next connection will too.
    speaks_h2: bool,
    /// The manager's [`H2Origins`] lists the origin (this client read or wrote it
    /// there): an HTTP/1 answer must take it off, whatever `speaks_h2` says now.
    remembered: bool,
    /// An HTTP/2 connection is being made: requests wait for it rather than open more
    /// (see [`H2Turn`]).
    h2_connecting: bool,
    /// Woken when a connection goes back idle or an HTTP/2 connection is ready, for the
    /// requests waiting for a connection (`waiting` of them: nobody is woken when nobody
    /// waits).
    returned: Arc<Notify>,
    waiting: usize,
}

/// The one request that makes an origin's HTTP/2 connection while the others wait to
/// share it (with `http2_prior_knowledge`, or once the origin chose HTTP/2 by ALPN, in
/// this client or an earlier one of its manager; before that, concurrent first requests
/// each connect, as they cannot know).
struct H2Turn(Arc<Origin>);

impl H2Turn {
    /// The turn's connect failed: unless HTTP/2 is known a priori, the waiters connect
    /// each on their own again rather than one after another (an origin that is down
    /// would make them wait out one connect timeout each).
    fn failed(self, prior_knowledge: bool) {
        if !prior_knowledge {
            self.0.state.lock().speaks_h2 = false;
        }
    }
}

impl Drop for H2Turn {
    fn drop(&mut self) {
        let mut host = self.0.state.lock();
        host.h2_connecting = false;
        if host.waiting > 0 {
            let returned = Arc::clone(&host.returned);
            drop(host);
            returned.notify_waiters();
        }
    }
}

/// An origin's HTTP/2 connection, shared by its requests.
#[derive(Clone)]
struct H2 {
    tx: http2::SendRequest<Body>,
    /// Its open-connection series (feature `metrics`).
    #[cfg(feature = "metrics")]
    state: crate::http::connect::socket::ConnState,
}

struct Idle {
    tx: http1::SendRequest<Body>,
    cell: Arc<IoCell>,
    proxied: bool,
    since: Instant,
}

/// An HTTP/1 connection taken from the pool for one request; back in the idle list
/// when its response body has been read to the end ([`Pooled::reuse`]), closed if it is
/// dropped before.
pub(crate) struct Pooled {
    pool: Arc<Pool>,
    origin: Arc<Origin>,
    tx: http1::SendRequest<Body>,
    cell: Arc<IoCell>,
    proxied: bool,
    reused: bool,
}

enum Got {
    H1(Pooled),
    H2(H2, bool),
}

/// A failure of the pool: the connection could not be made, or the request could not
/// be sent or answered on it.
#[derive(Debug)]
pub(crate) enum PoolError {
    Connect(BoxError),
    Send(hyper::Error),
    Request(String),
}

impl PoolError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect(_))
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Connect(_) => f.write_str("client error (Connect)"),
            PoolError::Send(_) => f.write_str("client error (SendRequest)"),
            PoolError::Request(what) => write!(f, "client error ({what})"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Connect(e) => Some(&**e),
            PoolError::Send(e) => Some(e),
            PoolError::Request(_) => None,
        }
    }
}

pub(crate) type Sent = Result<(Response<Incoming>, Option<Pooled>), PoolError>;

/// A request on its way through the pool.
pub(crate) type SendFuture = Pin<Box<dyn Future<Output = Sent> + Send>>;

impl Pool {
    pub(crate) fn new(
        connector: TrackingConnector,
        exec: TrackingExecutor,
        settings: Settings,
        h2_origins: Arc<H2Origins>,
        carry: Option<(Arc<ParkLot<Parked>>, u64)>,
    ) -> Arc<Self> {
        Arc::new(Pool {
            connector,
            exec,
            settings,
            h2_origins,
            carry,
            hosts: parking_lot::Mutex::new(Hosts::default()),
        })
    }

    /// `key`'s origin, made on first use.
    fn origin(&self, key: &Key) -> Arc<Origin> {
        let mut hosts = self.hosts.lock();
        if let Some(last) = &hosts.last {
            if last.key.same(key) {
                return Arc::clone(last);
            }
        }
        if hosts.map.len() >= 256 && !hosts.map.contains_key(key) {
            // Origins nothing holds (no connection, no request) are forgotten, so a
            // client that visits many hosts stays small.
            hosts.last = None;
            hosts.map.retain(|_, o| {
                Arc::strong_count(o) > 1 || {
                    let host = o.state.lock();
                    !host.idle.is_empty() || host.h2.is_some() || host.waiting > 0
                }
            });
        }
        let origin = Arc::clone(hosts.map.entry(key.clone()).or_insert_with(|| {
            Arc::new(Origin {
                key: key.clone(),
                host: host_header(key),
                state: parking_lot::Mutex::new({
                    let known = self.h2_origins.contains(key);
                    Host {
                        speaks_h2: known,
                        remembered: known,
                        ..Host::default()
                    }
                }),
            })
        }));
        hosts.last = Some(Arc::clone(&origin));
        origin
    }

    pub(crate) fn send(self: &Arc<Self>, req: Request<Body>) -> SendFuture {
        Box::pin(Arc::clone(self).send_inner(req))
    }

    // Kept under 1 KiB (the allocator's per-thread cache takes blocks up to 1,032
    // bytes; a bigger box costs a slow malloc and free per request): nothing lives
    // across an await that the origin's key can give back (the request's absolute URI).
    async fn send_inner(self: Arc<Self>, mut req: Request<Body>) -> Sent {
        let origin = match Key::of(req.uri()) {
            Some(key) => self.origin(&key),
            None => {
                return Err(PoolError::Request(format!(
                    "the URI {} does not name an http or https origin",
                    crate::redact::uri(req.uri())
                )));
            }
        };
        let mut retried = false;
        loop {
            let got = match self.checkout(&origin) {
                Some(got) => got,
                // Boxed: the connect path's state stays out of every request's future.
                None => Box::pin(self.connect(&origin)).await?,
            };
            match got {
                Got::H1(mut pooled) => {
                    if let Err(e) = pooled.tx.ready().await {
                        if pooled.reused {
                            continue; // closed while it idled: nothing was sent on it
                        }
                        return Err(PoolError::Send(e));
                    }
                    http1_form(&mut req, pooled.proxied, &origin)?;
                    let reused = pooled.reused;
                    let connect = req.method() == Method::CONNECT;
                    match pooled.tx.try_send_request(req).await {
                        Ok(resp) => {
                            let keep = !upgrades(&resp, connect);
                            return Ok((resp, keep.then_some(pooled)));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(back) if reused && !retried => {
                                tracing::debug!(
                                    "a reused connection failed before the request was \
                                     written: sending it again on another connection"
                                );
                                retried = true;
                                req = back;
                                absolute_form(&mut req, &origin.key)?;
                            }
                            _ => return Err(PoolError::Send(e.into_error())),
                        },
                    }
                }
                Got::H2(h2, reused) => {
                    let mut tx = h2.tx;
                    if let Err(e) = tx.ready().await {
                        self.forget_h2(&origin, &tx);
                        if reused && !retried {
                            retried = true;
                            continue;
                        }
                        return Err(PoolError::Send(e));
                    }
                    match tx.try_send_request(req).await {
                        #[cfg(feature = "metrics")]
                        Ok(mut resp) => {
                            // The connection's state series: idle again when the body ends.
                            resp.extensions_mut().insert(h2.state);
                            return Ok((resp, None));
                        }
                        #[cfg(not(feature = "metrics"))]
                        Ok(resp) => return Ok((resp, None)),
                        Err(mut e) => match e.take_message() {
                            Some(back) if reused && !retried => {
                                self.forget_h2(&origin, &tx);
                                retried = true;
                                req = back;
                                absolute_form(&mut req, &origin.key)?;
                            }
                            _ => return Err(PoolError::Send(e.into_error())),
                        },
                    }
                }
            }
        }
    }

    /// An idle connection (or the origin's HTTP/2 connection), if there is one.
    fn checkout(self: &Arc<Self>, origin: &Arc<Origin>) -> Option<Got> {
        let mut host = origin.state.lock();
        if let Some(h2) = &host.h2 {
            if !h2.tx.is_closed() {
                return Some(Got::H2(h2.clone(), true));
            }
            host.h2 = None;
        }
        let now = Instant::now();
        while let Some(idle) = host.idle.pop() {
            if idle.tx.is_closed() || self.expired(idle.since, now) || !idle.cell.claim() {
                idle.cell.unidle();
                continue;
            }
            return Some(Got::H1(Pooled {
                pool: Arc::clone(self),
                origin: Arc::clone(origin),
                tx: idle.tx,
                cell: idle.cell,
                proxied: idle.proxied,
                reused: true,
            }));
        }
        None
    }

    fn expired(&self, since: Instant, now: Instant) -> bool {
        idle_expired(since, self.settings.idle_timeout, now)
    }

    fn forget_h2(&self, origin: &Origin, tx: &http2::SendRequest<Body>) {
        let mut host = origin.state.lock();
        if host
            .h2
            .as_ref()
            .is_some_and(|h| h.tx.is_closed() || tx.is_closed())
        {
            host.h2 = None;
        }
    }

    /// For a request that waits for a connection: woken when one goes back idle
    /// until the guard is dropped.
    fn wait_for_returns(origin: &Origin) -> (Arc<Notify>, Waiting<'_>) {
        let mut host = origin.state.lock();
        host.waiting += 1;
        (Arc::clone(&host.returned), Waiting { origin })
    }

    /// A new connection for `key` — unless an idle one comes back first, while this
    /// one waits for a connection-limit permit or connects. A connect overtaken so goes
    /// on in the background (still bound by its deadlines), and its connection joins
    /// the pool idle.
    async fn connect(self: &Arc<Self>, origin: &Arc<Origin>) -> Result<Got, PoolError> {
        // The origin's own URI: the connector needs no more than scheme, host and port.
        let Some(uri) = origin.key.uri(PathAndQuery::from_static("/")) else {
            return Err(unformed());
        };
        let target = Target::check(&uri).map_err(|e| PoolError::Connect(Box::new(e)))?;
        let host_port: Arc<str> = target.host_port().into();
        let (returned, _waiting) = Self::wait_for_returns(origin);
        let h2_turn = loop {
            let notified = returned.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(got) = self.checkout(origin) {
                return Ok(got);
            }
            {
                let mut host = origin.state.lock();
                if !(self.settings.http2_prior_knowledge || host.speaks_h2) {
                    break None;
                }
                if !host.h2_connecting {
                    host.h2_connecting = true;
                    break Some(H2Turn(Arc::clone(origin)));
                }
            }
            notified.await;
        };
        let limits = &self.connector.limits;
        let permits = if limits.is_unlimited() {
            limits.acquire(&host_port).await
        } else {
            let acquire = std::pin::pin!(limits.acquire(&host_port));
            match self.unless_returned(origin, &returned, acquire).await {
                Ok(permits) => permits,
                Err(got) => return Ok(got),
            }
        };
        let opening = self.connector.connect(uri, permits);
        let pool = Arc::clone(self);
        let o = Arc::clone(origin);
        let mut establish = Box::pin(async move {
            let got = match opening.await {
                Ok(conn) => pool.establish(&o, conn, host_port).await,
                Err(e) => Err(PoolError::Connect(e)),
            };
            if let (Some(turn), Err(_)) = (h2_turn, &got) {
                turn.failed(pool.settings.http2_prior_knowledge);
            }
            got
        });
        match self
            .unless_returned(origin, &returned, establish.as_mut())
            .await
        {
            Ok(got) => got,
            Err(got) => {
                hyper::rt::Executor::execute(&self.exec, async move {
                    if let Ok(Got::H1(pooled)) = establish.await {
                        pooled.reuse();
                    }
                });
                Ok(got)
            }
        }
    }

    /// Polls `fut` to its end (`Ok`), unless an idle connection of `origin` comes back
    /// first (`Err`, the connection): `returned` is the origin's wake-up, and the
    /// caller is counted among its waiters.
    async fn unless_returned<F: Future + ?Sized>(
        self: &Arc<Self>,
        origin: &Arc<Origin>,
        returned: &Notify,
        mut fut: Pin<&mut F>,
    ) -> Result<F::Output, Got> {
        loop {
            let notified = returned.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(got) = self.checkout(origin) {
                return Err(got);
            }
            if let Either::Left((out, _)) = select(fut.as_mut(), notified).await {
                return Ok(out);
            }
        }
    }

    /// hyper's connection over a new socket: HTTP/2 (shared from now on) or HTTP/1.
    async fn establish(
        self: &Arc<Self>,
        origin: &Arc<Origin>,
        conn: crate::http::connect::stream::Conn,
        host_port: Arc<str>,
    ) -> Result<Got, PoolError> {
        let conn_was_alpn_h2 = conn.is_h2();
        if conn_was_alpn_h2 || self.settings.http2_prior_knowledge {
            #[cfg(feature = "metrics")]
            let state = conn.conn_state();
            let (tx, connection) = http2::Builder::new(self.exec.clone())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(conn))
                .await
                .map_err(|e| PoolError::Connect(Box::new(e)))?;
            hyper::rt::Executor::execute(&self.exec, async move {
                let _ = connection.await;
            });
            let h2 = H2 {
                tx,
                #[cfg(feature = "metrics")]
                state,
            };
            let learned = {
                let mut host = origin.state.lock();
                if host.h2.as_ref().is_none_or(|h| h.tx.is_closed()) {
                    host.h2 = Some(h2.clone());
                }
                host.speaks_h2 = true;
                // Only what ALPN chose is remembered (prior knowledge is a setting).
                conn_was_alpn_h2 && !std::mem::replace(&mut host.remembered, true)
            };
            if learned {
                self.h2_origins.set(&origin.key, true);
            }
            return Ok(Got::H2(h2, false));
        }
        // The origin answered HTTP/1 (a server that dropped HTTP/2): its next
        // connections are made in parallel again, here and in the manager's next clients.
        let forget = {
            let mut host = origin.state.lock();
            host.speaks_h2 = false;
            std::mem::take(&mut host.remembered)
        };
        if forget {
            self.h2_origins.set(&origin.key, false);
        }
        let proxied = conn.is_proxied();
        let carry = self.carry.as_ref().map(|(lot, epoch)| CarryTo {
            lot: Arc::clone(lot),
            epoch: *epoch,
            key: origin.key.clone(),
            host_port,
            idle_timeout: self.settings.idle_timeout,
        });
        let cell = IoCell::new(conn, carry);
        let tx = self.start_http1(&cell).await?;
        Ok(Got::H1(Pooled {
            pool: Arc::clone(self),
            origin: Arc::clone(origin),
            tx,
            cell,
            proxied,
            reused: false,
        }))
    }

    /// hyper's HTTP/1 connection over `cell`, its task spawned on the client's runtime.
    async fn start_http1(&self, cell: &Arc<IoCell>) -> Result<http1::SendRequest<Body>, PoolError> {
        let (tx, connection) = http1::Builder::new()
            .handshake(TokioIo::new(PoolIo(Arc::clone(cell))))
            .await
            .map_err(|e| PoolError::Connect(Box::new(e)))?;
        hyper::rt::Executor::execute(
            &self.exec,
            ConnTask {
                conn: Box::pin(connection.with_upgrades()),
                cell: Arc::clone(cell),
                done: false,
            },
        );
        Ok(tx)
    }

    /// Takes in connections parked by the previous runtime of this client's scope:
    /// each one still quiet, within its idle time, within this pool's idle cap and the
    /// connection limits, is registered with this runtime (the caller has entered it)
    /// and made idle here; the rest are closed on the wire. Returns how many were
    /// taken in.
    pub(crate) async fn adopt(self: &Arc<Self>, parked: Vec<Parked>) -> usize {
        let mut adopted = 0;
        let now = Instant::now();
        for mut p in parked {
            let origin = self.origin(&p.key);
            let full = origin.state.lock().idle.len() >= self.settings.max_idle_per_host;
            if full || p.expired(self.settings.idle_timeout, now) || !p.conn.tcp().parked_is_quiet()
            {
                p.close();
                continue;
            }
            let Some(permits) = self.connector.limits.try_acquire(&p.host_port) else {
                p.close();
                continue;
            };
            let attached = {
                // `from_std` registers the socket with the current runtime's reactor.
                let _entered = self.exec.handle.enter();
                p.conn.tcp_mut().attach(&self.connector.tracker, permits)
            };
            if attached.is_err() {
                p.close();
                continue;
            }
            let proxied = p.conn.is_proxied();
            let carry = self.carry.as_ref().map(|(lot, epoch)| CarryTo {
                lot: Arc::clone(lot),
                epoch: *epoch,
                key: origin.key.clone(),
                host_port: Arc::clone(&p.host_port),
                idle_timeout: self.settings.idle_timeout,
            });
            let since = p.idle_since;
            let cell = IoCell::with_idle_since(p.conn, carry, since);
            let Ok(tx) = self.start_http1(&cell).await else {
                continue;
            };
            cell.set_idle_since(since);
            origin.state.lock().idle.push(Idle {
                tx,
                cell,
                proxied,
                since,
            });
            adopted += 1;
        }
        if adopted > 0 {
            tracing::debug!(
                adopted,
                "idle connections carried over from the previous runtime"
            );
        }
        adopted
    }

    /// The runtime is being torn down: every cleanly idle HTTP/1 connection is parked
    /// for the next one (see `io.rs`).
    pub(crate) fn runtime_gone(&self) {
        if self.carry.is_none() {
            return;
        }
        let origins: Vec<Arc<Origin>> = self.hosts.lock().map.values().cloned().collect();
        let cells: Vec<Arc<IoCell>> = origins
            .iter()
            .flat_map(|o| {
                let host = o.state.lock();
                host.idle
                    .iter()
                    .map(|i| Arc::clone(&i.cell))
                    .collect::<Vec<_>>()
            })
            .collect();
        for cell in cells {
            cell.carry();
        }
    }
}

impl Pooled {
    /// The response body was read to its end: the connection goes back idle (unless
    /// the pool keeps none, or it closed).
    pub(crate) fn reuse(self) {
        let pool = &self.pool;
        if pool.settings.max_idle_per_host == 0 || self.tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut host = self.origin.state.lock();
        self.cell.set_idle_since(now);
        host.idle.push(Idle {
            tx: self.tx,
            cell: self.cell,
            proxied: self.proxied,
            since: now,
        });
        if host.idle.len() > pool.settings.max_idle_per_host {
            let oldest = host.idle.remove(0);
            oldest.cell.unidle();
        }
        if host.waiting > 0 {
            let returned = Arc::clone(&host.returned);
            drop(host);
            returned.notify_waiters();
        }
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn conn_state(&self) -> Option<crate::http::connect::socket::ConnState> {
        self.cell.conn_state()
    }
}

/// A request waiting for a connection of `origin` (see [`Pool::wait_for_returns`]).
struct Waiting<'a> {
    origin: &'a Origin,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut host = self.origin.state.lock();
        host.waiting = host.waiting.saturating_sub(1);
    }
}

/// Whether a connection idle since `since` has passed its idle `timeout` at `now`
/// (`None`: it never does; a deadline past `Instant`'s range never comes).
pub(crate) fn idle_expired(since: Instant, timeout: Option<Duration>, now: Instant) -> bool {
    timeout.is_some_and(|t| since.checked_add(t).is_some_and(|at| at <= now))
}

/// Whether `resp` hands the connection over to the application (an upgrade, a
/// `CONNECT` tunnel): such a connection never goes back to the pool.
fn upgrades(resp: &Response<Incoming>, connect: bool) -> bool {
    resp.status() == StatusCode::SWITCHING_PROTOCOLS || (connect && resp.status().is_success())
}

/// The `Host` header for an origin's requests: its host, and its port unless the
/// scheme's default (as hyper-util's legacy client sends it).
fn host_header(key: &Key) -> HeaderValue {
    let host = key.authority.host();
    let default = if key.scheme == Scheme::HTTPS { 443 } else { 80 };
    let value = match key.authority.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A request given back unsent, in the form `http1_form` left it, put back in absolute
/// form for another connection (which may be proxied).
fn absolute_form(req: &mut Request<Body>, key: &Key) -> Result<(), PoolError> {
    if req.uri().scheme().is_none() {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = key.uri(path).ok_or_else(unformed)?;
    }
    Ok(())
}

/// A key that makes no URI: unreachable (its scheme and authority came from one), and
/// refused rather than sent anywhere else.
#[cold]
fn unformed() -> PoolError {
    PoolError::Request("the request's origin does not form a URI".to_owned())
}

/// The request in the form an HTTP/1 connection needs: origin form (`/path?q`), or
/// absolute form through a forwarding proxy, or authority form for `CONNECT`; `host`
/// as its `Host` header when it has none.
fn http1_form(req: &mut Request<Body>, proxied: bool, origin: &Origin) -> Result<(), PoolError> {
    let host = &origin.host;
    if !req.headers().contains_key(HOST) && !host.is_empty() {
        req.headers_mut().insert(HOST, host.clone());
    }
    if req.method() == Method::CONNECT {
        *req.uri_mut() = origin.key.connect_target().ok_or_else(unformed)?;
        return Ok(());
    }
    if proxied {
        return Ok(());
    }
    let path = match req.uri().path_and_query() {
        Some(p) if !p.as_str().is_empty() => p.clone(),
        _ => PathAndQuery::from_static("/"),
    };
    *req.uri_mut() = Uri::from(path);
    Ok(())
}

/// hyper's HTTP/1 connection, run as a task of the client's runtime. Dropped before it
/// finished — its runtime is being torn down — it first offers its connection for
/// carrying ([`IoCell::carry`]); a close shuts the socket down beforehand, so a closed
/// client's connection is never carried.
struct ConnTask<F> {
    conn: Pin<Box<F>>,
    cell: Arc<IoCell>,
    done: bool,
}

impl<F: Future> Future for ConnTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.get_mut();
        if this.conn.as_mut().poll(cx).is_ready() {
            this.done = true;
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }
}

impl<F> Drop for ConnTask<F> {
    fn drop(&mut self) {
        if !self.done {
            self.cell.carry();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, RandomState};

    fn key(uri: &str) -> Key {
        Key::of(&uri.parse().unwrap()).unwrap()
    }

    #[test]
    fn an_origin_is_one_key_however_its_default_port_and_case_are_written() {
        let hasher = RandomState::new();
        for (a, b) in [
            ("http://example.com/", "http://example.com:80/x"),
            ("https://example.com/", "https://example.com:443/"),
            ("http://[::1]/", "http://[::1]:80/"),
            ("http://Example.COM/", "HTTP://example.com:80/"),
        ] {
            assert!(key(a) == key(b), "{a} and {b} are one origin");
            assert_eq!(
                hasher.hash_one(key(a)),
                hasher.hash_one(key(b)),
                "{a} / {b}"
            );
            let (ha, hb) = (host_header(&key(a)), host_header(&key(b)));
            assert!(
                ha.as_bytes().eq_ignore_ascii_case(hb.as_bytes()),
                "{a} / {b}"
            );
        }
        for (a, b) in [
            ("http://example.com/", "http://example.com:8080/"),
            ("http://example.com/", "https://example.com/"),
            ("http://example.com:443/", "https://example.com:443/"),
            ("https://example.com:80/", "http://example.com:80/"),
            ("http://example.com/", "http://example.org/"),
        ] {
            assert!(key(a) != key(b), "{a} and {b} are two origins");
        }
        assert_eq!(key("http://[::1]:80/").authority.as_str(), "[::1]");
        assert_eq!(key("http://[::80]/").authority.as_str(), "[::80]");
        assert_eq!(key("https://h:8443/").authority.as_str(), "h:8443");
    }

    /// A URI built with `Uri::builder().scheme("HTTPS")` holds `Scheme::Other`: its key
    /// is still `https`, its `:80` is kept (not the default port), and the origin's URI
    /// the connector gets says port 80, not 443.
    #[test]
    fn a_scheme_in_capitals_is_still_its_scheme() {
        for built in [
            Uri::builder()
                .scheme("HTTPS")
                .authority("h:80")
                .path_and_query("/x")
                .build()
                .unwrap(),
            "HTTPS://h:80/x".parse().unwrap(),
        ] {
            let key = Key::of(&built).unwrap();
            assert_eq!(key.scheme, Scheme::HTTPS, "{built}");
            assert_eq!(key.authority.as_str(), "h:80", "{built}");
            assert_eq!(host_header(&key), "h:80", "{built}");
            let uri = key.uri(PathAndQuery::from_static("/")).unwrap();
            let target = Target::check(&uri).unwrap();
            assert_eq!((target.is_https(), target.port()), (true, 80), "{built}");
        }
        let built = Uri::builder()
            .scheme("HtTp")
            .authority("h:80")
            .path_and_query("/")
            .build()
            .unwrap();
        assert!(key("http://h/") == Key::of(&built).unwrap());
        let other = Uri::builder()
            .scheme("ftp")
            .authority("h")
            .path_and_query("/")
            .build()
            .unwrap();
        assert!(Key::of(&other).is_none());
    }

    /// A `CONNECT` request's target always has its port; a request given back unsent
    /// goes back to absolute form with its path and query.
    #[test]
    fn request_forms_keep_the_port_and_the_query() {
        for (uri, target) in [
            ("http://h/", "h:80"),
            ("https://h/", "h:443"),
            ("https://h:443/", "h:443"),
            ("http://h:8080/", "h:8080"),
            ("https://[::1]/", "[::1]:443"),
            ("http://[::1]:8080/", "[::1]:8080"),
        ] {
            let key = key(uri);
            assert_eq!(key.connect_target().unwrap().to_string(), target, "{uri}");
        }
        let mut req = Request::get("/p?q=1").body(Body::empty()).unwrap();
        absolute_form(&mut req, &key("http://h:8080/")).unwrap();
        assert_eq!(req.uri().to_string(), "http://h:8080/p?q=1");
        // Already absolute (a forwarding proxy's form, HTTP/2): left as it is.
        let mut req = Request::get("http://h:8080/a?b")
            .body(Body::empty())
            .unwrap();
        absolute_form(&mut req, &key("http://other/")).unwrap();
        assert_eq!(req.uri().to_string(), "http://h:8080/a?b");
    }

    /// Every request's future is boxed once (`Pool::send`): past 1,032 bytes the box
    /// misses the allocator's per-thread cache and costs a slow malloc and free each
    /// time (about 450 instructions a request, measured with callgrind on
    /// `examples/profile_requests`). Keep what lives across its awaits small.
    #[test]
    fn the_request_future_fits_the_allocators_thread_cache() {
        fn size_of_future<F, Fut>(_: F) -> usize
        where
            F: FnOnce(Arc<Pool>, Request<Body>) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = size_of_future(|pool, req| pool.send_inner(req));
        assert!(size <= 1024, "Pool::send_inner's future is {size} bytes");
    }
}
