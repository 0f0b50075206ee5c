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
    pub(crate) clients_created: Stat,
    pub(crate) clients_replaced: Stat,
    pub(crate) clients_closed: Stat,
    pub(crate) clients_not_closed_on_wire: Stat,
    pub(crate) forced_closes: Stat,
    pub(crate) runtime_releases: Stat,
    pub(crate) connections_opened: Stat,
    pub(crate) connections_open: Stat,
    pub(crate) requests_started: Stat,
    pub(crate) requests_in_flight: Stat,
    pub(crate) requests_failed: Stat,
    pub(crate) dns_lookups: Stat,
    pub(crate) connections_carried: Stat,
    /// The manager's name, once it is known (feature `metrics`: labels and request timing).
    #[cfg(feature = "metrics")]
    pub(crate) manager: std::sync::OnceLock<std::sync::Arc<str>>,
}

/// One statistic: its value and, with the feature `metrics`, the live metric it feeds
/// (registered once per manager, so an update is one more call, never a key lookup).
#[derive(Debug, Default)]
pub(crate) struct Stat {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    pub(super) live: std::sync::OnceLock<super::metrics::Live>,
}

impl Stat {
    #[inline]
    fn load(&self) -> u64 {
        // Acquire pairs with nothing in particular; it keeps a snapshot's reads in program
        // order so its ends-before-starts rule holds.
        self.value.load(Ordering::Acquire)
    }
}

impl Counters {
    #[inline]
    pub(crate) fn inc(c: &Stat) {
        c.value.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(live) = c.live.get() {
            live.inc();
        }
    }

