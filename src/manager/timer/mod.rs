//! All timing over tokio, in one place; every wait here works from any thread and any
//! executor, inside or outside a runtime.
//!
//! * [`TokioTimer`] (here): the lifecycle core's [`Timer`] over tokio: deadlines as
//!   `std::time::Instant`, waits as sleeps on the closer's runtime (see `closer`).
//! * [`queue`]: the process-wide queue of timed jobs, run by one task on the closer
//!   ([`schedule`], [`cancel`], [`TimerKey`]).
//! * [`deadline`]: [`Deadline`], a point in time a future can wait for from any
//!   executor: the current runtime's tokio timer when polled on one, the queue when
//!   polled outside any runtime.
//!
//! The HTTP layer times its requests, bodies, connect attempts and idle sockets with
//! these; nothing here knows about HTTP.

mod deadline;
mod queue;

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};

use super::closer;
use crate::lifecycle::Timer;

pub(crate) use deadline::Deadline;
pub(crate) use queue::{TimerKey, cancel, schedule};

/// `d` from now; `None` (no deadline) when `d` is too large to add to now.
pub(crate) fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// The lifecycle core's [`Timer`] over tokio: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioTimer;

impl Timer for TokioTimer {
    /// `None`: no deadline (a duration too large to add to now).
    type Deadline = Option<Instant>;

    fn after(&self, d: Duration) -> Option<Instant> {
        after(d)
    }

    fn remaining(&self, deadline: Option<Instant>) -> Duration {
        deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }

    async fn until<F>(&self, deadline: Option<Instant>, fut: F) -> Option<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let Some(deadline) = deadline else {
            return Some(fut.await);
        };
        let Some(closer) = closer::handle() else {
            // No timer to be had: never wait unbounded, so the deadline counts as passed
            // unless the future is ready now.
            return futures_util::FutureExt::now_or_never(fut);
        };
        let sleep = {
            let _enter = closer.enter();
            tokio::time::sleep_until(deadline.into())
        };
        match select(pin!(fut), pin!(sleep)).await {
            Either::Left((out, _)) => Some(out),
            Either::Right(((), _)) => None,
        }
    }
}
