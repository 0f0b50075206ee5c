//! HTTP upgrades on a managed client: a `101 Switching Protocols` handshake through
//! `hyper::upgrade::on`, bytes echoed on the upgraded connection, which the manager keeps
//! counting (and can shut down on the wire) until the client drops it.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{HANG_GUARD, settle_within};
use http::{Request, Response, StatusCode, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rtlocal::{Body, HttpClientManager};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// What the server saw of upgraded connections.
#[derive(Default)]
struct Upgrades {
    /// Connections upgraded.
    started: AtomicUsize,
    /// Upgraded connections whose echo loop is still running.
    open: AtomicUsize,
    /// Upgraded connections that ended with end-of-stream or an error (a reset) on read.
    ended: AtomicUsize,
}

/// A hyper server that answers `Upgrade: echo` with 101 and then echoes every byte on
/// the upgraded connection until it ends, or until it reads `bye` (then it closes it).
struct EchoServer {
    addr: SocketAddr,
    upgrades: Arc<Upgrades>,
    rt: Option<tokio::runtime::Runtime>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let upgrades = Arc::new(Upgrades::default());
        let u = Arc::clone(&upgrades);
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let u = Arc::clone(&u);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, Arc::clone(&u)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        EchoServer {
            addr,
            upgrades,
            rt: Some(rt),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/echo", self.addr)
    }

    fn started(&self) -> usize {
        self.upgrades.started.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.upgrades.open.load(Ordering::SeqCst)
    }

    fn ended(&self) -> usize {
        self.upgrades.ended.load(Ordering::SeqCst)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn answer(
    mut req: Request<Incoming>,
    upgrades: Arc<Upgrades>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let wants_echo = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes() == b"echo");
    let mut resp = Response::new(Empty::new());
    if !wants_echo {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(resp);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        upgrades.started.fetch_add(1, Ordering::SeqCst);
        upgrades.open.fetch_add(1, Ordering::SeqCst);
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                // The server's own end of the conversation.
                Ok(n) if &buf[..n] == b"bye" => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        upgrades.open.fetch_sub(1, Ordering::SeqCst);
        upgrades.ended.fetch_add(1, Ordering::SeqCst);
    });
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    resp.headers_mut()
        .insert(header::UPGRADE, header::HeaderValue::from_static("echo"));
    Ok(resp)
}

/// Runs `fut` on a fresh `current_thread` runtime under the hang guard. Servers are
/// started before it: they block on their own runtime while binding.
fn run<F: std::future::Future>(fut: F) -> F::Output {
    common::block_on_guarded(&common::current_thread_rt(), fut)
}

fn upgrade_request(url: &str) -> Request<Body> {
    Request::get(url)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "echo")
        .body(Body::empty())
        .expect("valid request")
}

/// Upgrades a connection of `manager`'s client: through the tower `Service` when
/// `as_service`, else through `Client::request`.
async fn upgrade(manager: &HttpClientManager, url: &str, as_service: bool) -> TokioIo<Upgraded> {
    let client = manager.client().await.expect("client");
    let req = upgrade_request(url);
    let resp = if as_service {
        client.oneshot(req).await
    } else {
        client.request(req).await
    }
    .expect("handshake response");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    TokioIo::new(hyper::upgrade::on(resp).await.expect("upgraded"))
}

async fn round_trip(io: &mut TokioIo<Upgraded>, msg: &[u8]) {
    io.write_all(msg)
        .await
        .expect("write on the upgraded connection");
    let mut back = vec![0u8; msg.len()];
    io.read_exact(&mut back)
        .await
        .expect("read on the upgraded connection");
    assert_eq!(back, msg);
}

