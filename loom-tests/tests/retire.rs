//! Retire-all (`lifecycle::retire_all`: `close_all` and `shutdown`) racing `client()`,
//! replacements, a thread's exit, and a forced clear.
#![cfg(rtlocal_loom)]

use std::time::Duration;

use loom::sync::{Arc, Mutex};
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

/// The manager's list of thread slots (`Shared::thread_slots`): what `close_all` scans.
type Listed = Arc<Mutex<Vec<Arc<FakeSlot>>>>;

/// A thread's exit as `manager::thread_slots` runs it: `retire_if` (the exited thread's
/// clients: here every client of the slot, which is that thread's) on the exiting thread,
/// then `retire_exited` on the closer; the slot leaves the list only when that says it is
/// done with it. Returns what `retire_exited` said and the bounded waits it made.
fn exit_thread(listed: &Listed, slot: &Arc<FakeSlot>, d: &FakeDriver) -> (bool, Vec<Duration>) {
    let mine = |_: &FakeClient, _: &FakeKey| true;
    let step = FakeSlot::retire_if(slot, mine);
    let done = loom::future::block_on(retire_exited(d, slot, mine, step));
    if done {
        listed.lock().unwrap().retain(|s| !Arc::ptr_eq(s, slot));
    }
    (done, d.timer.bounds())
}

/// The rest of a replacement whose lease was taken before the thread exited (a task of
/// the exiting thread that moved to another thread): close the stale client, reset,
/// build, publish. Returns the published client.
fn finish_replacement(lease: Lease<FakeClient, FakeKey>, d: &FakeDriver) -> FakeClient {
    if let Some(stale) = lease.stale() {
        let _ = loom::future::block_on(d.close(stale, d.close_timeout()));
    }
    let building = lease.reset().expect("nobody supersedes this replacement");
    match building.publish(d.world.build(2), &ShutdownGate::new()) {
        Publish::Published(c) => c,
        other => panic!("the replacement publishes, got {other:?}"),
    }
}

/// A slot primed with runtime 1's client, listed, and a replacement for runtime 2 led
/// (its lease taken) before the thread exits.
fn exit_during_a_replacement() -> (
    Arc<World>,
    Arc<FakeSlot>,
    FakeClient,
    Listed,
    Lease<FakeClient, FakeKey>,
) {
    let world = World::new();
    let (slot, first) = primed(&world, 1);
    let listed: Listed = Arc::new(Mutex::new(vec![slot.clone()]));
    let Acquire::Lead(lease) = FakeSlot::acquire(&slot, FakeKey::new(2)) else {
        panic!("another runtime's caller leads");
    };
    (world, slot, first, listed, lease)
}

/// A thread exits while a replacement of its slot is stuck (its leader parked on a
/// runtime nobody drives) past the exit's bound (the leader's whole budget, close + build
/// timeouts): the exit is not done with the slot, which stays listed; when the leader
/// comes back and publishes, `close_all` over the listed slots closes what it published.
#[test]
fn thread_exit_past_the_bound_leaves_the_slot_to_close_all() {
    model(|| {
        let (world, slot, first, listed, lease) = exit_during_a_replacement();
        let (s2, l2, w2) = (slot.clone(), listed.clone(), world.clone());
        let exit = thread::spawn(move || {
            exit_thread(
                &l2,
                &s2,
                &FakeDriver::with(&w2, Wait::Impatient, Build::Ready),
            )
        });
        let (done, bounds) = exit.join().unwrap();
        assert!(
            !done,
            "the slot is still busy past the bound: the exit must leave it to close_all"
        );
        assert_eq!(
            bounds,
            vec![FakeDriver::WAIT_BOUND],
            "the exit waits once, for the leader's whole budget"
        );
        assert_eq!(listed.lock().unwrap().len(), 1, "the slot is still listed");
        let published = finish_replacement(lease, &FakeDriver::new(&world));
        let report = close_all(listed.lock().unwrap().clone(), &FakeDriver::new(&world));
        assert_eq!(report.closed, 1, "close_all closes the published client");
        first.assert_closed_once("the leader closes the stale client");
        published.assert_closed_once("close_all closes what the stuck leader published");
        assert!(world.open().is_empty());
    });
}

/// A thread's exit racing the replacement of its slot, led before the exit (by a task
/// that moved to another thread). With the patient timer the exit waits for the leader
/// and closes what it published, then is done with the slot; with the impatient one it
/// may give up first, leaving the slot listed. Either way `close_all` over the listed
/// slots leaves no client open and closes each exactly once.
fn thread_exit_racing_a_replacement(wait: Wait) {
    model(move || {
        let (world, slot, first, listed, lease) = exit_during_a_replacement();
        let (s2, l2, w2) = (slot.clone(), listed.clone(), world.clone());
        let exit = thread::spawn(move || {
            exit_thread(&l2, &s2, &FakeDriver::with(&w2, wait, Build::Ready))
        });
        let w3 = world.clone();
        let leader = thread::spawn(move || finish_replacement(lease, &FakeDriver::new(&w3)));
        let (done, _) = exit.join().unwrap();
        let published = leader.join().unwrap();
        if wait == Wait::Patient {
            assert!(
                done,
                "the exit waited for the leader and was done with the slot"
            );
            published.assert_closed_once("the exit closes what the replacement published");
        }
        assert_eq!(
            listed.lock().unwrap().len(),
            usize::from(!done),
            "the slot is listed until the exit is done with it"
        );
        if done {
            assert!(
                world.open().is_empty(),
                "the exit said it was done with the slot, but {:?} is open in it",
                world.open()
            );
        }
        let _ = close_all(listed.lock().unwrap().clone(), &FakeDriver::new(&world));
        first.assert_closed_once("the leader closes the stale client");
        published.assert_closed_once("the exit or close_all closes the published client");
        assert!(world.open().is_empty());
    });
}

/// The exit's wait ends when the leader's does.
#[test]
fn thread_exit_waits_for_a_replacement_and_closes_what_it_publishes() {
    thread_exit_racing_a_replacement(Wait::Patient);
}

/// The exit's bound passes unless the leader is already done.
#[test]
fn thread_exit_giving_up_on_a_replacement_leaves_it_to_close_all() {
    thread_exit_racing_a_replacement(Wait::Impatient);
}
