//! Where a request goes: the one check every URI passes before a socket is opened.
//!
//! hyper-util's connector sends anything that is not `https` as plain HTTP and falls
//! back to port 80 when the port does not parse (`:99999`), so a typo (`htps://`), an
//! `ftp://` or `ws://` URI or an out-of-range port would go out in cleartext, or to a
//! port the URI never named. [`Target::of`] refuses all of that: it runs at request
//! entry (with the URI as the user wrote it) and again in the connector (defense in
//! depth), and the connector connects to the [`Target`] it returns, never to a default
//! it made up. It is public so that every connector of the workspace (the integration
//! crates' too) dials through the same check.

use std::fmt;

use http::Uri;

use crate::error::{Error, Kind};
use crate::redact::{self, clip};

/// The server a URI names: a checked scheme (`http` or `https`), host and port.
///
/// The only way to get one is [`Target::of`], which refuses every URI that does not say
/// exactly where to connect: a connector that dials a `Target`'s [`host`](Target::host)
/// and [`port`](Target::port) (or its [`origin`](Target::origin)) cannot reach a port,
/// scheme or host the URI did not name. Whether `https` is then spoken over TLS is the
/// connector's business: refuse it when you cannot ([`Target::is_https`]).
///
/// ```
/// use rtlocal::Target;
///
/// let uri: http::Uri = "http://127.0.0.1:8080/path".parse().unwrap();
/// let target = Target::of(&uri)?;
/// assert_eq!((target.is_https(), target.host(), target.port()), (false, "127.0.0.1", 8080));
/// assert_eq!(target.origin().to_string(), "http://127.0.0.1:8080/");
///
/// // `http` reads an out-of-range port as "no port"; a connector would then dial 80.
/// let uri: http::Uri = "http://127.0.0.1:99999/".parse().unwrap();
/// let err = Target::of(&uri).unwrap_err();
/// assert!(err.is_invalid_uri());
/// assert!(err.to_string().contains("port \"99999\""));
/// # Ok::<(), rtlocal::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub(crate) https: bool,
    /// As in the URI; IPv6 literals keep their brackets.
    pub(crate) host: &'a str,
    pub(crate) port: u16,
}

/// Why a URI was refused. `Display` names the offending part and says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UriError {
    /// No scheme and no host: a relative reference such as `/path`.
    Relative { uri: String },
    /// A host (authority) but no scheme, such as `example.com:8080`.
    NoScheme { uri: String },
    /// A scheme but no host.
    NoHost { uri: String },
    /// A scheme other than `http` or `https`.
    Scheme { scheme: String, uri: String },
    /// A port that is not a number from 1 to 65535, or a colon with no port after it.
    Port { port: String, uri: String },
    /// `user:password@` in the authority.
    UserInfo { uri: String },
    /// A host that does not name one server unambiguously: brackets around something
    /// that is not an IPv6 address, or an IPv4 address in a form other than four
    /// decimal numbers.
    Host {
        host: String,
        why: &'static str,
        uri: String,
    },
    /// `https` in a build without TLS.
    NoTls { uri: String },
}

impl<'a> Target<'a> {
    /// Checks `uri` and returns where it points.
    ///
    /// # Errors
    /// [`Error::is_invalid_uri`], the message naming what is wrong (credentials masked):
    /// a relative URI, a missing scheme or host, a scheme other than `http`/`https`, a
    /// port outside 1..=65535, not digits, or empty (`host:`), credentials
    /// (`user:password@`) in the URI, which are refused rather than silently dropped, or
    /// a host that does not name one server unambiguously: brackets around anything but
    /// an IPv6 address (`[localhost]`), or an IPv4 address not written as four decimal
    /// numbers (`127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.0.0.1.`), which
    /// resolvers read as an address the proxy and `NO_PROXY` rules would not recognise.
    pub fn of(uri: &'a Uri) -> Result<Target<'a>, Error> {
        Target::parse(uri).map_err(Error::from)
    }

    /// Whether the scheme is `https` (TLS is the connector's to set up, or refuse).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host as the URI has it; an IPv6 literal keeps its brackets (`[::1]`).
    pub fn host(&self) -> &'a str {
        self.host
    }

    /// The port: the URI's, or the scheme's default (80, 443) when it names none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `scheme://host:port/`, the port always explicit: hand this to a connector that
    /// would otherwise fall back to a default port of its own.
    pub fn origin(&self) -> Uri {
        let scheme = if self.https { "https" } else { "http" };
        // A checked host and port always make a valid URI; `parse` keeps this total.
        format!("{scheme}://{}:{}/", self.host, self.port)
            .parse()
            .unwrap_or_else(|_| Uri::from_static("http://invalid.invalid:1/"))
    }

