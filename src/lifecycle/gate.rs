//! The shutdown gate: once closed, no client is published again.
//!
//! # Ordering
//! A shutdown closes the gate, then scans the manager's slots; a publish checks the gate
//! under its slot's lock. Either the scan sees the slot (and then takes its lock, after the
//! publish or before it, and retires what it finds) or the publish sees the gate closed.
//! Today both slot lists (`manager::thread_slots`, `RuntimeSlots`) are appended to under a
//! mutex the scan also takes, and that lock alone orders the two. The `SeqCst` fences
//! make the gate independent of how slots are listed: with a lock-free list (release
//! stores, acquire scans) the two sides form the store-buffering shape, where only a
//! `SeqCst` fence on each side rules out both reading the old value. The loom model
//! `shutdown_racing_a_publish` fails when the publish skips the check.

use crate::sync::{AtomicBool, Ordering, fence};

/// See the module docs.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct ShutdownGate {
    closed: AtomicBool,
}

impl ShutdownGate {
    /// An open gate.
    pub fn new() -> Self {
        ShutdownGate {
            closed: AtomicBool::new(false),
        }
    }

    /// Closes the gate. Call before scanning the slots.
    pub fn close(&self) {
        // SeqCst store and fence: see the module docs.
        self.closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// A cheap early check (no ordering promise beyond acquire).
    #[inline]
    pub fn is_closed(&self) -> bool {
        // Acquire: whoever sees the gate closed also sees what the closer did before.
        self.closed.load(Ordering::Acquire)
    }

    /// The check a publish makes under its slot's lock: `true` lets it publish.
    pub fn admits(&self) -> bool {
        // Pairs with the fence in `close`: see the module docs.
        fence(Ordering::SeqCst);
        !self.closed.load(Ordering::SeqCst)
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    #[test]
    fn closes_once_and_for_all() {
        let gate = ShutdownGate::new();
        assert!(!gate.is_closed());
        assert!(gate.admits());
        gate.close();
        assert!(gate.is_closed());
        assert!(!gate.admits());
        assert!(ShutdownGate::default().admits());
    }
}
