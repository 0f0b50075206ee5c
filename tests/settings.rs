//! The builder's whole input space: `build()` either rejects a configuration with an
//! error naming the setting, or every client built from it works against a real loopback
//! server. No panic anywhere, background tasks included (a process-wide panic hook
//! counts panics on every thread).

mod common;

use std::time::Duration;

use common::{AutoServer, block_on_guarded, current_thread_rt, panics_seen, watch_panics};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use rtlocal::{Builder, HttpClientManager, Sharing};

const SETTINGS: &[&str] = &[
    "close_timeout",
    "connect_timeout",
    "request_timeout",
    "pool_idle_timeout",
    "pool_max_idle_per_host",
    "max_connections",
    "max_connections_per_host",
    "keep_alive",
    "dns_cache_ttl",
    "http2_prior_knowledge",
    "http1_only",
    "default_headers",
    "user_agent",
    "add_root_certificate",
];

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        1 => Just(Duration::ZERO),
        3 => Just(Duration::from_nanos(1)),
        1 => Just(Duration::from_micros(999)),
        3 => Just(Duration::from_millis(1)),
        3 => Just(Duration::from_millis(50)),
        3 => Just(Duration::from_secs(5)),
        3 => Just(Duration::from_secs(3600)),
        3 => Just(Duration::from_secs(10 * 365 * 24 * 3600 - 1)),
        3 => Just(Duration::from_secs(10 * 365 * 24 * 3600)),
        3 => Just(Duration::from_secs(u64::MAX)),
        3 => Just(Duration::MAX),
        3 => any::<u64>().prop_map(Duration::from_nanos),
        3 => any::<u64>().prop_map(Duration::from_secs),
    ]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        3 => Just(1),
        3 => Just(2),
        3 => Just(8),
        3 => Just(tokio::sync::Semaphore::MAX_PERMITS - 1),
        3 => Just(tokio::sync::Semaphore::MAX_PERMITS),
        3 => Just(usize::MAX),
        3 => any::<usize>(),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    prop::collection::vec(
        prop_oneof![
            6 => Just(("x-test", "1")),
            6 => Just(("user-agent", "settings-test")),
            6 => Just(("accept", "*/*")),
            1 => Just(("content-length", "5")),
            1 => Just(("transfer-encoding", "chunked")),
            1 => Just(("proxy-authorization", "Basic dTpw")),
        ],
        0..3,
    )
}

/// One configuration: which setters are called, with what.
#[derive(Debug, Clone)]
struct Settings {
    sharing: Option<bool>,
    close_timeout: Option<Duration>,
    connect_timeout: Option<Option<Duration>>,
    request_timeout: Option<Option<Duration>>,
    pool_idle_timeout: Option<Option<Duration>>,
    pool_max_idle_per_host: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_host: Option<usize>,
    keep_alive: Option<bool>,
    tcp_nodelay: Option<bool>,
    dns_cache_ttl: Option<Option<Duration>>,
    http2_prior_knowledge: bool,
    http1_only: bool,
    default_headers: Vec<(&'static str, &'static str)>,
    user_agent: Option<Option<&'static str>>,
    /// Built-in roots on or off, and DER bytes to add (feature `rustls`).
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    tls: Option<(bool, Vec<u8>)>,
}

