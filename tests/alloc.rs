//! Allocation behaviour, with a counting global allocator (alone in its binary).
//!
//! * `client()` on an unchanged runtime allocates nothing.
//! * A thread slot retains at most 1 KiB once its client is gone.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};

use rtlocal::HttpClientManager;

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Counts only on threads that opt in, so the harness's own threads don't interfere.
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: defers every operation to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNT_HERE.try_with(Cell::get).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn poll_ready<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the hot path must complete on its first poll"),
    }
}

#[test]
fn client_hot_path_does_not_allocate() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let m = HttpClientManager::new();
    for flavor in 0..2 {
        let rt = if flavor == 0 {
            common::current_thread_rt()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        };
        let _enter = rt.enter();
        // First call builds the client (allocates); the rest must not.
        let first = rt.block_on(m.client()).unwrap();
        COUNT_HERE.with(|c| c.set(true));
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..10_000 {
            let c = poll_ready(m.client()).unwrap();
            assert_eq!(c.id(), first.id());
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        COUNT_HERE.with(|c| c.set(false));
        assert_eq!(
            allocs, 0,
            "client() allocated {allocs} times in 10,000 hot-path calls"
        );
    }
}

#[test]
fn a_thread_slot_retains_at_most_one_kib() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const THREADS: usize = 256;
    let m = std::sync::Arc::new(HttpClientManager::new());
    // Warm-up: lazily created globals (default manager, registries, thread-id tables,
    // the closer thread).
    {
        let m = std::sync::Arc::clone(&m);
        std::thread::spawn(move || {
            let rt = common::current_thread_rt();
            drop(rt.block_on(m.client()).unwrap());
        })
        .join()
        .unwrap();
    }
    // What THREADS live threads that built, used and dropped a runtime retain with and
    // without a client: the difference is the slots' (a live thread's own bookkeeping,
    // std's and tokio's, is no slot).
    let with_client = {
        let m = std::sync::Arc::clone(&m);
        let read = std::sync::Arc::clone(&m);
        retained_by_live_threads(
            THREADS,
            move || {
                let rt = common::current_thread_rt();
                drop(rt.block_on(m.client()).unwrap());
                drop(rt); // releases the client; the slot stays with the manager
            },
            move || {
                let s = read.stats();
                (s.clients_live, s.thread_slots)
            },
        )
    };
    let without_client = retained_by_live_threads(
        THREADS,
        || {
            let rt = common::current_thread_rt();
            rt.block_on(async {});
            drop(rt);
        },
        || (0, 0),
    );
    let (retained, (clients_live, thread_slots)) = with_client;
    assert_eq!(clients_live, 0);
    assert!(thread_slots as usize >= THREADS, "{thread_slots} slots");
    let per_slot = (retained - without_client.0) / thread_slots as i64;
    eprintln!(
        "{thread_slots} slots: {retained} bytes retained with a client, {} without: \
         {per_slot} bytes per slot",
        without_client.0
    );
    assert!(per_slot <= 1024, "{per_slot} bytes retained per slot");
    // Exited threads leave nothing listed behind.
    let after = m.stats();
    assert_eq!(after.thread_slots, 0, "{after:?}");
}

/// Allocations on this thread (which also polls the connection: a `current_thread`
/// runtime) over `n` sequential requests made by `one`.
fn allocs_per_requests<F, Fut>(rt: &tokio::runtime::Runtime, n: usize, one: F) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Warm-up: the pooled connection, buffers, thread-local slots.
    rt.block_on(async {
        for _ in 0..20 {
            one().await;
        }
    });
    COUNT_HERE.with(|c| c.set(true));
    let before = ALLOCS.load(Ordering::Relaxed);
    rt.block_on(async {
        for _ in 0..n {
            one().await;
        }
    });
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    COUNT_HERE.with(|c| c.set(false));
    allocs
}

/// A managed request allocates no more than the raw hyper-util request it wraps, and its
/// `http.request` span (DEBUG) adds no allocation while the subscriber does not want
/// DEBUG: exactly as many allocations as with no subscriber at all. With a DEBUG
/// subscriber it does allocate (the subscriber formats the span's fields), which shows
/// the count would see a span that is built when it should not be.
#[test]
fn a_request_allocates_no_more_than_raw_hyper_util_and_its_span_nothing_when_off() {
    use http_body_util::BodyExt;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = common::TestServer::start();
    let uri: http::Uri = server.url("/").parse().expect("uri");
    let rt = common::current_thread_rt();
    // Raw hyper-util with rtlocal's settings; no request timeout on either side (the
    // timeout's timer is an allocation of tokio's when a response is not immediate).
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    let raw: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(http);
    let manager = HttpClientManager::builder()
        .user_agent(None)
        .request_timeout(None)
        .build()
        .expect("config");
    const N: usize = 200;
    let managed = || {
        allocs_per_requests(&rt, N, || async {
            let client = manager.client().await.expect("client");
            let req = http::Request::get(uri.clone())
                .body(rtlocal::Body::empty())
                .expect("request");
            let resp = client.request(req).await.expect("request");
            resp.into_body().collect().await.expect("body");
        })
    };
    let with_level = |level: tracing::Level| {
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::sink)
            .finish()
    };
    let raw_allocs = allocs_per_requests(&rt, N, || async {
        let resp = raw.get(uri.clone()).await.expect("raw request");
        resp.into_body().collect().await.expect("raw body");
    });
    let no_subscriber = managed();
    let info = tracing::subscriber::with_default(with_level(tracing::Level::INFO), managed);
    let debug = tracing::subscriber::with_default(with_level(tracing::Level::DEBUG), managed);
    eprintln!(
        "{N} requests: raw hyper-util {raw_allocs} allocations; managed: {no_subscriber} \
         without a subscriber, {info} at INFO, {debug} at DEBUG"
    );
    // With the `metrics` feature each request's duration is recorded under its own
    // labels (method, server, status: a few small allocations per request), so this
    // bound holds without it.
    #[cfg(not(feature = "metrics"))]
    assert!(
        no_subscriber <= raw_allocs,
        "managed requests allocated {no_subscriber} times, raw hyper-util {raw_allocs}"
    );
    // Per request, not exactly: a pool or buffer may grow once during a run.
    assert!(
        info < no_subscriber + N as u64 / 2,
        "the span allocated while the subscriber does not want DEBUG: {info} allocations \
         against {no_subscriber} without a subscriber"
    );
    assert!(
        debug >= info + N as u64,
        "a DEBUG subscriber sees the span (and formats its fields)"
    );
}

/// Runs `work` on `threads` threads alive at once and returns the bytes allocated and not
/// freed once every thread has done it (while all of them are still alive), with what
/// `alive` read at that moment.
fn retained_by_live_threads<T>(
    threads: usize,
    work: impl Fn() + Send + Sync + 'static,
    alive: impl FnOnce() -> T,
) -> (i64, T) {
    let work = std::sync::Arc::new(work);
    let base = LIVE_BYTES.load(Ordering::SeqCst);
    let done = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
    let measured = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (work, done, measured) = (
                std::sync::Arc::clone(&work),
                std::sync::Arc::clone(&done),
                std::sync::Arc::clone(&measured),
            );
            std::thread::spawn(move || {
                work();
                done.wait();
                measured.wait();
            })
        })
        .collect();
    done.wait();
    let retained = LIVE_BYTES.load(Ordering::SeqCst) - base;
    let seen = alive();
    measured.wait();
    for h in handles {
        h.join().unwrap();
    }
    (retained, seen)
}
