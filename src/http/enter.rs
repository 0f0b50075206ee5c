//! [`poll_in`]: polls a hyper-util future inside its client's runtime, from anywhere.
//!
//! hyper-util's request future opens connections (`TcpStream::connect`, DNS on
//! `spawn_blocking`) and starts the pool's idle timer from inside its own `poll`, and
//! each of those panics when no runtime is current, or binds the socket to whichever
//! runtime *is* current. Entering the client's runtime around each poll keeps every
//! socket and timer on the runtime the client belongs to, whoever polls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

use crate::error::{Error, Kind};

/// Polls `fut` inside `handle`'s runtime context: directly when that runtime is current,
/// otherwise after entering it. `Err` when no runtime can be entered (the thread is being
/// torn down).
///
/// A function over a borrowed handle rather than a wrapper future: the request's state
/// already holds the client (and so its handle), and keeping a second `Handle` in every
/// request future would only make it bigger.
#[inline]
pub(crate) fn poll_in<F: Future + Unpin>(
    handle: &Handle,
    fut: &mut F,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Error>> {
    match Handle::try_current() {
        Ok(current) if current.id() == handle.id() => Pin::new(fut).poll(cx).map(Ok),
        Err(e) if e.is_thread_local_destroyed() => Poll::Ready(Err(Error::with_detail(
            Kind::NoRuntime,
            polled_in_teardown(),
        ))),
        _ => {
            let _entered = handle.enter();
            Pin::new(fut).poll(cx).map(Ok)
        }
    }
}

#[cold]
fn polled_in_teardown() -> &'static str {
    "the request was polled while its thread was being torn down (from a thread-local \
     destructor), where no runtime can be entered: finish requests before the thread exits"
}
