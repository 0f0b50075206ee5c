//! A manager's shared state, and the [`Driver`] through which the lifecycle core builds,
//! closes and times its clients.

use std::any::Any;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::runtime::{self, Handle};

use super::factory::ClientFactory;
use super::managed::{self, Managed, WireCheck};
use super::options::Options;
use super::stats::{CloseReport, Counters};
use super::timer::TokioTimer;
use crate::error::{Error, Kind};
use crate::lifecycle::{
    self, BindingKey, CloseOutcome, Driver, RuntimeEntry, RuntimeSlots, ShutdownGate, Slot,
};

/// What a slot's client is bound to: a runtime (id + liveness token) and, for a
/// per-thread client, the thread (`None`: any thread of the runtime may use it).
#[derive(Clone)]
pub(crate) struct Binding {
    pub(crate) runtime: runtime::Id,
    pub(crate) thread: Option<u64>,
    pub(crate) entry: Arc<RuntimeEntry>,
}

impl BindingKey for Binding {
    type Probe = (runtime::Id, Option<u64>);

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

pub(crate) type ManagedSlot<F> = Slot<Managed<F>, Binding>;

/// Everything a [`Manager`](super::Manager) shares with its clients and its threads.
pub(crate) struct Shared<F: ClientFactory> {
    /// Every thread's slot (see `thread_slots`): listed under this lock, so a shutdown's
    /// scan and a new thread's registration are ordered by it.
    pub(crate) thread_slots: Mutex<Vec<Arc<ManagedSlot<F>>>>,
    /// Per-runtime sharing: one slot per live runtime, removed by that runtime's teardown.
    pub(crate) runtime_slots: Arc<RuntimeSlots<runtime::Id, ManagedSlot<F>>>,
    pub(crate) gate: ShutdownGate,
    pub(crate) options: Options,
    pub(crate) factory: Arc<F>,
    pub(crate) counters: Arc<Counters>,
}

impl<F: ClientFactory> Shared<F> {
    pub(crate) fn new(factory: F, options: Options, counters: Arc<Counters>) -> Arc<Self> {
        // The closer lives for the whole process; started with the first manager, so the
        // process's threads and descriptors are settled from then on.
        let _ = super::closer::handle();
        let shared = Arc::new(Shared {
            thread_slots: Mutex::new(Vec::new()),
            runtime_slots: Arc::new(RuntimeSlots::new()),
            gate: ShutdownGate::new(),
            options,
            factory: Arc::new(factory),
            counters,
        });
        super::all::enlist(&shared);
        shared
    }

    /// Every slot: each thread's, and each runtime's.
    fn all_slots(&self) -> Vec<Arc<ManagedSlot<F>>> {
        let mut slots = self.thread_slots.lock().clone();
        slots.extend(self.runtime_slots.slots());
        slots
    }

    /// `close_all` and `shutdown`: the core's retire-all over every slot.
    pub(crate) async fn retire_all(self: &Arc<Self>, timeout: Duration) -> CloseReport {
        let for_good = self.gate.is_closed();
        let start = Instant::now();
        // Before the clients: a client's runtime torn down from here on cannot park its
        // connections any more (`ParkLot`'s epoch).
        let mut parked_closed = self.factory.close_kept(for_good);
        let left_open = Mutex::new(Vec::new());
        let runner = Runner {
            shared: self,
            handle: None,
            slot: None,
            left_open: Some(&left_open),
        };
        let retired = lifecycle::retire_all(&runner, self.all_slots(), timeout).await;
        // The slots have let go of the closed clients by now: a runtime that runs from
        // here on polls the tasks their drop aborted.
        let budget = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(10));
        let (left_open, left_to) =
            managed::unclosed_on_wire(left_open.into_inner(), budget, &self.counters).await;
        parked_closed += self.factory.close_kept(for_good);
        CloseReport {
            parked_closed,
            closed: retired.closed,
            forced: retired.forced,
            in_flight_cut: retired.in_flight_cut,
            failed: retired.failed,
            waited_for_replacement: retired.waited_for_replacement,
            not_closed_on_wire: retired.not_closed_on_wire + left_open,
            not_closed_on_wire_runtimes: left_to,
            elapsed: start.elapsed(),
        }
    }

    /// Refuses new clients, then closes every slot's client within `timeout`.
    pub(crate) async fn shutdown(self: &Arc<Self>, timeout: Duration) -> CloseReport {
        // Closed before the slots are scanned: see `lifecycle::gate`.
        self.gate.close();
        let report = self.retire_all(timeout).await;
        tracing::debug!(manager = %self.name(), %report, "shutdown finished");
        report
    }

    /// What reports call this manager.
    pub(crate) fn name(&self) -> &str {
        match &self.options.name {
            Some(name) => name,
            None => std::any::type_name::<F>(),
        }
    }

