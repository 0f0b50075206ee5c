//! A slot: the state machine that hands out, replaces and retires one client.
//!
//! ```text
//!             acquire (no match)         reset             publish
//!   Empty ─────────────────────▶ Replacing{stale} ──▶ Replacing{} ──▶ Ready
//!   Ready(stale) ──────────────▶    │  (closing)       (building)  │
//!                                   └── cancelled / failed / superseded ──▶ Empty
//!   Ready ── retire (close_all, shutdown, thread exit) ──▶ Retiring{client} ── finish ──▶ Empty
//! ```
//!
//! # Invariants
//! 1. At most one leader per replacement: only the caller that moved the slot into
//!    `Replacing` holds its [`Lease`]; callers with the same binding wait on its
//!    [`Completion`], which the leader completes on every path (published, failed,
//!    cancelled, superseded).
//! 2. The stale client is closed *before* the slot is reset ([`Lease::reset`] force-closes
//!    whatever the graceful close left), and the new client is built after the reset,
//!    outside the lock, and published under it.
//! 3. A client never goes back into `Ready` once it left it: every path that takes a
//!    client out of `Ready` marks it closing (or closes it) under the slot lock. So an open
//!    client handed out for a binding is still that binding's published client — the hot
//!    cache relies on this.
//! 4. A client leaves the slot only once it is closed, or into the hands of a lease that
//!    closes it on every path (a dropped lease force-closes). So every client a manager
//!    built is reachable through its slots until it is closed, except a retiring client
//!    whose slot a new caller took over (its retirer holds it and closes it, bounded).
//! 5. A retirement never makes a caller wait: the caller may hold the very request the
//!    retirement drains (an unread response body), so it leads a fresh build at once.
//! 6. No publish once the [`ShutdownGate`] is closed: the gate is checked under the slot
//!    lock, and a client built for a refused publish is force-closed.
//!
//! The module knows nothing of tokio or hyper, so loom models it exactly as it runs.

use std::fmt;

use super::lease::{Lease, RetireLease};
use crate::error::Error;
use crate::lifecycle::completion::Completion;
use crate::lifecycle::driver::{BindingKey, SlotClient};
use crate::sync::{Arc, Mutex, MutexGuard};

/// How a replacement ended, as seen by the callers waiting on it.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub enum Outcome<C> {
    /// The new client.
    Ready(C),
    /// Building the new client failed (or timed out, or panicked).
    Failed(Error),
    /// The replacement was abandoned or superseded: ask the slot again.
    Retry,
}

pub(super) type Done<C> = Arc<Completion<Outcome<C>>>;

/// One thread's (or one runtime's) slot.
#[doc(hidden)]
pub struct Slot<C, K> {
    pub(super) state: Mutex<State<C, K>>,
}

pub(super) enum State<C, K> {
    Empty,
    Ready {
        client: C,
        key: K,
    },
    /// A leader is closing `stale` (while `Some`), then building.
    Replacing {
        key: K,
        stale: Option<C>,
        done: Done<C>,
    },
    /// `close_all`, `shutdown` or a thread's exit is closing `client`.
    Retiring {
        client: C,
        key: K,
        done: Done<C>,
    },
}

/// What [`Slot::acquire`] tells the caller to do.
#[doc(hidden)]
pub enum Acquire<C: SlotClient, K: BindingKey> {
    /// The slot's client matches: use it.
    Hit(C),
    /// The caller leads a replacement: close [`Lease::stale`] if any, [`Lease::reset`],
    /// build, publish.
    Lead(Lease<C, K>),
    /// Another caller leads a replacement for the same binding: await this.
    Wait(Done<C>),
}

/// What [`Slot::retire`] found.
#[doc(hidden)]
pub enum Retire<C: SlotClient, K: BindingKey> {
    /// Close the lease's client, then [`RetireLease::finish`].
    Lease(RetireLease<C, K>),
    /// A replacement or another retirement is under way; await it and retire again.
    Busy(Done<C>),
    /// Nothing to close.
    Empty,
}

