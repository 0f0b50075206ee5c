//! Loom models of rtlocal's lifecycle core. Everything here compiles to nothing unless
//! built with `--cfg rtlocal_loom` (see `run.sh`), which swaps the crate's `sync` shim for
//! loom's primitives. The models call the production orchestration — `acquire`,
//! `retire_all`, `close_retired`, the `Slot` state machine, `ShutdownGate`, `RuntimeSlots`,
//! `RuntimeEntry`, `HotEntry`, `Lifecycle` — exactly as the tokio adapter does, through a
//! fake [`Driver`] whose client is the production `Lifecycle`. No model carries its own
//! copy of a manager loop.

#![cfg(rtlocal_loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};

pub use rtlocal::__loom::*;
pub use rtlocal::Error;

/// Runs `f` under loom, with `LOOM_MAX_PREEMPTIONS` (default 3) bounding the search.
/// With `LOOM_LOG` set, through `loom::model`, which prints the interleaving (`run.sh`
/// sets the preemption bound then).
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    if std::env::var_os("LOOM_LOG").is_some() {
        return loom::model(f);
    }
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A client whose close is the production `Lifecycle`, counting real closes.
#[derive(Clone)]
pub struct FakeClient {
    pub id: usize,
    /// The runtime it was built for: a client handed out must match the caller's.
    pub runtime: usize,
    pub life: Arc<Lifecycle>,
    pub closes: Arc<AtomicUsize>,
}

impl std::fmt::Debug for FakeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "client {} (runtime {}, {:?})",
            self.id,
            self.runtime,
            self.life.phase()
        )
    }
}

impl FakeClient {
    pub fn is_closed(&self) -> bool {
        self.life.phase() == Phase::Closed
    }

    pub fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }

    /// Checks the client was closed exactly once; `what` says why it had to be.
    pub fn assert_closed_once(&self, what: &str) {
        let n = self.closes();
        assert_eq!(
            n, 1,
            "client {} was closed {n} times, not once: {what}",
            self.id
        );
    }
}

impl SlotClient for FakeClient {
    fn is_open(&self) -> bool {
        self.life.phase() == Phase::Open
    }

    fn begin_close(&self) {
        self.life.begin_close();
    }

    fn force_close(&self) -> bool {
        let first = self.life.finish_close().first;
        if first {
            self.closes.fetch_add(1, Ordering::SeqCst);
        }
        first
    }
    fn in_flight(&self) -> u64 {
        self.life.in_flight()
    }
}

/// A runtime binding: an id and a liveness token.
#[derive(Clone)]
pub struct FakeKey {
    pub runtime: usize,
    pub alive: Arc<AtomicBool>,
}

