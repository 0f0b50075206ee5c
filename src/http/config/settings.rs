//! [`Config`]: the resolved settings, and the bounds every setting is held to.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, USER_AGENT};

use crate::http::connect::ProxyRules;
use crate::manager::{Options, Sharing};
use crate::redact;

/// The resolved settings, shared by every client of one manager. `Debug` by hand:
/// default headers go through [`redact::headers`].
#[derive(Clone)]
pub(crate) struct Config {
    /// What reports and metrics call the manager; `None`: `"http"`.
    pub(crate) name: Option<Arc<str>>,
    pub(crate) close_timeout: Duration,
    pub(crate) sharing: Sharing,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) pool_idle_timeout: Option<Duration>,
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_host: Option<usize>,
    pub(crate) keep_alive: bool,
    pub(crate) carry_idle_connections: bool,
    pub(crate) tcp_nodelay: bool,
    pub(crate) dns_cache_ttl: Option<Duration>,
    pub(crate) http2_prior_knowledge: bool,
    pub(crate) http1_only: bool,
    /// Sent when a request has none of the same name (includes `User-Agent`).
    pub(crate) default_headers: Arc<HeaderMap>,
    /// Resolved by `build` (explicit proxies or the environment); `None`: all direct.
    pub(crate) proxies: Option<Arc<ProxyRules>>,
    #[cfg(feature = "rustls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Config {
    /// The settings every manager has, whatever its factory.
    pub(crate) fn options(&self) -> Options {
        Options {
            name: self.name.clone(),
            close_timeout: self.close_timeout,
            sharing: self.sharing,
            ..Options::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut default_headers = HeaderMap::new();
        default_headers.insert(USER_AGENT, default_user_agent());
        Config {
            name: None,
            close_timeout: Duration::from_secs(5),
            sharing: Sharing::PerThread,
            connect_timeout: Some(Duration::from_secs(10)),
            request_timeout: Some(Duration::from_secs(300)),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            max_connections: None,
            max_connections_per_host: None,
            keep_alive: true,
            carry_idle_connections: true,
            tcp_nodelay: true,
            dns_cache_ttl: None,
            http2_prior_knowledge: false,
            http1_only: false,
            default_headers: Arc::new(default_headers),
            proxies: None,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

/// Durations at or beyond this (e.g. `Duration::MAX`) mean "never": hyper-util and
/// `Instant` arithmetic panic on overflow, and ten years is longer than any process
/// waits for a socket.
pub(crate) const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The shortest timeout accepted: tokio's timer counts whole milliseconds, so anything
/// shorter can expire before a loopback connect completes.
pub(super) const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Connection limits at or beyond this mean "unlimited" (tokio's semaphores hold at
/// most this many permits).
pub(crate) const UNLIMITED: usize = tokio::sync::Semaphore::MAX_PERMITS;

fn default_user_agent() -> HeaderValue {
    HeaderValue::from_static(concat!("rtlocal/", env!("CARGO_PKG_VERSION")))
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        d.field("name", &self.name)
            .field("close_timeout", &self.close_timeout)
            .field("sharing", &self.sharing)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_host", &self.max_connections_per_host)
            .field("keep_alive", &self.keep_alive)
            .field("carry_idle_connections", &self.carry_idle_connections)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("dns_cache_ttl", &self.dns_cache_ttl)
            .field("http2_prior_knowledge", &self.http2_prior_knowledge)
            .field("http1_only", &self.http1_only)
            .field("default_headers", &redact::headers(&self.default_headers))
            .field("proxies", &self.proxies);
        #[cfg(feature = "rustls")]
        d.field("tls", &self.tls.is_some());
        d.finish()
    }
}
