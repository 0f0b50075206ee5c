//! The task-runner workload, rtlocal against every workaround, *interleaved* (every
//! round runs one sample of each side, rotating which goes first).
//!
//! A workload: 2 long-lived worker threads at once, each running 4 `current_thread`
//! runtimes one after another; each runtime is built, makes 16 sequential GETs, and is
//! dropped (128 requests in all). Sides:
//!
//! * `rtlocal`: one `HttpClientManager` (default per-thread sharing), `client()` per
//!   request;
//! * `(a) per-runtime raw`: a hyper-util client built by hand at each runtime start
//!   (support's settings), dropped with the runtime;
//! * `(b) static no-pool`: one static hyper-util client with `pool_max_idle_per_host(0)`:
//!   safe across runtimes because it never keeps a connection;
//! * `(c) client per request`: a new hyper-util client for every request;
//! * `(d) dedicated runtime`: one `multi_thread` runtime (1 worker, its own thread) alive
//!   for the whole bench, owning one pooled hyper-util client; each request is spawned
//!   on its handle and the worker awaits the `JoinHandle`.
//!
//! Connections: the server's accept count per workload (and rtlocal's own
//! `stats().connections_opened`). The gap between (a)/rtlocal and (d) is, mostly, one
//! connection setup per runtime generation.
//!
//! `cargo bench --bench task_runner` (rounds: `-- 200`)

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, OnceLock, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rtlocal::HttpClientManager;

const WORKERS: usize = 2;
const RUNTIMES_PER_WORKER: usize = 4;
const REQUESTS_PER_RUNTIME: usize = 16;
const REQUESTS: usize = WORKERS * RUNTIMES_PER_WORKER * REQUESTS_PER_RUNTIME;

const SIDES: [&str; 5] = [
    "rtlocal",
    "(a) per-runtime raw",
    "(b) static no-pool",
    "(c) client per request",
    "(d) dedicated runtime",
];

/// What every worker shares: the URI, the manager, the static client and the dedicated
/// runtime's handle and client.
struct Setup {
    uri: http::Uri,
    manager: HttpClientManager,
    no_pool: OnceLock<support::Raw>,
    dedicated: tokio::runtime::Handle,
    dedicated_client: support::Raw,
}

/// Support's raw client with pooling off. No pool timer either: with nothing idle it has
/// nothing to time, and a timer task would belong to whichever runtime started it.
fn no_pool_client() -> support::Raw {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    HyperClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(http)
}

async fn raw_get(c: &HyperClient<HttpConnector, Empty<Bytes>>, uri: &http::Uri) {
    let resp = c.get(uri.clone()).await.expect("request");
    resp.into_body().collect().await.expect("body");
}

/// One worker's share of a workload for `side`.
fn worker(side: usize, s: &Setup) {
    for _ in 0..RUNTIMES_PER_WORKER {
        let rt = support::current_thread_rt();
        rt.block_on(async {
            let per_runtime = (side == 1).then(support::raw_client);
            for _ in 0..REQUESTS_PER_RUNTIME {
                match side {
                    0 => {
                        let c = s.manager.client().await.expect("client");
                        let resp = c.request(support::get(&s.uri)).await.expect("request");
                        resp.into_body().collect().await.expect("body");
                    }
                    1 => raw_get(per_runtime.as_ref().expect("client"), &s.uri).await,
                    2 => raw_get(s.no_pool.get_or_init(no_pool_client), &s.uri).await,
                    3 => raw_get(&support::raw_client(), &s.uri).await,
                    _ => {
                        let (c, uri) = (s.dedicated_client.clone(), s.uri.clone());
                        s.dedicated
                            .spawn(async move { raw_get(&c, &uri).await })
                            .await
                            .expect("dedicated runtime task");
                    }
                }
            }
        });
        drop(rt);
    }
}

