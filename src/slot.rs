//! A per-thread slot: the state machine that hands out, replaces and retires one client.
//!
//! ```text
//!            acquire (no match)                    publish_with
//!   Empty ───────────────────────▶ Replacing ─────────────────────▶ Ready
//!   Ready(stale) ────────────────▶ {key, stale, done} ── abandon ──▶ Empty  (+ stale force-closed)
//!                                     │      ◀── retire (close_all) ── Ready
//! ```
//!
//! # Invariants
//! * At most one leader per replacement: only the caller that moved the slot into
//!   `Replacing` gets a [`Lease`]; callers with the same binding wait on its completion.
//! * The stale client is closed *before* the slot is reset: the leader closes it, then
//!   reset and publish happen in one critical section. A leader that is dropped mid-way
//!   force-closes the stale client before resetting.
//! * A stale client is never handed out again: it leaves `Ready` when the replacement
//!   begins and nothing puts it back.
//! * Every path that takes a client out of `Ready` marks it closing (or closes it) under
//!   the slot lock. So an open client that was handed out for a binding is still the
//!   slot's client: the manager's per-thread cache relies on this.
//! * Waiters never hang on a leader that cannot make progress: a caller with a different
//!   binding (another runtime on the same thread) takes the replacement over, force-closing
//!   the stale client, and the superseded waiters retry; a caller with the same binding
//!   waits at most the close timeout and then takes over the same way
//!   ([`Slot::take_over`]).
//!
//! The module knows nothing of tokio or hyper, so loom can model it exactly as it runs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, Mutex, MutexGuard};

/// What the slot needs from a client.
#[doc(hidden)]
pub trait SlotClient: Clone + Send + 'static {
    /// `false` once the client is closing or closed.
    fn is_open(&self) -> bool;
    /// Stops it taking new requests (it is on its way out). Idempotent.
    fn begin_close(&self);
    /// Closes at once, synchronously. Idempotent.
    fn force_close(&self);
}

/// What a slot binds a client to (the runtime, its liveness token, the owning thread).
#[doc(hidden)]
pub trait BindingKey: Clone + Send + 'static {
    /// The cheap description of "here and now" the fast path compares against.
    type Probe;
    /// The fast-path check: same binding as `probe` and still live.
    fn matches(&self, probe: &Self::Probe) -> bool;
    /// The same binding (both describe one runtime on one thread) and `self` is live.
    fn same_binding(&self, other: &Self) -> bool;
}

/// How a replacement ended, as seen by the callers waiting on it.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub enum Outcome<C, E> {
    /// The new client.
    Ready(C),
    /// Building the new client failed.
    Failed(E),
    /// The replacement was abandoned or superseded: ask the slot again.
    Retry,
}

/// One thread's slot.
#[doc(hidden)]
pub struct Slot<C, K, E> {
    state: Mutex<State<C, K, E>>,
}

enum State<C, K, E> {
    Empty,
    Ready {
        client: C,
        key: K,
    },
    Replacing {
        key: K,
        stale: Option<C>,
        done: Arc<Completion<Outcome<C, E>>>,
    },
}

/// What [`Slot::acquire`] tells the caller to do.
#[doc(hidden)]
pub enum Acquire<'a, C: SlotClient, K: BindingKey, E: Clone> {
    /// The slot's client matches: use it.
    Hit(C),
    /// The caller leads a replacement: close [`Lease::stale`] if any, then
    /// [`Lease::publish_with`].
    Lead(Lease<'a, C, K, E>),
    /// Another caller leads a replacement for the same binding: await this.
    Wait(Arc<Completion<Outcome<C, E>>>),
}

impl<C: SlotClient, K: BindingKey, E: Clone> fmt::Debug for Acquire<'_, C, K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acquire::Hit(_) => "Acquire::Hit",
            Acquire::Lead(_) => "Acquire::Lead",
            Acquire::Wait(_) => "Acquire::Wait",
        })
    }
}

/// What [`Slot::retire`] found.
#[doc(hidden)]
pub enum Retire<'a, C: SlotClient, K: BindingKey, E: Clone> {
    /// Close the lease's stale client, then finish the lease.
    Lease(Lease<'a, C, K, E>),
    /// A replacement is under way; await it and retire again.
    Busy(Arc<Completion<Outcome<C, E>>>),
    /// Nothing to close.
    Empty,
}

impl<C: SlotClient, K: BindingKey, E: Clone> fmt::Debug for Retire<'_, C, K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Retire::Lease(_) => "Retire::Lease",
            Retire::Busy(_) => "Retire::Busy",
            Retire::Empty => "Retire::Empty",
        })
    }
}

/// Why [`Lease::publish_with`] did not publish.
#[doc(hidden)]
#[derive(Debug)]
pub enum PublishError<E> {
    /// Another caller took the replacement over; nothing was built. Ask again.
    Superseded,
    /// The build failed; the slot is empty and the waiters got the error too.
    Failed(E),
}

