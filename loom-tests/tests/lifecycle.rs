//! Model 5: the last client handle dropped racing a close, with a request in flight.
#![cfg(rtlocal_loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Notify};
use loom::thread;
use rtlocal::__loom::Lifecycle;
use rtlocal_loom_tests::model;

/// Mirrors the manager's client entry (`Entry` in `src/manager/managed.rs`): its `Drop`
/// closes, as does an explicit graceful close.
struct Inner {
    life: Lifecycle,
    drained: Notify,
    closes: Arc<AtomicUsize>,
}

impl Inner {
    fn shut(&self) {
        if self.life.finish_close().first {
            self.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// `Client::close_graceful` without a deadline: the drain must finish by itself.
    fn close_graceful(&self) {
        self.life.begin_close();
        while self.life.in_flight() != 0 {
            self.drained.wait();
        }
        let done = self.life.finish_close();
        let (first, cut) = (done.first, done.in_flight);
        // Without a deadline, a graceful close never cuts a request.
        assert_eq!(cut, 0, "graceful close cut a request in flight");
        if first {
            self.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn request(&self) -> bool {
        if !self.life.begin_request() {
            return false;
        }
        if self.life.end_request() {
            self.drained.notify();
        }
        true
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shut();
    }
}

#[test]
fn last_clone_dropped_racing_a_close() {
    model(|| {
        let closes = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(Inner {
            life: Lifecycle::new(),
            drained: Notify::new(),
            closes: closes.clone(),
        });
        let closer = inner.clone();
        let requester = inner.clone();
        drop(inner);
        let a = thread::spawn(move || {
            closer.close_graceful();
            drop(closer);
        });
        let b = thread::spawn(move || {
            let _ = requester.request();
            drop(requester);
        });
        a.join().unwrap();
        b.join().unwrap();
        // The close completed (no deadlock in the drain) and closed exactly once, whoever
        // dropped the last handle.
        assert_eq!(closes.load(Ordering::SeqCst), 1);
    });
}
