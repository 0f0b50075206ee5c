//! Red team: a credential given to the client — in a request URI, a URI that does not
//! parse, a redirect's `Location`, a proxy URI, a proxy's `basic_auth`, a proxy
//! environment variable, a default `Authorization` or `Cookie` header — appears in no
//! error (`Display`, `{:#}`, `Debug`, any link of its source chain), no log line, no span
//! field (every level, this crate's and hyper's), no metric label, and no `Debug` of the
//! builder, manager, client or layer. Real servers and proxies on 127.0.0.1.
//!
//! One test function: it installs the process's tracing subscriber and metrics recorder
//! and sets proxy environment variables, which parallel tests would race on.

mod common;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE, LOCATION};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rtlocal::{Body, HttpClientManager, Proxy};
use tokio::io::AsyncWriteExt;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::FollowRedirectLayer;

/// Every credential of this test contains it.
const SECRET: &str = "hunter2";

/// Everything the tracing subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("captured").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("captured")).into_owned()
    }
}

/// A hyper server: `/redirect` → 302 to a `Location` with credentials in it, anything
/// else → 200.
struct Server {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start() -> Server {
        let rt = common::server_rt();
        let (listener, addr) = common::bind_on(&rt, "127.0.0.1");
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| async move {
                        let resp = if req.uri().path() == "/redirect" {
                            Response::builder()
                                .status(StatusCode::FOUND)
                                .header(
                                    LOCATION,
                                    format!("http://admin:{SECRET}@127.0.0.2:{}/", addr.port()),
                                )
                                .body(Full::new(Bytes::new()))
                        } else {
                            Response::builder().body(Full::new(Bytes::from_static(b"ok")))
                        };
                        Ok::<_, Infallible>(resp.expect("a response"))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { addr, rt: Some(rt) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A proxy that answers every request (a `CONNECT` or a forwarded one) with `status`,
/// after reading its head.
struct AnsweringProxy {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl AnsweringProxy {
    fn start(status: &'static str) -> AnsweringProxy {
        let rt = common::server_rt();
        let (listener, addr) = common::bind_on(&rt, "127.0.0.1");
        rt.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if common::read_head(&mut stream).await.is_none() {
                        return;
                    }
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nproxy-authenticate: Basic realm=\"x\"\r\n\
                         content-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(resp.as_bytes()).await;
                });
            }
        });
        AnsweringProxy { addr, rt: Some(rt) }
    }
}

impl Drop for AnsweringProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Every way an error can be printed: its forms and each link of its chain.
fn forms(err: &rtlocal::Error) -> Vec<String> {
    let mut out = vec![err.to_string(), format!("{err:#}"), format!("{err:?}")];
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push(s.to_string());
        out.push(format!("{s:?}"));
        source = s.source();
    }
    out
}

fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn no_credential_reaches_an_error_a_log_a_span_or_a_metric() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    #[cfg(feature = "metrics")]
    let snapshotter = {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder");
        snapshotter
    };

    let server = Server::start();
    let refusing = AnsweringProxy::start("407 Proxy Authentication Required");
    let bad_gateway = AnsweringProxy::start("502 Bad Gateway");
    let mut shown: Vec<(String, String)> = Vec::new();
    let mut errors = 0;
    let mut record_err = |what: &str, err: rtlocal::Error, shown: &mut Vec<(String, String)>| {
        errors += 1;
        for form in forms(&err) {
            shown.push((what.to_owned(), form));
        }
    };

    let mut defaults = HeaderMap::new();
    defaults.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {SECRET}")).unwrap(),
    );
    defaults.insert(
        COOKIE,
        HeaderValue::from_str(&format!("s={SECRET}")).unwrap(),
    );
    let port = server.addr.port();
    let rt = common::current_thread_rt();

    // 1. Credentials in request URIs, parsable or not, and in a redirect's Location.
    let builder = HttpClientManager::builder()
        .name("redaction")
        .no_proxy()
        .default_headers(defaults.clone());
    shown.push(("builder Debug".into(), format!("{builder:?}")));
    let manager = builder.build().expect("a manager");
    common::block_on_guarded(&rt, async {
        let client = manager.client().await.expect("a client");
        for uri in [
            format!("http://admin:{SECRET}@127.0.0.1:{port}/"),
            format!("http://admin:{SECRET} x@127.0.0.1:{port}/"),
            format!("http://admin:{SECRET}/x@127.0.0.1:{port}/"),
            format!("http://{SECRET}@127.0.0.1:{port}/"),
            format!("ftp://admin:{SECRET}@127.0.0.1:{port}/"),
            format!("http://admin:{SECRET}@127.0.0.1:99999/"),
        ] {
            let err = client.get(&uri).await.expect_err(&uri);
            record_err("get", err, &mut shown);
            if let Ok(req) = Request::get(uri.as_str()).body(Body::empty()) {
                let err = client.request(req).await.expect_err(&uri);
                record_err("request", err, &mut shown);
            }
        }
        // Default credentials on real requests (spans and metrics see them go by).
        let resp = client.get(&server.url("/")).await.expect("a response");
        assert_eq!(resp.status(), StatusCode::OK);
        // A redirect to a URI with credentials, followed by tower-http.
        let svc = ServiceBuilder::new()
            .layer(client.default_credentials_layer())
            .layer(FollowRedirectLayer::new())
            .service(client.clone());
        shown.push(("layered service Debug".into(), format!("{svc:?}")));
        let err = svc
            .oneshot(
                Request::get(server.url("/redirect"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .expect_err("the Location carries credentials");
        record_err("redirect", err, &mut shown);
        shown.push(("client Debug".into(), format!("{client:?}")));
        shown.push(("manager Debug".into(), format!("{manager:?}")));
        let report = manager.close_all().await;
        shown.push(("report".into(), format!("{report} {report:?}")));
    });

    // 2. Proxies with credentials: in the URI, by basic_auth, unreachable, refusing (407),
    //    failing (502), and a proxy URI that does not pass the checks.
    let dead = dead_port();
    let proxies = [
        Proxy::all(format!("http://user:{SECRET}@127.0.0.1:{dead}")),
        Proxy::all(format!("http://127.0.0.1:{dead}")).basic_auth("user", SECRET),
        Proxy::all(format!("http://user:{SECRET}@{}", refusing.addr)),
        Proxy::all(format!("http://{}", refusing.addr)).basic_auth("user", SECRET),
        Proxy::all(format!("http://user:{SECRET}@{}", bad_gateway.addr)),
    ];
    for proxy in proxies {
        shown.push(("proxy Debug".into(), format!("{proxy:?}")));
        let manager = HttpClientManager::builder()
            .proxy(proxy)
            .build()
            .expect("a manager");
        common::block_on_guarded(&rt, async {
            let client = manager.client().await.expect("a client");
            for uri in [
                format!("http://127.0.0.1:{port}/"),
                format!("https://localhost:{port}/"),
            ] {
                match client.get(&uri).await {
                    Err(err) => record_err("proxied", err, &mut shown),
                    Ok(resp) => shown.push(("proxied response".into(), format!("{resp:?}"))),
                }
            }
            shown.push(("proxied manager".into(), format!("{manager:?}")));
        });
    }
    for bad in [
        format!("http://user:{SECRET}@127.0.0.1:99999"),
        format!("socks5://user:{SECRET}@127.0.0.1:1080"),
        format!("http://user:{SECRET} x@127.0.0.1:1"),
    ] {
        let err = HttpClientManager::builder()
            .proxy(Proxy::all(bad.clone()))
            .build()
            .expect_err(&bad);
        record_err("proxy config", err, &mut shown);
    }

    // 3. Proxy environment variables with credentials: unusable ones are warned about,
    //    usable ones are used. Set here, in the binary's only test.
    for (var, value) in [
        (
            "HTTP_PROXY",
            format!("http://user:{SECRET}@127.0.0.1:99999"),
        ),
        (
            "HTTP_PROXY",
            format!("http://user:{SECRET}@127.0.0.1:{dead}"),
        ),
    ] {
        // SAFETY: this binary's only test; no other thread reads the environment now.
        unsafe { std::env::set_var(var, &value) };
        unsafe { std::env::remove_var("NO_PROXY") };
        unsafe { std::env::remove_var("no_proxy") };
        let manager = HttpClientManager::new();
        common::block_on_guarded(&rt, async {
            let client = manager.client().await.expect("a client");
            if let Err(err) = client.get("http://example.invalid/").await {
                record_err("env proxy", err, &mut shown);
            }
        });
        unsafe { std::env::remove_var(var) };
    }

    #[cfg(feature = "metrics")]
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        for label in key.labels() {
            shown.push((
                format!("metric {} label {}", key.name(), label.key()),
                label.value().to_owned(),
            ));
        }
    }
    let log = captured.text();

    // The judges could see: errors were made, spans and warnings were written.
    assert!(errors >= 20, "only {errors} errors");
    assert!(log.contains("http.request"), "no request span captured");
    assert!(
        log.contains("WARN"),
        "no warning captured (the unusable HTTP_PROXY)"
    );
    #[cfg(feature = "metrics")]
    assert!(shown.iter().any(|(what, _)| what.starts_with("metric")));

    let leaks: Vec<_> = shown
        .iter()
        .filter(|(_, text)| text.contains(SECRET))
        .collect();
    assert!(leaks.is_empty(), "credentials shown: {leaks:#?}");
    let leaked_lines: Vec<_> = log.lines().filter(|l| l.contains(SECRET)).collect();
    assert!(
        leaked_lines.is_empty(),
        "credentials logged: {leaked_lines:#?}"
    );
}