impl<C: SlotClient, K: BindingKey, E: Clone> Slot<C, K, E> {
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
    pub fn acquire(&self, key: K) -> Acquire<'_, C, K, E> {
        let st = self.state.lock();
        match &*st {
            State::Ready { client, key: k } if k.same_binding(&key) && client.is_open() => {
                return Acquire::Hit(client.clone());
            }
            State::Replacing { key: k, done, .. } if k.same_binding(&key) => {
                return Acquire::Wait(Arc::clone(done));
            }
            _ => {}
        }
        self.lead(st, key)
    }

    /// Like [`acquire`](Self::acquire), but never waits: a replacement or retirement
    /// under way — whatever its binding — is superseded (its stale client force-closed,
    /// its waiters told to retry). For a waiter whose wait outlasted the close timeout:
    /// the leader it waited on may sit on a runtime nobody drives.
    #[cold]
    pub fn take_over(&self, key: K) -> Acquire<'_, C, K, E> {
        let st = self.state.lock();
        if let State::Ready { client, key: k } = &*st {
            if k.same_binding(&key) && client.is_open() {
                return Acquire::Hit(client.clone());
            }
        }
        self.lead(st, key)
    }

    /// Makes the caller the leader of a replacement for `key`, closing what stands in
    /// the way first.
    fn lead(&self, mut st: MutexGuard<'_, State<C, K, E>>, key: K) -> Acquire<'_, C, K, E> {
        let (stale, superseded) = match std::mem::replace(&mut *st, State::Empty) {
            State::Empty => (None, None),
            State::Ready { client, .. } => {
                client.begin_close();
                (Some(client), None)
            }
            State::Replacing { stale, done, .. } => {
                // Its leader may be parked on a runtime nobody drives: do not wait for it.
                if let Some(s) = &stale {
                    s.force_close();
                }
                (None, Some(done))
            }
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
            slot: self,
            done,
            stale,
            finished: false,
        })
    }

    /// Begins retiring the current client (for `close_all` and `shutdown`): on
    /// [`Retire::Lease`] the caller closes [`Lease::stale`] and then calls
    /// [`Lease::finish_empty`]; on [`Retire::Busy`] a replacement is under way: wait for
    /// it and ask again.
    pub fn retire(&self) -> Retire<'_, C, K, E> {
        let mut st = self.state.lock();
        let (client, key) = match std::mem::replace(&mut *st, State::Empty) {
            State::Ready { client, key } => {
                client.begin_close();
                (client, key)
            }
            State::Empty => return Retire::Empty,
            State::Replacing { key, stale, done } => {
                let busy = Arc::clone(&done);
                *st = State::Replacing { key, stale, done };
                return Retire::Busy(busy);
            }
        };
        let done = Arc::new(Completion::new());
        *st = State::Replacing {
            key,
            stale: Some(client.clone()),
            done: Arc::clone(&done),
        };
        Retire::Lease(Lease {
            slot: self,
            done,
            stale: Some(client),
            finished: false,
        })
    }

    /// Force-closes whatever client the slot holds (ready, or stale under replacement),
    /// empties it and tells waiters to retry. For a shutdown whose deadline passed while a
    /// replacement was stuck. Returns whether a client was closed by this call.
    pub fn force_clear(&self) -> bool {
        let mut st = self.state.lock();
        let (closed, done) = match std::mem::replace(&mut *st, State::Empty) {
            State::Empty => (false, None),
            State::Ready { client, .. } => {
                let open = client.is_open();
                client.force_close();
                (open, None)
            }
            State::Replacing { stale, done, .. } => {
                let open = stale.as_ref().is_some_and(C::is_open);
                if let Some(s) = &stale {
                    s.force_close();
                }
                (open, Some(done))
            }
        };
        drop(st);
        if let Some(done) = done {
            done.complete(Outcome::Retry);
        }
        closed
    }

    /// Force-closes and drops the ready client if `pred` selects it (runtime teardown,
    /// thread exit). A stale client under replacement that `pred` selects is
    /// force-closed in place; its leader then finds it closed. Returns whether anything
    /// was closed.
    pub fn clear_if(&self, pred: impl Fn(&C, &K) -> bool) -> bool {
        let mut st = self.state.lock();
        match &*st {
            State::Ready { client, key } if pred(client, key) => {
                client.force_close();
                *st = State::Empty;
                true
            }
            State::Replacing {
                stale: Some(s),
                key,
                ..
            } if pred(s, key) => {
                s.force_close();
                true
            }
            _ => false,
        }
    }

    /// Takes the ready client out if `pred` selects it, marking it closing: the caller
    /// closes it elsewhere. For a thread that exits: nobody on this slot's thread waits
    /// for the close, and its requests elsewhere get the close timeout to finish.
    pub fn take_if(&self, pred: impl Fn(&C, &K) -> bool) -> Option<C> {
        let mut st = self.state.lock();
        match &*st {
            State::Ready { client, key } if pred(client, key) => {
                client.begin_close();
                match std::mem::replace(&mut *st, State::Empty) {
                    State::Ready { client, .. } => Some(client),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        match &*self.state.lock() {
            State::Empty => "empty",
            State::Ready { .. } => "ready",
            State::Replacing { .. } => "replacing",
        }
    }
}

impl<C: SlotClient, K: BindingKey, E: Clone> Default for Slot<C, K, E> {
    fn default() -> Self {
        Slot::new()
    }
}

impl<C: SlotClient, K: BindingKey, E: Clone> fmt::Debug for Slot<C, K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("state", &self.describe())
            .finish()
    }
}

