//! Production settings against local servers that misbehave on purpose: timeouts,
//! connection limits, keep-alive, idle timeout, DNS cache, HTTP/2 prior knowledge,
//! default headers, configuration errors.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Misbehave, RawServer, TestServer, block_on_guarded, current_thread_rt, text};
use http_body_util::BodyExt;
use rtlocal::HttpClientManager;

#[test]
fn connection_refused_is_a_prompt_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = HttpClientManager::new();
    let rt = current_thread_rt();
    let e = block_on_guarded(&rt, async {
        let c = m.client().await.unwrap();
        c.get(&format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err()
    });
    assert!(e.is_connect() && !e.is_timeout(), "{e:?}");
    assert!(
        std::error::Error::source(&e).is_some(),
        "the cause is chained"
    );
    assert_eq!(m.stats().requests_failed, 1);
}

#[test]
fn a_server_that_never_answers_hits_the_request_timeout() {
    let server = RawServer::start(Misbehave::NeverAnswer);
    let m = HttpClientManager::builder()
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let rt = current_thread_rt();
    let e = block_on_guarded(&rt, async {
        m.client()
            .await
            .unwrap()
            .get(&server.url("/"))
            .await
            .unwrap_err()
    });
    assert!(e.is_timeout(), "{e:?}");
    assert!(e.to_string().contains("request_timeout"), "{e}");
    let s = m.stats();
    assert_eq!((s.requests_failed, s.requests_in_flight), (1, 0));
}

#[test]
fn a_body_that_stalls_mid_way_hits_the_request_timeout() {
    let server = RawServer::start(Misbehave::StallBody);
    let m = HttpClientManager::builder()
        .request_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let rt = current_thread_rt();
    let e = block_on_guarded(&rt, async {
        let resp = m
            .client()
            .await
            .unwrap()
            .get(&server.url("/"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "headers arrive before the stall");
        resp.into_body().collect().await.unwrap_err()
    });
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(m.stats().requests_in_flight, 0);
}

#[test]
fn a_reset_mid_response_errors_is_not_reused_and_returns_the_permit() {
    let server = RawServer::start(Misbehave::ResetMidResponse);
    // One connection allowed: a leaked permit would make the second request hang
    // until its timeout instead of failing fast the same way.
    let m = HttpClientManager::builder()
        .max_connections_per_host(1)
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let rt = current_thread_rt();
    for attempt in 1..=2 {
        let e = block_on_guarded(&rt, async {
            let c = m.client().await.unwrap();
            match c.get(&server.url("/")).await {
                Ok(resp) => resp.into_body().collect().await.map(|_| ()).unwrap_err(),
                Err(e) => e,
            }
        });
        assert!(
            !e.is_timeout(),
            "attempt {attempt}: permit not returned? {e:?}"
        );
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            attempt,
            "the reset connection must not be reused"
        );
    }
    assert_eq!(m.stats().connections_open, 0);
}

#[test]
fn five_hundred_requests_through_four_connections() {
    let server = TestServer::start();
    let m = Arc::new(
        HttpClientManager::builder()
            .max_connections_per_host(4)
            .build()
            .unwrap(),
    );
    let rt = current_thread_rt();
    let url = server.url("/slow/5");
    let ok = block_on_guarded(&rt, async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..500 {
            let (m, url) = (Arc::clone(&m), url.clone());
            set.spawn(async move {
                let resp = m.client().await?.get(&url).await?;
                Ok::<_, rtlocal::Error>(text(resp).await)
            });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), "slow");
            ok += 1;
        }
        ok
    });
    assert_eq!(ok, 500);
    let max = server.counts.max_open.load(Ordering::SeqCst);
    assert!(max <= 4, "the server saw {max} connections open at once");
    assert!(server.accepted() >= 1);

    // Cancel 100 requests mid-flight, then check that no permit leaked: 100 more
    // requests all complete through the same four connections.
    block_on_guarded(&rt, async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (m, url) = (Arc::clone(&m), server.url("/slow/2000"));
            set.spawn(async move {
                let _ = m.client().await.unwrap().get(&url).await;
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        set.abort_all();
        while set.join_next().await.is_some() {}
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (m, url) = (Arc::clone(&m), url.clone());
            set.spawn(async move {
                text(m.client().await.unwrap().get(&url).await.unwrap())
                    .await
                    .len()
            });
        }
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), 4);
            done += 1;
        }
        assert_eq!(done, 100);
        // The server cannot judge this phase: it notices a cancelled request's closed
        // socket only when its 2 s handler ends, while the client has already released
        // the permit. The client's own count is exact.
        assert!(m.stats().connections_open <= 4, "{:?}", m.stats());
    });
    assert_eq!(m.stats().requests_in_flight, 0);
}

