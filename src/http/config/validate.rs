//! [`Builder::into_config`]: every setting checked against its range, or clamped as its
//! setter documents, so nothing downstream sees a value it panics on.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::http::config::builder::Builder;
use crate::http::config::settings::{Config, FOREVER, MIN_TIMEOUT, UNLIMITED};

impl Builder {
    /// Validates and resolves the settings; [`build`](Builder::build) makes the manager.
    pub(crate) fn into_config(mut self) -> Result<Config, Error> {
        if let Some(msg) = self.deferred_error.take() {
            return Err(Error::config(msg));
        }
        self.clamp();
        let c = &self.config;
        c.options().validate()?;
        for (name, value, off) in [
            (
                "connect_timeout",
                c.connect_timeout,
                "pass None to turn it off",
            ),
            (
                "request_timeout",
                c.request_timeout,
                "pass None to turn it off",
            ),
            (
                "pool_idle_timeout",
                c.pool_idle_timeout,
                "pass None to keep idle connections, or pool_max_idle_per_host(0) to \
                 disable pooling",
            ),
            (
                "dns_cache_ttl",
                c.dns_cache_ttl,
                "pass None to turn the cache off",
            ),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(Error::config(format!(
                    "{name} must be greater than zero (got 0s); {off}"
                )));
            }
        }
        for (name, value) in [
            ("connect_timeout", c.connect_timeout),
            ("request_timeout", c.request_timeout),
        ] {
            if let Some(d) = value.filter(|d| *d < MIN_TIMEOUT) {
                return Err(Error::config(format!(
                    "{name} must be at least {MIN_TIMEOUT:?} (got {d:?}): tokio's timer counts \
                     whole milliseconds; pass None to turn it off"
                )));
            }
        }
        for (name, value) in [
            ("max_connections", c.max_connections),
            ("max_connections_per_host", c.max_connections_per_host),
        ] {
            if value == Some(0) {
                return Err(Error::config(format!(
                    "{name} must be at least 1 (got 0): no request could ever connect"
                )));
            }
        }
        if let (Some(total), Some(per_host)) = (c.max_connections, c.max_connections_per_host) {
            if per_host > total {
                return Err(Error::config(format!(
                    "max_connections_per_host ({per_host}) is greater than max_connections \
                     ({total}); it could never be reached"
                )));
            }
        }
        if !c.keep_alive && self.pool_max_idle_set && c.pool_max_idle_per_host > 0 {
            return Err(Error::config(format!(
                "keep_alive(false) contradicts pool_max_idle_per_host({}): without keep-alive \
                 no connection is kept idle",
                c.pool_max_idle_per_host
            )));
        }
        for name in [
            http::header::CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
        ] {
            if c.default_headers.contains_key(&name) {
                return Err(Error::config(format!(
                    "default_headers must not set {name}: it describes one request's body, \
                     and a wrong value makes the server wait for bytes that never come; set \
                     it on the request, or let the client compute it"
                )));
            }
        }
        if c.default_headers
            .contains_key(http::header::PROXY_AUTHORIZATION)
        {
            return Err(Error::config(
                "default_headers must not set proxy-authorization: a default header goes to \
                 every origin (inside https tunnels, and to hosts NO_PROXY sends direct), not \
                 to the proxy alone; give the proxy its credentials with Proxy::basic_auth or \
                 in the proxy URI, which send them to the proxy only",
            ));
        }
        if c.http2_prior_knowledge && c.http1_only {
            return Err(Error::config(
                "http2_prior_knowledge() contradicts http1_only(): choose one",
            ));
        }
        let h2c = c.http2_prior_knowledge;
        self.config.proxies = std::mem::take(&mut self.proxy).resolve(h2c)?.map(Arc::new);
        #[cfg(feature = "rustls")]
        {
            self.config.tls = Some(self.tls_config()?);
        }
        Ok(self.config)
    }

    /// Applies the documented "means never / unlimited" rules, so nothing downstream
    /// (tokio semaphores, `Instant` arithmetic in hyper-util) sees a value it panics on.
    fn clamp(&mut self) {
        let c = &mut self.config;
        let never = |d: Option<Duration>| d.filter(|d| *d < FOREVER);
        c.connect_timeout = never(c.connect_timeout);
        c.request_timeout = never(c.request_timeout);
        c.pool_idle_timeout = never(c.pool_idle_timeout);
        c.dns_cache_ttl = c.dns_cache_ttl.map(|d| d.min(FOREVER));
        c.close_timeout = c.close_timeout.min(FOREVER);
        let unlimited = |n: Option<usize>| n.filter(|&n| n < UNLIMITED);
        c.max_connections = unlimited(c.max_connections);
        c.max_connections_per_host = unlimited(c.max_connections_per_host);
    }

    #[cfg(feature = "rustls")]
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        if !self.tls.no_built_in_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            #[cfg(feature = "rustls-plus-native-roots")]
            {
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    // A malformed system certificate is skipped, as browsers do.
                    let _ = roots.add(cert);
                }
            }
        }
        for (i, cert) in self.tls.extra_roots.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| {
                Error::config(format!(
                    "add_root_certificate_*: root certificate #{i} is not a usable CA ({e}); \
                     pass a CA certificate in DER or PEM form"
                ))
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS protocol versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = if self.config.http2_prior_knowledge {
            vec![b"h2".to_vec()]
        } else if self.config.http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        Ok(Arc::new(tls))
    }
}
