//! [`HttpClientManager`]: one client per thread, bound to the runtime it runs on.

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

use crate::client::{Client, ClientInner, CloseOutcome};
use crate::config::{Builder, Config};
use crate::connect::DnsCache;
use crate::error::{Error, Kind};
use crate::runtime::{RuntimeEntry, entry_for};
use crate::slot::{Acquire, BindingKey, Completion, Lease, Outcome, PublishError, Retire, Slot};
use crate::stats::{CloseReport, Counters, Stats};

/// What a slot's client is bound to: a runtime (id + liveness token) and a thread.
#[derive(Clone)]
pub(crate) struct Binding {
    runtime: runtime::Id,
    thread: u64,
    entry: Arc<RuntimeEntry>,
}

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

type ManagedSlot = Slot<Client, Binding, Error>;

/// A per-process token for the current thread. `thread_local::ThreadLocal` hands an
/// exited thread's slot to a new thread; the token tells them apart.
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

/// Closes this thread's clients when it exits, so a pool whose threads come and go
/// leaves no connections behind. The close is graceful, on each client's own runtime:
/// its requests may still be in flight on other threads of that runtime.
struct ThreadExit {
    token: u64,
    slots: Vec<(Weak<ManagedSlot>, Duration)>,
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        let token = self.token;
        for (slot, close_timeout) in self.slots.drain(..) {
            let Some(slot) = slot.upgrade() else { continue };
            if let Some(client) = slot.take_if(|_, key| key.thread == token) {
                client.close_in_background(close_timeout);
            }
        }
    }
}

/// This thread's last client, for the hot path (see `Shared::cached`).
///
/// The client is held weakly: its slot owns it. A thread that stops calling `client()`
/// after its runtime ended must not keep that client — and through its `Handle` the dead
/// runtime's driver, with its epoll and eventfd descriptors — alive until the thread exits.
struct Hot {
    runtime: runtime::Id,
    entry: Arc<RuntimeEntry>,
    client: Weak<ClientInner>,
}

thread_local! {
    static HOT: RefCell<Option<Hot>> = const { RefCell::new(None) };
}

thread_local! {
    static THREAD_EXIT: RefCell<ThreadExit> = const {
        RefCell::new(ThreadExit { token: 0, slots: Vec::new() })
    };
}

fn watch_thread_exit(slot: &Arc<ManagedSlot>, token: u64, close_timeout: Duration) {
    // `try_with`: during thread teardown there is nothing left to watch for.
    let _ = THREAD_EXIT.try_with(|exit| {
        let Ok(mut exit) = exit.try_borrow_mut() else {
            return;
        };
        exit.token = token;
        if !exit
            .slots
            .iter()
            .any(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(slot)))
        {
            exit.slots.retain(|(w, _)| w.strong_count() > 0);
            exit.slots.push((Arc::downgrade(slot), close_timeout));
        }
    });
}

/// Hands every thread an HTTP [`Client`] bound to the tokio runtime it is running on.
///
/// * Same thread, same live runtime → the same client.
/// * The thread's runtime changed → the stale client is closed (in-flight requests get
///   up to [`close_timeout`](Builder::close_timeout)), *then* the slot is reset, *then*
///   the new client is published. Concurrent callers during a replacement all receive
///   the one new client.
/// * A runtime torn down → the clients bound to it are closed right then.
///
/// `HttpClientManager` is `Send + Sync`; share it behind an `Arc` or in a `static`
/// (e.g. `static M: LazyLock<HttpClientManager> = LazyLock::new(HttpClientManager::new)`).
/// [`crate::client`] uses a process-wide default one.
///
/// # Runtime requirements
/// The runtime must have its I/O and time drivers enabled, as for any tokio networking
/// (`#[tokio::main]`, `#[tokio::test]` and `Builder::enable_all()` do this).
///
/// # Examples
///
/// ```
/// use rtlocal::HttpClientManager;
///
/// # fn main() -> Result<(), rtlocal::Error> {
/// let manager = HttpClientManager::new();
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let first = rt.block_on(manager.client())?;
/// assert_eq!(first.id(), rt.block_on(manager.client())?.id());
///
/// // A new runtime on the same thread gets a new client; the old one was closed.
/// drop(rt);
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let second = rt.block_on(manager.client())?;
/// assert_ne!(first.id(), second.id());
/// assert!(!first.is_open());
/// # Ok(()) }
/// ```
pub struct HttpClientManager {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    slots: ThreadLocal<Arc<ManagedSlot>>,
    shut_down: AtomicBool,
    /// Shared by every client: DNS answers do not belong to a runtime.
    dns: Option<Arc<DnsCache>>,
    config: Config,
    counters: Arc<Counters>,
}

