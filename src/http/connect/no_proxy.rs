//! [`NoProxy`]: a `NO_PROXY` list (or [`Proxy::no_proxy`](crate::Proxy::no_proxy)) in
//! the forms users write, and the loopback rule of the proxy variables.
//!
//! hyper-util's matcher takes host names, IP addresses and CIDR blocks, but not what a
//! URL puts in its authority: `[::1]` (brackets) or `host:8080` (a port). Such an entry
//! becomes a domain no host ever equals, so the request silently goes to the proxy. Go's
//! `httpproxy` takes `[::1]:8080` (that port only; a bare `[::1]` it reads as a host
//! name that never matches); here both are taken. An entry is normalized first: brackets
//! stripped, `*.example.com` as `.example.com`, and an entry with a port kept apart,
//! matching that port only (Go's rule; hyper-util's matcher has no ports).

use std::net::IpAddr;

use http::Uri;
use hyper_util::client::proxy::matcher::Matcher;

/// A parsed `NO_PROXY` list.
#[derive(Debug, Default)]
pub(crate) struct NoProxy {
    /// The entries without a port, in the matcher's syntax.
    any_port: String,
    /// Entries with a port: (port, a matcher whose `no` list is those entries).
    by_port: Vec<(u16, Matcher)>,
}

/// Any proxy: the port-scoped matchers only ask whether their `no` list exempts a host.
const PLACEHOLDER_PROXY: &str = "http://no-proxy.invalid:1";

impl NoProxy {
    /// Parses a comma-separated list. Entries it cannot read are kept as host names, as
    /// hyper-util does (they match nothing): a `NO_PROXY` value is shared with every
    /// other program and must not stop this one.
    pub(crate) fn parse(list: &str) -> NoProxy {
        let mut any_port: Vec<String> = Vec::new();
        let mut by_port: Vec<(u16, Vec<String>)> = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (host, port) = split_entry(entry);
            // hyper-util's `*` matches every host name but no IP address; curl's (and
            // Go's) matches everything, which is what users mean: add every address.
            let hosts: Vec<String> = if host == "*" {
                vec!["*".into(), "0.0.0.0/0".into(), "::/0".into()]
            } else {
                vec![host]
            };
            match port {
                None => any_port.extend(hosts),
                Some(port) => match by_port.iter_mut().find(|(p, _)| *p == port) {
                    Some((_, list)) => list.extend(hosts),
                    None => by_port.push((port, hosts)),
                },
            }
        }
        NoProxy {
            any_port: any_port.join(","),
            by_port: by_port
                .into_iter()
                .map(|(port, hosts)| {
                    let matcher = Matcher::builder()
                        .all(PLACEHOLDER_PROXY)
                        .no(hosts.join(","))
                        .build();
                    (port, matcher)
                })
                .collect(),
        }
    }

    /// The entries without a port, for the rule's matcher (`Matcher::builder().no(..)`).
    pub(crate) fn matcher_list(&self) -> String {
        self.any_port.clone()
    }

    /// Whether an entry with a port exempts `dst` (`scheme://host[:port]`; a missing
    /// port is the scheme's default).
    pub(crate) fn exempts_by_port(&self, dst: &Uri) -> bool {
        if self.by_port.is_empty() {
            return false;
        }
        let Some(port) = dst.port_u16().or(match dst.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        }) else {
            return false;
        };
        // The matchers intercept `http` and `https` only: ask with `http`.
        let Some(host) = dst.host() else {
            return false;
        };
        let Ok(probe) = format!("http://{host}/").parse::<Uri>() else {
            return false;
        };
        self.by_port
            .iter()
            .any(|(p, matcher)| *p == port && matcher.intercept(&probe).is_none())
    }
}

/// `[::1]:8080` → (`::1`, 8080); `[::1]` → `::1`; `host:80` → (`host`, 80);
/// `*.example.com` → `.example.com`; bare IPv6 addresses and CIDR blocks unchanged.
fn split_entry(entry: &str) -> (String, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((inside, after)) = rest.split_once(']') {
            let inside = inside.to_owned();
            if after.is_empty() {
                return (inside, None);
            }
            // `[fd00::]/8`: brackets around a CIDR block's address.
            if after.starts_with('/') {
                return (format!("{inside}{after}"), None);
            }
            if let Some(port) = after.strip_prefix(':').and_then(|p| p.parse().ok()) {
                return (inside, Some(port));
            }
        }
        return (entry.to_owned(), None);
    }
    let (host, port) = match entry.rsplit_once(':') {
        // One colon: `host:port` (two or more: a bare IPv6 address or block).
        Some((host, port)) if !host.contains(':') => match port.parse::<u16>() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    };
    let host = match host.strip_prefix("*.") {
        Some(domain) => format!(".{domain}"),
        None => host.to_owned(),
    };
    (host, port)
}

