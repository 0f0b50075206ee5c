//! [`Manager`]: one client per thread (or per runtime), bound to the runtime it runs on,
//! for any [`ClientFactory`].
//!
//! # Lock order
//! The runtime-slot map lock is never held while a slot lock is taken, nor while a
//! client is built: a slot is looked up under the map lock, the map lock is released,
//! then the slot is used. Teardown callbacks take a slot lock, then (separately) the map
//! lock.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use thread_local::ThreadLocal;
use tokio::runtime::{self, Handle};
use tokio::time::Instant;

use crate::error::{Error, Kind};
use crate::factory::ClientFactory;
use crate::idmap::IdMap;
use crate::managed::{CloseOutcome, Managed};
use crate::runtime::{RuntimeEntry, entry_for};
use crate::slot::{Acquire, BindingKey, Completion, Lease, Outcome, PublishError, Retire, Slot};
use crate::stats::{CloseReport, Counters, Stats};

/// Who shares one client: the threads of a runtime one each, or all of them one.
///
/// # Examples
///
/// ```
/// use rtlocal::{HttpClientManager, Sharing};
///
/// // One client (one connection pool) for all worker threads of a runtime.
/// let manager = HttpClientManager::builder().sharing(Sharing::PerRuntime).build()?;
/// # Ok::<(), rtlocal::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Sharing {
    /// One client per thread and runtime (the default). Nothing is shared between
    /// threads, so nothing contends; a `multi_thread` runtime gets one connection pool
    /// per worker thread. A thread that exits has its client closed.
    #[default]
    PerThread,
    /// One client per runtime, shared by all of its threads: one connection pool per
    /// runtime, so a `multi_thread` runtime reuses connections across its workers.
    /// Clients are closed when the runtime is torn down, not when a thread exits.
    PerRuntime,
}

/// What a slot's client is bound to: a runtime (id + liveness token) and a thread
/// (`0` for a per-runtime client, which any thread of the runtime may use).
#[derive(Clone)]
pub(crate) struct Binding {
    runtime: runtime::Id,
    thread: u64,
    entry: Arc<RuntimeEntry>,
}

/// `Binding::thread` for a client shared by every thread of its runtime.
const ANY_THREAD: u64 = 0;

impl BindingKey for Binding {
    type Probe = (runtime::Id, u64);

    #[inline]
    fn matches(&self, probe: &Self::Probe) -> bool {
        // The id alone is not enough: ids are reused once a runtime is gone.
        self.runtime == probe.0 && self.thread == probe.1 && self.entry.is_alive()
    }

    fn same_binding(&self, other: &Self) -> bool {
        self.runtime == other.runtime
            && self.thread == other.thread
            && Arc::ptr_eq(&self.entry, &other.entry)
            && self.entry.is_alive()
    }
}

pub(crate) type ManagedSlot<F> = Slot<Managed<F>, Binding, Error>;

/// A per-process token for the current thread. `thread_local::ThreadLocal` hands an
/// exited thread's slot to a new thread; the token tells them apart. Never `ANY_THREAD`.
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: Cell<u64> = const { Cell::new(0) };
    }
    TOKEN.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        // Relaxed: uniqueness needs only atomicity.
        let v = NEXT.fetch_add(1, Ordering::Relaxed);
        t.set(v);
        v
    })
}

/// A per-thread slot of some manager, watched for the thread's exit.
trait ExitWatch {
    fn slot_addr(&self) -> *const ();
    fn is_gone(&self) -> bool;
    fn thread_exited(&self, token: u64);
}

struct SlotWatch<F: ClientFactory> {
    slot: Weak<ManagedSlot<F>>,
    close_timeout: Duration,
}

impl<F: ClientFactory> ExitWatch for SlotWatch<F> {
    fn slot_addr(&self) -> *const () {
        self.slot.as_ptr().cast()
    }

    fn is_gone(&self) -> bool {
        self.slot.strong_count() == 0
    }

    fn thread_exited(&self, token: u64) {
        let Some(slot) = self.slot.upgrade() else {
            return;
        };
        if let Some(client) = slot.take_if(|_, key| key.thread == token) {
            client.close_in_background(self.close_timeout);
        }
    }
}

