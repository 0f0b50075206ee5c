//! HTTP proxies against a real proxy: tinyproxy, started by each test on 127.0.0.1 with
//! a config file written into a temp dir, in front of real hyper origins on 127.0.0.1.
//!
//! What the proxy saw is read from its log file (`Request ...: GET http://...`,
//! `Request ...: CONNECT ...`); what the origin saw is recorded by the origin itself (the
//! `Via` header tinyproxy adds, `Proxy-Authorization`, the first byte of each
//! connection).
//!
//! Skips (with a message) when tinyproxy is not installed, unless `CI` is set: then it
//! fails. `.ci/servers` installs it.
//!
//! The environment is process-global: `environment_variables` and
//! `environment_proxies_never_apply_to_loopback` are the only tests that set it, under
//! the write side of `ENV`; every other test holds the read side.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{HANG_GUARD, text};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rtlocal::{HttpClientManager, Proxy};
use tokio::sync::RwLock;

const VIA_NAME: &str = "rtlocal-test-proxy";

const LOCALHOST_V4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Held shared by every test, exclusively by the one that sets the environment (async:
/// the guards live across awaits; a failed test poisons nothing).
static ENV: RwLock<()> = RwLock::const_new(());

// ---------------------------------------------------------------------------------------
// tinyproxy

struct Tinyproxy {
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Child,
}

fn tinyproxy_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("tinyproxy"))
        .find(|p| p.is_file())
}