impl<C: SlotClient, K: BindingKey> Slot<C, K> {
    /// An empty slot.
    pub fn new() -> Self {
        Slot {
            state: Mutex::new(State::Empty),
        }
    }

    /// The fast path: the current client and its binding, if they match `probe` and
    /// the client is open.
    #[inline]
    pub fn try_hit(&self, probe: &K::Probe) -> Option<(C, K)> {
        match &*self.state.lock() {
            State::Ready { client, key } if key.matches(probe) && client.is_open() => {
                Some((client.clone(), key.clone()))
            }
            _ => None,
        }
    }

    /// The slow path: decide whether the caller uses, waits for, or builds the client
    /// for binding `key`.
    #[cold]
    pub fn acquire(this: &Arc<Self>, key: K) -> Acquire<C, K> {
        let st = this.state.lock();
        match &*st {
            State::Ready { client, key: k } if k.same_binding(&key) && client.is_open() => {
                return Acquire::Hit(client.clone());
            }
            State::Replacing { key: k, done, .. } if k.same_binding(&key) => {
                return Acquire::Wait(Arc::clone(done));
            }
            _ => {}
        }
        Slot::lead(this, st, key)
    }

    /// Like [`acquire`](Self::acquire), but never waits: a replacement under way —
    /// whatever its binding — is superseded (its stale client force-closed, its waiters
    /// told to retry). For a waiter whose wait outlasted the leader's whole budget.
    #[cold]
    pub fn take_over(this: &Arc<Self>, key: K) -> Acquire<C, K> {
        let st = this.state.lock();
        if let State::Ready { client, key: k } = &*st {
            if k.same_binding(&key) && client.is_open() {
                return Acquire::Hit(client.clone());
            }
        }
        Slot::lead(this, st, key)
    }

    /// Makes the caller the leader of a replacement for `key`.
    fn lead(this: &Arc<Self>, mut st: MutexGuard<'_, State<C, K>>, key: K) -> Acquire<C, K> {
        let mut superseded = None;
        let stale = match std::mem::replace(&mut *st, State::Empty) {
            State::Empty => None,
            State::Ready { client, .. } => {
                // Invariant 3: out of `Ready`, so closing.
                client.begin_close();
                Some(client)
            }
            State::Replacing { stale, done, .. } => {
                // Its leader may be parked on a runtime nobody drives: do not wait for it.
                if let Some(s) = &stale {
                    s.force_close();
                }
                superseded = Some(done);
                None
            }
            // Invariant 5: the retirer keeps its client and closes it; we build anew.
            State::Retiring { .. } => None,
        };
        let done = Arc::new(Completion::new());
        *st = State::Replacing {
            key,
            stale: stale.clone(),
            done: Arc::clone(&done),
        };
        drop(st);
        if let Some(old) = superseded {
            old.complete(Outcome::Retry);
        }
        Acquire::Lead(Lease {
            slot: Arc::clone(this),
            done,
            stale,
            finished: false,
        })
    }

    /// Begins retiring the current client (for `close_all` and `shutdown`): on
    /// [`Retire::Lease`] the caller closes [`RetireLease::client`] and then calls
    /// [`RetireLease::finish`]; on [`Retire::Busy`] something is under way: wait for it
    /// and ask again.
    pub fn retire(this: &Arc<Self>) -> Retire<C, K> {
        Slot::retire_if(this, |_, _| true)
    }

