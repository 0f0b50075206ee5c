//! Where a request goes: the one check every URI passes before a socket is opened.
//!
//! hyper-util's connector sends anything that is not `https` as plain HTTP and falls
//! back to port 80 when the port does not parse (`:99999`), so a typo (`htps://`), an
//! `ftp://` or `ws://` URI or an out-of-range port would go out in cleartext, or to a
//! port the URI never named. [`Target::of`] refuses all of that: it runs at request
//! entry (with the URI as the user wrote it) and again in the connector (defense in
//! depth), and the connector connects to the [`Target`] it returns, never to a default
//! it made up.

use std::fmt;

use http::Uri;

use crate::error::{Error, Kind};

/// The server a URI names: checked scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target<'a> {
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
    /// A port that is not a number from 1 to 65535.
    Port { port: String, uri: String },
    /// `user:password@` in the authority.
    UserInfo { uri: String },
    /// `https` in a build without TLS.
    NoTls { uri: String },
}

impl<'a> Target<'a> {
    /// Checks `uri` and returns where it points.
    ///
    /// # Errors
    /// A [`UriError`] naming what is wrong: a relative URI, a missing scheme or host, a
    /// scheme other than `http`/`https`, a port outside 1..=65535 (or not digits),
    /// credentials in the URI, or `https` without the `rustls` feature.
    pub(crate) fn of(uri: &'a Uri) -> Result<Target<'a>, UriError> {
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
                scheme: clip(scheme),
                uri: shown(uri),
            });
        };
        // Credentials are refused rather than dropped: parsers disagree about where a
        // host ends in `a:b@c` forms, and the user meant them to be sent.
        if authority.contains('@') {
            return Err(UriError::UserInfo { uri: shown(uri) });
        }
        let (host, port) = split_host_port(authority);
        if host.is_empty() || host == "[]" {
            return Err(UriError::NoHost { uri: shown(uri) });
        }
        let port = match port {
            // `host:` with nothing after the colon means the default port (RFC 3986 §6.2.3).
            None | Some("") => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => parse_port(p).ok_or_else(|| UriError::Port {
                port: clip(p),
                uri: shown(uri),
            })?,
        };
        if https && !cfg!(feature = "rustls") {
            return Err(UriError::NoTls { uri: shown(uri) });
        }
        Ok(Target { https, host, port })
    }

    /// `host:port`, the key of the per-host connection limit.
    pub(crate) fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host without IPv6 brackets (the TLS server name).
    #[cfg(feature = "rustls")]
    pub(crate) fn bare_host(&self) -> &'a str {
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
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
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

/// How much of a URI or scheme an error message repeats.
const SHOWN: usize = 120;

fn clip(s: &str) -> String {
    if s.len() <= SHOWN {
        return s.to_owned();
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The URI as an error shows it: credentials masked, long URIs clipped.
fn shown(uri: &Uri) -> String {
    let text = uri.to_string();
    let masked = match uri.authority().map(|a| a.as_str()) {
        Some(a) if a.contains('@') => {
            let host = a.rsplit_once('@').map_or(a, |(_, h)| h);
            text.replacen(a, &format!("***@{host}"), 1)
        }
        _ => text,
    };
    clip(&masked)
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

/// The error for a string that does not parse as a URI at all.
pub(crate) fn unparsable(text: &str, e: http::uri::InvalidUri) -> Error {
    Error::with_detail_and_source(
        Kind::InvalidUri,
        format!(
            "{:?} does not parse ({e}): give an absolute URI such as http://host:port/path",
            clip(text)
        ),
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Result<(bool, String, u16), UriError> {
        let uri: Uri = s.parse().expect("parses");
        Target::of(&uri).map(|t| (t.https, t.host.to_owned(), t.port))
    }

    #[test]
    fn accepts_http_and_defaults_ports() {
        assert_eq!(check("http://a/").ok(), Some((false, "a".into(), 80)));
        assert_eq!(
            check("HTTP://a:8080/").ok(),
            Some((false, "a".into(), 8080))
        );
        assert_eq!(check("http://a:/").ok(), Some((false, "a".into(), 80)));
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
            ("http://[::1]:99999/", "99999"),
        ] {
            let e = check(s).unwrap_err();
            assert!(matches!(e, UriError::Port { .. }), "{s}: {e}");
            assert!(e.to_string().contains(&format!("port {port:?}")), "{e}");
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
