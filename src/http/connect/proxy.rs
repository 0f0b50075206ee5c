//! Connecting through an HTTP proxy: [`ProxyRules`] (which requests go through which
//! proxy: hyper-util's matcher, `NO_PROXY` included), and the two ways through it.
//!
//! * `http` requests: a tracked TCP connection to the proxy, marked
//!   `Connected::proxy(true)` so hyper-util writes each request in absolute form
//!   (`GET http://origin/path`); the proxy credentials go in a `Proxy-Authorization`
//!   header added to those requests ([`ProxyRules::authorize`]).
//! * `https` requests: a tracked TCP connection to the proxy, a `CONNECT origin:port`
//!   (hyper-util's [`Tunnel`], credentials on the `CONNECT` only), then TLS to the origin
//!   over the tunnel. Nothing of an `https` request is ever written to the proxy in
//!   cleartext.
//!
//! Either way the socket to the proxy is a tracked socket holding the connection-limit
//! permits of the origin, so close, `shutdown`, the limits and the stats treat it as a
//! direct connection.

use std::fmt;

use http::header::PROXY_AUTHORIZATION;
use http::{HeaderValue, Request, Uri};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};

use crate::error::BoxError;
use crate::http::connect::connector::{OpenTcp, connect_uri};
use crate::http::connect::no_proxy::{NoProxy, is_loopback};
use crate::http::connect::socket::TrackedTcp;
use crate::http::uri::Target;

/// The proxy rules of a manager, consulted in order: the first that matches a request's
/// destination routes it. Built once, by `Builder::build`.
#[derive(Debug)]
pub(crate) struct ProxyRules {
    rules: Vec<ProxyRule>,
    /// `http2_prior_knowledge`: h2c cannot be forwarded by an HTTP/1.1 proxy.
    h2c: bool,
    /// Whether some rule has credentials for plain `http` requests (the request path
    /// looks only then).
    http_auth: bool,
}

/// One proxy setting: a matcher (proxy per scheme, `NO_PROXY`) and its credentials.
pub(crate) struct ProxyRule {
    matcher: Matcher,
    /// The `NO_PROXY` list; its entries without a port are also in `matcher`.
    no: NoProxy,
    /// Proxy variables never apply to loopback (Go's rule); an explicit proxy does.
    loopback_direct: bool,
    /// `Proxy::basic_auth`, which wins over credentials in the proxy URI.
    auth: Option<HeaderValue>,
    /// Where the setting came from, for messages (`HTTP_PROXY`, `Builder::proxy`).
    from_http: &'static str,
    from_https: &'static str,
    /// Whether plain `http` requests it proxies carry credentials.
    http_auth: bool,
}

/// Where one connection goes: the proxy, and what to tell it.
pub(crate) struct Via {
    /// `http://host:port/`, the port explicit.
    addr: Uri,
    host_port: String,
    auth: Option<HeaderValue>,
    from: &'static str,
    /// `http2_prior_knowledge`: refuse to forward h2c.
    h2c: bool,
}

impl ProxyRule {
    /// `http_auth`: whether it has credentials for plain `http` requests.
    pub(crate) fn new(
        matcher: Matcher,
        no: NoProxy,
        auth: Option<HeaderValue>,
        from: &'static str,
        http_auth: bool,
    ) -> Self {
        ProxyRule {
            matcher,
            no,
            loopback_direct: false,
            auth,
            from_http: from,
            from_https: from,
            http_auth,
        }
    }

    /// The rule of the proxy variables; `http`/`https`: the variable each scheme's proxy
    /// came from.
    pub(crate) fn from_env(
        matcher: Matcher,
        no: NoProxy,
        http: Option<&'static str>,
        https: Option<&'static str>,
        http_auth: bool,
    ) -> Self {
        ProxyRule {
            matcher,
            no,
            loopback_direct: true,
            auth: None,
            from_http: http.unwrap_or("the environment"),
            from_https: https.unwrap_or("the environment"),
            http_auth,
        }
    }

    /// The proxy (as the matcher gives it) for `dst`, if this rule sends it through one.
    pub(crate) fn intercept(&self, dst: &Uri) -> Option<Intercept> {
        let canonical = canonical(dst);
        let via = self.intercept_as_written(canonical.as_ref())?;
        // A `NO_PROXY` entry written with the trailing dot or the mapped form matches
        // the host as written: exempt by either spelling.
        match canonical {
            std::borrow::Cow::Owned(_) => self.intercept_as_written(dst).map(|_| via),
            std::borrow::Cow::Borrowed(_) => Some(via),
        }
    }

    fn intercept_as_written(&self, dst: &Uri) -> Option<Intercept> {
        if self.loopback_direct && is_loopback(dst) {
            return None;
        }
        if self.no.exempts_by_port(dst) {
            return None;
        }
        self.matcher.intercept(dst)
    }

