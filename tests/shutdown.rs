//! Graceful shutdown against a loopback server that counts open connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use common::{IdleRuntime, TestServer, block_on_guarded, current_thread_rt, text};
use rtlocal::HttpClientManager;

#[test]
fn shutdown_with_fifty_requests_in_flight_on_four_threads() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    let (tx_results, rx_results) = mpsc::channel();
    let mut threads = Vec::new();
    let mut expected_slow = 0;
    for t in 0..4 {
        let n = if t < 2 { 13 } else { 12 }; // 50 in all
        expected_slow += n / 2;
        let (m, tx, fast, slow) = (
            Arc::clone(&m),
            tx_results.clone(),
            server.url("/slow/100"),
            server.url("/slow/30000"),
        );
        threads.push(std::thread::spawn(move || {
            let rt = current_thread_rt();
            let results = block_on_guarded(&rt, async {
                let client = m.client().await.unwrap();
                let mut set = tokio::task::JoinSet::new();
                for i in 0..n {
                    let (c, url) = (
                        client.clone(),
                        if i % 2 == 0 {
                            fast.clone()
                        } else {
                            slow.clone()
                        },
                    );
                    set.spawn(async move {
                        let resp = c.get(&url).await?;
                        Ok::<_, rtlocal::Error>(text(resp).await)
                    });
                }
                let mut results = Vec::new();
                while let Some(r) = set.join_next().await {
                    results.push(r.unwrap());
                }
                results
            });
            tx.send(results).unwrap();
        }));
    }
    // All 50 requests reached the server.
    assert_eq!(server.wait_requests(50), 50);
    assert_eq!(m.stats().requests_in_flight, 50);

    let rt = current_thread_rt();
    let report = block_on_guarded(&rt, m.shutdown(Duration::from_secs(1)));

    let mut ok = 0;
    let mut cut = 0;
    for _ in 0..4 {
        for r in rx_results.recv().unwrap() {
            match r {
                Ok(body) => {
                    assert_eq!(body, "slow");
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.is_closed(), "a cut request says so: {e:?}");
                    assert!(e.to_string().contains("force-closed"), "{e}");
                    cut += 1;
                }
            }
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    // Requests that could finish before the deadline did; the rest were cut.
    assert_eq!((ok, cut), (50 - expected_slow, expected_slow));
    assert_eq!(report.closed, 4, "{report}");
    assert_eq!(report.forced, 4, "{report}");
    assert_eq!(report.in_flight_cut, expected_slow as u64, "{report}");
    assert!(report.failed.is_empty());
    assert!(
        report.to_string().starts_with("closed 4 client(s)"),
        "{report}"
    );
    assert_eq!(server.wait_open(0), 0, "server still sees open connections");

    let s = m.stats();
    assert_eq!(
        (s.clients_live, s.connections_open, s.requests_in_flight),
        (0, 0, 0)
    );
    assert_eq!(s.forced_closes, 4);
    assert_eq!(s.requests_failed, expected_slow as u64);
    let err = block_on_guarded(&rt, m.client()).unwrap_err();
    assert!(err.is_shut_down(), "{err}");
    assert!(m.is_shut_down());
}

#[test]
fn shutdown_is_idempotent_and_safe_to_call_concurrently() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    let idle: Vec<_> = (0..3)
        .map(|_| {
            let (m, url) = (Arc::clone(&m), server.url("/"));
            IdleRuntime::start(move || async move {
                text(m.client().await.unwrap().get(&url).await.unwrap()).await
            })
        })
        .collect();
    assert_eq!(server.wait_open(3), 3);
    let rt = current_thread_rt();
    let (a, b) = block_on_guarded(&rt, async {
        tokio::join!(
            m.shutdown(Duration::from_secs(1)),
            m.shutdown(Duration::from_secs(1))
        )
    });
    assert_eq!(a.closed + b.closed, 3, "{a} / {b}");
    assert_eq!(a.forced + b.forced, 0);
    let again = block_on_guarded(&rt, m.shutdown(Duration::from_secs(1)));
    assert_eq!(again.closed, 0, "{again}");
    assert_eq!(server.wait_open(0), 0);
    drop(idle);
    assert_eq!(m.stats().clients_live, 0);
}

