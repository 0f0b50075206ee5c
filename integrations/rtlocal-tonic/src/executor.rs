//! The executor every managed channel spawns its tasks with: each connection task's
//! future is kept where a close can drop it without the channel's runtime.
//!
//! Why: after a close has shut a connection's socket down, tonic still holds that
//! connection as ready until its task (on the channel's runtime) has seen the shutdown.
//! On a runtime that idled through the close, a kept clone's first call would be handed
//! to that connection and fail with a broken pipe (`Unknown`). Dropping the connection's
//! tasks at the close drops its request queue, so tonic sees it gone before the call and
//! asks the connector for a new one, which a closed channel refuses: `Unavailable`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::runtime::Handle;

use crate::connector::{BoxFuture, Sockets, TaskSlot};

/// Spawns on the channel's runtime. The first future tonic hands it is the channel's
/// buffer worker, spawned while the channel is built (`Channel::new`); every later one is
/// a connection's (hyper's HTTP/2 connection task and tonic's task around it) and is
/// adopted by the channel's [`Sockets`]. The buffer worker must live on: with it gone,
/// every call would fail with "buffer's worker closed", not with the close's reason.
#[derive(Clone)]
pub(crate) struct ChannelExecutor {
    runtime: Handle,
    sockets: Arc<Sockets>,
    /// Set once the channel is built: from then on, every future is a connection's.
    /// Relaxed: nothing is published through it, and the channel reaches other threads
    /// only through the manager's locks, which order this store before any later read.
    built: Arc<AtomicBool>,
}

impl ChannelExecutor {
    pub(crate) fn new(runtime: Handle, sockets: Arc<Sockets>) -> Self {
        ChannelExecutor {
            runtime,
            sockets,
            built: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The channel is built (its buffer worker spawned): adopt every future from here on.
    pub(crate) fn channel_built(&self) {
        self.built.store(true, Ordering::Relaxed);
    }
}

impl hyper::rt::Executor<BoxFuture> for ChannelExecutor {
    fn execute(&self, future: BoxFuture) {
        if !self.built.load(Ordering::Relaxed) {
            drop(self.runtime.spawn(future));
            return;
        }
        if let Some((id, slot)) = self.sockets.adopt_task(future) {
            drop(self.runtime.spawn(Adopted {
                id,
                slot,
                sockets: Arc::clone(&self.sockets),
            }));
        }
    }
}

/// A connection task: polls the future in its slot until it ends or a close takes it.
struct Adopted {
    id: u64,
    slot: TaskSlot,
    sockets: Arc<Sockets>,
}

impl Future for Adopted {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = self.slot.lock();
        let Some(future) = slot.as_mut() else {
            // Dropped by a close.
            return Poll::Ready(());
        };
        if future.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let finished = slot.take();
        drop(slot);
        drop(finished);
        Poll::Ready(())
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        // Finished, or dropped with its runtime: the close has nothing left to drop.
        let future = self.slot.lock().take();
        drop(future);
        self.sockets.forget_task(self.id);
    }
}