    /// The proxy for `dst`, if this rule sends it through one.
    pub(crate) fn route(&self, dst: &Uri) -> Option<Result<Via, BoxError>> {
        let intercept = self.intercept(dst)?;
        let from = if dst
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            self.from_https
        } else {
            self.from_http
        };
        let auth = self
            .auth
            .clone()
            .or_else(|| intercept.basic_auth().cloned());
        // Checked at build; checked again rather than ever falling back to direct.
        let via = match Target::check(intercept.uri()) {
            Ok(t) if !t.https => {
                let host_port = t.host_port();
                format!("http://{host_port}/")
                    .parse::<Uri>()
                    .map(|addr| Via {
                        addr,
                        host_port,
                        auth,
                        from,
                        h2c: false,
                    })
                    .map_err(|e| BoxError::from(format!("proxy from {from}: {e}")))
            }
            Ok(_) => Err(BoxError::from(format!(
                "proxy from {from}: https:// proxies are not supported"
            ))),
            Err(e) => Err(BoxError::from(format!("proxy from {from}: {e}"))),
        };
        Some(via)
    }
}

/// `dst` as the proxy and `NO_PROXY` rules compare it: its host lowercased, one trailing
/// dot dropped (`localhost.` is `localhost`) and an IPv4-mapped IPv6 address written as
/// IPv4 (`[::ffff:127.0.0.1]` is `127.0.0.1`). hyper-util's matcher compares the host as
/// written, so without this `NO_PROXY=localhost` would send `http://localhost.:8080/`
/// through the proxy. (`Target` already refuses shorthand IPv4 forms such as `127.1`.)
fn canonical(dst: &Uri) -> std::borrow::Cow<'_, Uri> {
    use std::borrow::Cow;
    let Some(host) = dst.host() else {
        return Cow::Borrowed(dst);
    };
    let mapped = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
        .and_then(|v6| v6.to_ipv4_mapped());
    let name = match mapped {
        Some(v4) => v4.to_string(),
        None if host.ends_with('.') || host.bytes().any(|b| b.is_ascii_uppercase()) => {
            host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
        }
        None => return Cow::Borrowed(dst),
    };
    if name == host {
        return Cow::Borrowed(dst);
    }
    let scheme = dst.scheme_str().unwrap_or("http");
    let authority = match dst.port_u16() {
        Some(port) => format!("{name}:{port}"),
        None => name,
    };
    match format!("{scheme}://{authority}/").parse() {
        Ok(uri) => Cow::Owned(uri),
        Err(_) => Cow::Borrowed(dst),
    }
}

impl fmt::Debug for ProxyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The matcher shows proxy addresses, never credentials.
        f.debug_struct("ProxyRule")
            .field("matcher", &self.matcher)
            .field("no_proxy_by_port", &self.no)
            .field("loopback_direct", &self.loopback_direct)
            .field("basic_auth", &self.auth.is_some())
            .field("from_http", &self.from_http)
            .field("from_https", &self.from_https)
            .finish()
    }
}

impl ProxyRules {
    pub(crate) fn new(rules: Vec<ProxyRule>, h2c: bool) -> Self {
        let http_auth = rules.iter().any(|r| r.http_auth);
        ProxyRules {
            rules,
            h2c,
            http_auth,
        }
    }

    /// The proxy for `dst` (a checked `scheme://host:port` URI), if any.
    pub(crate) fn route(&self, dst: &Uri) -> Option<Result<Via, BoxError>> {
        let via = self.rules.iter().find_map(|rule| rule.route(dst))?;
        Some(via.map(|via| Via {
            h2c: self.h2c,
            ..via
        }))
    }

    /// Whether some plain `http` request may need a `Proxy-Authorization` header.
    pub(crate) fn authorizes_http(&self) -> bool {
        self.http_auth
    }

    /// Adds `Proxy-Authorization` to a plain `http` request that goes through a proxy
    /// with credentials (unless the request sets it). Never on `https`: that request
    /// travels inside the tunnel, to the origin.
    ///
    /// The proxy is chosen from the same URI the connector chooses from
    /// ([`connect_uri`]), so the two cannot disagree: credentials added here always go
    /// to the proxy.
    pub(crate) fn authorize<B>(&self, req: &mut Request<B>) {
        if req.headers().contains_key(PROXY_AUTHORIZATION) {
            return;
        }
        let Ok(target) = Target::check(req.uri()) else {
            return; // refused before anything is sent
        };
        if target.https {
            return;
        }
        let Ok(dst) = connect_uri(&target) else {
            return;
        };
        if let Some(Ok(Via {
            auth: Some(auth), ..
        })) = self.route(&dst)
        {
            req.headers_mut().insert(PROXY_AUTHORIZATION, auth);
        }
    }
}

impl Via {
    /// The proxy's `host:port`.
    #[cfg(test)]
    pub(crate) fn proxy_host_port(&self) -> &str {
        &self.host_port
    }

