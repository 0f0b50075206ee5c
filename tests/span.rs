//! The `http.request` span: one per request, with the request's method, server, client
//! and runtime, and its status or error, seen by a capturing `tracing` layer (through
//! `common::trace`: one global subscriber routing to each test's capture).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use common::TestServer;

/// A span as the layer saw it: its name and every field recorded on it, as text.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<BTreeMap<u64, Seen>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut seen = Seen {
            name: attrs.metadata().name().to_owned(),
            fields: BTreeMap::new(),
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.into_u64(), seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(seen) = spans.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
}

impl Capture {
    fn requests(&self) -> Vec<Seen> {
        self.named("http.request")
    }

    fn named(&self, name: &str) -> Vec<Seen> {
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }
}

fn field<'a>(span: &'a Seen, name: &str) -> &'a str {
    span.fields
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("field {name} missing from {span:?}"))
}

#[test]
fn a_request_has_one_span_with_its_method_server_client_runtime_and_status() {
    let server = TestServer::start();
    let capture = Capture::default();
    let _capture = common::trace::capture(capture.clone(), LevelFilter::DEBUG);
    let rt = common::current_thread_rt();
    let manager = rtlocal::HttpClientManager::new();
    let (client, runtime) = rt.block_on(async {
        let client = manager.client().await.expect("client");
        let req = http::Request::post(server.url("/echo"))
            .body("ping")
            .expect("request");
        let resp = client.request(req).await.expect("response");
        assert_eq!(common::text(resp).await, "ping");
        (client, tokio::runtime::Handle::current().id())
    });
    let spans = capture.requests();
    assert_eq!(spans.len(), 1, "one span per request: {spans:?}");
    let span = &spans[0];
    assert_eq!(field(span, "http.request.method"), "POST");
    assert_eq!(field(span, "server.address"), "127.0.0.1");
    assert_eq!(field(span, "server.port"), server.addr.port().to_string());
    assert_eq!(field(span, "client"), client.id().to_string());
    assert_eq!(field(span, "runtime"), runtime.to_string());
    assert_eq!(field(span, "http.response.status_code"), "200");
    assert!(!span.fields.contains_key("error.type"), "{span:?}");
    assert!(!span.fields.contains_key("otel.status_code"), "{span:?}");
    assert_eq!(field(span, "otel.name"), "POST");
    assert_eq!(field(span, "otel.kind"), "client");
    assert_eq!(field(span, "url.full"), server.url("/echo"));
}

#[test]
fn a_refused_connection_records_the_error_and_no_status() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let capture = Capture::default();
    let _capture = common::trace::capture(capture.clone(), LevelFilter::DEBUG);
    let rt = common::current_thread_rt();
    let manager = rtlocal::HttpClientManager::new();
    let err = rt.block_on(async {
        let client = manager.client().await.expect("client");
        client
            .get(&format!("http://127.0.0.1:{port}/"))
            .await
            .expect_err("nothing listens there")
    });
    assert!(err.is_connect(), "{err}");
    let spans = capture.requests();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(field(span, "http.request.method"), "GET");
    assert_eq!(field(span, "server.port"), port.to_string());
    assert_eq!(field(span, "error.type"), "connect");
    assert_eq!(field(span, "otel.status_code"), "ERROR");
    assert_eq!(field(span, "otel.status_description"), format!("{err:#}"));
    assert!(
        !span.fields.contains_key("http.response.status_code"),
        "{span:?}"
    );
}

/// A 4xx or 5xx answer is an error status on a client span (HTTP semantic conventions),
/// its status code the `error.type`; the request itself succeeded.
#[test]
fn an_error_status_marks_the_span_as_an_error() {
    let server = TestServer::start();
    let capture = Capture::default();
    let _capture = common::trace::capture(capture.clone(), LevelFilter::DEBUG);
    let rt = common::current_thread_rt();
    let manager = rtlocal::HttpClientManager::new();
    rt.block_on(async {
        let client = manager.client().await.expect("client");
        for code in [404u16, 503, 200] {
            let resp = client
                .get(&server.url(&format!("/status/{code}")))
                .await
                .expect("a response");
            assert_eq!(resp.status().as_u16(), code);
        }
    });
    let spans = capture.requests();
    assert_eq!(spans.len(), 3, "{spans:?}");
    for (span, code) in spans.iter().zip(["404", "503"]) {
        assert_eq!(field(span, "http.response.status_code"), code);
        assert_eq!(field(span, "error.type"), code);
        assert_eq!(field(span, "otel.status_code"), "ERROR");
    }
    assert!(
        !spans[2].fields.contains_key("otel.status_code"),
        "{:?}",
        spans[2]
    );
}

#[test]
fn no_span_when_the_subscriber_does_not_want_debug() {
    let server = TestServer::start();
    let capture = Capture::default();
    let _capture = common::trace::capture(capture.clone(), LevelFilter::INFO);
    let rt = common::current_thread_rt();
    let manager = rtlocal::HttpClientManager::new();
    rt.block_on(async {
        let resp = manager
            .client()
            .await
            .expect("client")
            .get(&server.url("/"))
            .await
            .expect("response");
        assert_eq!(common::text(resp).await, "hello");
    });
    assert!(capture.requests().is_empty());
}

/// A request future created on runtime A and first polled on runtime B is sent by B's
/// client (the runtime is checked at poll time, not when the future is made), and its
/// span names the client and runtime that sent it.
#[test]
fn a_future_made_on_one_runtime_and_awaited_on_another_is_sent_and_traced_there() {
    let server = TestServer::start();
    let capture = Capture::default();
    let _capture = common::trace::capture(capture.clone(), LevelFilter::DEBUG);
    let manager = rtlocal::HttpClientManager::new();
    let rt_a = common::current_thread_rt();
    let rt_b = common::current_thread_rt();
    let client_a = rt_a.block_on(manager.client()).expect("client on A");
    // Made inside A (A's client, A's context current), never polled there.
    let pending = {
        let _in_a = rt_a.enter();
        let req = http::Request::get(server.url("/"))
            .body(())
            .expect("request");
        client_a.request(req)
    };
    // A idles from here on: a request sent on A's connections would never finish.
    let (resp_text, runtime_b) = common::block_on_guarded(&rt_b, async {
        let resp = pending.await.expect("re-routed to B's client");
        (
            common::text(resp).await,
            tokio::runtime::Handle::current().id(),
        )
    });
    assert_eq!(resp_text, "hello");
    let client_b = rt_b.block_on(manager.client()).expect("client on B");
    assert_ne!(client_b.id(), client_a.id());
    let spans = capture.requests();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(field(&spans[0], "client"), client_b.id().to_string());
    assert_eq!(field(&spans[0], "runtime"), runtime_b.to_string());
    assert_eq!(field(&spans[0], "http.response.status_code"), "200");
}

/// tracing caches a callsite's interest process-wide when it is first hit: a span first
/// made on a thread that captures nothing must still be captured where a test does
/// (the cause of a flaky tower-http span test; see `common::trace`).
#[test]
fn a_callsite_first_hit_on_a_thread_without_a_capture_is_still_captured() {
    fn probe() -> tracing::Span {
        tracing::debug_span!("capture.probe")
    }
    let capture = Capture::default();
    let _capture = common::trace::capture(capture.clone(), LevelFilter::DEBUG);
    std::thread::spawn(|| drop(probe()))
        .join()
        .expect("probe thread");
    drop(probe());
    assert_eq!(capture.named("capture.probe").len(), 1);
}
