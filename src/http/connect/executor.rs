//! [`TrackingExecutor`]: the executor hyper-util spawns every connection task through,
//! and the one place that knows a future runs as hyper-util's background work.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

use crate::http::connect::tracker::ConnTracker;

/// The executor given to hyper-util: spawns on the client's own runtime, tracked.
#[derive(Clone)]
pub(crate) struct TrackingExecutor {
    pub(crate) handle: Handle,
    pub(crate) tracker: Arc<ConnTracker>,
}

impl<F> hyper::rt::Executor<F> for TrackingExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.tracker.spawn(&self.handle, Background(Box::pin(fut)));
    }
}

thread_local! {
    /// Set while this thread polls a future hyper-util handed to the executor.
    static IN_BACKGROUND: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller is being polled as hyper-util background work (a connection task,
/// or a connect that hyper-util moved out of a request a pooled connection served)
/// rather than as part of a request.
#[inline]
pub(super) fn in_background() -> bool {
    // A thread being torn down has no background work running on it.
    IN_BACKGROUND.try_with(Cell::get).unwrap_or(false)
}

/// A future spawned by hyper-util; marks the thread while it is polled. Boxed to poll
/// it without `unsafe` pin projection (one allocation per connection task).
struct Background<F>(Pin<Box<F>>);

impl<F: Future> Future for Background<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = IN_BACKGROUND.try_with(|b| b.set(self.0));
            }
        }
        let _restore = Restore(IN_BACKGROUND.try_with(|b| b.replace(true)).unwrap_or(false));
        self.get_mut().0.as_mut().poll(cx)
    }
}
