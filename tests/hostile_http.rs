//! Hostile but legitimate use of the HTTP client (issue 12): bodies and request futures
//! polled from anywhere (class 4), a request future moved between tasks while it waits
//! for a connection permit (class 6), and idle timeouts on a runtime that idles between
//! jobs (class 2). Every test talks to a real server on 127.0.0.1; time bounds are hang
//! guards only.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{
    HANG_GUARD, Misbehave, RawServer, TestServer, Worker, assert_no_panics, block_on_guarded,
    current_thread_rt, settle, text, watch_panics,
};
use http_body_util::BodyExt;
use rtlocal::HttpClientManager;

fn multi_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `f` on a plain thread (no runtime anywhere on it), bounded by the hang guard.
fn on_plain_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG_GUARD)
        .expect("hang guard: the plain thread did not finish (or it panicked)")
}

/// A started future, carried out of one task or executor to be finished by another.
struct Carried<F>(F);

// ---- class 4: polled from anywhere -------------------------------------------------

/// A body read on a plain thread by another executor works while the client's runtime
/// runs (a `multi_thread` runtime drives the connection by itself).
#[test]
fn body_read_by_another_executor_on_a_plain_thread() {
    watch_panics();
    let server = TestServer::start();
    let manager = HttpClientManager::new();
    let rt = multi_thread_rt();
    let resp = block_on_guarded(&rt, async {
        let client = manager.client().await.expect("client");
        client.get(&server.url("/")).await.expect("response")
    });
    let body = on_plain_thread(move || {
        futures_executor::block_on(resp.into_body().collect()).map(|c| c.to_bytes())
    });
    assert_eq!(body.expect("body").as_ref(), b"hello");
    drop(rt);
    assert_no_panics();
}

/// A stalled body polled outside any runtime ends with the request timeout instead of
/// panicking ("there is no reactor running") or hanging: the deadline needs no runtime.
#[test]
fn stalled_body_outside_a_runtime_times_out() {
    watch_panics();
    let server = RawServer::start(Misbehave::StallBody);
    let manager = HttpClientManager::builder()
        .request_timeout(Duration::from_millis(300))
        .build()
        .expect("build");
    let rt = current_thread_rt();
    let resp = block_on_guarded(&rt, async {
        let client = manager.client().await.expect("client");
        client.get(&server.url("/")).await.expect("headers arrive")
    });
    // The client's runtime now idles; the body is read elsewhere.
    let err = on_plain_thread(move || {
        futures_executor::block_on(resp.into_body().collect()).expect_err("stalled body")
    });
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains("request_timeout (300ms)"), "{err}");
    drop(rt);
    assert_no_panics();
}

/// Polled with a no-op waker outside any runtime, with the timer armed and again after
/// the runtime is gone: never a panic.
#[test]
fn body_polled_with_a_noop_waker_after_its_runtime_is_gone() {
    watch_panics();
    let server = RawServer::start(Misbehave::StallBody);
    let manager = HttpClientManager::builder()
        .request_timeout(Duration::from_secs(30))
        .build()
        .expect("build");
    let rt = current_thread_rt();
    let mut body = block_on_guarded(&rt, async {
        let client = manager.client().await.expect("client");
        let resp = client.get(&server.url("/")).await.expect("headers arrive");
        let mut body = resp.into_body();
        // Read what was sent, so that the next poll has to wait (and arms the timer).
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.is_data());
        body
    });
    let mut cx = Context::from_waker(Waker::noop());
    let poll = |body: &mut rtlocal::ResponseBody, cx: &mut Context<'_>| {
        http_body::Body::poll_frame(Pin::new(body), cx).map(|f| f.map(|r| r.map(|_| ())))
    };
    assert!(poll(&mut body, &mut cx).is_pending(), "the server stalls");
    drop(rt);
    // The runtime and its timer are gone: the body ends (with an error), no panic.
    let after = poll(&mut body, &mut cx);
    assert!(
        matches!(after, Poll::Ready(Some(Err(_))) | Poll::Ready(None)),
        "{after:?}"
    );
    assert_no_panics();
}

/// A request future polled outside any runtime fails at once with `is_no_runtime`, by
/// another executor and by a bare poll alike.
#[test]
fn request_polled_outside_a_runtime_is_refused() {
    watch_panics();
    let server = TestServer::start();
    let manager = HttpClientManager::new();
    let rt = current_thread_rt();
    let client = block_on_guarded(&rt, manager.client()).expect("client");
    let url = server.url("/");
    let (client2, url2) = (client.clone(), url.clone());
    let err = on_plain_thread(move || {
        futures_executor::block_on(client2.get(&url2)).expect_err("no runtime")
    });
    assert!(err.is_no_runtime(), "{err:?}");
    let mut fut = std::pin::pin!(client.get(&url));
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.is_no_runtime(), "{e:?}"),
        other => panic!("expected an immediate no-runtime error, got {other:?}"),
    }
    assert_eq!(server.accepted(), 0);
    drop(rt);
    assert_no_panics();
}