#[test]
fn upgraded_connection_echoes_and_counts_until_dropped() {
    let server = EchoServer::start();
    let manager = HttpClientManager::new();
    run(async {
        for as_service in [false, true] {
            let mut io = upgrade(&manager, &server.url(), as_service).await;
            round_trip(&mut io, b"ping").await;
            round_trip(&mut io, b"a second message").await;
            let stats = manager.stats();
            // The handshake is over (its response had no body); the connection is not.
            assert_eq!(stats.requests_in_flight, 0);
            assert_eq!(stats.connections_open, 1, "as_service={as_service}");
            assert_eq!(server.open(), 1);

            drop(io);
            assert_eq!(manager.stats().connections_open, 0);
            assert_eq!(settle_within(HANG_GUARD, 0, || server.open()), 0);
        }
        assert_eq!(server.started(), 2);
        assert_eq!(server.ended(), 2);
        assert_eq!(manager.stats().connections_opened, 2);

        // The server ends it: the client reads the end, and the socket counts as open
        // until the client drops its side.
        let mut io = upgrade(&manager, &server.url(), false).await;
        io.write_all(b"bye")
            .await
            .expect("write on the upgraded connection");
        let mut buf = [0u8; 16];
        let read = io.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "read after bye: {read:?}");
        assert_eq!(settle_within(HANG_GUARD, 0, || server.open()), 0);
        assert_eq!(manager.stats().connections_open, 1);
        drop(io);
        assert_eq!(manager.stats().connections_open, 0);
    });
}

/// `close_all` and `shutdown` end an open upgraded connection on the wire: the server's
/// read ends, and so does the client's.
#[test]
fn close_all_and_shutdown_end_an_upgraded_connection() {
    let server = EchoServer::start();
    let manager = HttpClientManager::new();
    run(async {
        for shut_down in [false, true] {
            let mut io = upgrade(&manager, &server.url(), shut_down).await;
            round_trip(&mut io, b"before the close").await;
            assert_eq!(manager.stats().connections_open, 1);

            let report = if shut_down {
                manager.shutdown(Duration::from_secs(5)).await
            } else {
                manager.close_all().await
            };
            assert_eq!(report.closed, 1, "{report}");
            assert_eq!(manager.stats().connections_open, 0);
            // The server saw the connection end...
            assert_eq!(settle_within(HANG_GUARD, 0, || server.open()), 0);
            // ...and the client's side reads its end (EOF or an error), never hangs.
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(HANG_GUARD, io.read(&mut buf))
                .await
                .expect("hang guard: the client's read did not end");
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "read after the close: {read:?}"
            );
            drop(io);
            assert_eq!(manager.stats().connections_open, 0);
        }
        assert_eq!(server.started(), 2);
        assert_eq!(server.ended(), 2);
    });
}

/// An upgraded connection is not an idle pooled one: the idle reaper leaves it alone
/// however long the client has no request in flight.
#[test]
fn the_idle_reaper_leaves_an_upgraded_connection_alone() {
    let server = EchoServer::start();
    let manager = HttpClientManager::builder()
        .pool_idle_timeout(Duration::from_millis(200))
        .build()
        .expect("valid configuration");
    run(async {
        let mut io = upgrade(&manager, &server.url(), false).await;
        round_trip(&mut io, b"ping").await;
        // A plain request beside it: its pooled connection is idle-closed as usual.
        let client = manager.client().await.expect("client");
        let resp = client.get(&server.url()).await.expect("plain request");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        drop(resp);
        assert_eq!(manager.stats().connections_open, 2);
        // Well past the idle timeout, with no request in flight.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        round_trip(&mut io, b"still here").await;
        assert_eq!(manager.stats().connections_open, 1);
        assert_eq!(server.open(), 1);
    });
}

/// An upgraded connection kept by the application outlives its runtime: the runtime's
/// teardown shuts it down on the wire and uncounts it (it is registered with a reactor
/// that is gone, so no use to anyone), and a later `shutdown` finds nothing left open.
#[test]
fn an_upgraded_connection_whose_runtime_was_dropped_is_shut_and_uncounted() {
    let server = EchoServer::start();
    let manager = HttpClientManager::new();
    let rt = common::current_thread_rt();
    let io = common::block_on_guarded(&rt, async {
        let mut io = upgrade(&manager, &server.url(), false).await;
        round_trip(&mut io, b"before the runtime goes").await;
        io
    });
    assert_eq!(manager.stats().connections_open, 1);
    assert_eq!(server.open(), 1);
    drop(rt); // the application still holds `io`
    assert_eq!(
        settle_within(HANG_GUARD, 0, || server.open()),
        0,
        "the server still sees the upgraded connection of a dropped runtime"
    );
    assert_eq!(manager.stats().connections_open, 0, "{:?}", manager.stats());
    let report = run(manager.shutdown(Duration::from_secs(5)));
    assert_eq!(report.forced, 0, "{report}");
    assert_eq!(report.not_closed_on_wire, 0, "{report}");
    drop(io);
    assert_eq!(manager.stats().connections_open, 0, "counted out twice");
    assert_eq!(server.ended(), 1);
}
