//! `Sharing::PerThread` vs `Sharing::PerRuntime` on a `multi_thread` runtime, *interleaved*
//! (each round runs one sample of each, alternating which goes first): time and TCP
//! connections opened for the same workload, from a fresh 4-worker runtime each sample
//! (so every sample starts with empty pools, as a task-runner's restarted runtime does).
//!
//! * `hopping`: 64 tasks one after another, one request each — they land on whichever
//!   worker is free, so per-thread pools each open their own connection;
//! * `concurrent`: 64 tasks at once, 4 sequential requests each.
//!
//! `cargo bench --bench sharing` (rounds: `-- 200`)

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use rtlocal::{HttpClientManager, Sharing};

#[derive(Clone, Copy)]
enum Workload {
    Hopping,
    Concurrent,
}

fn main() {
    let rounds = support::rounds("sharing", 200, 5);
    let (addr, _server) = support::loopback_server();
    let uri: http::Uri = format!("http://{addr}/").parse().expect("uri");
    let manager = |sharing| {
        Arc::new(
            HttpClientManager::builder()
                .user_agent(None)
                .request_timeout(None)
                .sharing(sharing)
                .build()
                .expect("config"),
        )
    };
    let per_thread = manager(Sharing::PerThread);
    let per_runtime = manager(Sharing::PerRuntime);

    for (workload, name, requests) in [
        (
            Workload::Hopping,
            "hopping: 64 tasks in turn, 1 request each",
            64,
        ),
        (
            Workload::Concurrent,
            "concurrent: 64 tasks at once, 4 requests each",
            256,
        ),
    ] {
        // One sample: (elapsed, connections opened).
        let sample = |m: &Arc<HttpClientManager>| {
            let before = m.stats().connections_opened;
            let t = Instant::now();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(run(workload, m, &uri));
            drop(rt);
            (t.elapsed(), m.stats().connections_opened - before)
        };
        for _ in 0..rounds.min(10) {
            sample(&per_thread);
            sample(&per_runtime);
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            if i % 2 == 0 {
                a.push(sample(&per_thread));
                b.push(sample(&per_runtime));
            } else {
                b.push(sample(&per_runtime));
                a.push(sample(&per_thread));
            }
        }
        report(name, requests, &mut a, &mut b);
    }
}

async fn run(workload: Workload, m: &Arc<HttpClientManager>, uri: &http::Uri) {
    let one = |m: Arc<HttpClientManager>, uri: http::Uri, n: usize| async move {
        for _ in 0..n {
            let c = m.client().await.expect("client");
            let resp = c.request(support::get(&uri)).await.expect("request");
            resp.into_body().collect().await.expect("body");
        }
    };
    match workload {
        Workload::Hopping => {
            for _ in 0..64 {
                tokio::spawn(one(Arc::clone(m), uri.clone(), 1))
                    .await
                    .expect("task");
            }
        }
        Workload::Concurrent => {
            let tasks: Vec<_> = (0..64)
                .map(|_| tokio::spawn(one(Arc::clone(m), uri.clone(), 4)))
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
        }
    }
}

fn report(
    what: &str,
    requests: usize,
    per_thread: &mut [(Duration, u64)],
    per_runtime: &mut [(Duration, u64)],
) {
    println!("\n{what}: {} interleaved samples each", per_thread.len());
    println!(
        "{:<12} {:>12} {:>14} {:>18} {:>18}",
        "", "median", "per request", "conns/sample (med)", "conns/sample (mean)"
    );
    let mut medians = Vec::new();
    for (name, v) in [("per-thread", per_thread), ("per-runtime", per_runtime)] {
        let mean = v.iter().map(|s| s.1).sum::<u64>() as f64 / v.len() as f64;
        let mut conns: Vec<u64> = v.iter().map(|s| s.1).collect();
        conns.sort_unstable();
        v.sort();
        let median = v[v.len() / 2].0;
        medians.push(median);
        println!(
            "{name:<12} {:>12.1?} {:>14.1?} {:>18} {:>18.2}",
            median,
            median / requests as u32,
            conns[conns.len() / 2],
            mean
        );
    }
    println!(
        "ratio per-runtime / per-thread (time, median): {:.3}",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
}
