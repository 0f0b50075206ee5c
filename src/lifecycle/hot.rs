//! The hot-path cache's rule: when a thread's remembered client may be handed out without
//! touching its slot.
//!
//! The cache itself is a thread-local in the tokio adapter (it holds the client weakly, and
//! loom has no `Weak`); the decision is here so the loom models run it. It rests on the
//! slot's invariant 3: an open client that was handed out for a binding is still that
//! binding's published client, because every path out of `Ready` marks it closing under the
//! slot lock.

use super::driver::SlotClient;
use super::registry::RuntimeEntry;
use crate::sync::Arc;

/// One thread's last client, and the runtime instance it is bound to.
#[doc(hidden)]
#[derive(Debug)]
pub struct HotEntry<I, H> {
    runtime: I,
    entry: Arc<RuntimeEntry>,
    client: H,
}

impl<I: Copy + Eq, H> HotEntry<I, H> {
    /// Remembers `client` (held as `H`: the adapter keeps a `Weak`) for runtime `runtime`
    /// (the instance `entry`).
    pub fn new(runtime: I, entry: Arc<RuntimeEntry>, client: H) -> Self {
        HotEntry {
            runtime,
            entry,
            client,
        }
    }

    /// The remembered client, if the caller runs on the same live runtime instance and
    /// the client is still open. `upgrade` turns `H` back into a client (and checks it is
    /// the asking manager's).
    #[inline]
    pub fn serve<C: SlotClient>(
        &self,
        runtime: I,
        upgrade: impl FnOnce(&H) -> Option<C>,
    ) -> Option<C> {
        // The id alone is not enough: ids are reused once a runtime is gone.
        if self.runtime != runtime || !self.entry.is_alive() {
            return None;
        }
        let client = upgrade(&self.client)?;
        client.is_open().then_some(client)
    }
}

/// Whether the current thread may remember a client bound to `bound_thread` (`None`: any
/// thread of the runtime). After an await, a task on a `multi_thread` runtime may resume on
/// another worker, whose cache must not learn this thread's client.
#[inline]
pub fn may_remember<T: Eq>(bound_thread: Option<T>, current: T) -> bool {
    bound_thread.is_none_or(|t| t == current)
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[derive(Clone, Debug)]
    struct C(Arc<AtomicBool>);

    impl SlotClient for C {
        fn is_open(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }

        fn begin_close(&self) {
            self.0.store(false, Ordering::SeqCst);
        }

        fn force_close(&self) -> bool {
            self.0.swap(false, Ordering::SeqCst)
        }
    }

    #[test]
    fn serves_only_its_open_client_on_its_live_runtime() {
        let entry = Arc::new(RuntimeEntry::new());
        let client = C(Arc::new(AtomicBool::new(true)));
        let hot = HotEntry::new(7u64, Arc::clone(&entry), client.clone());
        let up = |c: &C| Some(c.clone());
        assert!(hot.serve(7, up).is_some(), "same runtime, alive, open");
        assert!(hot.serve(8, up).is_none(), "another runtime");
        assert!(
            hot.serve::<C>(7, |_| None).is_none(),
            "gone (or another manager's)"
        );
        client.begin_close();
        assert!(hot.serve(7, up).is_none(), "a closing client");
        let reopened = C(Arc::new(AtomicBool::new(true)));
        let hot = HotEntry::new(7u64, Arc::clone(&entry), reopened);
        entry.teardown();
        assert!(
            hot.serve(7, up).is_none(),
            "a torn-down runtime (ids are reused)"
        );
    }

    #[test]
    fn remembers_only_for_its_own_thread() {
        assert!(may_remember(None, 1));
        assert!(may_remember(Some(1), 1));
        assert!(!may_remember(Some(2), 1));
    }
}
