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

/// The thread's cache entry for the length of one model run: forgotten when dropped, so
/// a failing model unwinds with the loom state still there (a thread-local left holding
/// loom objects past the model aborts the whole test binary).
struct Remembered;

impl Drop for Remembered {
    fn drop(&mut self) {
        let old = HOT.with(|h| h.borrow_mut().take());
        drop(old);
    }
}

#[must_use]
fn remember(c: &FakeClient, entry: &Arc<RuntimeEntry>) -> Remembered {
    HOT.with(|h| *h.borrow_mut() = Some(HotEntry::new(c.runtime, entry.clone(), c.clone())));
    Remembered
}

fn cached(runtime: usize) -> Option<FakeClient> {
    HOT.with(|h| h.borrow().as_ref()?.serve(runtime, |c| Some(c.clone())))
}

/// The rule the cache rests on (the slot's invariant 3), checked after the cache answered:
/// a client it handed out is still the slot's published client, or it reads closing —
/// because whatever took it out of `Ready` marked it closing under the slot lock, which
/// `try_hit` takes after.
fn check_served(slot: &FakeSlot, served: Option<&FakeClient>, runtime: usize) {
    let Some(c) = served else { return };
    let published = slot.try_hit(&runtime).map(|(p, _)| p.id);
    assert!(
        published == Some(c.id) || !c.is_open(),
        "the cache handed out client {} that is no longer its slot's client (slot has {:?}) \
         and still reads open",
        c.id,
        published
    );
}

/// A thread caches its client, close_all retires it concurrently, the thread asks its
/// cache again: whatever the cache hands out is still the slot's published client.
#[test]
fn cached_client_is_still_the_slots_client() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let entry = Arc::new(RuntimeEntry::new());
        let _hot = remember(&first, &entry);
        assert_eq!(
            cached(1).map(|c| c.id),
            Some(first.id),
            "the cache answers for its open client on its live runtime"
        );
        assert!(cached(2).is_none(), "nor for another runtime");
        let (s2, w2) = (slot.clone(), world.clone());
        let t = thread::spawn(move || close_all(vec![s2], &FakeDriver::new(&w2)));
        let served = cached(1);
        check_served(&slot, served.as_ref(), 1);
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

/// The same rule while another caller replaces the slot's client (its binding changed):
/// from the moment the replacement takes the client out of `Ready` — before its graceful
/// close even starts — the cache no longer hands it out as open.
#[test]
fn cached_client_is_still_the_slots_client_during_a_replacement() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let entry = Arc::new(RuntimeEntry::new());
        let _hot = remember(&first, &entry);
        let (s2, w2) = (slot.clone(), world.clone());
        let t = thread::spawn(move || {
            get_client(
                &s2,
                &FakeDriver::new(&w2),
                &ShutdownGate::new(),
                &FakeKey::new(2),
            )
        });
        let served = cached(1);
        check_served(&slot, served.as_ref(), 1);
        let new = t.join().unwrap().unwrap();
        assert!(
            cached(1).is_none(),
            "the cache handed out the replaced client {}",
            first.id
        );
        first.assert_closed_once("a replaced client is closed before its replacement is built");
        assert_ne!(new.id, first.id);
    });
}

/// The cache never answers for a runtime whose teardown began (ids are reused).
#[test]
fn cache_never_answers_for_a_dead_runtime() {
    model(|| {
        let world = World::new();
        let (_slot, first) = primed(&world, 1);
        let entry = Arc::new(RuntimeEntry::new());
        let _hot = remember(&first, &entry);
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
