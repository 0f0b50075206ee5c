//! A runtime's entry: its liveness token and its teardown callbacks.
//!
//! The tokio adapter (`manager/runtime.rs`) gives each runtime one entry and tears it down
//! when the runtime shuts down; everything about what tear-down means is here.
//!
//! # Invariants
//! * An entry goes alive → dead once; callbacks are taken out of it under its lock in the
//!   same critical section that marks it dead. A registration that takes the lock before
//!   that step is run by teardown; one that takes it after gets `Err` and is never run.
//! * `cancel` removes under the same lock, so it returns `true` iff the callback will
//!   never run.
//! * Callbacks run outside the lock, newest first, each under `catch_unwind`.
//!
//! Lock order: the global map lock and an entry lock are never held together, and no
//! entry lock is held while callbacks run (they may take slot locks).

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::panic::panic_message;
use crate::error::Error;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering};

type Callback = Box<dyn FnOnce() + Send + 'static>;

/// Process-wide callback counters (callbacks belong to runtimes, not to managers).
pub(crate) mod counters {
    use std::sync::atomic::AtomicU64;

    pub(crate) static REGISTERED: AtomicU64 = AtomicU64::new(0);
    pub(crate) static RUN: AtomicU64 = AtomicU64::new(0);
    pub(crate) static PANICKED: AtomicU64 = AtomicU64::new(0);
}

/// One runtime's liveness token and teardown callbacks.
#[doc(hidden)]
pub struct RuntimeEntry {
    /// Mirrors `state.alive` for lock-free checks on the `client()` fast path.
    alive: AtomicBool,
    state: Mutex<EntryState>,
}

struct EntryState {
    alive: bool,
    next_seq: u64,
    callbacks: BTreeMap<u64, Callback>,
}

impl RuntimeEntry {
    /// A new, live entry with no callbacks.
    pub fn new() -> Self {
        RuntimeEntry {
            alive: AtomicBool::new(true),
            state: Mutex::new(EntryState {
                alive: true,
                next_seq: 0,
                callbacks: BTreeMap::new(),
            }),
        }
    }

    /// Whether teardown has not begun.
    #[inline]
    pub fn is_alive(&self) -> bool {
        // Acquire pairs with the Release store in `teardown`: whoever sees `false` also
        // sees everything teardown did before it.
        self.alive.load(Ordering::Acquire)
    }

    /// Registers `f` to run at teardown. Fails, without ever running `f`, when
    /// teardown has already begun.
    pub fn register(
        this: &Arc<Self>,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<CleanupHandle, Error> {
        let mut st = this.state.lock();
        if !st.alive {
            return Err(Error::runtime_gone());
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.callbacks.insert(seq, Box::new(f));
        drop(st);
        counters::REGISTERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(CleanupHandle {
            entry: Arc::clone(this),
            seq,
        })
    }

    /// Marks the entry dead and runs its callbacks, newest first, each isolated.
    /// Returns how many ran; a second call runs nothing.
    pub fn teardown(&self) -> usize {
        let callbacks = {
            let mut st = self.state.lock();
            if !st.alive {
                return 0;
            }
            st.alive = false;
            // Release: see `is_alive`.
            self.alive.store(false, Ordering::Release);
            std::mem::take(&mut st.callbacks)
        };
        let n = callbacks.len();
        for (_, cb) in callbacks.into_iter().rev() {
            counters::RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(panic) = catch_unwind(AssertUnwindSafe(cb)) {
                counters::PANICKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let msg = panic_message(&*panic);
                tracing::error!(panic = %msg, "runtime teardown callback panicked; the remaining callbacks still run");
            }
        }
        n
    }

    fn cancel(&self, seq: u64) -> bool {
        self.state.lock().callbacks.remove(&seq).is_some()
    }

    fn pending(&self) -> usize {
        self.state.lock().callbacks.len()
    }
}

impl Default for RuntimeEntry {
    fn default() -> Self {
        RuntimeEntry::new()
    }
}

impl fmt::Debug for RuntimeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeEntry")
            .field("alive", &self.is_alive())
            .field("pending_callbacks", &self.pending())
            .finish()
    }
}

/// A registered teardown callback. Dropping it leaves the callback registered;
/// [`cancel`](CleanupHandle::cancel) removes it.
///
/// ```
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let handle = rt.block_on(async {
///     rtlocal::on_runtime_shutdown(|| unreachable!("cancelled before teardown")).unwrap()
/// });
/// assert!(handle.cancel()); // removed: it will never run
/// drop(rt);
/// ```
pub struct CleanupHandle {
    entry: Arc<RuntimeEntry>,
    seq: u64,
}

impl CleanupHandle {
    /// Removes the callback. Returns `true` if it was removed before it ran (it will
    /// never run), `false` if it has already run or is running now.
    pub fn cancel(self) -> bool {
        self.entry.cancel(self.seq)
    }
}

impl fmt::Debug for CleanupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanupHandle")
            .field("seq", &self.seq)
            .field("runtime_alive", &self.entry.is_alive())
            .finish()
    }
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[test]
    fn lifo_once_and_panic_isolated() {
        let entry = Arc::new(RuntimeEntry::new());
        let order = Arc::new(StdMutex::new(Vec::new()));
        for i in 0..3 {
            let order = Arc::clone(&order);
            RuntimeEntry::register(&entry, move || {
                order.lock().unwrap().push(i);
                if i == 1 {
                    panic!("callback 1 fails");
                }
            })
            .unwrap();
        }
        assert_eq!(entry.teardown(), 3);
        assert_eq!(*order.lock().unwrap(), vec![2, 1, 0]);
        assert_eq!(entry.teardown(), 0);
        assert!(!entry.is_alive());
        assert!(
            RuntimeEntry::register(&entry, || {})
                .unwrap_err()
                .is_runtime_gone()
        );
    }

    #[test]
    fn cancel_is_truthful() {
        let entry = Arc::new(RuntimeEntry::new());
        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        let h = RuntimeEntry::register(&entry, move || r.store(true, Ordering::SeqCst)).unwrap();
        let h2 = RuntimeEntry::register(&entry, || {}).unwrap();
        assert!(h.cancel());
        entry.teardown();
        assert!(!ran.load(Ordering::SeqCst));
        assert!(!h2.cancel());
    }

    #[test]
    fn debug_shows_liveness_and_pending_callbacks() {
        let entry = Arc::new(RuntimeEntry::default());
        let h = RuntimeEntry::register(&entry, || {}).unwrap();
        assert_eq!(
            format!("{entry:?}"),
            "RuntimeEntry { alive: true, pending_callbacks: 1 }"
        );
        assert_eq!(
            format!("{h:?}"),
            "CleanupHandle { seq: 0, runtime_alive: true }"
        );
        let h2 = RuntimeEntry::register(&entry, || {}).unwrap();
        assert_eq!(
            format!("{h2:?}"),
            "CleanupHandle { seq: 1, runtime_alive: true }"
        );
        assert_eq!(entry.pending(), 2);
        assert_eq!(entry.teardown(), 2);
        assert_eq!(
            format!("{entry:?}"),
            "RuntimeEntry { alive: false, pending_callbacks: 0 }"
        );
        assert_eq!(
            format!("{h:?}"),
            "CleanupHandle { seq: 0, runtime_alive: false }"
        );
    }
}
