//! The generic `Manager` over a `ClientFactory` of our own: the lifecycle is the same one
//! `HttpClientManager` has — build once per thread and runtime, release at runtime
//! teardown, close (bounded, forced and reported past the deadline), build errors handed
//! to every caller.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{block_on_guarded, current_thread_rt};
use rtlocal::{ClientFactory, Error, Manager};
use tokio::runtime::Handle;

/// Counts every call the manager makes; `close` takes `close_takes`.
#[derive(Default)]
struct Calls {
    built: AtomicUsize,
    closed: AtomicUsize,
    aborted: AtomicUsize,
    released: AtomicUsize,
}

struct Counting {
    calls: Arc<Calls>,
    close_takes: Duration,
    fail_build: bool,
}

/// The client: remembers the runtime it was built for.
struct Fake {
    runtime: tokio::runtime::Id,
}

impl ClientFactory for Counting {
    type Client = Fake;

    async fn build(&self, runtime: &Handle) -> Result<Fake, Error> {
        self.calls.built.fetch_add(1, Ordering::SeqCst);
        if self.fail_build {
            return Err(Error::build(std::io::Error::other(
                "no credentials configured",
            )));
        }
        // Built on the runtime it is for.
        assert_eq!(Handle::current().id(), runtime.id());
        Ok(Fake {
            runtime: runtime.id(),
        })
    }

    async fn close(&self, _client: &Fake) {
        tokio::time::sleep(self.close_takes).await;
        self.calls.closed.fetch_add(1, Ordering::SeqCst);
    }

    fn abort(&self, _client: &Fake) {
        self.calls.aborted.fetch_add(1, Ordering::SeqCst);
    }

    fn release(&self, _client: &Fake) {
        self.calls.released.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting(close_takes: Duration) -> (Arc<Calls>, Counting) {
    let calls = Arc::new(Calls::default());
    let factory = Counting {
        calls: Arc::clone(&calls),
        close_takes,
        fail_build: false,
    };
    (calls, factory)
}

#[test]
fn one_client_per_runtime_change_released_at_teardown_closed_by_close_all() {
    let (calls, factory) = counting(Duration::ZERO);
    let m = Manager::new(factory);
    let rt1 = current_thread_rt();
    let first = block_on_guarded(&rt1, async {
        let a = m.client().await.unwrap();
        let b = m.client().await.unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(
            a.runtime,
            Handle::current().id(),
            "derefs to the factory's client"
        );
        a
    });
    assert_eq!(calls.built.load(Ordering::SeqCst), 1);
    drop(rt1);
    assert!(!first.is_open());
    assert_eq!(
        calls.released.load(Ordering::SeqCst),
        1,
        "teardown releases"
    );

    let rt2 = current_thread_rt();
    let report = block_on_guarded(&rt2, async {
        let c = m.client().await.unwrap();
        assert_ne!(c.id(), first.id());
        m.close_all().await
    });
    assert_eq!((report.closed, report.forced), (1, 0), "{report}");
    assert_eq!(calls.built.load(Ordering::SeqCst), 2);
    assert_eq!(calls.closed.load(Ordering::SeqCst), 1, "graceful close ran");
    assert_eq!(calls.aborted.load(Ordering::SeqCst), 0);
    let s = m.stats();
    assert_eq!(
        (s.clients_created, s.clients_closed, s.clients_live),
        (2, 2, 0),
        "{s:?}"
    );
}

#[test]
fn a_close_that_overruns_the_deadline_is_aborted_and_reported_forced() {
    let (calls, factory) = counting(Duration::from_secs(30));
    let m = Manager::builder(factory)
        .close_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let rt = current_thread_rt();
    let report = block_on_guarded(&rt, async {
        m.client().await.unwrap();
        m.close_all().await
    });
    assert_eq!((report.closed, report.forced), (1, 1), "{report}");
    assert_eq!(
        calls.closed.load(Ordering::SeqCst),
        0,
        "the slow close was cut"
    );
    assert_eq!(calls.aborted.load(Ordering::SeqCst), 1);
    assert_eq!(m.stats().forced_closes, 1);
    assert_eq!(m.stats().clients_live, 0);
}

#[test]
fn a_replacement_closes_the_stale_client_before_building_the_new_one() {
    let (calls, factory) = counting(Duration::from_millis(20));
    let m = Manager::new(factory);
    let (rt1, rt2) = (current_thread_rt(), current_thread_rt());
    let a = block_on_guarded(&rt1, m.client()).unwrap();
    // Same thread, another live runtime: the stale client is closed first.
    let b = block_on_guarded(&rt2, m.client()).unwrap();
    assert_ne!(a.id(), b.id());
    assert!(!a.is_open() && b.is_open());
    assert_eq!(calls.closed.load(Ordering::SeqCst), 1);
    assert_eq!(calls.built.load(Ordering::SeqCst), 2);
    assert_eq!(m.stats().clients_replaced, 1);
}

#[test]
fn a_build_error_reaches_every_caller_and_names_the_cause() {
    let calls = Arc::new(Calls::default());
    let m = Manager::new(Counting {
        calls: Arc::clone(&calls),
        close_takes: Duration::ZERO,
        fail_build: true,
    });
    let rt = current_thread_rt();
    let errors = block_on_guarded(&rt, async {
        let mut errors = Vec::new();
        for _ in 0..4 {
            errors.push(m.client().await.unwrap_err());
        }
        errors
    });
    for e in errors {
        assert!(e.is_build(), "{e}");
        assert!(
            format!("{e:#}").contains("no credentials configured"),
            "{e:#}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
    assert_eq!(m.stats().clients_created, 0);
    // A failed build leaves nothing behind: each call tries again.
    assert_eq!(calls.built.load(Ordering::SeqCst), 4);
}

#[test]
fn outside_a_runtime_the_generic_manager_says_so() {
    let (_, factory) = counting(Duration::ZERO);
    let m = Manager::new(factory);
    let err = block_on_without_runtime(m.client()).unwrap_err();
    assert!(err.is_no_runtime(), "{err}");
}

/// Polls a future to completion without a tokio runtime.
fn block_on_without_runtime<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
