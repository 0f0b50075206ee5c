//! The upstream failure, reproduced with a plain `static` PgPool shared across runtimes,
//! and the same scenarios passing with a managed one.

mod common;

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use common::SERVER;
use rtlocal_sqlx::{PgManager, PgPoolFactory};
use rtlocal_testkit::current_thread;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Longer than the pools' acquire timeout: a hang shows as our timeout, a failure as
/// sqlx's error.
const BOUND: Duration = Duration::from_secs(5);

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
}

static PLAIN_IDLE: OnceLock<PgPool> = OnceLock::new();
static PLAIN_DROPPED: OnceLock<PgPool> = OnceLock::new();
static MANAGED: LazyLock<PgManager> = LazyLock::new(|| {
    // Without the ping before each acquire too: nothing depends on it.
    let options = pool_options().test_before_acquire(false);
    PgManager::new(PgPoolFactory::new(SERVER.options()).with_pool_options(options))
});

/// `SELECT 1` on `pool`, bounded: `Ok` on 1, `Err` with what happened otherwise.
async fn select_one(pool: &PgPool) -> Result<(), String> {
    // The server answers after a moment: the client must wait for its socket's readiness.
    let query = sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_sleep(0.05)").fetch_one(pool);
    match tokio::time::timeout(BOUND, query).await {
        Ok(Ok(1)) => Ok(()),
        Ok(Ok(other)) => Err(format!("unexpected row {other}")),
        Ok(Err(e)) => Err(format!("sqlx error: {e}")),
        Err(_) => Err(format!("hung: no row within {BOUND:?}")),
    }
}

/// Lets the pool's own task put the connection back in its idle queue (a dropped
/// `PoolConnection` is returned by a task spawned on the runtime that dropped it), as it
/// would on a runtime that goes on running for a while.
async fn settle(pool: &PgPool) {
    for _ in 0..100 {
        if pool.num_idle() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the connection did not return to the pool's idle queue");
}

#[test]
fn plain_static_fails_while_its_runtime_idles() {
    let rt_a = current_thread();
    rt_a.block_on(async {
        let pool = pool_options().connect_lazy_with(SERVER.options());
        select_one(&pool)
            .await
            .expect("SELECT 1 on the runtime that connected");
        settle(&pool).await;
        assert!(PLAIN_IDLE.set(pool).is_ok(), "set once");
    });
    // rt_a is alive but nobody drives it: its I/O driver reports no readiness.
    let rt_b = current_thread();
    let result = rt_b.block_on(select_one(PLAIN_IDLE.get().expect("set")));
    eprintln!("plain static, runtime A idle, SELECT 1 from B: {result:?}");
    assert!(
        result.is_err(),
        "SELECT 1 from runtime B should fail or hang while runtime A idles"
    );
    drop(rt_a);
}

#[test]
fn plain_static_fails_after_its_runtime_is_dropped() {
    let rt_a = current_thread();
    rt_a.block_on(async {
        // With sqlx's default `test_before_acquire`, a ping finds the dead connection and
        // the pool opens another; without it (a common setting, to save a round-trip per
        // query) the query itself runs on the dead runtime's socket.
        let pool = pool_options()
            .test_before_acquire(false)
            .connect_lazy_with(SERVER.options());
        select_one(&pool)
            .await
            .expect("SELECT 1 on the runtime that connected");
        settle(&pool).await;
        assert!(PLAIN_DROPPED.set(pool).is_ok(), "set once");
    });
    drop(rt_a);
    let rt_b = current_thread();
    let first = rt_b.block_on(select_one(PLAIN_DROPPED.get().expect("set")));
    eprintln!("plain static, runtime A dropped, first SELECT 1 from B: {first:?}");
    assert!(
        first.is_err(),
        "the first SELECT 1 from runtime B should fail once runtime A is gone"
    );
}

#[test]
fn managed_works_while_the_old_runtime_idles() {
    let rt_a = current_thread();
    let id_a = rt_a.block_on(async {
        let pool = MANAGED.client().await.expect("a pool");
        select_one(&pool).await.expect("SELECT 1 from A");
        settle(&pool).await;
        pool.id()
    });
    let rt_b = current_thread();
    rt_b.block_on(async {
        for _ in 0..3 {
            let pool = MANAGED.client().await.expect("a pool");
            assert_ne!(pool.id(), id_a, "runtime B gets a pool of its own");
            select_one(&pool)
                .await
                .expect("SELECT 1 from B while A idles");
        }
    });
    drop(rt_a);
}

#[test]
fn managed_works_after_the_old_runtime_is_dropped() {
    let id_a = std::thread::spawn(|| {
        let rt_a = current_thread();
        rt_a.block_on(async {
            let pool = MANAGED.client().await.expect("a pool");
            select_one(&pool).await.expect("SELECT 1 from A");
            settle(&pool).await;
            pool.id()
        })
    })
    .join()
    .expect("thread A");
    let rt_b = current_thread();
    rt_b.block_on(async {
        let pool = MANAGED.client().await.expect("a pool");
        assert_ne!(pool.id(), id_a);
        select_one(&pool)
            .await
            .expect("SELECT 1 from B after A is gone");
    });
}