impl Tinyproxy {
    /// Starts tinyproxy allowing `CONNECT` to `connect_ports`, with `BasicAuth` when
    /// `auth` is given. `None` (after saying so) when tinyproxy is not installed and
    /// `CI` is not set.
    fn start(connect_ports: &[u16], auth: Option<(&str, &str)>) -> Option<Tinyproxy> {
        let Some(bin) = tinyproxy_binary() else {
            if std::env::var_os("CI").is_some() {
                panic!("tinyproxy is not installed and CI is set: run .ci/servers (as root)");
            }
            eprintln!(
                "SKIPPED: tinyproxy is not installed (apt-get install tinyproxy, or run \
                 .ci/servers as root); the proxy tests need a real proxy"
            );
            return None;
        };
        static N: AtomicUsize = AtomicUsize::new(0);
        // A port freed just before tinyproxy binds it can be taken meanwhile: retry.
        for attempt in 0..5 {
            let dir = std::env::temp_dir().join(format!(
                "rtlocal-proxy-{}-{}-{attempt}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log = dir.join("tinyproxy.log");
            let mut conf = format!(
                "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 64\n\
                 LogLevel Info\nLogFile \"{}\"\nPidFile \"{}\"\nViaProxyName \"{VIA_NAME}\"\n",
                log.display(),
                dir.join("tinyproxy.pid").display()
            );
            for p in connect_ports {
                conf.push_str(&format!("ConnectPort {p}\n"));
            }
            if let Some((user, pass)) = auth {
                conf.push_str(&format!("BasicAuth {user} {pass}\n"));
            }
            let conf_path = dir.join("tinyproxy.conf");
            std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
            let child = Command::new(&bin)
                .arg("-d")
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn tinyproxy");
            let mut proxy = Tinyproxy {
                port,
                dir,
                log,
                child,
            };
            if proxy.wait_ready() {
                return Some(proxy);
            }
            eprintln!(
                "tinyproxy did not start on port {port} (attempt {attempt}):\n{}",
                proxy.log()
            );
        }
        panic!("tinyproxy did not start after 5 attempts");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + HANG_GUARD;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.log().contains("Accepting connections")
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url_with(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (hang guard) for `needle` in the log; whether it appeared.
    async fn logged(&self, needle: &str) -> bool {
        eventually(|| self.log().contains(needle)).await
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `probe` (hang guard) until it holds; whether it did.
async fn eventually(mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + HANG_GUARD;
    while !probe() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

// ---------------------------------------------------------------------------------------
// Origins

/// What the origin saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    via: Option<String>,
    proxy_authorization: bool,
}

#[derive(Default)]
struct OriginState {
    seen: Mutex<Vec<Seen>>,
    open: AtomicUsize,
    accepted: AtomicUsize,
    /// Connections whose first byte was not a TLS handshake record (TLS origin only).
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    cleartext: AtomicUsize,
}

/// A hyper origin on 127.0.0.1 (own runtime) answering "hello from <path>"; paths
/// starting with `/slow` get their response headers and a body that never ends.
struct Origin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    #[cfg(feature = "rustls")]
    cert_pem: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop<T: Acceptor>(
    listener: tokio::net::TcpListener,
    tls: Option<T>,
    st: Arc<OriginState>,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (st, tls) = (Arc::clone(&st), tls.clone());
        st.accepted.fetch_add(1, Ordering::SeqCst);
        st.open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let svc_state = Arc::clone(&st);
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let st = Arc::clone(&svc_state);
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let path = req.uri().path().to_owned();
                    let slow = path.starts_with("/slow");
                    st.seen.lock().expect("seen").push(Seen {
                        path: path.clone(),
                        via: header("via"),
                        proxy_authorization: header("proxy-authorization").is_some(),
                    });
                    let body = if slow {
                        Held::default().boxed()
                    } else {
                        Full::new(Bytes::from(format!("hello from {path}"))).boxed()
                    };
                    Ok::<_, Infallible>(http::Response::new(body))
                }
            });
            match tls {
                None => {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                }
                Some(tls) => tls.serve(tcp, svc, &st).await,
            }
            st.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

impl Origin {
    fn http() -> Origin {
        Origin::serve(None::<()>, LOCALHOST_V4)
    }

    /// A plain origin on this machine's address on its default route (not loopback), so
    /// that the proxy variables apply to it; `None` (after saying so) when there is none.
    fn http_off_loopback() -> Option<Origin> {
        // Connecting a UDP socket sends nothing: it only picks the source address.
        let ip = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.connect((Ipv4Addr::new(203, 0, 113, 1), 9)).map(|()| s))
            .and_then(|s| s.local_addr())
            .map(|a| a.ip());
        match ip {
            Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => {
                Some(Origin::serve(None::<()>, (ip, 0).into()))
            }
            other => {
                eprintln!(
                    "SKIPPED: no address off loopback here ({other:?}); the proxy \
                     variables never apply to loopback"
                );
                None
            }
        }
    }

    /// A plain origin on `[::1]`; `None` (after saying so) when the machine has no IPv6
    /// loopback.
    fn http_on_ipv6_loopback() -> Option<Origin> {
        if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
            eprintln!("SKIPPED: no IPv6 loopback here ([::1]: {e})");
            return None;
        }
        Some(Origin::serve(None::<()>, (Ipv6Addr::LOCALHOST, 0).into()))
    }

    /// A TLS origin with a certificate for `localhost` only.
    #[cfg(feature = "rustls")]
    fn https() -> Origin {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
            )
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut origin = Origin::serve(Some(acceptor), LOCALHOST_V4);
        origin.cert_pem = Some(key.cert.pem());
        origin
    }

    /// Serves on a runtime of its own thread, so tests can start and drop origins
    /// from inside their own runtime.
    fn serve<T: Acceptor>(tls: Option<T>, bind: SocketAddr) -> Origin {
        let state = Arc::new(OriginState::default());
        let st = Arc::clone(&state);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("origin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("origin runtime");
                let listener = rt
                    .block_on(tokio::net::TcpListener::bind(bind))
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                rt.spawn(accept_loop(listener, tls, st));
                let _ = rt.block_on(stopped);
            })
            .expect("origin thread");
        let addr = addr_rx.recv().expect("origin address");
        Origin {
            addr,
            state,
            #[cfg(feature = "rustls")]
            cert_pem: None,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self, path: &str) -> Option<Seen> {
        let seen = self.state.seen.lock().expect("seen");
        seen.iter().find(|s| s.path == path).cloned()
    }

    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A response body that sends one chunk and then never ends: the response is in flight
/// until the client cuts it.
#[derive(Default)]
struct Held {
    sent: bool,
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.sent {
            // Never woken: nothing more is ever sent.
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"start",
        )))))
    }
}

/// How an origin speaks on an accepted socket: TLS (and checks the first byte), or not
/// at all (plain origins never call it).
trait Acceptor: Clone + Send + Sync + 'static {
    fn serve<S>(
        self,
        tcp: tokio::net::TcpStream,
        svc: S,
        st: &Arc<OriginState>,
    ) -> impl Future<Output = ()> + Send
    where
        S: hyper::service::Service<
                http::Request<Incoming>,
                Response = http::Response<OriginBody>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static;
}

impl Acceptor for () {
    async fn serve<S>(self, _: tokio::net::TcpStream, _: S, _: &Arc<OriginState>) {}
}

