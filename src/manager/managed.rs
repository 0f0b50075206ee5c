//! [`Managed`]: the shared handle on one client a [`Manager`](crate::Manager) built, with
//! the lifecycle every managed client has (open → closing → closed, requests in flight,
//! the teardown hook), whatever the client type.

use std::any::Any;
use std::fmt;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::{self, Handle};
use tokio::sync::Notify;

use super::closer;
use super::factory::ClientFactory;
use super::id::ClientId;
use super::stats::Counters;
use super::timer::TokioTimer;
use crate::lifecycle::{
    CleanupHandle, CloseOutcome, Finished, Lifecycle, Phase, SlotClient, Timer, panic_message,
};

/// A client a [`Manager`](crate::Manager) built, bound to one runtime: one `Arc`, cheap to
/// clone. Derefs to the factory's client type.
///
/// Get one from [`Manager::client`](crate::Manager::client) each time you need it rather
/// than keeping it: the same thread on the same live runtime always gets the same client
/// back ([`id`](Managed::id) equal), at the cost of a thread-local lookup. A handle kept
/// past its runtime's end refers to a closed client.
///
/// # Examples
///
/// ```
/// # struct Unit;
/// # impl rtlocal::ClientFactory for Unit {
/// #     type Client = ();
/// #     async fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rtlocal::Error> {
/// let manager = rtlocal::Manager::new(Unit);
/// let client = manager.client().await?;
/// assert_eq!(client.runtime_id(), tokio::runtime::Handle::current().id());
/// assert!(client.is_open());
/// manager.close_all().await;
/// assert!(!client.is_open());
/// # Ok(()) }
/// ```
pub struct Managed<F: ClientFactory> {
    pub(crate) inner: Arc<Entry<F>>,
}

pub(crate) struct Entry<F: ClientFactory> {
    id: ClientId,
    runtime: runtime::Id,
    /// Open → closing (draining) → closed, and the requests in flight.
    life: Lifecycle,
    drained: Notify,
    hook: parking_lot::Mutex<Option<CleanupHandle>>,
    /// The manager's shared state, type-erased so this module needs nothing from the
    /// manager's (the manager downcasts it back to re-route a request).
    pub(crate) manager: Weak<dyn Any + Send + Sync>,
    pub(crate) counters: Arc<Counters>,
    factory: Arc<F>,
    /// The client's runtime, kept only when the factory's clients need it to close
    /// ([`ClientFactory::needs_runtime_to_close`]): a close checks that it runs.
    needs_runtime: Option<Handle>,
    pub(crate) client: F::Client,
    /// What a handle dereferences to on another runtime
    /// ([`ClientFactory::foreign_runtime_client`]), built on first need. Boxed: most
    /// clients never need one, and an entry may outlive its client in a thread's slot.
    foreign: std::sync::OnceLock<Option<Box<F::Client>>>,
}

/// How long a close waits for the client's runtime to run a probe task
/// ([`ClientFactory::needs_runtime_to_close`]).
const RUNTIME_PROBE: Duration = Duration::from_millis(100);

/// When a close checks that the client's runtime runs
/// ([`ClientFactory::needs_runtime_to_close`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum WireCheck {
    /// The close waits for the answer (bounded) and reports it: a thread's exit.
    Await,
    /// On the closer, only the statistic learns the answer: a replacement, whose caller
    /// waits for this close.
    Background,
    /// Not here: the caller checks once it has let go of the client
    /// ([`unclosed_on_wire`]), since the connections close only when the runtime runs
    /// *after* the last handle is gone: `close_all` and `shutdown`.
    Deferred,
}

/// How a close ends, after the lifecycle says this caller is the one that closes.
#[derive(Clone, Copy)]
enum Finish {
    /// The factory's graceful close already ran.
    Graceful,
    /// Cut the connections ([`ClientFactory::abort`]).
    Abort,
    /// The close deadline passed: abort, and count the close as forced.
    Deadline,
    /// The runtime is being torn down ([`ClientFactory::release`]).
    RuntimeGone,
}

