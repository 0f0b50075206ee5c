//! [`Proxy`]: an HTTP proxy set on the [`Builder`](crate::Builder), and how the proxy
//! settings (explicit, from the environment, or none) resolve into the rules the
//! connector follows.
//!
//! Matching (which scheme, `NO_PROXY`) is hyper-util's proxy matcher; this file only
//! checks each proxy URI first, because the matcher silently drops what it cannot use
//! (a typo would send requests direct without a word).

use std::fmt;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use http::HeaderValue;
use http::Uri;
use hyper_util::client::proxy::matcher::Matcher;

use crate::error::Error;
use crate::http::connect::{NoProxy, ProxyRule, ProxyRules};
use crate::http::uri::Target;
use crate::redact;

/// An HTTP proxy for the clients of a manager, set with
/// [`Builder::proxy`](crate::Builder::proxy).
///
/// The proxy URI is `http://host:port` (a missing scheme means `http`; a missing port
/// means 80), optionally with `user:password@` (percent-encoded), which is sent to the
/// proxy as a `Proxy-Authorization: Basic` header and never to the origin.
/// [`Builder::build`](crate::Builder::build) refuses anything else (`https://` or
/// `socks5://` proxies, no host, a bad port) with an error naming the proxy.
///
/// `https` requests always go through a `CONNECT` tunnel and TLS to the origin, its
/// certificate checked for the origin's name: the proxy sees only the host and port.
/// Plain `http` requests are sent to the proxy in absolute form (`GET http://host/path`).
///
/// # Examples
///
/// ```
/// use rtlocal::{HttpClientManager, Proxy};
///
/// let manager = HttpClientManager::builder()
///     .proxy(
///         Proxy::all("http://proxy.internal:3128")
///             .basic_auth("user", "secret")
///             .no_proxy("localhost, 127.0.0.1, .svc.cluster.local, 10.0.0.0/8"),
///     )
///     .build()?;
/// # Ok::<(), rtlocal::Error>(())
/// ```
///
/// ```
/// let err = rtlocal::HttpClientManager::builder()
///     .proxy(rtlocal::Proxy::all("socks5://127.0.0.1:1080"))
///     .build()
///     .unwrap_err();
/// assert!(err.is_config());
/// assert!(err.to_string().contains("socks5"));
/// ```
#[derive(Clone)]
pub struct Proxy {
    scope: Scope,
    uri: String,
    auth: Option<HeaderValue>,
    no_proxy: Option<String>,
}

/// Which requests a [`Proxy`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Http,
    Https,
    All,
}

impl Proxy {
    /// A proxy for plain `http://` requests only.
    pub fn http(uri: impl Into<String>) -> Proxy {
        Proxy::new(Scope::Http, uri.into())
    }

    /// A proxy for `https://` requests only (tunnelled with `CONNECT`).
    pub fn https(uri: impl Into<String>) -> Proxy {
        Proxy::new(Scope::Https, uri.into())
    }

    /// A proxy for every request, `http` and `https`.
    pub fn all(uri: impl Into<String>) -> Proxy {
        Proxy::new(Scope::All, uri.into())
    }

    fn new(scope: Scope, uri: String) -> Proxy {
        Proxy {
            scope,
            uri,
            auth: None,
            no_proxy: None,
        }
    }