#[test]
fn max_connections_caps_all_hosts_together() {
    // One server under two host names: two per-host keys, and the server's own count
    // of connections open at once is exact.
    let server = TestServer::start();
    let port = server.addr.port();
    let m = Arc::new(
        HttpClientManager::builder()
            .max_connections(2)
            .build()
            .unwrap(),
    );
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..40 {
            let host = if i % 2 == 0 { "127.0.0.1" } else { "localhost" };
            let url = format!("http://{host}:{port}/slow/5");
            let m = Arc::clone(&m);
            set.spawn(async move {
                text(m.client().await.unwrap().get(&url).await.unwrap())
                    .await
                    .len()
            });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), 4);
        }
    });
    let max = server.counts.max_open.load(Ordering::SeqCst);
    assert!(max <= 2, "the server saw {max} connections open at once");
    assert!(server.accepted() >= 2, "both host names connected");
}

#[test]
fn keep_alive_off_opens_one_connection_per_request() {
    let server = TestServer::start();
    let m = HttpClientManager::builder()
        .keep_alive(false)
        .build()
        .unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let c = m.client().await.unwrap();
        for _ in 0..5 {
            assert_eq!(text(c.get(&server.url("/")).await.unwrap()).await, "hello");
        }
    });
    assert_eq!(server.accepted(), 5);
    assert_eq!(server.wait_open(0), 0);
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = TestServer::start();
    let m = HttpClientManager::builder()
        .pool_idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let c = m.client().await.unwrap();
        text(c.get(&server.url("/")).await.unwrap()).await;
        assert_eq!(server.open(), 1);
        // Keep the runtime driven while the pool's reaper runs.
        let deadline = tokio::time::Instant::now() + common::HANG_GUARD;
        while server.open() != 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(server.open(), 0, "the idle connection was not closed");
}

#[test]
fn dns_cache_resolves_once_per_ttl() {
    let server = TestServer::start();
    let url = format!("http://localhost:{}/", server.addr.port());
    // keep_alive(false): every request opens a connection, so every request resolves
    // unless the cache answers.
    let cached = HttpClientManager::builder()
        .keep_alive(false)
        .dns_cache_ttl(Duration::from_millis(500))
        .build()
        .unwrap();
    let uncached = HttpClientManager::builder()
        .keep_alive(false)
        .build()
        .unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        for m in [&cached, &uncached] {
            let c = m.client().await.unwrap();
            for _ in 0..5 {
                assert_eq!(text(c.get(&url).await.unwrap()).await, "hello");
            }
        }
    });
    assert_eq!(cached.stats().dns_lookups, 1);
    assert_eq!(uncached.stats().dns_lookups, 5);
    std::thread::sleep(Duration::from_millis(600));
    block_on_guarded(&rt, async {
        let c = cached.client().await.unwrap();
        assert_eq!(text(c.get(&url).await.unwrap()).await, "hello");
    });
    assert_eq!(
        cached.stats().dns_lookups,
        2,
        "expired entries are resolved again"
    );
}

#[test]
fn default_headers_and_user_agent() {
    let server = TestServer::start();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-team", "search".parse().unwrap());
    let m = HttpClientManager::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let c = m.client().await.unwrap();
        let ua = text(c.get(&server.url("/header/user-agent")).await.unwrap()).await;
        assert_eq!(ua, concat!("rtlocal/", env!("CARGO_PKG_VERSION")));
        assert_eq!(
            text(c.get(&server.url("/header/x-team")).await.unwrap()).await,
            "search"
        );
        // A request's own header wins.
        let req = http::Request::get(server.url("/header/x-team"))
            .header("x-team", "ads")
            .body(rtlocal::Body::empty())
            .unwrap();
        assert_eq!(text(c.request(req).await.unwrap()).await, "ads");
    });
}

#[test]
fn http2_prior_knowledge_speaks_h2c() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let srt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = srt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    srt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let v = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(v)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let m = HttpClientManager::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let c = m.client().await.unwrap();
        let resp = c.get(&format!("http://{addr}/")).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(text(resp).await, "HTTP/2.0");
        // Many concurrent requests share the one multiplexed connection.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (c, url) = (c.clone(), format!("http://{addr}/"));
            set.spawn(async move { text(c.get(&url).await.unwrap()).await });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), "HTTP/2.0");
        }
    });
    assert_eq!(m.stats().connections_opened, 1);
    srt.shutdown_background();
}