/// A request started on its runtime and finished by another executor on a plain thread
/// works: each poll enters the client's runtime, so its socket and timers stay there.
#[test]
fn request_started_on_its_runtime_finishes_elsewhere() {
    watch_panics();
    let server = TestServer::start();
    let manager = HttpClientManager::new();
    let rt = multi_thread_rt();
    let client = block_on_guarded(&rt, manager.client()).expect("client");
    let url = server.url("/slow/200");
    let Carried(fut) = block_on_guarded(&rt, async move {
        let mut fut = Box::pin(async move { client.get(&url).await });
        // One poll on the runtime: the request starts (connects, waits for the reply).
        std::future::poll_fn(|cx| {
            let _ = fut.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        Carried(fut)
    });
    let body = on_plain_thread(move || {
        futures_executor::block_on(async {
            let resp = fut.await?;
            Ok::<_, rtlocal::Error>(resp.into_body().collect().await?.to_bytes())
        })
    });
    assert_eq!(body.expect("finished elsewhere").as_ref(), b"slow");
    assert_eq!(server.requests(), 1);
    drop(rt);
    assert_no_panics();
}

// ---- class 6: a request moved between tasks -----------------------------------------

/// With `max_connections(1)` taken by a slow request, a second request waits for the
/// permit; it is polled once in one task and finished by another. It must succeed: it
/// was never served by a pooled connection, and it was not abandoned.
#[test]
fn request_moved_between_tasks_while_waiting_for_a_permit_succeeds() {
    watch_panics();
    for keep_alive in [true, false] {
        let server = TestServer::start();
        let manager = HttpClientManager::builder()
            .max_connections(1)
            .keep_alive(keep_alive)
            .build()
            .expect("build");
        let rt = current_thread_rt();
        let body = block_on_guarded(&rt, async {
            let client = manager.client().await.expect("client");
            let first = {
                let client = client.clone();
                let url = server.url("/slow/300");
                tokio::spawn(async move { text(client.get(&url).await?).await.pipe_ok() })
            };
            server.requests_reached(1).await;
            // Polled once in task one: it now waits for the only permit.
            let url = server.url("/");
            let mut second = Box::pin(async move { client.get(&url).await });
            let Carried(second) = tokio::spawn(async move {
                std::future::poll_fn(|cx| {
                    assert!(
                        second.as_mut().poll(cx).is_pending(),
                        "waits for the permit"
                    );
                    Poll::Ready(())
                })
                .await;
                Carried(second)
            })
            .await
            .expect("task one");
            // Finished in task two.
            let second = tokio::spawn(async move { text(second.await?).await.pipe_ok() });
            let first = first.await.expect("first task");
            let second = second.await.expect("second task");
            (first, second)
        });
        let (first, second) = body;
        assert_eq!(first.expect("first request").as_str(), "slow");
        assert_eq!(
            second
                .expect("a moved request must not be abandoned")
                .as_str(),
            "hello",
            "keep_alive({keep_alive})"
        );
        if keep_alive {
            // The second request took the first one's pooled connection; the connect
            // it had started was given up, so no second connection was opened.
            assert_eq!(server.accepted(), 1);
        }
        drop(rt);
    }
    assert_no_panics();
}

/// `Ok` for the `?` above: `text` returns a plain `String`.
trait PipeOk: Sized {
    fn pipe_ok(self) -> Result<Self, rtlocal::Error> {
        Ok(self)
    }
}
impl PipeOk for String {}

// ---- class 2: idle timeouts on idle runtimes ----------------------------------------

/// `pool_idle_timeout` holds while the client's runtime idles: the server sees the
/// pooled connection closed, and the next job's request still succeeds (on a new
/// connection).
#[test]
fn idle_timeout_holds_while_the_runtime_idles() {
    watch_panics();
    let server = TestServer::start();
    let manager = std::sync::Arc::new(
        HttpClientManager::builder()
            .pool_idle_timeout(Duration::from_millis(300))
            .build()
            .expect("build"),
    );
    let worker = Worker::start();
    for round in 1..=3 {
        let (m, url) = (std::sync::Arc::clone(&manager), server.url("/"));
        let body = worker.run(move |rt| {
            block_on_guarded(rt, async move {
                let client = m.client().await?;
                Ok::<_, rtlocal::Error>(text(client.get(&url).await?).await)
            })
        });
        assert_eq!(
            body.expect("request after idling").as_str(),
            "hello",
            "round {round}"
        );
        assert_eq!(server.requests(), round);
        // The worker's runtime idles now; nobody runs hyper-util's idle task there.
        assert_eq!(
            server.wait_open(0),
            0,
            "round {round}: the idle connection stayed open"
        );
        assert_eq!(settle(0, || manager.stats().connections_open), 0);
    }
    drop(worker);
    assert_no_panics();
}

/// On a runtime that keeps running, short idle timeouts between requests never make a
/// request fail: the tracker's reaper and hyper-util's own eviction agree.
#[test]
fn requests_across_idle_timeouts_on_a_running_runtime_succeed() {
    watch_panics();
    let server = TestServer::start();
    let manager = HttpClientManager::builder()
        .pool_idle_timeout(Duration::from_millis(50))
        .build()
        .expect("build");
    let rt = multi_thread_rt();
    block_on_guarded(&rt, async {
        let client = manager.client().await.expect("client");
        for pause_ms in [0u64, 10, 40, 60, 120, 0, 55, 0] {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            let resp = client.get(&server.url("/")).await.expect("request");
            assert_eq!(text(resp).await, "hello");
        }
    });
    assert_eq!(server.requests(), 8);
    drop(rt);
    assert_no_panics();
}