#[cfg(feature = "rustls")]
impl Acceptor for tokio_rustls::TlsAcceptor {
    async fn serve<S>(self, tcp: tokio::net::TcpStream, svc: S, st: &Arc<OriginState>)
    where
        S: hyper::service::Service<
                http::Request<Incoming>,
                Response = http::Response<OriginBody>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let mut first = [0u8; 1];
        // 0x16: a TLS handshake record. Anything else is cleartext sent to a TLS port.
        if !matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == 0x16) {
            st.cleartext.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if let Ok(tls) = self.accept(tcp).await {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        }
    }
}

/// A free port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn via_proxy(seen: &Option<Seen>) -> bool {
    seen.as_ref()
        .and_then(|s| s.via.as_deref())
        .is_some_and(|v| v.contains(VIA_NAME))
}

// ---------------------------------------------------------------------------------------
// Tests

/// A plain `http` request goes to the proxy in absolute form: the proxy logs the full
/// URI, and the origin sees the proxy's connection (its `Via` header), not ours.
#[tokio::test]
async fn plain_http_goes_through_the_proxy() {
    let _env = ENV.read().await;
    let origin = Origin::http();
    let Some(proxy) = Tinyproxy::start(&[origin.port()], None) else {
        return;
    };
    let manager = HttpClientManager::builder()
        .proxy(Proxy::http(proxy.url()))
        .build()
        .expect("build");
    let client = manager.client().await.expect("client");
    let resp = client
        .get(&origin.url("/plain?x=1"))
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "hello from /plain");
    let absolute = format!("GET http://{}/plain?x=1 HTTP/1.1", origin.addr);
    assert!(
        proxy.logged(&absolute).await,
        "the proxy's log lacks {absolute:?}:\n{}",
        proxy.log()
    );
    let seen = origin.seen("/plain");
    assert!(
        via_proxy(&seen),
        "the origin saw no Via from the proxy: {seen:?}"
    );
    assert!(!seen.is_some_and(|s| s.proxy_authorization));
}

/// `https` goes through `CONNECT`, then TLS to the origin: the proxy logs the CONNECT,
/// the origin sees a TLS handshake first (never cleartext), the certificate is checked
/// for the origin's name, and HTTP/2 is negotiated inside the tunnel.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn https_goes_through_connect_then_tls() {
    let _env = ENV.read().await;
    let origin = Origin::https();
    let Some(proxy) = Tinyproxy::start(&[origin.port()], None) else {
        return;
    };
    let manager = HttpClientManager::builder()
        .proxy(Proxy::all(proxy.url()))
        .tls_built_in_roots(false)
        .add_root_certificate_pem(origin.cert_pem.as_deref().expect("pem").as_bytes())
        .build()
        .expect("build");
    let client = manager.client().await.expect("client");
    let url = format!("https://localhost:{}/secret-path", origin.port());
    let resp = client.get(&url).await;
    assert_eq!(
        origin.state.cleartext.load(Ordering::SeqCst),
        0,
        "the origin received cleartext"
    );
    let resp = resp.expect("https through the proxy");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(text(resp).await, "hello from /secret-path");
    let connect = format!("CONNECT localhost:{} HTTP/1.1", origin.port());
    assert!(
        proxy.logged(&connect).await,
        "the proxy's log lacks {connect:?}:\n{}",
        proxy.log()
    );
    assert!(
        !proxy.log().contains("secret-path"),
        "the proxy saw the request path: {}",
        proxy.log()
    );
    let seen = origin
        .seen("/secret-path")
        .expect("the origin saw the request");
    assert!(seen.via.is_none() && !seen.proxy_authorization, "{seen:?}");
    assert_eq!(origin.state.cleartext.load(Ordering::SeqCst), 0);

    // The certificate is for `localhost`: through the same proxy, 127.0.0.1 is refused.
    let wrong_name = format!("https://127.0.0.1:{}/wrong-name", origin.port());
    let err = client
        .get(&wrong_name)
        .await
        .expect_err("name mismatch accepted");
    let msg = format!("{err:#}");
    assert!(err.is_connect(), "{msg}");
    assert!(msg.contains("certificate"), "{msg}");
    assert!(origin.seen("/wrong-name").is_none());
    assert_eq!(origin.state.cleartext.load(Ordering::SeqCst), 0);
}

