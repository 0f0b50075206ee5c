//! TLS for the benches: a self-signed certificate for `localhost` and `127.0.0.1` (made
//! once per process with rcgen), the server's rustls configuration (ALPN `http/1.1` only,
//! so connections stay HTTP/1), and a hand-written tokio-rustls connector that lets a
//! raw hyper-util legacy client trust it. rtlocal trusts it through
//! [`manager`] (needs the `rustls` feature).
//!
//! Both clients share one `rustls::ClientConfig` per process (rtlocal shares its own
//! across all its clients), so both resume TLS sessions across runtime generations.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub type TlsRaw = HyperClient<TlsConnector, Empty<Bytes>>;

struct Identity {
    cert: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| {
        let key = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("self-signed certificate");
        let cert = key.cert.der().clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
            )
            .expect("server config");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).expect("root");
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Identity {
            cert,
            server: Arc::new(server),
            client: Arc::new(client),
        }
    })
}

/// The acceptor for the bench servers.
pub fn acceptor() -> tokio_rustls::TlsAcceptor {
    tokio_rustls::TlsAcceptor::from(Arc::clone(&identity().server))
}

/// The self-signed certificate, DER-encoded.
pub fn cert_der() -> CertificateDer<'static> {
    identity().cert.clone()
}

/// A manager with support's settings (see `super::manager`) trusting only the bench
/// certificate, offering only HTTP/1.1 in ALPN.
#[cfg(feature = "rustls")]
pub fn manager() -> rtlocal::HttpClientManager {
    rtlocal::HttpClientManager::builder()
        .user_agent(None)
        .request_timeout(None)
        .tls_built_in_roots(false)
        .add_root_certificate_der(cert_der().to_vec())
        .http1_only()
        .build()
        .expect("config")
}

/// A raw hyper-util client with support's settings over [`TlsConnector`].
pub fn raw_client() -> TlsRaw {
    HyperClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(TlsConnector::new())
}

/// support's `HttpConnector` (nodelay, 10 s connect timeout), then a TLS handshake with
/// the process's shared client configuration. `https` only.
#[derive(Clone)]
pub struct TlsConnector {
    http: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    pub fn new() -> TlsConnector {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.enforce_http(false);
        TlsConnector {
            http,
            tls: tokio_rustls::TlsConnector::from(Arc::clone(&identity().client)),
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsConn>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<http::Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (mut http, tls) = (self.http.clone(), self.tls.clone());
        Box::pin(async move {
            if uri.scheme_str() != Some("https") {
                return Err("TlsConnector: https only".into());
            }
            let host = uri.host().ok_or("TlsConnector: no host")?.to_owned();
            let name = ServerName::try_from(host)?;
            let tcp = tower_service::Service::call(&mut http, uri).await?;
            let tls = tls.connect(name, tcp.into_inner()).await?;
            Ok(TokioIo::new(TlsConn(tls)))
        })
    }
}

/// A client TLS stream as hyper-util's connector output.
pub struct TlsConn(tokio_rustls::client::TlsStream<TcpStream>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
