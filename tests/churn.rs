//! Runtime churn: no fd growth, no live clients, and no connection left open but the
//! idle ones carried from runtime to runtime (one per manager), which `close_all`
//! closes. Alone in its test binary so no other test opens fds while it counts.

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
    // Warm-up: lazily created globals (registries, the server's accept path). Each
    // manager's connection is parked when the runtime ends, for the next one.
    run_once(0);
    assert_eq!(server.wait_open(2), 2);
    let fds_before = open_fds();
    for i in 1..=200 {
        run_once(i);
    }
    // Still the two parked connections, and no other.
    assert_eq!(server.wait_open(2), 2, "server sees other connections open");
    let fds_after = open_fds();
    assert_eq!(
        fds_after, fds_before,
        "fds before {fds_before}, after {fds_after}"
    );
    let s = m.stats();
    assert_eq!(s.clients_created, 201);
    assert_eq!(s.clients_live, 0);
    assert_eq!(s.connections_open, 1, "the parked connection counts open");
    assert_eq!(s.runtime_releases, 201);
    assert_eq!(rtlocal::default_manager().stats().clients_live, 0);
    // Every current_thread generation takes the connection the one before parked; a
    // multi_thread runtime's teardown may come before its connection task saw the
    // connection idle, and then closes it (one new connection per manager at most).
    let multi = 200 / 4;
    assert!(
        server.accepted() <= 2 + 2 * multi,
        "{} connections for 201 generations",
        server.accepted()
    );
    // close_all closes the parked connections on the wire.
    let rt = current_thread_rt();
    let (mine, default) = block_on_guarded(&rt, async {
        (
            m.close_all().await,
            rtlocal::default_manager().close_all().await,
        )
    });
    drop(rt);
    assert_eq!((mine.parked_closed, default.parked_closed), (1, 1));
    assert_eq!(server.wait_open(0), 0, "a parked connection stayed open");
    assert_eq!(m.stats().connections_open, 0);
    // Both ends of each: the server runs in this process.
    assert_eq!(open_fds(), fds_before - 4);
}
