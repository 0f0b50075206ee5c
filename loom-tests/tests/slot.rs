//! Models 1 and 4: replacement races and close_all racing client().
#![cfg(rtlocal_loom)]

use loom::sync::Arc;
use loom::thread;
use rtlocal::__loom::{Acquire, SlotClient};
use rtlocal_loom_tests::*;

fn primed(world: &World, runtime: usize) -> (Arc<FakeSlot>, FakeClient) {
    let slot = Arc::new(FakeSlot::new());
    let stale = get_client(&slot, world, &FakeKey::new(runtime));
    (slot, stale)
}

fn check_replacement(world: &World, slot: &FakeSlot, stale: &FakeClient, got: &[FakeClient]) {
    // Exactly one new client was built and everyone got it.
    assert_eq!(world.created(), 2, "one stale + exactly one replacement");
    let new = &got[0];
    assert_ne!(new.id, stale.id, "nobody receives the stale client");
    assert!(
        got.iter().all(|c| c.id == new.id),
        "all callers get the one new client"
    );
    // The stale one was closed, exactly once; the new one is live and published.
    assert_eq!(stale.closes(), 1);
    assert!(new.is_open() && new.closes() == 0);
    assert_eq!(slot.try_hit(&2).map(|(c, _)| c.id), Some(new.id));
}

/// Model 1: two callers race a replacement on one slot.
#[test]
fn two_callers_race_a_replacement() {
    model(|| {
        let world = World::new();
        let (slot, stale) = primed(&world, 1);
        let key = FakeKey::new(2);
        let (s2, w2, k2) = (slot.clone(), world.clone(), key.clone());
        let t = thread::spawn(move || get_client(&s2, &w2, &k2));
        let mine = get_client(&slot, &world, &key);
        let theirs = t.join().unwrap();
        check_replacement(&world, &slot, &stale, &[mine, theirs]);
    });
}

/// Model 1, three callers.
#[test]
fn three_callers_race_a_replacement() {
    model(|| {
        let world = World::new();
        let (slot, stale) = primed(&world, 1);
        let key = FakeKey::new(2);
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (s, w, k) = (slot.clone(), world.clone(), key.clone());
                thread::spawn(move || get_client(&s, &w, &k))
            })
            .collect();
        let mut got = vec![get_client(&slot, &world, &key)];
        got.extend(ts.into_iter().map(|t| t.join().unwrap()));
        check_replacement(&world, &slot, &stale, &got);
    });
}

/// A leader cancelled mid-replacement (its future dropped) racing a waiter: the waiter
/// does not hang, the stale client is closed exactly once, nothing leaks.
#[test]
fn cancelled_leader_racing_a_waiter() {
    model(|| {
        let world = World::new();
        let (slot, stale) = primed(&world, 1);
        let key = FakeKey::new(2);
        let (s2, k2) = (slot.clone(), key.clone());
        let t = thread::spawn(move || {
            if let Acquire::Lead(lease) = s2.acquire(k2) {
                drop(lease); // cancelled before closing the stale client
            }
        });
        let got = get_client(&slot, &world, &key);
        t.join().unwrap();
        assert_ne!(got.id, stale.id);
        assert_eq!(stale.closes(), 1);
        assert!(got.is_open());
        assert_eq!(slot.try_hit(&2).map(|(c, _)| c.id), Some(got.id));
        assert_eq!(world.created(), 2);
    });
}

/// A caller from another runtime on the same slot takes over a replacement whose
/// leader cannot progress, instead of waiting on it.
#[test]
fn other_runtime_supersedes_a_stuck_replacement() {
    model(|| {
        let world = World::new();
        let (slot, stale) = primed(&world, 1);
        // Runtime 2's leader begins a replacement and stalls before closing.
        let lease = match slot.acquire(FakeKey::new(2)) {
            Acquire::Lead(l) => l,
            _ => unreachable!("the slot was ready for runtime 1"),
        };
        let (s3, w3) = (slot.clone(), world.clone());
        let t = thread::spawn(move || get_client(&s3, &w3, &FakeKey::new(3)));
        // The stalled leader resumes, racing the takeover.
        let leader_stale = lease.stale().cloned();
        if let Some(s) = &leader_stale {
            s.close();
        }
        let published = lease.publish_with(|| Ok(world.build(2)));
        let c3 = t.join().unwrap();
        assert_eq!(stale.closes(), 1);
        assert!(c3.is_open());
        // Whoever published last owns the slot; nothing else is left open.
        let current = slot.try_hit(&3).map(|(c, _)| c.id);
        assert_eq!(current, Some(c3.id));
        for c in world.all() {
            assert!(
                c.id == c3.id
                    || c.is_closed()
                    || published
                        .as_ref()
                        .is_ok_and(|p| p.id == c.id && c.is_closed()),
                "client {} orphaned",
                c.id
            );
        }
    });
}