impl<F: ClientFactory> Managed<F> {
    pub(crate) fn new(
        client: F::Client,
        handle: Handle,
        manager: Weak<dyn Any + Send + Sync>,
        counters: Arc<Counters>,
        factory: Arc<F>,
    ) -> Self {
        Counters::inc(&counters.clients_created);
        let needs_runtime = factory.needs_runtime_to_close().then(|| handle.clone());
        let inner = Entry {
            id: ClientId::next(),
            runtime: handle.id(),
            life: Lifecycle::new(),
            drained: Notify::new(),
            hook: parking_lot::Mutex::new(None),
            manager,
            counters,
            factory,
            needs_runtime,
            client,
            foreign: std::sync::OnceLock::new(),
        };
        tracing::debug!(
            client = %inner.id,
            runtime = %inner.runtime,
            thread = ?std::thread::current().id(),
            "client created"
        );
        Managed {
            inner: Arc::new(inner),
        }
    }

    /// This client's id: equal for every clone, different for every client built.
    pub fn id(&self) -> ClientId {
        self.inner.id
    }

    /// The runtime this client belongs to.
    pub fn runtime_id(&self) -> runtime::Id {
        self.inner.runtime
    }

    /// Whether the client has not been closed (or begun closing).
    pub fn is_open(&self) -> bool {
        self.inner.life.phase() == Phase::Open
    }

    /// The factory's client.
    pub fn get_ref(&self) -> &F::Client {
        &self.inner.client
    }

    /// Counts a request in flight until the guard is dropped: a graceful close waits for
    /// it (up to the close timeout). `None` once the client is closing: get a fresh one
    /// from the manager.
    ///
    /// [`HttpClientManager`](crate::HttpClientManager)'s clients track every request
    /// themselves; use this to give another factory's requests the same graceful close.
    ///
    /// ```
    /// # struct Unit;
    /// # impl rtlocal::ClientFactory for Unit {
    /// #     type Client = ();
    /// #     async fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rtlocal::Error> {
    /// let manager = rtlocal::Manager::new(Unit);
    /// let client = manager.client().await?;
    /// let guard = client.track().expect("an open client");
    /// assert_eq!(manager.stats().requests_in_flight, 1);
    /// drop(guard);
    /// assert_eq!(manager.stats().requests_in_flight, 0);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn track(&self) -> Option<RequestGuard<F>> {
        self.inner.begin_request()
    }

    /// Closes this client: no new requests, in-flight ones may finish until `timeout`,
    /// then the factory's close (for what is left of `timeout`); past the deadline the
    /// close is forced. Works from any thread and any executor (the deadline is the
    /// closer's timer).
    ///
    /// A client whose factory needs its runtime to close ([`ClientFactory::needs_runtime_to_close`])
    /// is then checked, as `wire` says: does that runtime still run?
    pub(crate) async fn close_graceful(&self, timeout: Duration, wire: WireCheck) -> CloseOutcome {
        let inner = &self.inner;
        inner.life.begin_close();
        if inner.life.phase() == Phase::Closed {
            return CloseOutcome::default();
        }
        let timer = TokioTimer;
        let deadline = timer.after(timeout);
        let drained = timer.until(deadline, inner.wait_drained()).await.is_some();
        let finished = drained
            && timer
                .until(
                    deadline,
                    inner
                        .factory
                        .close_on(&inner.client, inner.needs_runtime.as_ref()),
                )
                .await
                .is_some();
        let mut outcome = if finished {
            inner.outcome(inner.shut("closed", Finish::Graceful), false)
        } else {
            inner.outcome(inner.shut("deadline", Finish::Deadline), true)
        };
        if let (true, Some(runtime)) = (outcome.closed_now, self.runtime_to_check()) {
            match wire {
                WireCheck::Await => {
                    let budget = timer.remaining(deadline).max(Duration::from_millis(10));
                    outcome.not_closed_on_wire = !self.check_wire(runtime, budget).await;
                }
                WireCheck::Background => {
                    let (client, runtime) = (self.clone(), runtime.clone());
                    closer::spawn(async move {
                        let _ = client.check_wire(&runtime, RUNTIME_PROBE).await;
                    });
                }
                WireCheck::Deferred => {}
            }
        }
        outcome
    }

    /// The runtime a close must check runs, for a factory whose clients need it
    /// ([`ClientFactory::needs_runtime_to_close`]).
    pub(crate) fn runtime_to_check(&self) -> Option<&Handle> {
        let inner = &self.inner;
        inner
            .needs_runtime
            .as_ref()
            .filter(|_| inner.factory.left_to_runtime(&inner.client))
    }

    /// Whether the closed client's runtime runs (so its connections close); counted and
    /// logged when it does not.
    async fn check_wire(&self, runtime: &Handle, budget: Duration) -> bool {
        let inner = &self.inner;
        if runtime_runs(runtime, RUNTIME_PROBE.min(budget)).await {
            return true;
        }
        Counters::inc(&inner.counters.clients_not_closed_on_wire);
        tracing::debug!(
            client = %inner.id,
            runtime = %inner.runtime,
            "client closed, but its runtime is not running: its connections stay \
             open until that runtime runs again or is dropped"
        );
        false
    }

    /// Stops new requests without waiting for anything.
    pub(crate) fn begin_close(&self) {
        self.inner.life.begin_close();
    }

    /// Closes at once, cutting whatever is in flight. Returns whether this call closed it.
    pub(crate) fn close_now(&self, why: &'static str) -> bool {
        self.inner.shut(why, Finish::Abort).first
    }

    /// Releases the client from its runtime's teardown: the runtime is dropping every
    /// task (connections included) and whatever is in flight with them, so there is
    /// nothing to wait for.
    pub(crate) fn release_at_teardown(&self) -> bool {
        self.inner
            .shut("runtime torn down", Finish::RuntimeGone)
            .first
    }

    pub(crate) fn set_hook(&self, hook: CleanupHandle) {
        let mut slot = self.inner.hook.lock();
        if self.inner.life.phase() == Phase::Closed {
            drop(slot);
            hook.cancel();
        } else {
            *slot = Some(hook);
        }
    }

    /// Whether this client was built by the manager whose shared state is at `ptr`.
    /// (Its `Weak` keeps that allocation from being reused while the client exists.)
    #[inline]
    pub(crate) fn belongs_to(&self, ptr: *const ()) -> bool {
        std::ptr::eq(self.inner.manager.as_ptr().cast::<()>(), ptr)
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.inner.life.in_flight()
    }

    fn state(&self) -> &'static str {
        match self.inner.life.phase() {
            Phase::Open => "open",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        }
    }
}

