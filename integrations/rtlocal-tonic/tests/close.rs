//! Closing managed Channels, judged by what the server sees: the connections it has
//! open and has accepted. Each test has a server of its own.

use std::sync::Arc;
use std::time::Duration;

use rtlocal_testkit::current_thread;
use rtlocal_testkit::grpc::{Grpc, check, check_status};
use rtlocal_tonic::{ChannelFactory, ChannelManager};

const SETTLE: Duration = Duration::from_secs(5);

fn manager(server: &Grpc) -> ChannelManager {
    ChannelManager::new(ChannelFactory::from_shared(server.uri()).expect("a URI"))
}

async fn call(manager: &ChannelManager) {
    let client = manager.client().await.expect("a channel");
    check(client.channel()).await.expect("a health check");
}

#[test]
fn close_all_and_shutdown_close_every_threads_connection() {
    let server = Grpc::start();
    let manager = Arc::new(manager(&server));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let manager = manager.clone();
                tokio::spawn(async move { call(&manager).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("a task");
        }
    });
    let live = manager.stats().clients_live as usize;
    assert!(live >= 1);
    assert_eq!(
        server.wait_open(live, SETTLE),
        live,
        "one connection per channel"
    );
    let report = rt.block_on(manager.close_all());
    eprintln!("close_all: {report}");
    assert_eq!((report.closed, report.forced), (live, 0));
    assert_eq!(
        server.wait_open(0, SETTLE),
        0,
        "the server still sees our connections"
    );
    // Still usable afterwards.
    rt.block_on(call(&manager));
    assert_eq!(server.wait_open(1, SETTLE), 1);
    let report = rt.block_on(manager.shutdown(Duration::from_secs(2)));
    assert_eq!((report.closed, report.forced), (1, 0));
    assert_eq!(server.wait_open(0, SETTLE), 0);
}

#[test]
fn close_all_from_another_runtime_closes_an_idle_runtimes_connection() {
    let server = Grpc::start();
    let manager = manager(&server);
    let idle = current_thread();
    let kept = idle.block_on(async {
        let client = manager.client().await.expect("a channel");
        check(client.channel()).await.expect("a health check");
        client
    });
    assert_eq!(server.wait_open(1, SETTLE), 1);
    // `idle` is alive and nobody drives it: the close cannot count on its tasks.
    let other = current_thread();
    let report = other.block_on(manager.close_all());
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(server.wait_open(0, SETTLE), 0, "shut down on the wire");
    assert!(kept.is_closed());
    assert_eq!(kept.open_connections(), 0);
    // A clone of the closed channel kept past the close fails its calls, and dials
    // nothing, even on its own runtime.
    let accepted = server.accepted();
    for which in ["first", "next"] {
        let late = idle.block_on(check_status(kept.channel()));
        assert_closed_status(late, which);
    }
    assert_eq!(
        server.accepted(),
        accepted,
        "a closed channel must not reconnect"
    );
    drop(kept);
    drop(idle);
}

/// A call through a closed channel fails fast with `Unavailable`, saying its manager
/// closed it.
fn assert_closed_status(result: Result<(), tonic::Status>, which: &str) {
    let status = result.expect_err("a call through a closed channel");
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "the {which} call through a closed channel: {status:?}"
    );
    assert!(
        status.message().contains("closed by its rtlocal manager"),
        "the {which} call's message names the manager: {status:?}"
    );
}

/// The same for a channel whose runtime keeps running (its connection task sees the
/// shut-down socket at once), and for a call made right after the close, on the channel's
/// own runtime.
#[test]
fn every_call_through_a_closed_channel_is_unavailable_naming_the_manager() {
    let server = Grpc::start();
    let manager = manager(&server);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let accepted = rt.block_on(async {
        let kept = manager.client().await.expect("a channel");
        let channel = kept.channel();
        check(channel.clone()).await.expect("a health check");
        let report = manager.close_all().await;
        assert_eq!((report.closed, report.forced), (1, 0), "{report}");
        let accepted = server.accepted();
        for which in ["first", "next"] {
            assert_closed_status(check_status(channel.clone()).await, which);
        }
        accepted
    });
    assert_eq!(
        server.accepted(),
        accepted,
        "a closed channel must not reconnect"
    );
    assert_eq!(server.wait_open(0, SETTLE), 0);
}

#[test]
fn task_runner_churn_leaves_no_connection() {
    let server = Grpc::start();
    let manager = Arc::new(manager(&server));
    // Threads that each own a runtime, one runtime after another.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let manager = manager.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    current_thread().block_on(call(&manager));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a runner thread");
    }
    let stats = manager.stats();
    assert_eq!(stats.clients_created, 20);
    assert_eq!(
        stats.clients_live, 0,
        "each runtime's channel closed with it: {stats:?}"
    );
    assert_eq!(server.accepted(), 20, "one connection per channel");
    assert_eq!(server.wait_open(0, SETTLE), 0);
}
