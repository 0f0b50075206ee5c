//! Soak: runtime churn across threads (mixed flavors, some dropped mid-request) and
//! threads that come and go. Alone in its binary so fd and memory counts are its own.
//! The full-size soak is `#[ignore]`d: `cargo test --release --test soak -- --ignored`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, block_on_guarded, current_thread_rt, open_fds, settle, text};
use rtlocal::HttpClientManager;

/// The tests here count process-wide fds and memory: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn churn(m: &HttpClientManager, server: &TestServer, thread: usize, iterations: usize) {
    let (url, slow) = (server.url("/"), server.url("/slow/30000"));
    for i in 0..iterations {
        let rt = if (i + thread) % 3 == 0 {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        } else {
            current_thread_rt()
        };
        block_on_guarded(&rt, async {
            let c = m.client().await.unwrap();
            assert_eq!(text(c.get(&url).await.unwrap()).await, "hello");
            if i % 5 == 4 {
                // Dropped mid-request: the runtime goes away under an in-flight request.
                let (c, slow) = (c.clone(), slow.clone());
                tokio::spawn(async move {
                    let _ = c.get(&slow).await;
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        drop(rt);
    }
}

fn soak(threads: usize, per_thread: usize) {
    let _serial = serial();
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    churn(&m, &server, 0, 3); // warm-up: lazily created globals
    // The warm-up's idle connection is parked for this thread's next runtime: closed
    // here, so the counts below start from nothing.
    let rt = current_thread_rt();
    block_on_guarded(&rt, m.close_all());
    drop(rt);
    assert_eq!(server.wait_open(0), 0);
    let (fds_before, rss_before) = (open_fds(), rss_kib());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (m, server) = (&m, &server);
            s.spawn(move || churn(m, server, t, per_thread));
        }
    });
    let rt = current_thread_rt();
    let report = block_on_guarded(&rt, m.shutdown(Duration::from_secs(2)));
    drop(rt);
    assert_eq!(server.wait_open(0), 0, "server still sees open connections");
    let (fds_after, rss_after) = (open_fds(), rss_kib());
    let s = m.stats();
    eprintln!(
        "soak: {} churns on {threads} threads: fds {fds_before} -> {fds_after}, \
         rss {rss_before} KiB -> {rss_after} KiB (+{} KiB), clients created {}, \
         live {}, shutdown: {report}",
        threads * per_thread,
        rss_after.saturating_sub(rss_before),
        s.clients_created,
        s.clients_live
    );
    assert_eq!(fds_after, fds_before);
    assert_eq!(
        (s.clients_live, s.connections_open, s.requests_in_flight),
        (0, 0, 0)
    );
    assert_eq!(s.clients_created as usize, threads * per_thread + 3);
    // A leak of one client or runtime per churn would be tens of MiB here; allocator
    // caches stay well under this bound.
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "rss grew {rss_before} -> {rss_after} KiB"
    );
}

#[test]
fn churn_across_four_threads_leaks_nothing() {
    soak(4, 50);
}

#[test]
#[ignore = "full-size soak (1,000 churns): run with --ignored"]
fn churn_thousand_runtimes_across_four_threads() {
    soak(4, 250);
}

#[test]
fn threads_that_come_and_go_never_get_another_threads_client() {
    let _serial = serial();
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    // One long-lived multi-thread runtime; plain threads enter it and exit.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let (m, handle, url) = (Arc::clone(&m), rt.handle().clone(), server.url("/"));
        let id = std::thread::spawn(move || {
            handle.block_on(async {
                let c = m.client().await.unwrap();
                assert_eq!(text(c.get(&url).await.unwrap()).await, "hello");
                c.id()
            })
        })
        .join()
        .unwrap();
        assert!(
            seen.insert(id),
            "a new thread was handed an exited thread's client {id}"
        );
    }
    // Each exited thread's client is closed at thread exit (in the background, on the
    // runtime's workers, so the last one may still be finishing); its slot was reused.
    let live = settle(0, || m.stats().clients_live);
    let s = m.stats();
    assert_eq!(live, 0, "{s:?}");
    assert!(s.thread_slots <= 4, "slots grew with thread churn: {s:?}");
    assert_eq!(server.wait_open(0), 0);
}
