//! [`Builder`]: the setters, each stating its default and its range.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, USER_AGENT};

use crate::http::config::proxy::{Proxy, ProxySettings};
use crate::http::config::settings::Config;
use crate::manager::Sharing;

/// Configures an [`HttpClientManager`](crate::HttpClientManager): every client it builds uses this one validated
/// configuration.
///
/// Every setter states its default. Settings that can be turned off take
/// `impl Into<Option<_>>`: pass `None` to turn them off. [`build`](Builder::build)
/// rejects nonsense (zero limits or timeouts, contradictory options) with an error that
/// names the setting and the value.
///
/// Connection limits apply per client. A manager has one client per thread (per runtime
/// on that thread), so the most sockets a manager opens to one host is
/// `max_connections_per_host` × the threads using it. Limits are not shared across
/// runtimes on purpose: a permit held by an idle pooled connection of an idle runtime
/// would make busy runtimes wait for a connection nobody will ever release.
///
/// # Proxies
///
/// By default [`build`](Builder::build) reads `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`
/// and `NO_PROXY` (as curl, Go and reqwest do); [`proxy`](Builder::proxy) sets proxies
/// explicitly instead, [`no_proxy`](Builder::no_proxy) turns proxies off. An `https`
/// request always goes through a `CONNECT` tunnel and TLS to the origin, never in
/// cleartext to the proxy. The variables never apply to `localhost` and loopback
/// addresses; an explicit proxy does. See [`no_proxy`](Builder::no_proxy) for the rules
/// and why the environment is read by default.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let manager = rtlocal::HttpClientManager::builder()
///     .connect_timeout(Duration::from_secs(3))
///     .request_timeout(Duration::from_secs(30))
///     .max_connections_per_host(8)
///     .pool_idle_timeout(Duration::from_secs(30))
///     .build()?;
/// # Ok::<(), rtlocal::Error>(())
/// ```
///
/// ```
/// let err = rtlocal::HttpClientManager::builder()
///     .max_connections_per_host(0)
///     .build()
///     .unwrap_err();
/// assert!(err.is_config());
/// assert!(err.to_string().contains("max_connections_per_host"));
/// ```
#[derive(Clone)]
pub struct Builder {
    pub(super) config: Config,
    /// Whether `pool_max_idle_per_host` was set (its default does not contradict
    /// `keep_alive(false)`).
    pub(super) pool_max_idle_set: bool,
    /// The first setter error, reported by `build`.
    pub(super) deferred_error: Option<String>,
    /// Resolved (and the environment read) by `build`.
    pub(super) proxy: ProxySettings,
    #[cfg(feature = "rustls")]
    pub(super) tls: TlsSettings,
}

