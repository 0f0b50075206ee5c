//! A connection attempt left behind by its request still ends at its own deadline. When
//! a pooled connection serves a request first, hyper-util lets the request's own connect
//! go on in the background; a `CONNECT` the proxy never answers, or a TLS handshake the
//! origin never answers, then held its socket until the idle reaper (90 s by default,
//! never with `None`). Now the socket is shut down on the wire at the attempt's deadline,
//! whether the client's runtime is being driven or idles. Judged by the proxy's and the
//! origin's own count of the sockets they hold.
#![cfg(feature = "rustls")]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{HANG_GUARD, read_head, settle_within, text};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rtlocal::{HttpClientManager, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the slow request holds the first connection: long enough for the second
/// request's connect to start and stall, well within the connect timeout (the second
/// request is served by the first connection before its own connect runs out of time).
const SLOW: Duration = Duration::from_millis(300);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A TLS origin (`localhost`, a self-signed certificate). `/slow` answers after
/// [`SLOW`], anything else at once. With `stall_after_first`, every connection after the
/// first is accepted and never answered (no ServerHello); `stalled` counts those still
/// open, as the origin sees them.
struct Origin {
    addr: SocketAddr,
    cert_pem: String,
    stalled: Arc<AtomicUsize>,
    /// Connections ever held unanswered (the judge saw the attempt left behind).
    stalls: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Origin {
    fn start(stall_after_first: bool) -> Origin {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        let cert_pem = key.cert.pem();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
            )
            .expect("a server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = common::server_rt();
        let (listener, addr) = common::bind_on(&rt, "127.0.0.1");
        let stalled = Arc::new(AtomicUsize::new(0));
        let stalls = Arc::new(AtomicUsize::new(0));
        let (stalled2, stalls2) = (Arc::clone(&stalled), Arc::clone(&stalls));
        rt.spawn(async move {
            let mut n = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                n += 1;
                if stall_after_first && n > 1 {
                    stalls2.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(hold(tcp, Arc::clone(&stalled2)));
                    continue;
                }
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(SLOW).await;
                        }
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                            req.uri().path().to_owned(),
                        ))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            cert_pem,
            stalled,
            stalls,
            rt: Some(rt),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }

