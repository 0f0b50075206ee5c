//! The numbers behind `benches/CARRY.md`: what reusing a connection across runtime
//! generations could save in the task-runner workload.
//!
//! Task-runner workload: `THREADS` threads, each building a `current_thread` runtime,
//! sending 16 sequential GETs (bodies read whole), dropping the runtime, and building the
//! next, `GENERATIONS` times. Two ways to serve it, sampled interleaved:
//!
//! * `rtlocal`: each generation's requests go through the manager's client for that
//!   thread and runtime (a new client, so a new connection, per generation);
//! * `hop`: one dedicated runtime owns one pooled client; each request is spawned onto
//!   it and awaited from the generation's runtime.
//!
//! And the two costs a carried connection would trade: a loopback connect (client
//! `connect`, server `accept`, both ends closing) and one request on a warm connection.
//!
//! Measured as process CPU time (user + system, every thread, the in-process server
//! included) from `/proc/self/stat`, which a loaded machine skews far less than wall
//! time; wall time is printed too. Connections are counted by the server (accepts).
//!
//! `cargo bench --bench carry` (rounds: `-- 20`). For callgrind or strace, run one side
//! alone on one thread: `CARRY_ONLY=rtlocal|hop|connect CARRY_GENS=20 <bench binary>`.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rtlocal::HttpClientManager;

const THREADS: usize = 2;
const GENERATIONS: usize = 150;
const REQUESTS: usize = 16;
const CONNECTS: usize = 2000;
const WARM: usize = 3000;

fn main() {
    let (addr, accepted, _server) = counting_server();
    let uri: http::Uri = format!("http://{addr}/").parse().expect("uri");
    let rtlocal = Arc::new(support::manager());
    let hop = Hop::new();

    if let Ok(only) = std::env::var("CARRY_ONLY") {
        let gens = std::env::var("CARRY_GENS")
            .ok()
            .and_then(|g| g.parse().ok())
            .unwrap_or(20);
        let before = accepted.load(Ordering::SeqCst);
        match only.as_str() {
            "rtlocal" => generations(gens, |rt| rtlocal_generation(rt, &rtlocal, &uri)),
            "hop" => generations(gens, |rt| hop.generation(rt, &uri)),
            "connect" => connects(addr, gens),
            other => panic!("CARRY_ONLY={other}: expected rtlocal, hop or connect"),
        }
        println!(
            "{only}: {gens} iterations on one thread, server accepted {} connections",
            accepted.load(Ordering::SeqCst) - before
        );
        return;
    }

    let rounds = support::rounds("carry", 20, 1);
    // A smoke run (`cargo test --all-targets`) only checks that every side works.
    let scale = if std::env::args().any(|a| a == "--bench") {
        1
    } else {
        50
    };
    let (gens, connects_n, warm) = (GENERATIONS / scale, CONNECTS / scale, WARM / scale);
    let workload = |f: &(dyn Fn(&tokio::runtime::Runtime) + Sync)| {
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| generations(gens, f));
            }
        });
    };
    let samples: [(&str, usize, &(dyn Fn() + Sync)); 4] = [
        (
            "rtlocal (per-runtime client)",
            THREADS * gens * REQUESTS,
            &|| workload(&|rt| rtlocal_generation(rt, &rtlocal, &uri)),
        ),
        (
            "hop (one dedicated runtime)",
            THREADS * gens * REQUESTS,
            &|| workload(&|rt| hop.generation(rt, &uri)),
        ),
        ("loopback connect + close", connects_n, &|| {
            connects(addr, connects_n)
        }),
        ("request on a warm connection", warm, &|| {
            let rt = support::current_thread_rt();
            rt.block_on(async {
                let c = rtlocal.client().await.expect("client");
                for _ in 0..warm {
                    let resp = c.request(support::get(&uri)).await.expect("request");
                    resp.into_body().collect().await.expect("body");
                }
            });
        }),
    ];
    // Warm-up: one of each.
    for (_, _, f) in &samples {
        f();
    }
    let mut results: Vec<Vec<(Duration, Duration, usize)>> = vec![Vec::new(); samples.len()];
    for round in 0..rounds {
        for k in 0..samples.len() {
            // Rotate the order each round.
            let i = (k + round) % samples.len();
            let before = accepted.load(Ordering::SeqCst);
            let (cpu, wall) = measure(samples[i].2);
            results[i].push((cpu, wall, accepted.load(Ordering::SeqCst) - before));
        }
    }
    println!(
        "\n{THREADS} threads x {gens} generations x {REQUESTS} requests; \
         {rounds} interleaved samples each (medians)"
    );
    println!(
        "{:<32} {:>12} {:>14} {:>12} {:>14} {:>16}",
        "", "cpu/sample", "cpu/unit", "wall/sample", "wall/unit", "connections/sample"
    );
    for ((name, units, _), mut r) in samples.iter().zip(results) {
        let conns = {
            let mut c: Vec<usize> = r.iter().map(|s| s.2).collect();
            c.sort_unstable();
            c[c.len() / 2]
        };
        r.sort_by_key(|s| s.0);
        let cpu = r[r.len() / 2].0;
        r.sort_by_key(|s| s.1);
        let wall = r[r.len() / 2].1;
        println!(
            "{name:<32} {cpu:>12.1?} {:>14.1?} {wall:>12.1?} {:>14.1?} {conns:>16}",
            cpu / *units as u32,
            wall / *units as u32
        );
    }
    println!(
        "(cpu: user + system time of the whole process, server included; units: requests, \
         or connects for the connect row)"
    );
}