/// Whether the runtime of `handle` runs a task within `within`: a no-op task is spawned
/// on it, and it runs only if some thread drives that runtime (an idle `current_thread`
/// runtime whose thread left `block_on` does not). A runtime being torn down counts as
/// running: it drops its tasks, and the sockets they own close with them. Waits on
/// rtlocal's timer thread, so it works from any runtime or executor.
///
/// For a [`ClientFactory`] whose close waits for its runtime's tasks
/// ([`ClientFactory::close_on`]).
///
/// ```
/// use std::time::Duration;
///
/// // Nobody drives this one.
/// let idle = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// rt.block_on(async {
///     let here = tokio::runtime::Handle::current();
///     assert!(rtlocal::runtime_is_running(&here, Duration::from_secs(1)).await);
///     assert!(!rtlocal::runtime_is_running(idle.handle(), Duration::from_millis(50)).await);
/// });
/// ```
pub async fn runtime_is_running(handle: &Handle, within: Duration) -> bool {
    runtime_runs(handle, within).await
}

/// Waits `duration` on rtlocal's timer thread, so from any runtime or executor, whatever
/// any runtime is doing: for a [`ClientFactory`] that polls while it closes
/// ([`ClientFactory::close_on`]). Without a timer thread (it could not be started) it
/// returns at once.
///
/// ```
/// # futures_executor::block_on(async {
/// rtlocal::sleep(std::time::Duration::from_millis(1)).await; // no runtime needed
/// # });
/// ```
pub async fn sleep(duration: Duration) {
    let timer = TokioTimer;
    let _ = timer
        .until(timer.after(duration), std::future::pending::<()>())
        .await;
}

/// Whether `runtime` runs a task within `bound`: spawned from here, a no-op task runs
/// only if some thread drives that runtime. A runtime shutting down drops the task (and
/// with it every connection task): that counts as running, its sockets are closed.
async fn runtime_runs(runtime: &Handle, bound: Duration) -> bool {
    let probe = runtime.spawn(async {});
    let timer = TokioTimer;
    // A probe still queued when we give up stays harmless: it runs, or is dropped with
    // its runtime.
    timer.until(timer.after(bound), probe).await.is_some()
}

