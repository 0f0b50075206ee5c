//! The one place the lifecycle code gets its synchronisation primitives from.
//!
//! Under `--cfg rtlocal_loom` (with the `loom` feature) every primitive here is loom's,
//! so the models in `loom-tests/` check the production slot, registry and close code
//! rather than a copy. Otherwise they are `parking_lot`'s and `std`'s.
//!
//! Everything in `lifecycle/` takes its primitives from here; tokio and hyper types never
//! do. The tokio adapter (`manager/`) owns the thread-locals and `Weak` handles, which
//! loom cannot model (loom 0.7 has no `Weak`): see README's Correctness section.

#[cfg(not(rtlocal_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
    pub(crate) use std::sync::{Arc, Weak};

    /// A weak reference to `a`.
    pub(crate) fn downgrade<T>(a: &Arc<T>) -> Weak<T> {
        Arc::downgrade(a)
    }

    /// A mutex whose `lock` never fails (no poisoning), with the same API under loom.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }
}

#[cfg(rtlocal_loom)]
mod imp {
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

    /// loom 0.7 has no `Weak`: under loom a weak reference is a strong one whose
    /// `upgrade` always succeeds. The models therefore never see a failed upgrade (the
    /// referent being gone), and a cycle through one shows up as a leak.
    pub(crate) struct Weak<T>(Arc<T>);

    impl<T> Weak<T> {
        pub(crate) fn upgrade(&self) -> Option<Arc<T>> {
            Some(Arc::clone(&self.0))
        }
    }

    /// A "weak" reference to `a` (see [`Weak`]).
    pub(crate) fn downgrade<T>(a: &Arc<T>) -> Weak<T> {
        Weak(Arc::clone(a))
    }

    /// loom's mutex behind the same never-failing `lock` as the production one.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // A panic inside a model already fails it; poisoning adds nothing.
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

pub(crate) use imp::*;