impl HttpClientManager {
    /// A manager with the default configuration (see [`Builder`]).
    pub fn new() -> Self {
        // The defaults always validate; should building the TLS configuration ever fail,
        // https requests report it rather than `new` panicking.
        Builder::new()
            .build()
            .unwrap_or_else(|_| Self::from_config(Config::default()))
    }

    /// Configures a manager.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        HttpClientManager {
            shared: Arc::new(Shared {
                slots: ThreadLocal::new(),
                shut_down: AtomicBool::new(false),
                dns: config.dns_cache_ttl.map(DnsCache::new),
                config,
                counters: Arc::new(Counters::default()),
            }),
        }
    }

    /// The client for this thread and the runtime it is running on.
    ///
    /// On an unchanged runtime this is a thread-local lookup, a runtime id and liveness
    /// check and one `Arc` clone: no allocation, no global lock.
    ///
    /// # Errors
    /// [`Error::is_no_runtime`] at once when called outside a tokio runtime;
    /// [`Error::is_runtime_gone`] when the runtime is shutting down.
    ///
    /// # Cancel safety
    /// Cancelling the future while it replaces a stale client force-closes that client
    /// and leaves the slot empty; other callers waiting on the replacement retry.
    pub async fn client(&self) -> Result<Client, Error> {
        Shared::client(&self.shared).await
    }

    /// Closes every thread's client — including those whose runtime is idle or gone —
    /// and waits up to the close timeout for their in-flight requests; then forces the
    /// rest shut on the wire. The manager stays usable: the next `client()` builds anew.
    ///
    /// Safe to call concurrently and repeatedly: each call reports what it closed.
    pub async fn close_all(&self) -> CloseReport {
        let report = self
            .shared
            .close_slots(self.shared.config.close_timeout)
            .await;
        tracing::debug!(%report, "close_all finished");
        report
    }

    /// Shuts the manager down: from now on `client()` fails with
    /// [`Error::is_shut_down`]; every thread's client stops taking requests, in-flight
    /// requests may finish until `timeout`, then the rest are cut and every connection is
    /// shut down on the wire — across every thread's slot, including slots whose runtime
    /// is idle or gone.
    ///
    /// Idempotent and safe to call concurrently: a later call closes whatever is left and
    /// reports only that. A request racing the call may still be handed a client that
    /// the shutdown then closes; it is cut like any other in-flight request.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    ///
    /// let manager = rtlocal::HttpClientManager::new();
    /// let _client = manager.client().await.unwrap();
    /// let report = manager.shutdown(Duration::from_secs(5)).await;
    /// assert_eq!(report.closed, 1);
    /// assert!(manager.client().await.unwrap_err().is_shut_down());
    /// println!("{report}");
    /// # }
    /// ```
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
        self.shared.counters.snapshot(self.shared.slot_count())
    }
}

impl Default for HttpClientManager {
    fn default() -> Self {
        HttpClientManager::new()
    }
}

impl fmt::Debug for HttpClientManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("HttpClientManager")
            .field("clients_live", &stats.clients_live)
            .field("connections_open", &stats.connections_open)
            .field("requests_in_flight", &stats.requests_in_flight)
            .field("close_timeout", &self.shared.config.close_timeout)
            .finish()
    }
}

