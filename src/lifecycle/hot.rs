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