    #[inline]
    pub(crate) fn dec(c: &Stat) {
        c.value.fetch_sub(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(live) = c.live.get() {
            live.dec();
        }
    }

    /// Reads every counter. Ends are read before starts (closed before created, in flight
    /// and failed before started), and every end is counted after its start, so a snapshot
    /// never shows an impossible state (more closed than created, a negative live count),
    /// even while counters move.
    pub(crate) fn snapshot(&self, thread_slots: u64, runtime_slots: u64) -> Stats {
        let get = Stat::load;
        let not_on_wire = get(&self.clients_not_closed_on_wire);
        let closed = get(&self.clients_closed);
        let forced_closes = get(&self.forced_closes);
        let replaced = get(&self.clients_replaced);
        let releases = get(&self.runtime_releases);
        let open = get(&self.connections_open);
        let failed = get(&self.requests_failed);
        let in_flight = get(&self.requests_in_flight);
        let created = get(&self.clients_created);
        let opened = get(&self.connections_opened);
        let started = get(&self.requests_started);
        let cb_run = crate::lifecycle::registry::counters::RUN.load(Ordering::Acquire);
        let cb_panicked = crate::lifecycle::registry::counters::PANICKED.load(Ordering::Acquire);
        Stats {
            clients_created: created,
            clients_replaced: replaced,
            clients_closed: closed,
            clients_live: created.saturating_sub(closed),
            clients_not_closed_on_wire: not_on_wire.min(closed),
            forced_closes,
            runtime_releases: releases,
            connections_opened: opened,
            connections_open: open.min(opened),
            requests_started: started,
            requests_in_flight: in_flight.min(started),
            requests_failed: failed.min(started),
            callbacks_registered: crate::lifecycle::registry::counters::REGISTERED
                .load(Ordering::Acquire),
            callbacks_run: cb_run,
            callbacks_panicked: cb_panicked,
            thread_slots,
            runtime_slots,
            dns_lookups: get(&self.dns_lookups),
            connections_carried: get(&self.connections_carried),
        }
    }
}

/// A snapshot of a manager's counters, from [`Manager::stats`](crate::Manager::stats) or
/// [`HttpClientManager::stats`](crate::HttpClientManager::stats).
///
/// Client, connection and request counters belong to the manager; callback counters are
/// process-wide (callbacks belong to runtimes, not managers).
///
/// ```
/// let manager = rtlocal::HttpClientManager::new();
/// for _ in 0..3 {
///     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
///     rt.block_on(manager.client()).unwrap();
/// } // each runtime dropped: its client released right then
/// let s = manager.stats();
/// assert_eq!((s.clients_created, s.clients_closed, s.clients_live), (3, 3, 0));
/// assert_eq!(s.runtime_releases, 3);
/// ```
///
/// # Metrics (feature `metrics`)
///
/// With the feature `metrics`, the same figures are recorded through the
/// [`metrics`](https://docs.rs/metrics/0.24) facade, to whatever recorder (exporter) the
/// application installs. Each manager registers its handles once, when it is built, with
/// the recorder installed then: install the recorder first. Every series carries the
/// attribute `rtlocal.manager`, the manager's name
/// ([`ManagerBuilder::name`](crate::ManagerBuilder::name), [`Builder::name`](crate::Builder::name);
/// `"http"` for an [`HttpClientManager`](crate::HttpClientManager) by default). Names follow
/// the OpenTelemetry HTTP-client semantic conventions where one exists:
///
/// | metric | kind | from |
/// |---|---|---|
/// | `http.client.request.duration` | histogram, seconds | each HTTP request, from the call to its response headers (or its error); attributes `http.request.method` (`_OTHER` for extension methods), `server.address`, `server.port`, and `http.response.status_code` or `error.type` (`timeout`, `connect`, `closed`, `request`, `cancelled` when the caller dropped it first, …) |
/// | `http.client.active_requests` | up-down gauge | `requests_in_flight` |
/// | `http.client.open_connections` | up-down gauge | each connection, with `http.connection.state` (`active` from a request's first byte written to the end of its response body, or once upgraded; `idle` otherwise), `server.address`, `server.port`; summed, `connections_open` |
/// | `http.client.connection.duration` | histogram, seconds | each connection's lifetime, recorded when it closes; `server.address`, `server.port` |
/// | `rtlocal.clients.created`, `.closed`, `.replaced`, `.forced_closes`, `.runtime_releases`, `.not_closed_on_wire` | counters | the fields of the same names |
/// | `rtlocal.clients.live` | up-down gauge | `clients_live` |
/// | `rtlocal.connections.opened`, `rtlocal.requests.started`, `rtlocal.requests.failed`, `rtlocal.dns.lookups` | counters | the fields of the same names |
/// | `rtlocal.thread_slots`, `rtlocal.runtime_slots` | gauges | `Stats::record_metrics` only |
/// | `rtlocal.callbacks.registered`, `.run`, `.panicked` | counters (process-wide) | `Stats::record_metrics` only |
///
/// Everything but the request histogram is updated live through handles (one more call
/// per update, no key lookup; a connection looks its handles up once, when it opens); the
/// request histogram's attributes differ per request, so each sample looks its series up
/// in the recorder. The request duration ends at the response
/// headers, as Go's `otelhttp` transport records it: a body may be
/// streamed, held or dropped half read for as long as the caller likes, and
/// `http.client.active_requests` counts the request until its body ends.
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
    /// Of the clients closed, how many could not be closed on the wire: their connections
    /// are tasks of their runtime, which was not running when the close ended (idle or
    /// blocked), so their sockets stay open until that runtime runs again or is dropped.
    /// Only factories whose clients need their runtime to close count here
    /// ([`ClientFactory::needs_runtime_to_close`](crate::ClientFactory::needs_runtime_to_close):
    /// `ReqwestFactory` (feature `reqwest`), rtlocal-redis's `RedisFactory`); always 0 for
    /// [`HttpClientManager`](crate::HttpClientManager), which shuts its sockets from
    /// outside.
    pub clients_not_closed_on_wire: u64,
    /// Closes that hit their deadline with requests still in flight and cut them.
    pub forced_closes: u64,
    /// Clients released because their runtime was torn down.
    pub runtime_releases: u64,
    /// TCP connections opened.
    pub connections_opened: u64,
    /// TCP connections open now: opened and not yet closed or shut down. A closed
    /// client's sockets are shut down on the wire at once; their file descriptors are
    /// released when the owning runtime drops the aborted connection tasks.
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
    /// Per-thread slots listed: one per live thread that has asked for a client, plus
    /// exited threads whose client is still being closed (an exited thread's slot is
    /// dropped once its client is closed).
    pub thread_slots: u64,
    /// Per-runtime slots ([`Sharing::PerRuntime`](crate::Sharing::PerRuntime)): one per
    /// live runtime the manager has served; removed when the runtime is torn down.
    pub runtime_slots: u64,
    /// Name resolutions made (cache misses when `dns_cache_ttl` is set).
    pub dns_lookups: u64,
    /// Idle connections a new client took over from the previous runtime of its thread
    /// (or manager) instead of opening new ones (see
    /// [`Builder::carry_idle_connections`](crate::Builder::carry_idle_connections)).
    pub connections_carried: u64,
}

