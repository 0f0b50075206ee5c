//! Closing managed ConnectionManagers, judged by what the server reports (`CLIENT LIST`).
//! Each test has a server of its own, so the counts are its alone.

use std::sync::Arc;
use std::time::Duration;

use rtlocal_redis::{ManagedRedisExt, RedisFactory, RedisManager};
use rtlocal_testkit::current_thread;
use rtlocal_testkit::redis::Redis;

const SETTLE: Duration = Duration::from_secs(5);

async fn ping(manager: &RedisManager) {
    let mut con = manager.client().await.expect("a client").connection();
    let pong: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn close_all_closes_every_threads_connection() {
    let server = Redis::start();
    let manager = Arc::new(RedisManager::new(
        RedisFactory::open(server.url()).expect("a redis URL"),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let manager = manager.clone();
                tokio::spawn(async move { ping(&manager).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("a task");
        }
    });
    let live = manager.stats().clients_live as usize;
    assert!(live >= 1);
    assert_eq!(
        server.wait_connections(live, SETTLE),
        live,
        "one connection per client"
    );
    let report = rt.block_on(manager.close_all());
    eprintln!("close_all: {report}");
    assert_eq!((report.closed, report.forced), (live, 0));
    assert_eq!(
        server.wait_connections(0, SETTLE),
        0,
        "the server still sees our connections"
    );
    // Still usable afterwards.
    rt.block_on(ping(&manager));
    assert_eq!(server.wait_connections(1, SETTLE), 1);
    let report = rt.block_on(manager.shutdown(Duration::from_secs(2)));
    assert_eq!(report.closed, 1);
    assert_eq!(server.wait_connections(0, SETTLE), 0);
}

#[test]
fn task_runner_churn_leaves_no_connection() {
    let server = Redis::start();
    let manager = Arc::new(RedisManager::new(
        RedisFactory::open(server.url()).expect("a redis URL"),
    ));
    // Threads that each own a runtime, one runtime after another.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let manager = manager.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let rt = current_thread();
                    rt.block_on(ping(&manager));
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
        "each runtime's client closed with it: {stats:?}"
    );
    assert_eq!(server.wait_connections(0, SETTLE), 0);
}

/// What the server sees, against what the report says: a close that ends while the
/// client's runtime idles cannot close its socket (a task of that runtime), and the
/// report says so, naming that runtime.
fn assert_report_matches_the_server(server: &Redis, report: &rtlocal::CloseReport) {
    // The server's count settles at what the report says, and stays there: nothing drives
    // the idle runtime, so nothing could close the socket behind the report's back.
    assert_eq!(
        server.wait_connections(report.not_closed_on_wire, SETTLE),
        report.not_closed_on_wire,
        "the server's CLIENT LIST against the report: {report}"
    );
}

#[test]
fn close_all_while_the_runtime_idles_reports_the_connection_left_open() {
    let server = Redis::start();
    let manager = RedisManager::new(RedisFactory::open(server.url()).expect("a redis URL"));
    // This thread's client, on a runtime that stays alive but idles once block_on returns.
    let idle = current_thread();
    idle.block_on(ping(&manager));
    assert_eq!(server.wait_connections(1, SETTLE), 1);
    let closer = current_thread();
    let report = closer.block_on(manager.close_all());
    eprintln!("close_all: {report}");
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_report_matches_the_server(&server, &report);
    assert_eq!(report.not_closed_on_wire, 1, "{report}");
    let idle_id = idle.handle().id();
    assert_eq!(
        report.not_closed_on_wire_runtimes,
        vec![idle_id],
        "{report}"
    );
    assert!(
        report.to_string().contains(&format!(
            "1 not closed on the wire (their connections are tasks of runtime(s) {idle_id},"
        )),
        "the report names the runtime holding it: {report}"
    );
    assert_eq!(manager.stats().clients_not_closed_on_wire, 1);
    // Once that runtime runs again, the abort queued on it closes the socket.
    idle.block_on(tokio::task::yield_now());
    assert_eq!(server.wait_connections(0, SETTLE), 0);
}

#[test]
fn close_all_while_the_runtime_runs_closes_on_the_wire_and_says_so() {
    let server = Redis::start();
    let manager = RedisManager::new(RedisFactory::open(server.url()).expect("a redis URL"));
    let rt = current_thread();
    let report = rt.block_on(async {
        ping(&manager).await;
        manager.close_all().await
    });
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_report_matches_the_server(&server, &report);
    assert_eq!(report.not_closed_on_wire, 0, "{report}");
    assert!(report.not_closed_on_wire_runtimes.is_empty(), "{report}");
}

#[test]
fn an_idle_runtimes_connection_closes_when_that_runtime_ends() {
    // The limit the crate docs state: the socket's task belongs to its runtime.
    let server = Redis::start();
    let manager = RedisManager::new(RedisFactory::open(server.url()).expect("a redis URL"));
    let idle = current_thread();
    idle.block_on(ping(&manager));
    let closer = current_thread();
    let report = closer.block_on(manager.close_all());
    assert_eq!(
        (report.closed, report.forced, report.not_closed_on_wire),
        (1, 0, 1),
        "closed, but its runtime idles: the abort waits for that runtime: {report}"
    );
    assert_report_matches_the_server(&server, &report);
    drop(idle);
    assert_eq!(server.wait_connections(0, SETTLE), 0);
}