    /// [`retire`](Self::retire) if `pred` selects the ready client (a thread's exit
    /// retires only that thread's client); [`Retire::Empty`] otherwise.
    pub fn retire_if(this: &Arc<Self>, pred: impl Fn(&C, &K) -> bool) -> Retire<C, K> {
        let mut st = this.state.lock();
        match &*st {
            State::Ready { client, key } if pred(client, key) => {}
            State::Replacing { done, .. } | State::Retiring { done, .. } => {
                return Retire::Busy(Arc::clone(done));
            }
            _ => return Retire::Empty,
        }
        let State::Ready { client, key } = std::mem::replace(&mut *st, State::Empty) else {
            unreachable!("matched Ready above, under the same lock");
        };
        // Invariant 3.
        client.begin_close();
        let done = Arc::new(Completion::new());
        *st = State::Retiring {
            client: client.clone(),
            key,
            done: Arc::clone(&done),
        };
        Retire::Lease(RetireLease {
            slot: Arc::clone(this),
            done,
            client,
            finished: false,
        })
    }

    /// Force-closes whatever client the slot holds (ready, stale, or retiring), empties
    /// it and tells waiters to retry. For a shutdown whose deadline passed while a
    /// replacement or retirement was stuck. Returns `Some(requests cut)` if this call
    /// closed a client.
    pub fn force_clear(&self) -> Option<u64> {
        let mut st = self.state.lock();
        let (client, done) = match std::mem::replace(&mut *st, State::Empty) {
            State::Empty => (None, None),
            State::Ready { client, .. } => (Some(client), None),
            State::Replacing { stale, done, .. } => (stale, Some(done)),
            State::Retiring { client, done, .. } => (Some(client), Some(done)),
        };
        let cleared = client.and_then(|c| {
            let cut = c.in_flight();
            c.force_close().then_some(cut)
        });
        drop(st);
        if let Some(done) = done {
            done.complete(Outcome::Retry);
        }
        cleared
    }

    /// Force-closes the client `pred` selects (runtime teardown): a ready one is dropped
    /// from the slot; a stale or retiring one is closed in place and its lease finds it
    /// closed. Returns whether anything was closed by this call.
    pub fn clear_if(&self, pred: impl Fn(&C, &K) -> bool) -> bool {
        let mut st = self.state.lock();
        match &*st {
            State::Ready { client, key } if pred(client, key) => {
                let closed = client.force_close();
                *st = State::Empty;
                closed
            }
            State::Replacing {
                stale: Some(s),
                key,
                ..
            } if pred(s, key) => s.force_close(),
            State::Retiring { client, key, .. } if pred(client, key) => client.force_close(),
            _ => false,
        }
    }

    fn describe(&self) -> &'static str {
        match &*self.state.lock() {
            State::Empty => "empty",
            State::Ready { .. } => "ready",
            State::Replacing { stale: Some(_), .. } => "replacing (closing the stale client)",
            State::Replacing { stale: None, .. } => "replacing (building)",
            State::Retiring { .. } => "retiring",
        }
    }

    /// Under the lock: is the slot still in the replacement or retirement `done` marks?
    pub(super) fn is_ours(st: &State<C, K>, done: &Done<C>) -> bool {
        match st {
            State::Replacing { done: d, .. } | State::Retiring { done: d, .. } => {
                Arc::ptr_eq(d, done)
            }
            _ => false,
        }
    }

    /// Empties the slot if it is still in `done`'s replacement or retirement, then
    /// completes `done` with `outcome` (always: a superseded `done` was completed
    /// already, and a second completion is ignored).
    pub(super) fn end(&self, done: &Done<C>, outcome: Outcome<C>) {
        let mut st = self.state.lock();
        if Self::is_ours(&st, done) {
            if let State::Replacing { stale: Some(s), .. } = &*st {
                s.force_close();
            }
            *st = State::Empty;
        }
        drop(st);
        done.complete(outcome);
    }
}

impl<C: SlotClient, K: BindingKey> Default for Slot<C, K> {
    fn default() -> Self {
        Slot::new()
    }
}

impl<C: SlotClient, K: BindingKey> fmt::Debug for Slot<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("state", &self.describe())
            .finish()
    }
}

