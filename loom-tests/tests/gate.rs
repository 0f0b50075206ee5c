//! The shutdown gate: shutdown racing a publish, with the manager's slot list.
#![cfg(rtlocal_loom)]

use loom::sync::{Arc, Mutex};
use loom::thread;
use rtlocal_loom_tests::*;

/// A new thread registers its slot in the manager's list and publishes a client while
/// `shutdown` closes the gate and retires every listed slot. Once both are done, no client
/// is left open: either the scan saw the slot and retired it, or the publish saw the gate.
#[test]
fn shutdown_racing_a_publish() {
    model(|| {
        let world = World::new();
        let gate = Arc::new(ShutdownGate::new());
        let list: Arc<Mutex<Vec<Arc<FakeSlot>>>> = Arc::new(Mutex::new(Vec::new()));
        let (w2, g2, l2) = (world.clone(), gate.clone(), list.clone());
        let t = thread::spawn(move || {
            // As `thread_slots::slot_for`: listed under the manager's lock, then used.
            let slot = Arc::new(FakeSlot::new());
            l2.lock().unwrap().push(slot.clone());
            get_client(&slot, &FakeDriver::new(&w2), &g2, &FakeKey::new(1))
        });
        // As `Manager::shutdown`: close the gate, then scan and retire.
        gate.close();
        let slots = list.lock().unwrap().clone();
        let report = close_all(slots, &FakeDriver::new(&world));
        let got = t.join().unwrap();
        let open = world.open();
        assert!(
            open.is_empty(),
            "client {} is open after shutdown returned (caller got {:?}, shutdown closed {})",
            open[0].id,
            got.as_ref().map(|c| c.id),
            report.closed
        );
        if let Err(e) = got {
            assert!(e.is_shut_down(), "{e}");
        }
    });
}

/// The gate's own promise, independent of how the manager lists its slots: the publisher
/// lists its slot with a release store and no lock the scan shares (as a lock-free list
/// would), the shutdown closes the gate and reads the list with an acquire load. That is
/// the store-buffering shape; only the `SeqCst` fences in `close` and `admits` forbid
/// both sides reading the old value (the scan missing the slot and the publish missing the
/// closed gate). `shutdown_racing_a_publish` lists under a mutex, as the manager does,
/// which orders the two on its own and so passes even without the fences.
#[test]
fn shutdown_racing_a_publish_on_a_lock_free_list() {
    use loom::sync::atomic::{AtomicBool, Ordering};
    model(|| {
        let world = World::new();
        let gate = Arc::new(ShutdownGate::new());
        let slot = Arc::new(FakeSlot::new());
        let listed = Arc::new(AtomicBool::new(false));
        let (w2, g2, s2, l2) = (world.clone(), gate.clone(), slot.clone(), listed.clone());
        let t = thread::spawn(move || {
            l2.store(true, Ordering::Release);
            get_client(&s2, &FakeDriver::new(&w2), &g2, &FakeKey::new(1))
        });
        gate.close();
        let slots = if listed.load(Ordering::Acquire) {
            vec![slot.clone()]
        } else {
            Vec::new()
        };
        let report = close_all(slots, &FakeDriver::new(&world));
        let got = t.join().unwrap();
        let open = world.open();
        assert!(
            open.is_empty(),
            "client {} is open after shutdown returned (caller got {:?}, shutdown closed {})",
            open[0].id,
            got.as_ref().map(|c| c.id),
            report.closed
        );
    });
}

/// A caller arriving after `shutdown` is refused at once: it builds nothing.
#[test]
fn a_caller_after_shutdown_builds_nothing() {
    model(|| {
        let world = World::new();
        let gate = ShutdownGate::new();
        gate.close();
        let d = FakeDriver::new(&world);
        let slot = Arc::new(FakeSlot::new());
        let got = get_client(&slot, &d, &gate, &FakeKey::new(1));
        assert!(got.unwrap_err().is_shut_down());
        assert_eq!(d.builds(), 0, "a build after shutdown");
        assert_eq!(world.created(), 0);
    });
}
