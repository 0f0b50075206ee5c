//! Requests from many tasks of one `multi_thread` runtime, three ways, *interleaved*
//! (every round runs one sample of each side, rotating which goes first):
//!
//! * `per-thread`: an rtlocal manager with `Sharing::PerThread` (the default): one client,
//!   one pool, per worker thread;
//! * `per-runtime`: an rtlocal manager with `Sharing::PerRuntime`: one client per runtime;
//! * `raw shared`: one hyper-util client (support's settings) shared by every task.
//!
//! Runtimes: 2 workers, and `available_parallelism()` workers (run once when they are the
//! same). Each runtime lives for its whole section, so pools are warm after the warm-up:
//! the figures are steady-state. A sample spawns 64 (or 256) tasks at once, each making
//! 4 sequential GETs (calling `client()` before each, as a handler would), and waits for
//! all of them. Connections: each side talks to its own server, whose accept count is
//! the side's connections opened (the raw client has no count of its own); the managers'
//! `stats().connections_opened` is shown beside it where it differs.
//!
//! `cargo bench --bench multi_thread` (rounds: `-- 200`)

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use rtlocal::{HttpClientManager, Sharing};

const REQUESTS_PER_TASK: usize = 4;
const SIDES: [&str; 3] = ["per-thread", "per-runtime", "raw shared"];

/// One sample: wall time, connections the server accepted, connections the manager
/// says it opened (`None` for the raw client).
type Sample = (Duration, u64, Option<u64>);

fn main() {
    let rounds = support::rounds("multi_thread", 200, 2);
    // Hang guard: about 1 s per round (a normal round takes a small fraction of it).
    support::watchdog("multi_thread", Duration::from_secs(120 + rounds as u64));
    // A server per side: hyper-util finishes a connect it started even when an idle
    // connection served the request first, so a connection can be accepted after its
    // sample ended; with one server per side it is still counted for the right side.
    let servers: Vec<_> = SIDES.iter().map(|_| support::counting_server()).collect();
    let uris: Vec<http::Uri> = servers
        .iter()
        .map(|(addr, _, _)| format!("http://{addr}/").parse().expect("uri"))
        .collect();
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
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut worker_counts = vec![2, parallelism];
    worker_counts.dedup();
    if parallelism == 2 {
        println!("available_parallelism() is 2: one runtime configuration");
    }
    for workers in worker_counts {
        // Fresh managers per runtime, so their counters speak of this section only.
        let managers = [manager(Sharing::PerThread), manager(Sharing::PerRuntime)];
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("runtime");
        let raw = rt.block_on(async { support::raw_client() });
        for tasks in [64usize, 256] {
            let sample = |side: usize| -> Sample {
                let accepted = &servers[side].2;
                let server_before = accepted.load(Ordering::Relaxed);
                let manager_before = managers.get(side).map(|m| m.stats().connections_opened);
                let t = Instant::now();
                rt.block_on(run(side, tasks, &managers, &raw, &uris[side]));
                let elapsed = t.elapsed();
                (
                    elapsed,
                    accepted.load(Ordering::Relaxed) - server_before,
                    manager_before.map(|b| managers[side].stats().connections_opened - b),
                )
            };
            // Warm-up: fills the pools, so the samples measure the steady state.
            let warm = support::rotate(rounds.min(10), SIDES.len(), sample);
            let samples = support::rotate(rounds, SIDES.len(), sample);
            report(workers, tasks, &warm, &samples);
        }
        let opened: Vec<u64> = managers
            .iter()
            .map(|m| m.stats().connections_opened)
            .collect();
        println!(
            "\n{workers} workers, whole section (warm-up included): connections opened: \
             per-thread {}, per-runtime {}",
            opened[0], opened[1]
        );
        drop(rt);
    }
}

async fn run(
    side: usize,
    tasks: usize,
    managers: &[Arc<HttpClientManager>; 2],
    raw: &support::Raw,
    uri: &http::Uri,
) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let uri = uri.clone();
            match side {
                0 | 1 => {
                    let m = Arc::clone(&managers[side]);
                    tokio::spawn(async move {
                        for _ in 0..REQUESTS_PER_TASK {
                            let c = m.client().await.expect("client");
                            let resp = c.request(support::get(&uri)).await.expect("request");
                            resp.into_body().collect().await.expect("body");
                        }
                    })
                }
                _ => {
                    let c = raw.clone();
                    tokio::spawn(async move {
                        for _ in 0..REQUESTS_PER_TASK {
                            let resp = c.get(uri.clone()).await.expect("request");
                            resp.into_body().collect().await.expect("body");
                        }
                    })
                }
            }
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
}

fn report(workers: usize, tasks: usize, warm: &[Vec<Sample>], samples: &[Vec<Sample>]) {
    let requests = (tasks * REQUESTS_PER_TASK) as u32;
    println!(
        "\n{workers} workers, {tasks} tasks x {REQUESTS_PER_TASK} requests: {} interleaved \
         samples each, after {} warm-up samples each",
        samples[0].len(),
        warm[0].len()
    );
    println!(
        "{:<12} {:>11} {:>11} {:>11} {:>13} {:>9} {:>16} {:>16}",
        "",
        "p25/req",
        "median/req",
        "p75/req",
        "median/sample",
        "vs raw",
        "conns warm-up",
        "conns measured"
    );
    let median = |v: &[Sample]| {
        let mut t: Vec<Duration> = v.iter().map(|s| s.0).collect();
        t.sort();
        t
    };
    let raw_median = support::quantile(&median(&samples[2]), 0.5);
    // Server-side count; the manager's own count, where it differs, in brackets.
    let conns = |v: &[Sample]| {
        let server: u64 = v.iter().map(|s| s.1).sum();
        match v.iter().map(|s| s.2).sum::<Option<u64>>() {
            Some(m) if m != server => format!("{server} [{m}]"),
            _ => server.to_string(),
        }
    };
    for ((name, v), w) in SIDES.iter().zip(samples).zip(warm) {
        let t = median(v);
        println!(
            "{name:<12} {:>11.1?} {:>11.1?} {:>11.1?} {:>13.1?} {:>9.3} {:>16} {:>16}",
            support::quantile(&t, 0.25) / requests,
            support::quantile(&t, 0.5) / requests,
            support::quantile(&t, 0.75) / requests,
            support::quantile(&t, 0.5),
            support::quantile(&t, 0.5).as_secs_f64() / raw_median.as_secs_f64(),
            conns(w),
            conns(v),
        );
    }
}
