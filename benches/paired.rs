//! Managed vs raw hyper-util, *interleaved*: each round runs one sample of each
//! (alternating which goes first), so both see the same machine noise. On a shared or
//! virtualised machine kernel time swings 2× between identical runs; the median ratio
//! of interleaved samples is stable where back-to-back criterion groups are not.
//!
//! * runtime churn: a new `current_thread` runtime, its first request, drop — managed vs
//!   a fresh raw client each time;
//! * request throughput: batches of 32 sequential requests (concurrency 1) and of 64
//!   concurrent requests (concurrency 64) on one runtime, managed vs one raw client with
//!   the same settings;
//! * the floor: the same batches of 32 sequential requests, managed vs a bare
//!   `hyper::client::conn::http1::SendRequest` on one connection (no pool, no client:
//!   what an HTTP/1 request costs hyper itself).
//!
//! `cargo bench --bench paired` (rounds: `-- 3000`)

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

fn main() {
    let rounds = support::rounds("paired", 3000, 20);
    let (addr, _server) = support::loopback_server();
    let uri: http::Uri = format!("http://{addr}/").parse().expect("uri");
    let m = support::manager();
    let churn = |raw: bool| {
        let t = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            if raw {
                let c = support::raw_client();
                let resp = c.get(uri.clone()).await.expect("request");
                resp.into_body().collect().await.expect("body");
            } else {
                let c = m.client().await.expect("client");
                let resp = c.request(support::get(&uri)).await.expect("request");
                resp.into_body().collect().await.expect("body");
            }
        });
        drop(rt);
        t.elapsed()
    };
    // Warm-up.
    for _ in 0..rounds.min(50) {
        churn(true);
        churn(false);
    }
    let churns = interleave(rounds, churn);
    report(
        "runtime churn (new runtime + first request + drop)",
        "raw_hyper_util",
        &churns,
        1,
    );

    let rt = support::current_thread_rt();
    let raw_client = support::raw_client();
    for (concurrency, batch) in [(1usize, 32usize), (64, 64)] {
        let sample = |raw: bool| {
            let t = Instant::now();
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                let per_task = batch / concurrency;
                for _ in 0..concurrency {
                    let (c, uri) = (raw_client.clone(), uri.clone());
                    let managed = if raw {
                        None
                    } else {
                        Some(m.client().await.expect("client"))
                    };
                    set.spawn(async move {
                        for _ in 0..per_task {
                            match &managed {
                                None => {
                                    let resp = c.get(uri.clone()).await.expect("request");
                                    resp.into_body().collect().await.expect("body");
                                }
                                Some(mc) => {
                                    let resp =
                                        mc.request(support::get(&uri)).await.expect("request");
                                    resp.into_body().collect().await.expect("body");
                                }
                            }
                        }
                    });
                }
                while set.join_next().await.is_some() {}
            });
            t.elapsed()
        };
        for _ in 0..rounds.min(20) {
            sample(true);
            sample(false);
        }
        let samples = interleave((rounds / 10).max(5), sample);
        report(
            &format!("requests, concurrency {concurrency} (batches of {batch})"),
            "raw_hyper_util",
            &samples,
            batch,
        );
    }

    // The floor: one connection driven by hand, each request sent on its `SendRequest`.
    let (mut sender, path, host) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        // What the legacy client sends: origin-form target and a Host header.
        let path: http::Uri = "/".parse().expect("path");
        let host = http::HeaderValue::from_str(&addr.to_string()).expect("host");
        (sender, path, host)
    });
    const BATCH: usize = 32;
    let mc = rt.block_on(m.client()).expect("client");
    let mut sample = |floor: bool| {
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..BATCH {
                if floor {
                    let req = http::Request::get(path.clone())
                        .header(http::header::HOST, host.clone())
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    sender.ready().await.expect("connection");
                    let resp = sender.send_request(req).await.expect("request");
                    resp.into_body().collect().await.expect("body");
                } else {
                    let resp = mc.request(support::get(&uri)).await.expect("request");
                    resp.into_body().collect().await.expect("body");
                }
            }
        });
        t.elapsed()
    };
    for _ in 0..rounds.min(20) {
        sample(true);
        sample(false);
    }
    let samples = interleave((rounds / 10).max(5), &mut sample);
    report(
        &format!("requests, concurrency 1 (batches of {BATCH}), against the floor"),
        "bare_send_request",
        &samples,
        BATCH,
    );
}

/// `rounds` samples of each side, alternating which goes first. Returns (raw, managed).
fn interleave(
    rounds: usize,
    mut sample: impl FnMut(bool) -> Duration,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut raw, mut managed) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds {
        if i % 2 == 0 {
            raw.push(sample(true));
            managed.push(sample(false));
        } else {
            managed.push(sample(false));
            raw.push(sample(true));
        }
    }
    raw.sort();
    managed.sort();
    (raw, managed)
}

fn report(
    what: &str,
    baseline: &str,
    (raw, managed): &(Vec<Duration>, Vec<Duration>),
    per_sample: usize,
) {
    let q = |v: &[Duration], f: f64| v[((v.len() - 1) as f64 * f) as usize];
    println!("\n{what}: {} interleaved samples each", raw.len());
    println!(
        "{:<18} {:>12} {:>12} {:>12} {:>14}",
        "", "p25", "median", "p75", "per item (med)"
    );
    for (name, v) in [(baseline, raw), ("rtlocal", managed)] {
        println!(
            "{name:<18} {:>12.1?} {:>12.1?} {:>12.1?} {:>14.1?}",
            q(v, 0.25),
            q(v, 0.5),
            q(v, 0.75),
            q(v, 0.5) / per_sample as u32
        );
    }
    println!(
        "ratio rtlocal / {baseline}: median {:.3}, p25 {:.3}",
        q(managed, 0.5).as_secs_f64() / q(raw, 0.5).as_secs_f64(),
        q(managed, 0.25).as_secs_f64() / q(raw, 0.25).as_secs_f64()
    );
}