/// `no_proxy` bypasses the proxy for hosts, domains with their subdomains, IPs and CIDR
/// blocks: the origin sees a direct connection (no Via) and the proxy's log never shows
/// the request; what is not exempt still goes through.
#[tokio::test]
async fn no_proxy_bypasses_the_proxy() {
    let _env = ENV.read().await;
    let origin = Origin::http();
    let Some(proxy) = Tinyproxy::start(&[origin.port()], None) else {
        return;
    };
    for (i, list) in [
        "127.0.0.1",
        "10.0.0.1, 127.0.0.0/8",
        "localhost",
        ".localhost",
        "*",
    ]
    .into_iter()
    .enumerate()
    {
        let manager = HttpClientManager::builder()
            .proxy(Proxy::all(proxy.url()).no_proxy(list))
            .build()
            .expect("build");
        let client = manager.client().await.expect("client");
        let (host, path) = if list.contains("localhost") {
            ("localhost", format!("/direct-{i}"))
        } else {
            ("127.0.0.1", format!("/direct-{i}"))
        };
        let url = format!("http://{host}:{}{path}", origin.port());
        let resp = client.get(&url).await.expect("direct request");
        assert_eq!(resp.status(), 200, "{list}");
        let seen = origin.seen(&path);
        assert!(seen.is_some() && !via_proxy(&seen), "{list}: {seen:?}");
    }
    // Not exempt by a list naming another host: through the proxy. Its log line also
    // shows the log is current, so the exempt requests' absence below means something.
    let manager = HttpClientManager::builder()
        .proxy(Proxy::all(proxy.url()).no_proxy("example.com, 10.0.0.0/8"))
        .build()
        .expect("build");
    let client = manager.client().await.expect("client");
    let resp = client.get(&origin.url("/proxied")).await.expect("request");
    assert_eq!(resp.status(), 200);
    assert!(via_proxy(&origin.seen("/proxied")));
    assert!(proxy.logged("/proxied HTTP/1.1").await, "{}", proxy.log());
    assert!(!proxy.log().contains("/direct-"), "{}", proxy.log());
}

