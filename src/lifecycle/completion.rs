//! [`Completion`]: a one-shot result many callers wait on — how the waiters of a
//! replacement learn its outcome the moment its leader finishes, fails or gives up.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, Mutex};

/// A one-shot, multi-waiter result: the leader completes it once, every waiter gets
/// a clone.
#[doc(hidden)]
pub struct Completion<T> {
    state: Mutex<CompletionState<T>>,
}

enum CompletionState<T> {
    Pending(Vec<Waker>),
    Done(T),
}

impl<T: Clone> Completion<T> {
    pub(crate) fn new() -> Self {
        Completion {
            state: Mutex::new(CompletionState::Pending(Vec::new())),
        }
    }

    /// Sets the value (the first one wins) and wakes every waiter.
    pub fn complete(&self, value: T) {
        let wakers = {
            let mut st = self.state.lock();
            match &mut *st {
                CompletionState::Done(_) => return,
                CompletionState::Pending(w) => {
                    let wakers = std::mem::take(w);
                    *st = CompletionState::Done(value);
                    wakers
                }
            }
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Waits for the value.
    pub fn wait(this: Arc<Self>) -> Wait<T> {
        Wait { completion: this }
    }
}

impl<T> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = matches!(&*self.state.lock(), CompletionState::Done(_));
        f.debug_struct("Completion").field("done", &done).finish()
    }
}

/// Future returned by [`Completion::wait`].
#[doc(hidden)]
#[must_use = "futures do nothing unless polled"]
pub struct Wait<T> {
    completion: Arc<Completion<T>>,
}

impl<T: Clone> Future for Wait<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut st = self.completion.state.lock();
        match &mut *st {
            CompletionState::Done(v) => Poll::Ready(v.clone()),
            CompletionState::Pending(wakers) => {
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<T> fmt::Debug for Wait<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use futures_util::FutureExt;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn first_value_wins_and_every_waiter_is_woken_once() {
        let c = Arc::new(Completion::new());
        assert_eq!(format!("{c:?}"), "Completion { done: false }");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut a = Completion::wait(Arc::clone(&c));
        let mut b = Completion::wait(Arc::clone(&c));
        assert_eq!(format!("{a:?}"), "Wait { .. }");
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        // Polled again with the same waker: registered once.
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        assert!(b.poll_unpin(&mut cx).is_pending());
        c.complete(1);
        c.complete(2);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one waker, woken once");
        assert_eq!(format!("{c:?}"), "Completion { done: true }");
        assert_eq!(a.now_or_never(), Some(1));
        assert_eq!(b.now_or_never(), Some(1));
        assert_eq!(Completion::wait(c).now_or_never(), Some(1));
    }
}
