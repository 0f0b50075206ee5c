//! Acquire-or-replace (`lifecycle::acquire`) racing itself, cancellation, failure,
//! panics, and a stuck leader.
#![cfg(rtlocal_loom)]

use loom::sync::Arc;
use loom::thread;
use rtlocal_loom_tests::*;

fn check_replacement(world: &World, slot: &FakeSlot, stale: &FakeClient, got: &[FakeClient]) {
    assert_eq!(world.created(), 2, "one stale + exactly one replacement");
    let new = &got[0];
    assert_ne!(new.id, stale.id, "nobody receives the stale client");
    assert!(
        got.iter().all(|c| c.id == new.id),
        "all callers get the one new client"
    );
    stale.assert_closed_once("a replaced client is closed before its replacement is built");
    assert!(new.is_open() && new.closes() == 0);
    assert_eq!(
        world.replaced(),
        1,
        "the leader closes the stale client gracefully, then reports it"
    );
    assert!(slot.try_hit(&1).is_none(), "the old binding's probe misses");
    assert_eq!(slot.try_hit(&2).map(|(c, _)| c.id), Some(new.id));
}

/// Two callers race a replacement on one slot: one build, both get it, the stale client
/// was closed (and reads closed) before the new one was built.
#[test]
fn two_callers_race_a_replacement() {
    model(|| {
        let world = World::new();
        let (slot, stale) = primed(&world, 1);
        let key = FakeKey::new(2);
        let (s2, w2, k2) = (slot.clone(), world.clone(), key.clone());
        let t = thread::spawn(move || {
            get_client(&s2, &FakeDriver::new(&w2), &ShutdownGate::new(), &k2).unwrap()
        });
        let gate = ShutdownGate::new();
        let mine = get_client(&slot, &FakeDriver::new(&world), &gate, &key).unwrap();
        let theirs = t.join().unwrap();
        check_replacement(&world, &slot, &stale, &[mine, theirs]);
    });
}

/// Three callers, and the build awaits (the leader yields mid-build).
#[test]
fn three_callers_race_an_async_build() {
    model(|| {
        let world = World::new();
        let (slot, stale) = primed(&world, 1);
        let key = FakeKey::new(2);
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (s, w, k) = (slot.clone(), world.clone(), key.clone());
                thread::spawn(move || {
                    let d = FakeDriver::with(&w, Wait::Patient, Build::YieldOnce);
                    get_client(&s, &d, &ShutdownGate::new(), &k).unwrap()
                })
            })
            .collect();
        let d = FakeDriver::with(&world, Wait::Patient, Build::YieldOnce);
        let mut got = vec![get_client(&slot, &d, &ShutdownGate::new(), &key).unwrap()];
        got.extend(ts.into_iter().map(|t| t.join().unwrap()));
        check_replacement(&world, &slot, &stale, &got);
    });
}

/// A leader cancelled mid-build (its future dropped after the build's first `Pending`)
/// racing a waiter: the waiter does not hang, it builds anew, the stale client is closed
/// exactly once, nothing is orphaned.
#[test]
fn cancelled_build_racing_a_waiter() {
    model(|| {
        let world = World::new();
        let (slot, stale) = primed(&world, 1);
        let key = FakeKey::new(2);
        let (s2, w2, k2) = (slot.clone(), world.clone(), key.clone());
        let t = thread::spawn(move || {
            let d = FakeDriver::with(&w2, Wait::Patient, Build::YieldOnce);
            let gate = ShutdownGate::new();
            let mut fut = Box::pin(acquire(&d, &gate, &s2, &k2));
            let waker = futures_util::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            // One poll, then cancelled: wherever it was, the lease or build right drops.
            let _ = fut.as_mut().poll(&mut cx);
        });
        let got = get_client(&slot, &FakeDriver::new(&world), &ShutdownGate::new(), &key);
        t.join().unwrap();
        let got = got.unwrap();
        assert_ne!(got.id, stale.id);
        stale.assert_closed_once("a replaced client is closed before its replacement is built");
        assert!(got.is_open());
        check_no_orphans(&world, &slot, 2);
    });
}

