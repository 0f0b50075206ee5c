//! Requests on loopback: the managed client against raw hyper-util with the same
//! settings, in the same run.
//!
//! * throughput at concurrency 1 and 64 (HTTP/1 keep-alive, small body);
//! * runtime churn: a new `current_thread` runtime, its first request, drop — managed
//!   vs a fresh raw client each time.
//!
//! `cargo bench --bench requests`

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use rtlocal::HttpClientManager;

mod support;

use support::{Raw, current_thread_rt, get, loopback_server as server, manager, raw_client};

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
