//! A managed `Client` as a tower `Service`: tower-http's redirects, decompression and
//! tracing, and tower's retry, over real hyper servers on 127.0.0.1; and the managed
//! semantics (in-flight accounting, re-routing, the request timeout) kept through it.

mod common;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{HANG_GUARD, IdleRuntime, Misbehave, RawServer, TestServer};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rtlocal::{Body, HttpClientManager};
use tokio::io::AsyncReadExt;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::decompression::DecompressionLayer;
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_http::trace::TraceLayer;

const TEXT: &str = "the decompressed text, long enough to be worth compressing";

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    accept_encoding: Option<String>,
    /// The server answered with a gzip-encoded body.
    sent_gzip: bool,
}

/// A hyper server on its own runtime. Routes: `/start` → 302 to `/target`; `/target` →
/// "the target"; `/gzip` → [`TEXT`], gzip-encoded when the request accepts gzip;
/// anything else → "ok". The first `reset_first` connections are reset (linger 0, then
/// close) once their request head has arrived.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start(reset_first: usize) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen2, accepted2) = (Arc::clone(&seen), Arc::clone(&accepted));
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = accepted2.fetch_add(1, Ordering::SeqCst);
                if n < reset_first {
                    tokio::spawn(reset_after_head(stream));
                    continue;
                }
                let seen = Arc::clone(&seen2);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, Arc::clone(&seen)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server {
            addr,
            seen,
            accepted,
            rt: Some(rt),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Reads the request head, then resets the connection: linger 0 makes close send RST.
async fn reset_after_head(mut stream: tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let accept_encoding = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let gzip = path == "/gzip"
        && accept_encoding
            .as_deref()
            .is_some_and(|a| a.contains("gzip"));
    seen.lock().expect("seen").push(Seen {
        path: path.clone(),
        accept_encoding,
        sent_gzip: gzip,
    });
    let resp = match path.as_str() {
        "/start" => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/target")
            .body(Full::new(Bytes::from_static(b"redirecting"))),
        "/target" => Response::builder().body(Full::new(Bytes::from_static(b"the target"))),
        "/gzip" if gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(TEXT.as_bytes()).expect("gzip in memory");
            let compressed = enc.finish().expect("gzip in memory");
            Response::builder()
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Full::new(Bytes::from(compressed)))
        }
        "/gzip" => Response::builder().body(Full::new(Bytes::from_static(TEXT.as_bytes()))),
        _ => Response::builder().body(Full::new(Bytes::from_static(b"ok"))),
    };
    Ok(resp.expect("valid response"))
}

/// Runs `fut` on a fresh `current_thread` runtime under the hang guard. Servers are
/// started before it: they block on their own runtime while binding.
///
/// Installs the test binary's tracing subscriber first (see `common::trace`): any
/// tower-http callsite a test hits is then registered after it exists.
fn run<F: std::future::Future>(fut: F) -> F::Output {
    common::trace::install();
    common::block_on_guarded(&common::current_thread_rt(), fut)
}

fn get<B: Default>(uri: &str) -> Request<B> {
    Request::get(uri).body(B::default()).expect("valid request")
}

async fn collect<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.expect("read body").to_bytes()
}

