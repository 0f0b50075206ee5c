//! Per-runtime sharing: one slot per live runtime, made on first use and removed by that
//! runtime's teardown, so the map is bounded by the runtimes alive.
//!
//! # Lock order
//! The map lock is never held while a callback is registered or a slot is used: a slot is
//! looked up under the map lock, the lock is released, then the slot is used. Teardown
//! runs callbacks outside the entry lock; the removal callback takes only the map lock.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use super::registry::RuntimeEntry;
use crate::error::Error;
use crate::sync::{Arc, Mutex, downgrade};

/// See the module docs.
#[doc(hidden)]
pub struct RuntimeSlots<I, S> {
    map: Mutex<HashMap<I, Entry<S>>>,
}

/// A runtime's slot and the runtime instance it is for (ids are reused). The instance is
/// kept by address, not by `Arc`: a slot's client's binding already holds the entry, and
/// the entry's removal callback holds the map, so an `Arc` here would make a cycle. The
/// address is never stale: an entry is in the map only while its runtime is alive or its
/// teardown (which holds the entry) has yet to remove it.
struct Entry<S> {
    runtime: usize,
    slot: Arc<S>,
}

fn identity(runtime: &Arc<RuntimeEntry>) -> usize {
    Arc::as_ptr(runtime) as usize
}

/// Where [`RuntimeSlots::get_or_insert`] found the slot.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The runtime already had one.
    Existing,
    /// This call made it.
    Inserted,
    /// Another thread of the runtime made it while this call was making its own.
    LostRace,
}

impl<I, S> RuntimeSlots<I, S>
where
    I: Copy + Eq + Hash + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    /// An empty map.
    pub fn new() -> Self {
        RuntimeSlots {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The slot of runtime `id` (the instance `runtime`), made with `make` on first use.
    ///
    /// # Errors
    /// [`Error::is_runtime_gone`] when the runtime's teardown has begun: no slot is
    /// made for a runtime that could never remove it again.
    pub fn get_or_insert(
        this: &Arc<Self>,
        id: I,
        runtime: &Arc<RuntimeEntry>,
        make: impl FnOnce() -> S,
    ) -> Result<(Arc<S>, Found), Error> {
        if let Some(slot) = this.live(id, runtime) {
            return Ok((slot, Found::Existing));
        }
        let slot = Arc::new(make());
        let (map, ours) = (downgrade(this), Arc::clone(&slot));
        // Registered before the slot is published: a runtime already gone fails here.
        // The teardown runs after the clients' own release callbacks (newest first), so
        // the slot is empty by then. Weak: the map must not outlive its manager because a
        // runtime does.
        let hook = RuntimeEntry::register(runtime, move || {
            if let Some(map) = map.upgrade() {
                map.remove_slot(id, &ours);
            }
        })?;
        let mut map = this.map.lock();
        // Teardown marks the entry dead before it runs callbacks, and our callback takes
        // this lock: alive here means our callback has not run, so it will remove the slot.
        // Dead means it may have run already, finding nothing: publish nothing.
        if !runtime.is_alive() {
            return Err(Error::runtime_gone());
        }
        if let Some(e) = map.get(&id) {
            if e.runtime == identity(runtime) {
                // Another thread of this runtime won the race; its slot serves.
                let theirs = Arc::clone(&e.slot);
                drop(map);
                // Ours was never published: nothing for its callback to remove.
                let _ = hook.cancel();
                return Ok((theirs, Found::LostRace));
            }
        }
        // Empty, or a dead runtime's slot under a reused id (its clients were released
        // by that runtime's teardown).
        map.insert(
            id,
            Entry {
                runtime: identity(runtime),
                slot: Arc::clone(&slot),
            },
        );
        Ok((slot, Found::Inserted))
    }

    /// The slot of the live runtime instance `runtime`, if it has one.
    fn live(&self, id: I, runtime: &Arc<RuntimeEntry>) -> Option<Arc<S>> {
        let map = self.map.lock();
        let e = map.get(&id)?;
        (e.runtime == identity(runtime)).then(|| Arc::clone(&e.slot))
    }

    /// Removes `slot` if it is still the one stored for `id`.
    fn remove_slot(&self, id: I, slot: &Arc<S>) {
        let mut map = self.map.lock();
        if map.get(&id).is_some_and(|e| Arc::ptr_eq(&e.slot, slot)) {
            map.remove(&id);
        }
    }

    /// Every runtime's slot.
    pub fn slots(&self) -> Vec<Arc<S>> {
        self.map
            .lock()
            .values()
            .map(|e| Arc::clone(&e.slot))
            .collect()
    }

    /// How many runtimes have a slot.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

impl<I, S> Default for RuntimeSlots<I, S>
where
    I: Copy + Eq + Hash + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    fn default() -> Self {
        RuntimeSlots::new()
    }
}

impl<I, S> fmt::Debug for RuntimeSlots<I, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeSlots")
            .field("runtimes", &self.map.lock().len())
            .finish()
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    type Map = RuntimeSlots<u64, String>;

    #[test]
    fn one_slot_per_live_runtime_removed_at_its_teardown() {
        let map = Arc::new(Map::default());
        let (a, b) = (Arc::new(RuntimeEntry::new()), Arc::new(RuntimeEntry::new()));
        let (sa, found) = RuntimeSlots::get_or_insert(&map, 1, &a, || "a".to_owned()).unwrap();
        assert_eq!(found, Found::Inserted);
        let (again, found) = RuntimeSlots::get_or_insert(&map, 1, &a, || "x".to_owned()).unwrap();
        assert_eq!(found, Found::Existing);
        assert!(Arc::ptr_eq(&sa, &again));
        let (sb, _) = RuntimeSlots::get_or_insert(&map, 2, &b, || "b".to_owned()).unwrap();
        let mut all: Vec<String> = map.slots().iter().map(|s| s.to_string()).collect();
        all.sort();
        assert_eq!(all, ["a", "b"]);
        assert_eq!(map.len(), 2);
        assert_eq!(format!("{map:?}"), "RuntimeSlots { runtimes: 2 }");
        // The removal callback is registered on the runtime's entry, and runs at teardown.
        assert_eq!(a.teardown(), 1);
        assert_eq!(map.len(), 1);
        assert!(Arc::ptr_eq(&map.slots()[0], &sb));
        assert!(
            RuntimeSlots::get_or_insert(&map, 1, &a, || "late".to_owned())
                .unwrap_err()
                .is_runtime_gone()
        );
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_reused_id_gets_a_new_slot_and_the_old_teardown_leaves_it() {
        let map = Arc::new(Map::new());
        let old = Arc::new(RuntimeEntry::new());
        let (stale, _) = RuntimeSlots::get_or_insert(&map, 1, &old, || "old".to_owned()).unwrap();
        // The old runtime is torn down only after the new one took its id.
        let new = Arc::new(RuntimeEntry::new());
        let (live, found) =
            RuntimeSlots::get_or_insert(&map, 1, &new, || "new".to_owned()).unwrap();
        assert_eq!(found, Found::Inserted);
        assert!(!Arc::ptr_eq(&stale, &live));
        assert_eq!(old.teardown(), 1);
        assert_eq!(
            map.len(),
            1,
            "the old runtime's teardown removed the new slot"
        );
        let (again, found) = RuntimeSlots::get_or_insert(&map, 1, &new, || "x".to_owned()).unwrap();
        assert_eq!(found, Found::Existing);
        assert!(Arc::ptr_eq(&again, &live));
    }
}
