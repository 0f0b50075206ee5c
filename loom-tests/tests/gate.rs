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
