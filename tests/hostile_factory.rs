//! Hostile factories (issue 12, classes 4 and 5): a `ClientFactory` whose `build`,
//! `close`, `abort` or `release` panics. No panic may come out of the manager's API or
//! its runtime teardown, every close is accounted for, and the callers waiting on a
//! failed build learn of it at once.
//!
//! Every test records panics on every one of its threads (background tasks included);
//! the factory's own panics say `deliberate panic` and are the only ones allowed.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{DELIBERATE, HOSTILE_GUARD, PanicWatch, block_on_guarded};
use rtlocal::{ClientFactory, Error, Manager, Sharing};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

/// Which factory methods misbehave, and how.
#[derive(Default)]
struct Hostile {
    built: AtomicUsize,
    closed: AtomicUsize,
    aborted: AtomicUsize,
    released: AtomicUsize,
    /// `build` call number (1-based) that panics; 0: none.
    build_panics_on: usize,
    /// How long every `build` blocks before returning (or panicking).
    build_takes: Duration,
    /// How long `close` takes (on the runtime's timer) before returning (or panicking).
    close_takes: Duration,
    close_panics: bool,
    abort_panics: bool,
    release_panics: bool,
}

/// The client: just a number.
struct Fake(usize);

impl ClientFactory for Hostile {
    type Client = Fake;

    async fn build(&self, _runtime: &Handle) -> Result<Fake, Error> {
        let n = self.built.fetch_add(1, Ordering::SeqCst) + 1;
        std::thread::sleep(self.build_takes);
        if n == self.build_panics_on {
            panic!("{DELIBERATE}: build #{n}");
        }
        Ok(Fake(n))
    }

    async fn close(&self, client: &Fake) {
        tokio::time::sleep(self.close_takes).await;
        self.closed.fetch_add(1, Ordering::SeqCst);
        if self.close_panics {
            panic!("{DELIBERATE}: close of client #{}", client.0);
        }
    }

    fn abort(&self, client: &Fake) {
        self.aborted.fetch_add(1, Ordering::SeqCst);
        if self.abort_panics {
            panic!("{DELIBERATE}: abort of client #{}", client.0);
        }
    }

    fn release(&self, client: &Fake) {
        self.released.fetch_add(1, Ordering::SeqCst);
        if self.release_panics {
            panic!("{DELIBERATE}: release of client #{}", client.0);
        }
    }
}

fn manager(factory: Hostile, sharing: Sharing) -> Arc<Manager<Hostile>> {
    Arc::new(
        Manager::builder(factory)
            // Long: a caller that waits for it fails the hang guard instead.
            .close_timeout(Duration::from_secs(30))
            .sharing(sharing)
            .build()
            .unwrap(),
    )
}

/// Class 4: a factory whose `close` panics. On a runtime change on the same thread,
/// `client()` closes the stale client first: the panic must not come out of `client()`.
/// The caller gets the new client; the stale one is force-closed.
#[test]
fn panicking_close_during_a_replacement_does_not_panic_client() {
    let watch = PanicWatch::install("d1");
    let m = manager(
        Hostile {
            close_panics: true,
            ..Hostile::default()
        },
        Sharing::PerThread,
    );
    let rt1 = watch.current_rt();
    let stale = block_on_guarded(&rt1, m.client()).expect("first client");
    // rt1 stays alive (idle); this thread moves to rt2.
    let rt2 = watch.current_rt();
    let m2 = Arc::clone(&m);
    let got = block_on_guarded(&rt2, async move {
        tokio::spawn(async move { m2.client().await }).await
    });
    let got = match got {
        Ok(r) => r,
        Err(e) => panic!("client() panicked during the replacement: {e}"),
    };
    let new = got.expect("a new client despite the stale client's close panicking");
    assert_ne!(new.id(), stale.id());
    assert!(!stale.is_open(), "the stale client is closed");
    assert!(
        m.factory().aborted.load(Ordering::SeqCst) >= 1,
        "the stale client whose close panicked is force-closed (aborted)"
    );
    assert_eq!(m.factory().closed.load(Ordering::SeqCst), 1);
    drop((rt1, rt2));
    assert_eq!(m.stats().clients_live, 0, "{:?}", m.stats());
    assert!(watch.deliberate() >= 1);
    watch.assert_no_unexpected_panics();
}