impl<C: SlotClient, K: BindingKey> fmt::Debug for Acquire<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acquire::Hit(_) => "Acquire::Hit",
            Acquire::Lead(_) => "Acquire::Lead",
            Acquire::Wait(_) => "Acquire::Wait",
        })
    }
}

impl<C: SlotClient, K: BindingKey> fmt::Debug for Retire<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Retire::Lease(_) => "Retire::Lease",
            Retire::Busy(_) => "Retire::Busy",
            Retire::Empty => "Retire::Empty",
        })
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::FutureExt;

    use super::*;
    use crate::lifecycle::gate::ShutdownGate;
    use crate::lifecycle::phase::{Lifecycle, Phase};
    use crate::lifecycle::slot::{Publish, Reset};

    #[derive(Clone, Debug)]
    struct C {
        id: usize,
        life: Arc<Lifecycle>,
        closes: Arc<AtomicUsize>,
    }

    impl C {
        fn new(id: usize) -> Self {
            C {
                id,
                life: Arc::new(Lifecycle::new()),
                closes: Arc::new(AtomicUsize::new(0)),
            }
        }

        fn closes(&self) -> usize {
            self.closes.load(Ordering::SeqCst)
        }

        fn phase(&self) -> Phase {
            self.life.phase()
        }
    }

    impl SlotClient for C {
        fn is_open(&self) -> bool {
            self.life.phase() == Phase::Open
        }

        fn begin_close(&self) {
            self.life.begin_close();
        }

        fn force_close(&self) -> bool {
            let first = self.life.finish_close().first;
            if first {
                self.closes.fetch_add(1, Ordering::SeqCst);
            }
            first
        }

        fn in_flight(&self) -> u64 {
            self.life.in_flight()
        }
    }

    #[derive(Clone, Debug)]
    struct K(usize);

    impl BindingKey for K {
        type Probe = usize;

        fn matches(&self, probe: &usize) -> bool {
            self.0 == *probe
        }

        fn same_binding(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    type S = Slot<C, K>;

    fn lead(slot: &Arc<S>, key: usize) -> Lease<C, K> {
        match S::acquire(slot, K(key)) {
            Acquire::Lead(lease) => lease,
            other => panic!("expected to lead, got {other:?}"),
        }
    }

    fn wait(slot: &Arc<S>, key: usize) -> Done<C> {
        match S::acquire(slot, K(key)) {
            Acquire::Wait(done) => done,
            other => panic!("expected to wait, got {other:?}"),
        }
    }

    fn outcome(done: &Done<C>) -> Option<Outcome<C>> {
        Completion::wait(Arc::clone(done)).now_or_never()
    }

    /// A slot whose client `c` is published for binding `key`.
    fn ready(c: &C, key: usize) -> Arc<S> {
        let slot = Arc::new(S::new());
        let building = lead(&slot, key).reset().expect("not superseded");
        match building.publish(c.clone(), &ShutdownGate::new()) {
            Publish::Published(p) => assert_eq!(p.id, c.id),
            other => panic!("expected a publish, got {other:?}"),
        }
        slot
    }

    fn state(slot: &S) -> String {
        format!("{slot:?}")
    }

    #[test]
    fn debug_names_every_state_and_right() {
        let slot = Arc::new(S::new());
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
        let c = C::new(1);
        let slot = ready(&c, 1);
        assert_eq!(state(&slot), r#"Slot { state: "ready" }"#);
        assert_eq!(format!("{:?}", S::acquire(&slot, K(1))), "Acquire::Hit");
        let lease = lead(&slot, 2);
        assert_eq!(
            format!("{lease:?}"),
            "Lease { has_stale: true, finished: false }"
        );
        assert_eq!(
            state(&slot),
            r#"Slot { state: "replacing (closing the stale client)" }"#
        );
        assert_eq!(format!("{:?}", S::acquire(&slot, K(2))), "Acquire::Wait");
        assert_eq!(format!("{:?}", S::retire(&slot)), "Retire::Busy");
        let building = lease.reset().unwrap();
        assert_eq!(format!("{building:?}"), "Building { finished: false }");
        assert_eq!(state(&slot), r#"Slot { state: "replacing (building)" }"#);
        let _ = building.publish(C::new(2), &ShutdownGate::new());
        let Retire::Lease(retiring) = S::retire(&slot) else {
            panic!("a ready slot retires");
        };
        assert_eq!(format!("{retiring:?}"), "RetireLease { finished: false }");
        assert_eq!(state(&slot), r#"Slot { state: "retiring" }"#);
        retiring.finish();
        assert_eq!(format!("{:?}", S::retire(&slot)), "Retire::Empty");
        assert_eq!(format!("{:?}", S::acquire(&slot, K(3))), "Acquire::Lead");
    }

    #[test]
    fn try_hit_answers_only_for_its_binding_while_open() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        assert_eq!(slot.try_hit(&1).map(|(h, k)| (h.id, k.0)), Some((1, 1)));
        assert!(slot.try_hit(&2).is_none(), "another binding's probe");
        c.begin_close();
        assert!(slot.try_hit(&1).is_none(), "a closing client");
    }

    #[test]
    fn acquire_hits_waits_or_leads() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        let Acquire::Hit(h) = S::acquire(&slot, K(1)) else {
            panic!("same binding, open: a hit");
        };
        assert_eq!(h.id, 1);
        // Another binding: lead, the stale client marked closing at once.
        let lease = lead(&slot, 2);
        assert_eq!(lease.stale().map(|s| s.id), Some(1));
        assert_eq!(c.phase(), Phase::Closing);
        // The same binding waits; another one supersedes.
        let waiter = wait(&slot, 2);
        let other = lead(&slot, 3);
        assert_eq!(
            c.closes(),
            1,
            "a superseded replacement's stale is force-closed"
        );
        assert!(other.stale().is_none());
        assert!(matches!(outcome(&waiter), Some(Outcome::Retry)));
        assert_eq!(lease.reset().unwrap_err(), Reset::Superseded);
        let _ = other;
    }

    #[test]
    fn a_closed_client_is_never_a_hit() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        c.begin_close();
        assert!(matches!(S::acquire(&slot, K(1)), Acquire::Lead(_)));
        let c = C::new(2);
        let slot = ready(&c, 1);
        c.begin_close();
        assert!(matches!(S::take_over(&slot, K(1)), Acquire::Lead(_)));
    }

    #[test]
    fn take_over_never_hands_out_another_bindings_client() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        let Acquire::Hit(h) = S::take_over(&slot, K(1)) else {
            panic!("same binding, open: a hit");
        };
        assert_eq!(h.id, 1);
        let Acquire::Lead(lease) = S::take_over(&slot, K(2)) else {
            panic!("another binding: lead");
        };
        assert_eq!(lease.stale().map(|s| s.id), Some(1));
        // A take-over supersedes a replacement for the same binding, force-closing its stale.
        let waiter = wait(&slot, 2);
        let Acquire::Lead(taken) = S::take_over(&slot, K(2)) else {
            panic!("a take-over never waits");
        };
        assert_eq!(c.closes(), 1);
        assert!(matches!(outcome(&waiter), Some(Outcome::Retry)));
        assert_eq!(lease.reset().unwrap_err(), Reset::Superseded);
        let building = taken.reset().unwrap();
        assert!(matches!(
            building.publish(C::new(2), &ShutdownGate::new()),
            Publish::Published(_)
        ));
    }

    #[test]
    fn reset_force_closes_the_stale_and_keeps_the_slot() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        let lease = lead(&slot, 2);
        let building = lease.reset().unwrap();
        assert_eq!(
            c.closes(),
            1,
            "closed before the reset, whatever the close did"
        );
        assert_eq!(state(&slot), r#"Slot { state: "replacing (building)" }"#);
        let waiter = wait(&slot, 2);
        let new = C::new(2);
        let Publish::Published(p) = building.publish(new.clone(), &ShutdownGate::new()) else {
            panic!("published");
        };
        assert_eq!(p.id, 2);
        assert!(matches!(outcome(&waiter), Some(Outcome::Ready(r)) if r.id == 2));
        assert_eq!(slot.try_hit(&2).map(|(h, _)| h.id), Some(2));
        assert!(new.is_open());
    }

    #[test]
    fn a_superseded_build_is_closed_not_published() {
        let slot = Arc::new(S::new());
        let building = lead(&slot, 1).reset().unwrap();
        let Acquire::Lead(taken) = S::take_over(&slot, K(1)) else {
            panic!("a take-over leads");
        };
        let late = C::new(1);
        assert!(matches!(
            building.publish(late.clone(), &ShutdownGate::new()),
            Publish::Superseded
        ));
        assert_eq!(late.closes(), 1);
        assert_eq!(state(&slot), r#"Slot { state: "replacing (building)" }"#);
        drop(taken);
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
    }

    #[test]
    fn a_closed_gate_refuses_the_publish() {
        let slot = Arc::new(S::new());
        let building = lead(&slot, 1).reset().unwrap();
        let waiter = wait(&slot, 1);
        let gate = ShutdownGate::new();
        gate.close();
        let c = C::new(1);
        assert!(matches!(
            building.publish(c.clone(), &gate),
            Publish::ShutDown
        ));
        assert_eq!(c.closes(), 1);
        assert!(matches!(outcome(&waiter), Some(Outcome::Failed(e)) if e.is_shut_down()));
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
    }

    #[test]
    fn fail_and_drop_end_a_build() {
        let slot = Arc::new(S::new());
        let building = lead(&slot, 1).reset().unwrap();
        let waiter = wait(&slot, 1);
        building.fail(Error::build("no"));
        assert!(matches!(outcome(&waiter), Some(Outcome::Failed(e)) if e.is_build()));
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);

        let building = lead(&slot, 1).reset().unwrap();
        let waiter = wait(&slot, 1);
        drop(building);
        assert!(matches!(outcome(&waiter), Some(Outcome::Retry)));
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
    }

    #[test]
    fn a_dropped_lease_force_closes_its_stale_and_frees_the_slot() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        let lease = lead(&slot, 2);
        let waiter = wait(&slot, 2);
        assert_eq!(c.closes(), 0);
        drop(lease);
        assert_eq!(c.closes(), 1);
        assert!(matches!(outcome(&waiter), Some(Outcome::Retry)));
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
    }

    #[test]
    fn retire_if_retires_only_what_it_selects() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        assert!(matches!(S::retire_if(&slot, |_, _| false), Retire::Empty));
        assert!(c.is_open());
        assert_eq!(state(&slot), r#"Slot { state: "ready" }"#);
        let Retire::Lease(lease) = S::retire_if(&slot, |c, k| c.id == 1 && k.0 == 1) else {
            panic!("selected: retired");
        };
        assert_eq!(lease.client().id, 1);
        assert_eq!(c.phase(), Phase::Closing, "marked closing under the lock");
        assert!(matches!(S::retire(&slot), Retire::Busy(_)));
        // A retirement never makes a caller wait.
        let newer = lead(&slot, 1);
        assert!(newer.stale().is_none());
        drop(newer);
        lease.finish();
    }

    #[test]
    fn finishing_a_retirement_cuts_nothing_and_frees_the_slot() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        assert!(c.life.begin_request());
        let Retire::Lease(lease) = S::retire(&slot) else {
            panic!("retired");
        };
        let Retire::Busy(done) = S::retire(&slot) else {
            panic!("busy while retiring");
        };
        lease.finish();
        assert_eq!(c.closes(), 0, "finish leaves the close to the closer");
        assert_eq!(c.in_flight(), 1);
        assert!(matches!(outcome(&done), Some(Outcome::Retry)));
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
    }

    #[test]
    fn a_dropped_retirement_force_closes_its_client() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        let Retire::Lease(lease) = S::retire(&slot) else {
            panic!("retired");
        };
        drop(lease);
        assert_eq!(c.closes(), 1);
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
        // A finished one is not closed again.
        let c = C::new(2);
        let slot = ready(&c, 1);
        let Retire::Lease(lease) = S::retire(&slot) else {
            panic!("retired");
        };
        assert!(c.force_close());
        lease.finish();
        assert_eq!(c.closes(), 1);
        // A newer replacement in the slot survives the old retirement's end.
        let c = C::new(3);
        let slot = ready(&c, 1);
        let Retire::Lease(lease) = S::retire(&slot) else {
            panic!("retired");
        };
        let newer = lead(&slot, 1);
        drop(lease);
        assert_eq!(state(&slot), r#"Slot { state: "replacing (building)" }"#);
        drop(newer);
    }

    #[test]
    fn force_clear_reports_the_requests_it_cut() {
        let c = C::new(1);
        let slot = ready(&c, 1);
        assert!(c.life.begin_request() && c.life.begin_request());
        assert_eq!(slot.force_clear(), Some(2));
        assert_eq!(c.closes(), 1);
        assert_eq!(slot.force_clear(), None, "nothing left");
        // A stuck replacement: its stale closed, its waiters retry.
        let c = C::new(2);
        let slot = ready(&c, 1);
        assert!(c.life.begin_request());
        let lease = lead(&slot, 2);
        let waiter = wait(&slot, 2);
        assert_eq!(slot.force_clear(), Some(1));
        assert!(matches!(outcome(&waiter), Some(Outcome::Retry)));
        assert_eq!(lease.reset().unwrap_err(), Reset::Superseded);
        // A stuck retirement whose client is already closed: nothing cut by this call.
        let c = C::new(3);
        let slot = ready(&c, 1);
        let Retire::Lease(lease) = S::retire(&slot) else {
            panic!("retired");
        };
        assert!(c.force_close());
        assert_eq!(slot.force_clear(), None);
        drop(lease);
    }

    #[test]
    fn clear_if_closes_only_what_it_selects() {
        // Ready.
        let c = C::new(1);
        let slot = ready(&c, 1);
        assert!(!slot.clear_if(|_, k| k.0 == 2));
        assert!(c.is_open());
        assert_eq!(state(&slot), r#"Slot { state: "ready" }"#);
        assert!(slot.clear_if(|c, k| c.id == 1 && k.0 == 1));
        assert_eq!(c.closes(), 1);
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
        assert!(!slot.clear_if(|_, _| true), "nothing left");
        // A stale client under replacement: closed in place.
        let c = C::new(2);
        let slot = ready(&c, 1);
        let lease = lead(&slot, 2);
        assert!(!slot.clear_if(|c, _| c.id != 2));
        assert_eq!(c.closes(), 0);
        assert!(slot.clear_if(|c, k| c.id == 2 && k.0 == 2));
        assert_eq!(c.closes(), 1);
        assert!(!slot.clear_if(|_, _| true), "already closed");
        let building = lease.reset().unwrap();
        drop(building);
        // A retiring client: closed in place; its retirement finds it closed.
        let c = C::new(3);
        let slot = ready(&c, 1);
        let Retire::Lease(lease) = S::retire(&slot) else {
            panic!("retired");
        };
        assert!(!slot.clear_if(|c, _| c.id != 3));
        assert_eq!(c.closes(), 0);
        assert!(slot.clear_if(|c, k| c.id == 3 && k.0 == 1));
        assert_eq!(c.closes(), 1);
        assert_eq!(state(&slot), r#"Slot { state: "retiring" }"#);
        lease.finish();
        assert_eq!(state(&slot), r#"Slot { state: "empty" }"#);
    }
}
