//! The statistics as live metrics through the [`metrics`] facade (feature `metrics`).
//!
//! Each manager registers its handles once, when it is built, with the recorder installed
//! then; every counter update after that is one more call on a handle, never a key
//! lookup. Names follow the OpenTelemetry HTTP-client semantic conventions where one
//! exists, `rtlocal.*` otherwise; every series carries the manager's name as
//! `rtlocal.manager`. The crate docs list them ("Metrics").

use std::fmt;
use std::sync::Arc;

use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};

use super::stats::{Counters, Stat, Stats};

/// The attribute naming the manager on every series.
pub(crate) const MANAGER: &str = "rtlocal.manager";

pub(crate) const ACTIVE_REQUESTS: &str = "http.client.active_requests";
pub(crate) const CLIENTS_CREATED: &str = "rtlocal.clients.created";
pub(crate) const CLIENTS_CLOSED: &str = "rtlocal.clients.closed";
pub(crate) const CLIENTS_LIVE: &str = "rtlocal.clients.live";
pub(crate) const CLIENTS_REPLACED: &str = "rtlocal.clients.replaced";
pub(crate) const CLIENTS_NOT_CLOSED_ON_WIRE: &str = "rtlocal.clients.not_closed_on_wire";
pub(crate) const FORCED_CLOSES: &str = "rtlocal.clients.forced_closes";
pub(crate) const RUNTIME_RELEASES: &str = "rtlocal.clients.runtime_releases";
pub(crate) const CONNECTIONS_OPENED: &str = "rtlocal.connections.opened";
pub(crate) const REQUESTS_STARTED: &str = "rtlocal.requests.started";
pub(crate) const REQUESTS_FAILED: &str = "rtlocal.requests.failed";
pub(crate) const DNS_LOOKUPS: &str = "rtlocal.dns.lookups";
pub(crate) const CONNECTIONS_CARRIED: &str = "rtlocal.connections.carried";
pub(crate) const THREAD_SLOTS: &str = "rtlocal.thread_slots";
pub(crate) const RUNTIME_SLOTS: &str = "rtlocal.runtime_slots";
pub(crate) const CALLBACKS_REGISTERED: &str = "rtlocal.callbacks.registered";
pub(crate) const CALLBACKS_RUN: &str = "rtlocal.callbacks.run";
pub(crate) const CALLBACKS_PANICKED: &str = "rtlocal.callbacks.panicked";

/// The live metric a [`Stat`] feeds.
pub(crate) enum Live {
    /// A monotonic count.
    Count(Counter),
    /// An up-down count: what is open or in flight now.
    UpDown(Gauge),
    /// A count that also moves a gauge by `step`: clients created (+1 live) and closed
    /// (-1 live).
    CountAndGauge(Counter, Gauge, f64),
}

impl Live {
    #[inline]
    pub(crate) fn inc(&self) {
        match self {
            Live::Count(c) => c.increment(1),
            Live::UpDown(g) => g.increment(1.0),
            Live::CountAndGauge(c, g, step) => {
                c.increment(1);
                g.increment(*step);
            }
        }
    }

    #[inline]
    pub(crate) fn dec(&self) {
        match self {
            Live::UpDown(g) => g.decrement(1.0),
            // Counts only go up.
            Live::Count(_) | Live::CountAndGauge(..) => {}
        }
    }
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Live::Count(_) => "Count",
            Live::UpDown(_) => "UpDown",
            Live::CountAndGauge(..) => "CountAndGauge",
        })
    }
}