    #[cfg(test)]
    pub(crate) fn auth(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    /// Names the proxy and where it was set, for connect errors.
    fn describe(&self, origin: &str) -> String {
        format!("proxy {} (from {}) for {origin}", self.host_port, self.from)
    }
}

/// A plain `http` connection through the proxy: TCP to the proxy, on which hyper-util
/// writes requests in absolute form.
pub(super) async fn forward(
    via: &Via,
    mut open: OpenTcp,
    origin: &str,
) -> Result<TrackedTcp, BoxError> {
    if via.h2c {
        return Err(BoxError::from(format!(
            "http2_prior_knowledge (h2c) cannot go through {}: an HTTP proxy forwards \
             HTTP/1.1; exempt the host with no_proxy or NO_PROXY, or drop \
             http2_prior_knowledge",
            via.describe(origin)
        )));
    }
    open.peer = via.describe(origin);
    open.open(via.addr.clone()).await
}

/// An `https` connection through the proxy: TCP to the proxy, then `CONNECT` to `dst`;
/// the caller runs TLS to the origin over the tunnel.
pub(super) async fn tunnel(
    via: Via,
    mut open: OpenTcp,
    dst: Uri,
    origin: &str,
) -> Result<TrackedTcp, BoxError> {
    let what = via.describe(origin);
    open.peer = what.clone();
    let mut tunnel = Tunnel::new(via.addr, open);
    if let Some(auth) = via.auth {
        tunnel = tunnel.with_auth(auth);
    }
    match tower_service::Service::call(&mut tunnel, dst).await {
        Ok(io) => Ok(io.into_inner()),
        Err(e) => Err(Box::new(TunnelFailed {
            what,
            source: e.into(),
        })),
    }
}

/// A `CONNECT` tunnel that could not be opened (the proxy unreachable, refusing, or
/// asking for credentials); the cause stays in the chain.
#[derive(Debug)]
struct TunnelFailed {
    what: String,
    source: BoxError,
}

impl fmt::Display for TunnelFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CONNECT through {} failed", self.what)
    }
}

impl std::error::Error for TunnelFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    fn rules(no: &str) -> ProxyRules {
        let no = NoProxy::parse(no);
        let matcher = Matcher::builder()
            .all("http://user:pass@proxy.test:3128")
            .no(no.matcher_list())
            .build();
        ProxyRules::new(vec![ProxyRule::new(matcher, no, None, "test", true)], false)
    }

    fn authorized(rules: &ProxyRules, uri: &str, preset: bool) -> Option<String> {
        let mut req = Request::get(uri).body(()).expect("request");
        if preset {
            req.headers_mut()
                .insert(PROXY_AUTHORIZATION, HeaderValue::from_static("mine"));
        }
        rules.authorize(&mut req);
        req.headers()
            .get(PROXY_AUTHORIZATION)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }

    /// Other spellings of an exempt host are exempt too: a trailing dot, capitals, an
    /// IPv4-mapped IPv6 address.
    #[test]
    fn no_proxy_holds_for_other_spellings_of_a_host() {
        let exempting = rules("localhost, 127.0.0.1, example.com");
        for uri in [
            "http://localhost:8080/",
            "http://localhost.:8080/",
            "http://LOCALHOST.:8080/",
            "http://127.0.0.1:8080/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://example.com./",
            "https://Example.COM.:443/",
        ] {
            let dst: Uri = uri.parse().expect("uri");
            assert!(
                exempting.route(&dst).is_none(),
                "{uri} went through the proxy"
            );
        }
        for uri in ["http://example.org./", "http://[::ffff:127.0.0.2]/"] {
            let dst: Uri = uri.parse().expect("uri");
            assert!(exempting.route(&dst).is_some(), "{uri} went direct");
        }
        // Entries written with the dot or the mapped form still exempt those spellings.
        let rules = rules("example.com., ::ffff:127.0.0.2");
        for uri in ["http://example.com./", "http://[::ffff:127.0.0.2]/"] {
            let dst: Uri = uri.parse().expect("uri");
            assert!(rules.route(&dst).is_none(), "{uri} went through the proxy");
        }
    }

    /// Credentials go on plain `http` requests through the proxy only: never on `https`
    /// (it would travel inside the tunnel to the origin), never on a request that
    /// bypasses the proxy, and never over the request's own header.
    #[test]
    fn proxy_authorization_only_where_the_proxy_sees_it() {
        let rules = rules("direct.test, 10.0.0.0/8");
        let basic = Some("Basic dXNlcjpwYXNz".to_owned()); // user:pass
        assert!(rules.authorizes_http());
        assert_eq!(authorized(&rules, "http://origin.test/x", false), basic);
        assert_eq!(
            authorized(&rules, "HTTP://Origin.TEST:8080/x", false),
            basic
        );
        assert_eq!(authorized(&rules, "https://origin.test/x", false), None);
        assert_eq!(authorized(&rules, "http://direct.test/x", false), None);
        assert_eq!(authorized(&rules, "http://api.DIRECT.test/x", false), None);
        assert_eq!(authorized(&rules, "http://10.1.2.3/x", false), None);
        assert_eq!(authorized(&rules, "ftp://origin.test/x", false), None);
        assert_eq!(
            authorized(&rules, "http://origin.test/x", true).as_deref(),
            Some("mine")
        );
    }
}
