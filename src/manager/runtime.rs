//! The tokio side of the runtime registry: one [`RuntimeEntry`] per live runtime, torn
//! down when the runtime shuts down.
//!
//! tokio has no shutdown hook, but every shutdown path (`drop`, `shutdown_background`,
//! `shutdown_timeout`) drops the runtime's remaining tasks. So the first time a runtime is
//! seen, a *sentinel* task that never finishes is spawned on it; the sentinel owns an
//! `Arc<RuntimeEntry>` and its `Drop` tears the entry down: marks it dead (the liveness
//! token paired with `Handle::id()`, since ids are reused) and runs the callbacks.

use std::sync::LazyLock;

use tokio::runtime::{Handle, Id};

use crate::error::Error;
use crate::idmap::IdMap;
use crate::lifecycle::{CleanupHandle, RuntimeEntry};
use crate::sync::Arc;

static ENTRIES: LazyLock<parking_lot::Mutex<IdMap<Id, Arc<RuntimeEntry>>>> =
    LazyLock::new(Default::default);

/// Lives in a never-finishing task on its runtime; dropped when the runtime shuts down.
struct Sentinel {
    id: Id,
    entry: Arc<RuntimeEntry>,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        tracing::debug!(runtime = %self.id, "runtime torn down; running teardown callbacks");
        // Unpublish first so a runtime that reuses the id gets a fresh entry.
        {
            let mut map = ENTRIES.lock();
            if map
                .get(&self.id)
                .is_some_and(|e| Arc::ptr_eq(e, &self.entry))
            {
                map.remove(&self.id);
            }
        }
        self.entry.teardown();
    }
}

/// The live entry of `handle`'s runtime, creating it (and its sentinel) on first use.
pub(crate) fn entry_for(handle: &Handle) -> Result<Arc<RuntimeEntry>, Error> {
    let id = handle.id();
    if let Some(e) = ENTRIES.lock().get(&id) {
        if e.is_alive() {
            return Ok(Arc::clone(e));
        }
    }
    create(handle, id)
}

#[cold]
fn create(handle: &Handle, id: Id) -> Result<Arc<RuntimeEntry>, Error> {
    let entry = Arc::new(RuntimeEntry::new());
    let sentinel = Sentinel {
        id,
        entry: Arc::clone(&entry),
    };
    // Spawned before publishing and without the map lock held: on a runtime that is
    // already shutting down the future is dropped inside `spawn`, the sentinel tears
    // the entry down at once (taking the map lock), and we report the runtime gone.
    drop(handle.spawn(async move {
        let _sentinel = sentinel;
        std::future::pending::<()>().await;
    }));
    let mut map = ENTRIES.lock();
    if !entry.is_alive() {
        return Err(Error::runtime_gone());
    }
    match map.get(&id) {
        // Another thread won the race; its sentinel serves. Ours stays pending and
        // tears down an empty entry when the runtime ends.
        Some(existing) if existing.is_alive() => Ok(Arc::clone(existing)),
        _ => {
            map.insert(id, Arc::clone(&entry));
            Ok(entry)
        }
    }
}

pub(crate) fn on_runtime_shutdown_for<F>(handle: &Handle, f: F) -> Result<CleanupHandle, Error>
where
    F: FnOnce() + Send + 'static,
{
    RuntimeEntry::register(&entry_for(handle)?, f)
}

pub(crate) fn on_runtime_shutdown<F>(f: F) -> Result<CleanupHandle, Error>
where
    F: FnOnce() + Send + 'static,
{
    let handle = Handle::try_current().map_err(|_| Error::no_runtime())?;
    on_runtime_shutdown_for(&handle, f)
}
