//! Idle HTTP/1 connections carried across runtime generations, judged by the server's
//! own counts: a carried connection is reused (one connection across generations, plain
//! and TLS); one the server closed while parked is replaced without an error; a request
//! whose bytes were written is never sent twice; a half-read connection, or one the
//! server said it closes, is never carried; parked connections are closed on the wire by `close_all`, `shutdown`, the
//! idle timeout and their thread's exit; limits count them.
#![cfg(feature = "rustls")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{
    HANG_GUARD, block_on_guarded, current_thread_rt, generation, get_text as get, settle,
};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rtlocal::HttpClientManager;
use tokio::sync::Notify;

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    requests: AtomicUsize,
    posts: AtomicUsize,
}

/// An HTTP/1.1 origin (plain, or TLS with ALPN `http/1.1` only). `/` answers "hello";
/// `/big` a 4 MiB body; a `POST` is read whole, counted, and answered by closing the
/// connection. [`Origin::kill`] closes every connection it holds.
struct Origin {
    addr: SocketAddr,
    cert_pem: Option<String>,
    counts: Arc<Counts>,
    kill: Arc<Notify>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Origin {
    fn plain() -> Origin {
        Self::start(false)
    }

    fn tls() -> Origin {
        Self::start(true)
    }

    fn start(tls: bool) -> Origin {
        Self::start_with(tls, false)
    }

    /// `h2`: ALPN offers only `h2`, and the server speaks HTTP/2.
    fn start_with(tls: bool, h2: bool) -> Origin {
        let rt = common::server_rt();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (acceptor, cert_pem) = if tls {
            let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![key.cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
                )
                .unwrap();
            config.alpn_protocols = vec![if h2 {
                b"h2".to_vec()
            } else {
                b"http/1.1".to_vec()
            }];
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                Some(key.cert.pem()),
            )
        } else {
            (None, None)
        };
        let counts = Arc::new(Counts::default());
        let kill = Arc::new(Notify::new());
        let (c, k) = (Arc::clone(&counts), Arc::clone(&kill));
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let now = c.open.fetch_add(1, Ordering::SeqCst) + 1;
                c.max_open.fetch_max(now, Ordering::SeqCst);
                let (c, k, acceptor) = (Arc::clone(&c), Arc::clone(&k), acceptor.clone());
                tokio::spawn(async move {
                    let killed = k.notified();
                    let c2 = Arc::clone(&c);
                    let svc = service_fn(move |req| handle(req, Arc::clone(&c2)));
                    let serve = async {
                        let builder = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(acceptor) if h2 => {
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    let exec = hyper_util::rt::TokioExecutor::new();
                                    let _ = hyper::server::conn::http2::Builder::new(exec)
                                        .serve_connection(TokioIo::new(tls), svc)
                                        .await;
                                }
                            }
                            Some(acceptor) => {
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                                }
                            }
                            None => {
                                let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                            }
                        }
                    };
                    tokio::select! {
                        () = serve => {}
                        () = killed => {}
                    }
                    c.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Origin {
            addr,
            cert_pem,
            counts,
            kill,
            rt: Some(rt),
        }
    }

    fn url(&self, path: &str) -> String {
        match self.cert_pem {
            Some(_) => format!("https://localhost:{}{path}", self.addr.port()),
            None => format!("http://{}{path}", self.addr),
        }
    }

    fn builder(&self) -> rtlocal::Builder {
        let b = HttpClientManager::builder();
        match &self.cert_pem {
            Some(pem) => b
                .tls_built_in_roots(false)
                .add_root_certificate_pem(pem.as_bytes()),
            None => b,
        }
    }

    fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    fn wait_open(&self, n: usize) -> usize {
        settle(n, || self.open())
    }

    /// Closes every connection the server holds (the client sees them end).
    fn kill(&self) {
        self.kill.notify_waiters();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

type Out = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn full(bytes: impl Into<Bytes>) -> Out {
    Full::new(bytes.into()).boxed()
}

async fn handle(req: Request<Incoming>, c: Arc<Counts>) -> Result<Response<Out>, String> {
    c.requests.fetch_add(1, Ordering::SeqCst);
    if req.method() == http::Method::POST {
        let _ = req.into_body().collect().await;
        c.posts.fetch_add(1, Ordering::SeqCst);
        // No answer: the connection ends.
        return Err("closing without an answer".to_owned());
    }
    if req.uri().path() == "/close" {
        // The last answer on this connection: hyper closes it once the response is out.
        let mut resp = Response::new(full(Bytes::from_static(b"bye")));
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return Ok(resp);
    }
    if req.uri().path() == "/big" {
        return Ok(Response::new(full(vec![b'x'; 4 << 20])));
    }
    if req.uri().path() == "/two-parts" {
        // Chunked: "first" now, "second" 300 ms later.
        let parts = futures_util::stream::unfold(0, |n| async move {
            match n {
                0 => Some((
                    Ok(hyper::body::Frame::data(Bytes::from_static(b"first"))),
                    1,
                )),
                1 => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some((
                        Ok(hyper::body::Frame::data(Bytes::from_static(b"second"))),
                        2,
                    ))
                }
                _ => None,
            }
        });
        return Ok(Response::new(
            http_body_util::StreamBody::new(parts).boxed(),
        ));
    }
    Ok(Response::new(full(Bytes::from_static(b"hello"))))
}

