//! Idle timeouts over TLS (HTTP/2 by ALPN, and HTTP/1.1) hold while the client's runtime
//! idles between jobs, and the next job's request succeeds (issue 12, class 2). Needs
//! the `rustls` feature.
#![cfg(feature = "rustls")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Worker, assert_no_panics, block_on_guarded, settle, text, watch_panics};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rtlocal::HttpClientManager;

struct TlsServer {
    addr: SocketAddr,
    cert_pem: String,
    open: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl TlsServer {
    /// Answers every request with its HTTP version, e.g. `HTTP/2.0`.
    fn start() -> TlsServer {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("tls server setup");
        let cert_pem = key.cert.pem();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls server setup")
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
            )
            .expect("tls server setup");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tls server setup");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("tls server setup");
        let addr = listener.local_addr().expect("tls server setup");
        let open = Arc::new(AtomicUsize::new(0));
        let o = Arc::clone(&open);
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, o) = (acceptor.clone(), Arc::clone(&o));
                o.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let svc = hyper::service::service_fn(
                            |req: http::Request<hyper::body::Incoming>| async move {
                                let v = format!("{:?}", req.version());
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    Bytes::from(v),
                                )))
                            },
                        );
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TlsServer {
            addr,
            cert_pem,
            open,
            rt: Some(rt),
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/", self.addr.port())
    }

    fn wait_open(&self, n: usize) -> usize {
        let deadline = Instant::now() + common::HANG_GUARD;
        while self.open.load(Ordering::SeqCst) != n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn idle_tls_connection_is_closed_and_the_next_request_works(http1_only: bool) {
    watch_panics();
    let server = TlsServer::start();
    let mut builder = HttpClientManager::builder()
        .tls_built_in_roots(false)
        .add_root_certificate_pem(server.cert_pem.as_bytes())
        .pool_idle_timeout(Duration::from_millis(300));
    if http1_only {
        builder = builder.http1_only();
    }
    let manager = Arc::new(builder.build().expect("build"));
    let worker = Worker::start();
    let want = if http1_only { "HTTP/1.1" } else { "HTTP/2.0" };
    for round in 1..=3 {
        let (m, url) = (Arc::clone(&manager), server.url());
        let body = worker.run(move |rt| {
            block_on_guarded(rt, async move {
                let client = m.client().await?;
                Ok::<_, rtlocal::Error>(text(client.get(&url).await?).await)
            })
        });
        assert_eq!(
            body.expect("request after idling").as_str(),
            want,
            "round {round}"
        );
        // The worker's runtime idles now.
        assert_eq!(
            server.wait_open(0),
            0,
            "round {round}: the idle connection stayed open"
        );
        assert_eq!(settle(0, || manager.stats().connections_open), 0);
    }
    drop(worker);
    assert_no_panics();
}

#[test]
fn idle_http2_over_tls_is_closed_while_the_runtime_idles() {
    idle_tls_connection_is_closed_and_the_next_request_works(false);
}

#[test]
fn idle_http1_over_tls_is_closed_while_the_runtime_idles() {
    idle_tls_connection_is_closed_and_the_next_request_works(true);
}
