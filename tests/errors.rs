//! Every error's `Display` says what went wrong, with its cause, without `source()`.

mod common;

use common::{Misbehave, RawServer, block_on_guarded, current_thread_rt};
use http_body_util::BodyExt;
use rtlocal::HttpClientManager;
use std::time::Duration;

#[test]
fn connect_failure_names_the_address_and_the_cause() {
    // Bind and drop a listener: nothing listens on that port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let manager = HttpClientManager::new();
    let err = block_on_guarded(&current_thread_rt(), async {
        let client = manager.client().await.expect("client");
        client
            .get(&format!("http://127.0.0.1:{port}/"))
            .await
            .expect_err("nothing listens")
    });
    assert!(err.is_connect(), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    assert!(shown.to_lowercase().contains("refused"), "{shown}");
}

#[test]
fn request_timeout_names_the_setting_and_the_value() {
    let server = RawServer::start(Misbehave::NeverAnswer);
    let manager = HttpClientManager::builder()
        .request_timeout(Duration::from_millis(200))
        .build()
        .expect("build");
    let err = block_on_guarded(&current_thread_rt(), async {
        let client = manager.client().await.expect("client");
        client
            .get(&server.url("/"))
            .await
            .expect_err("never answers")
    });
    assert!(err.is_timeout(), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("request_timeout (200ms)"), "{shown}");
    assert!(shown.contains("Builder::request_timeout"), "{shown}");
}

#[test]
fn body_failure_carries_its_cause() {
    let server = RawServer::start(Misbehave::ResetMidResponse);
    let manager = HttpClientManager::new();
    let err = block_on_guarded(&current_thread_rt(), async {
        let client = manager.client().await.expect("client");
        let resp = client.get(&server.url("/")).await.expect("headers arrive");
        resp.into_body()
            .collect()
            .await
            .expect_err("reset mid-body")
    });
    assert!(err.is_body(), "{err:?}");
    let shown = err.to_string();
    // The kind, then hyper's and the OS's own words.
    assert!(
        shown.starts_with("reading the response body failed: "),
        "{shown}"
    );
    assert!(
        shown.len() > "reading the response body failed: ".len() + 5,
        "{shown}"
    );
}

#[test]
fn a_request_error_says_more_than_the_request_failed() {
    // A server that closes every connection without answering.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closer = std::thread::spawn(move || {
        use std::io::Read;
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
        }
    });
    let manager = HttpClientManager::new();
    let err = block_on_guarded(&current_thread_rt(), async {
        let client = manager.client().await.expect("client");
        client
            .get(&format!("http://{addr}/"))
            .await
            .expect_err("closed unanswered")
    });
    let _ = closer.join();
    assert!(err.is_request(), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.starts_with("the request failed after connecting: "),
        "{shown}"
    );
    assert!(shown.contains("closed"), "{shown}");
}
