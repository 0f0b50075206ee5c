//! Runtime churn: no fd growth, no open connections, no live clients. Alone in its test
//! binary so no other test opens fds while it counts.

mod common;

use common::{TestServer, block_on_guarded, current_thread_rt, open_fds, text};
use rtlocal::HttpClientManager;

#[test]
fn two_hundred_runtimes_churned_leak_nothing() {
    let server = TestServer::start();
    let m = HttpClientManager::new();
    let url = server.url("/");
    let run_once = |i: usize| {
        let rt = if i % 4 == 3 {
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
            // Also the default manager, so its clients churn too.
            let d = rtlocal::client().await.unwrap();
            assert_eq!(text(d.get(&url).await.unwrap()).await, "hello");
        });
        drop(rt);
    };
    // Warm-up: lazily created globals (registries, the server's accept path).
    run_once(0);
    assert_eq!(server.wait_open(0), 0);
    let fds_before = open_fds();
    for i in 1..=200 {
        run_once(i);
    }
    assert_eq!(server.wait_open(0), 0, "server still sees open connections");
    let fds_after = open_fds();
    assert_eq!(
        fds_after, fds_before,
        "fds before {fds_before}, after {fds_after}"
    );
    let s = m.stats();
    assert_eq!(s.clients_created, 201);
    assert_eq!(s.clients_live, 0);
    assert_eq!(s.connections_open, 0);
    assert_eq!(s.runtime_releases, 201);
    assert_eq!(rtlocal::default_manager().stats().clients_live, 0);
    assert_eq!(server.accepted(), 402);
}