/// Closes this thread's clients when it exits, so a pool whose threads come and go
/// leaves no connections behind. The close is graceful, on each client's own runtime:
/// its requests may still be in flight on other threads of that runtime.
struct ThreadExit {
    token: u64,
    slots: Vec<Box<dyn ExitWatch>>,
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        for watch in self.slots.drain(..) {
            watch.thread_exited(self.token);
        }
    }
}

/// This thread's last client, for the hot path (see `Shared::cached`).
///
/// The client is held weakly: its slot owns it. A thread that stops calling `client()`
/// after its runtime ended must not keep that client — and through its `Handle` the dead
/// runtime's driver, with its epoll and eventfd descriptors — alive until the thread exits.
/// Type-erased, so one cache serves managers of every factory type.
struct Hot {
    runtime: runtime::Id,
    entry: Arc<RuntimeEntry>,
    client: Weak<dyn Any + Send + Sync>,
}

thread_local! {
    static HOT: RefCell<Option<Hot>> = const { RefCell::new(None) };
}

thread_local! {
    static THREAD_EXIT: RefCell<ThreadExit> = const {
        RefCell::new(ThreadExit { token: 0, slots: Vec::new() })
    };
}

fn watch_thread_exit<F: ClientFactory>(
    slot: &Arc<ManagedSlot<F>>,
    token: u64,
    close_timeout: Duration,
) {
    // `try_with`: during thread teardown there is nothing left to watch for.
    let _ = THREAD_EXIT.try_with(|exit| {
        let Ok(mut exit) = exit.try_borrow_mut() else {
            return;
        };
        exit.token = token;
        let addr: *const () = Arc::as_ptr(slot).cast();
        if !exit.slots.iter().any(|w| std::ptr::eq(w.slot_addr(), addr)) {
            exit.slots.retain(|w| !w.is_gone());
            exit.slots.push(Box::new(SlotWatch {
                slot: Arc::downgrade(slot),
                close_timeout,
            }));
        }
    });
}

/// Settings every [`Manager`] has, whatever its factory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub(crate) close_timeout: Duration,
    pub(crate) sharing: Sharing,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            close_timeout: Duration::from_secs(5),
            sharing: Sharing::PerThread,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.close_timeout.is_zero() {
            return Err(Error::config(
                "close_timeout must be greater than zero (got 0s); it bounds how long closing \
                 a client waits for in-flight requests",
            ));
        }
        Ok(())
    }
}

