//! The rights a slot hands out: to lead a replacement ([`Lease`], then [`Building`]) and
//! to finish a retirement ([`RetireLease`]). Each completes its transition on every path:
//! finished, failed, superseded, or dropped (cancelled, panicked).

use std::fmt;

use super::machine::{Done, Outcome, Slot, State};
use crate::error::Error;
use crate::lifecycle::driver::{BindingKey, SlotClient};
use crate::lifecycle::gate::ShutdownGate;
use crate::sync::Arc;

/// Why [`Lease::reset`] did not hand over the right to build.
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Reset {
    /// Another caller took the replacement over (its stale client force-closed): ask again.
    Superseded,
}

/// What [`Building::publish`] did.
#[doc(hidden)]
#[derive(Debug)]
#[must_use]
pub enum Publish<C> {
    /// Published: the slot's client, handed to every waiter too.
    Published(C),
    /// The shutdown gate was closed: the client was force-closed and waiters failed.
    ShutDown,
    /// Another caller took the slot over while we built: the client was force-closed.
    Superseded,
}

/// The right to lead one replacement of a slot: close the stale client, then
/// [`reset`](Lease::reset).
///
/// Dropping it unfinished (the leader's future was cancelled, or it panicked)
/// force-closes the stale client, empties the slot and tells the waiters to retry.
#[doc(hidden)]
#[must_use = "a lease that is dropped force-closes the stale client and empties the slot"]
pub struct Lease<C: SlotClient, K: BindingKey> {
    pub(super) slot: Arc<Slot<C, K>>,
    pub(super) done: Done<C>,
    pub(super) stale: Option<C>,
    pub(super) finished: bool,
}

impl<C: SlotClient, K: BindingKey> Lease<C, K> {
    /// The client being replaced, which the leader closes before [`reset`](Self::reset).
    pub fn stale(&self) -> Option<&C> {
        self.stale.as_ref()
    }

    /// Resets the slot (drops the stale client from it, force-closing whatever its
    /// graceful close left open) and hands over the right to build and publish.
    pub fn reset(mut self) -> Result<Building<C, K>, Reset> {
        self.finished = true;
        let mut st = self.slot.state.lock();
        if !Slot::is_ours(&st, &self.done) {
            return Err(Reset::Superseded);
        }
        if let State::Replacing { stale, .. } = &mut *st {
            if let Some(s) = stale.take() {
                // Invariant 2: closed before the reset, whatever the graceful close did.
                s.force_close();
            }
        }
        drop(st);
        Ok(Building {
            slot: Arc::clone(&self.slot),
            done: Arc::clone(&self.done),
            finished: false,
        })
    }
}

impl<C: SlotClient, K: BindingKey> Drop for Lease<C, K> {
    fn drop(&mut self) {
        if !self.finished {
            self.slot.end(&self.done, Outcome::Retry);
        }
    }
}

impl<C: SlotClient, K: BindingKey> fmt::Debug for Lease<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("has_stale", &self.stale.is_some())
            .field("finished", &self.finished)
            .finish()
    }
}

/// The right to publish the client a leader builds after [`Lease::reset`].
///
/// Dropping it unpublished (the build was cancelled) empties the slot and tells the
/// waiters to retry.
#[doc(hidden)]
#[must_use = "a build right that is dropped empties the slot and sends the waiters to retry"]
pub struct Building<C: SlotClient, K: BindingKey> {
    slot: Arc<Slot<C, K>>,
    done: Done<C>,
    finished: bool,
}

impl<C: SlotClient, K: BindingKey> Building<C, K> {
    /// Publishes `client` and hands it to every waiter — unless the gate closed or the
    /// slot was taken over meanwhile, in which case `client` is force-closed (it is never
    /// left unreachable).
    pub fn publish(mut self, client: C, gate: &ShutdownGate) -> Publish<C> {
        self.finished = true;
        let mut st = self.slot.state.lock();
        let key = match std::mem::replace(&mut *st, State::Empty) {
            State::Replacing { key, done, .. } if Arc::ptr_eq(&done, &self.done) => key,
            other => {
                *st = other;
                drop(st);
                client.force_close();
                self.done.complete(Outcome::Retry);
                return Publish::Superseded;
            }
        };
        // Invariant 6, under the slot lock.
        if !gate.admits() {
            drop(st);
            client.force_close();
            self.done.complete(Outcome::Failed(Error::shut_down()));
            return Publish::ShutDown;
        }
        *st = State::Ready {
            client: client.clone(),
            key,
        };
        drop(st);
        self.done.complete(Outcome::Ready(client.clone()));
        Publish::Published(client)
    }

    /// The build failed: empties the slot and fails every waiter with `error`.
    pub fn fail(mut self, error: Error) {
        self.finished = true;
        self.slot.end(&self.done, Outcome::Failed(error));
    }
}

impl<C: SlotClient, K: BindingKey> Drop for Building<C, K> {
    fn drop(&mut self) {
        if !self.finished {
            self.slot.end(&self.done, Outcome::Retry);
        }
    }
}

impl<C: SlotClient, K: BindingKey> fmt::Debug for Building<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Building")
            .field("finished", &self.finished)
            .finish()
    }
}

/// The right to finish one retirement: close [`client`](RetireLease::client), then
/// [`finish`](RetireLease::finish). Owned, so a retirement can be handed to another
/// thread (a thread that exits hands its client's close to the closer).
///
/// Dropping it unfinished force-closes the client and empties the slot.
#[doc(hidden)]
#[must_use = "a retirement that is dropped force-closes its client"]
pub struct RetireLease<C: SlotClient, K: BindingKey> {
    pub(super) slot: Arc<Slot<C, K>>,
    pub(super) done: Done<C>,
    pub(super) client: C,
    pub(super) finished: bool,
}

impl<C: SlotClient, K: BindingKey> RetireLease<C, K> {
    /// The client being retired: already closing (no new requests).
    pub fn client(&self) -> &C {
        &self.client
    }

    /// Ends the retirement once the client's close has finished: empties the slot (if it
    /// is still ours) and tells waiters to retry.
    pub fn finish(mut self) {
        self.finished = true;
        self.slot.end(&self.done, Outcome::Retry);
    }
}

impl<C: SlotClient, K: BindingKey> Drop for RetireLease<C, K> {
    fn drop(&mut self) {
        if !self.finished {
            self.client.force_close();
            self.slot.end(&self.done, Outcome::Retry);
        }
    }
}

impl<C: SlotClient, K: BindingKey> fmt::Debug for RetireLease<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetireLease")
            .field("finished", &self.finished)
            .finish()
    }
}
