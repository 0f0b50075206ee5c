//! [`InRuntime`]: polls a hyper-util future inside its client's runtime, from anywhere.
//!
//! hyper-util's request future opens connections (`TcpStream::connect`, DNS on
//! `spawn_blocking`) and starts the pool's idle timer from inside its own `poll`, and
//! each of those panics when no runtime is current, or binds the socket to whichever
//! runtime *is* current. Entering the client's runtime around each poll keeps every
//! socket and timer on the runtime the client belongs to, whoever polls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::{self, Handle};

use crate::error::{Error, Kind};

/// `fut`, each poll made inside `handle`'s runtime context.
pub(crate) struct InRuntime<F> {
    handle: Handle,
    id: runtime::Id,
    fut: F,
}

impl<F: Future + Unpin> InRuntime<F> {
    pub(crate) fn new(handle: &Handle, fut: F) -> Self {
        InRuntime {
            handle: handle.clone(),
            id: handle.id(),
            fut,
        }
    }
}

impl<F: Future + Unpin> Future for InRuntime<F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Handle::try_current() {
            Ok(current) if current.id() == this.id => Pin::new(&mut this.fut).poll(cx).map(Ok),
            Err(e) if e.is_thread_local_destroyed() => Poll::Ready(Err(Error::with_detail(
                Kind::NoRuntime,
                polled_in_teardown(),
            ))),
            _ => {
                let _entered = this.handle.enter();
                Pin::new(&mut this.fut).poll(cx).map(Ok)
            }
        }
    }
}

#[cold]
fn polled_in_teardown() -> &'static str {
    "the request was polled while its thread was being torn down (from a thread-local \
     destructor), where no runtime can be entered: finish requests before the thread exits"
}
