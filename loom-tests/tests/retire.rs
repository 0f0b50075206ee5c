//! Retire-all (`lifecycle::retire_all`: `close_all` and `shutdown`) racing `client()`,
//! replacements, a thread's exit, and a forced clear.
#![cfg(rtlocal_loom)]

use loom::thread;
use rtlocal_loom_tests::*;

/// close_all racing client() on the same runtime: the caller gets an open client or a
/// just-retired one (its requests are then re-routed); nothing is orphaned; the retired
/// client read closing the moment it was taken out of the slot.
#[test]
fn close_all_racing_client_same_runtime() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let (s2, w2) = (slot.clone(), world.clone());
        let t = thread::spawn(move || close_all(vec![s2], &FakeDriver::new(&w2)));
        let got = get_client(
            &slot,
            &FakeDriver::new(&world),
            &ShutdownGate::new(),
            &FakeKey::new(1),
        );
        let report = t.join().unwrap();
        assert!(got.is_ok());
        first.assert_closed_once("close_all closes the client it retires");
        assert_eq!(report.closed, 1);
        check_no_orphans(&world, &slot, 1);
    });
}

/// close_all racing a replacement for another runtime.
#[test]
fn close_all_racing_a_replacement() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let (s2, w2) = (slot.clone(), world.clone());
        let t = thread::spawn(move || close_all(vec![s2], &FakeDriver::new(&w2)));
        let got = get_client(
            &slot,
            &FakeDriver::new(&world),
            &ShutdownGate::new(),
            &FakeKey::new(2),
        );
        let report = t.join().unwrap();
        let got = got.unwrap();
        assert_ne!(got.id, first.id);
        first.assert_closed_once("a replaced or retired client is closed");
        assert!(report.closed <= 2);
        check_no_orphans(&world, &slot, 2);
    });
}

/// A shutdown whose deadline passed while a replacement was under way (the impatient
/// timer) force-clears the slot: the stale client is closed once, and whatever the leader
/// builds is either the slot's live client or closed — never an orphan.
#[test]
fn deadline_force_clear_racing_a_replacement() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let (s2, w2) = (slot.clone(), world.clone());
        let t = thread::spawn(move || {
            close_all(
                vec![s2],
                &FakeDriver::with(&w2, Wait::Impatient, Build::Ready),
            )
        });
        let d = FakeDriver::with(&world, Wait::Patient, Build::YieldOnce);
        let got = get_client(&slot, &d, &ShutdownGate::new(), &FakeKey::new(2));
        let _ = t.join().unwrap();
        first.assert_closed_once("a replaced client is closed, by its leader or the forced clear");
        if let Ok(c) = &got {
            assert_eq!(c.runtime, 2);
        }
        check_no_orphans(&world, &slot, 2);
    });
}

/// A thread's exit (`retire_if` on the exiting thread, then `retire_exited` on the closer,
/// as `manager::thread_slots` runs them) racing close_all: the client is closed exactly
/// once, reachable by close_all until it is closed, and the exit is done with the slot.
#[test]
fn thread_exit_racing_close_all() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let (s2, w2) = (slot.clone(), world.clone());
        let exit = thread::spawn(move || {
            let d = FakeDriver::new(&w2);
            let mine = |c: &FakeClient, _: &FakeKey| c.runtime == 1;
            let step = FakeSlot::retire_if(&s2, mine);
            loom::future::block_on(retire_exited(&d, &s2, mine, step))
        });
        let report = close_all(vec![slot.clone()], &FakeDriver::new(&world));
        let done = exit.join().unwrap();
        first.assert_closed_once("a retired client is closed by whoever retired it");
        assert!(
            done,
            "the exit waited out the close_all and was done with the slot"
        );
        assert!(
            report.closed <= 1,
            "counted at most once by close_all: {report:?}"
        );
        // Nothing is left: close_all waited for the exit's retirement or did it itself.
        assert!(slot.try_hit(&1).is_none());
        check_no_orphans(&world, &slot, 1);
    });
}

/// A caller whose slot is being retired (it may hold the very body the retirement
/// drains) never waits for the retirement: it builds anew at once.
#[test]
fn retirement_never_makes_a_caller_wait() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let Retire::Lease(lease) = FakeSlot::retire(&slot) else {
            panic!("a ready slot retires");
        };
        // The retirement is held open (its drain not finished) while the caller asks:
        // the impatient timer would turn any wait into a take-over, so also check no wait
        // happened by the count of builds.
        let d = FakeDriver::new(&world);
        let got = get_client(&slot, &d, &ShutdownGate::new(), &FakeKey::new(1)).unwrap();
        assert_eq!(d.waits(), 0, "a caller waited on a retirement");
        assert_ne!(got.id, first.id);
        assert!(!first.is_open(), "the retired client read closing at once");
        let d = FakeDriver::new(&world);
        let _ = loom::future::block_on(close_retired(&d, lease, d.close_timeout()));
        first.assert_closed_once("a retired client is closed by its retirer");
        // The retirement's end left the new client in place.
        assert_eq!(slot.try_hit(&1).map(|(c, _)| c.id), Some(got.id));
    });
}

/// A retire-all whose deadline passes while a replacement is stuck before its reset (its
/// leader parked on a runtime nobody drives) force-clears the slot: the stale client is
/// closed, its requests counted as cut; the leader, when it comes back, is superseded.
#[test]
fn deadline_force_clears_a_stuck_replacement() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        assert!(first.life.begin_request() && first.life.begin_request());
        let Acquire::Lead(lease) = FakeSlot::acquire(&slot, FakeKey::new(2)) else {
            panic!("another binding leads");
        };
        let report = close_all(
            vec![slot.clone()],
            &FakeDriver::with(&world, Wait::Impatient, Build::Ready),
        );
        assert_eq!(
            (
                report.closed,
                report.forced,
                report.in_flight_cut,
                report.waited_for_replacement
            ),
            (1, 1, 2, 1),
            "closed, forced, cut, waited"
        );
        first.assert_closed_once("a stuck replacement's stale is force-cleared");
        assert!(lease.reset().is_err(), "the stuck leader is superseded");
    });
}

/// The same for a retirement stuck mid-close (a thread's exit whose closer never ran).
#[test]
fn deadline_force_clears_a_stuck_retirement() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        assert!(first.life.begin_request());
        let Retire::Lease(lease) = FakeSlot::retire(&slot) else {
            panic!("a ready slot retires");
        };
        let report = close_all(
            vec![slot.clone()],
            &FakeDriver::with(&world, Wait::Impatient, Build::Ready),
        );
        assert_eq!(
            (
                report.closed,
                report.forced,
                report.in_flight_cut,
                report.waited_for_replacement
            ),
            (1, 1, 1, 1),
            "closed, forced, cut, waited"
        );
        first.assert_closed_once("a stuck retirement's client is force-cleared");
        lease.finish();
        assert!(slot.try_hit(&1).is_none());
    });
}
