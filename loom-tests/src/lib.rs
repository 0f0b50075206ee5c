//! Loom models of rtlocal's lifecycle code. Everything here compiles to nothing unless
//! built with `--cfg rtlocal_loom` (see `run.sh`), which swaps the crate's `sync` shim
//! for loom's primitives: the models drive the production `Slot`, `RuntimeEntry` and
//! `Lifecycle`, with a small fake client in place of hyper-util.

#![cfg(rtlocal_loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};

use rtlocal::__loom::{
    Acquire, BindingKey, Completion, Lifecycle, Outcome, Phase, PublishError, Retire, Slot,
    SlotClient,
};

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

impl FakeClient {
    pub fn is_closed(&self) -> bool {
        self.life.phase() == Phase::Closed
    }

    pub fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }

    /// The manager's graceful close, minus the drain wait (no requests in these models).
    pub fn close(&self) {
        self.life.begin_close();
        if self.life.finish_close().0 {
            self.closes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl SlotClient for FakeClient {
    fn is_open(&self) -> bool {
        self.life.phase() == Phase::Open
    }

    fn begin_close(&self) {
        self.life.begin_close();
    }

    fn force_close(&self) {
        if self.life.finish_close().0 {
            self.closes.fetch_add(1, Ordering::SeqCst);
        }
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

pub type FakeSlot = Slot<FakeClient, FakeKey, ()>;

/// Every client ever built, so models can check none is orphaned.
pub struct World {
    next_id: AtomicUsize,
    pub clients: Mutex<Vec<FakeClient>>,
}

impl World {
    pub fn new() -> Arc<Self> {
        Arc::new(World {
            next_id: AtomicUsize::new(0),
            clients: Mutex::new(Vec::new()),
        })
    }

    /// Builds a client. Runs inside the slot's reset-and-publish critical section, so it
    /// checks the central promise: every client built before has been closed by now.
    pub fn build(&self, runtime: usize) -> FakeClient {
        let mut clients = self.clients.lock().unwrap();
        for c in clients.iter() {
            assert!(
                c.is_closed(),
                "client {} is still open while its replacement is built: reset before close",
                c.id
            );
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

    pub fn created(&self) -> usize {
        self.clients.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<FakeClient> {
        self.clients.lock().unwrap().clone()
    }
}

/// `HttpClientManager::client()`'s loop over the slot, as the manager runs it. Checks
/// that what it hands out was built for the caller's runtime.
pub fn get_client(slot: &FakeSlot, world: &World, key: &FakeKey) -> FakeClient {
    let c = get_client_inner(slot, world, key);
    assert_eq!(
        c.runtime, key.runtime,
        "client {} built for runtime {} handed to a caller on runtime {}",
        c.id, c.runtime, key.runtime
    );
    c
}

fn get_client_inner(slot: &FakeSlot, world: &World, key: &FakeKey) -> FakeClient {
    if let Some((c, _)) = slot.try_hit(&key.runtime) {
        return c;
    }
    loop {
        let lease = match slot.acquire(key.clone()) {
            Acquire::Hit(c) => return c,
            Acquire::Wait(done) => match loom::future::block_on(Completion::wait(done)) {
                Outcome::Ready(c) => return c,
                Outcome::Failed(()) => panic!("build never fails in these models"),
                Outcome::Retry => continue,
            },
            Acquire::Lead(lease) => lease,
        };
        if let Some(stale) = lease.stale() {
            assert_not_open(stale);
            stale.close();
        }
        match lease.publish_with(|| Ok(world.build(key.runtime))) {
            Ok(c) => return c,
            Err(PublishError::Superseded) => continue,
            Err(PublishError::Failed(())) => unreachable!(),
        }
    }
}

/// A client taken out of `Ready` (replaced or retired) must already read as not open:
/// the manager's per-thread cache hands out any cached client that reads open.
fn assert_not_open(stale: &FakeClient) {
    assert!(
        !stale.is_open(),
        "client {} still reads open after its replacement began: a cached handle of it \
         would be handed out again",
        stale.id
    );
}

/// `HttpClientManager::close_all()` for one slot, as the manager runs it: a slot caught
/// mid-replacement is waited for, then retired.
pub fn close_all(slot: &FakeSlot) -> usize {
    loop {
        match slot.retire() {
            Retire::Lease(lease) => {
                let stale = lease
                    .stale()
                    .cloned()
                    .expect("retire always carries the client");
                assert_not_open(&stale);
                stale.close();
                lease.finish_empty();
                return 1;
            }
            Retire::Busy(done) => {
                let _ = loom::future::block_on(Completion::wait(done));
            }
            Retire::Empty => return 0,
        }
    }
}