/// Of the closed clients whose runtimes are `runtimes` (one entry per client, the
/// manager's handles on them already let go of), how many were left to a runtime that
/// does not run a probe task within `budget` (at most [`RUNTIME_PROBE`]), and those
/// runtimes, each once. Each runtime is probed once, all at the same time; a probe
/// spawned now queues behind the tasks the dropped clients aborted, so a runtime that
/// runs it has closed their sockets.
pub(crate) async fn unclosed_on_wire(
    runtimes: Vec<Handle>,
    budget: Duration,
    counters: &Counters,
) -> (usize, Vec<runtime::Id>) {
    let mut distinct: Vec<(Handle, usize)> = Vec::new();
    for handle in runtimes {
        match distinct.iter_mut().find(|(h, _)| h.id() == handle.id()) {
            Some((_, clients)) => *clients += 1,
            None => distinct.push((handle, 1)),
        }
    }
    let bound = RUNTIME_PROBE.min(budget);
    let runs =
        futures_util::future::join_all(distinct.iter().map(|(h, _)| runtime_runs(h, bound))).await;
    let mut left_open = (0, Vec::new());
    for ((handle, clients), runs) in distinct.into_iter().zip(runs) {
        if runs {
            continue;
        }
        for _ in 0..clients {
            Counters::inc(&counters.clients_not_closed_on_wire);
        }
        tracing::debug!(
            runtime = %handle.id(),
            clients,
            "clients closed, but their runtime is not running: their connections stay \
             open until that runtime runs again or is dropped"
        );
        left_open.0 += clients;
        left_open.1.push(handle.id());
    }
    left_open
}

impl<F: ClientFactory> Entry<F> {
    /// Counts a request in flight, unless the client is closing.
    #[inline]
    pub(crate) fn begin_request(self: &Arc<Self>) -> Option<RequestGuard<F>> {
        if !self.life.begin_request() {
            return None;
        }
        Counters::inc(&self.counters.requests_started);
        Counters::inc(&self.counters.requests_in_flight);
        Some(RequestGuard {
            inner: Arc::clone(self),
        })
    }

    fn end_request(&self) {
        if self.life.end_request() {
            self.drained.notify_waiters();
        }
    }

    async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.life.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn outcome(&self, shut: Finished, overran: bool) -> CloseOutcome {
        CloseOutcome {
            closed_now: shut.first,
            forced: shut.first && (shut.in_flight > 0 || overran),
            cut: shut.in_flight,
            not_closed_on_wire: false,
        }
    }

    /// The one place a client becomes closed: connections let go of, hook cancelled,
    /// counted. Says whether this call closed it, and how many requests it cut.
    fn shut(&self, why: &'static str, finish: Finish) -> Finished {
        let finished = self.life.finish_close();
        if !finished.first {
            return Finished {
                first: false,
                in_flight: 0,
            };
        }
        let cut = finished.in_flight;
        // The factory's code is the user's: a panic in it must not escape into a runtime's
        // teardown, a close_all, or whichever thread dropped the last handle.
        let let_go = catch_unwind(AssertUnwindSafe(|| match finish {
            Finish::Graceful => {}
            Finish::Abort | Finish::Deadline => self.factory.abort(&self.client),
            Finish::RuntimeGone => self.factory.release(&self.client),
        }));
        if let Err(panic) = let_go {
            tracing::error!(
                client = %self.id,
                panic = %panic_message(&*panic),
                "the client factory's abort or release panicked; the client counts as closed"
            );
        }
        if let Some(hook) = self.hook.lock().take() {
            hook.cancel();
        }
        self.drained.notify_waiters();
        Counters::inc(&self.counters.clients_closed);
        if cut > 0 || matches!(finish, Finish::Deadline) {
            Counters::inc(&self.counters.forced_closes);
            tracing::warn!(
                client = %self.id,
                runtime = %self.runtime,
                in_flight = cut,
                "client close forced: the close deadline passed (requests still in flight were cut)"
            );
        } else {
            tracing::debug!(client = %self.id, runtime = %self.runtime, reason = why, "client closed");
        }
        finished
    }
}

impl<F: ClientFactory> Drop for Entry<F> {
    fn drop(&mut self) {
        // Last handle gone without a close (e.g. the manager was dropped): let go of the
        // connections so nothing outlives the client.
        let _ = self.shut("dropped", Finish::Abort);
    }
}

