//! [`ParkLot`]: where a client's cleanly idle connections wait between two runtimes of
//! one sharing scope (a thread in per-thread mode, the manager in per-runtime mode), and
//! the decisions that make the handover safe:
//!
//! * **park racing `close_all`**: `close_all` [`drain`](ParkLot::drain)s the lot and
//!   starts a new *epoch*. A client reads the epoch when it is built
//!   ([`take`](ParkLot::take)); a park from a client of an older epoch is refused, so a
//!   connection of a client that `close_all` saw never outlives `close_all` (it was
//!   either drained and closed by it, or refused and closed by its parker).
//! * **park racing shutdown or thread exit**: [`close`](ParkLot::close) drains the lot
//!   for good; every later park is refused and every later take finds nothing.
//! * **take racing shutdown**: a take is all or nothing under the lock: what it takes
//!   was parked before the close, and the close then finds none of it (the taking
//!   client is closed by the shutdown like every other).
//!
//! Whoever gets a connection back (a refused park, a drain, a close) closes it on the
//! wire; a connection is in exactly one place at a time. Tokio-free: the loom models
//! run this very code (`loom-tests/tests/park.rs`).

use crate::sync::Mutex;

/// The lot of one sharing scope. `T`: a parked connection.
#[derive(Debug)]
pub struct ParkLot<T> {
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    closed: bool,
    epoch: u64,
    parked: Vec<T>,
}

impl<T> Default for ParkLot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ParkLot<T> {
    /// An open, empty lot at epoch 0.
    pub fn new() -> Self {
        ParkLot {
            state: Mutex::new(State {
                closed: false,
                epoch: 0,
                parked: Vec::new(),
            }),
        }
    }

    /// Parks `conn` for the scope's next client; `epoch` is the parking client's (from
    /// its [`take`](ParkLot::take)). Gives it back when the lot is closed or a
    /// `close_all` came after that client was built: the caller closes it.
    pub fn park(&self, epoch: u64, conn: T) -> Result<(), T> {
        let mut st = self.state.lock();
        if st.closed || st.epoch != epoch {
            return Err(conn);
        }
        st.parked.push(conn);
        Ok(())
    }

    /// For a new client of the scope: the current epoch (the client parks with it) and
    /// every connection parked for it (none once the lot is closed).
    pub fn take(&self) -> (u64, Vec<T>) {
        let mut st = self.state.lock();
        let epoch = st.epoch;
        (epoch, std::mem::take(&mut st.parked))
    }

    /// For `close_all`: every parked connection (the caller closes them), and a new
    /// epoch, so that no client built before this call parks again. The lot stays open.
    pub fn drain(&self) -> Vec<T> {
        let mut st = self.state.lock();
        st.epoch = st.epoch.wrapping_add(1);
        std::mem::take(&mut st.parked)
    }

    /// For shutdown and the scope's end (its thread exits): every parked connection
    /// (the caller closes them); nothing is parked or taken from now on.
    pub fn close(&self) -> Vec<T> {
        let mut st = self.state.lock();
        st.closed = true;
        std::mem::take(&mut st.parked)
    }

    /// Removes the parked connections `expired` selects (their idle time ran out) and
    /// returns them (the caller closes them).
    pub fn remove_where(&self, expired: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut st = self.state.lock();
        let (gone, kept) = std::mem::take(&mut st.parked)
            .into_iter()
            .partition(expired);
        st.parked = kept;
        gone
    }

    /// How many connections are parked now.
    #[cfg_attr(not(any(test, rtlocal_loom)), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.state.lock().parked.len()
    }

    #[cfg_attr(not(any(test, rtlocal_loom)), allow(dead_code))]
    /// Nothing is parked now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg_attr(not(any(test, rtlocal_loom)), allow(dead_code))]
    /// [`close`](ParkLot::close) was called: nothing is parked or taken any more.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_park_from_before_close_all_is_refused() {
        let lot = ParkLot::new();
        let (old, none) = lot.take();
        assert!(none.is_empty());
        assert_eq!(lot.park(old, 1), Ok(()));
        assert_eq!(lot.drain(), vec![1]);
        // A client built before close_all parks again: refused.
        assert_eq!(lot.park(old, 2), Err(2));
        let (new, none) = lot.take();
        assert!(none.is_empty());
        assert_ne!(new, old);
        assert_eq!(lot.park(new, 3), Ok(()));
        assert_eq!(lot.take(), (new, vec![3]));
    }

    #[test]
    fn a_closed_lot_takes_nothing_and_gives_nothing() {
        let lot = ParkLot::new();
        let (epoch, _) = lot.take();
        assert!(lot.is_empty());
        assert_eq!(lot.park(epoch, 1), Ok(()));
        assert!(!lot.is_empty());
        assert!(!lot.is_closed());
        assert_eq!(lot.close(), vec![1]);
        assert!(lot.is_closed());
        assert_eq!(lot.park(epoch, 2), Err(2));
        assert_eq!(lot.take().1, Vec::<i32>::new());
        assert!(lot.is_empty());
    }

    #[test]
    fn remove_where_takes_only_the_expired() {
        let lot = ParkLot::new();
        let (epoch, _) = lot.take();
        for i in 0..5 {
            assert_eq!(lot.park(epoch, i), Ok(()));
        }
        let mut gone = lot.remove_where(|i| i % 2 == 0);
        gone.sort_unstable();
        assert_eq!(gone, vec![0, 2, 4]);
        assert_eq!(lot.len(), 2);
    }
}
