//! Models 2 and 3: callback registration and cancel racing runtime teardown.
#![cfg(rtlocal_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use rtlocal::__loom::RuntimeEntry;
use rtlocal_loom_tests::model;

/// Model 2: each callback either runs exactly once or its registration returns an
/// error; never lost, never twice; LIFO among those that run.
#[test]
fn registration_racing_teardown() {
    model(|| {
        let entry = Arc::new(RuntimeEntry::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (e2, l2) = (entry.clone(), log.clone());
        let t = thread::spawn(move || {
            let mut ok = Vec::new();
            for i in 0..2 {
                let l = l2.clone();
                ok.push(RuntimeEntry::register(&e2, move || l.lock().unwrap().push(i)).is_ok());
            }
            ok
        });
        entry.teardown();
        let ok = t.join().unwrap();
        // Teardown has returned, so every callback it took has run.
        let log = log.lock().unwrap().clone();
        for (i, registered) in ok.iter().enumerate() {
            let runs = log.iter().filter(|&&x| x == i).count();
            assert_eq!(
                runs,
                usize::from(*registered),
                "callback {i}: registered={registered}, runs={runs}"
            );
        }
        // Once refused, later registrations are refused too.
        assert!(ok[0] || !ok[1]);
        if ok == [true, true] {
            assert_eq!(log, vec![1, 0], "newest first");
        }
        assert!(!entry.is_alive());
    });
}

/// Model 3: `cancel()` returns true iff the callback never runs.
#[test]
fn cancel_racing_teardown() {
    model(|| {
        let entry = Arc::new(RuntimeEntry::new());
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let handle =
            RuntimeEntry::register(&entry, move || r.store(true, Ordering::SeqCst)).unwrap();
        let t = thread::spawn(move || handle.cancel());
        entry.teardown();
        let cancelled = t.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), !cancelled);
    });
}

/// Two teardowns racing (e.g. the sentinel dropped while a second path tears down):
/// callbacks still run exactly once.
#[test]
fn teardown_racing_teardown() {
    model(|| {
        let entry = Arc::new(RuntimeEntry::new());
        let count = Arc::new(Mutex::new(0));
        let c = count.clone();
        RuntimeEntry::register(&entry, move || *c.lock().unwrap() += 1).unwrap();
        let e2 = entry.clone();
        let t = thread::spawn(move || e2.teardown());
        let a = entry.teardown();
        let b = t.join().unwrap();
        assert_eq!(a + b, 1);
        assert_eq!(*count.lock().unwrap(), 1);
    });
}
