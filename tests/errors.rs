//! Every error's `Display` says what went wrong and is its own message only; the cause is
//! reached through `source()`, and `{:#}` prints the whole chain on one line. Walking the
//! chain as anyhow and tracing do prints each message once.

mod common;

use common::{Misbehave, RawServer, block_on_guarded, current_thread_rt};
use http_body_util::BodyExt;
use rtlocal::{ClientFactory, HttpClientManager};
use std::error::Error as StdError;
use std::time::Duration;
use tokio::runtime::Handle;

/// Each link's own `Display`, outermost first: what anyhow's `{:?}` ("Caused by:") and
/// tracing's error reporters print.
fn links(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        assert!(out.len() < 32, "a chain this deep is a cycle: {out:?}");
        out.push(e.to_string());
        cur = e.source();
    }
    out
}

/// Printed link by link, every message appears exactly once: no link repeats the text of
/// a link below it. `{:#}` is the same chain on one line.
fn assert_each_message_once(err: &rtlocal::Error) {
    let links = links(err);
    assert!(links.len() >= 2, "a chained error has a source: {links:?}");
    let report = links.join("\n");
    for link in links.iter().filter(|l| !l.is_empty()) {
        assert_eq!(
            report.matches(link.as_str()).count(),
            1,
            "{link:?} is printed more than once in the chain:\n{report}"
        );
    }
    assert_eq!(format!("{err:#}"), links.join(": "));
}

#[test]
fn a_refused_connect_prints_each_message_once() {
    let manager = HttpClientManager::new();
    let err = block_on_guarded(&current_thread_rt(), async {
        let client = manager.client().await.expect("client");
        // Nothing listens on port 1 of the loopback address.
        client
            .get("http://127.0.0.1:1/")
            .await
            .expect_err("refused")
    });
    assert!(err.is_connect(), "{err:?}");
    assert_each_message_once(&err);
    assert!(!err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(format!("{err:#}").contains("127.0.0.1:1"), "{err:#}");
}

#[test]
fn a_body_error_prints_each_message_once() {
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
    assert_each_message_once(&err);
}

struct NoCredentials;

impl ClientFactory for NoCredentials {
    type Client = ();

    async fn build(&self, _: &Handle) -> Result<(), rtlocal::Error> {
        Err(rtlocal::Error::build(std::io::Error::other(
            "no credentials configured",
        )))
    }
}

#[test]
fn a_factory_build_error_prints_each_message_once() {
    let manager = rtlocal::Manager::builder(NoCredentials)
        .build()
        .expect("manager");
    let err = block_on_guarded(&current_thread_rt(), manager.client()).expect_err("no build");
    assert!(err.is_build(), "{err:?}");
    assert_each_message_once(&err);
    assert_eq!(
        format!("{err:#}"),
        "the client factory could not build a client: no credentials configured"
    );
}

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
    let shown = format!("{err:#}");
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
    let shown = format!("{err:#}");
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
    let shown = format!("{err:#}");
    assert!(
        shown.starts_with("the request failed after connecting: "),
        "{shown}"
    );
    assert!(shown.contains("closed"), "{shown}");
}
