//! `client()`: the hot path (this thread's cached client) and the slow path (the per-thread
//! or per-runtime slot, then the core's acquire-or-replace).

use std::sync::Arc;

use tokio::runtime::Handle;

use super::factory::ClientFactory;
use super::managed::Managed;
use super::options::Sharing;
use super::runtime::entry_for;
use super::shared::{Binding, Runner, Shared};
use super::{hot, thread_slots};
use crate::error::Error;
use crate::lifecycle::{self, RuntimeSlots, Slot};

impl<F: ClientFactory> Shared<F> {
    /// The hot path: this thread's cached client, if it is this manager's, bound to the
    /// current runtime, which is still alive, and the client is still open. That is a
    /// thread-local read, an id and two liveness loads, and one `Arc` upgrade: no lock, no
    /// allocation. Everything else goes through the slot.
    #[inline]
    pub(crate) async fn client(self: &Arc<Self>) -> Result<Managed<F>, Error> {
        let handle = Handle::try_current().map_err(|_| Error::no_runtime())?;
        if let Some(client) = hot::cached(self, handle.id()) {
            return Ok(client);
        }
        // Boxed: the cold path would otherwise make every `client()` future large.
        Box::pin(self.client_slow(handle)).await
    }

    async fn client_slow(self: &Arc<Self>, handle: Handle) -> Result<Managed<F>, Error> {
        if self.gate.is_closed() {
            return Err(Error::shut_down());
        }
        // A per-thread slot's own client is checked before the runtime registry (a global
        // lock) is consulted: a thread alternating between managers stays lock-free but
        // for its slots' own locks.
        let (slot, thread, entry) = match self.options.sharing {
            Sharing::PerThread => {
                let token = thread_slots::token();
                let slot = thread_slots::slot_for(self, token)?;
                if let Some((client, key)) = slot.try_hit(&(handle.id(), Some(token))) {
                    hot::remember(&client, &key);
                    return Ok(client);
                }
                (slot, Some(token), entry_for(&handle)?)
            }
            Sharing::PerRuntime => {
                let entry = entry_for(&handle)?;
                let (slot, _) = RuntimeSlots::get_or_insert(
                    &self.runtime_slots,
                    handle.id(),
                    &entry,
                    Slot::new,
                )?;
                if let Some((client, key)) = slot.try_hit(&(handle.id(), None)) {
                    hot::remember(&client, &key);
                    return Ok(client);
                }
                (slot, None, entry)
            }
        };
        let key = Binding {
            runtime: handle.id(),
            thread,
            entry,
        };
        let runner = Runner {
            shared: self,
            handle: Some(&handle),
            slot: Some(&slot),
            left_open: None,
        };
        let client = lifecycle::acquire(&runner, &self.gate, &slot, &key).await?;
        hot::remember(&client, &key);
        Ok(client)
    }
}
