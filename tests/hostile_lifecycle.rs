//! Hostile but legitimate use of the lifecycle (issue 12), against real servers on
//! 127.0.0.1 whose view of open connections is the judge:
//!
//! * threads that exit while their runtime idles (a `spawn_blocking` worker of a
//!   `current_thread` runtime, a thread that borrowed a runtime's handle, a thread that
//!   handed its runtime to another thread): their clients must be closed without that
//!   runtime being driven, or at the latest by `shutdown`, and a request still in flight
//!   on such a client must not outlive `shutdown`; a thread that exits while a
//!   replacement of its slot is stuck leaves that slot to `close_all`;
//! * `client()` from a thread-local destructor that runs late, and `close_all` /
//!   `shutdown` awaited outside any runtime: no panic, forced closes reported as forced;
//! * a task holding an unread response body that asks for a client during `close_all`
//!   must not wait for the drain of its own body.
//!
//! Every test records panics on every one of its threads (background tasks included) and
//! fails on any. Every wait is bounded by `HOSTILE_GUARD`, so a test that would hang fails.

mod common;

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::task::Poll;
use std::time::Duration;

use common::{
    HOSTILE_GUARD, PanicWatch, StreamServer, TestServer, block_on_guarded, current_thread_rt,
    poll_once, poll_outside_runtime, settle_within, signal_thread_exit, text, thread_exited,
};
use http_body_util::BodyExt;
use rtlocal::{ClientFactory, ClientId, HttpClientManager, Manager};
use tokio::runtime::{Handle, Runtime};

fn manager() -> Arc<HttpClientManager> {
    Arc::new(HttpClientManager::new())
}

/// A `current_thread` runtime driven by this thread just long enough for one of its
/// `spawn_blocking` workers to get a client (via `Handle::block_on`) and make one
/// keep-alive request: the connection stays pooled. Then the runtime idles (this thread
/// leaves `block_on`) and the worker, idle too, exits 50 ms later. Returns the runtime,
/// the worker's exit signal and the worker's client id.
fn spawn_blocking_worker_request(
    watch: &PanicWatch,
    m: &Arc<HttpClientManager>,
    server: &TestServer,
) -> (Runtime, mpsc::Receiver<()>, ClientId) {
    let rt = watch.current_rt();
    let (tx_exit, rx_exit) = mpsc::channel();
    let (m, url, counts) = (Arc::clone(m), server.url("/"), Arc::clone(&server.counts));
    let id = block_on_guarded(&rt, async move {
        tokio::task::spawn_blocking(move || {
            signal_thread_exit(tx_exit);
            Handle::current().block_on(async move {
                let c = m.client().await.expect("a client on the worker");
                assert_eq!(text(c.get(&url).await.expect("request")).await, "hello");
                assert_eq!(
                    counts.open.load(Ordering::SeqCst),
                    1,
                    "keep-alive: the connection is pooled"
                );
                c.id()
            })
        })
        .await
        .expect("worker")
    });
    (rt, rx_exit, id)
}

/// Which of the manager's closes a test drives.
#[derive(Clone, Copy, Debug)]
enum Close {
    All,
    Shutdown,
}

/// Runs `close` from a fresh runtime and checks it reached the exited thread's client:
/// nothing live afterwards, nothing failed, and the server sees no connection left open.
/// Returns that runtime, for a test that goes on using the manager.
fn assert_close_reaches_exited_client(
    watch: &PanicWatch,
    m: &HttpClientManager,
    server: &TestServer,
    close: Close,
) -> tokio::runtime::Runtime {
    let live_before = m.stats().clients_live;
    let other = watch.current_rt();
    let report = block_on_guarded(&other, async {
        match close {
            Close::All => m.close_all().await,
            Close::Shutdown => m.shutdown(Duration::from_secs(1)).await,
        }
    });
    let live_after = m.stats().clients_live;
    assert_eq!(
        live_after, 0,
        "after {close:?} returned ({report}) the exited thread's client is still live \
         (live before: {live_before}): {close:?} did not reach it"
    );
    assert!(report.failed.is_empty(), "{report}");
    assert_eq!(
        settle_within(HOSTILE_GUARD, 0, || server.open()),
        0,
        "the server still sees the exited thread's connection after {close:?} ({report})"
    );
    other
}

