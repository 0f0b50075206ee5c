//! Counters, the [`Stats`] snapshot and the [`CloseReport`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A manager's live counters, shared with every client it builds.
///
/// All updates are `Relaxed`: each counter is independent and only ever read as a
/// statistic, never to order other memory.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) clients_created: AtomicU64,
    pub(crate) clients_replaced: AtomicU64,
    pub(crate) clients_closed: AtomicU64,
    pub(crate) forced_closes: AtomicU64,
    pub(crate) runtime_releases: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) requests_started: AtomicU64,
    pub(crate) requests_in_flight: AtomicU64,
    pub(crate) requests_failed: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let created = get(&self.clients_created);
        let closed = get(&self.clients_closed);
        Stats {
            clients_created: created,
            clients_replaced: get(&self.clients_replaced),
            clients_closed: closed,
            clients_live: created.saturating_sub(closed),
            forced_closes: get(&self.forced_closes),
            runtime_releases: get(&self.runtime_releases),
            connections_opened: get(&self.connections_opened),
            connections_open: get(&self.connections_open),
            requests_started: get(&self.requests_started),
            requests_in_flight: get(&self.requests_in_flight),
            requests_failed: get(&self.requests_failed),
            callbacks_registered: crate::runtime::counters::REGISTERED.load(Ordering::Relaxed),
            callbacks_run: crate::runtime::counters::RUN.load(Ordering::Relaxed),
            callbacks_panicked: crate::runtime::counters::PANICKED.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a manager's counters, from [`HttpClientManager::stats`](crate::HttpClientManager::stats).
///
/// Client, connection and request counters belong to the manager; callback counters are
/// process-wide (callbacks belong to runtimes, not managers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Clients built.
    pub clients_created: u64,
    /// Clients retired because their thread moved to another runtime.
    pub clients_replaced: u64,
    /// Clients closed, by any path (replacement, `close_all`, runtime teardown, drop).
    pub clients_closed: u64,
    /// Clients built and not yet closed.
    pub clients_live: u64,
    /// Closes that hit their deadline with requests still in flight and cut them.
    pub forced_closes: u64,
    /// Clients released because their runtime was torn down.
    pub runtime_releases: u64,
    /// TCP connections opened.
    pub connections_opened: u64,
    /// TCP connections open now.
    pub connections_open: u64,
    /// Requests started.
    pub requests_started: u64,
    /// Requests whose response body has not been finished or dropped yet.
    pub requests_in_flight: u64,
    /// Requests that ended in an error.
    pub requests_failed: u64,
    /// Teardown callbacks registered, process-wide (including the manager's own).
    pub callbacks_registered: u64,
    /// Teardown callbacks run, process-wide.
    pub callbacks_run: u64,
    /// Teardown callbacks that panicked, process-wide.
    pub callbacks_panicked: u64,
}

/// What [`HttpClientManager::close_all`](crate::HttpClientManager::close_all) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseReport {
    /// Clients this call closed.
    pub closed: usize,
    /// Of those, how many hit the deadline with requests still in flight.
    pub forced: usize,
    /// Requests that were in flight when a forced close cut them.
    pub in_flight_cut: u64,
    /// Slots skipped because a replacement was under way (its leader closes the stale
    /// client and publishes a new, live one).
    pub busy: usize,
    /// How long the call took.
    pub elapsed: Duration,
}

impl fmt::Display for CloseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "closed {} client(s) in {:?}: {} forced, {} in-flight request(s) cut, {} busy slot(s)",
            self.closed, self.elapsed, self.forced, self.in_flight_cut, self.busy
        )
    }
}