#[cfg(feature = "metrics")]
impl Stats {
    /// Records this snapshot's values that have no live metric — the slot counts
    /// (`rtlocal.thread_slots`, `rtlocal.runtime_slots`, gauges) and the process-wide
    /// callback counts (`rtlocal.callbacks.registered`, `.run`, `.panicked`, counters) —
    /// with the installed `metrics` recorder, labelled `rtlocal.manager = manager`
    /// (feature `metrics`). Every other statistic is recorded live as it changes; call
    /// this periodically (or before an export) for these.
    ///
    /// ```
    /// let manager = rtlocal::HttpClientManager::new();
    /// manager.stats().record_metrics("http"); // the HTTP manager's default name
    /// ```
    pub fn record_metrics(&self, manager: &str) {
        super::metrics::record(self, manager);
    }
}

/// What [`HttpClientManager::close_all`](crate::HttpClientManager::close_all) or
/// [`HttpClientManager::shutdown`](crate::HttpClientManager::shutdown) did.
///
/// Its `Display` is a one-line summary:
/// `closed 4 client(s) in 1.02s: 1 forced (3 in-flight request(s) cut), 0 failed`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let manager = rtlocal::HttpClientManager::new();
/// manager.client().await.unwrap();
/// let report = manager.close_all().await;
/// assert_eq!((report.closed, report.forced, report.in_flight_cut), (1, 0, 0));
/// assert!(report.failed.is_empty());
/// assert!(report.to_string().starts_with("closed 1 client(s)"));
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CloseReport {
    /// Clients this call closed (gracefully or forced).
    pub closed: usize,
    /// Of those, how many hit the deadline with requests still in flight and were forced.
    pub forced: usize,
    /// Requests that were in flight when a forced close cut them.
    pub in_flight_cut: u64,
    /// Closes that failed (a panic inside the close); the others still ran. Each failed
    /// client's connections were force-closed after the failure.
    pub failed: Vec<crate::Error>,
    /// Slots that were mid-replacement and had to be waited for.
    pub waited_for_replacement: usize,
    /// Of the clients closed, how many could not be closed on the wire: their
    /// connections are tasks of a runtime that was not running when the close ended
    /// (idle, or blocked), so their sockets stay open until that runtime runs again or is
    /// dropped. Only factories whose clients need their runtime to close count here
    /// ([`ClientFactory::needs_runtime_to_close`](crate::ClientFactory::needs_runtime_to_close):
    /// `ReqwestFactory` (feature `reqwest`), rtlocal-redis's `RedisFactory`); always 0 for
    /// [`HttpClientManager`](crate::HttpClientManager), which shuts its sockets from
    /// outside. `Display` mentions it only when it is not 0.
    pub not_closed_on_wire: usize,
    /// The runtimes holding those clients' connections, each once: they close when that
    /// runtime runs again or is dropped. `Display` names them.
    pub not_closed_on_wire_runtimes: Vec<tokio::runtime::Id>,
    /// Idle connections that were parked between two runtimes for the next client
    /// (see [`Builder::carry_idle_connections`](crate::Builder::carry_idle_connections)),
    /// closed on the wire by this call.
    pub parked_closed: usize,
    /// How long the call took.
    pub elapsed: Duration,
}

impl fmt::Display for CloseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "closed {} client(s) in {:.2?}: {} forced ({} in-flight request(s) cut), {} failed",
            self.closed,
            self.elapsed,
            self.forced,
            self.in_flight_cut,
            self.failed.len()
        )?;
        if self.parked_closed > 0 {
            write!(f, ", {} parked connection(s) closed", self.parked_closed)?;
        }
        if self.not_closed_on_wire > 0 {
            write!(
                f,
                ", {} not closed on the wire (their connections are tasks of runtime(s) ",
                self.not_closed_on_wire
            )?;
            for (i, id) in self.not_closed_on_wire_runtimes.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{id}")?;
            }
            f.write_str(
                ", which did not run: they close when their runtime runs again or is dropped)",
            )?;
        }
        // A report is printed with `{}`: each failure with its whole chain.
        for e in &self.failed {
            write!(f, "; {e:#}")?;
        }
        Ok(())
    }
}