/// Hands every thread (or every runtime, see [`Sharing`]) a client built by a
/// [`ClientFactory`], bound to the tokio runtime it is running on.
///
/// * Same thread, same live runtime → the same client.
/// * The thread's runtime changed → the stale client is closed (its tracked requests
///   get up to the close timeout), *then* the slot is reset, *then* the new client is
///   published. Concurrent callers during a replacement all receive the one new client.
/// * A runtime torn down → the clients bound to it are released right then.
/// * [`close_all`](Manager::close_all) and [`shutdown`](Manager::shutdown) close every
///   thread's client, including those whose runtime is idle or gone.
///
/// [`HttpClientManager`](crate::HttpClientManager) is this over hyper-util, with HTTP
/// configuration on top; [`ReqwestManager`](crate::ReqwestManager) (feature `reqwest`)
/// over reqwest.
///
/// `Manager` is `Send + Sync`: share it behind an `Arc` or in a `static`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use rtlocal::{ClientFactory, Manager, Sharing};
///
/// struct Unit;
/// impl ClientFactory for Unit {
///     type Client = ();
///     fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
/// }
///
/// let manager = std::sync::Arc::new(
///     Manager::builder(Unit)
///         .close_timeout(Duration::from_secs(2))
///         .sharing(Sharing::PerRuntime)
///         .build()?,
/// );
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let ids: Vec<_> = rt.block_on(async {
///     let tasks: Vec<_> = (0..8)
///         .map(|_| {
///             let manager = manager.clone();
///             tokio::spawn(async move { manager.client().await.map(|c| c.id()) })
///         })
///         .collect();
///     let mut ids = Vec::new();
///     for t in tasks { ids.push(t.await.unwrap()?); }
///     Ok::<_, rtlocal::Error>(ids)
/// })?;
/// // Per-runtime sharing: every worker thread got the same client.
/// assert!(ids.windows(2).all(|w| w[0] == w[1]));
/// # Ok::<(), rtlocal::Error>(())
/// ```
pub struct Manager<F: ClientFactory> {
    pub(crate) shared: Arc<Shared<F>>,
}

pub(crate) struct Shared<F: ClientFactory> {
    thread_slots: ThreadLocal<Arc<ManagedSlot<F>>>,
    /// Per-runtime sharing: one slot per live runtime, removed by that runtime's teardown.
    runtime_slots: parking_lot::Mutex<IdMap<runtime::Id, RuntimeSlot<F>>>,
    shut_down: AtomicBool,
    options: Options,
    factory: Arc<F>,
    pub(crate) counters: Arc<Counters>,
}

/// A per-runtime slot and the runtime instance it is for (ids are reused).
struct RuntimeSlot<F: ClientFactory> {
    entry: Arc<RuntimeEntry>,
    slot: Arc<ManagedSlot<F>>,
}

/// Configures a [`Manager`]: see [`Manager::builder`].
///
/// ```
/// use std::time::Duration;
/// # struct Unit;
/// # impl rtlocal::ClientFactory for Unit {
/// #     type Client = ();
/// #     fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
/// # }
///
/// let err = rtlocal::Manager::builder(Unit).close_timeout(Duration::ZERO).build().unwrap_err();
/// assert!(err.is_config());
/// assert!(err.to_string().contains("close_timeout"));
/// ```
pub struct ManagerBuilder<F: ClientFactory> {
    factory: F,
    options: Options,
}

impl<F: ClientFactory> ManagerBuilder<F> {
    /// How long closing a stale client (on a runtime change), `close_all` or a forced
    /// `shutdown` waits for in-flight requests and the factory's close before it forces
    /// the close. Must be greater than zero.
    ///
    /// Default is 5 seconds.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.options.close_timeout = timeout;
        self
    }

    /// Who shares a client: see [`Sharing`].
    ///
    /// Default is [`Sharing::PerThread`].
    pub fn sharing(mut self, sharing: Sharing) -> Self {
        self.options.sharing = sharing;
        self
    }

    /// Builds the manager.
    ///
    /// # Errors
    /// [`Error::is_config`] when `close_timeout` is zero.
    pub fn build(self) -> Result<Manager<F>, Error> {
        self.options.validate()?;
        Ok(Manager::from_parts(
            self.factory,
            self.options,
            Arc::new(Counters::default()),
        ))
    }
}

impl<F: ClientFactory + fmt::Debug> fmt::Debug for ManagerBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("factory", &self.factory)
            .field("close_timeout", &self.options.close_timeout)
            .field("sharing", &self.options.sharing)
            .finish()
    }
}

impl<F: ClientFactory> Manager<F> {
    /// A manager over `factory` with the default settings: a 5 second close timeout,
    /// [`Sharing::PerThread`].
    pub fn new(factory: F) -> Self {
        Manager::from_parts(factory, Options::default(), Arc::new(Counters::default()))
    }

    /// Configures a manager over `factory`.
    pub fn builder(factory: F) -> ManagerBuilder<F> {
        ManagerBuilder {
            factory,
            options: Options::default(),
        }
    }

    pub(crate) fn from_parts(factory: F, options: Options, counters: Arc<Counters>) -> Self {
        Manager {
            shared: Arc::new(Shared {
                thread_slots: ThreadLocal::new(),
                runtime_slots: parking_lot::Mutex::new(IdMap::default()),
                shut_down: AtomicBool::new(false),
                options,
                factory: Arc::new(factory),
                counters,
            }),
        }
    }

    /// The factory this manager builds clients with.
    pub fn factory(&self) -> &F {
        &self.shared.factory
    }

    /// Who shares a client (see [`Sharing`]).
    pub fn sharing(&self) -> Sharing {
        self.shared.options.sharing
    }

