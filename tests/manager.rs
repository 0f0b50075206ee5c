//! The manager's lifecycle against a real loopback server.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{IdleRuntime, TestServer, block_on_guarded, current_thread_rt, text};
use rtlocal::HttpClientManager;

#[test]
fn same_thread_same_runtime_same_client_other_thread_other_client() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    let rt = current_thread_rt();
    let (a, b) = block_on_guarded(&rt, async {
        let a = m.client().await.unwrap();
        let b = m.client().await.unwrap();
        assert_eq!(text(a.get(&server.url("/")).await.unwrap()).await, "hello");
        assert_eq!(text(b.get(&server.url("/")).await.unwrap()).await, "hello");
        (a, b)
    });
    assert_eq!(a.id(), b.id());
    assert_eq!(a.runtime_id(), rt.handle().id());
    // Keep-alive: both requests used the one pooled connection.
    assert_eq!(server.accepted(), 1);

    let m2 = Arc::clone(&m);
    let other = std::thread::spawn(move || {
        let rt = current_thread_rt();
        block_on_guarded(&rt, async { m2.client().await.unwrap().id() })
    })
    .join()
    .unwrap();
    assert_ne!(other, a.id());
    assert_eq!(m.stats().clients_created, 2);
}

#[test]
fn new_runtime_gets_new_client_and_old_connection_is_closed_on_the_wire() {
    let server = TestServer::start();
    // rt2's connection is closed at its teardown, not carried (tests/carry.rs).
    let m = HttpClientManager::builder()
        .carry_idle_connections(false)
        .build()
        .unwrap();
    let rt1 = current_thread_rt();
    let old = block_on_guarded(&rt1, async {
        let c = m.client().await.unwrap();
        text(c.get(&server.url("/")).await.unwrap()).await;
        c
    });
    assert_eq!(server.wait_open(1), 1);

    // rt1 stays alive but idle: nobody polls its connection task any more.
    let rt2 = current_thread_rt();
    let new = block_on_guarded(&rt2, async {
        let c = m.client().await.unwrap();
        assert_eq!(text(c.get(&server.url("/")).await.unwrap()).await, "hello");
        c
    });
    assert_ne!(old.id(), new.id());
    assert!(!old.is_open());
    // The stale connection was shut down even though its runtime is idle.
    assert_eq!(server.wait_open(1), 1);
    assert_eq!(server.accepted(), 2);
    let s = m.stats();
    assert_eq!(
        (s.clients_created, s.clients_replaced, s.clients_closed),
        (2, 1, 1)
    );
    assert_eq!(s.clients_live, 1);
    drop(rt1);
    drop(rt2);
    assert_eq!(m.stats().clients_live, 0);
    assert_eq!(server.wait_open(0), 0);
}

/// reqwest#2501: thread A's `current_thread` runtime is alive but idle; thread B sends a
/// request through the client A got. With rtlocal it is re-routed and finishes.
/// reqwest#2501: thread A's `current_thread` runtime is alive but idle; thread B sends a
/// request through the client A got. With rtlocal it is re-routed and finishes.
#[test]
fn idle_runtime_scenario_finishes() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    let (m_a, url) = (Arc::clone(&m), server.url("/"));
    let a = IdleRuntime::start(move || async move {
        let c = m_a.client().await.unwrap();
        text(c.get(&url).await.unwrap()).await;
        c
    });
    let shared = a.value.clone();
    assert_eq!(server.wait_open(1), 1);

    let rt_b = current_thread_rt();
    let body = block_on_guarded(&rt_b, async {
        // The same handle thread A uses: re-routed to B's own client.
        text(shared.get(&server.url("/")).await.unwrap()).await
    });
    assert_eq!(body, "hello");
    // A's client is still A's: B did not retire it, it built its own.
    assert!(shared.is_open());
    assert_eq!(m.stats().clients_created, 2);
}

#[test]
fn two_live_runtimes_alternated_on_one_thread() {
    let server = TestServer::start();
    let m = HttpClientManager::new();
    let rt_a = current_thread_rt();
    let rt_b = current_thread_rt();
    let mut ids = Vec::new();
    for _ in 0..5 {
        for rt in [&rt_a, &rt_b] {
            let id = block_on_guarded(rt, async {
                let c = m.client().await.unwrap();
                assert_eq!(text(c.get(&server.url("/")).await.unwrap()).await, "hello");
                assert_eq!(c.runtime_id(), tokio::runtime::Handle::current().id());
                c.id()
            });
            ids.push(id);
        }
    }
    // Every switch retired the stale client: ten distinct clients, nine replacements.
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10);
    let s = m.stats();
    assert_eq!((s.clients_replaced, s.clients_live), (9, 1));
    // Only the current client's connection is left open.
    assert_eq!(server.wait_open(1), 1);
}