/// Class 1: a `spawn_blocking` worker of a `current_thread` runtime exits while the
/// runtime idles. Its pooled connection must be shut on the wire and its client counted
/// closed without anyone driving that runtime again.
#[test]
fn exited_spawn_blocking_worker_has_its_connection_closed_while_its_runtime_idles() {
    let watch = PanicWatch::install("a1");
    let server = TestServer::start();
    let m = manager();
    let (rt, rx_exit, _id) = spawn_blocking_worker_request(&watch, &m, &server);
    assert!(
        thread_exited(&rx_exit, HOSTILE_GUARD),
        "the spawn_blocking worker did not exit"
    );

    let open = settle_within(HOSTILE_GUARD, 0, || server.open());
    assert_eq!(
        open,
        0,
        "the exited worker's pooled connection is still open on the server {HOSTILE_GUARD:?} \
         after the worker exited, while its runtime idles ({:?})",
        m.stats()
    );
    let live = settle_within(HOSTILE_GUARD, 0, || m.stats().clients_live);
    assert_eq!(live, 0, "the exited worker's client is still live");
    drop(rt);
    watch.assert_no_unexpected_panics();
}

/// Class 1: the same exited `spawn_blocking` worker; `shutdown` from elsewhere must reach
/// its client (it is not in any slot any more) and leave nothing open.
#[test]
fn shutdown_reaches_the_client_of_an_exited_spawn_blocking_worker() {
    let watch = PanicWatch::install("a2");
    let server = TestServer::start();
    let m = manager();
    let (rt, rx_exit, _id) = spawn_blocking_worker_request(&watch, &m, &server);
    assert!(
        thread_exited(&rx_exit, HOSTILE_GUARD),
        "the spawn_blocking worker did not exit"
    );

    drop(assert_close_reaches_exited_client(
        &watch,
        &m,
        &server,
        Close::Shutdown,
    ));
    drop(rt);
    watch.assert_no_unexpected_panics();
}

/// Class 1: a plain thread handed a `current_thread` runtime's `Handle` gets a client with
/// `Handle::block_on` (the owner drives the runtime meanwhile), makes a keep-alive
/// request and exits; the runtime then idles. The connection must be shut without the
/// runtime being driven again.
#[test]
fn exited_thread_that_borrowed_a_runtime_handle_has_its_connection_closed() {
    let watch = PanicWatch::install("a3");
    let server = TestServer::start();
    let m = manager();
    let rt = watch.current_rt();
    let (handle, m2, url) = (rt.handle().clone(), Arc::clone(&m), server.url("/"));
    let counts = Arc::clone(&server.counts);
    let (tx_done, rx_done) = tokio::sync::oneshot::channel();
    let borrower = watch.spawn("borrow", move || {
        let body = handle.block_on(async move {
            let c = m2.client().await.expect("a client on the borrowing thread");
            text(c.get(&url).await.expect("request")).await
        });
        let pooled = counts.open.load(Ordering::SeqCst);
        let _ = tx_done.send((body, pooled));
    });
    // The owner drives the runtime (I/O, timers) while the borrower works.
    let (body, pooled) = block_on_guarded(&rt, rx_done).expect("borrower finished");
    assert_eq!(body, "hello");
    assert_eq!(pooled, 1, "keep-alive: the connection is pooled");
    borrower.join().expect("borrower thread");
    // The borrower has exited (join waits for its thread-local destructors); the runtime
    // idles from here on.

    let open = settle_within(HOSTILE_GUARD, 0, || server.open());
    assert_eq!(
        open,
        0,
        "the exited borrower's pooled connection is still open {HOSTILE_GUARD:?} after it \
         exited, while the runtime idles ({:?})",
        m.stats()
    );
    let live = settle_within(HOSTILE_GUARD, 0, || m.stats().clients_live);
    assert_eq!(live, 0, "the exited borrower's client is still live");
    drop(rt);
    watch.assert_no_unexpected_panics();
}

