//! The upstream failure, reproduced with a plain `static` ConnectionManager shared across
//! runtimes, and the same scenarios passing with a managed one.

mod common;

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use common::SERVER;
use redis::aio::ConnectionManager;
use rtlocal_redis::{ManagedRedisExt, RedisFactory, RedisManager};
use rtlocal_testkit::current_thread;

/// Longer than redis's 500 ms response timeout: a hang shows as our timeout, a failure
/// as redis's error.
const BOUND: Duration = Duration::from_secs(3);

static PLAIN_IDLE: OnceLock<ConnectionManager> = OnceLock::new();
static PLAIN_DROPPED: OnceLock<ConnectionManager> = OnceLock::new();
static MANAGED: LazyLock<RedisManager> =
    LazyLock::new(|| RedisManager::new(RedisFactory::open(SERVER.url()).expect("a redis URL")));

async fn plain_connect() -> ConnectionManager {
    let client = redis::Client::open(SERVER.url()).expect("a redis URL");
    ConnectionManager::new(client).await.expect("connect")
}

/// PING through `con`, bounded: `Ok` on PONG, `Err` with what happened otherwise.
async fn ping(mut con: ConnectionManager) -> Result<(), String> {
    match tokio::time::timeout(BOUND, redis::cmd("PING").query_async::<String>(&mut con)).await {
        Ok(Ok(pong)) if pong == "PONG" => Ok(()),
        Ok(Ok(other)) => Err(format!("unexpected reply {other:?}")),
        Ok(Err(e)) => Err(format!("redis error: {e}")),
        Err(_) => Err(format!("hung: no reply within {BOUND:?}")),
    }
}

#[test]
fn plain_static_fails_while_its_runtime_idles() {
    let rt_a = current_thread();
    rt_a.block_on(async {
        let con = plain_connect().await;
        ping(con.clone())
            .await
            .expect("PING on the runtime that connected");
        assert!(PLAIN_IDLE.set(con).is_ok(), "set once");
    });
    // rt_a is alive but nobody drives it: its connection task is never polled.
    let rt_b = current_thread();
    let results: Vec<_> = rt_b.block_on(async {
        let mut results = Vec::new();
        for _ in 0..3 {
            results.push(ping(PLAIN_IDLE.get().expect("set").clone()).await);
        }
        results
    });
    eprintln!("plain static, runtime A idle, PING from B: {results:?}");
    assert!(
        results.iter().all(Result::is_err),
        "every PING from runtime B should fail or hang while runtime A idles: {results:?}"
    );
    drop(rt_a);
}

#[test]
fn plain_static_fails_after_its_runtime_is_dropped() {
    let rt_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    rt_a.block_on(async {
        let con = plain_connect().await;
        ping(con.clone())
            .await
            .expect("PING on the runtime that connected");
        assert!(PLAIN_DROPPED.set(con).is_ok(), "set once");
    });
    drop(rt_a);
    let rt_b = current_thread();
    let first = rt_b.block_on(ping(PLAIN_DROPPED.get().expect("set").clone()));
    eprintln!("plain static, runtime A dropped, first PING from B: {first:?}");
    assert!(
        first.is_err(),
        "the first PING from runtime B should fail once runtime A is gone"
    );
}

#[test]
fn managed_works_while_the_old_runtime_idles() {
    let rt_a = current_thread();
    let id_a = rt_a.block_on(async {
        let client = MANAGED.client().await.expect("a client");
        ping(client.connection()).await.expect("PING from A");
        client.id()
    });
    let rt_b = current_thread();
    rt_b.block_on(async {
        for _ in 0..3 {
            let client = MANAGED.client().await.expect("a client");
            assert_ne!(client.id(), id_a, "runtime B gets a client of its own");
            ping(client.connection())
                .await
                .expect("PING from B while A idles");
        }
    });
    drop(rt_a);
}

#[test]
fn managed_works_after_the_old_runtime_is_dropped() {
    let id_a = std::thread::spawn(|| {
        let rt_a = current_thread();
        rt_a.block_on(async {
            let client = MANAGED.client().await.expect("a client");
            ping(client.connection()).await.expect("PING from A");
            client.id()
        })
    })
    .join()
    .expect("thread A");
    let rt_b = current_thread();
    rt_b.block_on(async {
        let client = MANAGED.client().await.expect("a client");
        assert_ne!(client.id(), id_a);
        ping(client.connection())
            .await
            .expect("PING from B after A is gone");
    });
}