fn carried_across_generations(origin: &Origin) {
    let m = origin.builder().build().unwrap();
    for _ in 0..5 {
        assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
    }
    assert_eq!(
        origin.accepted(),
        1,
        "a generation opened its own connection"
    );
    assert_eq!(origin.counts.requests.load(Ordering::SeqCst), 5);
    let s = m.stats();
    assert_eq!((s.connections_opened, s.connections_open), (1, 1));
    assert_eq!(s.clients_created, 5);
    // The parked connection is the one open, and shutdown closes it on the wire.
    assert_eq!(origin.wait_open(1), 1);
    let report = generation(m.shutdown(HANG_GUARD));
    assert_eq!(report.parked_closed, 1, "{report}");
    assert_eq!(origin.wait_open(0), 0, "a parked connection stayed open");
    assert_eq!(m.stats().connections_open, 0);
}

#[test]
fn a_plain_connection_is_carried_across_generations() {
    carried_across_generations(&Origin::plain());
}

#[test]
fn a_tls_connection_is_carried_across_generations() {
    carried_across_generations(&Origin::tls());
}

#[test]
fn carrying_off_opens_a_connection_per_generation() {
    let origin = Origin::plain();
    let m = origin
        .builder()
        .carry_idle_connections(false)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
        assert_eq!(origin.wait_open(0), 0, "closed at its runtime's teardown");
    }
    assert_eq!(origin.accepted(), 3);
}

/// The server closes the parked connection: the next generation's request goes out on
/// a new connection, without an error.
#[test]
fn a_connection_the_server_closed_while_parked_is_replaced_without_an_error() {
    for tls in [false, true] {
        let origin = Origin::start(tls);
        let m = origin.builder().build().unwrap();
        assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
        assert_eq!(origin.wait_open(1), 1);
        origin.kill();
        assert_eq!(origin.wait_open(0), 0);
        assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
        assert_eq!(origin.accepted(), 2);
    }
}

/// The server's last answer on a connection says `Connection: close`: that connection
/// is neither pooled nor carried, however soon the runtime ends after the body, and the
/// next generation's request goes out on a new connection without an error.
#[test]
fn a_connection_the_server_said_it_closes_is_never_carried() {
    for tls in [false, true] {
        let origin = Origin::start(tls);
        let m = origin.builder().build().unwrap();
        for round in 1..=3 {
            // The runtime is dropped as soon as the body is read.
            assert_eq!(generation(get(&m, &origin.url("/close"))).unwrap(), "bye");
            assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
            // Each `/close` ends its connection; the `/` after it needs a new one,
            // which is carried to the next round's `/close`.
            assert_eq!(origin.accepted(), round + 1, "tls: {tls}, round {round}");
        }
        let s = m.stats();
        assert_eq!(s.requests_failed, 0);
        // Only the `/` connections were carried (to rounds 2 and 3), never a closed one.
        assert_eq!(s.connections_carried, 2, "tls: {tls}");
        generation(m.shutdown(HANG_GUARD));
        assert_eq!(origin.wait_open(0), 0);
    }
}

