//! [`HttpClientManager`]: one client per thread, bound to the runtime it runs on.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use thread_local::ThreadLocal;
use tokio::runtime::{self, Handle};
use tokio::time::Instant;

use crate::client::Client;
use crate::config::{Builder, Config};
use crate::error::Error;
use crate::runtime::{RuntimeEntry, entry_for};
use crate::slot::{Acquire, BindingKey, Completion, Outcome, PublishError, Slot};
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
/// leaves no connections behind.
struct ThreadExit {
    token: u64,
    slots: Vec<Weak<ManagedSlot>>,
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        let token = self.token;
        for slot in self.slots.drain(..).filter_map(|w| w.upgrade()) {
            slot.clear_if(|_, key| key.thread == token);
        }
    }
}

thread_local! {
    static THREAD_EXIT: RefCell<ThreadExit> = const {
        RefCell::new(ThreadExit { token: 0, slots: Vec::new() })
    };
}

fn watch_thread_exit(slot: &Arc<ManagedSlot>, token: u64) {
    // `try_with`: during thread teardown there is nothing left to watch for.
    let _ = THREAD_EXIT.try_with(|exit| {
        let Ok(mut exit) = exit.try_borrow_mut() else {
            return;
        };
        exit.token = token;
        if !exit
            .slots
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(slot)))
        {
            exit.slots.retain(|w| w.strong_count() > 0);
            exit.slots.push(Arc::downgrade(slot));
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
    config: Config,
    counters: Arc<Counters>,
}

impl HttpClientManager {
    /// A manager with the default configuration (see [`Builder`]).
    pub fn new() -> Self {
        Self::from_config(Config::default())
    }

    /// Configures a manager.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        HttpClientManager {
            shared: Arc::new(Shared {
                slots: ThreadLocal::new(),
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

    /// Closes every thread's client and waits (up to the close timeout) for their
    /// in-flight requests. The manager stays usable: the next `client()` builds anew.
    pub async fn close_all(&self) -> CloseReport {
        self.shared.close_all().await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
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
    #[inline]
    pub(crate) async fn client(self: &Arc<Self>) -> Result<Client, Error> {
        let handle = Handle::try_current().map_err(|_| Error::no_runtime())?;
        let token = thread_token();
        let slot = self.slots.get_or(|| Arc::new(Slot::new()));
        if let Some(client) = slot.try_hit(&(handle.id(), token)) {
            return Ok(client);
        }
        let slot = Arc::clone(slot);
        Box::pin(self.client_slow(handle, slot, token)).await
    }

    #[cold]
    async fn client_slow(
        self: &Arc<Self>,
        handle: Handle,
        slot: Arc<ManagedSlot>,
        token: u64,
    ) -> Result<Client, Error> {
        watch_thread_exit(&slot, token);
        loop {
            let key = Binding {
                runtime: handle.id(),
                thread: token,
                entry: entry_for(&handle)?,
            };
            let lease = match slot.acquire(key.clone()) {
                Acquire::Hit(client) => return Ok(client),
                Acquire::Wait(done) => match Completion::wait(done).await {
                    Outcome::Ready(client) => return Ok(client),
                    Outcome::Failed(e) => return Err(e),
                    Outcome::Retry => continue,
                },
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
                Ok(client) => return Ok(client),
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
        let client = Client::build(
            &self.config,
            handle.clone(),
            Arc::downgrade(self),
            Arc::clone(&self.counters),
        );
        let weak_client = Arc::downgrade(&client.inner);
        let weak_slot = Arc::downgrade(slot);
        let weak_shared = Arc::downgrade(self);
        let id = client.id();
        let hook = RuntimeEntry::register(&key.entry, move || {
            let released = weak_client
                .upgrade()
                .is_some_and(|inner| Client { inner }.close_now("runtime torn down"));
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

    async fn close_all(&self) -> CloseReport {
        let start = Instant::now();
        let deadline = start + self.config.close_timeout;
        let mut report = CloseReport::default();
        let mut retiring = Vec::new();
        for slot in self.slots.iter() {
            match slot.retire() {
                Some(lease) => {
                    if let Some(client) = lease.stale().cloned() {
                        // Marked closing before any is waited on, so all drain together
                        // against one deadline.
                        client.begin_close();
                        retiring.push((client, lease));
                    }
                }
                None if slot.is_replacing() => report.busy += 1,
                None => {}
            }
        }
        for (client, lease) in retiring {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = client
                .close_graceful(left.max(std::time::Duration::from_millis(1)))
                .await;
            lease.finish_empty();
            if outcome.closed_now {
                report.closed += 1;
            }
            if outcome.forced {
                report.forced += 1;
                report.in_flight_cut += outcome.cut;
            }
        }
        report.elapsed = start.elapsed();
        tracing::debug!(%report, "close_all finished");
        report
    }
}