#[cfg(feature = "rustls")]
#[derive(Clone, Default)]
pub(super) struct TlsSettings {
    pub(super) extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub(super) no_built_in_roots: bool,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            config: Config::default(),
            pool_max_idle_set: false,
            deferred_error: None,
            proxy: ProxySettings::default(),
            #[cfg(feature = "rustls")]
            tls: TlsSettings::default(),
        }
    }

    fn defer(&mut self, msg: String) {
        self.deferred_error.get_or_insert(msg);
    }

    /// Who shares a client: one per thread (and runtime), or one per runtime shared by
    /// all its worker threads (one connection pool per runtime, better reuse on a
    /// `multi_thread` runtime). See [`Sharing`].
    ///
    /// Default is [`Sharing::PerThread`].
    pub fn sharing(mut self, sharing: Sharing) -> Self {
        self.config.sharing = sharing;
        self
    }

    /// What [`shutdown_all`](crate::shutdown_all)'s report and the metrics (feature
    /// `metrics`, attribute `rtlocal.manager`) call this manager: tells two HTTP managers
    /// of one process apart.
    ///
    /// Default is `"http"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(Arc::from(name.into()));
        self
    }

    /// How long closing a stale client (on a runtime change), `close_all` or a forced
    /// `shutdown` waits for in-flight requests before it cuts them.
    ///
    /// Default is 5 seconds. At least 1 ns ([`build`](Builder::build) rejects zero); at
    /// most ten years (longer values, e.g. `Duration::MAX`, are cut to ten years).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Deadline for each step of establishing a connection: DNS and the TCP connect (to
    /// the origin or to a proxy), and the TLS handshake. A proxy's `CONNECT` is bounded
    /// by the [request timeout](Builder::request_timeout) from the attempt's start (by
    /// this one when that is off): the proxy connects on to the origin inside it. A
    /// connect that overruns fails with both
    /// [`Error::is_connect`](crate::Error::is_connect) and
    /// [`Error::is_timeout`](crate::Error::is_timeout). `None` waits as long as the OS.
    ///
    /// These deadlines belong to the attempt, not to the request that started it: when a
    /// pooled connection serves the request first and the attempt goes on in the
    /// background, a `CONNECT` or TLS handshake still running at its deadline has its
    /// socket shut down on the wire at once, even while the runtime idles.
    ///
    /// Default is 10 seconds. At least 1 ms ([`build`](Builder::build) rejects less);
    /// ten years or more (e.g. `Duration::MAX`) means `None`.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.connect_timeout = timeout.into();
        self
    }

    /// A total deadline for each request: from the start of the request (including
    /// waiting for a connection, connecting and TLS) to the end of the response body. A
    /// request or body that overruns it fails with [`Error::is_timeout`](crate::Error::is_timeout). `None` turns
    /// it off.
    ///
    /// Default is 300 seconds. At least 1 ms ([`build`](Builder::build) rejects less);
    /// ten years or more (e.g. `Duration::MAX`) means `None`.
    pub fn request_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.request_timeout = timeout.into();
        self
    }

    /// How long an idle pooled connection is kept before it is closed. `None` keeps idle
    /// connections until the client closes.
    ///
    /// This holds whether or not the client's runtime is running: besides the pool's own
    /// eviction (when a request looks for a connection), a process-wide timer thread shuts down the
    /// sockets of a client that has had no request in flight for this long, so a
    /// `current_thread` runtime that idles between jobs does not keep connections open.
    /// The close happens between one and two timeouts after the client's last request
    /// ended; a request that then picks such a connection from the pool is retried on a
    /// new one.
    ///
    /// Default is 90 seconds. At least 1 ns ([`build`](Builder::build) rejects zero:
    /// use `pool_max_idle_per_host(0)` to keep nothing idle); ten years or more (e.g.
    /// `Duration::MAX`) means `None`.
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.pool_idle_timeout = timeout.into();
        self
    }

    /// The most idle connections kept per host. `0` disables pooling.
    ///
    /// Default is unlimited (`usize::MAX`); every value is accepted.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.config.pool_max_idle_per_host = max;
        self.pool_max_idle_set = true;
        self
    }

    /// The most open connections per client, to all hosts. A request that needs a new
    /// connection when the limit is reached waits (bounded by its request timeout) for a
    /// pooled connection to its host or for a slot to free up.
    ///
    /// Idle pooled connections count: they hold their slot until they are closed (by
    /// `pool_idle_timeout`, or when the server closes them). With a small cap shared by
    /// several hosts, keep `pool_idle_timeout` short or `pool_max_idle_per_host` low, or a
    /// request to one host can wait on another host's idle connections.
    ///
    /// Default is unlimited. At least 1 ([`build`](Builder::build) rejects 0); values of
    /// `tokio::sync::Semaphore::MAX_PERMITS` (2⁶¹ − 1 on 64-bit) or more, e.g.
    /// `usize::MAX`, mean unlimited.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = Some(max);
        self
    }

    /// The most open connections per client to one host (`host:port`), like Go's
    /// `MaxConnsPerHost` or aiohttp's `limit_per_host`. Requests beyond it wait (bounded
    /// by their request timeout).
    ///
    /// Default is unlimited. At least 1 ([`build`](Builder::build) rejects 0, and a value
    /// above `max_connections`); values of `tokio::sync::Semaphore::MAX_PERMITS` or more,
    /// e.g. `usize::MAX`, mean unlimited.
    pub fn max_connections_per_host(mut self, max: usize) -> Self {
        self.config.max_connections_per_host = Some(max);
        self
    }

    /// `false` opens a fresh connection for every request and closes it afterwards (sends
    /// `Connection: close` and keeps nothing idle): the `force_close` of other clients.
    ///
    /// Default is `true`.
    pub fn keep_alive(mut self, keep_alive: bool) -> Self {
        self.config.keep_alive = keep_alive;
        self
    }

    /// Whether idle HTTP/1 connections outlive their runtime: when a runtime is torn
    /// down, each of its client's connections that is cleanly idle (its response read to
    /// the end, nothing in flight, nothing unread, keep-alive on) is moved off that
    /// runtime and handed to the next client of the same thread (per-thread sharing) or
    /// manager (per-runtime sharing), which serves its next request to that origin on it
    /// — no new connect, no new TLS handshake. Any other connection is closed on the
    /// wire as before; HTTP/2 connections always close (their state lives in the
    /// connection task the runtime drops). What an HTTP/2 origin's next runtime keeps,
    /// with this setting or without, is the knowledge: the manager remembers origins
    /// that chose HTTP/2 by ALPN, and a new client's concurrent first requests to one
    /// of them share the one connection the first of them opens.
    ///
    /// A parked connection stays counted open, obeys `pool_idle_timeout` and the
    /// connection limits, and is closed on the wire by `close_all`, `shutdown` and (in
    /// per-thread mode) its thread's exit ([`CloseReport::parked_closed`]).
    ///
    /// Default is `true`; it has no effect with `keep_alive(false)` or
    /// `pool_max_idle_per_host(0)`.
    ///
    /// [`CloseReport::parked_closed`]: crate::CloseReport::parked_closed
    pub fn carry_idle_connections(mut self, carry: bool) -> Self {
        self.config.carry_idle_connections = carry;
        self
    }

    /// Sets `TCP_NODELAY` on new connections.
    ///
    /// Default is `true`.
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.config.tcp_nodelay = nodelay;
        self
    }

    /// Caches name resolutions for this long, shared by all of the manager's clients
    /// (resolution is the system's, `getaddrinfo`, so `/etc/hosts` and `nsswitch` apply).
    /// `None` resolves on every new connection. [`Stats::dns_lookups`](crate::Stats)
    /// counts the resolutions made.
    ///
    /// Default is `None`. At least 1 ns ([`build`](Builder::build) rejects zero: pass
    /// `None` to turn the cache off); ten years or more (e.g. `Duration::MAX`) caches
    /// for the life of the manager.
    pub fn dns_cache_ttl(mut self, ttl: impl Into<Option<Duration>>) -> Self {
        self.config.dns_cache_ttl = ttl.into();
        self
    }

    /// Speaks HTTP/2 from the first byte on plain `http` connections (h2c), and offers
    /// only `h2` in TLS ALPN.
    ///
    /// Default is off: HTTP/1.1, or HTTP/2 when TLS ALPN negotiates it. Concurrent
    /// requests to an origin known to speak HTTP/2 (by this setting, or because it chose
    /// HTTP/2 by ALPN before, in any client of the manager) share one connection: they
    /// wait for the one the first of them opens.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.config.http2_prior_knowledge = true;
        self
    }

    /// Offers only HTTP/1.1 in TLS ALPN.
    ///
    /// Default is off: `h2` and `http/1.1` are offered, `h2` preferred.
    pub fn http1_only(mut self) -> Self {
        self.config.http1_only = true;
        self
    }

    /// Headers sent on every request that does not set them itself. Replaces earlier
    /// defaults of the same names.
    ///
    /// Default is `User-Agent: rtlocal/<version>`. `Content-Length` and
    /// `Transfer-Encoding` are refused by [`build`](Builder::build): they belong to one
    /// request's body.
    ///
    /// Credentials among them (`Authorization`, `Proxy-Authorization`, `Cookie`, values
    /// marked [sensitive](HeaderValue::set_sensitive)) are not added to requests that
    /// come through the client's tower `Service`, where a redirect layer above could be
    /// sending them to another origin: stack
    /// [`Client::default_credentials_layer`](crate::Client::default_credentials_layer)
    /// above the redirect layer for those.
    pub fn default_headers(mut self, headers: HeaderMap) -> Self {
        let defaults = Arc::make_mut(&mut self.config.default_headers);
        let mut last = None;
        for (name, value) in headers {
            let name = match name {
                Some(n) => {
                    defaults.remove(&n);
                    last = Some(n.clone());
                    n
                }
                None => match &last {
                    Some(n) => n.clone(),
                    None => continue,
                },
            };
            defaults.append(name, value);
        }
        self
    }

    /// The `User-Agent` sent when a request has none. `None` sends none.
    ///
    /// Default is `rtlocal/<version>`.
    pub fn user_agent(mut self, user_agent: Option<&str>) -> Self {
        let defaults = Arc::make_mut(&mut self.config.default_headers);
        match user_agent.map(HeaderValue::from_str) {
            None => {
                defaults.remove(USER_AGENT);
            }
            Some(Ok(v)) => {
                defaults.insert(USER_AGENT, v);
            }
            Some(Err(_)) => self.defer(format!(
                "user_agent {user_agent:?} is not a valid header value"
            )),
        }
        self
    }

    /// Sends requests through an HTTP proxy. Call it again to add more (say, one
    /// [`Proxy::http`] and one [`Proxy::https`]): for each request the first proxy that
    /// covers its scheme and whose [`no_proxy`](Proxy::no_proxy) list does not exempt its
    /// host is used; a request no proxy covers goes direct.
    ///
    /// Any explicit proxy turns off the proxy environment variables (as in reqwest).
    /// [`build`](Builder::build) refuses a proxy URI it cannot use (not `http://`, no
    /// host, a bad port) with an error naming it.
    ///
    /// Default: the environment (see [`no_proxy`](Builder::no_proxy)).
    ///
    /// # Security
    /// `https` requests always go through a `CONNECT` tunnel, then TLS to the origin with
    /// its certificate checked for the origin's name: the proxy sees the host and port,
    /// never the request. Plain `http` requests are sent to the proxy in absolute form,
    /// in cleartext, as the URI says. Proxy credentials go to the proxy only
    /// (`Proxy-Authorization`), never to the origin.
    ///
    /// ```
    /// use rtlocal::Proxy;
    ///
    /// let manager = rtlocal::HttpClientManager::builder()
    ///     .proxy(Proxy::http("http://127.0.0.1:3128"))
    ///     .proxy(Proxy::https("http://user:secret@127.0.0.1:3129").no_proxy("internal.example"))
    ///     .build()?;
    /// # Ok::<(), rtlocal::Error>(())
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        match &mut self.proxy {
            ProxySettings::Explicit(list) => list.push(proxy),
            other => *other = ProxySettings::Explicit(vec![proxy]),
        }
        self
    }

    /// Sends every request direct: no proxy, and the proxy environment variables are not
    /// read. Proxies added with [`proxy`](Builder::proxy) before are dropped (later ones
    /// apply).
    ///
    /// Default (neither this nor [`proxy`](Builder::proxy) called): the environment, read
    /// once by [`build`](Builder::build), as curl, Go and reqwest do: `HTTP_PROXY` for
    /// `http` requests, `HTTPS_PROXY` for `https` requests, `ALL_PROXY` for either when
    /// its own variable is unset, and `NO_PROXY` (host names with their subdomains, IP
    /// addresses, `[::1]` as URLs write it, CIDR blocks, `*`, each optionally with a
    /// port; see [`Proxy::no_proxy`]) to exempt destinations; the upper-case name wins over
    /// the lower-case one.
    ///
    /// The variables never apply to this machine's loopback: `localhost`, `*.localhost`,
    /// 127.0.0.0/8 and `::1` always go direct, whatever `NO_PROXY` says (Go's
    /// `ProxyFromEnvironment` rule). A `HTTP_PROXY` set for a network's proxy cannot
    /// reach a server on loopback, and would see local traffic it has no business seeing.
    /// An explicit [`proxy`](Builder::proxy) applies to loopback too (exempt it with
    /// [`Proxy::no_proxy`]). The managed reqwest clients follow the same rule (see
    /// `ReqwestFactory::client_builder`, feature `reqwest`).
    ///
    /// On by default because that is what these variables are for:
    /// a program on a network that needs a proxy works without code for it, like the
    /// other HTTP clients on the machine. Under CGI (`REQUEST_METHOD` set) they are not
    /// read (httpoxy).
    ///
    /// A variable that is set but unusable (`socks5://`, `https://` to the proxy, no
    /// host, a bad port) is ignored with a `tracing` warning naming it, as if unset: the
    /// environment is shared with every other program, and a value meant for another
    /// tool must not stop this one from building its clients ([`HttpClientManager::new`](crate::HttpClientManager::new)
    /// cannot fail). Ignoring it sends requests direct, where their URI says. To fail
    /// instead, read the variable yourself and pass it to [`proxy`](Builder::proxy).
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxySettings::Off;
        self
    }

    /// Trusts the certificates in `pem` (one or more PEM `CERTIFICATE` blocks), e.g. a
    /// private CA, in addition to the built-in roots.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Self {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            match cert {
                Ok(c) => {
                    self.tls.extra_roots.push(c);
                    found += 1;
                }
                Err(e) => {
                    self.defer(format!("add_root_certificate_pem: invalid PEM: {e}"));
                    return self;
                }
            }
        }
        if found == 0 {
            self.defer("add_root_certificate_pem: no CERTIFICATE block in the PEM".to_owned());
        }
        self
    }

    /// Trusts a DER-encoded certificate, in addition to the built-in roots.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn add_root_certificate_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.tls
            .extra_roots
            .push(rustls::pki_types::CertificateDer::from(der.into()));
        self
    }

    /// `false` trusts only the certificates added with `add_root_certificate_*`.
    ///
    /// Default is `true`: the Mozilla roots (webpki-roots), and with the
    /// `rustls-plus-native-roots` feature also the operating system's store.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_built_in_roots(mut self, enabled: bool) -> Self {
        self.tls.no_built_in_roots = !enabled;
        self
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}
