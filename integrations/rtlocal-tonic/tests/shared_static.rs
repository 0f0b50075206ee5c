//! One `static` managed Channel shared by many `#[tokio::test]` functions: each test has
//! a runtime of its own (the case that breaks a plain `static` channel), and each does a
//! real health check.

mod common;

use std::sync::LazyLock;

use common::SERVER;
use rtlocal_testkit::grpc::check;
use rtlocal_tonic::{ChannelFactory, ChannelManager};

static GRPC: LazyLock<ChannelManager> = LazyLock::new(|| {
    ChannelManager::new(ChannelFactory::from_shared(SERVER.uri()).expect("a URI"))
});

async fn round_trip() {
    let client = GRPC.client().await.expect("a channel");
    assert_eq!(client.runtime_id(), tokio::runtime::Handle::current().id());
    check(client.channel()).await.expect("a health check");
    assert_eq!(client.open_connections(), 1, "{:?}", *client);
    // Tasks of a multi_thread runtime may run on any worker: each gets its thread's channel.
    let spawned = tokio::spawn(async {
        let client = GRPC.client().await.expect("a channel");
        check(client.channel()).await
    });
    spawned
        .await
        .expect("the task")
        .expect("a health check from a task");
}

#[tokio::test]
async fn current_thread_1() {
    round_trip().await;
}

#[tokio::test]
async fn current_thread_2() {
    round_trip().await;
}

#[tokio::test]
async fn current_thread_3() {
    round_trip().await;
}

#[tokio::test]
async fn current_thread_4() {
    round_trip().await;
}

#[tokio::test]
async fn current_thread_5() {
    round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_1() {
    round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_2() {
    round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_thread_3() {
    round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_4() {
    round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn multi_thread_5() {
    round_trip().await;
}
