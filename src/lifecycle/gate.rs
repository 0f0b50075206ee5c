//! The shutdown gate: once closed, no client is published again.
//!
//! # Why a fence
//! A shutdown closes the gate, then scans the manager's slots; a publish checks the gate
//! under its slot's lock. The per-thread slot set is appended to without a lock shared with
//! the scan (`thread_local::ThreadLocal` publishes new slots with release stores, the scan
//! reads them with acquire loads), so this is the store-buffering shape: the publisher
//! stores "slot exists" and loads the flag, the shutdown stores the flag and loads "slot
//! exists". With only acquire/release both can read the old value — a slot the scan never
//! sees, holding a client published after the flag was set. A `SeqCst` fence on each side
//! forbids that: either the scan sees the slot (and then takes its lock, after the publish
//! or before it) or the publish sees the flag. The loom model
//! `shutdown_racing_a_publish` fails without either fence.

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
