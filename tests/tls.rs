//! HTTPS against a local rustls server with a self-signed certificate made in the test:
//! private roots, ALPN (HTTP/2 and HTTP/1.1), untrusted certificates, and close on the
//! wire for TLS connections. Needs the `rustls` feature.
#![cfg(feature = "rustls")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{IdleRuntime, block_on_guarded, current_thread_rt, text};
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
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_pem = key.cert.pem();
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
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
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

fn trusting(server: &TlsServer) -> rtlocal::Builder {
    HttpClientManager::builder()
        .tls_built_in_roots(false)
        .add_root_certificate_pem(server.cert_pem.as_bytes())
}

#[test]
fn https_with_a_private_root_negotiates_http2_by_alpn() {
    let server = TlsServer::start();
    let m = trusting(&server).build().unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let c = m.client().await.unwrap();
        let resp = c.get(&server.url()).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(text(resp).await, "HTTP/2.0");
    });
}

#[test]
fn http1_only_over_tls() {
    let server = TlsServer::start();
    let m = trusting(&server).http1_only().build().unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let resp = m.client().await.unwrap().get(&server.url()).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_11);
        assert_eq!(text(resp).await, "HTTP/1.1");
    });
}

#[test]
fn http2_prior_knowledge_over_tls() {
    let server = TlsServer::start();
    let m = trusting(&server).http2_prior_knowledge().build().unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let resp = m.client().await.unwrap().get(&server.url()).await.unwrap();
        assert_eq!(text(resp).await, "HTTP/2.0");
    });
}

#[test]
fn an_untrusted_certificate_is_a_connect_error() {
    let server = TlsServer::start();
    let m = HttpClientManager::new(); // built-in roots only
    let rt = current_thread_rt();
    let e = block_on_guarded(&rt, async {
        m.client()
            .await
            .unwrap()
            .get(&server.url())
            .await
            .unwrap_err()
    });
    assert!(e.is_connect(), "{e:?}");
    let chain = format!("{e:?}");
    assert!(
        chain.contains("certificate") || chain.contains("Certificate"),
        "{chain}"
    );
}

#[test]
fn invalid_root_pem_is_a_config_error() {
    let e = HttpClientManager::builder()
        .add_root_certificate_pem(b"not a certificate")
        .build()
        .unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("add_root_certificate_pem"),
        "{e}"
    );
}

#[test]
fn close_all_shuts_tls_connections_on_the_wire() {
    let server = TlsServer::start();
    let m = Arc::new(trusting(&server).http1_only().build().unwrap());
    let (m2, url) = (Arc::clone(&m), server.url());
    // The client's runtime stays alive and idle on its own thread.
    let _idle = IdleRuntime::start(move || async move {
        text(m2.client().await.unwrap().get(&url).await.unwrap()).await
    });
    assert_eq!(server.wait_open(1), 1);
    let rt = current_thread_rt();
    let report = block_on_guarded(&rt, m.close_all());
    assert_eq!(report.closed, 1);
    assert_eq!(server.wait_open(0), 0, "the TLS connection is still open");
}

/// A host TLS cannot verify a certificate against (an IPv6 address with a zone) is
/// refused before anything is dialled — through a proxy, that would be a `CONNECT` to
/// it first. The error names the server name, not a failed connect.
#[test]
fn a_name_tls_cannot_verify_against_is_refused_before_dialling() {
    let err = block_on_guarded(&current_thread_rt(), async {
        let manager = HttpClientManager::new();
        let client = manager.client().await.expect("client");
        client
            .get("https://[fe80::1%25eth0]:9/")
            .await
            .expect_err("no TLS name")
    });
    let shown = format!("{err:#}");
    assert!(err.is_connect(), "{shown}");
    assert!(shown.contains("invalid TLS server name"), "{shown}");
}
