//! The `metrics` feature: names, attributes and values recorded through the facade,
//! captured by `metrics-util`'s `DebuggingRecorder` while real requests go to a loopback
//! server.
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::{TestServer, block_on_guarded, current_thread_rt, text};
use metrics::Unit;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rtlocal::HttpClientManager;

/// The process's recorder, installed once before any manager is built, and the totals
/// of everything it recorded. Tests hold the lock for their whole run: each snapshot
/// drains the recorder (counters and gauges read as changes since the last one,
/// histograms as the samples since then). Each test names its managers, so no two tests
/// share a series.
fn recorder() -> MutexGuard<'static, Recorded> {
    static RECORDER: OnceLock<Mutex<Recorded>> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            recorder
                .install()
                .expect("the only recorder of this process");
            Mutex::new(Recorded {
                snapshotter,
                totals: HashMap::new(),
            })
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type SeriesKey = (MetricKind, String, Vec<(String, String)>);

struct Recorded {
    snapshotter: Snapshotter,
    /// Counter and gauge values summed over every snapshot (a `set` gauge replaces).
    totals: HashMap<SeriesKey, (Option<Unit>, f64)>,
}

struct Series {
    kind: MetricKind,
    name: String,
    labels: Vec<(String, String)>,
    unit: Option<Unit>,
    /// A counter's or gauge's value so far; for a histogram, its samples since the
    /// previous snapshot.
    values: Vec<f64>,
}

/// The recorder's state now, queried by name and attributes.
struct Seen(Vec<Series>);

