//! A client's open → closing → closed lifecycle and its in-flight request count, in one
//! atomic word.
//!
//! Keeping both in one word makes every transition a single read-modify-write, so "a
//! request either sees the close and backs out, or is counted before the closer reads
//! the count" holds in every interleaving without relying on `SeqCst` between two
//! locations (loom checks it in `loom-tests/`).
//!
//! ```text
//!  bit 63: CLOSED   bit 62: CLOSING   bits 0..62: requests in flight
//! ```

use crate::sync::{AtomicU64, Ordering};

const CLOSED: u64 = 1 << 63;
const CLOSING: u64 = 1 << 62;
const COUNT: u64 = CLOSING - 1;

/// Where a client is in its life.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting requests.
    Open,
    /// No new requests; waiting for in-flight ones.
    Closing,
    /// Connections shut.
    Closed,
}

/// What [`Lifecycle::finish_close`] found.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Finished {
    /// This call closed it (every other caller finds it closed already): the caller must
    /// shut the connections.
    pub first: bool,
    /// Requests in flight at that instant (cut, if this call closed it).
    pub in_flight: u64,
}

/// See the module docs.
#[doc(hidden)]
#[derive(Debug)]
pub struct Lifecycle {
    word: AtomicU64,
}

impl Lifecycle {
    /// Open, nothing in flight.
    pub fn new() -> Self {
        Lifecycle {
            word: AtomicU64::new(0),
        }
    }

    fn phase_of(word: u64) -> Phase {
        if word & CLOSED != 0 {
            Phase::Closed
        } else if word & CLOSING != 0 {
            Phase::Closing
        } else {
            Phase::Open
        }
    }

    /// The current phase.
    #[inline]
    pub fn phase(&self) -> Phase {
        // Acquire: a caller that sees Closed also sees what the closer did before.
        Self::phase_of(self.word.load(Ordering::Acquire))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.word.load(Ordering::Acquire) & COUNT
    }

    /// Counts a request in flight if the client is open; `false` (nothing counted) once
    /// it is closing or closed.
    ///
    /// A compare-exchange rather than an add-then-back-out: a refused request must never
    /// show up, even for an instant, in the count a closer reads (it would be reported
    /// as a request cut).
    #[inline]
    pub fn begin_request(&self) -> bool {
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            if Self::phase_of(cur) != Phase::Open {
                return false;
            }
            // AcqRel on success: the phase check and the increment are one atomic step.
            match self
                .word
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Ends a counted request. Returns `true` if it was the last one out of a closing
    /// client: the caller must wake whoever drains.
    #[inline]
    pub fn end_request(&self) -> bool {
        let prev = self.word.fetch_sub(1, Ordering::AcqRel);
        prev & COUNT == 1 && Self::phase_of(prev) != Phase::Open
    }

    /// Stops new requests. Returns the in-flight count at that instant.
    pub fn begin_close(&self) -> u64 {
        self.word.fetch_or(CLOSING, Ordering::AcqRel) & COUNT
    }

    /// Marks the client closed. [`Finished::first`] is `true` for exactly one caller: the
    /// one that must shut the connections.
    pub fn finish_close(&self) -> Finished {
        let prev = self.word.fetch_or(CLOSED | CLOSING, Ordering::AcqRel);
        Finished {
            first: prev & CLOSED == 0,
            in_flight: prev & COUNT,
        }
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let l = Lifecycle::new();
        assert_eq!(l.phase(), Phase::Open);
        assert!(l.begin_request());
        assert!(l.begin_request());
        assert_eq!(l.begin_close(), 2);
        assert_eq!(l.phase(), Phase::Closing);
        assert!(!l.begin_request());
        assert_eq!(l.in_flight(), 2, "a refused request is never counted");
        assert!(!l.end_request());
        assert!(
            l.end_request(),
            "last one out of a closing client wakes the drainer"
        );
        assert_eq!(
            l.finish_close(),
            Finished {
                first: true,
                in_flight: 0
            }
        );
        assert!(!l.finish_close().first);
        assert_eq!(l.phase(), Phase::Closed);
    }
}