#[test]
fn sixteen_concurrent_callers_during_a_replacement_get_one_client() {
    let server = TestServer::start();
    let m = Arc::new(
        HttpClientManager::builder()
            .close_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let rt1 = current_thread_rt();
    let slow = server.url("/slow/60000");
    // A request in flight on rt1 that cannot finish while rt1 is idle keeps the stale
    // close draining until its deadline: the replacement window the callers race into.
    let old = rt1.block_on(async {
        let c = m.client().await.unwrap();
        let c2 = c.clone();
        tokio::spawn(async move {
            let _ = c2.get(&slow).await;
        });
        server.requests_reached(1).await;
        c
    });

    let rt2 = current_thread_rt();
    let ids = block_on_guarded(&rt2, async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let m = Arc::clone(&m);
            set.spawn(async move { m.client().await.unwrap().id() });
        }
        let mut ids = Vec::new();
        while let Some(id) = set.join_next().await {
            ids.push(id.unwrap());
        }
        ids
    });
    assert_eq!(ids.len(), 16);
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 1, "all callers got the one new client");
    assert!(!distinct.contains(&old.id()));
    let s = m.stats();
    assert_eq!((s.clients_created, s.clients_replaced), (2, 1));
    assert_eq!(s.forced_closes, 1, "the stale close hit its deadline");
    assert_eq!(server.wait_open(0), 0);
}

#[test]
fn multi_thread_runtime_with_200_spawned_requests() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let url = server.url("/");
    let ok = block_on_guarded(&rt, async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let m = Arc::clone(&m);
            let url = url.clone();
            set.spawn(async move {
                let c = m.client().await?;
                let resp = c.get(&url).await?;
                Ok::<_, rtlocal::Error>(text(resp).await)
            });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), "hello");
            ok += 1;
        }
        ok
    });
    assert_eq!(ok, 200);
    let s = m.stats();
    // One client per worker thread at most (plus the block_on thread).
    assert!(s.clients_created >= 1 && s.clients_created <= 5, "{s:?}");
    assert_eq!(s.requests_started, 200);
    assert_eq!(s.requests_in_flight, 0);
    drop(rt);
    assert_eq!(m.stats().clients_live, 0);
    assert_eq!(server.wait_open(0), 0);
}

#[test]
fn close_all_over_four_threads_with_idle_runtimes() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    let (tx_ready, rx_ready) = mpsc::channel();
    let mut releases = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..4 {
        let m = Arc::clone(&m);
        let url = server.url("/");
        let tx_ready = tx_ready.clone();
        let (tx_go, rx_go) = mpsc::channel::<()>();
        releases.push(tx_go);
        threads.push(std::thread::spawn(move || {
            let rt = current_thread_rt();
            let c = block_on_guarded(&rt, async {
                let c = m.client().await.unwrap();
                text(c.get(&url).await.unwrap()).await;
                c
            });
            tx_ready.send(()).unwrap();
            let _ = rx_go.recv(); // idle until close_all is done
            // The thread's client was closed under it; the next call builds a new one.
            let again = block_on_guarded(&rt, async { m.client().await.unwrap() });
            assert_ne!(again.id(), c.id());
        }));
    }
    drop(tx_ready);
    for _ in 0..4 {
        // A hang guard only: a worker whose request failed panics before it is ready.
        rx_ready
            .recv_timeout(Duration::from_secs(60))
            .expect("a worker thread failed before its client was ready");
    }
    assert_eq!(server.wait_open(4), 4);
    let rt = current_thread_rt();
    let report = block_on_guarded(&rt, m.close_all());
    assert_eq!(report.closed, 4, "{report}");
    assert_eq!(report.forced, 0);
    assert_eq!(server.wait_open(0), 0, "server still sees open connections");
    assert_eq!(m.stats().clients_live, 0);
    for r in releases {
        r.send(()).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.stats().clients_created, 8);
}