/// The same within one runtime: the server closes an idle pooled connection, and the
/// next request does not see it.
#[test]
fn a_pooled_connection_the_server_closed_is_replaced_without_an_error() {
    let origin = Origin::plain();
    let m = origin.builder().build().unwrap();
    generation(async {
        assert_eq!(get(&m, &origin.url("/")).await.unwrap(), "hello");
        origin.kill();
        while origin.open() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(get(&m, &origin.url("/")).await.unwrap(), "hello");
    });
    assert_eq!(origin.accepted(), 2);
}

/// A POST goes out whole on a carried connection, which then fails: the request is
/// reported failed and was sent once — the server counts it once.
#[test]
fn a_request_whose_bytes_were_written_is_never_sent_twice() {
    let origin = Origin::plain();
    let m = origin.builder().build().unwrap();
    assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
    let sent = generation(async {
        let c = m.client().await.unwrap();
        let req = Request::post(origin.url("/post"))
            .body(rtlocal::Body::from("payload"))
            .unwrap();
        c.request(req).await.map(|_| ())
    });
    let err = sent.expect_err("the server answered nothing");
    assert!(!err.is_connect(), "{err:#}");
    assert_eq!(
        origin.counts.posts.load(Ordering::SeqCst),
        1,
        "the POST was resent"
    );
    assert_eq!(
        origin.accepted(),
        1,
        "the POST went out on the carried connection"
    );
}

/// A response body left half-read when the runtime ends: its connection is not carried
/// (the rest of the body would be read as the next response); the next generation
/// gets a new connection and a correct answer. Both the rest still on its way (the
/// socket looks quiet when the runtime ends) and the rest already waiting in the
/// socket.
#[test]
fn a_half_read_connection_is_never_carried() {
    for (tls, path) in [
        (false, "/two-parts"),
        (true, "/two-parts"),
        (false, "/big"),
        (true, "/big"),
    ] {
        let origin = Origin::start(tls);
        let m = origin.builder().build().unwrap();
        let rt = current_thread_rt();
        let body = block_on_guarded(&rt, async {
            let c = m.client().await.unwrap();
            let mut body = c.get(&origin.url(path)).await.unwrap().into_body();
            let first = body.frame().await.expect("a frame").expect("data");
            assert!(first.is_data());
            body
        });
        drop(rt);
        drop(body);
        assert_eq!(
            generation(get(&m, &origin.url("/"))).expect("the next generation's request"),
            "hello"
        );
        assert_eq!(
            origin.accepted(),
            2,
            "the half-read connection was carried ({path})"
        );
    }
}

#[test]
fn close_all_closes_parked_connections_and_the_next_client_connects_anew() {
    let origin = Origin::plain();
    let m = origin.builder().build().unwrap();
    assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
    assert_eq!(origin.wait_open(1), 1);
    let report = generation(m.close_all());
    assert_eq!(report.parked_closed, 1, "{report}");
    assert_eq!(origin.wait_open(0), 0);
    assert_eq!(m.stats().connections_open, 0);
    // The manager stays usable.
    assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
    assert_eq!(origin.accepted(), 2);
}

#[test]
fn a_parked_connection_is_closed_at_its_idle_timeout_while_no_runtime_runs() {
    let origin = Origin::plain();
    let m = origin
        .builder()
        .pool_idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
    // No runtime exists now: the timer thread closes it.
    assert_eq!(
        origin.wait_open(0),
        0,
        "a parked connection outlived its idle timeout"
    );
    assert_eq!(m.stats().connections_open, 0);
    assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
    assert_eq!(origin.accepted(), 2);
}