/// `no_proxy` takes an IPv6 address the way a URL writes it, `[::1]`, with or without a
/// port (Go takes the latter), besides `::1` and `::1/128`: a request to an origin on
/// `[::1]` goes direct and the proxy sees nothing of it. An entry with a port exempts
/// that port only: another port goes through the proxy.
#[tokio::test]
async fn no_proxy_takes_bracketed_ipv6_addresses() {
    let _env = ENV.read().await;
    let Some(origin) = Origin::http_on_ipv6_loopback() else {
        return;
    };
    let Some(proxy) = Tinyproxy::start(&[origin.port()], None) else {
        return;
    };
    let port = origin.port();
    for (i, list) in [
        "[::1]".to_owned(),
        format!("[::1]:{port}"),
        format!("example.com, [::1]:{port}, 10.0.0.0/8"),
        "::1".to_owned(),
        "::1/128".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let manager = HttpClientManager::builder()
            .proxy(Proxy::all(proxy.url()).no_proxy(list.as_str()))
            .build()
            .expect("build");
        let client = manager.client().await.expect("client");
        let path = format!("/v6-direct-{i}");
        let resp = client.get(&origin.url(&path)).await;
        let resp = resp.unwrap_or_else(|e| panic!("{list}: {e}"));
        assert_eq!(resp.status(), 200, "{list}");
        let seen = origin.seen(&path);
        assert!(seen.is_some() && !via_proxy(&seen), "{list}: {seen:?}");
    }
    // Another port than the entry's: through the proxy, to [::1]. Its log line also
    // shows the log is current, so the exempt requests' absence below means something.
    let manager = HttpClientManager::builder()
        .proxy(Proxy::all(proxy.url()).no_proxy(format!("[::1]:{}", dead_port())))
        .build()
        .expect("build");
    let client = manager.client().await.expect("client");
    let resp = client.get(&origin.url("/v6-proxied")).await;
    assert_eq!(resp.expect("request").status(), 200);
    assert!(via_proxy(&origin.seen("/v6-proxied")));
    assert!(
        proxy.logged("/v6-proxied HTTP/1.1").await,
        "{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("/v6-direct-"), "{}", proxy.log());
}

/// Proxy credentials reach the proxy, and only the proxy: tinyproxy with `BasicAuth`
/// answers 407 without them and serves with them (from the URI or `basic_auth`); the
/// origin never sees `Proxy-Authorization`. For `https`, the credentials go on the
/// CONNECT: without them the tunnel is refused with a clear error.
#[tokio::test]
async fn proxy_credentials_reach_the_proxy() {
    let _env = ENV.read().await;
    let origin = Origin::http();
    #[cfg(feature = "rustls")]
    let tls_origin = Origin::https();
    #[cfg(feature = "rustls")]
    let ports = [origin.port(), tls_origin.port()];
    #[cfg(not(feature = "rustls"))]
    let ports = [origin.port()];
    let Some(proxy) = Tinyproxy::start(&ports, Some(("alice", "s3cret"))) else {
        return;
    };
    let build = |p: Proxy| {
        let b = HttpClientManager::builder().proxy(p);
        #[cfg(feature = "rustls")]
        let b = b
            .tls_built_in_roots(false)
            .add_root_certificate_pem(tls_origin.cert_pem.as_deref().expect("pem").as_bytes());
        b.build().expect("build")
    };

    let anonymous = build(Proxy::all(proxy.url()));
    let client = anonymous.client().await.expect("client");
    let resp = client.get(&origin.url("/anon")).await.expect("request");
    assert_eq!(resp.status(), 407);
    assert!(origin.seen("/anon").is_none());

    for (name, manager) in [
        ("uri", build(Proxy::all(proxy.url_with("alice", "s3cret")))),
        (
            "basic_auth",
            build(Proxy::all(proxy.url_with("alice", "wrong")).basic_auth("alice", "s3cret")),
        ),
    ] {
        let client = manager.client().await.expect("client");
        let path = format!("/auth-{name}");
        let resp = client.get(&origin.url(&path)).await.expect("request");
        assert_eq!(resp.status(), 200, "{name}");
        let seen = origin.seen(&path);
        assert!(via_proxy(&seen), "{name}: {seen:?}");
        assert!(!seen.is_some_and(|s| s.proxy_authorization), "{name}");

        #[cfg(feature = "rustls")]
        {
            let url = format!("https://localhost:{}{path}", tls_origin.port());
            let resp = client.get(&url).await.expect("https with credentials");
            assert_eq!(resp.status(), 200, "{name}");
            let seen = tls_origin.seen(&path).expect("seen");
            assert!(!seen.proxy_authorization, "{name}: {seen:?}");
        }
    }

    #[cfg(feature = "rustls")]
    {
        let client = anonymous.client().await.expect("client");
        let url = format!("https://localhost:{}/anon-tls", tls_origin.port());
        let err = client
            .get(&url)
            .await
            .expect_err("tunnel without credentials");
        let msg = format!("{err:#}");
        assert!(err.is_connect(), "{msg}");
        assert!(msg.contains("CONNECT through proxy 127.0.0.1:"), "{msg}");
        assert!(msg.contains("authorization required"), "{msg}");
        assert!(tls_origin.seen("/anon-tls").is_none());
        assert_eq!(tls_origin.state.cleartext.load(Ordering::SeqCst), 0);
    }
}

/// A proxy nothing listens on: a connect error naming the proxy and where it was set;
/// nothing reaches the origin (no fallback to a direct connection).
#[tokio::test]
async fn unreachable_proxy_is_a_connect_error_naming_it() {
    let _env = ENV.read().await;
    let origin = Origin::http();
    let port = dead_port();
    let manager = HttpClientManager::builder()
        .proxy(Proxy::all(format!("http://127.0.0.1:{port}")))
        .build()
        .expect("build");
    let client = manager.client().await.expect("client");
    let mut urls = vec![origin.url("/never")];
    if cfg!(feature = "rustls") {
        urls.push(format!("https://localhost:{}/never", origin.port()));
    }
    for url in urls {
        let err = client
            .get(&url)
            .await
            .expect_err("connected through nothing");
        let msg = format!("{err:#}");
        assert!(err.is_connect(), "{url}: {msg}");
        assert!(
            msg.contains(&format!("proxy 127.0.0.1:{port} (from Builder::proxy)")),
            "{url}: {msg}"
        );
    }
    assert_eq!(origin.accepted(), 0);
    assert_eq!(manager.stats().connections_open, 0);

    // An unusable proxy setting is refused by build, naming it.
    let err = HttpClientManager::builder()
        .proxy(Proxy::https("socks5h://127.0.0.1:1080"))
        .build()
        .expect_err("socks accepted");
    assert!(
        err.is_config() && err.to_string().contains("Proxy::https"),
        "{err}"
    );
}

/// A proxied connection is a tracked socket: it counts in `connections_open` and in the
/// connection limits, and `close_all` / `shutdown` shut it on the wire: the proxy logs
/// the connection closed (and, for a pooled CONNECT tunnel, the origin sees it close).
///
/// tinyproxy closes plain `http` connections after each response, so those are held
/// open by a response whose body never ends (`/slow`), which the close then cuts.
#[tokio::test]
async fn close_all_and_shutdown_close_proxied_connections() {
    let _env = ENV.read().await;
    let origin = Origin::http();
    let other = Origin::http();
    #[cfg(feature = "rustls")]
    let tls_origin = Origin::https();
    #[cfg(feature = "rustls")]
    let ports = [origin.port(), other.port(), tls_origin.port()];
    #[cfg(not(feature = "rustls"))]
    let ports = [origin.port(), other.port()];
    let Some(proxy) = Tinyproxy::start(&ports, None) else {
        return;
    };
    let builder = || {
        let b = HttpClientManager::builder()
            .proxy(Proxy::all(proxy.url()))
            .close_timeout(Duration::from_millis(50));
        #[cfg(feature = "rustls")]
        let b = b
            .tls_built_in_roots(false)
            .add_root_certificate_pem(tls_origin.cert_pem.as_deref().expect("pem").as_bytes());
        b
    };
    let closed_by_proxy = || proxy.log().matches("Closed connection between").count();

    // close_all: a request in flight through the proxy (and a pooled CONNECT tunnel).
    let manager = Arc::new(builder().build().expect("build"));
    let client = manager.client().await.expect("client");
    #[cfg(feature = "rustls")]
    {
        let url = format!("https://localhost:{}/pooled", tls_origin.port());
        let resp = client.get(&url).await.expect("https request");
        assert_eq!(text(resp).await, "hello from /pooled");
        assert!(eventually(|| tls_origin.open() == 1).await);
    }
    let resp = client.get(&origin.url("/slow-1")).await.expect("headers");
    let in_flight = tokio::spawn(resp.into_body().collect());
    let expected = if cfg!(feature = "rustls") { 2 } else { 1 };
    assert_eq!(manager.stats().connections_open, expected);
    let before = closed_by_proxy();
    let report = manager.close_all().await;
    assert_eq!(report.closed, 1);
    assert_eq!(manager.stats().connections_open, 0);
    let cut = in_flight.await.expect("join");
    assert!(cut.is_err(), "the in-flight response survived close_all");
    assert!(
        eventually(|| closed_by_proxy() >= before + expected as usize).await,
        "the proxy did not see the connections close:\n{}",
        proxy.log()
    );
    #[cfg(feature = "rustls")]
    assert!(
        eventually(|| tls_origin.open() == 0).await,
        "the origin's end of the CONNECT tunnel is still open"
    );

    // shutdown: the same.
    let client = manager.client().await.expect("client");
    let resp = client.get(&origin.url("/slow-2")).await.expect("headers");
    let in_flight = tokio::spawn(resp.into_body().collect());
    assert_eq!(manager.stats().connections_open, 1);
    let before = closed_by_proxy();
    manager.shutdown(Duration::from_millis(50)).await;
    assert_eq!(manager.stats().connections_open, 0);
    assert!(in_flight.await.expect("join").is_err());
    assert!(
        eventually(|| closed_by_proxy() > before).await,
        "the proxy did not see the connection close:\n{}",
        proxy.log()
    );

    // The limits count proxied sockets: with max_connections(1), a connection through
    // the proxy to one origin leaves no room for another origin until it closes.
    let limited = builder().max_connections(1).build().expect("build");
    let client = limited.client().await.expect("client");
    let held = client
        .get(&origin.url("/slow-held"))
        .await
        .expect("headers");
    let waiting = tokio::spawn({
        let (client, url) = (client.clone(), other.url("/waits"));
        async move { client.get(&url).await.map(|r| r.status()) }
    });
    // Not a timing claim: only that the request still waits, and nothing reached the
    // other origin, while the one permit is held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a second connection beyond max_connections"
    );
    assert_eq!(other.accepted(), 0);
    assert_eq!(limited.stats().connections_open, 1);
    drop(held); // ends that connection, and frees its permit
    let status = tokio::time::timeout(HANG_GUARD, waiting).await;
    let status = status.expect("hang guard").expect("join").expect("request");
    assert_eq!(status, 200);
    assert_eq!(other.accepted(), 1);
}

