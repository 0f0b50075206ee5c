//! Instruction-count profile of the request path: managed vs raw hyper-util, for
//! `valgrind --tool=callgrind` (wall-clock time on a shared machine is too noisy to
//! compare a few hundred instructions).
//!
//! ```text
//! cargo build --release --example profile_requests
//! valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     target/release/examples/profile_requests <mode> <n>
//! ```
//!
//! Only the `measured` function is counted (it runs on the client thread; a
//! `current_thread` client runtime polls its connections there too), so the server
//! thread and the warm-up are left out. Divide the total by `n`. Modes:
//!
//! * `raw`, `managed`: `n` sequential GETs on one runtime (`managed` without a request
//!   timeout, as raw hyper-util has none; `managed-timeout` with the default 300 s);
//! * `raw-c64`, `managed-c64`: `n` GETs as 64 concurrent tasks;
//! * `floor`: `n` sequential GETs on a bare `hyper::client::conn::http1::SendRequest`
//!   (one connection, driven by hand, as `paired`'s floor);
//! * `raw-churn`, `managed-churn`: `n` times a new `current_thread` runtime, its first
//!   request (a fresh raw client, or the manager's client), drop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rtlocal::HttpClientManager;

type Raw = HyperClient<HttpConnector, Empty<Bytes>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "managed".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let (addr, _server) = server();
    let uri: http::Uri = format!("http://{addr}/").parse().expect("uri");
    let manager = match mode.as_str() {
        "managed-timeout" => HttpClientManager::builder()
            .user_agent(None)
            .build()
            .expect("config"),
        m if m.ends_with("-noidle") => HttpClientManager::builder()
            .user_agent(None)
            .request_timeout(None)
            .pool_idle_timeout(None)
            .build()
            .expect("config"),
        _ => HttpClientManager::builder()
            .user_agent(None)
            .request_timeout(None)
            .build()
            .expect("config"),
    };
    let work = Work {
        mode: mode.trim_end_matches("-timeout").to_owned(),
        uri,
        manager,
        raw: raw_client(),
    };
    // Warm-up: connections, pools, thread-local slots, lazily built statics.
    let rt = new_runtime();
    work.run(&rt, 64.min(n));
    measured(&work, &rt, n);
    drop(rt);
}

struct Work {
    mode: String,
    uri: http::Uri,
    manager: HttpClientManager,
    raw: Raw,
}

#[inline(never)]
fn measured(work: &Work, rt: &tokio::runtime::Runtime, n: usize) {
    work.run(rt, n);
}

impl Work {
    fn run(&self, rt: &tokio::runtime::Runtime, n: usize) {
        match self.mode.as_str() {
            "raw" | "managed" => rt.block_on(async {
                for _ in 0..n {
                    self.one().await;
                }
            }),
            // The floor: one connection driven by hand (its handshake is counted once).
            "floor" => rt.block_on(async {
                let tcp =
                    tokio::net::TcpStream::connect(self.uri.authority().expect("host").as_str())
                        .await
                        .expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                let path: http::Uri = "/".parse().expect("path");
                let host =
                    http::HeaderValue::from_str(self.uri.authority().expect("host").as_str())
                        .expect("host");
                for _ in 0..n {
                    let req = http::Request::get(path.clone())
                        .header(http::header::HOST, host.clone())
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    sender.ready().await.expect("connection");
                    let resp = sender.send_request(req).await.expect("request");
                    resp.into_body().collect().await.expect("body");
                }
            }),
            "raw-c64" | "managed-c64" => rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..64 {
                    let (raw, uri) = (self.raw.clone(), self.uri.clone());
                    let managed = match self.mode.as_str() {
                        "raw-c64" => None,
                        _ => Some(self.manager.client().await.expect("client")),
                    };
                    let per_task = n.div_ceil(64);
                    set.spawn(async move {
                        for _ in 0..per_task {
                            match &managed {
                                None => {
                                    let resp = raw.get(uri.clone()).await.expect("request");
                                    resp.into_body().collect().await.expect("body");
                                }
                                Some(c) => {
                                    let resp = c.request(get(&uri)).await.expect("request");
                                    resp.into_body().collect().await.expect("body");
                                }
                            }
                        }
                    });
                }
                while set.join_next().await.is_some() {}
            }),
            "raw-churn" | "managed-churn" | "managed-churn-noidle" => {
                for _ in 0..n {
                    let rt = new_runtime();
                    rt.block_on(async {
                        if self.mode == "raw-churn" {
                            let c = raw_client();
                            let resp = c.get(self.uri.clone()).await.expect("request");
                            resp.into_body().collect().await.expect("body");
                        } else {
                            self.one().await;
                        }
                    });
                    drop(rt);
                }
            }
            other => panic!("unknown mode {other:?}"),
        }
    }

    async fn one(&self) {
        if self.mode.starts_with("raw") {
            let resp = self.raw.get(self.uri.clone()).await.expect("request");
            resp.into_body().collect().await.expect("body");
        } else {
            let c = self.manager.client().await.expect("client");
            let resp = c.request(get(&self.uri)).await.expect("request");
            resp.into_body().collect().await.expect("body");
        }
    }
}

fn get(uri: &http::Uri) -> http::Request<rtlocal::Body> {
    http::Request::get(uri.clone())
        .body(rtlocal::Body::empty())
        .expect("request")
}

fn new_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// hyper-util configured as rtlocal configures it (nodelay, connect timeout, pool idle
/// timeout with a timer).
fn raw_client() -> Raw {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    HyperClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(http)
}

/// A keep-alive HTTP/1 server on its own thread, answering every request with a small body.
fn server() -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello, world",
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rt)
}