/// Describes every metric a manager feeds to the installed recorder (idempotent; cheap
/// next to building a manager). The HTTP layer's own series are described by the HTTP
/// manager when it is built (`HttpClientManager`), the layer that records them.
fn describe() {
    describe_gauge!(
        ACTIVE_REQUESTS,
        Unit::Count,
        "requests in flight: started, response body not yet finished or dropped"
    );
    describe_counter!(CLIENTS_CREATED, Unit::Count, "clients built");
    describe_counter!(CLIENTS_CLOSED, Unit::Count, "clients closed, by any path");
    describe_gauge!(
        CLIENTS_LIVE,
        Unit::Count,
        "clients built and not yet closed"
    );
    describe_counter!(
        CLIENTS_REPLACED,
        Unit::Count,
        "clients retired because their thread moved to another runtime"
    );
    describe_counter!(
        CLIENTS_NOT_CLOSED_ON_WIRE,
        Unit::Count,
        "clients closed whose connections were left open to a runtime that was not running"
    );
    describe_counter!(
        FORCED_CLOSES,
        Unit::Count,
        "closes that hit their deadline and cut what was in flight"
    );
    describe_counter!(
        RUNTIME_RELEASES,
        Unit::Count,
        "clients released because their runtime was torn down"
    );
    describe_counter!(CONNECTIONS_OPENED, Unit::Count, "TCP connections opened");
    describe_counter!(REQUESTS_STARTED, Unit::Count, "requests started");
    describe_counter!(
        REQUESTS_FAILED,
        Unit::Count,
        "requests that ended in an error"
    );
    describe_counter!(DNS_LOOKUPS, Unit::Count, "name resolutions made");
    describe_counter!(
        CONNECTIONS_CARRIED,
        Unit::Count,
        "idle connections a new client took over from the previous runtime of its scope"
    );
    describe_gauge!(
        THREAD_SLOTS,
        Unit::Count,
        "per-thread slots listed (recorded by Stats::record_metrics)"
    );
    describe_gauge!(
        RUNTIME_SLOTS,
        Unit::Count,
        "per-runtime slots (recorded by Stats::record_metrics)"
    );
    describe_counter!(
        CALLBACKS_REGISTERED,
        Unit::Count,
        "teardown callbacks registered, process-wide (recorded by Stats::record_metrics)"
    );
    describe_counter!(
        CALLBACKS_RUN,
        Unit::Count,
        "teardown callbacks run, process-wide (recorded by Stats::record_metrics)"
    );
    describe_counter!(
        CALLBACKS_PANICKED,
        Unit::Count,
        "teardown callbacks that panicked, process-wide (recorded by Stats::record_metrics)"
    );
}

/// Registers `counters`' live handles with the installed recorder, labelled with the
/// manager's `name`. Called once, when the manager is built; a second call changes
/// nothing.
pub(crate) fn register(counters: &Counters, name: &str) {
    if counters.manager.set(Arc::from(name)).is_err() {
        return;
    }
    describe();
    let count = |metric: &'static str| counter!(metric, MANAGER => name.to_owned());
    let up_down = |metric: &'static str| gauge!(metric, MANAGER => name.to_owned());
    let live = up_down(CLIENTS_LIVE);
    let set = |stat: &Stat, live: Live| {
        let _ = stat.live.set(live);
    };
    set(
        &counters.clients_created,
        Live::CountAndGauge(count(CLIENTS_CREATED), live.clone(), 1.0),
    );
    set(
        &counters.clients_closed,
        Live::CountAndGauge(count(CLIENTS_CLOSED), live, -1.0),
    );
    set(
        &counters.clients_replaced,
        Live::Count(count(CLIENTS_REPLACED)),
    );
    set(
        &counters.clients_not_closed_on_wire,
        Live::Count(count(CLIENTS_NOT_CLOSED_ON_WIRE)),
    );
    set(&counters.forced_closes, Live::Count(count(FORCED_CLOSES)));
    set(
        &counters.runtime_releases,
        Live::Count(count(RUNTIME_RELEASES)),
    );
    set(
        &counters.connections_opened,
        Live::Count(count(CONNECTIONS_OPENED)),
    );
    // `connections_open` feeds no series of its own: each connection moves
    // `http.client.open_connections` under its server and state (`http::metrics`).
    set(
        &counters.requests_started,
        Live::Count(count(REQUESTS_STARTED)),
    );
    set(
        &counters.requests_in_flight,
        Live::UpDown(up_down(ACTIVE_REQUESTS)),
    );
    set(
        &counters.requests_failed,
        Live::Count(count(REQUESTS_FAILED)),
    );
    set(&counters.dns_lookups, Live::Count(count(DNS_LOOKUPS)));
    set(
        &counters.connections_carried,
        Live::Count(count(CONNECTIONS_CARRIED)),
    );
}

/// Records what only a snapshot has (slot counts, the process-wide callback counts) with
/// the installed recorder, labelled with `manager`.
pub(crate) fn record(stats: &Stats, manager: &str) {
    let name = || manager.to_owned();
    gauge!(THREAD_SLOTS, MANAGER => name()).set(stats.thread_slots as f64);
    gauge!(RUNTIME_SLOTS, MANAGER => name()).set(stats.runtime_slots as f64);
    counter!(CALLBACKS_REGISTERED, MANAGER => name()).absolute(stats.callbacks_registered);
    counter!(CALLBACKS_RUN, MANAGER => name()).absolute(stats.callbacks_run);
    counter!(CALLBACKS_PANICKED, MANAGER => name()).absolute(stats.callbacks_panicked);
}