fn check_no_orphans(world: &World, slot: &FakeSlot, runtime: usize) {
    let current = slot.try_hit(&runtime).map(|(c, _)| c);
    let mut open = 0;
    for c in world.all() {
        assert!(c.closes() <= 1, "client {} closed twice", c.id);
        if c.is_open() {
            open += 1;
            assert_eq!(
                current.as_ref().map(|k| k.id),
                Some(c.id),
                "client {} is open but not in the slot: orphaned",
                c.id
            );
        } else {
            assert_eq!(
                c.closes(),
                1,
                "client {} is closed but its close never ran",
                c.id
            );
        }
    }
    // What stats() reports as live (created - closed) is exactly what is open.
    let closed: usize = world.all().iter().map(FakeClient::closes).sum();
    assert_eq!(world.created() - closed, open);
}

/// Model 4: close_all on one thread racing client() on the same runtime.
#[test]
fn close_all_racing_client_same_runtime() {
    model(|| {
        let world = World::new();
        let (slot, _first) = primed(&world, 1);
        let s2 = slot.clone();
        let t = thread::spawn(move || close_all(&s2));
        let got = get_client(&slot, &world, &FakeKey::new(1));
        t.join().unwrap();
        // The caller may have got the first client just before close_all closed it
        // (its requests are then re-routed); either way nothing is orphaned.
        let _ = got;
        check_no_orphans(&world, &slot, 1);
    });
}

/// Model 4: close_all racing a replacement for another runtime.
#[test]
fn close_all_racing_a_replacement() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let s2 = slot.clone();
        let t = thread::spawn(move || close_all(&s2));
        let got = get_client(&slot, &world, &FakeKey::new(2));
        t.join().unwrap();
        assert_ne!(got.id, first.id);
        assert_eq!(first.closes(), 1);
        check_no_orphans(&world, &slot, 2);
    });
}

/// A shutdown whose deadline passed force-clears a slot while a replacement runs: the
/// stale client is closed once, and whatever the leader then builds is the slot's live
/// client, never an orphan.
#[test]
fn force_clear_racing_a_replacement() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let s2 = slot.clone();
        let t = thread::spawn(move || s2.force_clear());
        let got = get_client(&slot, &world, &FakeKey::new(2));
        t.join().unwrap();
        assert_eq!(first.closes(), 1);
        assert_eq!(got.runtime, 2);
        check_no_orphans(&world, &slot, 2);
    });
}

/// A waiter that gave up on a retirement (its close_all parked on an idle runtime) takes
/// over, racing that retirement finishing: the retired client is closed exactly once,
/// the caller gets a client for its runtime, nothing is orphaned.
#[test]
fn take_over_racing_a_retirement() {
    model(|| {
        let world = World::new();
        let (slot, first) = primed(&world, 1);
        let s2 = slot.clone();
        let t = thread::spawn(move || close_all(&s2));
        let got = loop {
            match slot.take_over(FakeKey::new(1)) {
                Acquire::Hit(c) => break c,
                Acquire::Wait(_) => unreachable!("take_over never waits"),
                Acquire::Lead(lease) => {
                    if let Some(stale) = lease.stale() {
                        stale.close();
                    }
                    match lease.publish_with(|| Ok(world.build(1))) {
                        Ok(c) => break c,
                        Err(_) => continue,
                    }
                }
            }
        };
        t.join().unwrap();
        assert_eq!(first.closes(), 1);
        assert_eq!(got.runtime, 1);
        check_no_orphans(&world, &slot, 1);
    });
}
