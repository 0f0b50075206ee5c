//! [`Deadline`]: a point in time a future can wait for, from any executor.
//!
//! A tokio `Sleep` panics when it is created outside a runtime ("there is no reactor
//! running") and when it is polled after its runtime's timer has shut down. A response
//! body or request future can outlive the runtime it was made on, or be polled by
//! another executor, so a bare `Sleep` in them is a panic waiting for a user. A
//! `Deadline` uses tokio's timer only while polled on the runtime that made its `Sleep`
//! (the cheap, sharded path), and otherwise the process-wide timer thread ([`queue`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::runtime::{self, Handle};

use super::queue::{self, TimerKey};

/// Waits until `at`, from anywhere.
pub(crate) struct Deadline {
    at: Instant,
    wait: Wait,
}

enum Wait {
    None,
    /// A tokio timer on the runtime with this id.
    Tokio(runtime::Id, Pin<Box<tokio::time::Sleep>>),
    /// A job on the timer thread.
    Thread(TimerKey, Arc<Alarm>),
    /// The timer thread could not be started: the deadline is checked on each poll only.
    Unarmed,
}

#[derive(Default)]
struct Alarm {
    rang: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Deadline {
    pub(crate) fn new(at: Instant) -> Self {
        Deadline {
            at,
            wait: Wait::None,
        }
    }

    /// Ready once the deadline has passed; otherwise arranges for `cx` to be woken then.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            self.wait = Wait::None;
            return Poll::Ready(());
        }
        let here = Handle::try_current().ok().map(|h| h.id());
        match (&mut self.wait, here) {
            (Wait::Tokio(id, sleep), Some(here)) if *id == here => {
                return sleep.as_mut().poll(cx);
            }
            (Wait::Thread(_, alarm), _) => {
                // Register before reading `rang`, so a ring in between is not missed.
                *alarm.waker.lock() = Some(cx.waker().clone());
                // Acquire: pairs with the release store of the timer job.
                return if alarm.rang.load(Ordering::Acquire) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            (Wait::Unarmed, _) => {
                // Nothing will wake us at the deadline; poll again soon instead.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            _ => {}
        }
        // First wait, or polled away from the runtime that made the tokio timer: on the
        // current runtime use its timer, elsewhere the timer thread.
        self.wait = match here {
            Some(id) => Wait::Tokio(
                id,
                Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
                    self.at,
                ))),
            ),
            None => self.arm_thread(),
        };
        self.poll_elapsed(cx)
    }

    fn arm_thread(&self) -> Wait {
        let alarm = Arc::new(Alarm::default());
        let ring = Arc::clone(&alarm);
        let job = move || {
            // Release: the poll that sees `rang` sees everything before it.
            ring.rang.store(true, Ordering::Release);
            // Woken outside the lock: a waker may run arbitrary executor code.
            let waker = ring.waker.lock().take();
            if let Some(w) = waker {
                w.wake();
            }
        };
        match queue::schedule(self.at, job) {
            Some(key) => Wait::Thread(key, alarm),
            None => Wait::Unarmed,
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Wait::Thread(key, _) = &self.wait {
            queue::cancel(key);
        }
    }
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline").field("at", &self.at).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn elapses_without_any_runtime() {
        let mut d = Deadline::new(Instant::now() + Duration::from_millis(20));
        futures_executor::block_on(std::future::poll_fn(|cx| d.poll_elapsed(cx)));
    }

    #[test]
    fn survives_its_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut d = Deadline::new(Instant::now() + Duration::from_millis(50));
        // Armed on the runtime's timer, then the runtime goes away.
        rt.block_on(async {
            let pending = std::future::poll_fn(|cx| Poll::Ready(d.poll_elapsed(cx))).await;
            assert!(pending.is_pending());
        });
        drop(rt);
        futures_executor::block_on(std::future::poll_fn(|cx| d.poll_elapsed(cx)));
    }
}