/// A thread that holds a runtime handed to it and keeps it alive but idle until dropped.
struct Keeper {
    release: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Thread `t1` builds a `current_thread` runtime, gets a client on it and makes a
/// keep-alive request, hands the runtime to a keeper thread (which keeps it alive and
/// idle) and exits. Returns once `t1` has exited.
fn hand_runtime_away(
    watch: &PanicWatch,
    m: &Arc<HttpClientManager>,
    server: &TestServer,
) -> Keeper {
    let (url, counts) = (server.url("/"), Arc::clone(&server.counts));
    let (tx_rt, rx_rt) = mpsc::channel::<Runtime>();
    let (release, rx_release) = mpsc::channel::<()>();
    let keeper = watch.spawn("keep", move || {
        let rt = rx_rt.recv().expect("a runtime handed over");
        let _ = rx_release.recv();
        drop(rt);
    });
    let m = Arc::clone(m);
    let t1 = watch.spawn("t1", move || {
        let rt = current_thread_rt();
        let body = block_on_guarded(&rt, async {
            let c = m.client().await.expect("a client on t1");
            text(c.get(&url).await.expect("request")).await
        });
        assert_eq!(body, "hello");
        assert_eq!(
            counts.open.load(Ordering::SeqCst),
            1,
            "keep-alive: the connection is pooled"
        );
        tx_rt.send(rt).expect("keeper takes the runtime");
    });
    // join waits for t1's thread-local destructors.
    t1.join().expect("t1");
    Keeper {
        release: Some(release),
        thread: Some(keeper),
    }
}

/// Class 1: a thread that handed its runtime to another thread (which keeps it alive and
/// idle) exits. Its connection must be shut without the runtime being driven again.
#[test]
fn thread_that_handed_its_runtime_away_and_exited_has_its_connection_closed() {
    let watch = PanicWatch::install("b1");
    let server = TestServer::start();
    let m = manager();
    let keeper = hand_runtime_away(&watch, &m, &server);
    assert_eq!(server.accepted(), 1);

    let open = settle_within(HOSTILE_GUARD, 0, || server.open());
    assert_eq!(
        open,
        0,
        "the exited thread's pooled connection is still open {HOSTILE_GUARD:?} after it \
         exited, while its runtime idles on another thread ({:?})",
        m.stats()
    );
    let live = settle_within(HOSTILE_GUARD, 0, || m.stats().clients_live);
    assert_eq!(live, 0, "the exited thread's client is still live");
    drop(keeper);
    watch.assert_no_unexpected_panics();
}

/// Class 1: the same handed-away runtime; `shutdown` must reach the exited thread's
/// client and leave nothing open.
#[test]
fn shutdown_reaches_the_client_of_a_thread_that_handed_its_runtime_away() {
    let watch = PanicWatch::install("b2");
    let server = TestServer::start();
    let m = manager();
    let keeper = hand_runtime_away(&watch, &m, &server);

    drop(assert_close_reaches_exited_client(
        &watch,
        &m,
        &server,
        Close::Shutdown,
    ));
    drop(keeper);
    watch.assert_no_unexpected_panics();
}

/// A client that is one TCP connection to a test server, shut on the wire by its
/// factory's close or abort, whatever its runtime does.
struct Conn(std::net::TcpStream);

/// Builds [`Conn`]s to one address.
struct OneConnection(std::net::SocketAddr);

impl ClientFactory for OneConnection {
    type Client = Conn;

    async fn build(&self, _: &Handle) -> Result<Conn, rtlocal::Error> {
        std::net::TcpStream::connect(self.0)
            .map(Conn)
            .map_err(rtlocal::Error::build)
    }

    async fn close(&self, client: &Conn) {
        self.abort(client);
    }