#[test]
fn runtime_teardown_releases_clients_at_once() {
    let server = TestServer::start();
    let m = HttpClientManager::new();
    for shutdown in 0..3 {
        let rt = current_thread_rt();
        let c = block_on_guarded(&rt, async {
            let c = m.client().await.unwrap();
            text(c.get(&server.url("/")).await.unwrap()).await;
            c
        });
        match shutdown {
            0 => drop(rt),
            1 => rt.shutdown_background(),
            _ => rt.shutdown_timeout(Duration::from_secs(1)),
        }
        // Released by the teardown itself, not at the next use.
        assert!(!c.is_open());
        assert_eq!(m.stats().clients_live, 0);
        // Its idle connection is parked for this thread's next runtime, whichever way
        // the runtime was shut down: the server sees the one connection throughout.
        assert_eq!(server.wait_open(1), 1);
    }
    assert_eq!(
        server.accepted(),
        1,
        "a generation did not take the parked connection"
    );
    assert_eq!(m.stats().runtime_releases, 3);
    let rt = current_thread_rt();
    let report = block_on_guarded(&rt, m.close_all());
    assert_eq!(report.parked_closed, 1);
    assert_eq!(server.wait_open(0), 0);
}

#[test]
fn client_outside_a_runtime_errors_at_once() {
    let m = HttpClientManager::new();
    let mut fut = std::pin::pin!(m.client());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => {
            assert!(e.is_no_runtime(), "{e}");
            assert!(e.to_string().contains("runtime"));
        }
        other => panic!("expected an immediate no-runtime error, got {other:?}"),
    }
    let mut fut = std::pin::pin!(rtlocal::client());
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Err(e)) if e.is_no_runtime()));
}

#[test]
fn requests_in_flight_finish_before_a_graceful_replacement() {
    let server = TestServer::start();
    let m = Arc::new(HttpClientManager::new());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A request in flight on a live multi-thread runtime while the calling thread moves
    // to another runtime: the stale close waits for it, and it succeeds.
    let m2 = Arc::clone(&m);
    let slow = server.url("/slow/300");
    let (c, pending) = rt.block_on(async move {
        let c = m2.client().await.unwrap();
        let c2 = c.clone();
        let pending = tokio::spawn(async move {
            text(c2.get(&slow).await?).await;
            Ok::<_, rtlocal::Error>(())
        });
        (c, pending)
    });
    server.wait_requests(1);
    let other = current_thread_rt();
    let new = block_on_guarded(&other, async { m.client().await.unwrap() });
    assert_ne!(new.id(), c.id());
    assert!(!c.is_open());
    block_on_guarded(&rt, async { pending.await.unwrap().unwrap() });
    let s = m.stats();
    assert_eq!(s.forced_closes, 0);
    assert_eq!(s.requests_failed, 0);
}

#[test]
fn invalid_uri_is_a_clear_error() {
    let m = HttpClientManager::new();
    let rt = current_thread_rt();
    let e = block_on_guarded(&rt, async {
        m.client()
            .await
            .unwrap()
            .get("not a uri")
            .await
            .unwrap_err()
    });
    assert!(e.is_invalid_uri(), "{e:?}");
    assert!(e.to_string().contains("not a uri"), "{e}");
}

#[test]
fn two_managers_on_one_thread_keep_their_own_clients() {
    let a = HttpClientManager::new();
    let b = HttpClientManager::new();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let (a1, b1) = (a.client().await.unwrap(), b.client().await.unwrap());
        assert_ne!(a1.id(), b1.id());
        for _ in 0..3 {
            assert_eq!(a.client().await.unwrap().id(), a1.id());
            assert_eq!(b.client().await.unwrap().id(), b1.id());
        }
    });
    assert_eq!(
        (a.stats().clients_created, b.stats().clients_created),
        (1, 1)
    );
}

#[test]
fn dropping_a_manager_closes_its_clients_even_if_a_thread_cached_one() {
    let server = TestServer::start();
    let rt = current_thread_rt();
    let m = HttpClientManager::new();
    let c = block_on_guarded(&rt, async {
        let c = m.client().await.unwrap();
        text(c.get(&server.url("/")).await.unwrap()).await;
        c
    });
    assert_eq!(server.wait_open(1), 1);
    drop(m);
    assert!(!c.is_open());
    assert_eq!(server.wait_open(0), 0);
    // The dropped manager's handle fails clearly instead of hanging or re-routing.
    let e = block_on_guarded(&rt, c.get(&server.url("/"))).unwrap_err();
    assert!(e.is_closed(), "{e}");
    let m2 = HttpClientManager::new();
    let fresh = block_on_guarded(&rt, m2.client()).unwrap();
    assert_ne!(fresh.id(), c.id());
    assert!(fresh.is_open());
}