    /// Credentials for the proxy, sent as `Proxy-Authorization: Basic` (on `CONNECT`,
    /// and on plain `http` requests to the proxy); never sent to the origin. Replaces
    /// any `user:password@` in the proxy URI.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Proxy {
        let encoded = BASE64_STANDARD.encode(format!("{user}:{password}"));
        // Base64 is always a valid header value.
        if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {encoded}")) {
            value.set_sensitive(true);
            self.auth = Some(value);
        }
        self
    }

    /// Destinations that bypass this proxy, in `NO_PROXY` syntax: comma-separated host
    /// names (each also matches its subdomains; a leading dot or `*.` is allowed), IP
    /// addresses (IPv6 bare or in brackets as in a URL: `::1`, `[::1]`), CIDR blocks
    /// (`10.0.0.0/8`, `fd00::/8`), or `*` for everything. An entry with a port
    /// (`[::1]:8080`, `127.0.0.1:8080`, `example.com:443`) exempts that port only, as in
    /// Go.
    ///
    /// Default: none. The `NO_PROXY` variable does not apply to an explicit proxy; pass
    /// its value here to honour it.
    pub fn no_proxy(mut self, list: impl Into<String>) -> Proxy {
        self.no_proxy = Some(list.into());
        self
    }

    /// Checks the URI and makes the rule the connector follows.
    pub(super) fn into_rule(self) -> Result<ProxyRule, Error> {
        let what = match self.scope {
            Scope::Http => "Proxy::http",
            Scope::Https => "Proxy::https",
            Scope::All => "Proxy::all",
        };
        check_uri(&self.uri).map_err(|problem| {
            Error::config(format!(
                "Builder::proxy({what}({:?})): {problem}",
                redacted(&self.uri)
            ))
        })?;
        let no = NoProxy::parse(self.no_proxy.as_deref().unwrap_or_default());
        let builder = Matcher::builder().no(no.matcher_list());
        let uri = self.uri.trim();
        let builder = match self.scope {
            Scope::Http => builder.http(uri),
            Scope::Https => builder.https(uri),
            Scope::All => builder.all(uri),
        };
        let http_auth =
            self.scope != Scope::Https && (self.auth.is_some() || has_userinfo(&self.uri));
        Ok(ProxyRule::new(
            builder.build(),
            no,
            self.auth,
            "Builder::proxy",
            http_auth,
        ))
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("scope", &self.scope)
            .field("uri", &redacted(&self.uri))
            .field("basic_auth", &self.auth.is_some())
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The proxy settings of a [`Builder`](crate::Builder).
#[derive(Clone, Debug, Default)]
pub(super) enum ProxySettings {
    /// Read `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY` at `build`.
    #[default]
    FromEnv,
    /// Only these, in order; the environment is not read.
    Explicit(Vec<Proxy>),
    /// No proxy at all; the environment is not read.
    Off,
}

impl ProxySettings {
    /// The rules the connector follows; `None` when every request goes direct.
    pub(super) fn resolve(self, h2c: bool) -> Result<Option<ProxyRules>, Error> {
        let rules = match self {
            ProxySettings::Off => Vec::new(),
            ProxySettings::Explicit(proxies) => proxies
                .into_iter()
                .map(Proxy::into_rule)
                .collect::<Result<_, _>>()?,
            ProxySettings::FromEnv => env_rule().into_iter().collect(),
        };
        Ok((!rules.is_empty()).then(|| ProxyRules::new(rules, h2c)))
    }
}

/// The proxy variables, in the order and with the precedence curl and hyper-util's
/// `Matcher::from_env` give them: upper case first, then lower case.
const ALL: [&str; 2] = ["ALL_PROXY", "all_proxy"];
const HTTP: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const HTTPS: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
const NO: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The rule the proxy variables of this process make, if they set a usable proxy: what
/// `build` reads by default (and the managed reqwest clients, feature `reqwest`).
pub(crate) fn env_rule() -> Option<ProxyRule> {
    from_env(|name| std::env::var(name).ok())
}

/// The rule the proxy variables make, read through `get` (the real environment outside
/// tests). A variable that is set but unusable is ignored with a warning, as if unset.
fn from_env(get: impl Fn(&str) -> Option<String>) -> Option<ProxyRule> {
    // httpoxy (CVE-2016-5385): under CGI, `HTTP_PROXY` can be a request header the
    // client set. hyper-util's matcher ignores the variables there too.
    if get("REQUEST_METHOD").is_some() {
        tracing::debug!("REQUEST_METHOD is set (CGI): proxy variables are not read");
        return None;
    }
    let first = |names: [&'static str; 2]| {
        names
            .into_iter()
            .find_map(|name| get(name).map(|value| (name, value)))
    };
    let usable = |names: [&'static str; 2]| {
        let (name, value) = first(names)?;
        if value.trim().is_empty() {
            return None;
        }
        match check_uri(&value) {
            Ok(()) => Some((name, value.trim().to_owned())),
            Err(problem) => {
                tracing::warn!(
                    "{name}={:?} is ignored: {problem}; requests it would cover go direct",
                    redacted(&value)
                );
                None
            }
        }
    };
    let all = usable(ALL);
    let http = usable(HTTP).or_else(|| all.clone());
    let https = usable(HTTPS).or_else(|| all.clone());
    if http.is_none() && https.is_none() {
        return None;
    }
    let no = NoProxy::parse(&first(NO).map(|(_, v)| v).unwrap_or_default());
    let (http_from, https_from) = (http.as_ref().map(|h| h.0), https.as_ref().map(|h| h.0));
    let http_auth = http.as_ref().is_some_and(|h| has_userinfo(&h.1));
    let matcher = Matcher::builder()
        .http(http.map(|h| h.1).unwrap_or_default())
        .https(https.map(|h| h.1).unwrap_or_default())
        .no(no.matcher_list())
        .build();
    tracing::debug!(?matcher, "proxies from the environment");
    Some(ProxyRule::from_env(
        matcher, no, http_from, https_from, http_auth,
    ))
}

/// What is wrong with a proxy URI, if anything: only `http://host[:port]` proxies are
/// supported.
fn check_uri(uri: &str) -> Result<(), String> {
    let parsed: Uri = uri
        .trim()
        .parse()
        .map_err(|e| format!("not a proxy URI ({e}); expected http://host:port"))?;
    match parsed.scheme_str() {
        None | Some("http") => {}
        Some("https") => {
            return Err(
                "https:// proxies (TLS to the proxy) are not supported; use an \
                        http:// proxy (https requests still reach the origin over TLS \
                        through a CONNECT tunnel)"
                    .into(),
            );
        }
        Some(s @ ("socks4" | "socks4a" | "socks5" | "socks5h")) => {
            return Err(format!(
                "{s}:// (SOCKS) proxies are not supported; use an http:// proxy"
            ));
        }
        Some(s) => {
            return Err(format!(
                "unsupported proxy scheme {s:?}; use http://host:port"
            ));
        }
    }
    let authority = parsed
        .authority()
        .ok_or_else(|| "no host; expected http://host:port".to_owned())?;
    let host_port = match authority.as_str().split_once('@') {
        Some((_, host_port)) => host_port,
        None => authority.as_str(),
    };
    // The same checks as for any URI this crate connects to: a host, a port in 1..=65535.
    let plain: Uri = format!("http://{host_port}/")
        .parse()
        .map_err(|e| format!("invalid host or port ({e})"))?;
    Target::check(&plain).map_err(|e| e.to_string())?;
    Ok(())
}

/// Whether a (checked) proxy URI carries `user[:password]@`.
fn has_userinfo(uri: &str) -> bool {
    uri.parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().contains('@')))
        .unwrap_or(false)
}