/// Each caller either waited on the other's build or built its own, never both: a caller
/// that waited on a failed (or panicked) build got that failure rather than retrying.
fn waited_or_built(d: &FakeDriver) {
    let (waits, builds) = (d.waits(), d.builds());
    assert_eq!(
        (waits, builds),
        if waits > 0 { (1, 0) } else { (0, 1) },
        "a caller waited {waits} time(s) and built {builds} time(s): a waiter of a failed \
         build must get its error, not retry"
    );
}

/// A build that fails: every caller waiting on it gets the error (none waits for more,
/// none retries), and the slot is free for the next call.
#[test]
fn failed_build_fails_its_waiters() {
    model(|| {
        let world = World::new();
        let slot = Arc::new(FakeSlot::new());
        let key = FakeKey::new(1);
        let (s2, w2, k2) = (slot.clone(), world.clone(), key.clone());
        let t = thread::spawn(move || {
            let d = FakeDriver::with(&w2, Wait::Patient, Build::Fail);
            let got = get_client(&s2, &d, &ShutdownGate::new(), &k2);
            waited_or_built(&d);
            got
        });
        let d = FakeDriver::with(&world, Wait::Patient, Build::Fail);
        let mine = get_client(&slot, &d, &ShutdownGate::new(), &key);
        waited_or_built(&d);
        let theirs = t.join().unwrap();
        assert!(mine.unwrap_err().is_build());
        assert!(theirs.unwrap_err().is_build());
        assert_eq!(world.created(), 0);
        // Not stuck: the next call builds.
        let next = get_client(&slot, &FakeDriver::new(&world), &ShutdownGate::new(), &key);
        assert!(next.unwrap().is_open());
    });
}

/// A build that panics: the panic is contained, every waiter fails with a build error at
/// once, the slot is not left stuck.
#[test]
fn panicking_build_fails_its_waiters() {
    model(|| {
        let world = World::new();
        let slot = Arc::new(FakeSlot::new());
        let key = FakeKey::new(1);
        let (s2, w2, k2) = (slot.clone(), world.clone(), key.clone());
        let t = thread::spawn(move || {
            let d = FakeDriver::with(&w2, Wait::Patient, Build::Panic);
            let got = get_client(&s2, &d, &ShutdownGate::new(), &k2);
            waited_or_built(&d);
            got
        });
        let d = FakeDriver::with(&world, Wait::Patient, Build::Panic);
        let mine = get_client(&slot, &d, &ShutdownGate::new(), &key);
        waited_or_built(&d);
        let theirs = t.join().unwrap();
        let (mine, theirs) = (mine.unwrap_err(), theirs.unwrap_err());
        assert!(
            mine.is_build() && mine.to_string().contains("panicked"),
            "{mine}"
        );
        assert!(
            theirs.is_build() && theirs.to_string().contains("panicked"),
            "{theirs}"
        );
        assert!(
            mine.to_string().contains("the fake factory panics"),
            "the panic's own message is kept: {mine}"
        );
        let next = get_client(&slot, &FakeDriver::new(&world), &ShutdownGate::new(), &key);
        assert!(next.unwrap().is_open());
    });
}

/// A waiter whose bounded wait ran out (its leader taken to be stuck on an idle runtime)
/// takes the replacement over, racing the leader: the stale client is closed exactly once,
/// the caller gets a client for its runtime, nothing is orphaned.
#[test]
fn bounded_wait_takes_over_a_stuck_leader() {
    model(|| {
        let world = World::new();
        let (slot, stale) = primed(&world, 1);
        // The superseded leader may finish its build after the take-over built: its client
        // is then force-closed, never published (checked below).
        world
            .concurrent_builds_allowed
            .store(true, loom::sync::atomic::Ordering::SeqCst);
        let key = FakeKey::new(2);
        let (s2, w2, k2) = (slot.clone(), world.clone(), key.clone());
        let t = thread::spawn(move || {
            let d = FakeDriver::with(&w2, Wait::Patient, Build::YieldOnce);
            get_client(&s2, &d, &ShutdownGate::new(), &k2)
        });
        let d = FakeDriver::with(&world, Wait::Impatient, Build::Ready);
        let mine = get_client(&slot, &d, &ShutdownGate::new(), &key).unwrap();
        let theirs = t.join().unwrap().unwrap();
        stale.assert_closed_once("a replaced client is closed before its replacement is built");
        assert_eq!((mine.runtime, theirs.runtime), (2, 2));
        check_no_orphans(&world, &slot, 2);
    });
}