#[test]
fn follow_redirect_reaches_the_target() {
    let server = Server::start(0);
    run(async {
        let client = rtlocal::client().await.expect("client");
        // `rtlocal::Body` as the request body: passed to the client as it is.
        let svc = ServiceBuilder::new()
            .layer(FollowRedirectLayer::new())
            .service(client);
        let resp =
            tokio::time::timeout(HANG_GUARD, svc.oneshot(get::<Body>(&server.url("/start"))))
                .await
                .expect("hang guard")
                .expect("redirected response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(collect(resp.into_body()).await, "the target");
        assert_eq!(server.paths(), ["/start", "/target"]);
    });
}

#[test]
fn decompression_reads_the_decompressed_bytes() {
    let server = Server::start(0);
    run(async {
        let client = rtlocal::client().await.expect("client");
        let svc = ServiceBuilder::new()
            .layer(DecompressionLayer::new())
            .service(client);
        let resp = tokio::time::timeout(
            HANG_GUARD,
            svc.oneshot(get::<Full<Bytes>>(&server.url("/gzip"))),
        )
        .await
        .expect("hang guard")
        .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        // Decoded: the layer drops the encoding header once it decompresses.
        assert!(resp.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(collect(resp.into_body()).await, TEXT);
        let seen = server.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0]
                .accept_encoding
                .as_deref()
                .is_some_and(|a| a.contains("gzip")),
            "the server did not see accept-encoding: gzip: {seen:?}"
        );
        assert!(seen[0].sent_gzip, "the server did not send gzip: {seen:?}");
    });
}

/// What a capturing tracing layer saw.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        self.0.lock().expect("captured").clone()
    }
}

/// Writes a span's or an event's fields as `name=value`.
struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl<S> tracing_subscriber::Layer<S> for Captured
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut line = format!("span {}:", attrs.metadata().name());
        attrs.record(&mut Fields(&mut line));
        self.0.lock().expect("captured").push(line);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let span = ctx
            .event_span(event)
            .map_or_else(|| "-".to_owned(), |s| s.name().to_owned());
        let mut line = format!("event {} in {span}:", event.metadata().target());
        event.record(&mut Fields(&mut line));
        self.0.lock().expect("captured").push(line);
    }
}

#[test]
fn trace_layer_spans_and_events_are_observed() {
    let captured = Captured::default();
    // current_thread test runtime: everything below is polled on this thread.
    let _guard = common::trace::capture(
        captured.clone(),
        tracing_subscriber::filter::LevelFilter::TRACE,
    );
    let server = Server::start(0);
    run(async {
        let client = rtlocal::client().await.expect("client");
        let svc = ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .service(client);
        let resp =
            tokio::time::timeout(HANG_GUARD, svc.oneshot(get::<Body>(&server.url("/traced"))))
                .await
                .expect("hang guard")
                .expect("response");
        assert_eq!(collect(resp.into_body()).await, "ok");

        let lines = captured.lines();
        let has = |pred: &dyn Fn(&String) -> bool| lines.iter().any(pred);
        assert!(
            has(&|l| l.starts_with("span request:")
                && l.contains("method=GET")
                && l.contains("/traced")),
            "no request span: {lines:#?}"
        );
        assert!(
            has(
                &|l| l.starts_with("event tower_http::trace::on_request in request:")
                    && l.contains("started processing request")
            ),
            "no on_request event: {lines:#?}"
        );
        assert!(
            has(
                &|l| l.starts_with("event tower_http::trace::on_response in request:")
                    && l.contains("finished processing request")
                    && l.contains("status=200")
            ),
            "no on_response event: {lines:#?}"
        );
    });
}

/// Retries an idempotent request after an error, `left` more times; records each error.
#[derive(Clone)]
struct RetryIdempotent {
    left: usize,
    errors: Arc<Mutex<Vec<String>>>,
}

impl<B: Clone, R> tower::retry::Policy<Request<B>, R, rtlocal::Error> for RetryIdempotent {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<B>,
        result: &mut Result<R, rtlocal::Error>,
    ) -> Option<Self::Future> {
        let Err(e) = result else { return None };
        self.errors.lock().expect("errors").push(e.to_string());
        if self.left == 0 || !req.method().is_idempotent() {
            return None;
        }
        self.left -= 1;
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        Some(req.clone())
    }
}

