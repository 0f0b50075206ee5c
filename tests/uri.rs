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
        ("http://127.0.0.1:/".into(), "port \"\"".into()),
        ("http://127.0.0.1:http/".into(), "port \"http\"".into()),
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
        // Each of these would reach 127.0.0.1 (resolvers read them as it), past the
        // proxy and loopback rules, which compare four decimal numbers.
        (format!("http://127.1:{port}/"), "host \"127.1\"".into()),
        (
            format!("http://2130706433:{port}/"),
            "host \"2130706433\"".into(),
        ),
        (format!("http://0x7f.1:{port}/"), "host \"0x7f.1\"".into()),
        (
            format!("http://127.0.0.1.:{port}/"),
            "host \"127.0.0.1.\"".into(),
        ),
        (
            format!("http://[localhost]:{port}/"),
            "host \"[localhost]\"".into(),
        ),
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

/// Without the `rustls` feature, `https` is refused up front (a connect error, as nothing
/// can connect), naming the feature.
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
    assert!(err.is_connect() && !err.is_invalid_uri(), "{err:?}");
    assert!(err.to_string().contains("`rustls` feature"), "{err}");
    assert_eq!(server.accepted(), 0);
}

/// A string that does not parse never has its password echoed: not in `Display`, not in
/// `Debug`, not anywhere down the source chain.
#[tokio::test]
async fn an_unparsable_uri_never_echoes_its_password() {
    let manager = HttpClientManager::new();
    let client = manager.client().await.expect("client");
    for raw in [
        "http://admin:hunter2 x@127.0.0.1:1/",
        "http://admin:hunter2/x y@127.0.0.1:1/",
        "http://admin:hunter2@127.0.0.1:1/ x",
    ] {
        let err = client.get(raw).await.expect_err(raw);
        assert!(err.is_invalid_uri(), "{raw}: {err:?}");
        let mut shown = vec![err.to_string(), format!("{err:?}"), format!("{err:#}")];
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            shown.push(s.to_string());
            source = s.source();
        }
        for text in shown {
            assert!(
                !text.contains("hunter2"),
                "{raw}: password echoed in {text:?}"
            );
        }
        assert!(err.to_string().contains("admin:***@"), "{err}");
    }
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

mod generated {
    use super::common::{self, TestServer, panics_seen, watch_panics};
    use proptest::prelude::*;
    use rtlocal::HttpClientManager;

    fn server() -> &'static TestServer {
        static SERVER: std::sync::OnceLock<TestServer> = std::sync::OnceLock::new();
        SERVER.get_or_init(TestServer::start)
    }

    #[derive(Debug, Clone)]
    enum Form {
        Absolute,
        /// `/path`
        Relative,
        /// `host:port`
        AuthorityOnly,
        /// `//host:port/`
        SchemeRelative,
    }

    #[derive(Debug, Clone)]
    struct Case {
        form: Form,
        scheme: String,
        userinfo: String,
        host: &'static str,
        /// `None`: no port colon at all.
        port: Option<String>,
    }

    impl Case {
        fn uri(&self) -> String {
            let port = self
                .port
                .as_ref()
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            let authority = format!("{}{}{}", self.userinfo, self.host, port);
            match self.form {
                Form::Absolute => format!("{}://{authority}/p?q=1", self.scheme),
                Form::Relative => "/p?q=1".to_owned(),
                Form::AuthorityOnly => authority,
                Form::SchemeRelative => format!("//{authority}/p"),
            }
        }

        /// Whether the URI, read by the RFC, names the test server: then (over plain
        /// http) the request must reach it; otherwise the server must see nothing.
        fn names_the_server(&self, port: u16) -> bool {
            matches!(self.form, Form::Absolute)
                && self.userinfo.is_empty()
                && matches!(self.host, "127.0.0.1" | "localhost")
                && self.port.as_deref().is_some_and(|p| {
                    !p.is_empty()
                        && p.bytes().all(|b| b.is_ascii_digit())
                        && p.parse::<u32>().ok() == Some(u32::from(port))
                })
        }
    }

    fn case(port: u16) -> impl Strategy<Value = Case> {
        let scheme = prop_oneof![
            4 => Just("http".to_owned()),
            1 => Just("HTTP".to_owned()),
            2 => Just("https".to_owned()),
            1 => Just("ftp".to_owned()),
            1 => Just("ws".to_owned()),
            1 => Just("file".to_owned()),
            1 => Just("htps".to_owned()),
            2 => "[a-z][a-z0-9+.-]{0,6}",
        ];
        let userinfo = prop_oneof![
            6 => Just(String::new()),
            1 => Just("u@".to_owned()),
            1 => Just("u:p@".to_owned()),
            1 => Just(format!("127.0.0.1:{port}@")),
        ];
        let host = prop_oneof![
            6 => Just("127.0.0.1"),
            2 => Just("localhost"),
            1 => Just("127.0.0.2"),
            1 => Just("[::1]"),
            1 => Just(""),
        ];
        let wrapped = u32::from(port) + 65536;
        let port = prop_oneof![
            1 => Just(None),
            1 => Just(Some(String::new())),
            1 => Just(Some("0".to_owned())),
            1 => Just(Some("65535".to_owned())),
            1 => Just(Some("65536".to_owned())),
            1 => Just(Some("99999".to_owned())),
            6 => Just(Some(port.to_string())),
            2 => Just(Some(wrapped.to_string())),
            1 => Just(Some(format!("+{port}"))),
            1 => Just(Some(format!("0{port}"))),
            1 => any::<u32>().prop_map(|p| Some(p.to_string())),
        ];
        let form = prop_oneof![
            8 => Just(Form::Absolute),
            1 => Just(Form::Relative),
            1 => Just(Form::AuthorityOnly),
            1 => Just(Form::SchemeRelative),
        ];
        (form, scheme, userinfo, host, port).prop_map(|(form, scheme, userinfo, host, port)| Case {
            form,
            scheme,
            userinfo,
            host,
            port,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn a_request_goes_where_its_uri_says_or_nowhere(c in case(server().addr.port())) {
            watch_panics();
            let panics_before = panics_seen();
            let server = server();
            let port = server.addr.port();
            let uri = c.uri();
            let (accepted, requests) = (server.accepted(), server.requests());
            let manager = HttpClientManager::new();
            let rt = common::current_thread_rt();
            let result = common::block_on_guarded(&rt, async {
                let client = manager.client().await?;
                let resp = client.get(&uri).await?;
                Ok::<_, rtlocal::Error>(common::text(resp).await)
            });
            drop(rt);
            let names_server = c.names_the_server(port);
            let plain = c.scheme.eq_ignore_ascii_case("http");
            match result {
                Ok(body) => {
                    prop_assert!(names_server && plain, "{uri} was sent somewhere");
                    prop_assert_eq!(body, "hello");
                    prop_assert_eq!(server.requests(), requests + 1, "{} missed the server", uri);
                }
                Err(e) => {
                    prop_assert!(!(names_server && plain), "{uri} names the server: {e}");
                    prop_assert!(
                        e.is_invalid_uri() || e.is_connect() || e.is_timeout(),
                        "{uri}: unnamed error {e:?}"
                    );
                    prop_assert!(!e.to_string().is_empty());
                    prop_assert_eq!(server.requests(), requests, "{} reached the server", uri);
                    if !names_server {
                        prop_assert_eq!(server.accepted(), accepted, "{} connected", uri);
                    }
                }
            }
            prop_assert_eq!(panics_seen(), panics_before, "{}: a thread panicked", uri);
        }
    }
}
