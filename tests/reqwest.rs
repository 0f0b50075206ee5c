//! Managed reqwest clients (feature `reqwest`) against a real loopback server: the
//! cross-runtime hang of a plain shared `reqwest::Client` (reqwest#2501), and the managed
//! client that does not hang, is replaced with its runtime and closes gracefully.
#![cfg(feature = "reqwest")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{IdleRuntime, TestServer, block_on_guarded, current_thread_rt, settle};
use rtlocal::{ReqwestFactory, ReqwestManager};

#[test]
fn plain_shared_reqwest_client_hangs_on_an_idle_runtimes_connection() {
    let server = TestServer::start();
    // A plain client, but not reading the proxy variables (reqwest would send these
    // loopback requests to a HTTP_PROXY the machine sets).
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client");
    let url = server.url("/");
    let (c, u) = (client.clone(), url.clone());
    // Thread A's runtime makes the pooled connection, then sits idle.
    let idle =
        IdleRuntime::start(
            move || async move { c.get(u).send().await.unwrap().text().await.unwrap() },
        );
    assert_eq!(idle.value, "hello");

    let rt_b = current_thread_rt();
    let outcome = rt_b.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), client.get(&url).send()).await
    });
    assert!(
        outcome.is_err(),
        "expected the shared reqwest client to hang on the idle runtime's connection, got {outcome:?}"
    );
}

#[test]
fn managed_reqwest_client_does_not_hang() {
    let server = TestServer::start();
    let manager = Arc::new(ReqwestManager::new(ReqwestFactory::new()));
    let url = server.url("/");
    let (m, u) = (Arc::clone(&manager), url.clone());
    let idle = IdleRuntime::start(move || async move {
        let c = m.client().await.unwrap();
        let body = c.get(u).send().await.unwrap().text().await.unwrap();
        (c.id(), body)
    });
    assert_eq!(idle.value.1, "hello");

    let rt_b = current_thread_rt();
    let (id, body) = block_on_guarded(&rt_b, async {
        let c = manager.client().await.unwrap();
        let body = c.get(&url).send().await.unwrap().text().await.unwrap();
        (c.id(), body)
    });
    assert_eq!(body, "hello");
    assert_ne!(id, idle.value.0, "runtime B must get its own client");
    assert_eq!(server.accepted(), 2, "one connection per runtime");
    assert_eq!(manager.stats().clients_live, 2);
}

#[test]
fn a_new_runtime_gets_a_new_reqwest_client_and_the_old_ones_connections_close() {
    let server = TestServer::start();
    let manager = ReqwestManager::new(ReqwestFactory::new());
    let url = server.url("/");
    let rt1 = current_thread_rt();
    let first = block_on_guarded(&rt1, async {
        let c = manager.client().await.unwrap();
        assert_eq!(
            c.get(&url).send().await.unwrap().text().await.unwrap(),
            "hello"
        );
        let again = manager.client().await.unwrap();
        assert_eq!(again.id(), c.id(), "same thread, same runtime: same client");
        c
    });
    assert_eq!(server.wait_open(1), 1);
    drop(rt1);
    // The runtime's teardown released its client, and took its connection with it.
    assert!(!first.is_open());
    assert_eq!(
        server.wait_open(0),
        0,
        "the dropped runtime's connection stayed open"
    );

    let rt2 = current_thread_rt();
    let second = block_on_guarded(&rt2, async {
        let c = manager.client().await.unwrap();
        assert_eq!(
            c.get(&url).send().await.unwrap().text().await.unwrap(),
            "hello"
        );
        c
    });
    assert_ne!(second.id(), first.id());
    let s = manager.stats();
    assert_eq!(
        (s.clients_created, s.clients_closed, s.runtime_releases),
        (2, 1, 1),
        "{s:?}"
    );
}

#[test]
fn close_all_waits_for_a_tracked_reqwest_request() {
    let server = TestServer::start();
    let manager = Arc::new(
        ReqwestManager::builder(ReqwestFactory::new())
            .close_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = server.url("/slow/300");
    let (report, body) = block_on_guarded(&rt, async {
        let c = manager.client().await.unwrap();
        let guard = c.track().expect("open client");
        let request = tokio::spawn(async move {
            let body = c.get(&url).send().await?.text().await;
            drop(guard);
            body
        });
        // Let the request reach the server before closing.
        server.requests_reached(1).await;
        let report = manager.close_all().await;
        (report, request.await.unwrap())
    });
    assert_eq!(body.unwrap(), "slow", "the tracked request finished");
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(manager.stats().requests_in_flight, 0);
}

#[test]
fn shutdown_refuses_new_reqwest_clients() {
    let manager = ReqwestManager::new(ReqwestFactory::with_builder(|| {
        ReqwestFactory::client_builder().pool_idle_timeout(Duration::from_secs(5))
    }));
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let c = manager.client().await.unwrap();
        let report = manager.shutdown(Duration::from_secs(1)).await;
        assert_eq!(report.closed, 1, "{report}");
        assert!(!c.is_open());
        let err = manager.client().await.unwrap_err();
        assert!(err.is_shut_down(), "{err}");
    });
    assert_eq!(settle(0, || manager.stats().clients_live), 0);
}

/// A kept handle (or a clone of it) used on a runtime other than its client's never
/// waits on that client's pooled connection, whose runtime idles: the request fails at
/// once, naming both runtimes, and nothing reaches the server. The manager's client for
/// the current runtime works as usual.
#[test]
fn a_kept_client_used_on_another_runtime_fails_fast_naming_both_runtimes() {
    let server = TestServer::start();
    let manager = Arc::new(ReqwestManager::new(ReqwestFactory::new()));
    let url = server.url("/");
    let (m, u) = (Arc::clone(&manager), url.clone());
    let idle = IdleRuntime::start(move || async move {
        let c = m.client().await.expect("a client");
        let body = c
            .get(u)
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("read");
        (c, body)
    });
    assert_eq!(idle.value.1, "hello");
    let kept = idle.value.0.clone();
    let owner = kept.runtime_id();
    assert_eq!(server.accepted(), 1);

    let rt_b = current_thread_rt();
    let (err, here) = block_on_guarded(&rt_b, async {
        let sent = tokio::time::timeout(Duration::from_secs(5), kept.get(&url).send())
            .await
            .expect("hung on the idle runtime's connection");
        (
            sent.expect_err("refused on a foreign runtime"),
            tokio::runtime::Handle::current().id(),
        )
    });
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    let chain = chain.join(": ");
    assert!(
        chain.contains(&format!("runtime {owner}")) && chain.contains(&format!("runtime {here}")),
        "{chain}"
    );
    assert_eq!(
        server.accepted(),
        1,
        "the refused request reached the server"
    );

    let body = block_on_guarded(&rt_b, async {
        let c = manager.client().await.expect("this runtime's client");
        c.get(&url)
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("read")
    });
    assert_eq!(body, "hello");
}
