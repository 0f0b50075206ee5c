//! Closing managed reqwest clients, judged by the server's view of the connection: a
//! reqwest client cannot be closed on the wire from outside, so a close whose runtime is
//! idle must say so (`CloseReport::not_closed_on_wire`), and one whose runtime runs must
//! not.
#![cfg(feature = "reqwest")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{IdleRuntime, TestServer, block_on_guarded, current_thread_rt};
use rtlocal::{ReqwestFactory, ReqwestManager};

/// Makes one request on `manager`'s client for this runtime and drops every handle on
/// the client: only the manager's slot keeps it.
async fn one_request(manager: &ReqwestManager, url: &str) -> String {
    let client = manager.client().await.expect("client");
    let body = client.get(url).send().await.expect("send");
    body.text().await.expect("body")
}

#[test]
fn close_all_reports_a_client_on_an_idle_runtime_not_closed_on_the_wire() {
    let server = TestServer::start();
    let manager = Arc::new(ReqwestManager::new(ReqwestFactory::new()));
    let (m, url) = (Arc::clone(&manager), server.url("/"));
    // A current_thread runtime held by another thread, not polled after setup.
    let idle = IdleRuntime::start(move || async move { one_request(&m, &url).await });
    assert_eq!(idle.value, "hello");
    assert_eq!(server.wait_open(1), 1, "the pooled connection is open");

    let report = block_on_guarded(&current_thread_rt(), manager.close_all());
    assert_eq!(report.closed, 1, "{report}");
    assert_eq!(report.not_closed_on_wire, 1, "{report}");
    assert!(
        report.to_string().contains("1 not closed on the wire"),
        "{report}"
    );
    let stats = manager.stats();
    assert_eq!(stats.clients_not_closed_on_wire, 1, "{stats:?}");
    assert_eq!(stats.clients_live, 0, "{stats:?}");

    // The kernel agrees: nobody polls the connection task, so the socket stays open.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.open(), 1, "the server still sees the connection");

    // What the docs advise: drop the idle runtime, and its connections go with it.
    drop(idle);
    assert_eq!(
        server.wait_open(0),
        0,
        "dropping the runtime closes the socket"
    );
}

#[test]
fn close_all_closes_a_client_on_a_running_runtime_on_the_wire() {
    let server = TestServer::start();
    let manager = Arc::new(ReqwestManager::new(ReqwestFactory::new()));
    let (m, url) = (Arc::clone(&manager), server.url("/"));
    // A current_thread runtime that keeps running (inside block_on) until told to stop.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        let rt = current_thread_rt();
        block_on_guarded(&rt, async move {
            ready.send(one_request(&m, &url).await).expect("send ready");
            let _ = stopped.await;
        });
    });
    assert_eq!(is_ready.recv().expect("setup"), "hello");
    assert_eq!(server.wait_open(1), 1, "the pooled connection is open");

    let report = block_on_guarded(&current_thread_rt(), manager.close_all());
    assert_eq!(report.closed, 1, "{report}");
    assert_eq!(report.not_closed_on_wire, 0, "{report}");
    assert_eq!(manager.stats().clients_not_closed_on_wire, 0);
    // The runtime is still alive and running: it polled the connection task, which
    // closed the socket once the client was dropped.
    assert_eq!(
        server.wait_open(0),
        0,
        "the server saw the connection close"
    );

    let _ = stop.send(());
    runner.join().expect("runner thread");
}

#[test]
fn replacing_a_client_whose_runtime_idles_counts_it_not_closed_on_the_wire() {
    let server = TestServer::start();
    let manager = ReqwestManager::new(ReqwestFactory::new());
    let url = server.url("/");
    // One thread, two runtimes: the first stays alive but idle while the second asks.
    let first = current_thread_rt();
    assert_eq!(
        block_on_guarded(&first, one_request(&manager, &url)),
        "hello"
    );
    let second = current_thread_rt();
    assert_eq!(
        block_on_guarded(&second, one_request(&manager, &url)),
        "hello"
    );
    assert_eq!(manager.stats().clients_replaced, 1, "{:?}", manager.stats());
    // The replacement does not wait to learn it (the caller's `client()` waits for the
    // close); the check runs on the closer and the statistic follows. Hang guard only.
    let guard = std::time::Instant::now() + Duration::from_secs(10);
    while manager.stats().clients_not_closed_on_wire == 0 && std::time::Instant::now() < guard {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = manager.stats();
    assert_eq!(stats.clients_not_closed_on_wire, 1, "{stats:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.open(),
        2,
        "the idle runtime's connection is still open"
    );
    drop(first);
    assert_eq!(
        server.wait_open(1),
        1,
        "dropping the idle runtime closes it"
    );
    drop(second);
}
