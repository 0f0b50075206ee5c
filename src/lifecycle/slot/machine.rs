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
