//! The upstream failure, reproduced with a plain `static` tonic Channel shared across
//! runtimes, and the same scenarios passing with a managed one.

mod common;

use std::sync::{LazyLock, OnceLock};

use common::SERVER;
use rtlocal_testkit::current_thread;
use rtlocal_testkit::grpc::check;
use rtlocal_tonic::{ChannelFactory, ChannelManager};
use tonic::transport::{Channel, Endpoint};

static PLAIN_IDLE: OnceLock<Channel> = OnceLock::new();
static PLAIN_DROPPED: OnceLock<Channel> = OnceLock::new();
static MANAGED: LazyLock<ChannelManager> = LazyLock::new(|| {
    ChannelManager::new(ChannelFactory::from_shared(SERVER.uri()).expect("a URI"))
});

fn plain_channel() -> Channel {
    // Must run inside a runtime: the channel's buffer worker is spawned on it.
    Endpoint::from_shared(SERVER.uri())
        .expect("a URI")
        .connect_lazy()
}

#[test]
fn plain_static_fails_while_its_runtime_idles() {
    let rt_a = current_thread();
    rt_a.block_on(async {
        let channel = plain_channel();
        check(channel.clone())
            .await
            .expect("a check on the runtime that built it");
        assert!(PLAIN_IDLE.set(channel).is_ok(), "set once");
    });
    // rt_a is alive but nobody drives it: the channel's worker is never polled.
    let rt_b = current_thread();
    let result = rt_b.block_on(check(PLAIN_IDLE.get().expect("set").clone()));
    eprintln!("plain static, runtime A idle, health check from B: {result:?}");
    assert!(
        result.is_err(),
        "a call from runtime B should fail or hang while runtime A idles"
    );
    drop(rt_a);
}

#[test]
fn plain_static_fails_after_its_runtime_is_dropped() {
    let rt_a = current_thread();
    rt_a.block_on(async {
        let channel = plain_channel();
        check(channel.clone())
            .await
            .expect("a check on the runtime that built it");
        assert!(PLAIN_DROPPED.set(channel).is_ok(), "set once");
    });
    drop(rt_a);
    let rt_b = current_thread();
    let results: Vec<_> = rt_b.block_on(async {
        let mut results = Vec::new();
        for _ in 0..2 {
            results.push(check(PLAIN_DROPPED.get().expect("set").clone()).await);
        }
        results
    });
    eprintln!("plain static, runtime A dropped, health checks from B: {results:?}");
    assert!(
        results.iter().all(Result::is_err),
        "calls from runtime B should fail once runtime A is gone: {results:?}"
    );
}

#[test]
fn managed_works_while_the_old_runtime_idles() {
    let rt_a = current_thread();
    let id_a = rt_a.block_on(async {
        let client = MANAGED.client().await.expect("a channel");
        check(client.channel()).await.expect("a check from A");
        client.id()
    });
    let rt_b = current_thread();
    rt_b.block_on(async {
        for _ in 0..3 {
            let client = MANAGED.client().await.expect("a channel");
            assert_ne!(client.id(), id_a, "runtime B gets a channel of its own");
            check(client.channel())
                .await
                .expect("a check from B while A idles");
        }
    });
    drop(rt_a);
}

#[test]
fn managed_works_after_the_old_runtime_is_dropped() {
    let id_a = std::thread::spawn(|| {
        let rt_a = current_thread();
        rt_a.block_on(async {
            let client = MANAGED.client().await.expect("a channel");
            check(client.channel()).await.expect("a check from A");
            client.id()
        })
    })
    .join()
    .expect("thread A");
    let rt_b = current_thread();
    rt_b.block_on(async {
        let client = MANAGED.client().await.expect("a channel");
        assert_ne!(client.id(), id_a);
        check(client.channel())
            .await
            .expect("a check from B after A is gone");
    });
}