/// Whether `dst`'s host is this machine's loopback: `localhost`, `*.localhost`, an
/// address in 127.0.0.0/8, `::1`, or an IPv4-mapped 127.x address (Go's
/// `ProxyFromEnvironment` rule, with RFC 6761's `.localhost` names).
pub(crate) fn is_loopback(dst: &Uri) -> bool {
    let Some(host) = dst.host() else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    fn exempt(list: &str, uri: &str) -> bool {
        let no = NoProxy::parse(list);
        let matcher = Matcher::builder()
            .all("http://proxy.test:3128")
            .no(no.matcher_list())
            .build();
        let dst: Uri = uri.parse().expect("uri");
        no.exempts_by_port(&dst) || matcher.intercept(&dst).is_none()
    }

    #[test]
    fn entries_are_split_as_urls_write_them() {
        for (entry, host, port) in [
            ("[::1]", "::1", None),
            ("[::1]:8080", "::1", Some(8080)),
            ("[fd00::]/8", "fd00::/8", None),
            ("::1", "::1", None),
            ("fd00::/8", "fd00::/8", None),
            ("127.0.0.1:80", "127.0.0.1", Some(80)),
            ("example.com:443", "example.com", Some(443)),
            ("*.example.com", ".example.com", None),
            ("10.0.0.0/8", "10.0.0.0/8", None),
            ("[::1]:notaport", "[::1]:notaport", None),
            ("host:notaport", "host:notaport", None),
        ] {
            assert_eq!(split_entry(entry), (host.to_owned(), port), "{entry}");
        }
    }

    #[test]
    fn bracketed_ipv6_with_and_without_a_port() {
        for list in ["[::1]", "example.com, [::1]", " [::1] ,x"] {
            assert!(exempt(list, "http://[::1]:8080/"), "{list}");
            assert!(exempt(list, "https://[::1]/"), "{list}");
            assert!(!exempt(list, "http://[::2]:8080/"), "{list}");
        }
        assert!(exempt("[::1]:8080", "http://[::1]:8080/"));
        assert!(!exempt("[::1]:8080", "http://[::1]:8081/"));
        assert!(!exempt("[::1]:8080", "http://[::2]:8080/"));
        assert!(exempt("[::1]:443", "https://[::1]/"));
        assert!(exempt("[fd00::]/8", "http://[fd00::5]/"));
        // The forms that worked before still do.
        assert!(exempt("::1", "http://[::1]:8080/"));
        assert!(exempt("::1/128", "http://[::1]:8080/"));
    }

    #[test]
    fn ports_scope_host_and_ip_entries() {
        assert!(exempt("127.0.0.1:8080", "http://127.0.0.1:8080/"));
        assert!(!exempt("127.0.0.1:8080", "http://127.0.0.1:9090/"));
        assert!(exempt("example.com:80", "http://api.example.com/"));
        assert!(!exempt("example.com:80", "https://example.com/"));
        assert!(exempt("*.example.com", "http://api.example.com/"));
        assert!(exempt("*:8080", "http://10.1.2.3:8080/"));
        assert!(!exempt("*:8080", "http://10.1.2.3:8081/"));
        assert!(exempt("*", "http://[fd00::1]/"));
        // Unreadable entries match nothing and do not spoil the rest.
        assert!(!exempt("[::1]:x", "http://[::1]/"));
        assert!(exempt("[::1]:x, 10.0.0.0/8", "http://10.1.2.3/"));
    }

    #[test]
    fn loopback_hosts() {
        for uri in [
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://localhost./",
            "http://api.localhost/",
            "http://127.0.0.1:1/",
            "http://127.255.0.9/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(is_loopback(&uri.parse().expect("uri")), "{uri}");
        }
        for uri in [
            "http://notlocalhost/",
            "http://localhost.example/",
            "http://128.0.0.1/",
            "http://[::2]/",
            "http://[::ffff:10.0.0.1]/",
            "http://10.0.0.1/",
        ] {
            assert!(!is_loopback(&uri.parse().expect("uri")), "{uri}");
        }
    }
}