/// `n` generations on this thread: a fresh `current_thread` runtime each, dropped after.
fn generations(n: usize, f: impl Fn(&tokio::runtime::Runtime)) {
    for _ in 0..n {
        let rt = support::current_thread_rt();
        f(&rt);
        drop(rt);
    }
}

fn rtlocal_generation(rt: &tokio::runtime::Runtime, m: &Arc<HttpClientManager>, uri: &http::Uri) {
    rt.block_on(async {
        let c = m.client().await.expect("client");
        for _ in 0..REQUESTS {
            let resp = c.request(support::get(uri)).await.expect("request");
            resp.into_body().collect().await.expect("body");
        }
    });
}

/// The workaround: one dedicated runtime owning one pooled client; requests hop to it.
struct Hop {
    rt: tokio::runtime::Runtime,
    client: rtlocal::Client,
    /// Kept alive: a client whose manager is gone cannot send.
    _manager: Arc<HttpClientManager>,
}

impl Hop {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("dedicated runtime");
        let manager = Arc::new(support::manager());
        let m = Arc::clone(&manager);
        let client = rt
            .block_on(rt.spawn(async move { m.client().await }))
            .expect("task")
            .expect("client");
        Hop {
            rt,
            client,
            _manager: manager,
        }
    }

    fn generation(&self, rt: &tokio::runtime::Runtime, uri: &http::Uri) {
        rt.block_on(async {
            for _ in 0..REQUESTS {
                let (c, uri) = (self.client.clone(), uri.clone());
                self.rt
                    .spawn(async move {
                        let resp = c.request(support::get(&uri)).await.expect("request");
                        resp.into_body().collect().await.expect("body");
                    })
                    .await
                    .expect("hop");
            }
        });
    }
}

/// `n` loopback connects, each closed at once; each waits for the server's side to close
/// too, so both ends' work is inside the sample.
fn connects(addr: SocketAddr, n: usize) {
    use std::io::Read;
    for _ in 0..n {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut buf = [0u8; 16];
        while s.read(&mut buf).expect("read") > 0 {}
    }
}

/// Process CPU time (user + system, all threads) and wall time spent in `f`.
fn measure(f: &dyn Fn()) -> (Duration, Duration) {
    let (cpu, t) = (process_cpu(), Instant::now());
    f();
    (process_cpu().saturating_sub(cpu), t.elapsed())
}

fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th
    // fields overall, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().expect("ticks"))
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// A keep-alive HTTP/1 server on its own one-worker runtime that counts accepted
/// connections.
fn counting_server() -> (SocketAddr, Arc<AtomicUsize>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
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
    (addr, accepted, rt)
}
