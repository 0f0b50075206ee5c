//! The hot path's cache: each thread's last client, held weakly.
//!
//! Held weakly because its slot owns it: a thread that stops calling `client()` after its
//! runtime ended must not keep that client — and through its `Handle` the dead runtime's
//! driver, with its epoll and eventfd descriptors — alive until the thread exits.
//! Type-erased, so one cache serves managers of every factory type. When it may answer is
//! the core's rule ([`HotEntry::serve`]).

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Arc, Weak};

use tokio::runtime;

use super::factory::ClientFactory;
use super::managed::Managed;
use super::shared::{Binding, Shared};
use super::thread_slots;
use crate::lifecycle::{HotEntry, may_remember};

type Remembered = HotEntry<runtime::Id, Weak<dyn Any + Send + Sync>>;

thread_local! {
    static HOT: RefCell<Option<Remembered>> = const { RefCell::new(None) };
}

/// This thread's cached client, if the core's rule lets it answer for `shared` on
/// `runtime`.
#[inline]
pub(crate) fn cached<F: ClientFactory>(
    shared: &Arc<Shared<F>>,
    runtime: runtime::Id,
) -> Option<Managed<F>> {
    HOT.try_with(|hot| {
        let hot = hot.try_borrow().ok()?;
        hot.as_ref()?.serve(runtime, |weak| {
            let client: Managed<F> = Managed {
                inner: weak.upgrade()?.downcast().ok()?,
            };
            client
                .belongs_to(Arc::as_ptr(shared).cast())
                .then_some(client)
        })
    })
    .ok()
    .flatten()
}

/// Makes `client` this thread's cached client, where the core's rule allows.
pub(crate) fn remember<F: ClientFactory>(client: &Managed<F>, key: &Binding) {
    if !may_remember(key.thread, thread_slots::token()) {
        return;
    }
    let weak: Weak<dyn Any + Send + Sync> = Arc::downgrade(&client.inner) as _;
    let entry = HotEntry::new(key.runtime, Arc::clone(&key.entry), weak);
    // `try_with`: during thread teardown there is nothing worth caching.
    let previous = HOT.try_with(|hot| {
        hot.try_borrow_mut()
            .ok()
            .and_then(|mut hot| hot.replace(entry))
    });
    drop(previous);
}
