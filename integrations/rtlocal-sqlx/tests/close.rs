//! Closing managed PgPools, judged by what the server reports (`pg_stat_activity`, asked
//! over a connection of its own). One server for the binary; the tests take turns, so
//! the counts are each test's alone.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{SERVER, current_thread};
use rtlocal_sqlx::{PgManager, PgPoolFactory};
use sqlx::postgres::PgPoolOptions;

const SETTLE: Duration = Duration::from_secs(10);

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
        SERVER.connections() >= live as i64,
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

#[test]
fn close_all_from_another_runtime_closes_an_idle_runtimes_pool() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = manager(Duration::from_secs(5));
    let idle = current_thread();
    idle.block_on(async {
        select_one(&manager).await;
        // Let the pool's task take the connection back (see cross_runtime.rs).
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    assert_eq!(SERVER.wait_connections(1, SETTLE), 1);
    // `idle` is alive and nobody drives it; the close runs from another runtime.
    let report = current_thread().block_on(manager.close_all());
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(SERVER.wait_connections(0, SETTLE), 0);
    drop(idle);
}

#[test]
fn a_connection_held_on_an_idle_runtime_makes_the_close_forced() {
    // The limit the crate docs state: Pool::close waits for checked-out connections.
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let manager = Arc::new(manager(Duration::from_millis(500)));
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
    let report = current_thread().block_on(manager.close_all());
    eprintln!("close_all with a connection held: {report}");
    assert_eq!((report.closed, report.forced), (1, 1));
    assert_eq!(SERVER.connections(), 1, "the held connection is still open");
    drop(idle); // its tasks, and the connection they held, are dropped
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