#[test]
fn retry_resends_a_get_after_a_connection_reset() {
    let server = Server::start(1);
    run(async {
        let client = rtlocal::client().await.expect("client");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let svc = ServiceBuilder::new()
            .retry(RetryIdempotent {
                left: 1,
                errors: Arc::clone(&errors),
            })
            .service(client);
        let resp = tokio::time::timeout(
            HANG_GUARD,
            svc.oneshot(get::<Empty<Bytes>>(&server.url("/again"))),
        )
        .await
        .expect("hang guard")
        .expect("the retry succeeds");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(collect(resp.into_body()).await, "ok");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(server.paths(), ["/again"]);
        let errors = errors.lock().expect("errors").clone();
        assert_eq!(
            errors.len(),
            1,
            "one failed attempt, then the retry: {errors:?}"
        );
    });
}

#[test]
fn in_flight_until_the_response_body_is_dropped() {
    let server = TestServer::start();
    run(async {
        let manager = HttpClientManager::new();
        let client = manager.client().await.expect("client");
        let mut svc = &client;
        std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut svc, cx))
            .await
            .expect("always ready");
        let resp = tokio::time::timeout(HANG_GUARD, svc.call(get::<Body>(&server.url("/"))))
            .await
            .expect("hang guard")
            .expect("response");
        assert_eq!(manager.stats().requests_in_flight, 1);
        drop(resp);
        assert_eq!(manager.stats().requests_in_flight, 0);

        // Through a layer and an owned handle, the body read to its end.
        let svc = ServiceBuilder::new()
            .layer(DecompressionLayer::new())
            .service(client.clone());
        let resp = tokio::time::timeout(HANG_GUARD, svc.oneshot(get::<Body>(&server.url("/"))))
            .await
            .expect("hang guard")
            .expect("response");
        assert_eq!(manager.stats().requests_in_flight, 1);
        assert_eq!(collect(resp.into_body()).await, "hello");
        assert_eq!(manager.stats().requests_in_flight, 0);
    });
}

#[test]
fn a_call_on_another_runtime_is_re_routed() {
    let server = TestServer::start();
    run(async {
        let manager = Arc::new(HttpClientManager::new());
        let m = Arc::clone(&manager);
        let url = server.url("/");
        // A client of a runtime that is alive but idle, with a pooled connection: using that
        // connection from here would hang.
        let idle = IdleRuntime::start(move || async move {
            let client = m.client().await.expect("client");
            let resp = client.get(&url).await.expect("warm-up request");
            common::text(resp).await;
            client
        });
        let foreign = idle.value.clone();
        assert_eq!(server.accepted(), 1);
        assert_eq!(manager.stats().clients_created, 1);

        let svc = ServiceBuilder::new()
            .layer(FollowRedirectLayer::new())
            .service(foreign.clone());
        let resp = tokio::time::timeout(HANG_GUARD, svc.oneshot(get::<Body>(&server.url("/"))))
            .await
            .expect("hang guard: the call used the idle runtime's connection")
            .expect("response");
        assert_eq!(common::text(resp).await, "hello");

        // The call built this runtime's client and was served by it, on a new connection.
        assert_eq!(manager.stats().clients_created, 2);
        let here = manager.client().await.expect("client");
        assert_eq!(manager.stats().clients_created, 2);
        assert_ne!(here.id(), foreign.id());
        assert_eq!(here.runtime_id(), tokio::runtime::Handle::current().id());
        assert_eq!(server.accepted(), 2);
        drop(idle);
    });
}

#[test]
fn the_request_timeout_fires_through_the_service() {
    let server = RawServer::start(Misbehave::NeverAnswer);
    run(async {
        let manager = HttpClientManager::builder()
            .request_timeout(Duration::from_millis(300))
            .build()
            .expect("valid configuration");
        let client = manager.client().await.expect("client");
        let svc = ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .service(client);
        let err = tokio::time::timeout(HANG_GUARD, svc.oneshot(get::<Body>(&server.url("/"))))
            .await
            .expect("hang guard: the request timeout did not fire")
            .err()
            .expect("the server never answers, so the call fails");
        assert!(err.is_timeout(), "{err}");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(manager.stats().requests_in_flight, 0);
    });
}
