//! What the lifecycle core needs from the side that runs it: a client it can close, a
//! binding it can compare, time, and a way to build and close clients.
//!
//! The tokio adapter (`manager/`) implements these over tokio handles and timers; the loom
//! models implement them over fakes. The orchestration in this folder is written once,
//! against these traits, and both run it.

use std::future::Future;
use std::time::Duration;

use crate::error::Error;

/// What a slot needs from a client.
#[doc(hidden)]
pub trait SlotClient: Clone + Send + Sync + 'static {
    /// `false` once the client is closing or closed.
    fn is_open(&self) -> bool;
    /// Stops it taking new requests (it is on its way out). Idempotent.
    fn begin_close(&self);
    /// Closes at once, synchronously, cutting what is in flight. Idempotent; returns
    /// whether this call closed it.
    fn force_close(&self) -> bool;
    /// Requests in flight now (what a forced close would cut).
    fn in_flight(&self) -> u64 {
        0
    }
}

/// What a slot binds a client to (the runtime, its liveness token, the owning thread).
#[doc(hidden)]
pub trait BindingKey: Clone + Send + Sync + 'static {
    /// The cheap description of "here and now" the fast path compares against.
    type Probe;
    /// The fast-path check: same binding as `probe` and still live.
    fn matches(&self, probe: &Self::Probe) -> bool;
    /// The same binding (both describe one runtime on one thread) and `self` is live.
    fn same_binding(&self, other: &Self) -> bool;
}

/// Deadlines and bounded waits.
#[doc(hidden)]
pub trait Timer: Send + Sync {
    /// A point in time.
    type Deadline: Copy + Send + Sync;

    /// `d` from now; a `d` too large to represent means "no deadline".
    fn after(&self, d: Duration) -> Self::Deadline;

    /// What is left until `deadline` (zero once it passed).
    fn remaining(&self, deadline: Self::Deadline) -> Duration;

    /// `fut`'s output, or `None` when `deadline` passed first.
    fn until<F>(
        &self,
        deadline: Self::Deadline,
        fut: F,
    ) -> impl Future<Output = Option<F::Output>> + Send
    where
        F: Future + Send,
        F::Output: Send;
}

/// How one close ended.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct CloseOutcome {
    /// This call performed the close (it was not already closed).
    pub closed_now: bool,
    /// The deadline passed (requests still in flight, or the factory's close overran).
    pub forced: bool,
    /// How many requests were cut.
    pub cut: u64,
    /// This call closed it, but its connections stay open until its runtime runs again
    /// (a client that only its runtime can close, on a runtime that is not running).
    pub not_closed_on_wire: bool,
}

/// Builds and closes clients for the core's orchestration, and hears what it did.
#[doc(hidden)]
pub trait Driver: Send + Sync {
    /// The client type.
    type Client: SlotClient;
    /// What a client is bound to.
    type Key: BindingKey;
    /// The clock.
    type Timer: Timer;

    /// The clock the core bounds its waits with.
    fn timer(&self) -> &Self::Timer;

    /// How long a stale client's close may take before it is forced.
    fn close_timeout(&self) -> Duration;

    /// How long a build may take before every caller waiting on it fails with a timeout.
    fn build_timeout(&self) -> Duration;

    /// Builds a client for `key`. Runs outside every lock; may be cancelled (dropped) at
    /// any await point, and may panic: the core isolates it.
    fn build(&self, key: &Self::Key) -> impl Future<Output = Result<Self::Client, Error>> + Send;

    /// Closes `client` gracefully (drain, then the factory's close), forcing it when
    /// `budget` runs out. May panic: the core isolates it.
    fn close(
        &self,
        client: &Self::Client,
        budget: Duration,
    ) -> impl Future<Output = CloseOutcome> + Send;

    /// A stale client was closed during a replacement (for counters and logs).
    fn replaced(&self, stale: &Self::Client, outcome: CloseOutcome) {
        let _ = (stale, outcome);
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Plain;

    impl SlotClient for Plain {
        fn is_open(&self) -> bool {
            true
        }

        fn begin_close(&self) {}

        fn force_close(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_client_that_counts_nothing_reports_nothing_in_flight() {
        assert_eq!(Plain.in_flight(), 0);
    }
}