    /// The client for this thread (or runtime, see [`Sharing`]) and the runtime it is
    /// running on.
    ///
    /// On an unchanged runtime this is a thread-local lookup, a runtime id and liveness
    /// check and one `Arc` clone: no allocation, no global lock.
    ///
    /// # Errors
    /// [`Error::is_no_runtime`] at once when called outside a tokio runtime;
    /// [`Error::is_runtime_gone`] when the runtime is shutting down;
    /// [`Error::is_shut_down`] after [`shutdown`](Manager::shutdown); whatever the
    /// factory's `build` returned.
    ///
    /// # Cancel safety
    /// Cancelling the future while it replaces a stale client force-closes that client
    /// and leaves the slot empty; other callers waiting on the replacement retry.
    #[must_use = "futures do nothing unless polled"]
    pub fn client(&self) -> impl Future<Output = Result<Managed<F>, Error>> + Send + '_ {
        Shared::client(&self.shared)
    }

    /// Closes every client this manager handed out — including those whose runtime is
    /// idle or gone — waiting up to the close timeout for their in-flight requests; then
    /// forces the rest. The manager stays usable: the next `client()` builds anew.
    ///
    /// Safe to call concurrently and repeatedly: each call reports what it closed.
    pub async fn close_all(&self) -> CloseReport {
        let report = self
            .shared
            .close_slots(self.shared.options.close_timeout)
            .await;
        tracing::debug!(%report, "close_all finished");
        report
    }

    /// Shuts the manager down: from now on `client()` fails with
    /// [`Error::is_shut_down`]; every client stops taking requests, in-flight requests
    /// may finish until `timeout`, then the rest are cut — across every slot, including
    /// slots whose runtime is idle or gone.
    ///
    /// ```
    /// # struct Unit;
    /// # impl rtlocal::ClientFactory for Unit {
    /// #     type Client = ();
    /// #     fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rtlocal::Error> {
    /// let manager = rtlocal::Manager::new(Unit);
    /// let client = manager.client().await?;
    /// let report = manager.shutdown(std::time::Duration::from_secs(5)).await;
    /// assert_eq!(report.closed, 1);
    /// assert!(!client.is_open());
    /// assert!(manager.client().await.unwrap_err().is_shut_down());
    /// assert_eq!(manager.stats().clients_live, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// Idempotent and safe to call concurrently: a later call closes whatever is left and
    /// reports only that. A request racing the call may still be handed a client that
    /// the shutdown then closes; it is cut like any other in-flight request.
    pub async fn shutdown(&self, timeout: Duration) -> CloseReport {
        // SeqCst: ordered before the slot scan below, so every publish that does not see
        // the flag finishes before its slot can be retired (they share the slot lock).
        self.shared.shut_down.store(true, Ordering::SeqCst);
        // See `client_slow`.
        fence(Ordering::SeqCst);
        let report = self.shared.close_slots(timeout).await;
        tracing::debug!(%report, "shutdown finished");
        report
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.shut_down.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let runtime_slots = self.shared.runtime_slots.lock().len() as u64;
        self.shared
            .counters
            .snapshot(self.shared.thread_slot_count(), runtime_slots)
    }

    pub(crate) fn close_timeout(&self) -> Duration {
        self.shared.options.close_timeout
    }
}

impl<F: ClientFactory> fmt::Debug for Manager<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("Manager")
            .field("factory", &std::any::type_name::<F>())
            .field("sharing", &self.shared.options.sharing)
            .field("clients_live", &stats.clients_live)
            .field("requests_in_flight", &stats.requests_in_flight)
            .field("close_timeout", &self.shared.options.close_timeout)
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

impl<F: ClientFactory> Shared<F> {
    /// The hot path: this thread's cached client, if it is this manager's, bound to the
    /// current runtime, which is still alive, and the client is still open. That is one
    /// thread-local read, an id and two liveness loads, and one `Arc` upgrade: no lock,
    /// no allocation. Everything else goes through the slot.
    #[inline]
    pub(crate) async fn client(self: &Arc<Self>) -> Result<Managed<F>, Error> {
        let handle = Handle::try_current().map_err(|_| Error::no_runtime())?;
        if let Some(client) = self.cached(handle.id()) {
            return Ok(client);
        }
        Box::pin(self.client_slow(handle)).await
    }