/// h2c (HTTP/2 prior knowledge on plain `http`) is refused through a proxy with an error
/// saying why, instead of confusing the HTTP/1.1 proxy.
#[tokio::test]
async fn h2c_through_a_proxy_is_refused() {
    let _env = ENV.read().await;
    let origin = Origin::http();
    let Some(proxy) = Tinyproxy::start(&[origin.port()], None) else {
        return;
    };
    let manager = HttpClientManager::builder()
        .proxy(Proxy::http(proxy.url()))
        .http2_prior_knowledge()
        .build()
        .expect("build");
    let client = manager.client().await.expect("client");
    let err = client
        .get(&origin.url("/h2c"))
        .await
        .expect_err("h2c via proxy");
    assert!(format!("{err:#}").contains("h2c"), "{err:#}");
    assert_eq!(origin.accepted(), 0);
}

const PROXY_VARS: [&str; 9] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
];

/// Sets exactly `vars` among the proxy variables.
fn set_env(vars: &[(&str, &str)]) {
    for name in PROXY_VARS {
        // SAFETY: the caller holds `ENV` exclusively, and every other test of this binary
        // holds it shared for its whole run, so no other thread reads the environment.
        unsafe { std::env::remove_var(name) };
    }
    for (name, value) in vars {
        // SAFETY: as above.
        unsafe { std::env::set_var(name, value) };
    }
}