/// Class 4: a factory whose `close` panics. `close_all` and `shutdown` report the panic
/// in `CloseReport::failed` rather than panicking, and the client still ends closed.
#[test]
fn panicking_close_is_reported_as_failed_by_close_all_and_shutdown() {
    let watch = PanicWatch::install("d2");
    let m = manager(
        Hostile {
            close_panics: true,
            ..Hostile::default()
        },
        Sharing::PerThread,
    );
    let rt = watch.current_rt();
    let m2 = Arc::clone(&m);
    let reports = block_on_guarded(&rt, async move {
        let first = m2.client().await.expect("client");
        let m3 = Arc::clone(&m2);
        let close_all = tokio::spawn(async move { m3.close_all().await }).await;
        assert!(!first.is_open());
        let second = m2.client().await.expect("client after close_all");
        assert_ne!(second.id(), first.id());
        let m3 = Arc::clone(&m2);
        let shutdown = tokio::spawn(async move { m3.shutdown(Duration::from_secs(1)).await }).await;
        assert!(!second.is_open());
        (close_all, shutdown)
    });
    let close_all = reports.0.expect("close_all panicked");
    let shutdown = reports.1.expect("shutdown panicked");
    for (what, report) in [("close_all", &close_all), ("shutdown", &shutdown)] {
        assert_eq!(
            report.failed.len(),
            1,
            "{what} reports the panicking close as failed: {report}"
        );
        let msg = report.failed[0].to_string();
        assert!(msg.contains("panicked"), "{what}: {msg}");
    }
    assert_eq!(m.stats().clients_live, 0, "{:?}", m.stats());
    assert_eq!(watch.deliberate(), 2);
    watch.assert_no_unexpected_panics();
}

/// Class 4: a factory whose `release` panics: dropping the client's runtime (the teardown
/// releases the client) must not panic out of the drop, and the client ends closed.
#[test]
fn panicking_release_does_not_escape_runtime_teardown() {
    let watch = PanicWatch::install("e1");
    let m = manager(
        Hostile {
            release_panics: true,
            ..Hostile::default()
        },
        Sharing::PerThread,
    );
    let rt = watch.current_rt();
    let client = block_on_guarded(&rt, m.client()).expect("client");
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(rt)));
    assert!(
        dropped.is_ok(),
        "dropping the runtime panicked (release panicked)"
    );
    assert_eq!(m.factory().released.load(Ordering::SeqCst), 1);
    assert!(!client.is_open());
    assert_eq!(
        m.stats().clients_live,
        0,
        "the client whose release panicked is still counted live: {:?}",
        m.stats()
    );
    // The manager stays usable on a new runtime.
    let rt = watch.current_rt();
    let again = block_on_guarded(&rt, m.client()).expect("a client on a new runtime");
    assert_ne!(again.id(), client.id());
    drop(rt);
    assert!(watch.deliberate() >= 1);
    watch.assert_no_unexpected_panics();
}

/// Class 4: a factory whose `abort` panics: a `shutdown` that must force a close (a
/// request in flight past the deadline) does not panic out, reports the close, and the
/// client ends closed; tearing its runtime down afterwards does not panic either.
#[test]
fn panicking_abort_does_not_escape_shutdown() {
    let watch = PanicWatch::install("e2");
    let m = manager(
        Hostile {
            abort_panics: true,
            ..Hostile::default()
        },
        Sharing::PerThread,
    );
    let rt = watch.current_rt();
    let m2 = Arc::clone(&m);
    let (client, report) = block_on_guarded(&rt, async move {
        let client = m2.client().await.expect("client");
        let guard = client.track().expect("an open client tracks a request");
        let m3 = Arc::clone(&m2);
        let report =
            tokio::spawn(async move { m3.shutdown(Duration::from_millis(200)).await }).await;
        drop(guard);
        (client, report)
    });
    let report = report.expect("shutdown panicked (abort panicked)");
    assert!(
        report.forced + report.failed.len() >= 1,
        "the close that had to be forced is reported: {report}"
    );
    assert!(!client.is_open());
    assert_eq!(
        m.stats().clients_live,
        0,
        "the client whose abort panicked is still counted live: {:?} ({report})",
        m.stats()
    );
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(rt)));
    assert!(dropped.is_ok(), "dropping the runtime panicked");
    assert!(watch.deliberate() >= 1);
    watch.assert_no_unexpected_panics();
}

/// Outcome of one `client()` call run as a task: its result, or the panic out of it.
type Called = Result<Result<rtlocal::ClientId, Error>, String>;

async fn collect(mut set: JoinSet<Result<rtlocal::ClientId, Error>>) -> Vec<Called> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        out.push(joined.map_err(|e| e.to_string()));
    }
    out
}

/// Checks what the callers of a slot whose build panicked got: nobody panicked, every
/// error says what happened, every success is the one client.
fn check_build_panic_outcomes(outcomes: &[Called]) {
    let panicked: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        panicked.is_empty(),
        "the factory's build panic came out of client(): {panicked:?}"
    );
    let errors: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().and_then(|r| r.as_ref().err()))
        .collect();
    assert!(
        !errors.is_empty(),
        "the caller whose build panicked gets an error"
    );
    for e in &errors {
        assert!(
            e.is_build() && e.to_string().contains("panic"),
            "a failed build's error says the factory panicked: {e}"
        );
    }
    let mut ids: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().and_then(|r| r.as_ref().ok()))
        .collect();
    ids.dedup();
    assert!(ids.len() <= 1, "waiters got one client: {ids:?}");
}