impl Shared {
    /// The hot path: this thread's cached client, if it is this manager's, bound to the
    /// current runtime, which is still alive, and the client is still open. That is one
    /// thread-local read, an id and two liveness loads, and one `Arc` clone: no lock, no
    /// allocation. Everything else goes through the slot.
    #[inline]
    pub(crate) async fn client(self: &Arc<Self>) -> Result<Client, Error> {
        let handle = Handle::try_current().map_err(|_| Error::no_runtime())?;
        if let Some(client) = self.cached(handle.id()) {
            return Ok(client);
        }
        Box::pin(self.client_slow(handle)).await
    }

    #[inline]
    fn cached(self: &Arc<Self>, runtime: runtime::Id) -> Option<Client> {
        HOT.try_with(|hot| {
            let hot = hot.try_borrow().ok()?;
            let hot = hot.as_ref()?;
            // An open client is still its slot's client (see `slot`'s invariants), and
            // the liveness token rules out a reused runtime id.
            if hot.runtime != runtime || !hot.entry.is_alive() {
                return None;
            }
            let client = Client {
                inner: hot.client.upgrade()?,
            };
            (client.belongs_to(Arc::as_ptr(self)) && client.is_open()).then_some(client)
        })
        .ok()
        .flatten()
    }

    /// Makes `client` this thread's cached client — only on the thread the binding is
    /// for: after an await, a task on a multi-thread runtime may resume on another
    /// worker, whose cache must not learn this thread's client.
    fn remember(client: &Client, key: &Binding) {
        if thread_token() != key.thread {
            return;
        }
        let previous = HOT.try_with(|hot| {
            hot.try_borrow_mut().ok().and_then(|mut hot| {
                hot.replace(Hot {
                    runtime: key.runtime,
                    entry: Arc::clone(&key.entry),
                    client: Arc::downgrade(&client.inner),
                })
            })
        });
        drop(previous);
    }

    #[cold]
    async fn client_slow(self: &Arc<Self>, handle: Handle) -> Result<Client, Error> {
        let token = thread_token();
        let slot = Arc::clone(self.slots.get_or(|| Arc::new(Slot::new())));
        if let Some((client, key)) = slot.try_hit(&(handle.id(), token)) {
            Self::remember(&client, &key);
            return Ok(client);
        }
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::shut_down());
        }
        watch_thread_exit(&slot, token, self.config.close_timeout);
        let mut take_over = false;
        loop {
            let key = Binding {
                runtime: handle.id(),
                thread: token,
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
                    let waited =
                        tokio::time::timeout(self.config.close_timeout, Completion::wait(done))
                            .await;
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
                let outcome = stale.close_graceful(self.config.close_timeout).await;
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
        slot: &Arc<ManagedSlot>,
    ) -> Result<Client, Error> {
        // Checked under the slot lock: a shutdown's scan either sees this slot's new
        // client or this check sees the flag.
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(Error::shut_down());
        }
        let client = Client::build(
            &self.config,
            handle.clone(),
            Arc::downgrade(self),
            Arc::clone(&self.counters),
            self.dns.clone(),
        );
        let weak_client = Arc::downgrade(&client.inner);
        let weak_slot = Arc::downgrade(slot);
        let weak_shared = Arc::downgrade(self);
        let id = client.id();
        let hook = RuntimeEntry::register(&key.entry, move || {
            let released = weak_client
                .upgrade()
                .is_some_and(|inner| Client { inner }.release_at_teardown());
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
        let mut retiring = Vec::new();
        let mut busy = Vec::new();
        for slot in self.slots.iter() {
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
                })
                    as Pin<
                        Box<
                            dyn Future<Output = (Client, Result<CloseOutcome, String>)> + Send + '_,
                        >,
                    >
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
                    tracing::warn!(client = %client.id(), panic = %msg, "closing a client panicked; its connections were forced shut");
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

    fn slot_count(&self) -> u64 {
        self.slots.iter().count() as u64
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Threads may still cache handles of these clients: close them, so nothing a
        // dropped manager built keeps connections open.
        for slot in self.slots.iter() {
            slot.force_clear();
        }
    }
}

/// Marks the lease's client closing (no new requests) and pairs the two up.
fn begin_retire(
    lease: Lease<'_, Client, Binding, Error>,
) -> (Client, Lease<'_, Client, Binding, Error>) {
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