#[test]
fn close_all_keeps_the_manager_usable_and_is_repeatable() {
    let server = TestServer::start();
    let m = HttpClientManager::new();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let first = m.client().await.unwrap();
        text(first.get(&server.url("/")).await.unwrap()).await;
        let r = m.close_all().await;
        assert_eq!(r.closed, 1);
        assert_eq!(m.close_all().await.closed, 0);
        // The old handle re-routes to a new client; the manager hands out new ones.
        assert_eq!(
            text(first.get(&server.url("/")).await.unwrap()).await,
            "hello"
        );
        let second = m.client().await.unwrap();
        assert_ne!(second.id(), first.id());
    });
    assert_eq!(m.stats().clients_live, 1);
}

#[test]
fn runtime_teardown_with_requests_in_flight_releases_everything() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    for flavor in 0..2 {
        let rt = if flavor == 0 {
            current_thread_rt()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        };
        let before = server.counts.requests.load(Ordering::SeqCst);
        let (m2, url, counts) = (
            Arc::clone(&m),
            server.url("/slow/30000"),
            Arc::clone(&server.counts),
        );
        block_on_guarded(&rt, async move {
            for _ in 0..10 {
                let (m, url) = (Arc::clone(&m2), url.clone());
                tokio::spawn(async move {
                    let _ = m.client().await.unwrap().get(&url).await;
                });
            }
            // Drive the runtime until the server has all ten.
            while counts.requests.load(Ordering::SeqCst) < before + 10 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(m.stats().requests_in_flight > 0);
        drop(rt);
        let s = m.stats();
        assert_eq!(
            (s.clients_live, s.requests_in_flight, s.connections_open),
            (0, 0, 0),
            "{s:?}"
        );
        assert_eq!(server.wait_open(0), 0);
    }
}

#[test]
fn shutdown_reaches_clients_whose_runtime_is_gone_or_idle() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    let (m2, url) = (Arc::clone(&m), server.url("/"));
    let _idle = IdleRuntime::start(move || async move {
        text(m2.client().await.unwrap().get(&url).await.unwrap()).await
    });
    assert_eq!(server.wait_open(1), 1);
    let rt = current_thread_rt();
    let report = block_on_guarded(&rt, m.shutdown(Duration::from_millis(500)));
    assert_eq!(report.closed, 1, "{report}");
    assert_eq!(server.wait_open(0), 0);
}

/// A `close_all` whose task sits on a runtime nobody drives must not hang another
/// thread's `client()`: the waiter gives up after the close timeout and takes over.
#[test]
fn close_all_parked_on_an_idle_runtime_does_not_hang_other_threads() {
    let server = TestServer::start();
    let m = Arc::new(
        HttpClientManager::builder()
            .close_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let rt_b = current_thread_rt();
    // This thread's client, with a response body still in flight (unread).
    let (old, body) = block_on_guarded(&rt_b, async {
        let c = m.client().await.unwrap();
        let resp = c.get(&server.url("/")).await.unwrap();
        (c, resp)
    });
    assert_eq!(m.stats().requests_in_flight, 1);
    // Another thread starts close_all on its runtime, drives it briefly, then idles.
    let m2 = Arc::clone(&m);
    let parked = IdleRuntime::start(move || async move {
        // Detached: the task stays on this runtime, which is left idle below.
        drop(tokio::spawn(async move { m2.close_all().await }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    assert!(
        !old.is_open(),
        "close_all has begun closing this thread's client"
    );
    drop(body);
    let new = block_on_guarded(&rt_b, async { m.client().await.unwrap() });
    assert_ne!(new.id(), old.id());
    assert_eq!(
        block_on_guarded(&rt_b, async {
            text(new.get(&server.url("/")).await.unwrap()).await
        }),
        "hello"
    );
    drop(parked);
}
