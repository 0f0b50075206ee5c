//! Per-runtime slots (`lifecycle::RuntimeSlots`): the creation race, and teardown.
#![cfg(rtlocal_loom)]

use loom::sync::Arc;
use loom::thread;
use rtlocal_loom_tests::*;

type Map = RuntimeSlots<usize, FakeSlot>;

/// Two threads of one live runtime race to create its slot: both get the same slot, the
/// map holds one, and the loser's teardown callback was cancelled (the entry has exactly
/// one pending callback, the winner's).
#[test]
fn two_threads_race_to_create_a_runtime_slot() {
    model(|| {
        let map = Arc::new(Map::new());
        let entry = Arc::new(RuntimeEntry::new());
        let (m2, e2) = (map.clone(), entry.clone());
        let t =
            thread::spawn(move || RuntimeSlots::get_or_insert(&m2, 7, &e2, FakeSlot::new).unwrap());
        let (mine, _) = RuntimeSlots::get_or_insert(&map, 7, &entry, FakeSlot::new).unwrap();
        let (theirs, _) = t.join().unwrap();
        assert!(Arc::ptr_eq(&mine, &theirs), "one slot per live runtime");
        assert_eq!(map.len(), 1);
        let all = map.slots();
        assert!(
            all.len() == 1 && Arc::ptr_eq(&all[0], &mine),
            "close_all sees it"
        );
        // Teardown removes it; the map is bounded by live runtimes.
        assert_eq!(
            entry.teardown(),
            1,
            "exactly one removal callback registered"
        );
        assert_eq!(map.len(), 0);
    });
}

/// Creation racing the runtime's teardown: either creation fails (runtime gone) or its
/// slot is removed by the teardown — never a slot left in the map for a dead runtime, and
/// never a live runtime's slot removed.
#[test]
fn creation_racing_teardown() {
    model(|| {
        let map = Arc::new(Map::new());
        let entry = Arc::new(RuntimeEntry::new());
        let (m2, e2) = (map.clone(), entry.clone());
        let t =
            thread::spawn(move || RuntimeSlots::get_or_insert(&m2, 7, &e2, FakeSlot::new).is_ok());
        entry.teardown();
        let created = t.join().unwrap();
        let _ = created;
        assert_eq!(map.len(), 0, "a dead runtime's slot stayed in the map");
    });
}

/// A live runtime's slot stays while another runtime (reusing nothing) is torn down.
#[test]
fn teardown_removes_only_its_own_runtime_slot() {
    model(|| {
        let map = Arc::new(Map::new());
        let (a, b) = (Arc::new(RuntimeEntry::new()), Arc::new(RuntimeEntry::new()));
        let (m2, b2) = (map.clone(), b.clone());
        let (sa, _) = RuntimeSlots::get_or_insert(&map, 1, &a, FakeSlot::new).unwrap();
        let t = thread::spawn(move || {
            let _ = RuntimeSlots::get_or_insert(&m2, 2, &b2, FakeSlot::new);
            b2.teardown();
        });
        let (again, _) = RuntimeSlots::get_or_insert(&map, 1, &a, FakeSlot::new).unwrap();
        t.join().unwrap();
        assert!(Arc::ptr_eq(&sa, &again));
        assert_eq!(map.len(), 1, "only the torn-down runtime's slot is gone");
    });
}

/// Runtime ids are reused: a runtime's teardown racing the creation of a slot for a new
/// runtime under the same id removes only its own slot, never the live runtime's (the
/// removal callback checks the map still holds its own slot).
#[test]
fn teardown_never_removes_a_reused_ids_live_slot() {
    model(|| {
        let map = Arc::new(Map::new());
        let (old, new) = (Arc::new(RuntimeEntry::new()), Arc::new(RuntimeEntry::new()));
        let (stale, _) = RuntimeSlots::get_or_insert(&map, 7, &old, FakeSlot::new).unwrap();
        let o2 = old.clone();
        let t = thread::spawn(move || o2.teardown());
        let (live, found) = RuntimeSlots::get_or_insert(&map, 7, &new, FakeSlot::new).unwrap();
        assert_eq!(
            found,
            Found::Inserted,
            "the dead runtime's slot never serves"
        );
        assert!(!Arc::ptr_eq(&live, &stale));
        assert_eq!(t.join().unwrap(), 1);
        assert_eq!(map.len(), 1, "the live runtime's slot was removed");
        let (again, found) = RuntimeSlots::get_or_insert(&map, 7, &new, FakeSlot::new).unwrap();
        assert_eq!(
            found,
            Found::Existing,
            "the live runtime's slot was removed"
        );
        assert!(Arc::ptr_eq(&again, &live));
        assert_eq!(new.teardown(), 1);
        assert_eq!(map.len(), 0);
    });
}
