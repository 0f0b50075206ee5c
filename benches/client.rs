//! `client()` on an unchanged runtime against the naive ways of getting a client, in the
//! same run: a `static OnceLock` hyper-util client clone, a global
//! `Mutex<HashMap<(ThreadId, runtime::Id), Client>>` lookup + clone, and a new hyper-util
//! client per call. One thread, two threads at once, and 64 / 256 threads; then
//! `close_all` over 1,000 populated slots.
//!
//! `cargo bench --bench client`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, OnceLock};
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use rtlocal::HttpClientManager;
use tokio::runtime::{Handle, Id};

type Raw = HyperClient<HttpConnector, Empty<Bytes>>;

fn raw_client() -> Raw {
    HyperClient::builder(TokioExecutor::new()).build_http()
}

static ONCE: OnceLock<Raw> = OnceLock::new();
static MAP: OnceLock<Mutex<HashMap<(ThreadId, Id), Raw>>> = OnceLock::new();

/// The hot path completes on its first poll; polling it directly measures it alone.
fn poll_ready<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("hot path pending"),
    }
}

#[derive(Clone, Copy, Debug)]
enum Way {
    Rtlocal,
    OnceLock,
    GlobalMutexMap,
    NewPerCall,
}

const WAYS: [Way; 4] = [
    Way::Rtlocal,
    Way::OnceLock,
    Way::GlobalMutexMap,
    Way::NewPerCall,
];

fn name(w: Way) -> &'static str {
    match w {
        Way::Rtlocal => "rtlocal_client",
        Way::OnceLock => "oncelock_clone",
        Way::GlobalMutexMap => "global_mutex_map",
        Way::NewPerCall => "new_client_per_call",
    }
}

#[inline]
fn get(way: Way, m: &HttpClientManager) {
    match way {
        Way::Rtlocal => {
            black_box(poll_ready(m.client()).expect("client"));
        }
        Way::OnceLock => {
            black_box(ONCE.get_or_init(raw_client).clone());
        }
        Way::GlobalMutexMap => {
            let key = (std::thread::current().id(), Handle::current().id());
            let map = MAP.get_or_init(Default::default);
            let c = map.lock().entry(key).or_insert_with(raw_client).clone();
            black_box(c);
        }
        Way::NewPerCall => {
            black_box(raw_client());
        }
    }
}

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `threads` threads, each in its own current-thread runtime, call `get` `iters` times
/// at once. Returns the wall time from a common start (a barrier the measuring thread
/// also waits on) until the last thread finishes: per-iteration time is then the time
/// for *all* threads to make one call each, so throughput is aggregate calls per second.
fn run_threads(way: Way, m: &Arc<HttpClientManager>, threads: usize, iters: u64) -> Duration {
    // Threads + the measuring thread; the second barrier keeps thread and runtime
    // teardown out of the measured window.
    let start = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (m, start, done) = (Arc::clone(m), Arc::clone(&start), Arc::clone(&done));
            std::thread::spawn(move || {
                let rt = current_thread_rt();
                let _enter = rt.enter();
                get(way, &m); // warm: build this thread's client / map entry
                start.wait();
                for _ in 0..iters {
                    get(way, &m);
                }
                done.wait();
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    done.wait();
    let elapsed = t.elapsed();
    for h in handles {
        h.join().expect("bench thread");
    }
    elapsed
}

fn hot_path(c: &mut Criterion) {
    let m = Arc::new(HttpClientManager::new());
    let mut g = c.benchmark_group("client_1_thread");
    let rt = current_thread_rt();
    let _enter = rt.enter();
    for way in WAYS {
        g.bench_function(name(way), |b| b.iter(|| get(way, &m)));
    }
    g.finish();

    // Two threads calling at once; time is for both to make one call each.
    let mut g = c.benchmark_group("client_2_threads");
    g.throughput(Throughput::Elements(2));
    for way in WAYS {
        g.bench_function(name(way), |b| {
            b.iter_custom(|iters| run_threads(way, &m, 2, iters))
        });
    }
    g.finish();
}

fn scale(c: &mut Criterion) {
    const ROUNDS: u64 = 2000;
    let m = Arc::new(HttpClientManager::new());
    let mut g = c.benchmark_group("client_many_threads");
    g.sample_size(10);
    for threads in [64usize, 256] {
        // Aggregate calls per second across all threads (2 cores here).
        g.throughput(Throughput::Elements(threads as u64));
        for way in [Way::Rtlocal, Way::OnceLock, Way::GlobalMutexMap] {
            // 2,000 rounds per criterion iteration, so thread wake-up after the start
            // barrier is amortised rather than measured.
            g.bench_with_input(BenchmarkId::new(name(way), threads), &threads, |b, &n| {
                b.iter_custom(|iters| run_threads(way, &m, n, iters * ROUNDS) / ROUNDS as u32)
            });
        }
    }
    g.finish();
}

/// 1,000 threads that each hold a client on their own idle runtime, repopulated before
/// every measured `close_all`.
fn close_all(c: &mut Criterion) {
    const SLOTS: usize = 1000;
    let m = Arc::new(HttpClientManager::new());
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let cmds: Vec<mpsc::Sender<()>> = (0..SLOTS)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<()>();
            let (m, ack) = (Arc::clone(&m), ack_tx.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let rt = current_thread_rt();
                    while rx.recv().is_ok() {
                        drop(rt.block_on(m.client()).expect("client"));
                        let _ = ack.send(());
                    }
                })
                .expect("spawn");
            tx
        })
        .collect();
    let populate = || {
        for tx in &cmds {
            tx.send(()).expect("populate");
        }
        for _ in 0..SLOTS {
            ack_rx.recv().expect("ack");
        }
    };
    let rt = current_thread_rt();
    let mut g = c.benchmark_group("close_all");
    g.sample_size(20);
    g.bench_function("1000_slots", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                populate();
                let t = Instant::now();
                let report = rt.block_on(m.close_all());
                total += t.elapsed();
                assert_eq!(report.closed, SLOTS);
            }
            total
        })
    });
    g.finish();
    drop(cmds); // threads exit
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = hot_path, scale, close_all
}
criterion_main!(benches);