    /// [`Target::parse`], and `https` refused when this build has no TLS: the check
    /// the crate's own client and connector run.
    pub(crate) fn check(uri: &'a Uri) -> Result<Target<'a>, UriError> {
        let target = Target::parse(uri)?;
        if target.https && !cfg!(feature = "rustls") {
            return Err(UriError::NoTls {
                uri: redact::uri(uri),
            });
        }
        Ok(target)
    }

    fn parse(uri: &'a Uri) -> Result<Target<'a>, UriError> {
        let (scheme, authority) = match (uri.scheme_str(), uri.authority()) {
            (None, None) => return Err(UriError::Relative { uri: shown(uri) }),
            (None, Some(_)) => return Err(UriError::NoScheme { uri: shown(uri) }),
            (Some(_), None) => return Err(UriError::NoHost { uri: shown(uri) }),
            (Some(s), Some(a)) => (s, a.as_str()),
        };
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(UriError::Scheme {
                scheme: fragment(uri, scheme),
                uri: shown(uri),
            });
        };
        // Credentials are refused rather than dropped: parsers disagree about where a
        // host ends in `a:b@c` forms, and the user meant them to be sent.
        if authority.bytes().any(|b| b == b'@') {
            return Err(UriError::UserInfo { uri: shown(uri) });
        }
        let (host, port) = split_host_port(authority);
        if host.is_empty() || host == "[]" {
            return Err(UriError::NoHost { uri: shown(uri) });
        }
        if let Some(why) = host_problem(host) {
            return Err(UriError::Host {
                host: fragment(uri, host),
                why,
                uri: shown(uri),
            });
        }
        let port = match port {
            // `host:` with nothing after the colon is refused: RFC 3986 reads it as the
            // default port, but it is more often a port lost in string formatting.
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => parse_port(p).ok_or_else(|| UriError::Port {
                port: fragment(uri, p),
                uri: shown(uri),
            })?,
        };
        Ok(Target { https, host, port })
    }

    /// `host:port`, the key of the per-host connection limit.
    pub(crate) fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host without IPv6 brackets (`::1`): the TLS server name, or what a resolver
    /// takes.
    pub fn bare_host(&self) -> &'a str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(self.host)
    }
}

/// Splits an authority without userinfo into host and the text after the port colon.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        // IPv6 literal: the port colon, if any, follows the closing bracket.
        return match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                match rest {
                    "" => (host, None),
                    // Anything but `:port` after the bracket is not a port: refused.
                    _ => (host, Some(rest.strip_prefix(':').unwrap_or(rest))),
                }
            }
            None => (authority, None),
        };
    }
    // A byte loop, not `rsplit_once(':')`: an authority is short, and the searcher
    // behind `rsplit_once` costs more than the scan on every request.
    match authority.bytes().rposition(|b| b == b':') {
        Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
        None => (authority, None),
    }
}

/// Why `host` does not name one server unambiguously, if it does not.
///
/// * Brackets enclose an IPv6 address (with a `%25` zone, or not) and nothing else: the
///   URI parser takes `[localhost]` or `a[:]b`, and the connector would dial a host the
///   check never saw.
/// * A host whose last label is a number is an IPv4 address (the WHATWG URL rule, and
///   `inet_aton`'s, which resolvers follow): `127.1`, `2130706433`, `0x7f.1` and
///   `0177.0.0.1` all reach 127.0.0.1. Only four decimal numbers are taken, so that the
///   proxy, `NO_PROXY` and loopback rules, which compare that form, see where the
///   connection goes.
fn host_problem(host: &str) -> Option<&'static str> {
    const BRACKET: &str = "has a bracket outside an IPv6 address: brackets enclose IPv6 \
                           addresses only, as in [::1]";
    const NOT_A_QUAD: &str = "is an IPv4 address in a shorthand, hex, octal or dotted-end \
                              form, which resolvers read differently: write it as four \
                              decimal numbers, as in 127.0.0.1";
    if let Some(rest) = host.strip_prefix('[') {
        let Some(inner) = rest.strip_suffix(']') else {
            return Some("opens a bracket it does not close where the host ends");
        };
        let address = inner
            .split_once("%25")
            .map_or(inner, |(address, _)| address);
        return match address.parse::<std::net::Ipv6Addr>() {
            Ok(_) => None,
            Err(_) => Some(
                "has brackets around something that is not an IPv6 address: brackets \
                 enclose IPv6 addresses only, as in [::1]",
            ),
        };
    }
    // By hand: this runs on every request. An IPv4 address as it should be written is
    // done with in one pass; a name fails that pass at its first letter.
    if is_dotted_quad(host.as_bytes()) {
        return None;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let mut label = 0; // where the last label starts
    for (i, b) in name.bytes().enumerate() {
        match b {
            b'[' | b']' => return Some(BRACKET),
            b'.' => label = i + 1,
            _ => {}
        }
    }
    let last = &name.as_bytes()[label..];
    let hex = last.len() >= 2
        && last[..2].eq_ignore_ascii_case(b"0x")
        && last[2..].iter().all(u8::is_ascii_hexdigit);
    let numeric = !last.is_empty() && (hex || last.iter().all(u8::is_ascii_digit));
    // Numeric, and not the quad taken above (`127.0.0.1.` is not taken either).
    if numeric {
        return Some(NOT_A_QUAD);
    }
    None
}

