//! [`HyperFactory`]: builds the HTTP clients (each a connection pool on hyper) of an
//! [`HttpClientManager`](crate::HttpClientManager), and [`HyperParts`], what each is made of.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::runtime::Handle;

use crate::error::Error;
use crate::http::body::request::Body;
use crate::http::config::Config;
use crate::http::connect::{
    AttemptTimeouts, ConnTracker, DnsCache, Limits, ProxyRules, Resolver, TrackingConnector,
    TrackingExecutor,
};
use crate::http::pool::carry::Lots;
use crate::http::pool::{H2Origins, Pool, SendFuture, Settings};
use crate::manager::{ClientFactory, Counters, RequestGuard, Sharing};
use crate::redact;

/// Builds the HTTP clients of an [`HttpClientManager`](crate::HttpClientManager):
/// one validated [`Config`] for all of them, one DNS cache shared by all of them.
pub(crate) struct HyperFactory {
    config: Config,
    /// Shared by every client: DNS answers do not belong to a runtime.
    dns: Option<Arc<DnsCache>>,
    counters: Arc<Counters>,
    /// Where idle connections wait between runtime generations; `None`: carrying is
    /// off (by [`Builder::carry_idle_connections`], or no connection is kept idle).
    ///
    /// [`Builder::carry_idle_connections`]: crate::Builder::carry_idle_connections
    lots: Option<Arc<Lots>>,
    /// Origins that chose HTTP/2 by ALPN, known to every client (see [`H2Origins`]).
    h2_origins: Arc<H2Origins>,
    /// The default headers, ready for each request (see [`HyperParts`]).
    defaults: Arc<[DefaultHeader]>,
}

/// One default header name, its values, and whether it authenticates.
pub(crate) struct DefaultHeader {
    name: HeaderName,
    values: Vec<HeaderValue>,
    credential: bool,
}

/// What an HTTP client of the manager is made of.
pub(crate) struct HyperParts {
    pub(crate) pool: Arc<Pool>,
    /// The runtime the client's connections live on.
    pub(crate) handle: Handle,
    pub(crate) tracker: Arc<ConnTracker>,
    pub(crate) default_headers: Arc<HeaderMap>,
    /// The same, one entry per name with its values and whether it is a credential:
    /// what each request walks (hashing each name once, not three times).
    defaults: Arc<[DefaultHeader]>,
    /// Only when some plain `http` request may carry proxy credentials.
    proxy_auth: Option<Arc<ProxyRules>>,
    keep_alive: bool,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) counters: Arc<Counters>,
}

/// A request in flight on an HTTP client; ends when the response body finishes or
/// is dropped.
pub(crate) type InFlight = RequestGuard<HyperFactory>;

impl HyperFactory {
    pub(crate) fn new(config: Config, counters: Arc<Counters>) -> Self {
        let carries =
            config.carry_idle_connections && config.keep_alive && config.pool_max_idle_per_host > 0;
        let defaults = config
            .default_headers
            .keys()
            .map(|name| DefaultHeader {
                name: name.clone(),
                values: config
                    .default_headers
                    .get_all(name)
                    .iter()
                    .cloned()
                    .collect(),
                credential: is_credential(&config.default_headers, name),
            })
            .collect();
        HyperFactory {
            defaults,
            dns: config.dns_cache_ttl.map(DnsCache::new),
            lots: carries.then(|| Lots::new(config.sharing == Sharing::PerThread)),
            h2_origins: Arc::default(),
            config,
            counters,
        }
    }
}

impl ClientFactory for HyperFactory {
    type Client = HyperParts;

