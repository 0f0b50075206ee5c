//! Carrying idle HTTP/1 connections across runtime generations: [`Parked`] (a
//! connection between two runtimes), [`Lots`] (a manager's [`ParkLot`]s, one per sharing
//! scope) and the thread-exit guard that closes a thread's lot.
//!
//! A connection is parked by its runtime's teardown (see `io.rs`) into the lot of the
//! scope its client was built for — the thread, in per-thread mode; the manager, in
//! per-runtime mode — and taken by the next client built for that scope, which
//! registers it with its own runtime. While parked it stays counted open (stats, the
//! open-connection series), and it is closed on the wire by `close_all`, `shutdown`,
//! its idle timeout and (per-thread mode) its thread's exit. Who may park, take or close
//! when is decided by the lifecycle core's [`ParkLot`], proven with loom.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::http::connect::stream::Conn;
use crate::http::pool::{Key, idle_expired};
use crate::lifecycle::ParkLot;
use crate::manager::timer;

/// A cleanly idle connection between two runtimes: off every reactor, in no client's
/// tracker, still counted open.
pub(crate) struct Parked {
    /// Its origin, as the requests it served named it (the pool's key).
    pub(crate) key: Key,
    /// `host:port`, what the connection limits count.
    pub(crate) host_port: Arc<str>,
    pub(crate) conn: Conn,
    pub(crate) idle_since: Instant,
}

impl Parked {
    /// `conn`: its socket parked ([`TrackedTcp::park`]).
    ///
    /// [`TrackedTcp::park`]: crate::http::connect::socket::TrackedTcp::park
    pub(super) fn new(to: &CarryTo, conn: Conn, idle_since: Instant) -> Self {
        Parked {
            key: to.key.clone(),
            host_port: Arc::clone(&to.host_port),
            conn,
            idle_since,
        }
    }

    pub(crate) fn expired(&self, timeout: Option<Duration>, now: Instant) -> bool {
        idle_expired(self.idle_since, timeout, now)
    }

    /// Shuts the connection down on the wire and drops it (uncounting it).
    pub(crate) fn close(self) {
        self.conn.tcp().shut();
        drop(self.conn);
    }
}

/// Where a connection of a client goes when its runtime is torn down while it idles.
#[derive(Clone)]
pub(crate) struct CarryTo {
    pub(crate) lot: Arc<ParkLot<Parked>>,
    /// The client's epoch in the lot (see [`ParkLot`]).
    pub(crate) epoch: u64,
    pub(crate) key: Key,
    pub(crate) host_port: Arc<str>,
    pub(crate) idle_timeout: Option<Duration>,
}

impl CarryTo {
    pub(super) fn expired(&self, idle_since: Instant, now: Instant) -> bool {
        idle_expired(idle_since, self.idle_timeout, now)
    }

    /// Parks `parked`, or closes it when the peer closed it or sent something, or the
    /// lot refuses it. A parked connection is closed by a timer job once its idle time
    /// runs out, whether or not any runtime runs then.
    pub(super) fn park(&self, parked: Parked) {
        if !parked.conn.tcp().parked_is_quiet() {
            parked.close();
            return;
        }
        let due = self
            .idle_timeout
            .and_then(|t| parked.idle_since.checked_add(t));
        match self.lot.park(self.epoch, parked) {
            Ok(()) => {
                tracing::trace!("idle connection parked for the next runtime");
                if let Some(at) = due {
                    let lot = Arc::downgrade(&self.lot);
                    let timeout = self.idle_timeout;
                    // The key is dropped: a job that finds nothing due does nothing.
                    let _key = timer::schedule(at, move || expire(&lot, timeout));
                }
            }
            Err(parked) => parked.close(),
        }
    }
}

fn expire(lot: &Weak<ParkLot<Parked>>, timeout: Option<Duration>) {
    if let Some(lot) = lot.upgrade() {
        let now = Instant::now();
        for p in lot.remove_where(|p| p.expired(timeout, now)) {
            p.close();
        }
    }
}

/// A manager's lots: one for the manager (per-runtime sharing), or one per thread
/// (per-thread sharing), each closed when its thread exits.
pub(crate) struct Lots {
    per_thread: bool,
    shared: Arc<ParkLot<Parked>>,
    threads: parking_lot::Mutex<HashMap<ThreadId, Arc<ParkLot<Parked>>>>,
}

impl Lots {
    pub(crate) fn new(per_thread: bool) -> Arc<Self> {
        Arc::new(Lots {
            per_thread,
            shared: Arc::new(ParkLot::new()),
            threads: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// The lot of the scope a client built on this thread now belongs to.
    pub(crate) fn current(self: &Arc<Self>) -> Arc<ParkLot<Parked>> {
        if !self.per_thread {
            return Arc::clone(&self.shared);
        }
        let id = std::thread::current().id();
        let mut threads = self.threads.lock();
        if let Some(lot) = threads.get(&id) {
            return Arc::clone(lot);
        }
        let lot = Arc::new(ParkLot::new());
        // A thread being torn down (a thread-local destructor) cannot register its exit:
        // its lot is closed at once and parks nothing.
        let registered = EXITS
            .try_with(|exits| {
                exits
                    .borrow_mut()
                    .push((Arc::downgrade(self), Arc::clone(&lot)))
            })
            .is_ok();
        if registered {
            threads.insert(id, Arc::clone(&lot));
        } else {
            lot.close();
        }
        lot
    }

    /// Every lot: drained (`close_all`) or closed for good (shutdown); their parked
    /// connections are closed on the wire. Returns how many.
    pub(crate) fn close_parked(&self, for_good: bool) -> usize {
        let mut lots = vec![Arc::clone(&self.shared)];
        lots.extend(self.threads.lock().values().cloned());
        let mut closed = 0;
        for lot in lots {
            let parked = if for_good { lot.close() } else { lot.drain() };
            closed += parked.len();
            for p in parked {
                p.close();
            }
        }
        closed
    }
}

impl Drop for Lots {
    fn drop(&mut self) {
        self.close_parked(true);
    }
}

/// A lot of this thread's, and the manager's lots it is listed in.
type ThreadLot = (Weak<Lots>, Arc<ParkLot<Parked>>);

/// This thread's lots, closed when it exits.
struct Exits(RefCell<Vec<ThreadLot>>);

impl std::ops::Deref for Exits {
    type Target = RefCell<Vec<ThreadLot>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Exits {
    fn drop(&mut self) {
        let id = std::thread::current().id();
        for (lots, lot) in self.0.get_mut().drain(..) {
            for p in lot.close() {
                p.close();
            }
            if let Some(lots) = lots.upgrade() {
                lots.threads.lock().remove(&id);
            }
        }
    }
}

thread_local! {
    static EXITS: Exits = const { Exits(RefCell::new(Vec::new())) };
}