    #[inline]
    fn cached(self: &Arc<Self>, runtime: runtime::Id) -> Option<Managed<F>> {
        HOT.try_with(|hot| {
            let hot = hot.try_borrow().ok()?;
            let hot = hot.as_ref()?;
            // An open client is still its slot's client (see `slot`'s invariants), and
            // the liveness token rules out a reused runtime id.
            if hot.runtime != runtime || !hot.entry.is_alive() {
                return None;
            }
            let client: Managed<F> = Managed {
                inner: hot.client.upgrade()?.downcast().ok()?,
            };
            (client.belongs_to(Arc::as_ptr(self)) && client.is_open()).then_some(client)
        })
        .ok()
        .flatten()
    }

    /// Makes `client` this thread's cached client — for a per-thread client only on the
    /// thread the binding is for: after an await, a task on a multi-thread runtime may
    /// resume on another worker, whose cache must not learn this thread's client.
    fn remember(client: &Managed<F>, key: &Binding) {
        if key.thread != ANY_THREAD && thread_token() != key.thread {
            return;
        }
        let weak: Weak<dyn Any + Send + Sync> = Arc::downgrade(&client.inner) as _;
        let previous = HOT.try_with(|hot| {
            hot.try_borrow_mut().ok().and_then(|mut hot| {
                hot.replace(Hot {
                    runtime: key.runtime,
                    entry: Arc::clone(&key.entry),
                    client: weak,
                })
            })
        });
        drop(previous);
    }

    /// The slot for a per-runtime client of `handle`'s runtime, made on first use; a
    /// teardown callback on that runtime removes it again.
    fn runtime_slot(
        self: &Arc<Self>,
        handle: &Handle,
        entry: &Arc<RuntimeEntry>,
    ) -> Result<Arc<ManagedSlot<F>>, Error> {
        let id = handle.id();
        {
            let map = self.runtime_slots.lock();
            if let Some(rs) = map.get(&id) {
                if Arc::ptr_eq(&rs.entry, entry) {
                    return Ok(Arc::clone(&rs.slot));
                }
            }
        }
        let slot = Arc::new(Slot::new());
        let weak_shared = Arc::downgrade(self);
        let weak_slot = Arc::downgrade(&slot);
        // Registered before the slot is published: a runtime already gone fails here.
        // The teardown runs after the clients' own release hooks (newest first), so the
        // slot is empty by then; dropping it from the map bounds the map by live runtimes.
        let _unregister = RuntimeEntry::register(entry, move || {
            let Some(shared) = weak_shared.upgrade() else {
                return;
            };
            let mut map = shared.runtime_slots.lock();
            if map
                .get(&id)
                .is_some_and(|rs| std::ptr::eq(Arc::as_ptr(&rs.slot), weak_slot.as_ptr()))
            {
                map.remove(&id);
            }
        })?;
        let mut map = self.runtime_slots.lock();
        match map.get(&id) {
            // Another thread of this runtime won the race; its slot serves (ours is
            // never used, and its teardown callback finds nothing to remove).
            Some(rs) if Arc::ptr_eq(&rs.entry, entry) => Ok(Arc::clone(&rs.slot)),
            // Empty, or a dead runtime's slot under a reused id: its clients were
            // released by that runtime's teardown.
            _ => {
                map.insert(
                    id,
                    RuntimeSlot {
                        entry: Arc::clone(entry),
                        slot: Arc::clone(&slot),
                    },
                );
                Ok(slot)
            }
        }
    }