impl Seen {
    fn now(recorded: &mut Recorded) -> Seen {
        let mut samples = Vec::new();
        for (key, unit, _, value) in recorded.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let id = (kind, key.name().to_owned(), labels);
            match value {
                DebugValue::Counter(n) => {
                    recorded.totals.entry(id).or_insert((unit, 0.0)).1 += n as f64;
                }
                // Snapshot-only gauges are `set`; up-down ones move from the zero the
                // last snapshot left.
                DebugValue::Gauge(v) if SET_GAUGES.contains(&id.1.as_str()) => {
                    recorded.totals.insert(id, (unit, v.into_inner()));
                }
                DebugValue::Gauge(v) => {
                    recorded.totals.entry(id).or_insert((unit, 0.0)).1 += v.into_inner();
                }
                DebugValue::Histogram(v) => samples.push(Series {
                    kind: id.0,
                    name: id.1,
                    labels: id.2,
                    unit,
                    values: v.iter().map(|f| f.into_inner()).collect(),
                }),
            }
        }
        let totals = recorded
            .totals
            .iter()
            .map(|((kind, name, labels), (unit, v))| Series {
                kind: *kind,
                name: name.clone(),
                labels: labels.clone(),
                unit: *unit,
                values: vec![*v],
            });
        Seen(totals.chain(samples).collect())
    }

    /// Series named `name` that carry every attribute in `with`.
    fn matching<'a>(
        &'a self,
        kind: MetricKind,
        name: &'a str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Series> + 'a {
        self.0.iter().filter(move |s| {
            s.kind == kind
                && s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    fn counter(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        self.matching(MetricKind::Counter, name, with)
            .flat_map(|s| s.values.iter())
            .sum::<f64>() as u64
    }

    fn gauge(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.matching(MetricKind::Gauge, name, with)
            .flat_map(|s| s.values.iter())
            .sum()
    }

    /// Histogram samples recorded since the previous snapshot.
    fn samples(&self, name: &str, with: &[(&str, &str)]) -> Vec<f64> {
        self.matching(MetricKind::Histogram, name, with)
            .flat_map(|s| s.values.iter().copied())
            .collect()
    }

    fn unit(&self, kind: MetricKind, name: &str) -> Option<Unit> {
        self.matching(kind, name, &[]).find_map(|s| s.unit)
    }
}

const DURATION: &str = "http.client.request.duration";
/// The gauges `Stats::record_metrics` sets (every other gauge moves up and down).
const SET_GAUGES: [&str; 2] = ["rtlocal.thread_slots", "rtlocal.runtime_slots"];

fn named(name: &str) -> HttpClientManager {
    HttpClientManager::builder()
        .name(name)
        .build()
        .expect("valid")
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn every_request_is_timed_with_its_method_server_and_status_or_error() {
    const HTTP: (&str, &str) = ("rtlocal.manager", "t-timed");
    let mut recorded = recorder();
    let server = TestServer::start();
    let port = server.addr.port().to_string();
    let dead = closed_port();
    let before = Seen::now(&mut recorded); // drains earlier samples
    let manager = named("t-timed");
    block_on_guarded(&current_thread_rt(), async {
        let client = manager.client().await.expect("client");
        for _ in 0..3 {
            let resp = client.get(&server.url("/")).await.expect("get");
            assert_eq!(text(resp).await, "hello");
        }
        let post = http::Request::post(server.url("/echo"))
            .body("ping")
            .expect("request");
        assert_eq!(
            text(client.request(post).await.expect("post")).await,
            "ping"
        );
        let err = client
            .get(&format!("http://127.0.0.1:{dead}/"))
            .await
            .expect_err("nothing listens there");
        assert!(err.is_connect(), "{err}");
    });
    let after = Seen::now(&mut recorded);

    let to_server = [
        HTTP,
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
    ];
    let get_ok = [
        &to_server[..],
        &[
            ("http.request.method", "GET"),
            ("http.response.status_code", "200"),
        ],
    ]
    .concat();
    let post_ok = [
        &to_server[..],
        &[
            ("http.request.method", "POST"),
            ("http.response.status_code", "200"),
        ],
    ]
    .concat();
    let dead_port = dead.to_string();
    let refused = [
        HTTP,
        ("http.request.method", "GET"),
        ("server.port", dead_port.as_str()),
        ("error.type", "connect"),
    ];
    assert_eq!(after.samples(DURATION, &get_ok).len(), 3);
    assert_eq!(after.samples(DURATION, &post_ok).len(), 1);
    assert_eq!(after.samples(DURATION, &refused).len(), 1);
    let all = after.samples(DURATION, &[HTTP]);
    assert_eq!(all.len(), 5, "one sample per request made: {all:?}");
    assert!(all.iter().all(|s| s.is_finite() && *s >= 0.0), "{all:?}");
    assert_eq!(
        after.unit(MetricKind::Histogram, DURATION),
        Some(Unit::Seconds)
    );

    let delta = |name: &str| after.counter(name, &[HTTP]) - before.counter(name, &[HTTP]);
    assert_eq!(delta("rtlocal.requests.started"), 5);
    assert_eq!(delta("rtlocal.requests.failed"), 1);
    assert_eq!(
        delta("rtlocal.connections.opened"),
        server.accepted() as u64,
        "every connection the server accepted, and only those"
    );
    assert_eq!(delta("rtlocal.clients.created"), 1);
}

#[test]
fn active_requests_counts_a_request_until_its_body_is_dropped() {
    const HTTP: (&str, &str) = ("rtlocal.manager", "t-active");
    let mut recorded = recorder();
    let server = TestServer::start();
    let manager = named("t-active");
    let active = |seen: &Seen| seen.gauge("http.client.active_requests", &[HTTP]);
    block_on_guarded(&current_thread_rt(), async {
        let client = manager.client().await.expect("client");
        assert_eq!(active(&Seen::now(&mut recorded)), 0.0);
        let resp = client.get(&server.url("/")).await.expect("get");
        // The headers are in, the body is held: the request is still in flight.
        assert_eq!(active(&Seen::now(&mut recorded)), 1.0);
        drop(resp);
        assert_eq!(active(&Seen::now(&mut recorded)), 0.0);
    });
}

#[test]
fn open_connections_and_live_clients_return_to_zero_after_close_all() {
    const HTTP: (&str, &str) = ("rtlocal.manager", "t-close");
    let mut recorded = recorder();
    let server = TestServer::start();
    let manager = named("t-close");
    let before = Seen::now(&mut recorded);
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let client = manager.client().await.expect("client");
        for _ in 0..2 {
            text(client.get(&server.url("/")).await.expect("get")).await;
        }
    });
    let open = |seen: &Seen| seen.gauge("http.client.open_connections", &[HTTP]);
    let live = |seen: &Seen| seen.gauge("rtlocal.clients.live", &[HTTP]);
    let during = Seen::now(&mut recorded);
    assert_eq!((open(&before), live(&before)), (0.0, 0.0));
    assert_eq!(server.open(), 1);
    assert_eq!(open(&during), 1.0, "one pooled connection");
    assert_eq!(live(&during), 1.0);

    let report = block_on_guarded(&rt, manager.close_all());
    assert_eq!(report.closed, 1, "{report}");
    assert_eq!(
        server.wait_open(0),
        0,
        "the server saw the connection close"
    );
    let after = Seen::now(&mut recorded);
    assert_eq!(open(&after), 0.0, "no open connection left");
    assert_eq!(live(&after), 0.0);
    let delta = |name: &str| after.counter(name, &[HTTP]) - before.counter(name, &[HTTP]);
    assert_eq!(delta("rtlocal.clients.created"), 1);
    assert_eq!(delta("rtlocal.clients.closed"), 1);
    assert_eq!(delta("rtlocal.clients.forced_closes"), 0);
}

/// Each connection counts under its server and state: active while a request is on it
/// (written, response not yet read to its end), idle in the pool; its lifetime is
/// recorded when it closes.
#[test]
fn connections_count_by_server_and_state_and_record_their_duration() {
    const HTTP: (&str, &str) = ("rtlocal.manager", "t-conn-state");
    let mut recorded = recorder();
    let server = TestServer::start();
    let port = server.addr.port().to_string();
    let manager = named("t-conn-state");
    let to_server = [
        HTTP,
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
    ];
    let state = |seen: &Seen, state: &str| {
        let mut with = to_server.to_vec();
        with.push(("http.connection.state", state));
        seen.gauge("http.client.open_connections", &with)
    };
    let rt = current_thread_rt();
    let before = Seen::now(&mut recorded);
    assert_eq!(
        (state(&before, "active"), state(&before, "idle")),
        (0.0, 0.0)
    );
    block_on_guarded(&rt, async {
        let client = manager.client().await.expect("client");
        let slow = {
            let (client, url) = (client.clone(), server.url("/slow/400"));
            tokio::spawn(async move { client.get(&url).await.expect("slow") })
        };
        assert_eq!(server.requests_reached(1).await, 1);
        let during = Seen::now(&mut recorded);
        assert_eq!(state(&during, "active"), 1.0, "the request is on it");
        assert_eq!(state(&during, "idle"), 0.0);
        let resp = slow.await.expect("the task");
        // Headers in, body not yet read: still serving the response.
        assert_eq!(state(&Seen::now(&mut recorded), "active"), 1.0);
        assert_eq!(text(resp).await, "slow");
        let after = Seen::now(&mut recorded);
        assert_eq!(state(&after, "active"), 0.0, "the body ended");
        assert_eq!(state(&after, "idle"), 1.0, "back in the pool");
    });
    let report = block_on_guarded(&rt, manager.close_all());
    assert_eq!(report.closed, 1, "{report}");
    let closed = Seen::now(&mut recorded);
    assert_eq!(
        (state(&closed, "active"), state(&closed, "idle")),
        (0.0, 0.0)
    );
    let lived = closed.samples("http.client.connection.duration", &to_server);
    assert_eq!(lived.len(), 1, "one connection closed: {lived:?}");
    assert!(lived[0] > 0.0);
    assert_eq!(
        closed.unit(MetricKind::Histogram, "http.client.connection.duration"),
        Some(Unit::Seconds)
    );
}

/// An HTTP/2 connection, shared by its requests, counts as a whole: active while a
/// request is on it, idle again once the response body has ended.
#[test]
fn an_http2_connection_goes_back_to_idle_when_its_response_ends() {
    const HTTP: (&str, &str) = ("rtlocal.manager", "t-h2-state");
    let mut recorded = recorder();
    let server = common::AutoServer::start();
    let port = server.addr.port().to_string();
    let manager = HttpClientManager::builder()
        .name("t-h2-state")
        .http2_prior_knowledge()
        .build()
        .expect("valid");
    let state = |seen: &Seen, state: &str| {
        let with = [
            HTTP,
            ("server.address", "127.0.0.1"),
            ("server.port", port.as_str()),
            ("http.connection.state", state),
        ];
        seen.gauge("http.client.open_connections", &with)
    };
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let client = manager.client().await.expect("client");
        for _ in 0..2 {
            let resp = client.get(&server.url("/")).await.expect("request");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            text(resp).await;
            let after = Seen::now(&mut recorded);
            assert_eq!(state(&after, "active"), 0.0, "the body ended");
            assert_eq!(state(&after, "idle"), 1.0, "one shared connection, idle");
        }
    });
    let report = block_on_guarded(&rt, manager.close_all());
    assert_eq!(report.closed, 1, "{report}");
}

