//! A request goes exactly where its URI says, or nowhere: every URI that is not an
//! absolute `http`/`https` URI with a valid port is refused with a named error, and the
//! real server it points at sees no connection at all.

mod common;

use common::{TestServer, assert_no_panics, text, watch_panics};
use rtlocal::HttpClientManager;

/// URIs that point at `port` one way or another and must never reach it, with a piece of
/// text the error must name.
fn refused(port: u16) -> Vec<(String, String)> {
    let wrapped = u32::from(port) + 65536; // a port that wraps to the server's in a u16
    vec![
        (format!("ftp://127.0.0.1:{port}/"), "\"ftp\"".into()),
        (format!("ws://127.0.0.1:{port}/"), "\"ws\"".into()),
        (format!("wss://127.0.0.1:{port}/"), "\"wss\"".into()),
        (
            format!("file://127.0.0.1:{port}/etc/hosts"),
            "\"file\"".into(),
        ),
        (format!("htps://127.0.0.1:{port}/"), "\"htps\"".into()),
        (format!("gopher://127.0.0.1:{port}/"), "\"gopher\"".into()),
        (
            format!("http://127.0.0.1:{wrapped}/"),
            format!("port \"{wrapped}\""),
        ),
        ("http://127.0.0.1:99999/".into(), "port \"99999\"".into()),
        ("http://127.0.0.1:0/".into(), "port \"0\"".into()),
        (
            format!("http://127.0.0.1:+{port}/"),
            format!("port \"+{port}\""),
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{wrapped}/"),
            format!("port \"{wrapped}\""),
        ),
        (
            format!("http://user:pw@127.0.0.1:{port}/"),
            "credentials".into(),
        ),
        (
            format!("http://127.0.0.1:{port}@127.0.0.1:1/"),
            "credentials".into(),
        ),
        (format!("http://:{port}/"), "no host".into()),
        ("/relative/path".into(), "relative".into()),
        (format!("127.0.0.1:{port}"), "no scheme".into()),
        (format!("//127.0.0.1:{port}/"), "relative".into()),
    ]
}

#[test]
fn refused_uris_name_the_problem_and_never_connect() {
    watch_panics();
    let server = TestServer::start();
    common::block_on_guarded(&common::current_thread_rt(), refused_on(&server));
    assert_no_panics();
}

async fn refused_on(server: &TestServer) {
    let manager = HttpClientManager::new();
    let client = manager.client().await.expect("client");
    for (uri, named) in refused(server.addr.port()) {
        let via_get = client.get(&uri).await.expect_err(&uri);
        let req = http::Request::get(uri.as_str())
            .body(())
            .expect("request builds");
        let via_request = client.request(req).await.expect_err(&uri);
        for err in [via_get, via_request] {
            assert!(err.is_invalid_uri(), "{uri}: {err:?}");
            let shown = err.to_string();
            assert!(
                shown.contains(&named),
                "{uri}: {shown:?} should name {named}"
            );
            assert!(
                !shown.contains(":pw@"),
                "{uri}: credentials echoed: {shown}"
            );
        }
    }
    assert_eq!(server.accepted(), 0, "a refused URI reached the server");
    assert_eq!(manager.stats().connections_opened, 0);
}

#[test]
fn accepted_spellings_reach_exactly_the_server() {
    watch_panics();
    let server = TestServer::start();
    common::block_on_guarded(&common::current_thread_rt(), accepted_on(&server));
    assert_no_panics();
}

async fn accepted_on(server: &TestServer) {
    let port = server.addr.port();
    let manager = HttpClientManager::new();
    let client = manager.client().await.expect("client");
    let good = [
        format!("http://127.0.0.1:{port}/"),
        format!("HTTP://127.0.0.1:{port}/"),
        format!("Http://127.0.0.1:{port}/x?y=1"),
        format!("http://127.0.0.1:0{port}/"),
    ];
    for (i, uri) in good.iter().enumerate() {
        let resp = client.get(uri).await.expect(uri);
        assert_eq!(text(resp).await, "hello");
        assert_eq!(server.requests(), i + 1, "{uri} did not reach the server");
    }
}

/// The re-route path (a client used from another runtime) checks the URI as strictly.
#[test]
fn rerouted_requests_are_checked_too() {
    watch_panics();
    let server = TestServer::start();
    let manager = HttpClientManager::new();
    let first = common::current_thread_rt();
    let client = common::block_on_guarded(&first, manager.client()).expect("client");
    let second = common::current_thread_rt();
    for (uri, named) in refused(server.addr.port()) {
        let err = common::block_on_guarded(&second, client.get(&uri)).expect_err(&uri);
        assert!(err.is_invalid_uri(), "{uri}: {err:?}");
        assert!(err.to_string().contains(&named), "{uri}: {err}");
    }
    assert_eq!(server.accepted(), 0);
    // The same client still works from the other runtime, re-routed.
    let ok = common::block_on_guarded(&second, client.get(&server.url("/")));
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(server.requests(), 1);
    assert_no_panics();
}

/// Without the `rustls` feature, `https` is refused up front, naming the feature.
#[cfg(not(feature = "rustls"))]
#[test]
fn https_without_tls_is_refused_naming_the_feature() {
    let server = TestServer::start();
    let uri = format!("https://127.0.0.1:{}/", server.addr.port());
    let err = common::block_on_guarded(&common::current_thread_rt(), async {
        let manager = HttpClientManager::new();
        let client = manager.client().await.expect("client");
        client.get(&uri).await.expect_err("https without TLS")
    });
    assert!(err.is_invalid_uri(), "{err:?}");
    assert!(err.to_string().contains("rustls"), "{err}");
    assert_eq!(server.accepted(), 0);
}

/// A string that is not a URI at all names itself and says what to give instead.
#[tokio::test]
async fn unparsable_uri_says_what_to_do() {
    let manager = HttpClientManager::new();
    let client = manager.client().await.expect("client");
    let err = client.get("http://a b/").await.expect_err("space in host");
    assert!(err.is_invalid_uri());
    let shown = err.to_string();
    assert!(shown.contains("\"http://a b/\""), "{shown}");
    assert!(shown.contains("absolute URI"), "{shown}");
}