#[test]
fn nonsense_configurations_are_rejected_with_the_setting_named() {
    use rtlocal::HttpClientManager as M;
    let z = Duration::ZERO;
    let cases: Vec<(rtlocal::Builder, &str)> = vec![
        (M::builder().close_timeout(z), "close_timeout"),
        (M::builder().connect_timeout(z), "connect_timeout"),
        (M::builder().request_timeout(z), "request_timeout"),
        (M::builder().pool_idle_timeout(z), "pool_idle_timeout"),
        (M::builder().dns_cache_ttl(z), "dns_cache_ttl"),
        (M::builder().max_connections(0), "max_connections"),
        (
            M::builder().max_connections_per_host(0),
            "max_connections_per_host",
        ),
        (
            M::builder().max_connections(2).max_connections_per_host(3),
            "max_connections_per_host (3)",
        ),
        (
            M::builder().keep_alive(false).pool_max_idle_per_host(4),
            "keep_alive(false)",
        ),
        (
            M::builder().http2_prior_knowledge().http1_only(),
            "http2_prior_knowledge",
        ),
        (
            M::builder().default_headers({
                let mut h = http::HeaderMap::new();
                h.insert(
                    http::header::PROXY_AUTHORIZATION,
                    http::HeaderValue::from_static("Basic dTpw"),
                );
                h
            }),
            "Proxy::basic_auth",
        ),
        (M::builder().user_agent(Some("bad\nvalue")), "user_agent"),
    ];
    for (builder, name) in cases {
        let e = builder.build().unwrap_err();
        assert!(e.is_config(), "{name}: {e:?}");
        assert!(
            e.to_string().contains(name),
            "error for {name} does not name it: {e}"
        );
    }
    // None turns features off and is valid.
    M::builder()
        .connect_timeout(None)
        .request_timeout(None)
        .pool_idle_timeout(None)
        .dns_cache_ttl(None)
        .keep_alive(false)
        .build()
        .unwrap();
}

#[cfg(not(feature = "rustls"))]
#[test]
fn https_without_the_rustls_feature_says_what_to_enable() {
    let m = HttpClientManager::new();
    let rt = current_thread_rt();
    let e = block_on_guarded(&rt, async {
        m.client()
            .await
            .unwrap()
            .get("https://127.0.0.1:1/")
            .await
            .unwrap_err()
    });
    assert!(e.is_connect(), "{e:?}");
    assert!(format!("{e:?}").contains("`rustls` feature"), "{e:?}");
}

/// With a per-host limit, requests that wait for a pooled connection must not leave
/// connect attempts parked behind the limit (each would later open a connection nobody
/// asked for and hold a permit until it idles out).
#[test]
fn limited_connects_do_not_pile_up_in_the_background() {
    let server = TestServer::start();
    let m = Arc::new(
        HttpClientManager::builder()
            .max_connections_per_host(1)
            .build()
            .unwrap(),
    );
    let rt = current_thread_rt();
    let url = server.url("/");
    block_on_guarded(&rt, async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let (m, url) = (Arc::clone(&m), url.clone());
            set.spawn(
                async move { text(m.client().await.unwrap().get(&url).await.unwrap()).await },
            );
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), "hello");
        }
        // Let abandoned connects observe that they are detached and finish.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    // What is left: the runtime sentinel, the one connection's task and the pool's
    // idle reaper — not one parked connect per request.
    let alive = rt.metrics().num_alive_tasks();
    assert!(alive <= 4, "{alive} tasks still alive");
    assert_eq!(server.accepted(), 1);
}

/// `Duration::MAX` is a common way to say "forever": it must not overflow a deadline.
#[test]
fn huge_durations_mean_no_deadline_and_never_panic() {
    let server = TestServer::start();
    let m = HttpClientManager::builder()
        .request_timeout(Duration::MAX)
        .close_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .pool_idle_timeout(Duration::MAX)
        .dns_cache_ttl(Duration::MAX)
        .build()
        .unwrap();
    let rt = current_thread_rt();
    block_on_guarded(&rt, async {
        let c = m.client().await.unwrap();
        let url = format!("http://localhost:{}/", server.addr.port());
        assert_eq!(text(c.get(&url).await.unwrap()).await, "hello");
        assert_eq!(m.close_all().await.closed, 1);
        assert_eq!(m.shutdown(Duration::MAX).await.closed, 0);
    });
}