impl FakeKey {
    pub fn new(runtime: usize) -> Self {
        FakeKey {
            runtime,
            alive: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl BindingKey for FakeKey {
    type Probe = usize;

    fn matches(&self, probe: &usize) -> bool {
        self.runtime == *probe && self.alive.load(Ordering::Acquire)
    }

    fn same_binding(&self, other: &Self) -> bool {
        self.runtime == other.runtime && self.alive.load(Ordering::Acquire)
    }
}

pub type FakeSlot = Slot<FakeClient, FakeKey>;

/// Every client ever built, so models can check none is orphaned.
pub struct World {
    next_id: AtomicUsize,
    pub clients: Mutex<Vec<FakeClient>>,
    /// Broken promises seen inside a build. Recorded rather than only panicked: a build's
    /// panic is caught by the core (and turned into an error), so `get_client` checks this.
    violations: Mutex<Vec<String>>,
    /// Whether a build may see another open client: only a superseded leader's build,
    /// finishing after a take-over, does (its client is then force-closed unpublished).
    pub concurrent_builds_allowed: AtomicBool,
    /// Stale clients a leader closed gracefully and reported (`Driver::replaced`).
    replaced: AtomicUsize,
}

impl World {
    pub fn new() -> Arc<Self> {
        Arc::new(World {
            next_id: AtomicUsize::new(0),
            clients: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            concurrent_builds_allowed: AtomicBool::new(false),
            replaced: AtomicUsize::new(0),
        })
    }

    /// Builds a client. Checks the central promise: no client built before is still open
    /// (a replaced one was closed before the reset; a retiring one is closing).
    pub fn build(&self, runtime: usize) -> FakeClient {
        let mut clients = self.clients.lock().unwrap();
        let strict = !self.concurrent_builds_allowed.load(Ordering::SeqCst);
        if let Some(c) = clients.iter().find(|c| strict && c.is_open()) {
            let v = format!(
                "client {} is still open while its replacement is built: reset before close",
                c.id
            );
            self.violations.lock().unwrap().push(v.clone());
            panic!("{v}");
        }
        let c = FakeClient {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            runtime,
            life: Arc::new(Lifecycle::new()),
            closes: Arc::new(AtomicUsize::new(0)),
        };
        clients.push(c.clone());
        c
    }

    /// Stale clients closed gracefully by their replacement's leader.
    pub fn replaced(&self) -> usize {
        self.replaced.load(Ordering::SeqCst)
    }

    pub fn created(&self) -> usize {
        self.clients.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<FakeClient> {
        self.clients.lock().unwrap().clone()
    }

    /// Panics with the first broken promise a build recorded.
    pub fn assert_sound(&self) {
        if let Some(v) = self.violations.lock().unwrap().first() {
            panic!("{v}");
        }
    }

    /// Clients neither closed nor closing.
    pub fn open(&self) -> Vec<FakeClient> {
        self.all().into_iter().filter(|c| c.is_open()).collect()
    }
}

/// How the fake timer treats a bounded wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The deadline never passes first: the wait ends when what it waits for does.
    Patient,
    /// The deadline passes at once unless what it waits for is already done: the
    /// leader it waits on is taken to be stuck on a runtime nobody drives.
    Impatient,
}

/// The core's `Timer`, without time: see [`Wait`]. A deadline is the duration it was
/// set for, and every bounded wait's is recorded, so a model can tell a caller that waited
/// on another's replacement (bounded by close + build timeouts) from one that built (bounded
/// by the build timeout).
pub struct FakeTimer {
    pub wait: Wait,
    /// Each bounded wait's duration, in order. A plain mutex: one driver, one thread.
    bounds: std::sync::Mutex<Vec<Duration>>,
}

impl FakeTimer {
    pub fn new(wait: Wait) -> Self {
        FakeTimer {
            wait,
            bounds: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The durations of the bounded waits so far.
    pub fn bounds(&self) -> Vec<Duration> {
        self.bounds.lock().unwrap().clone()
    }
}

impl Timer for FakeTimer {
    type Deadline = Duration;

    fn after(&self, d: Duration) -> Duration {
        d
    }

    fn remaining(&self, deadline: Duration) -> Duration {
        deadline
    }

    fn until<F>(&self, deadline: Duration, fut: F) -> impl Future<Output = Option<F::Output>> + Send
    where
        F: Future + Send,
        F::Output: Send,
    {
        self.bounds.lock().unwrap().push(deadline);
        let patient = self.wait == Wait::Patient;
        async move {
            if patient {
                Some(fut.await)
            } else {
                futures_util::FutureExt::now_or_never(fut)
            }
        }
    }
}

/// How the fake factory builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// At once.
    Ready,
    /// After one `Pending` (a build that awaits something): a leader can be cancelled
    /// mid-build.
    YieldOnce,
    /// Fails.
    Fail,
    /// Panics.
    Panic,
}

/// The fake [`Driver`]: builds into the [`World`], closes through the client's `Lifecycle`.
pub struct FakeDriver {
    pub world: Arc<World>,
    pub timer: FakeTimer,
    pub build: Build,
    /// Builds this driver started. A plain atomic: one driver, one thread.
    builds: std::sync::atomic::AtomicUsize,
}

impl FakeDriver {
    pub fn new(world: &Arc<World>) -> Self {
        FakeDriver::with(world, Wait::Patient, Build::Ready)
    }

    pub fn with(world: &Arc<World>, wait: Wait, build: Build) -> Self {
        FakeDriver {
            world: world.clone(),
            timer: FakeTimer::new(wait),
            build,
            builds: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The timeouts this fake reports: distinct, so a bound tells which wait it was.
    pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
    pub const BUILD_TIMEOUT: Duration = Duration::from_secs(2);
    /// How long a caller waits on another's replacement: its whole budget.
    pub const WAIT_BOUND: Duration = Duration::from_secs(3);

    /// Builds this driver started.
    pub fn builds(&self) -> usize {
        self.builds.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Times this driver's caller waited on another caller's replacement. Checks every
    /// bounded wait was one of the two `acquire` makes: a build's (build timeout, one per
    /// build) or a wait's (the leader's whole budget).
    pub fn waits(&self) -> usize {
        let bounds = self.timer.bounds();
        for b in &bounds {
            assert!(
                *b == Self::BUILD_TIMEOUT || *b == Self::WAIT_BOUND,
                "a bounded wait of {b:?}: neither the build timeout nor close + build"
            );
        }
        let builds = bounds.iter().filter(|b| **b == Self::BUILD_TIMEOUT).count();
        assert_eq!(
            builds,
            self.builds(),
            "every build is bounded by the build timeout"
        );
        bounds.len() - builds
    }
}

/// A future that is pending once (waking itself), then ready.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Driver for FakeDriver {
    type Client = FakeClient;
    type Key = FakeKey;
    type Timer = FakeTimer;

    fn timer(&self) -> &FakeTimer {
        &self.timer
    }

    fn close_timeout(&self) -> Duration {
        Self::CLOSE_TIMEOUT
    }

    fn build_timeout(&self) -> Duration {
        Self::BUILD_TIMEOUT
    }

    fn build(&self, key: &FakeKey) -> impl Future<Output = Result<FakeClient, Error>> + Send {
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (world, runtime, mode) = (self.world.clone(), key.runtime, self.build);
        async move {
            match mode {
                Build::Ready => {}
                Build::YieldOnce => YieldOnce(false).await,
                Build::Fail => return Err(Error::build("the fake factory fails")),
                Build::Panic => std::panic::panic_any("the fake factory panics"),
            }
            Ok(world.build(runtime))
        }
    }

    fn replaced(&self, stale: &FakeClient, outcome: CloseOutcome) {
        assert!(
            stale.is_closed(),
            "client {} reported replaced while open",
            stale.id
        );
        // Not necessarily closed by this close: a take-over or a forced clear may have
        // force-closed it first.
        let _ = outcome;
        self.world.replaced.fetch_add(1, Ordering::SeqCst);
    }

    fn close(&self, client: &FakeClient, _: Duration) -> impl Future<Output = CloseOutcome> + Send {
        // The graceful close, minus the drain wait (no requests in these models).
        client.life.begin_close();
        let closed_now = client.force_close();
        std::future::ready(CloseOutcome {
            closed_now,
            forced: false,
            cut: 0,
            not_closed_on_wire: false,
        })
    }
}

/// The manager's `client()` slow path: the production `acquire`, run to completion.
/// Checks that what it hands out was built for the caller's runtime.
pub fn get_client(
    slot: &Arc<FakeSlot>,
    driver: &FakeDriver,
    gate: &ShutdownGate,
    key: &FakeKey,
) -> Result<FakeClient, Error> {
    let got = loom::future::block_on(acquire(driver, gate, slot, key));
    driver.world.assert_sound();
    if let Ok(c) = &got {
        assert_eq!(
            c.runtime, key.runtime,
            "client {} built for runtime {} handed to a caller on runtime {}",
            c.id, c.runtime, key.runtime
        );
    }
    got
}

/// The timeout `close_all` passes (distinct from the fake driver's own timeouts).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The manager's `close_all()`: the production `retire_all`, run to completion.
pub fn close_all(slots: Vec<Arc<FakeSlot>>, driver: &FakeDriver) -> Retired {
    loom::future::block_on(retire_all(driver, slots, SHUTDOWN_TIMEOUT))
}

/// A slot whose client for `runtime` is built and published.
pub fn primed(world: &Arc<World>, runtime: usize) -> (Arc<FakeSlot>, FakeClient) {
    let slot = Arc::new(FakeSlot::new());
    let gate = ShutdownGate::new();
    let first = get_client(
        &slot,
        &FakeDriver::new(world),
        &gate,
        &FakeKey::new(runtime),
    )
    .expect("the first build succeeds");
    (slot, first)
}

/// No client is orphaned: every client is closed exactly once, or open and the slot's
/// client for `runtime`; what `stats()` would call live (created − closed) is what is open
/// or closing.
pub fn check_no_orphans(world: &World, slot: &FakeSlot, runtime: usize) {
    world.assert_sound();
    let current = slot.try_hit(&runtime).map(|(c, _)| c);
    for c in world.all() {
        assert!(c.closes() <= 1, "client {} closed twice", c.id);
        if c.is_closed() {
            assert_eq!(
                c.closes(),
                1,
                "client {} is closed but its close never ran",
                c.id
            );
        } else {
            assert_eq!(
                current.as_ref().map(|k| k.id),
                Some(c.id),
                "client {} is not closed and not in the slot: orphaned",
                c.id
            );
        }
    }
}