    /// Drops a slot of an exited thread from the list once its client is closed.
    pub(crate) fn forget_thread_slot(&self, slot: &Arc<ManagedSlot<F>>) {
        self.thread_slots.lock().retain(|s| !Arc::ptr_eq(s, slot));
    }

    pub(crate) fn thread_slot_count(&self) -> u64 {
        self.thread_slots.lock().len() as u64
    }

    /// Wraps a client the factory built for `key`'s runtime and arranges for its release
    /// when that runtime is torn down.
    fn adopt(
        self: &Arc<Self>,
        built: F::Client,
        handle: &Handle,
        key: &Binding,
        slot: Option<&Arc<ManagedSlot<F>>>,
    ) -> Result<Managed<F>, Error> {
        let home: Weak<dyn Any + Send + Sync> = Arc::downgrade(self) as _;
        let client = Managed::new(
            built,
            handle.clone(),
            home,
            Arc::clone(&self.counters),
            Arc::clone(&self.factory),
        );
        let weak_client = Arc::downgrade(&client.inner);
        let weak_slot = slot.map(Arc::downgrade);
        let weak_shared = Arc::downgrade(self);
        let id = client.id();
        let hook = RuntimeEntry::register(&key.entry, move || {
            let released = weak_client
                .upgrade()
                .is_some_and(|inner| Managed { inner }.release_at_teardown());
            if let Some(slot) = weak_slot.and_then(|w| w.upgrade()) {
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
}

impl<F: ClientFactory> Managed<F> {
    /// The manager that built this client, while it lives (to re-route a request).
    pub(crate) fn manager(&self) -> Option<Arc<Shared<F>>> {
        self.inner.manager.upgrade()?.downcast().ok()
    }
}

impl<F: ClientFactory> Drop for Shared<F> {
    fn drop(&mut self) {
        // Threads may still cache handles of these clients: close them, so nothing a
        // dropped manager built keeps connections open.
        for slot in self.thread_slots.get_mut().iter() {
            slot.force_clear();
        }
        for slot in self.runtime_slots.slots() {
            slot.force_clear();
        }
    }
}

/// The core's [`Driver`] for one call: builds on `handle`'s runtime (when there is one),
/// closes through [`Managed::close_graceful`], times with the closer's timer.
pub(crate) struct Runner<'a, F: ClientFactory> {
    pub(crate) shared: &'a Arc<Shared<F>>,
    pub(crate) handle: Option<&'a Handle>,
    pub(crate) slot: Option<&'a Arc<ManagedSlot<F>>>,
    /// Where `close_all`/`shutdown` collect the runtimes of the clients they closed
    /// whose factory needs the runtime to close them, one entry per client: checked once
    /// the slots have let go of the clients ([`WireCheck::Deferred`]).
    pub(crate) left_open: Option<&'a Mutex<Vec<Handle>>>,
}

impl<F: ClientFactory> Driver for Runner<'_, F> {
    type Client = Managed<F>;
    type Key = Binding;
    type Timer = TokioTimer;

    fn timer(&self) -> &TokioTimer {
        &TokioTimer
    }

    fn close_timeout(&self) -> Duration {
        self.shared.options.close_timeout
    }

    fn build_timeout(&self) -> Duration {
        self.shared.options.build_timeout
    }

    async fn build(&self, key: &Binding) -> Result<Managed<F>, Error> {
        let Some(handle) = self.handle else {
            return Err(Error::with_detail(
                Kind::Build,
                "no runtime to build a client on (closing never builds)",
            ));
        };
        let built = self.shared.factory.build(handle).await?;
        self.shared.adopt(built, handle, key, self.slot)
    }

    async fn close(&self, client: &Managed<F>, budget: Duration) -> CloseOutcome {
        // A replacement (a caller's `client()` waits for it) does not wait to learn
        // whether the stale client's runtime still runs; close_all, shutdown and exit
        // closes report it.
        let wire = match (self.left_open, self.slot) {
            (Some(_), _) => WireCheck::Deferred,
            (None, None) => WireCheck::Await,
            (None, Some(_)) => WireCheck::Background,
        };
        let outcome = client.close_graceful(budget, wire).await;
        if let (true, Some(left_open), Some(runtime)) = (
            outcome.closed_now,
            self.left_open,
            client.runtime_to_check(),
        ) {
            left_open.lock().push(runtime.clone());
        }
        outcome
    }

    fn replaced(&self, stale: &Managed<F>, outcome: CloseOutcome) {
        Counters::inc(&self.shared.counters.clients_replaced);
        tracing::debug!(
            stale = %stale.id(),
            stale_runtime = %stale.runtime_id(),
            thread = ?std::thread::current().id(),
            forced = outcome.forced,
            "runtime changed: stale client closed"
        );
    }
}