    #[cold]
    async fn client_slow(self: &Arc<Self>, handle: Handle) -> Result<Managed<F>, Error> {
        let token = thread_token();
        let per_thread = self.options.sharing == Sharing::PerThread;
        let (slot, thread) = if per_thread {
            let slot = Arc::clone(self.thread_slots.get_or(|| Arc::new(Slot::new())));
            (slot, token)
        } else {
            let entry = entry_for(&handle)?;
            (self.runtime_slot(&handle, &entry)?, ANY_THREAD)
        };
        if let Some((client, key)) = slot.try_hit(&(handle.id(), thread)) {
            Self::remember(&client, &key);
            return Ok(client);
        }
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::shut_down());
        }
        if per_thread {
            watch_thread_exit(&slot, token, self.options.close_timeout);
        }
        let close_timeout = self.options.close_timeout;
        let mut take_over = false;
        loop {
            let key = Binding {
                runtime: handle.id(),
                thread,
                entry: entry_for(&handle)?,
            };
            let acquired = if take_over {
                take_over = false;
                slot.take_over(key.clone())
            } else {
                slot.acquire(key.clone())
            };
            let lease = match acquired {
                Acquire::Hit(client) => {
                    Self::remember(&client, &key);
                    return Ok(client);
                }
                Acquire::Wait(done) => {
                    // Bounded: the leader (a replacement on this runtime, or a close_all /
                    // shutdown from anywhere) may be parked on a runtime nobody drives.
                    // This runtime is running us, so its timer works.
                    let waited = tokio::time::timeout(close_timeout, Completion::wait(done)).await;
                    match waited {
                        Ok(Outcome::Ready(client)) => {
                            Self::remember(&client, &key);
                            return Ok(client);
                        }
                        Ok(Outcome::Failed(e)) => return Err(e),
                        Ok(Outcome::Retry) => continue,
                        Err(_) => {
                            tracing::warn!(
                                runtime = %key.runtime,
                                "waited close_timeout for a client close that did not finish; \
                                 taking over (the stale client is force-closed)"
                            );
                            take_over = true;
                            continue;
                        }
                    }
                }
                Acquire::Lead(lease) => lease,
            };
            if let Some(stale) = lease.stale() {
                let outcome = stale.close_graceful(close_timeout).await;
                Counters::inc(&self.counters.clients_replaced);
                tracing::debug!(
                    stale = %stale.id(),
                    stale_runtime = %stale.runtime_id(),
                    runtime = %key.runtime,
                    thread = ?std::thread::current().id(),
                    forced = outcome.forced,
                    "runtime changed: stale client closed"
                );
            }
            match lease.publish_with(|| self.build_client(&handle, &key, &slot)) {
                Ok(client) => {
                    // Pairs with the fence in `shutdown`: either its slot scan sees this
                    // slot (this thread's slot entry was published before), or this load
                    // sees its flag. Without both fences, a slot new to the scan and a
                    // stale flag could both be read, leaving a live client behind.
                    fence(Ordering::SeqCst);
                    if self.shut_down.load(Ordering::SeqCst) {
                        let id = client.id();
                        slot.clear_if(|c, _| c.id() == id);
                        return Err(Error::shut_down());
                    }
                    Self::remember(&client, &key);
                    return Ok(client);
                }
                Err(PublishError::Superseded) => continue,
                Err(PublishError::Failed(e)) => return Err(e),
            }
        }
    }

    /// Builds a client for `key`'s runtime and arranges for its release when that
    /// runtime is torn down. Runs inside the slot's publish critical section.
    fn build_client(
        self: &Arc<Self>,
        handle: &Handle,
        key: &Binding,
        slot: &Arc<ManagedSlot<F>>,
    ) -> Result<Managed<F>, Error> {
        // Checked under the slot lock: a shutdown's scan either sees this slot's new
        // client or this check sees the flag.
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(Error::shut_down());
        }
        let built = self.factory.build(handle)?;
        let client = Managed::new(
            built,
            handle.clone(),
            Arc::downgrade(self),
            Arc::clone(&self.counters),
            Arc::clone(&self.factory),
        );
        let weak_client = Arc::downgrade(&client.inner);
        let weak_slot = Arc::downgrade(slot);
        let weak_shared = Arc::downgrade(self);
        let id = client.id();
        let hook = RuntimeEntry::register(&key.entry, move || {
            let released = weak_client
                .upgrade()
                .is_some_and(|inner| Managed { inner }.release_at_teardown());
            if let Some(slot) = weak_slot.upgrade() {
                slot.clear_if(|c, _| c.id() == id);
            }
            if released {
                if let Some(shared) = weak_shared.upgrade() {
                    Counters::inc(&shared.counters.runtime_releases);
                }
            }
        })?;
        client.set_hook(hook);
        Ok(client)
    }

    /// Every slot: each thread's, and each runtime's.
    fn all_slots(&self) -> Vec<Arc<ManagedSlot<F>>> {
        let mut slots: Vec<_> = self.thread_slots.iter().cloned().collect();
        slots.extend(
            self.runtime_slots
                .lock()
                .values()
                .map(|rs| Arc::clone(&rs.slot)),
        );
        slots
    }

    /// Closes every slot's client: `close_all` and `shutdown` share this.
    ///
    /// All clients are marked closing first, so they drain together against one deadline;
    /// slots caught mid-replacement are waited for (within the deadline) and then
    /// retired, or force-cleared when the deadline passes. A panic while closing one
    /// client is recorded and the rest still close.
    async fn close_slots(&self, timeout: Duration) -> CloseReport {
        let start = Instant::now();
        // `Duration::MAX` and friends mean "no deadline": a century will do.
        let deadline = start
            .checked_add(timeout)
            .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut report = CloseReport::default();
        let slots = self.all_slots();
        let mut retiring = Vec::new();
        let mut busy = Vec::new();
        for slot in &slots {
            match slot.retire() {
                Retire::Lease(lease) => retiring.push(begin_retire(lease)),
                Retire::Busy(done) => busy.push((slot, done)),
                Retire::Empty => {}
            }
        }
        while let Some((slot, done)) = busy.pop() {
            report.waited_for_replacement += 1;
            let waited = tokio::time::timeout_at(deadline, Completion::wait(done)).await;
            if waited.is_err() {
                // The replacement's leader is stuck (e.g. its runtime is idle).
                if slot.force_clear() {
                    report.closed += 1;
                    report.forced += 1;
                }
                continue;
            }
            match slot.retire() {
                Retire::Lease(lease) => retiring.push(begin_retire(lease)),
                Retire::Busy(done) => busy.push((slot, done)),
                Retire::Empty => {}
            }
        }
        // Concurrently, and each slot is released the moment its own client is closed:
        // a thread waiting on its slot never waits for another thread's drain.
        let closes = retiring
            .into_iter()
            .map(|(client, lease)| {
                Box::pin(async move {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let closing = client.close_graceful(left.max(Duration::from_millis(1)));
                    let result = CatchUnwind(Box::pin(closing)).await;
                    if result.is_err() {
                        client.close_now("close panicked");
                    }
                    lease.finish_empty();
                    (client, result)
                }) as ClosingFuture<'_, F>
            })
            .collect();
        for (client, result) in join_all(closes).await {
            match result {
                Ok(outcome) => {
                    if outcome.closed_now {
                        report.closed += 1;
                    }
                    if outcome.forced {
                        report.forced += 1;
                        report.in_flight_cut += outcome.cut;
                    }
                }
                Err(msg) => {
                    tracing::warn!(client = %client.id(), panic = %msg, "closing a client panicked; it was force-closed");
                    report.failed.push(Error::with_detail(
                        Kind::Closed,
                        format!("closing {} panicked: {msg}", client.id()),
                    ));
                }
            }
        }
        report.elapsed = start.elapsed();
        report
    }

    fn thread_slot_count(&self) -> u64 {
        self.thread_slots.iter().count() as u64
    }
}

type ClosingFuture<'a, F> =
    Pin<Box<dyn Future<Output = (Managed<F>, Result<CloseOutcome, String>)> + Send + 'a>>;

impl<F: ClientFactory> Drop for Shared<F> {
    fn drop(&mut self) {
        // Threads may still cache handles of these clients: close them, so nothing a
        // dropped manager built keeps connections open.
        for slot in self.thread_slots.iter() {
            slot.force_clear();
        }
        for rs in self.runtime_slots.get_mut().values() {
            rs.slot.force_clear();
        }
    }
}

/// Marks the lease's client closing (no new requests) and pairs the two up.
#[allow(clippy::type_complexity)]
fn begin_retire<F: ClientFactory>(
    lease: Lease<'_, Managed<F>, Binding, Error>,
) -> (Managed<F>, Lease<'_, Managed<F>, Binding, Error>) {
    let client = lease
        .stale()
        .cloned()
        .expect("a retirement lease always carries the client it retires");
    client.begin_close();
    (client, lease)
}

/// Runs the futures concurrently; their outputs in order.
async fn join_all<T>(mut futs: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Polls a future, turning a panic into `Err(message)`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned()))),
        }
    }
}
