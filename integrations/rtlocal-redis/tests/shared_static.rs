//! One `static` managed ConnectionManager shared by many `#[tokio::test]` functions: each
//! test has a runtime of its own (the case that breaks a plain `static`), and each does a
//! real round-trip.

mod common;

use std::sync::LazyLock;

use common::SERVER;
use redis::AsyncCommands;
use rtlocal_redis::{ManagedRedisExt, RedisFactory, RedisManager};

static REDIS: LazyLock<RedisManager> =
    LazyLock::new(|| RedisManager::new(RedisFactory::open(SERVER.url()).expect("a redis URL")));

async fn round_trip(test: &str) {
    let client = REDIS.client().await.expect("a client");
    assert_eq!(client.runtime_id(), tokio::runtime::Handle::current().id());
    let mut con = client.connection();
    let pong: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
    let key = format!("rtlocal:{test}");
    let () = con.set(&key, test).await.expect("SET");
    let got: String = con.get(&key).await.expect("GET");
    assert_eq!(got, test);
    // Tasks of a multi_thread runtime may run on any worker: each gets its thread's client.
    let spawned = tokio::spawn(async move {
        let mut con = REDIS.client().await.expect("a client").connection();
        con.get::<_, String>(&key).await.expect("GET from a task")
    });
    assert_eq!(spawned.await.expect("the task"), test);
}

#[tokio::test]
async fn current_thread_1() {
    round_trip("ct1").await;
}

#[tokio::test]
async fn current_thread_2() {
    round_trip("ct2").await;
}

#[tokio::test]
async fn current_thread_3() {
    round_trip("ct3").await;
}

#[tokio::test]
async fn current_thread_4() {
    round_trip("ct4").await;
}

#[tokio::test]
async fn current_thread_5() {
    round_trip("ct5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_1() {
    round_trip("mt1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_2() {
    round_trip("mt2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_thread_3() {
    round_trip("mt3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_4() {
    round_trip("mt4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn multi_thread_5() {
    round_trip("mt5").await;
}
