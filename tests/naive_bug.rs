//! The bug this crate fixes, reproduced with a plain shared hyper-util client: a request
//! from runtime B handed a pooled connection of thread A's idle `current_thread` runtime
//! never finishes. Bounded by a short timeout so the test itself cannot hang.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use common::{TestServer, current_thread_rt};

#[test]
fn shared_hyper_util_client_hangs_on_an_idle_runtimes_connection() {
    let server = TestServer::start();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = server.url("/").parse().unwrap();

    let (tx_done, rx_done) = mpsc::channel::<()>();
    let (tx_ready, rx_ready) = mpsc::channel();
    let (c, u) = (client.clone(), uri.clone());
    let a = std::thread::spawn(move || {
        let rt = current_thread_rt();
        rt.block_on(async {
            let resp = c.get(u).await.unwrap();
            resp.into_body().collect().await.unwrap();
        });
        tx_ready.send(()).unwrap();
        let _ = rx_done.recv(); // alive but idle: nobody drives the connection task
    });
    rx_ready.recv().unwrap();

    let rt_b = current_thread_rt();
    let outcome = rt_b.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), async {
            client.get(uri).await.map(|_| ())
        })
        .await
    });
    assert!(
        outcome.is_err(),
        "expected the shared client to hang on the idle runtime's connection, got {outcome:?}"
    );
    tx_done.send(()).unwrap();
    a.join().unwrap();
}