    async fn build(&self, handle: &Handle) -> Result<HyperParts, Error> {
        let config = &self.config;
        let counters = &self.counters;
        let pooling = config.keep_alive && config.pool_max_idle_per_host > 0;
        let idle_timeout = config.pool_idle_timeout.filter(|_| pooling);
        let tracker = ConnTracker::new(Arc::clone(counters), idle_timeout);
        let mut http =
            HttpConnector::new_with_resolver(Resolver::new(self.dns.clone(), Arc::clone(counters)));
        http.set_nodelay(config.tcp_nodelay);
        http.set_connect_timeout(config.connect_timeout);
        // The connector handles `https` itself (TLS over the tracked socket).
        http.enforce_http(false);
        let connector = TrackingConnector {
            http,
            tracker: Arc::clone(&tracker),
            limits: Limits::new(config.max_connections, config.max_connections_per_host),
            proxies: config.proxies.clone(),
            #[cfg(feature = "rustls")]
            tls: config.tls.clone().map(tokio_rustls::TlsConnector::from),
            timeouts: AttemptTimeouts {
                connect: config.connect_timeout,
                request: config.request_timeout,
            },
        };
        let exec = TrackingExecutor {
            handle: handle.clone(),
            tracker: Arc::clone(&tracker),
        };
        let carry = self.lots.as_ref().map(|lots| {
            let lot = lots.current();
            let (epoch, parked) = lot.take();
            (lot, epoch, parked)
        });
        let settings = Settings {
            max_idle_per_host: if config.keep_alive {
                config.pool_max_idle_per_host
            } else {
                0
            },
            idle_timeout: config.pool_idle_timeout,
            http2_prior_knowledge: config.http2_prior_knowledge,
        };
        let (carry, parked) = match carry {
            Some((lot, epoch, parked)) => (Some((lot, epoch)), parked),
            None => (None, Vec::new()),
        };
        let pool = Pool::new(
            connector,
            exec,
            settings,
            Arc::clone(&self.h2_origins),
            carry,
        );
        if !parked.is_empty() {
            let carried = pool.adopt(parked).await;
            for _ in 0..carried {
                Counters::inc(&counters.connections_carried);
            }
        }
        Ok(HyperParts {
            pool,
            handle: handle.clone(),
            tracker,
            default_headers: Arc::clone(&config.default_headers),
            defaults: Arc::clone(&self.defaults),
            proxy_auth: config.proxies.clone().filter(|p| p.authorizes_http()),
            keep_alive: config.keep_alive,
            request_timeout: config.request_timeout,
            counters: Arc::clone(counters),
        })
    }

    fn close(&self, client: &HyperParts) -> impl std::future::Future<Output = ()> + Send {
        // In-flight requests have drained: shut the idle pooled sockets on the wire, even
        // if the runtime that owns their tasks is idle.
        client.tracker.close();
        std::future::ready(())
    }

    fn abort(&self, client: &HyperParts) {
        client.tracker.close();
    }

    fn release(&self, client: &HyperParts) {
        // Cleanly idle HTTP/1 connections are parked for the next runtime first.
        client.pool.runtime_gone();
        // The runtime is dropping the connection tasks; sockets that outlive them (an
        // upgraded connection the application holds) are shut down here.
        client.tracker.runtime_gone();
    }

    fn close_kept(&self, for_good: bool) -> usize {
        self.lots
            .as_ref()
            .map_or(0, |lots| lots.close_parked(for_good))
    }
}

/// Marks a request that reached the client through its tower `Service`: layers above
/// (a redirect policy above all) may have made it, so default *credentials* are not
/// added to it — a redirect layer strips them on a cross-origin hop, and adding them back
/// below it would hand them to the other origin. [`DefaultCredentialsLayer`] adds them
/// above the layers instead.
///
/// [`DefaultCredentialsLayer`]: crate::DefaultCredentialsLayer
#[derive(Debug, Clone, Copy)]
pub(crate) struct BelowLayers;

/// A default header that authenticates (see [`redact::is_secret_header`]).
pub(crate) fn is_credential(defaults: &HeaderMap, name: &HeaderName) -> bool {
    defaults
        .get_all(name)
        .iter()
        .any(|value| redact::is_secret_header(name, value))
}

impl HyperParts {
    /// Hands the request to the pool, adding the default headers (and
    /// `Connection: close` without keep-alive). Default credentials are not added to a
    /// request that came through the tower `Service` ([`BelowLayers`]).
    #[inline]
    pub(crate) fn send(&self, mut req: Request<Body>) -> SendFuture {
        // Removing from empty extensions neither allocates nor hashes.
        let below_layers = req.extensions_mut().remove::<BelowLayers>().is_some();
        if !self.defaults.is_empty() {
            let headers = req.headers_mut();
            for default in self.defaults.iter() {
                if below_layers && default.credential {
                    continue;
                }
                if let http::header::Entry::Vacant(slot) = headers.entry(&default.name) {
                    let mut values = default.values.iter();
                    if let Some(first) = values.next() {
                        let mut entry = slot.insert_entry(first.clone());
                        for value in values {
                            entry.append(value.clone());
                        }
                    }
                }
            }
        }
        if below_layers {
            // `DefaultCredentialsLayer`'s, for the origin its request addressed.
            crate::http::credentials::add_for_chain(&mut req, &self.default_headers);
        }
        if let Some(proxies) = &self.proxy_auth {
            proxies.authorize(&mut req);
        }
        if !self.keep_alive {
            req.headers_mut()
                .entry(CONNECTION)
                .or_insert(HeaderValue::from_static("close"));
        }
        self.pool.send(req)
    }
}
