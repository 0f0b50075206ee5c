//! One `static` managed PgPool shared by many `#[tokio::test]` functions: each test has a
//! runtime of its own (the case that breaks a plain `static` pool), and each runs real
//! queries.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::SERVER;
use rtlocal_sqlx::{PgManager, PgPoolFactory};
use sqlx::postgres::PgPoolOptions;

static DB: LazyLock<PgManager> = LazyLock::new(|| {
    let options = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10));
    PgManager::new(PgPoolFactory::new(SERVER.options()).with_pool_options(options))
});

async fn round_trip(n: i32) {
    let pool = DB.client().await.expect("a pool");
    assert_eq!(pool.runtime_id(), tokio::runtime::Handle::current().id());
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&*pool)
        .await
        .expect("SELECT 1");
    assert_eq!(one, 1);
    let next: i32 = sqlx::query_scalar("SELECT $1::int4 + 1")
        .bind(n)
        .fetch_one(&*pool)
        .await
        .expect("SELECT $1 + 1");
    assert_eq!(next, n + 1);
    // Tasks of a multi_thread runtime may run on any worker: each gets its thread's pool.
    let spawned = tokio::spawn(async move {
        let pool = DB.client().await.expect("a pool");
        sqlx::query_scalar::<_, i32>("SELECT $1::int4 * 2")
            .bind(n)
            .fetch_one(&*pool)
            .await
            .expect("a query from a task")
    });
    assert_eq!(spawned.await.expect("the task"), n * 2);
}

#[tokio::test]
async fn current_thread_1() {
    round_trip(1).await;
}

#[tokio::test]
async fn current_thread_2() {
    round_trip(2).await;
}

#[tokio::test]
async fn current_thread_3() {
    round_trip(3).await;
}

#[tokio::test]
async fn current_thread_4() {
    round_trip(4).await;
}

#[tokio::test]
async fn current_thread_5() {
    round_trip(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_1() {
    round_trip(11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_2() {
    round_trip(12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_thread_3() {
    round_trip(13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_4() {
    round_trip(14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn multi_thread_5() {
    round_trip(15).await;
}