/// Clears the proxy variables when dropped, so that a failed assertion leaves none set
/// for the next test.
struct ClearEnvOnDrop;

impl Drop for ClearEnvOnDrop {
    fn drop(&mut self) {
        set_env(&[]);
    }
}

/// The environment, read by `build` by default: `HTTP_PROXY` (and `http_proxy`),
/// `ALL_PROXY`, `NO_PROXY` (with ports); an unusable variable ignored (direct, as unset);
/// CGI; and both opt-outs: `no_proxy()` and an explicit proxy. The origin is on this
/// machine's address off loopback: the variables never apply to loopback.
#[tokio::test]
async fn environment_variables() {
    let _env = ENV.write().await;
    let _clear = ClearEnvOnDrop;
    let Some(origin) = Origin::http_off_loopback() else {
        return;
    };
    let Some(proxy) = Tinyproxy::start(&[origin.port()], None) else {
        return;
    };
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let ip = origin.addr.ip();
    // (name, variables, whether the request goes through the proxy)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, bool);
    let cases: Vec<Case<'_>> = vec![
        ("upper", vec![("HTTP_PROXY", proxy.url())], true),
        ("lower", vec![("http_proxy", proxy.url())], true),
        (
            "upper-wins",
            vec![("HTTP_PROXY", proxy.url()), ("http_proxy", dead.clone())],
            true,
        ),
        ("all", vec![("ALL_PROXY", proxy.url())], true),
        (
            "no-proxy-ip",
            vec![("HTTP_PROXY", dead.clone()), ("NO_PROXY", ip.to_string())],
            false,
        ),
        (
            "no-proxy-cidr",
            vec![
                ("http_proxy", dead.clone()),
                ("no_proxy", format!("{ip}/24")),
            ],
            false,
        ),
        (
            "no-proxy-port",
            vec![
                ("HTTP_PROXY", dead.clone()),
                ("NO_PROXY", format!("example.com, {}", origin.addr)),
            ],
            false,
        ),
        (
            "no-proxy-other-port",
            vec![
                ("HTTP_PROXY", proxy.url()),
                ("NO_PROXY", format!("{ip}:{}", dead_port())),
            ],
            true,
        ),
        ("https-only", vec![("HTTPS_PROXY", dead.clone())], false),
        (
            "unusable",
            vec![("HTTP_PROXY", "socks5://127.0.0.1:1".into())],
            false,
        ),
        (
            "cgi",
            vec![
                ("HTTP_PROXY", dead.clone()),
                ("REQUEST_METHOD", "GET".into()),
            ],
            false,
        ),
    ];
    for (name, vars, proxied) in cases {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        set_env(&vars);
        // The real path: HttpClientManager::new() reads the environment.
        let manager = HttpClientManager::new();
        set_env(&[]); // read once, at build: later changes do not matter
        let client = manager.client().await.expect("client");
        let path = format!("/env-{name}");
        let resp = client.get(&origin.url(&path)).await;
        let resp = resp.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.status(), 200, "{name}");
        let seen = origin.seen(&path);
        assert_eq!(via_proxy(&seen), proxied, "{name}: {seen:?}");
    }

    // Managed reqwest clients read the variables the same way.
    #[cfg(feature = "reqwest")]
    {
        let manager = rtlocal::ReqwestManager::new(rtlocal::ReqwestFactory::new());
        set_env(&[("HTTP_PROXY", &proxy.url())]);
        let client = manager.client().await.expect("client"); // built, reading them
        set_env(&[]);
        let resp = client.get(origin.url("/env-reqwest")).send().await;
        assert_eq!(resp.expect("reqwest request").status(), 200);
        let seen = origin.seen("/env-reqwest");
        assert!(via_proxy(&seen), "{seen:?}");
    }

    // Opt-outs: no_proxy() ignores the environment; an explicit proxy replaces it.
    set_env(&[("HTTP_PROXY", &dead)]);
    let off = HttpClientManager::builder().no_proxy().build();
    let explicit = HttpClientManager::builder()
        .proxy(Proxy::http(proxy.url()))
        .build();
    set_env(&[]);
    let (off, explicit) = (off.expect("build"), explicit.expect("build"));
    let client = off.client().await.expect("client");
    let resp = client.get(&origin.url("/env-off")).await.expect("direct");
    assert_eq!(resp.status(), 200);
    assert!(!via_proxy(&origin.seen("/env-off")));
    let client = explicit.client().await.expect("client");
    let resp = client
        .get(&origin.url("/env-explicit"))
        .await
        .expect("proxied");
    assert_eq!(resp.status(), 200);
    assert!(via_proxy(&origin.seen("/env-explicit")));
}