fn main() {
    let rounds = support::rounds("task_runner", 200, 3);
    // Hang guard: about 1 s per round (a normal round takes a small fraction of it).
    support::watchdog("task_runner", Duration::from_secs(120 + rounds as u64));
    let (addr, _server, accepted) = support::counting_server();
    let dedicated_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("dedicated runtime");
    let setup = Arc::new(Setup {
        uri: format!("http://{addr}/").parse().expect("uri"),
        manager: support::manager(),
        no_pool: OnceLock::new(),
        dedicated: dedicated_rt.handle().clone(),
        dedicated_client: dedicated_rt.block_on(async { support::raw_client() }),
    });

    // Long-lived workers, as a task runner's: each takes a side, runs its share, and
    // meets the others at the barrier. Dropping the senders ends them.
    let done = Arc::new(Barrier::new(WORKERS + 1));
    let (senders, threads): (Vec<mpsc::Sender<usize>>, Vec<_>) = (0..WORKERS)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<usize>();
            let (setup, done) = (Arc::clone(&setup), Arc::clone(&done));
            let thread = std::thread::spawn(move || {
                while let Ok(side) = rx.recv() {
                    worker(side, &setup);
                    done.wait();
                }
            });
            (tx, thread)
        })
        .unzip();

    // One sample: (wall time, connections the server accepted, rtlocal's own count).
    let sample = |side: usize| {
        let server_before = accepted.load(Ordering::Relaxed);
        let manager_before = setup.manager.stats().connections_opened;
        let t = Instant::now();
        for tx in &senders {
            tx.send(side).expect("worker");
        }
        done.wait();
        let elapsed = t.elapsed();
        let manager = setup.manager.stats().connections_opened - manager_before;
        (
            elapsed,
            accepted.load(Ordering::Relaxed) - server_before,
            (side == 0).then_some(manager),
        )
    };
    support::rotate(rounds.min(10), SIDES.len(), sample);
    let samples = support::rotate(rounds, SIDES.len(), sample);
    drop(senders);
    for t in threads {
        t.join().expect("worker thread");
    }
    report(&samples);
    drop(dedicated_rt);
}

/// A signed duration in seconds, printed through `Duration`'s formatting with its sign.
fn signed(secs: f64) -> String {
    let d = Duration::from_secs_f64(secs.abs());
    if secs < 0.0 {
        format!("-{d:.1?}")
    } else {
        format!("+{d:.1?}")
    }
}

fn report(samples: &[Vec<(Duration, u64, Option<u64>)>]) {
    println!(
        "\ntask runner: {WORKERS} workers x {RUNTIMES_PER_WORKER} runtimes x \
         {REQUESTS_PER_RUNTIME} requests = {REQUESTS} requests per workload; {} interleaved \
         samples each",
        samples[0].len()
    );
    println!(
        "{:<24} {:>11} {:>11} {:>11} {:>11} {:>7} {:>7} {:>13}",
        "", "p25", "median", "p75", "per req", "vs (a)", "vs (d)", "conns/workload"
    );
    let sorted: Vec<Vec<Duration>> = samples
        .iter()
        .map(|v| {
            let mut t: Vec<Duration> = v.iter().map(|s| s.0).collect();
            t.sort();
            t
        })
        .collect();
    let med = |side: usize| support::quantile(&sorted[side], 0.5).as_secs_f64();
    for (side, name) in SIDES.iter().enumerate() {
        let t = &sorted[side];
        let v = &samples[side];
        let server = v.iter().map(|s| s.1).sum::<u64>() as f64 / v.len() as f64;
        let conns = match v.iter().map(|s| s.2).sum::<Option<u64>>() {
            Some(m) => format!("{server:.2} [{:.2}]", m as f64 / v.len() as f64),
            None => format!("{server:.2}"),
        };
        println!(
            "{name:<24} {:>11.1?} {:>11.1?} {:>11.1?} {:>11.1?} {:>7.3} {:>7.3} {:>13}",
            support::quantile(t, 0.25),
            support::quantile(t, 0.5),
            support::quantile(t, 0.75),
            support::quantile(t, 0.5) / REQUESTS as u32,
            med(side) / med(1),
            med(side) / med(4),
            conns,
        );
    }
    println!(
        "(conns/workload: mean connections the server accepted per workload; rtlocal's own \
         count in brackets)"
    );
    // What a new connection costs here, at most: (b) makes every request on a new
    // connection (opened and closed) and (d) on a pooled one, with everything else alike
    // (no client builds in either).
    let conns = |side: usize| {
        samples[side].iter().map(|s| s.1).sum::<u64>() as f64 / samples[side].len() as f64
    };
    let per_conn = ((med(2) - med(4)) / (conns(2) - conns(4)).max(1.0)).max(0.0);
    for (side, name) in [(0, "rtlocal"), (1, "(a)")] {
        let gap = med(side) - med(4);
        let setup = (conns(side) - conns(4)) * per_conn;
        println!(
            "{name} vs (d): {} per workload; of it, connection setup is at most {} ({:.2} \
             more connections, each at most {:.1?}: (b) vs (d) per request)",
            signed(gap),
            signed(setup),
            conns(side) - conns(4),
            Duration::from_secs_f64(per_conn),
        );
    }
}
