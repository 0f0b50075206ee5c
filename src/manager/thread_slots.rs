//! Per-thread slots: each thread's slot of each manager, found through a thread-local, and
//! retired when the thread exits.
//!
//! A thread-local of our own rather than `thread_local::ThreadLocal`: that crate never
//! drops a value when its thread exits and hands an exited thread's value to a new thread,
//! and its lookup panics when called from a thread-local destructor late in a thread's
//! teardown. Here the slot is listed in its manager (under the manager's lock, which also
//! orders it against a shutdown's scan) and owned by the thread's list; when the thread
//! exits its client is retired — it stays in its slot, reachable by `close_all` and
//! `shutdown` — and closed on the closer, never on a runtime that may be idle.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::closer;
use super::factory::ClientFactory;
use super::managed::Managed;
use super::shared::{Binding, ManagedSlot, Runner, Shared};
use crate::error::{Error, Kind};
use crate::lifecycle::{self, Retire, Slot};

thread_local! {
    // `const` and without a destructor: usable at any point of the thread's life.
    static TOKEN: Cell<u64> = const { Cell::new(0) };
}

/// A per-process token for the current thread, never 0 and never reused.
#[inline]
pub(crate) fn token() -> u64 {
    TOKEN.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // Relaxed: uniqueness needs only atomicity.
        let v = NEXT.fetch_add(1, Ordering::Relaxed);
        t.set(v);
        v
    })
}

/// One of this thread's slots, of some manager.
trait Watch {
    fn manager(&self) -> *const ();
    fn is_gone(&self) -> bool;
    fn as_any(&self) -> &dyn Any;
    fn thread_exited(&self);
}

struct SlotWatch<F: ClientFactory> {
    shared: Weak<Shared<F>>,
    slot: Arc<ManagedSlot<F>>,
    token: u64,
}

impl<F: ClientFactory> Watch for SlotWatch<F> {
    fn manager(&self) -> *const () {
        self.shared.as_ptr().cast()
    }

    fn is_gone(&self) -> bool {
        self.shared.strong_count() == 0
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn thread_exited(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let token = self.token;
        let first = Slot::retire_if(&self.slot, |_, key| key.thread == Some(token));
        if matches!(first, Retire::Empty) {
            shared.forget_thread_slot(&self.slot);
            return;
        }
        let slot = Arc::clone(&self.slot);
        let closer_shared = Arc::clone(&shared);
        // Its requests may still be in flight on other threads of its runtime: a graceful
        // close, bounded, on the closer. If the closer cannot run it, the dropped lease
        // force-closes the client.
        let spawned = closer::spawn(async move {
            let runner = Runner {
                shared: &closer_shared,
                handle: None,
                slot: None,
                left_open: None,
            };
            let mine = |_: &Managed<F>, key: &Binding| key.thread == Some(token);
            if lifecycle::retire_exited(&runner, &slot, mine, first).await {
                closer_shared.forget_thread_slot(&slot);
            }
        });
        if !spawned {
            shared.forget_thread_slot(&self.slot);
        }
    }
}

/// This thread's watched slots; dropped when the thread exits.
struct Mine(Vec<Box<dyn Watch>>);

impl Drop for Mine {
    fn drop(&mut self) {
        for watch in self.0.drain(..) {
            watch.thread_exited();
        }
    }
}

thread_local! {
    static MINE: RefCell<Mine> = const { RefCell::new(Mine(Vec::new())) };
}

fn exiting() -> Error {
    Error::with_detail(
        Kind::Closed,
        "this thread is exiting (client() was called from a thread-local destructor), so no \
         client can be bound to it: get clients before the thread's teardown",
    )
}

/// This thread's slot of `shared`'s manager, made and listed on first use.
pub(crate) fn slot_for<F: ClientFactory>(
    shared: &Arc<Shared<F>>,
    token: u64,
) -> Result<Arc<ManagedSlot<F>>, Error> {
    MINE.try_with(|mine| {
        let mut mine = mine.try_borrow_mut().map_err(|_| exiting())?;
        let addr: *const () = Arc::as_ptr(shared).cast();
        let found = mine
            .0
            .iter()
            .filter(|w| std::ptr::eq(w.manager(), addr) && !w.is_gone())
            .find_map(|w| w.as_any().downcast_ref::<SlotWatch<F>>());
        if let Some(w) = found {
            return Ok(Arc::clone(&w.slot));
        }
        mine.0.retain(|w| !w.is_gone());
        let slot = Arc::new(Slot::new());
        shared.thread_slots.lock().push(Arc::clone(&slot));
        // Most threads use one manager: no room for four.
        mine.0.reserve_exact(1);
        mine.0.push(Box::new(SlotWatch {
            shared: Arc::downgrade(shared),
            slot: Arc::clone(&slot),
            token,
        }));
        Ok(slot)
    })
    .map_err(|_| exiting())?
}
