//! The hot cache's rule (`lifecycle::HotEntry::serve`) in a loom thread-local, racing
//! close_all: a cached client is handed out only while it is its slot's client.
#![cfg(rtlocal_loom)]

use std::cell::RefCell;

use loom::sync::Arc;
use loom::thread;
use rtlocal_loom_tests::*;

loom::thread_local! {
    static HOT: RefCell<Option<HotEntry<usize, FakeClient>>> = RefCell::new(None);
}

fn remember(c: &FakeClient, entry: &Arc<RuntimeEntry>) {
    HOT.with(|h| *h.borrow_mut() = Some(HotEntry::new(c.runtime, entry.clone(), c.clone())));
}

fn cached(runtime: usize) -> Option<FakeClient> {
    HOT.with(|h| h.borrow().as_ref()?.serve(runtime, |c| Some(c.clone())))
}

/// A thread caches its client, close_all retires it concurrently, the thread asks its
/// cache again: whatever the cache hands out is still the slot's published client.
#[test]
fn cached_client_is_still_the_slots_client() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let entry = Arc::new(RuntimeEntry::new());
        remember(&first, &entry);
        let (s2, w2) = (slot.clone(), world.clone());
        let t = thread::spawn(move || close_all(vec![s2], &FakeDriver::new(&w2)));
        let served = cached(1);
        let _ = t.join().unwrap();
        let after = cached(1);
        assert!(
            after.is_none(),
            "the cache handed out client {} after close_all",
            first.id
        );
        if let Some(c) = served {
            // Handed out before the retirement: then it was open, so still published.
            assert_eq!(c.id, first.id);
        }
    });
}

/// The cache never answers for a runtime whose teardown began (ids are reused).
#[test]
fn cache_never_answers_for_a_dead_runtime() {
    model(|| {
        let world = World::new();
        let (_slot, first) = primed(&world, 1);
        let entry = Arc::new(RuntimeEntry::new());
        remember(&first, &entry);
        let e2 = entry.clone();
        let t = thread::spawn(move || e2.teardown());
        let served = cached(1);
        t.join().unwrap();
        assert!(
            cached(1).is_none(),
            "served a client of a torn-down runtime"
        );
        let _ = served;
    });
}