    fn stalls(&self) -> usize {
        self.stalls.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// An HTTP proxy that tunnels the first `CONNECT` to `origin` and never answers the
/// others; `stalled` counts those still open, as the proxy sees them.
struct StallingProxy {
    addr: SocketAddr,
    stalled: Arc<AtomicUsize>,
    /// Connections ever held unanswered.
    stalls: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl StallingProxy {
    fn start(origin: SocketAddr) -> StallingProxy {
        let rt = common::server_rt();
        let (listener, addr) = common::bind_on(&rt, "127.0.0.1");
        let stalled = Arc::new(AtomicUsize::new(0));
        let stalls = Arc::new(AtomicUsize::new(0));
        let (stalled2, stalls2) = (Arc::clone(&stalled), Arc::clone(&stalls));
        rt.spawn(async move {
            let mut n = 0;
            while let Ok((mut client, _)) = listener.accept().await {
                n += 1;
                if n > 1 {
                    stalls2.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(hold(client, Arc::clone(&stalled2)));
                    continue;
                }
                tokio::spawn(async move {
                    if read_head(&mut client).await.is_none() {
                        return;
                    }
                    let Ok(mut upstream) = TcpStream::connect(origin).await else {
                        return;
                    };
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        StallingProxy {
            addr,
            stalled,
            stalls,
            rt: Some(rt),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }

    fn stalls(&self) -> usize {
        self.stalls.load(Ordering::SeqCst)
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Holds a connection without ever answering, counted in `open` until the peer ends it.
async fn hold(mut stream: TcpStream, open: Arc<AtomicUsize>) {
    open.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 1024];
    // Whatever arrives (a CONNECT, a ClientHello) is read and never answered.
    while let Ok(1..) = stream.read(&mut buf).await {}
    open.fetch_sub(1, Ordering::SeqCst);
}

fn builder(origin: &Origin) -> rtlocal::Builder {
    HttpClientManager::builder()
        .tls_built_in_roots(false)
        .add_root_certificate_pem(origin.cert_pem.as_bytes())
        .connect_timeout(CONNECT_TIMEOUT)
        .request_timeout(REQUEST_TIMEOUT)
        // No idle reaper: only the attempt's own deadline may end the stalled socket.
        .pool_idle_timeout(None)
}

/// Request A holds the one connection for [`SLOW`]; request B starts meanwhile, so it
/// opens a second connection, which stalls; A's connection comes back and serves B,
/// and B's connect is left behind in the background. Both requests succeed.
async fn leave_a_connect_behind(manager: &HttpClientManager, origin: &Origin) {
    let client = manager.client().await.expect("client");
    let slow = {
        let client = client.clone();
        let url = origin.url("/slow");
        tokio::spawn(async move { text(client.get(&url).await.expect("the slow request")).await })
    };
    tokio::time::sleep(SLOW / 5).await;
    let fast = client
        .get(&origin.url("/fast"))
        .await
        .expect("the second request");
    assert_eq!(text(fast).await, "/fast");
    assert_eq!(slow.await.expect("the slow task"), "/slow");
}

fn run<F: std::future::Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    common::block_on_guarded(rt, fut)
}

/// The stalled socket is counted by the judge first (the attempt really was left
/// behind), then ends at its deadline — here while the runtime is driven.
#[test]
fn a_tls_handshake_left_behind_ends_at_its_deadline() {
    let origin = Origin::start(true);
    let manager = builder(&origin).build().expect("a manager");
    let rt = common::current_thread_rt();
    run(&rt, async {
        leave_a_connect_behind(&manager, &origin).await;
        // Keep the runtime driven until the origin has held the second connection and
        // seen it end.
        let bound = tokio::time::Instant::now() + HANG_GUARD;
        while (origin.stalls() == 0 || origin.stalled() != 0) && tokio::time::Instant::now() < bound
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(origin.stalls(), 1, "the second connect did not stall");
    assert_eq!(
        origin.stalled(),
        0,
        "a TLS handshake the origin never answered kept its socket open"
    );
    assert_eq!(
        settle_within(HANG_GUARD, 1, || manager.stats().connections_open),
        1,
        "{:?}",
        manager.stats()
    );
}

/// The same while the client's runtime idles: the deadline is a timer job, not a task
/// of that runtime.
#[test]
fn a_tls_handshake_left_behind_ends_while_the_runtime_idles() {
    let origin = Origin::start(true);
    let manager = builder(&origin).build().expect("a manager");
    let rt = common::current_thread_rt();
    run(&rt, leave_a_connect_behind(&manager, &origin));
    // The runtime is not driven from here on. The origin may accept the stalled
    // connection a little after the requests end: wait until it has.
    assert_eq!(
        settle_within(HANG_GUARD, 1, || origin.stalls()),
        1,
        "the second connect did not stall"
    );
    assert_eq!(
        settle_within(HANG_GUARD, 0, || origin.stalled()),
        0,
        "the stalled handshake's socket outlived its deadline while the runtime idled"
    );
    assert_eq!(
        settle_within(HANG_GUARD, 1, || manager.stats().connections_open),
        1,
        "{:?}",
        manager.stats()
    );
}

/// A `CONNECT` the proxy never answers, left behind the same way, ends at the request
/// timeout from its start; the proxy is the judge.
#[test]
fn a_connect_left_behind_ends_at_its_deadline() {
    let origin = Origin::start(false);
    let proxy = StallingProxy::start(origin.addr);
    let manager = builder(&origin)
        .proxy(Proxy::https(proxy.url()))
        .build()
        .expect("a manager");
    let rt = common::current_thread_rt();
    run(&rt, leave_a_connect_behind(&manager, &origin));
    assert_eq!(
        settle_within(HANG_GUARD, 1, || proxy.stalls()),
        1,
        "the second CONNECT did not stall"
    );
    assert_eq!(
        settle_within(HANG_GUARD, 0, || proxy.stalled()),
        0,
        "a CONNECT the proxy never answered kept its socket open past the request timeout"
    );
    assert_eq!(
        settle_within(HANG_GUARD, 1, || manager.stats().connections_open),
        1,
        "{:?}",
        manager.stats()
    );
}
