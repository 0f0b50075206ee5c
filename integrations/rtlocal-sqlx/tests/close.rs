//! Closing managed PgPools, judged by what the server reports (`pg_stat_activity`, asked
//! over a connection of its own). One server for the binary; the tests take turns, so
//! the counts are each test's alone.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::SERVER;
use rtlocal_sqlx::{PgManager, PgPoolFactory};
use rtlocal_testkit::current_thread;
use sqlx::postgres::PgPoolOptions;

const SETTLE: Duration = Duration::from_secs(10);
/// A close timeout no close in these tests comes near, unless it waits for a runtime
/// that does not run.
const LONG_CLOSE: Duration = Duration::from_secs(60);
/// Hang guard for a close: well within [`LONG_CLOSE`], far beyond what a close takes.
const HANG_GUARD: Duration = Duration::from_secs(20);

static TURN: Mutex<()> = Mutex::new(());

fn manager(close_timeout: Duration) -> PgManager {
    let options = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10));
    rtlocal::Manager::builder(PgPoolFactory::new(SERVER.options()).with_pool_options(options))
        .close_timeout(close_timeout)
        .build()
        .expect("a manager")
}

async fn select_one(manager: &PgManager) {
    let pool = manager.client().await.expect("a pool");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&*pool)
        .await
        .expect("SELECT 1");
    assert_eq!(one, 1);
}

#[test]
fn close_all_and_shutdown_close_every_threads_pool() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = Arc::new(manager(Duration::from_secs(5)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let manager = manager.clone();
                tokio::spawn(async move { select_one(&manager).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("a task");
        }
    });
    let live = manager.stats().clients_live as usize;
    assert!(live >= 1);
    assert!(
        SERVER.connections() >= live,
        "every pool has a connection open"
    );
    let report = rt.block_on(manager.close_all());
    eprintln!("close_all: {report}");
    assert_eq!((report.closed, report.forced), (live, 0));
    assert_eq!(
        SERVER.wait_connections(0, SETTLE),
        0,
        "the server still sees our connections"
    );
    // Still usable afterwards.
    rt.block_on(select_one(&manager));
    assert!(SERVER.wait_connections(1, SETTLE) >= 1);
    let report = rt.block_on(manager.shutdown(Duration::from_secs(5)));
    assert_eq!((report.closed, report.forced), (1, 0));
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
}

/// A `current_thread` runtime whose thread ran one query and left `block_on` at once,
/// as a thread does after its last query: the connection was released, but the task
/// that returns it to the pool (sqlx spawns one on the pool's runtime) never ran. The
/// runtime stays alive, and nobody drives it.
fn idle_after_last_query(manager: &PgManager) -> tokio::runtime::Runtime {
    let idle = current_thread();
    idle.block_on(select_one(manager));
    assert_eq!(SERVER.wait_connections(1, SETTLE), 1);
    idle
}

/// Runs `close` on a runtime of its own, bounded by [`HANG_GUARD`].
fn close_from_elsewhere<T>(close: impl Future<Output = T>) -> T {
    current_thread()
        .block_on(async { tokio::time::timeout(HANG_GUARD, close).await })
        .expect("the close waited for a runtime that does not run")
}

#[test]
fn close_all_right_after_the_last_query_reports_what_the_idle_runtime_keeps_open() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = manager(LONG_CLOSE);
    let idle = idle_after_last_query(&manager);
    let report = close_from_elsewhere(manager.close_all());
    eprintln!("close_all after the last query: {report}");
    let open = SERVER.connections();
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(open, 1, "the released connection waits on its runtime");
    assert_eq!(report.not_closed_on_wire, open, "{report}");
    assert_eq!(report.not_closed_on_wire_runtimes, [idle.handle().id()]);
    // Dropping the runtime drops the task, and the connection with it.
    drop(idle);
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
}

#[test]
fn shutdown_right_after_the_last_query_reports_what_the_idle_runtime_keeps_open() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = manager(LONG_CLOSE);
    let idle = idle_after_last_query(&manager);
    let report = close_from_elsewhere(manager.shutdown(LONG_CLOSE));
    eprintln!("shutdown after the last query: {report}");
    let open = SERVER.connections();
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(open, 1, "the released connection waits on its runtime");
    assert_eq!(report.not_closed_on_wire, open, "{report}");
    drop(idle);
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
}