/// Class 5: per-runtime sharing on a `multi_thread` runtime, 64 tasks asking for the one
/// client at once; the first build blocks 300 ms and panics. The panicking caller gets an
/// error (no panic out of `client()`); the other callers learn of the failure at once (the
/// close timeout is 30 s, the hang guard 10 s); the next `client()` succeeds.
#[test]
fn build_panic_fails_its_waiters_at_once_and_does_not_stick_the_per_runtime_slot() {
    let watch = PanicWatch::install("h1");
    let m = manager(
        Hostile {
            build_panics_on: 1,
            build_takes: Duration::from_millis(300),
            ..Hostile::default()
        },
        Sharing::PerRuntime,
    );
    let rt = watch.multi_rt(4);
    let m2 = Arc::clone(&m);
    let outcomes = rt.block_on(async move {
        let mut set = JoinSet::new();
        for _ in 0..64 {
            let m = Arc::clone(&m2);
            set.spawn(async move { m.client().await.map(|c| c.id()) });
        }
        tokio::time::timeout(HOSTILE_GUARD, collect(set)).await
    });
    let outcomes = outcomes.unwrap_or_else(|_| {
        panic!(
            "callers of the slot were still waiting {HOSTILE_GUARD:?} after the build panicked \
             (close timeout 30 s)"
        )
    });
    check_build_panic_outcomes(&outcomes);
    let next = rt.block_on(async { tokio::time::timeout(HOSTILE_GUARD, m.client()).await });
    let next = next.expect("hang guard: the slot is stuck after the build panicked");
    next.expect("the next client() after the panicked build succeeds");
    drop(rt);
    assert_eq!(watch.deliberate(), 1);
    watch.assert_no_unexpected_panics();
}

/// Class 5: per-thread sharing, a runtime change: 16 tasks on the new runtime ask for
/// the thread's client; the first leads the replacement (closing the stale client takes
/// 100 ms, so the others queue as waiters) and its build panics. The waiters must learn
/// of it at once, not after the 30 s close timeout; the next `client()` succeeds.
#[test]
fn build_panic_during_a_replacement_releases_the_waiters_at_once() {
    let watch = PanicWatch::install("h2");
    let m = manager(
        Hostile {
            build_panics_on: 2,
            close_takes: Duration::from_millis(100),
            ..Hostile::default()
        },
        Sharing::PerThread,
    );
    let rt1 = watch.current_rt();
    let stale = block_on_guarded(&rt1, m.client()).expect("first client");
    // rt1 stays alive (idle); this thread moves to rt2.
    let rt2 = watch.current_rt();
    let m2 = Arc::clone(&m);
    let outcomes = rt2.block_on(async move {
        let mut set = JoinSet::new();
        for _ in 0..16 {
            let m = Arc::clone(&m2);
            set.spawn(async move { m.client().await.map(|c| c.id()) });
        }
        tokio::time::timeout(HOSTILE_GUARD, collect(set)).await
    });
    let outcomes = outcomes.unwrap_or_else(|_| {
        panic!(
            "the waiters of the replacement were still waiting {HOSTILE_GUARD:?} after its \
             build panicked (close timeout 30 s)"
        )
    });
    check_build_panic_outcomes(&outcomes);
    assert!(!stale.is_open());
    let next = rt2.block_on(async { tokio::time::timeout(HOSTILE_GUARD, m.client()).await });
    let next = next.expect("hang guard: the slot is stuck after the build panicked");
    next.expect("the next client() after the panicked build succeeds");
    drop((rt1, rt2));
    assert_eq!(watch.deliberate(), 1);
    watch.assert_no_unexpected_panics();
}

/// Class 4 and class 1: a `spawn_blocking` worker of a running `multi_thread` runtime
/// gets a client and exits; the factory's `close` panics. The exit's close must not end
/// as a panic in a background task that leaves the client half-closed: the client ends
/// closed (force-closed, `abort` called) and counted closed.
#[test]
fn exited_worker_whose_close_panics_still_has_its_client_closed() {
    let watch = PanicWatch::install("d3");
    let m = manager(
        Hostile {
            close_panics: true,
            ..Hostile::default()
        },
        Sharing::PerThread,
    );
    let rt = watch.multi_rt(2);
    let (tx_exit, rx_exit) = std::sync::mpsc::channel();
    let m2 = Arc::clone(&m);
    let client = rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            common::signal_thread_exit(tx_exit);
            Handle::current().block_on(m2.client())
        })
        .await
        .expect("worker")
        .expect("client")
    });
    assert!(
        common::thread_exited(&rx_exit, HOSTILE_GUARD),
        "the spawn_blocking worker did not exit"
    );
    // The runtime keeps running (its workers are driven): nothing waits on an idle one.
    let live = common::settle_within(HOSTILE_GUARD, 0, || m.stats().clients_live);
    assert_eq!(
        live,
        0,
        "the exited worker's client, whose close panicked, is still live: {:?} (open: {}, \
         aborted: {})",
        m.stats(),
        client.is_open(),
        m.factory().aborted.load(Ordering::SeqCst)
    );
    assert!(!client.is_open());
    assert!(
        m.factory().aborted.load(Ordering::SeqCst) >= 1,
        "a close that panicked is forced (abort called)"
    );
    drop(rt);
    watch.assert_no_unexpected_panics();
}