/// Four decimal numbers from 0 to 255, without leading zeros, joined by dots (what
/// `Ipv4Addr::from_str` takes, at a fraction of its cost).
fn is_dotted_quad(text: &[u8]) -> bool {
    let (mut dots, mut value, mut digits, mut leading_zero) = (0, 0u32, 0, false);
    for &b in text {
        if b == b'.' {
            if digits == 0 || dots == 3 {
                return false;
            }
            (dots, value, digits) = (dots + 1, 0, 0);
            continue;
        }
        if !b.is_ascii_digit() || (digits == 1 && leading_zero) {
            return false;
        }
        leading_zero = digits == 0 && b == b'0';
        value = value * 10 + u32::from(b - b'0');
        digits += 1;
        if value > 255 {
            return false;
        }
    }
    dots == 3 && digits > 0
}

/// A port is ASCII digits naming 1..=65535 (`u16::from_str` alone would take `+80`).
/// By hand: it runs on every request, and `u16::from_str` costs several times more.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() {
        return None;
    }
    let mut port: u32 = 0;
    for b in text.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        // Clamped past u16::MAX (so leading zeros still parse and nothing overflows).
        port = (port * 10 + u32::from(b - b'0')).min(0x1_0000);
    }
    u16::try_from(port).ok().filter(|&p| p != 0)
}

/// The URI as an error shows it: credentials masked, long URIs clipped.
fn shown(uri: &Uri) -> String {
    redact::uri(uri)
}

/// A piece of the URI (a port, a scheme) for an error: hidden when the URI has an `@`
/// anywhere, where the piece may be part of a password (`http://u:pass/x@host/` parses
/// with the port `pass`).
fn fragment(uri: &Uri, piece: &str) -> String {
    let text = uri.to_string();
    match text.split_once("://") {
        Some((_, rest)) if rest.contains('@') => "***".to_owned(),
        _ => clip(piece).into_owned(),
    }
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriError::Relative { uri } => write!(
                f,
                "{uri:?} is relative (no scheme, no host): give an absolute URI such as \
                 http://host:port/path"
            ),
            UriError::NoScheme { uri } => write!(
                f,
                "{uri:?} has no scheme: start it with http:// or https://"
            ),
            UriError::NoHost { uri } => write!(
                f,
                "{uri:?} names no host: give one, as in http://host:port/path"
            ),
            UriError::Scheme { scheme, uri } => write!(
                f,
                "scheme {scheme:?} of {uri:?} is not supported: only http and https are; \
                 use an http:// or https:// URI"
            ),
            UriError::Port { port, uri } => write!(
                f,
                "port {port:?} of {uri:?} is not a TCP port: use a number from 1 to 65535, \
                 or leave the port out for the scheme's default"
            ),
            UriError::Host { host, why, uri } => write!(f, "host {host:?} of {uri:?} {why}"),
            UriError::UserInfo { uri } => write!(
                f,
                "{uri:?} carries credentials (user:password@): they are not sent from the \
                 URI; remove them and set an Authorization header instead"
            ),
            UriError::NoTls { uri } => write!(
                f,
                "{uri:?} is https: enable rtlocal's `rustls` feature to speak TLS"
            ),
        }
    }
}

impl std::error::Error for UriError {}

impl From<UriError> for Error {
    fn from(e: UriError) -> Error {
        // https without TLS stays a connect error, as it always was: the URI is fine.
        let kind = match e {
            UriError::NoTls { .. } => Kind::NoTls,
            _ => Kind::InvalidUri,
        };
        Error::with_detail(kind, e.to_string())
    }
}