#[test]
fn a_snapshot_records_the_slot_and_callback_counts() {
    const HTTP: (&str, &str) = ("rtlocal.manager", "t-snapshot");
    let mut recorded = recorder();
    let manager = named("t-snapshot");
    block_on_guarded(&current_thread_rt(), async {
        manager.client().await.expect("client");
        let stats = manager.stats();
        stats.record_metrics("t-snapshot");
        let seen = Seen::now(&mut recorded);
        assert_eq!(stats.thread_slots, 1);
        assert_eq!(seen.gauge("rtlocal.thread_slots", &[HTTP]), 1.0);
        assert_eq!(seen.gauge("rtlocal.runtime_slots", &[HTTP]), 0.0);
        assert_eq!(
            seen.counter("rtlocal.callbacks.registered", &[HTTP]),
            stats.callbacks_registered
        );
        assert!(stats.callbacks_registered >= 1, "the manager's own hook");
        assert_eq!(
            seen.counter("rtlocal.callbacks.panicked", &[HTTP]),
            stats.callbacks_panicked
        );
    });
}

#[cfg(feature = "reqwest")]
#[test]
fn every_series_names_its_manager() {
    use rtlocal::{ReqwestFactory, ReqwestManager};
    // The HTTP manager's default name; no other test uses it.
    const HTTP: (&str, &str) = ("rtlocal.manager", "http");

    let mut recorded = recorder();
    let server = TestServer::start();
    let http = HttpClientManager::new();
    let orders = ReqwestManager::builder(ReqwestFactory::new())
        .name("orders")
        .build()
        .expect("valid");
    let before = Seen::now(&mut recorded);
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let c = http.client().await.expect("client");
        text(c.get(&server.url("/")).await.expect("get")).await;
        let r = orders.client().await.expect("client");
        let guard = r.track().expect("open");
        r.get(server.url("/")).send().await.expect("send");
        drop(guard);
        let r2 = orders.client().await.expect("same client");
        assert_eq!(r.id(), r2.id());
    });
    let report = block_on_guarded(&rt, orders.close_all());
    assert_eq!(
        (report.closed, report.not_closed_on_wire),
        (1, 0),
        "{report}"
    );
    let after = Seen::now(&mut recorded);

    let named = [("rtlocal.manager", "orders")];
    let delta =
        |name: &str, with: &[(&str, &str)]| after.counter(name, with) - before.counter(name, with);
    assert_eq!(delta("rtlocal.clients.created", &named), 1);
    assert_eq!(delta("rtlocal.clients.closed", &named), 1);
    assert_eq!(delta("rtlocal.requests.started", &named), 1);
    assert_eq!(delta("rtlocal.clients.not_closed_on_wire", &named), 0);
    assert_eq!(after.gauge("rtlocal.clients.live", &named), 0.0);
    assert_eq!(delta("rtlocal.clients.created", &[HTTP]), 1);
    assert_eq!(
        delta("rtlocal.clients.closed", &[HTTP]),
        0,
        "the HTTP manager was not closed"
    );
    assert_eq!(delta("rtlocal.requests.started", &[HTTP]), 1);
    // Only the HTTP manager times requests (reqwest's are its own).
    assert_eq!(after.samples(DURATION, &named).len(), 0);
    assert_eq!(after.samples(DURATION, &[HTTP]).len(), 1);
    // No series without its manager.
    assert!(
        after
            .0
            .iter()
            .filter(|s| s.name.starts_with("rtlocal.") || s.name.starts_with("http.client."))
            .all(|s| s.labels.iter().any(|(k, _)| k == "rtlocal.manager")),
        "a series without rtlocal.manager"
    );
}