fn settings() -> impl Strategy<Value = Settings> {
    let times = (
        prop::option::of(any::<bool>()),
        prop::option::of(duration()),
        prop::option::of(prop::option::of(duration())),
        prop::option::of(prop::option::of(duration())),
        prop::option::of(prop::option::of(duration())),
        prop::option::of(prop::option::of(duration())),
    );
    let limits = (
        prop::option::of(count()),
        prop::option::of(count()),
        prop::option::of(count()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    );
    let extra = (
        headers(),
        prop::option::of(prop::option::of(prop_oneof![
            6 => Just("agent/1.0"),
            1 => Just("bad\nagent")
        ])),
        prop::option::weighted(
            0.3,
            (
                any::<bool>(),
                prop_oneof![
                    6 => Just(Vec::new()),
                    1 => prop::collection::vec(any::<u8>(), 1..8)
                ],
            ),
        ),
    );
    (times, limits, extra).prop_map(|(t, l, e)| Settings {
        sharing: t.0,
        close_timeout: t.1,
        connect_timeout: t.2,
        request_timeout: t.3,
        pool_idle_timeout: t.4,
        dns_cache_ttl: t.5,
        pool_max_idle_per_host: l.0,
        max_connections: l.1,
        max_connections_per_host: l.2,
        keep_alive: l.3,
        tcp_nodelay: l.4,
        http2_prior_knowledge: l.5,
        http1_only: l.6,
        default_headers: e.0,
        user_agent: e.1,
        tls: e.2,
    })
}

impl Settings {
    fn builder(&self) -> Builder {
        let mut b = HttpClientManager::builder();
        if let Some(per_runtime) = self.sharing {
            b = b.sharing(if per_runtime {
                Sharing::PerRuntime
            } else {
                Sharing::PerThread
            });
        }
        if let Some(d) = self.close_timeout {
            b = b.close_timeout(d);
        }
        if let Some(d) = self.connect_timeout {
            b = b.connect_timeout(d);
        }
        if let Some(d) = self.request_timeout {
            b = b.request_timeout(d);
        }
        if let Some(d) = self.pool_idle_timeout {
            b = b.pool_idle_timeout(d);
        }
        if let Some(n) = self.pool_max_idle_per_host {
            b = b.pool_max_idle_per_host(n);
        }
        if let Some(n) = self.max_connections {
            b = b.max_connections(n);
        }
        if let Some(n) = self.max_connections_per_host {
            b = b.max_connections_per_host(n);
        }
        if let Some(k) = self.keep_alive {
            b = b.keep_alive(k);
        }
        if let Some(n) = self.tcp_nodelay {
            b = b.tcp_nodelay(n);
        }
        if let Some(d) = self.dns_cache_ttl {
            b = b.dns_cache_ttl(d);
        }
        if self.http2_prior_knowledge {
            b = b.http2_prior_knowledge();
        }
        if self.http1_only {
            b = b.http1_only();
        }
        if !self.default_headers.is_empty() {
            let mut map = HeaderMap::new();
            for (name, value) in &self.default_headers {
                map.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            b = b.default_headers(map);
        }
        if let Some(ua) = self.user_agent {
            b = b.user_agent(ua);
        }
        #[cfg(feature = "rustls")]
        if let Some((built_in, der)) = &self.tls {
            b = b.tls_built_in_roots(*built_in);
            if !der.is_empty() {
                b = b.add_root_certificate_der(der.clone());
            }
        }
        b
    }

    /// A deadline short enough that a loopback request may honestly miss it.
    fn may_time_out(&self) -> bool {
        let short =
            |d: Option<Option<Duration>>| d.flatten().is_some_and(|d| d < Duration::from_secs(1));
        short(self.connect_timeout) || short(self.request_timeout)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn build_rejects_by_name_or_the_client_works(s in settings()) {
        watch_panics();
        let panics_before = panics_seen();
        let server = server();
        match s.builder().build() {
            Err(e) => {
                prop_assert!(e.is_config(), "{s:?}: {e:?}");
                let shown = e.to_string();
                prop_assert!(
                    SETTINGS.iter().any(|name| shown.contains(name)),
                    "{s:?}: the error names no setting: {shown}"
                );
            }
            Ok(manager) => {
                let rt = current_thread_rt();
                let before = server.requests();
                let outcome = block_on_guarded(&rt, async {
                    let client = manager.client().await?;
                    let mut bodies = Vec::new();
                    // Twice: the second request may reuse a pooled connection.
                    for _ in 0..2 {
                        let resp = client.get(&server.url("/")).await?;
                        bodies.push(common::text(resp).await);
                    }
                    manager.close_all().await;
                    Ok::<_, rtlocal::Error>(bodies)
                });
                drop(rt);
                match outcome {
                    Ok(bodies) => {
                        prop_assert_eq!(bodies, vec!["hello".to_owned(), "hello".to_owned()]);
                        prop_assert!(server.requests() >= before + 2);
                    }
                    Err(e) => prop_assert!(
                        s.may_time_out() && e.is_timeout(),
                        "{s:?}: a valid configuration failed: {e}"
                    ),
                }
            }
        }
        prop_assert_eq!(panics_seen(), panics_before, "{:?}: a thread panicked", s);
    }
}

fn server() -> &'static AutoServer {
    static SERVER: std::sync::OnceLock<AutoServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(AutoServer::start)
}