#[test]
fn shutdown_all_right_after_the_last_query_reports_what_the_idle_runtime_keeps_open() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let options = PgPoolOptions::new().max_connections(2);
    let manager: PgManager =
        rtlocal::Manager::builder(PgPoolFactory::new(SERVER.options()).with_pool_options(options))
            .name("close.rs shutdown_all")
            .close_timeout(LONG_CLOSE)
            .build()
            .expect("a manager");
    let idle = idle_after_last_query(&manager);
    let all = close_from_elsewhere(rtlocal::shutdown_all(LONG_CLOSE));
    eprintln!("shutdown_all after the last query: {all}");
    let report = &all
        .managers
        .iter()
        .find(|m| m.name == "close.rs shutdown_all")
        .expect("the manager's line")
        .report;
    let open = SERVER.connections();
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(open, 1, "the released connection waits on its runtime");
    assert_eq!(report.not_closed_on_wire, open, "{report}");
    drop(idle);
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
}

#[test]
fn close_all_right_after_the_last_query_on_a_running_runtime_closes_everything() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = manager(LONG_CLOSE);
    // Its worker goes on running after `block_on` returns: the connection comes back.
    let running = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    running.block_on(select_one(&manager));
    let report = close_from_elsewhere(manager.close_all());
    eprintln!("close_all with the runtime running: {report}");
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(report.not_closed_on_wire, 0, "{report}");
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
}

#[test]
fn close_all_from_another_runtime_closes_an_idle_runtimes_idle_connections() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = manager(LONG_CLOSE);
    let idle = current_thread();
    idle.block_on(async {
        select_one(&manager).await;
        // The runtime runs until the pool's task has taken the connection back.
        let pool = manager.client().await.expect("a pool");
        while pool.num_idle() < 1 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(SERVER.wait_connections(1, SETTLE), 1);
    // `idle` is alive and nobody drives it; the close runs from another runtime and
    // closes the idle connection on the wire itself.
    let report = close_from_elsewhere(manager.close_all());
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(report.not_closed_on_wire, 0, "{report}");
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
    drop(idle);
}

#[test]
fn a_connection_held_on_an_idle_runtime_is_left_to_it() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = Arc::new(manager(LONG_CLOSE));
    let idle = current_thread();
    idle.block_on(async {
        let pool = manager.client().await.expect("a pool");
        let conn = pool.acquire().await.expect("a connection");
        // A task that holds the connection and, its runtime idle, never runs again.
        tokio::spawn(async move {
            let _held = conn;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
    });
    assert_eq!(SERVER.wait_connections(1, SETTLE), 1);
    let report = close_from_elsewhere(manager.close_all());
    eprintln!("close_all with a connection held on an idle runtime: {report}");
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(SERVER.connections(), 1, "the held connection is still open");
    assert_eq!(report.not_closed_on_wire, 1, "{report}");
    drop(idle); // its tasks, and the connection they held, are dropped
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
}

#[test]
fn a_connection_held_on_a_running_runtime_makes_the_close_forced() {
    // The limit the crate docs state: Pool::close waits for checked-out connections.
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = Arc::new(manager(Duration::from_millis(500)));
    let running = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let (give_back, held) = tokio::sync::oneshot::channel::<()>();
    running.block_on(async {
        let pool = manager.client().await.expect("a pool");
        let conn = pool.acquire().await.expect("a connection");
        // A task of a running runtime that holds the connection until told.
        tokio::spawn(async move {
            let _held = conn;
            let _ = held.await;
        });
    });
    assert_eq!(SERVER.wait_connections(1, SETTLE), 1);
    let report = close_from_elsewhere(manager.close_all());
    eprintln!("close_all with a connection held on a running runtime: {report}");
    assert_eq!((report.closed, report.forced), (1, 1), "{report}");
    assert_eq!(report.not_closed_on_wire, 0, "{report}");
    assert_eq!(SERVER.connections(), 1, "the held connection is still open");
    // Given back to the closed pool, it is closed.
    let _ = give_back.send(());
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
}

#[test]
fn task_runner_churn_leaves_no_connection() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = Arc::new(manager(Duration::from_secs(5)));
    // Threads that each own a runtime, one runtime after another.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let manager = manager.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    current_thread().block_on(select_one(&manager));
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
        "each runtime's pool closed with it: {stats:?}"
    );
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
}