/// A proxy URI for messages: credentials masked ([`redact::text`], the one path).
fn redacted(uri: &str) -> String {
    redact::text(uri)
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn route(rule: &ProxyRule, uri: &str) -> Option<String> {
        rule.route(&uri.parse().expect("uri"))
            .map(|via| via.expect("a valid proxy").proxy_host_port().to_owned())
    }

    #[test]
    fn environment_precedence_and_no_proxy() {
        let rule = from_env(env(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:2"),
            ("https_proxy", "lower-https:3"),
            ("ALL_PROXY", "http://all:4"),
            ("no_proxy", "internal.example, 10.0.0.0/8, ::1"),
        ]))
        .expect("a rule");
        assert_eq!(route(&rule, "http://a.test/").as_deref(), Some("upper:1"));
        assert_eq!(
            route(&rule, "https://a.test/").as_deref(),
            Some("lower-https:3")
        );
        for direct in [
            "http://internal.example/",
            "https://api.internal.example/",
            "http://10.1.2.3:8080/",
            "http://[::1]:8080/",
        ] {
            assert_eq!(
                route(&rule, direct),
                None,
                "{direct} went through the proxy"
            );
        }
        assert_eq!(route(&rule, "http://11.1.2.3/").as_deref(), Some("upper:1"));
        let star = from_env(env(&[
            ("HTTP_PROXY", "p:1"),
            ("NO_PROXY", "example.com, *"),
        ]));
        let star = star.expect("a rule");
        for direct in ["http://a.test/", "http://10.1.2.3/", "http://[fd00::1]:80/"] {
            assert_eq!(
                route(&star, direct),
                None,
                "{direct} went through the proxy"
            );
        }
        assert_eq!(
            route(&rule, "http://notinternal.example/").as_deref(),
            Some("upper:1")
        );

        let all = from_env(env(&[("ALL_PROXY", "p:1"), ("NO_PROXY", "")])).expect("a rule");
        // Never loopback, whatever NO_PROXY says; an explicit proxy does apply to it.
        for direct in [
            "http://localhost:8080/",
            "https://api.localhost/",
            "http://127.0.0.1:8080/",
            "http://127.1.2.3/",
            "http://[::1]/",
        ] {
            assert_eq!(route(&all, direct), None, "{direct} went through the proxy");
        }
        let explicit = Proxy::all("http://p:1").into_rule().expect("rule");
        assert_eq!(
            route(&explicit, "http://127.0.0.1:8080/").as_deref(),
            Some("p:1")
        );
        assert_eq!(
            route(&explicit, "http://localhost/").as_deref(),
            Some("p:1")
        );

        // IPv6 addresses as URLs write them, with and without a port.
        let v6 = from_env(env(&[
            ("HTTP_PROXY", "p:1"),
            ("NO_PROXY", "[fd00::1], [fd00::2]:8080"),
        ]))
        .expect("a rule");
        assert_eq!(route(&v6, "http://[fd00::1]:9/"), None);
        assert_eq!(route(&v6, "http://[fd00::2]:8080/"), None);
        assert_eq!(route(&v6, "http://[fd00::2]:8081/").as_deref(), Some("p:1"));

        let all_only = from_env(env(&[("all_proxy", "http://all:4")])).expect("a rule");
        assert_eq!(route(&all_only, "http://a.test/").as_deref(), Some("all:4"));
        assert_eq!(
            route(&all_only, "https://a.test/").as_deref(),
            Some("all:4")
        );
    }

    #[test]
    fn unusable_variables_are_ignored_and_cgi_reads_none() {
        assert!(from_env(env(&[])).is_none());
        assert!(from_env(env(&[("HTTP_PROXY", "  ")])).is_none());
        for bad in [
            "socks5://127.0.0.1:1080",
            "https://proxy:443",
            "ftp://proxy",
            "http://proxy:99999",
            "http://proxy:0",
            "http://",
            "not a uri",
        ] {
            assert!(
                from_env(env(&[("HTTP_PROXY", bad)])).is_none(),
                "{bad} was used"
            );
        }
        // A bad HTTPS_PROXY falls back to ALL_PROXY, as if unset.
        let rule = from_env(env(&[
            ("HTTPS_PROXY", "socks5h://x:1"),
            ("ALL_PROXY", "http://all:4"),
        ]))
        .expect("a rule");
        assert_eq!(route(&rule, "https://a.test/").as_deref(), Some("all:4"));
        assert!(
            from_env(env(&[
                ("HTTP_PROXY", "http://p:1"),
                ("REQUEST_METHOD", "GET")
            ]))
            .is_none()
        );
    }

    /// An ignored variable is not silent: a warning names it and the problem, and
    /// never shows the password.
    #[test]
    fn an_ignored_variable_is_a_warning_naming_it() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
            type Writer = Captured;
            fn make_writer(&'a self) -> Captured {
                self.clone()
            }
        }

        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        let rule = tracing::subscriber::with_default(subscriber, || {
            from_env(env(&[("https_proxy", "socks5h://me:hunter2@x:1")]))
        });
        assert!(rule.is_none());
        let log = String::from_utf8(captured.0.lock().expect("buffer").clone()).expect("utf8");
        assert!(log.contains("WARN"), "{log}");
        assert!(
            log.contains("https_proxy") && log.contains("SOCKS"),
            "{log}"
        );
        assert!(!log.contains("hunter2"), "{log}");
    }

    #[test]
    fn explicit_proxies_are_checked() {
        for (uri, needle) in [
            ("socks5://127.0.0.1:1080", "SOCKS"),
            ("https://proxy:443", "https:// proxies"),
            ("gopher://proxy", "unsupported proxy scheme"),
            ("http://proxy:65536", "port"),
            ("http://proxy:0", "port"),
            ("http://:8080", "host"),
            ("", "expected http://host:port"),
        ] {
            let err = Proxy::all(uri).into_rule().err().map(|e| e.to_string());
            let err = err.unwrap_or_else(|| panic!("{uri:?} was accepted"));
            assert!(err.contains("Proxy::all"), "{err}");
            assert!(err.contains(needle), "{uri:?}: {err}");
        }
        for ok in [
            "http://p:3128",
            "p:3128",
            "http://u:p%40ss@p:3128",
            "http://[::1]:3128",
        ] {
            assert!(Proxy::all(ok).into_rule().is_ok(), "{ok} was refused");
        }
    }

    #[test]
    fn credentials_are_redacted_and_become_basic_auth() {
        let err = Proxy::https("socks5://user:hunter2@p:1")
            .into_rule()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            !err.contains("hunter2") && err.contains("user:***@p:1"),
            "{err}"
        );
        let shown = format!(
            "{:?}",
            Proxy::all("http://user:hunter2@p:1").basic_auth("a", "b")
        );
        assert!(!shown.contains("hunter2"), "{shown}");

        let uri: Uri = "http://origin.test/".parse().expect("uri");
        let from_uri = Proxy::all("http://Aladdin:open%20sesame@p:1")
            .into_rule()
            .expect("rule");
        let via = from_uri.route(&uri).expect("proxied").expect("valid");
        // base64("Aladdin:open sesame")
        assert_eq!(
            via.auth().map(HeaderValue::as_bytes),
            Some(&b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="[..])
        );
        let explicit = Proxy::all("http://x:y@p:1")
            .basic_auth("Aladdin", "open sesame")
            .into_rule()
            .expect("rule");
        let via = explicit.route(&uri).expect("proxied").expect("valid");
        assert_eq!(
            via.auth().map(HeaderValue::as_bytes),
            Some(&b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="[..])
        );
    }
}
