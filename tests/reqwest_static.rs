//! The classic failure of a `static` reqwest client shared by `#[tokio::test]` functions
//! (each test has its own runtime, dropped when the test ends: "dispatch task is gone",
//! or a hang), done right: a `static` managed reqwest client. Every test here runs on its
//! own runtime, many at once, each dropping its runtime while others are mid-request.
#![cfg(feature = "reqwest")]

mod common;

use std::sync::LazyLock;

use common::TestServer;
use rtlocal::{ReqwestFactory, ReqwestManager};

// Started off the first test's runtime: the server owns a runtime of its own.
static SERVER: LazyLock<TestServer> = LazyLock::new(|| {
    std::thread::spawn(TestServer::start)
        .join()
        .expect("server thread")
});
static HTTP: LazyLock<ReqwestManager> =
    LazyLock::new(|| ReqwestManager::new(ReqwestFactory::new()));

/// A few requests, each through the client for this test's runtime.
async fn exercise(path: &str) {
    let url = SERVER.url(path);
    for _ in 0..8 {
        let client = HTTP.client().await.expect("a client for this runtime");
        assert_eq!(client.runtime_id(), tokio::runtime::Handle::current().id());
        let body = client
            .get(&url)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(
            body == "hello" || body == "slow",
            "unexpected body {body:?}"
        );
    }
}

macro_rules! tests {
    ($($name:ident => $path:literal,)*) => {$(
        #[tokio::test]
        async fn $name() {
            exercise($path).await;
        }
    )*};
}

tests! {
    current_thread_1 => "/",
    current_thread_2 => "/slow/3",
    current_thread_3 => "/",
    current_thread_4 => "/slow/7",
    current_thread_5 => "/",
    current_thread_6 => "/slow/2",
    current_thread_7 => "/",
    current_thread_8 => "/slow/5",
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_runtime() {
    let tasks: Vec<_> = (0..8)
        .map(|i| tokio::spawn(exercise(if i % 2 == 0 { "/" } else { "/slow/4" })))
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}