    fn abort(&self, client: &Conn) {
        let _ = client.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Class 1: a thread exits while a replacement of its slot is stuck past the exit's bound
/// (close + build timeouts). The thread had a client on `rt1` with a request in flight; a
/// task of `rt2`, spawned on the same thread, leads the replacement and waits for that
/// request; the thread hands both runtimes away and exits, and nobody drives `rt2` for
/// three times the bound. The exit gives up on the busy slot, which must stay listed: when
/// `rt2` runs again the leader publishes a new client (a new connection) into the exited
/// thread's slot, and `close_all` must find that client and close it.
#[test]
fn close_all_reaches_what_a_replacement_publishes_after_its_thread_gave_up_on_it() {
    let watch = PanicWatch::install("b3");
    let server = TestServer::start();
    let (close, build) = (Duration::from_millis(200), Duration::from_millis(300));
    let m = Arc::new(
        Manager::builder(OneConnection(server.addr))
            .close_timeout(close)
            .build_timeout(build)
            .build()
            .unwrap(),
    );
    let m2 = Arc::clone(&m);
    let (tx, rx) = mpsc::channel();
    let exiting = watch.spawn("exit", move || {
        // rt1: the thread's client, with a request in flight.
        let rt1 = current_thread_rt();
        let (stale, request) = block_on_guarded(&rt1, async {
            let c = m2.client().await.expect("client");
            let request = c.track().expect("an open client");
            (c, request)
        });
        // rt2 on the same thread: a task leads the replacement and waits for the stale
        // client's request; then rt2 idles with the replacement under way.
        let rt2 = current_thread_rt();
        let m3 = Arc::clone(&m2);
        let leader = rt2.spawn(async move { m3.client().await });
        block_on_guarded(&rt2, async {
            while stale.is_open() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tx.send((rt1, rt2, stale, request, leader))
            .expect("the test takes the runtimes");
    });
    // join waits for the thread's thread-local destructors: its exit is on the closer.
    exiting.join().expect("the exiting thread");
    let (rt1, rt2, stale, request, leader) = rx.recv().expect("the runtimes");
    // Past the exit's bound, with the leader stuck on rt2.
    std::thread::sleep((close + build) * 3);
    drop(request);
    let new = block_on_guarded(&rt2, leader)
        .expect("the leader task")
        .expect("the replacement's client");
    assert!(!stale.is_open());
    // The server's accept can lag the client's connect.
    assert_eq!(
        settle_within(HOSTILE_GUARD, 2, || server.accepted()),
        2,
        "the new client's connection"
    );
    assert_eq!(
        settle_within(HOSTILE_GUARD, 1, || server.open()),
        1,
        "the stale client's connection closed, the new client's open"
    );

    let other = watch.current_rt();
    let report = block_on_guarded(&other, m.close_all());
    assert_eq!(
        settle_within(HOSTILE_GUARD, 0, || server.open()),
        0,
        "close_all ({report}) left open the connection of the client published into the \
         exited thread's slot: the exit gave up on the busy slot but did not leave it to \
         close_all"
    );
    assert!(!new.is_open(), "{report}");
    assert!(report.failed.is_empty(), "{report}");
    assert_eq!(m.stats().clients_live, 0, "{report}");
    drop((new, stale));
    drop((rt2, rt1, other));
    watch.assert_no_unexpected_panics();
}

/// Class 1: a `spawn_blocking` worker gets a client and starts a slow request as a task
/// of the runtime, then exits while the request is in flight. `shutdown(300ms)` must count
/// that client and cut the request: the request must not finish after `shutdown`
/// returned, and its error must say its client was closed.
#[test]
fn request_in_flight_on_an_exited_threads_client_is_cut_by_shutdown() {
    let watch = PanicWatch::install("c");
    let server = TestServer::start();
    // Long enough that only shutdown's own deadline can end the request in time.
    let m = Arc::new(
        HttpClientManager::builder()
            .close_timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    );
    let rt = watch.current_rt();
    let (tx_exit, rx_exit) = mpsc::channel();
    let (m2, url) = (Arc::clone(&m), server.url("/slow/4000"));
    let (report, outcome) = block_on_guarded(&rt, async {
        let request = tokio::task::spawn_blocking(move || {
            signal_thread_exit(tx_exit);
            let handle = Handle::current();
            let c = handle
                .block_on(m2.client())
                .expect("a client on the worker");
            // The request runs as a task of the runtime, on the worker's client.
            handle.spawn(async move {
                let resp = c.get(&url).await?;
                let body = resp.into_body().collect().await?.to_bytes();
                Ok::<_, rtlocal::Error>(String::from_utf8_lossy(&body).into_owned())
            })
        })
        .await
        .expect("worker");
        // Drive the runtime until the worker has exited and the request reached the server.
        let exited = tokio::time::timeout(HOSTILE_GUARD, async {
            while let Err(mpsc::TryRecvError::Empty) = rx_exit.try_recv() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(exited.is_ok(), "the spawn_blocking worker did not exit");
        assert_eq!(server.requests_reached(1).await, 1);
        let report = m.shutdown(Duration::from_millis(300)).await;
        // Everything below happens after shutdown returned.
        let outcome = tokio::time::timeout(HOSTILE_GUARD, request).await;
        (report, outcome)
    });
    let outcome = outcome
        .expect("hang guard: the request neither finished nor failed")
        .expect("the request task panicked");
    match outcome {
        Ok(body) => panic!(
            "the request on the exited worker's client completed ({body:?}) after shutdown \
             had returned; shutdown reported: {report}"
        ),
        Err(e) => {
            assert!(e.is_closed(), "the error says its client was closed: {e:?}");
            assert!(e.to_string().contains("closed"), "{e}");
        }
    }
    assert!(report.closed >= 1, "shutdown counts the client: {report}");
    assert!(
        report.forced >= 1 && report.in_flight_cut >= 1,
        "shutdown reports the cut: {report}"
    );
    assert_eq!(m.stats().clients_live, 0);
    assert_eq!(settle_within(HOSTILE_GUARD, 0, || server.open()), 0);
    drop(rt);
    watch.assert_no_unexpected_panics();
}

/// What each step of a late destructor did: `(step, outcome)`; an outcome starting with
/// `PANICKED` is a panic out of that step.
type Steps = Vec<(&'static str, String)>;

/// A thread-local whose destructor, running after rtlocal's own thread-locals are gone,
/// asks for clients.
struct LateUser {
    m: Arc<HttpClientManager>,
    tx: mpsc::Sender<Steps>,
}

thread_local! {
    static LATE_USER: RefCell<Option<LateUser>> = const { RefCell::new(None) };
}

fn step(name: &'static str, f: impl FnOnce() -> String) -> (&'static str, String) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(s) => (name, s),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            (name, format!("PANICKED: {msg}"))
        }
    }
}

fn describe<T>(r: Result<T, rtlocal::Error>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    }
}

impl Drop for LateUser {
    fn drop(&mut self) {
        // Nothing may unwind out of a thread-local destructor (the process would abort):
        // every step is caught and reported.
        let mut steps = Steps::new();
        steps.push(step(
            "rtlocal::client() polled outside a runtime",
            || match poll_once(rtlocal::client()) {
                Poll::Ready(r) => describe(r),
                Poll::Pending => "pending outside a runtime".to_owned(),
            },
        ));
        let m = Arc::clone(&self.m);
        steps.push(step(
            "manager.client() polled outside a runtime",
            || match poll_once(m.client()) {
                Poll::Ready(r) => describe(r),
                Poll::Pending => "pending outside a runtime".to_owned(),
            },
        ));
        let rt = catch_unwind(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        });
        match rt {
            Ok(rt) => {
                steps.push(step(
                    "tokio alone: block_on on a runtime built here",
                    || rt.block_on(async { "ok".to_owned() }),
                ));
                steps.push(step("rtlocal::client() on a runtime built here", || {
                    rt.block_on(async {
                        match tokio::time::timeout(HOSTILE_GUARD, rtlocal::client()).await {
                            Ok(r) => describe(r),
                            Err(_) => "hung".to_owned(),
                        }
                    })
                }));
                steps.push(step("manager.client() on a runtime built here", || {
                    rt.block_on(async {
                        match tokio::time::timeout(HOSTILE_GUARD, m.client()).await {
                            Ok(r) => describe(r),
                            Err(_) => "hung".to_owned(),
                        }
                    })
                }));
                steps.push(step("dropping that runtime", move || {
                    drop(rt);
                    "ok".to_owned()
                }));
            }
            Err(_) => steps.push(("tokio alone: building a runtime here", "PANICKED".into())),
        }
        let _ = self.tx.send(steps);
    }
}

/// Class 4: `client()` from a thread-local destructor that runs after rtlocal's (and the
/// `thread_local` crate's) thread-locals were destroyed — outside a runtime and on a
/// runtime built in the destructor — must not panic; an error is fine.
#[test]
fn client_from_a_late_thread_local_destructor_does_not_panic() {
    let watch = PanicWatch::install("f");
    let m = manager();
    let (tx, rx) = mpsc::channel();
    let m2 = Arc::clone(&m);
    let thread = watch.spawn("late", move || {
        // Destructors run newest first. tokio's thread-locals first (they outlive the late
        // user), then the late user, then rtlocal's (destroyed before the late user runs).
        let rt = current_thread_rt();
        rt.block_on(async {});
        LATE_USER.with(|u| {
            *u.borrow_mut() = Some(LateUser {
                m: Arc::clone(&m2),
                tx,
            });
        });
        rt.block_on(async {
            rtlocal::client().await.expect("default manager client");
            m2.client().await.expect("manager client");
        });
        drop(rt);
    });
    let joined = thread.join();
    let steps = rx
        .recv_timeout(HOSTILE_GUARD)
        .expect("the late destructor ran and reported");
    assert!(joined.is_ok(), "the thread panicked: {steps:#?}");
    let tokio_ok = steps
        .iter()
        .filter(|(s, _)| s.starts_with("tokio alone"))
        .all(|(_, o)| !o.starts_with("PANICKED"));
    assert!(
        tokio_ok,
        "tokio itself failed in the late destructor: {steps:#?}"
    );
    let panicked: Vec<_> = steps
        .iter()
        .filter(|(_, o)| o.starts_with("PANICKED"))
        .collect();
    assert!(
        panicked.is_empty(),
        "client() panicked from a late thread-local destructor: {panicked:#?} (all steps: \
         {steps:#?})"
    );
    assert!(
        steps.iter().all(|(_, o)| o != "hung"),
        "client() hung in a late destructor: {steps:#?}"
    );
    assert_eq!(m.stats().clients_live, 0, "{:?}", m.stats());
    watch.assert_no_unexpected_panics();
}

/// Class 4: `close_all()` and `shutdown()` awaited outside any tokio runtime (a plain
/// poll loop on a thread that has none) must not panic, and a close that had to be forced
/// (a request in flight past the close timeout) is reported as forced, not as failed.
#[test]
fn close_all_and_shutdown_outside_a_runtime_report_forced_not_failed() {
    let watch = PanicWatch::install("g");
    let server = TestServer::start();
    let m = Arc::new(
        HttpClientManager::builder()
            .close_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    // A request in flight (its body unread) on a client whose runtime idles on another
    // thread: closing it must be forced at the deadline.
    let in_flight = |what: &str| {
        let (m, url) = (Arc::clone(&m), server.url("/"));
        watch.idle_runtime(what, move || async move {
            let c = m.client().await.expect("client");
            let resp = c.get(&url).await.expect("request");
            (c, resp)
        })
    };

    let first = in_flight("idle1");
    assert_eq!(m.stats().requests_in_flight, 1);
    let report = catch_unwind(AssertUnwindSafe(|| {
        poll_outside_runtime(HOSTILE_GUARD, m.close_all())
    }))
    .expect("close_all panicked outside a runtime")
    .expect("hang guard: close_all outside a runtime did not finish");
    assert!(
        report.failed.is_empty(),
        "close_all outside a runtime reported a failure: {report} ({:?})",
        report.failed
    );
    assert_eq!(
        (report.closed, report.forced),
        (1, 1),
        "the forced close is reported as forced: {report}"
    );
    assert!(!first.value.0.is_open());
    assert_eq!(settle_within(HOSTILE_GUARD, 0, || server.open()), 0);

    let second = in_flight("idle2");
    let report = catch_unwind(AssertUnwindSafe(|| {
        poll_outside_runtime(HOSTILE_GUARD, m.shutdown(Duration::from_millis(300)))
    }))
    .expect("shutdown panicked outside a runtime")
    .expect("hang guard: shutdown outside a runtime did not finish");
    assert!(
        report.failed.is_empty(),
        "shutdown outside a runtime reported a failure: {report} ({:?})",
        report.failed
    );
    assert_eq!((report.closed, report.forced), (1, 1), "{report}");
    assert!(!second.value.0.is_open());
    assert_eq!(settle_within(HOSTILE_GUARD, 0, || server.open()), 0);
    drop((first, second));
    assert_eq!(m.stats().clients_live, 0);
    watch.assert_no_unexpected_panics();
}

/// Class 5: a task holds an unread (streaming) response body and asks for a client while
/// another task runs `close_all`. The close waits (up to a 30 s close timeout) for that
/// body; the caller must not wait for it — it is its own in-flight work.
#[test]
fn client_during_close_all_does_not_wait_for_the_callers_own_unread_body() {
    let watch = PanicWatch::install("i");
    let server = StreamServer::start();
    let m = Arc::new(
        HttpClientManager::builder()
            .close_timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    let rt = watch.current_rt();
    let url = server.url("/download");
    let (old_id, got, report) = block_on_guarded(&rt, async {
        let old = m.client().await.expect("client");
        let mut resp = old.get(&url).await.expect("streaming response");
        // Read one chunk: the download is under way, the rest unread.
        let first = resp.body_mut().frame().await;
        assert!(matches!(first, Some(Ok(_))), "a first chunk");
        let m2 = Arc::clone(&m);
        let closer = tokio::spawn(async move { m2.close_all().await });
        while old.is_open() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // close_all is now waiting for our body to drain.
        let got = tokio::time::timeout(HOSTILE_GUARD, m.client()).await;
        drop(resp);
        let report = tokio::time::timeout(HOSTILE_GUARD, closer).await;
        (old.id(), got, report)
    });
    let got = got.unwrap_or_else(|_| {
        panic!(
            "client() waited {HOSTILE_GUARD:?} (the close timeout is 30 s) for close_all to \
             drain the caller's own unread body"
        )
    });
    let new = got.expect("a client during close_all");
    assert_ne!(new.id(), old_id, "not the client being closed");
    assert!(new.is_open());
    let report = report
        .expect("hang guard: close_all did not finish after the body was dropped")
        .expect("close_all panicked");
    assert!(report.closed >= 1, "{report}");
    let shut = block_on_guarded(&rt, m.shutdown(Duration::from_secs(1)));
    assert!(shut.failed.is_empty(), "{shut}");
    assert_eq!(settle_within(HOSTILE_GUARD, 0, || server.open()), 0);
    drop(rt);
    watch.assert_no_unexpected_panics();
}

/// Class 1: the same exited `spawn_blocking` worker; `close_all` (not only `shutdown`)
/// must reach its client and leave nothing open, and the manager stays usable.
#[test]
fn close_all_reaches_the_client_of_an_exited_spawn_blocking_worker() {
    let watch = PanicWatch::install("a4");
    let server = TestServer::start();
    let m = manager();
    let (rt, rx_exit, id) = spawn_blocking_worker_request(&watch, &m, &server);
    assert!(
        thread_exited(&rx_exit, HOSTILE_GUARD),
        "the spawn_blocking worker did not exit"
    );

    let other = assert_close_reaches_exited_client(&watch, &m, &server, Close::All);
    let again = block_on_guarded(&other, m.client()).expect("usable after close_all");
    assert_ne!(again.id(), id);
    drop((rt, other));
    watch.assert_no_unexpected_panics();
}

/// Class 5, through a kept client: a task holds an unread (streaming) body and sends
/// another request on the same client while `close_all` drains it. The request is
/// re-routed to a fresh client; it must not wait for the drain of the task's own body.
#[test]
fn request_on_a_closing_client_does_not_wait_for_the_callers_own_unread_body() {
    let watch = PanicWatch::install("i2");
    let server = StreamServer::start();
    let m = Arc::new(
        HttpClientManager::builder()
            .close_timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    let rt = watch.current_rt();
    let url = server.url("/download");
    let sent = block_on_guarded(&rt, async {
        let old = m.client().await.expect("client");
        let resp = old.get(&url).await.expect("streaming response");
        let m2 = Arc::clone(&m);
        let closer = tokio::spawn(async move { m2.close_all().await });
        while old.is_open() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // close_all is now waiting for `resp` to drain; the old client re-routes.
        let sent = tokio::time::timeout(HOSTILE_GUARD, old.get(&url)).await;
        drop(resp);
        let _ = tokio::time::timeout(HOSTILE_GUARD, closer).await;
        sent
    });
    let sent = sent.unwrap_or_else(|_| {
        panic!(
            "a request on the closing client waited {HOSTILE_GUARD:?} (the close timeout is \
             30 s) for close_all to drain the caller's own unread body"
        )
    });
    drop(sent.expect("the re-routed request is answered"));
    let shut = block_on_guarded(&rt, m.shutdown(Duration::from_secs(1)));
    assert!(shut.failed.is_empty(), "{shut}");
    assert_eq!(settle_within(HOSTILE_GUARD, 0, || server.open()), 0);
    drop(rt);
    watch.assert_no_unexpected_panics();
}

/// Class 4: `close_all()` polled outside any runtime while a replacement is under way
/// and stuck (its leader sits on a runtime nobody drives, waiting for the stale client's
/// in-flight request): no panic out of `close_all`, and the stuck client is reported as
/// a forced close, not a failure.
#[test]
fn close_all_outside_a_runtime_with_a_stuck_replacement_does_not_panic() {
    let watch = PanicWatch::install("g2");
    let server = TestServer::start();
    let m = Arc::new(
        HttpClientManager::builder()
            .close_timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    );
    let (m2, url) = (Arc::clone(&m), server.url("/"));
    let (tx_ready, rx_ready) = mpsc::channel();
    let (release, rx_release) = mpsc::channel::<()>();
    let stuck = watch.spawn("stuck", move || {
        // rt1: a client with a request in flight (its body unread).
        let rt1 = current_thread_rt();
        let (stale, body) = block_on_guarded(&rt1, async {
            let c = m2.client().await.expect("client");
            let resp = c.get(&url).await.expect("request");
            (c, resp)
        });
        // rt2 on the same thread: a task leads the replacement and waits for the stale
        // client's request; then rt2 idles with the replacement under way.
        let rt2 = current_thread_rt();
        block_on_guarded(&rt2, async {
            let m3 = Arc::clone(&m2);
            drop(tokio::spawn(
                async move { m3.client().await.map(|c| c.id()) },
            ));
            while stale.is_open() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let _ = tx_ready.send(stale.id());
        let _ = rx_release.recv();
        drop(body);
        drop((rt2, rt1));
    });
    rx_ready
        .recv_timeout(HOSTILE_GUARD)
        .expect("the replacement is under way");

    let report = catch_unwind(AssertUnwindSafe(|| {
        poll_outside_runtime(HOSTILE_GUARD, m.close_all())
    }));
    let report = match report {
        Ok(r) => r.expect("hang guard: close_all outside a runtime did not finish"),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            panic!("close_all panicked outside a runtime with a replacement under way: {msg}")
        }
    };
    assert!(report.failed.is_empty(), "{report} ({:?})", report.failed);
    assert!(
        report.closed >= 1 && report.forced >= 1,
        "the stuck client is closed and the close reported as forced: {report}"
    );
    assert_eq!(settle_within(HOSTILE_GUARD, 0, || server.open()), 0);
    drop(release);
    stuck.join().expect("stuck thread");
    watch.assert_no_unexpected_panics();
}
