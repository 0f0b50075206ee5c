//! Requests on loopback: the managed client against raw hyper-util with the same
//! settings, in the same run.
//!
//! * throughput at concurrency 1 and 64 (HTTP/1 keep-alive, small body);
//! * runtime churn: a new `current_thread` runtime, its first request, drop — managed
//!   vs a fresh raw client each time.
//!
//! `cargo bench --bench requests`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rtlocal::HttpClientManager;

type Raw = HyperClient<HttpConnector, Empty<Bytes>>;

/// hyper-util configured as rtlocal configures it.
fn raw_client() -> Raw {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    HyperClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(http)
}

/// A keep-alive server on its own runtime (one worker, so the client side gets the other core).
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

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Same settings as `raw_client`: no default User-Agent, and a pre-parsed URI.
fn manager() -> HttpClientManager {
    HttpClientManager::builder()
        .user_agent(None)
        .request_timeout(None)
        .build()
        .expect("config")
}

fn get(uri: &http::Uri) -> http::Request<rtlocal::Body> {
    http::Request::get(uri.clone())
        .body(rtlocal::Body::empty())
        .expect("request")
}

async fn managed_get(m: &HttpClientManager, uri: &http::Uri) {
    let c = m.client().await.expect("client");
    let resp = c.request(get(uri)).await.expect("request");
    resp.into_body().collect().await.expect("body");
}

async fn raw_get(c: &Raw, uri: &http::Uri) {
    let resp = c.get(uri.clone()).await.expect("request");
    resp.into_body().collect().await.expect("body");
}

fn throughput(c: &mut Criterion) {
    let (addr, _server) = server();
    let url = format!("http://{addr}/");
    let uri: http::Uri = url.parse().expect("uri");
    let rt = current_thread_rt();
    let m = manager();
    let raw = raw_client();

    let mut g = c.benchmark_group("requests_concurrency_1");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rtlocal", |b| b.iter(|| rt.block_on(managed_get(&m, &uri))));
    g.bench_function("raw_hyper_util", |b| {
        b.iter(|| rt.block_on(raw_get(&raw, &uri)))
    });
    g.finish();

    let mut g = c.benchmark_group("requests_concurrency_64");
    g.throughput(Throughput::Elements(64));
    g.bench_function("rtlocal", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..64 {
                    let uri = uri.clone();
                    let c = m.client().await.expect("client");
                    set.spawn(async move {
                        let resp = c.request(get(&uri)).await.expect("request");
                        resp.into_body().collect().await.expect("body");
                    });
                }
                while set.join_next().await.is_some() {}
            })
        })
    });
    g.bench_function("raw_hyper_util", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..64 {
                    let (c, uri) = (raw.clone(), uri.clone());
                    set.spawn(async move { raw_get(&c, &uri).await });
                }
                while set.join_next().await.is_some() {}
            })
        })
    });
    g.finish();
}

fn churn(c: &mut Criterion) {
    let (addr, _server) = server();
    let url = format!("http://{addr}/");
    let uri: http::Uri = url.parse().expect("uri");
    let m = manager();
    let mut g = c.benchmark_group("runtime_churn");
    g.bench_function("rtlocal", |b| {
        b.iter(|| {
            let rt = current_thread_rt();
            rt.block_on(managed_get(&m, &uri));
            drop(rt);
        })
    });
    g.bench_function("fresh_raw_client", |b| {
        b.iter(|| {
            let rt = current_thread_rt();
            rt.block_on(async {
                let raw = raw_client();
                raw_get(&raw, &uri).await;
            });
            drop(rt);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = throughput, churn
}
criterion_main!(benches);