/// The proxy variables never apply to loopback (`127.0.0.1`, `localhost`, `[::1]`), with
/// no `NO_PROXY` at all: with every variable naming a dead proxy, requests to origins on
/// loopback succeed, direct, from rtlocal's clients and from managed reqwest clients;
/// a destination off loopback does go to that proxy (and fails, naming it). An explicit
/// `Builder::proxy` still applies to loopback: through a real tinyproxy.
#[tokio::test]
async fn environment_proxies_never_apply_to_loopback() {
    let _env = ENV.write().await;
    let _clear = ClearEnvOnDrop;
    let origin = Origin::http();
    let v6 = Origin::http_on_ipv6_loopback();
    let Some(proxy) = Tinyproxy::start(&[origin.port()], None) else {
        return;
    };
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let mut urls = vec![
        origin.url("/lo-ip"),
        format!("http://localhost:{}/lo-name", origin.port()),
    ];
    urls.extend(v6.as_ref().map(|v6| v6.url("/lo-v6")));
    // TEST-NET-3: never reached, the request goes to the (dead) proxy first.
    let off_loopback = "http://203.0.113.1:9/off-loopback";

    set_env(&[
        ("HTTP_PROXY", &dead),
        ("http_proxy", &dead),
        ("HTTPS_PROXY", &dead),
        ("ALL_PROXY", &dead),
    ]);
    let manager = HttpClientManager::new();
    #[cfg(feature = "reqwest")]
    let reqwest_manager = rtlocal::ReqwestManager::new(rtlocal::ReqwestFactory::new());
    #[cfg(feature = "reqwest")]
    let reqwest_client = reqwest_manager.client().await.expect("reqwest client");
    set_env(&[]);

    let client = manager.client().await.expect("client");
    for url in &urls {
        let resp = client.get(url).await;
        let resp = resp.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.status(), 200, "{url}");
    }
    let err = client.get(off_loopback).await.expect_err("through nothing");
    assert!(format!("{err:#}").contains("(from HTTP_PROXY)"), "{err:#}");

    #[cfg(feature = "reqwest")]
    {
        for url in &urls {
            let url = url.replace("/lo-", "/reqwest-lo-");
            let resp = reqwest_client.get(&url).send().await;
            let resp = resp.unwrap_or_else(|e| panic!("reqwest {url}: {e}"));
            assert_eq!(resp.status(), 200, "reqwest {url}");
        }
        let sent = tokio::time::timeout(HANG_GUARD, reqwest_client.get(off_loopback).send());
        let err = sent.await.expect("hang guard: not through the dead proxy?");
        assert!(err.is_err_and(|e| e.is_connect()), "reqwest went direct");
    }
    for path in ["/lo-ip", "/lo-name", "/reqwest-lo-ip", "/reqwest-lo-name"] {
        let seen = origin.seen(path);
        let expected = cfg!(feature = "reqwest") || !path.starts_with("/reqwest");
        assert_eq!(seen.is_some(), expected, "{path}: {seen:?}");
        assert!(!via_proxy(&seen), "{path}: {seen:?}");
    }

    // An explicit proxy applies to loopback.
    let explicit = HttpClientManager::builder()
        .proxy(Proxy::all(proxy.url()))
        .build()
        .expect("build");
    let client = explicit.client().await.expect("client");
    let resp = client.get(&origin.url("/lo-explicit")).await;
    assert_eq!(resp.expect("through the proxy").status(), 200);
    assert!(via_proxy(&origin.seen("/lo-explicit")));
    assert!(
        proxy.logged("/lo-explicit HTTP/1.1").await,
        "{}",
        proxy.log()
    );
}