#[test]
fn a_parked_connection_is_closed_when_its_thread_exits() {
    let origin = Arc::new(Origin::plain());
    let m = Arc::new(origin.builder().build().unwrap());
    let (o, m2) = (Arc::clone(&origin), Arc::clone(&m));
    std::thread::spawn(move || {
        assert_eq!(generation(get(&m2, &o.url("/"))).unwrap(), "hello");
        assert_eq!(o.wait_open(1), 1, "parked for this thread's next runtime");
    })
    .join()
    .unwrap();
    assert_eq!(
        origin.wait_open(0),
        0,
        "the exited thread's parked connection stayed open"
    );
    assert_eq!(settle(0, || m.stats().connections_open), 0);
}

/// With one connection allowed per host, a carried connection holds the permit: two
/// concurrent requests of the next generation share it, one after the other.
#[test]
fn limits_count_carried_connections() {
    let origin = Origin::plain();
    let m = origin
        .builder()
        .max_connections_per_host(1)
        .build()
        .unwrap();
    assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
    generation(async {
        let url = origin.url("/");
        let (a, b) = tokio::join!(get(&m, &url), get(&m, &url));
        assert_eq!(
            (a.unwrap(), b.unwrap()),
            ("hello".to_owned(), "hello".to_owned())
        );
    });
    assert_eq!(origin.accepted(), 1);
    assert_eq!(origin.counts.max_open.load(Ordering::SeqCst), 1);
}

/// HTTP/2 connections are not carried (their state is hyper's connection task, which
/// the runtime drops): each generation opens its own, and none stays open after it.
#[test]
fn http2_connections_are_closed_not_carried() {
    let origin = Origin::start_with(true, true);
    let m = origin.builder().build().unwrap();
    for n in 1..=3 {
        assert_eq!(generation(get(&m, &origin.url("/"))).unwrap(), "hello");
        assert_eq!(
            origin.wait_open(0),
            0,
            "an HTTP/2 connection outlived its runtime"
        );
        assert_eq!(origin.accepted(), n);
    }
}

/// With `http2_prior_knowledge`, concurrent first requests to an origin wait for the
/// one HTTP/2 connection the first of them opens, and share it.
#[test]
fn concurrent_first_requests_share_one_http2_connection() {
    let origin = Origin::start_with(true, true);
    let m = origin.builder().http2_prior_knowledge().build().unwrap();
    generation(async {
        let url = origin.url("/");
        let all = futures_util::future::join_all((0..16).map(|_| get(&m, &url))).await;
        for got in all {
            assert_eq!(got.expect("request"), "hello");
        }
    });
    assert_eq!(
        origin.accepted(),
        1,
        "concurrent requests opened more than one connection"
    );
}

/// An origin that chose HTTP/2 by ALPN is remembered by the manager: from the next
/// generation on, concurrent first requests wait for the one connection the first of
/// them opens (TLS handshakes: one per generation, not one per request), although the
/// connection itself is not carried.
#[test]
fn an_origin_that_chose_http2_is_remembered_across_generations() {
    let origin = Origin::start_with(true, true);
    let m = origin.builder().build().unwrap();
    let burst = || {
        generation(async {
            let url = origin.url("/");
            let all = futures_util::future::join_all((0..16).map(|_| get(&m, &url))).await;
            for got in all {
                assert_eq!(got.expect("request"), "hello");
            }
        })
    };
    // The first generation cannot know: its concurrent first requests may each connect.
    burst();
    let first = origin.accepted();
    assert!((1..=16).contains(&first), "{first} connections");
    for n in 1..=3 {
        assert_eq!(
            origin.wait_open(0),
            0,
            "an HTTP/2 connection outlived its runtime"
        );
        burst();
        assert_eq!(
            origin.accepted(),
            first + n,
            "generation {} opened more than one HTTP/2 connection",
            n + 1
        );
    }
}
