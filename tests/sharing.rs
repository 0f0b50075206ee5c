//! `Sharing::PerRuntime`: one client for all threads of a runtime, with the same
//! guarantees as per-thread clients (released at teardown, closed by `close_all`, never a
//! stale one handed out), against a real loopback server.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use common::{TestServer, block_on_guarded, current_thread_rt, settle, text};
use rtlocal::{ClientId, HttpClientManager, Sharing};

fn manager(sharing: Sharing) -> Arc<HttpClientManager> {
    Arc::new(
        HttpClientManager::builder()
            .sharing(sharing)
            // These tests are about which client serves whom and when it is closed: a
            // torn-down runtime's connections are closed, not carried (tests/carry.rs).
            .carry_idle_connections(false)
            .build()
            .expect("valid configuration"),
    )
}

fn multi_thread_rt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// 200 spawned requests on a 4-worker runtime: which client served each, on which thread.
fn spread(m: &Arc<HttpClientManager>, server: &TestServer) -> Vec<(ClientId, ThreadId)> {
    let rt = multi_thread_rt(4);
    let url = server.url("/");
    let out = block_on_guarded(&rt, async {
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (m, url) = (Arc::clone(m), url.clone());
                tokio::spawn(async move {
                    let c = m.client().await.expect("client");
                    let thread = std::thread::current().id();
                    assert_eq!(text(c.get(&url).await.expect("request")).await, "hello");
                    (c.id(), thread)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    drop(rt);
    out
}

#[test]
fn per_runtime_one_client_for_every_worker_thread_released_at_teardown() {
    let server = TestServer::start();
    let m = manager(Sharing::PerRuntime);
    let served = spread(&m, &server);
    let clients: HashSet<_> = served.iter().map(|(c, _)| *c).collect();
    assert_eq!(clients.len(), 1, "every worker thread shares one client");
    // The runtime is gone: its client was released right then, its slot removed.
    let s = m.stats();
    assert_eq!(s.clients_created, 1, "{s:?}");
    assert_eq!(settle(0, || m.stats().clients_live), 0);
    assert_eq!(m.stats().runtime_slots, 0, "the dead runtime's slot stayed");
    assert_eq!(server.wait_open(0), 0);
}

#[test]
fn per_thread_gives_each_worker_thread_its_own_client() {
    let server = TestServer::start();
    let m = manager(Sharing::PerThread);
    let served = spread(&m, &server);
    let mut by_thread: HashMap<ThreadId, HashSet<ClientId>> = HashMap::new();
    for (client, thread) in &served {
        by_thread.entry(*thread).or_default().insert(*client);
    }
    // A task gets the client of the thread it ran `client()` on; each thread has one.
    assert!(by_thread.values().all(|c| c.len() == 1), "{by_thread:?}");
    let clients: HashSet<_> = served.iter().map(|(c, _)| *c).collect();
    assert_eq!(clients.len(), by_thread.len(), "threads shared a client");
    assert_eq!(m.stats().clients_created as usize, by_thread.len());
    assert_eq!(server.wait_open(0), 0);
}

#[test]
fn per_runtime_alternating_runtimes_keep_their_clients_and_close_all_closes_both() {
    let server = TestServer::start();
    let m = manager(Sharing::PerRuntime);
    let url = server.url("/");
    let (rt1, rt2) = (current_thread_rt(), current_thread_rt());
    let get = |rt: &tokio::runtime::Runtime| {
        block_on_guarded(rt, async {
            let c = m.client().await.expect("client");
            assert_eq!(text(c.get(&url).await.expect("request")).await, "hello");
            c
        })
    };
    let (a, b) = (get(&rt1), get(&rt2));
    assert_ne!(a.id(), b.id());
    // Unlike per-thread slots, moving between live runtimes replaces nothing.
    assert_eq!(get(&rt1).id(), a.id());
    assert_eq!(get(&rt2).id(), b.id());
    let s = m.stats();
    assert_eq!(
        (s.clients_created, s.clients_replaced, s.runtime_slots),
        (2, 0, 2),
        "{s:?}"
    );

    let report = block_on_guarded(&rt1, m.close_all());
    assert_eq!((report.closed, report.forced), (2, 0), "{report}");
    assert!(!a.is_open() && !b.is_open());
    // rt2 is idle, yet its client's connection was shut down on the wire.
    assert_eq!(server.wait_open(0), 0);
    let fresh = get(&rt2);
    assert_ne!(fresh.id(), b.id(), "a closed client came back");
}

#[test]
fn per_runtime_client_outlives_a_thread_that_used_it_and_exited() {
    let server = TestServer::start();
    let m = manager(Sharing::PerRuntime);
    let rt = multi_thread_rt(2);
    let handle = rt.handle().clone();
    let (m2, url) = (Arc::clone(&m), server.url("/"));
    // A thread outside the runtime's workers enters it, uses the client, and exits.
    let from_exited = std::thread::spawn(move || {
        handle.block_on(async {
            let c = m2.client().await.expect("client");
            assert_eq!(text(c.get(&url).await.expect("request")).await, "hello");
            // hyper-util hands the connection back to the pool from a task of its own once
            // the body is done; let that task run before the next request looks for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            c
        })
    })
    .join()
    .expect("thread");
    assert!(
        from_exited.is_open(),
        "a thread's exit closed the runtime's shared client"
    );
    let url = server.url("/");
    let c = block_on_guarded(&rt, async {
        let c = m.client().await.expect("client");
        assert_eq!(text(c.get(&url).await.expect("request")).await, "hello");
        c
    });
    assert_eq!(c.id(), from_exited.id());
    assert_eq!(
        server.accepted(),
        1,
        "the pooled connection was reused across threads"
    );
    drop(rt);
    assert!(!c.is_open());
    assert_eq!(server.wait_open(0), 0);
}