/// The right to finish one replacement or retirement of a slot.
///
/// Dropping it unfinished (the leader's future was cancelled) force-closes the stale
/// client, empties the slot and tells the waiters to retry.
#[doc(hidden)]
#[must_use = "a lease that is dropped force-closes the stale client and empties the slot"]
pub struct Lease<'a, C: SlotClient, K: BindingKey, E: Clone> {
    slot: &'a Slot<C, K, E>,
    done: Arc<Completion<Outcome<C, E>>>,
    stale: Option<C>,
    finished: bool,
}

impl<C: SlotClient, K: BindingKey, E: Clone> Lease<'_, C, K, E> {
    /// The client being replaced, which the leader must close before publishing.
    pub fn stale(&self) -> Option<&C> {
        self.stale.as_ref()
    }

    /// Resets the slot and publishes the client `build` returns, in one critical
    /// section, and hands it to every waiter. Call only after the stale client's close
    /// has finished.
    pub fn publish_with(
        mut self,
        build: impl FnOnce() -> Result<C, E>,
    ) -> Result<C, PublishError<E>> {
        self.finished = true;
        let mut st = self.slot.state.lock();
        let key = match std::mem::replace(&mut *st, State::Empty) {
            State::Replacing { key, done, .. } if Arc::ptr_eq(&done, &self.done) => key,
            other => {
                *st = other;
                return Err(PublishError::Superseded);
            }
        };
        // The slot is reset (stale dropped, state Empty) before anything new is built.
        match build() {
            Ok(client) => {
                *st = State::Ready {
                    client: client.clone(),
                    key,
                };
                drop(st);
                self.done.complete(Outcome::Ready(client.clone()));
                Ok(client)
            }
            Err(e) => {
                drop(st);
                self.done.complete(Outcome::Failed(e.clone()));
                Err(PublishError::Failed(e))
            }
        }
    }

    /// Ends a retirement: empties the slot (if it is still ours) and tells waiters to
    /// retry. Call only after the stale client's close has finished.
    pub fn finish_empty(mut self) {
        self.finished = true;
        self.reset(false);
    }

    fn reset(&self, force_stale: bool) {
        let mut st = self.slot.state.lock();
        let ours = matches!(&*st, State::Replacing { done, .. } if Arc::ptr_eq(done, &self.done));
        if ours {
            if let State::Replacing { stale: Some(s), .. } = &*st {
                if force_stale {
                    s.force_close();
                }
            }
            *st = State::Empty;
        }
        drop(st);
        if ours {
            self.done.complete(Outcome::Retry);
        }
    }
}

impl<C: SlotClient, K: BindingKey, E: Clone> Drop for Lease<'_, C, K, E> {
    fn drop(&mut self) {
        if !self.finished {
            self.reset(true);
        }
    }
}

impl<C: SlotClient, K: BindingKey, E: Clone> fmt::Debug for Lease<'_, C, K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("has_stale", &self.stale.is_some())
            .field("finished", &self.finished)
            .finish()
    }
}

/// A one-shot, multi-waiter result: the leader completes it once, every waiter gets
/// a clone.
#[doc(hidden)]
pub struct Completion<T> {
    state: Mutex<CompletionState<T>>,
}

enum CompletionState<T> {
    Pending(Vec<Waker>),
    Done(T),
}

impl<T: Clone> Completion<T> {
    fn new() -> Self {
        Completion {
            state: Mutex::new(CompletionState::Pending(Vec::new())),
        }
    }

    /// Sets the value (the first one wins) and wakes every waiter.
    pub fn complete(&self, value: T) {
        let wakers = {
            let mut st = self.state.lock();
            match &mut *st {
                CompletionState::Done(_) => return,
                CompletionState::Pending(w) => {
                    let wakers = std::mem::take(w);
                    *st = CompletionState::Done(value);
                    wakers
                }
            }
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Waits for the value.
    pub fn wait(this: Arc<Self>) -> Wait<T> {
        Wait { completion: this }
    }
}

impl<T> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = matches!(&*self.state.lock(), CompletionState::Done(_));
        f.debug_struct("Completion").field("done", &done).finish()
    }
}

/// Future returned by [`Completion::wait`].
#[doc(hidden)]
#[must_use = "futures do nothing unless polled"]
pub struct Wait<T> {
    completion: Arc<Completion<T>>,
}

impl<T: Clone> Future for Wait<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut st = self.completion.state.lock();
        match &mut *st {
            CompletionState::Done(v) => Poll::Ready(v.clone()),
            CompletionState::Pending(wakers) => {
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<T> fmt::Debug for Wait<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait").finish_non_exhaustive()
    }
}