impl<F: ClientFactory> Clone for Managed<F> {
    #[inline]
    fn clone(&self) -> Self {
        Managed {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<F: ClientFactory> Deref for Managed<F> {
    type Target = F::Client;

    #[inline]
    fn deref(&self) -> &F::Client {
        if F::CHECKS_RUNTIME_ON_DEREF {
            if let Some(foreign) = self.foreign_client() {
                return foreign;
            }
        }
        &self.inner.client
    }
}

impl<F: ClientFactory> Managed<F> {
    /// On a runtime other than the client's own, the factory's
    /// [`foreign_runtime_client`](ClientFactory::foreign_runtime_client).
    #[cold]
    fn foreign_client(&self) -> Option<&F::Client> {
        let current = Handle::try_current().ok()?.id();
        let inner = &self.inner;
        if current == inner.runtime {
            return None;
        }
        let foreign = inner.foreign.get_or_init(|| {
            // The factory's code is the user's: a panic in it must not escape a deref.
            let built = catch_unwind(AssertUnwindSafe(|| {
                inner
                    .factory
                    .foreign_runtime_client(inner.runtime)
                    .map(Box::new)
            }));
            built.unwrap_or_else(|panic| {
                tracing::error!(
                    client = %inner.id,
                    panic = %panic_message(&*panic),
                    "the client factory's foreign_runtime_client panicked"
                );
                None
            })
        });
        tracing::debug!(
            client = %inner.id,
            runtime = %inner.runtime,
            used_on = %current,
            "client used on another runtime"
        );
        foreign.as_deref()
    }
}

impl<F: ClientFactory> SlotClient for Managed<F> {
    #[inline]
    fn is_open(&self) -> bool {
        Managed::is_open(self)
    }

    fn begin_close(&self) {
        Managed::begin_close(self);
    }

    fn force_close(&self) -> bool {
        self.close_now("force-closed")
    }

    fn in_flight(&self) -> u64 {
        Managed::in_flight(self)
    }
}

impl<F: ClientFactory> fmt::Debug for Managed<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Managed")
            .field("id", &self.inner.id)
            .field("runtime", &self.inner.runtime)
            .field("state", &self.state())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// A request in flight on a managed client (from [`Managed::track`]); it ends when the
/// guard is dropped. A graceful close waits for every guard, up to its deadline.
///
/// ```
/// # struct Unit;
/// # impl rtlocal::ClientFactory for Unit {
/// #     type Client = ();
/// #     async fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rtlocal::Error> {
/// let manager = rtlocal::Manager::new(Unit);
/// let guard = manager.client().await?.track().unwrap();
/// guard.failed(); // counted as failed, and ended
/// assert_eq!(manager.stats().requests_failed, 1);
/// assert_eq!(manager.stats().requests_in_flight, 0);
/// # Ok(()) }
/// ```
pub struct RequestGuard<F: ClientFactory> {
    inner: Arc<Entry<F>>,
}

impl<F: ClientFactory> RequestGuard<F> {
    /// Counts the request as failed (it still ends when the guard is dropped).
    pub fn failed(self) {
        Counters::inc(&self.inner.counters.requests_failed);
    }

    /// Whether the client this request belongs to was closed under it (the request was
    /// cut by a forced close).
    pub fn client_closed(&self) -> bool {
        self.inner.life.phase() == Phase::Closed
    }

    /// The factory's client this request runs on (kept alive by the guard).
    #[inline]
    pub(crate) fn client(&self) -> &F::Client {
        &self.inner.client
    }

    /// The id of the client this request runs on.
    #[inline]
    pub(crate) fn client_id(&self) -> ClientId {
        self.inner.id
    }

    /// The runtime of the client this request runs on.
    #[inline]
    pub(crate) fn runtime_id(&self) -> runtime::Id {
        self.inner.runtime
    }
}

impl<F: ClientFactory> Drop for RequestGuard<F> {
    fn drop(&mut self) {
        Counters::dec(&self.inner.counters.requests_in_flight);
        self.inner.end_request();
    }
}

impl<F: ClientFactory> fmt::Debug for RequestGuard<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestGuard")
            .field("client", &self.inner.id)
            .finish()
    }
}