/// The error for a string that does not parse as a URI at all; why is `e`, the source.
pub(crate) fn unparsable(text: &str, e: http::uri::InvalidUri) -> Error {
    Error::with_detail_and_source(
        Kind::InvalidUri,
        format!(
            "{:?} does not parse: give an absolute URI such as http://host:port/path",
            redact::text(text)
        ),
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Result<(bool, String, u16), UriError> {
        let uri: Uri = s.parse().expect("parses");
        Target::parse(&uri).map(|t| (t.https, t.host.to_owned(), t.port))
    }

    #[test]
    fn accepts_http_and_defaults_ports() {
        assert_eq!(check("http://a/").ok(), Some((false, "a".into(), 80)));
        assert_eq!(
            check("HTTP://a:8080/").ok(),
            Some((false, "a".into(), 8080))
        );
        assert_eq!(check("http://a:080/").ok(), Some((false, "a".into(), 80)));
        assert_eq!(
            check("http://[::1]:65535/").ok(),
            Some((false, "[::1]".into(), 65535))
        );
        assert_eq!(
            check("http://[::1]/").ok(),
            Some((false, "[::1]".into(), 80))
        );
    }

    #[test]
    fn refuses_what_is_not_http() {
        for s in ["ftp://a/", "ws://a/", "file://a/x", "htps://a/"] {
            let e = check(s).unwrap_err();
            assert!(matches!(e, UriError::Scheme { .. }), "{s}: {e}");
            let scheme = s.split(':').next().unwrap_or_default();
            assert!(e.to_string().contains(&format!("{scheme:?}")), "{e}");
        }
        assert!(matches!(
            check("/rel").unwrap_err(),
            UriError::Relative { .. }
        ));
        assert!(matches!(
            check("a:80").unwrap_err(),
            UriError::NoScheme { .. }
        ));
        assert!(matches!(
            check("http://:80/").unwrap_err(),
            UriError::NoHost { .. }
        ));
    }

    #[test]
    fn refuses_bad_ports_naming_them() {
        for (s, port) in [
            ("http://a:99999/", "99999"),
            ("http://a:65536/", "65536"),
            ("http://a:0/", "0"),
            ("http://a:+80/", "+80"),
            ("http://a:/", ""),
            ("http://a:x/", "x"),
            ("http://[::1]:99999/", "99999"),
        ] {
            let e = check(s).unwrap_err();
            assert!(matches!(e, UriError::Port { .. }), "{s}: {e}");
            assert!(e.to_string().contains(&format!("port {port:?}")), "{e}");
        }
    }

    #[test]
    fn refuses_hosts_that_do_not_name_one_server() {
        for s in [
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7F000001/",
            "http://0177.0.0.1/",
            "http://127.0.0.01/",
            "http://127.0.0.1./",
            "http://1.2.3.4.5/",
            "http://a.0x10/",
            "http://[localhost]:8080/",
            "https://[example.com]/",
            "http://a[:]b/",
        ] {
            let uri: Uri = s.parse().expect("the URI parser takes it");
            let e = Target::parse(&uri).unwrap_err();
            assert!(matches!(e, UriError::Host { .. }), "{s}: {e}");
            assert!(e.to_string().contains("host "), "{e}");
        }
        for (s, host) in [
            ("http://127.0.0.1:8080/", "127.0.0.1"),
            ("http://[::1]/", "[::1]"),
            ("http://[::ffff:127.0.0.1]/", "[::ffff:127.0.0.1]"),
            ("http://example.com./", "example.com."),
            ("http://1.2.3.4.example/", "1.2.3.4.example"),
            ("http://123.example/", "123.example"),
            ("http://0x.example/", "0x.example"),
            ("http://localhost/", "localhost"),
        ] {
            assert_eq!(check(s).map(|t| t.1).ok().as_deref(), Some(host), "{s}");
        }
    }

    /// The hand-written test agrees with `Ipv4Addr::from_str`.
    #[test]
    fn dotted_quads_as_the_standard_parser_reads_them() {
        for text in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.0",
            "1..3.4",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4x",
            "",
            "1234",
            "10.0.0.255",
            "10.0.0.300",
            "00.0.0.0",
            "0.0.0.00",
            "9.9.9.9",
            "999.1.1.1",
            "1.2.3.4294967296",
        ] {
            assert_eq!(
                is_dotted_quad(text.as_bytes()),
                text.parse::<std::net::Ipv4Addr>().is_ok(),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        /// Any string of digits and dots: the same answer as `Ipv4Addr::from_str`.
        #[test]
        fn dotted_quads_agree_on_any_digits_and_dots(text in "[0-9.]{0,18}") {
            proptest::prop_assert_eq!(
                is_dotted_quad(text.as_bytes()),
                text.parse::<std::net::Ipv4Addr>().is_ok()
            );
        }
    }

    #[test]
    fn refuses_credentials_without_echoing_them() {
        let e = check("http://user:secret@a/").unwrap_err();
        assert!(matches!(e, UriError::UserInfo { .. }));
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(check("http://127.0.0.1:80@evil/").is_err());
    }
}
