//! [`ClientFactory`]: what a [`Manager`](crate::Manager) needs to know about the clients
//! it manages.

use std::future::Future;

use tokio::runtime::Handle;

use crate::error::Error;

/// Builds and closes the clients a [`Manager`](crate::Manager) hands out.
///
/// The manager owns everything else: which thread and runtime a client belongs to, the
/// single-flight replacement when the runtime changes (close the stale client, *then*
/// reset, *then* publish), releasing clients when their runtime is torn down,
/// `close_all`/`shutdown` and the counters. A factory only says how to make a client for
/// a runtime and how to let go of one.
///
/// [`HttpClientManager`](crate::HttpClientManager) is the ready-made manager over
/// hyper-util; [`ReqwestFactory`](crate::ReqwestFactory) (feature `reqwest`) manages
/// `reqwest::Client`s.
///
/// # Closing
///
/// A close goes: the manager stops handing the client out, waits (up to the close
/// timeout) for requests counted through [`Managed::track`](crate::Managed::track), then
/// awaits [`close`](ClientFactory::close) for what remains of the deadline. If the deadline
/// passes first, the manager calls [`abort`](ClientFactory::abort) and reports the close
/// as forced. [`release`](ClientFactory::release) replaces all of that when the client's
/// runtime is torn down (its tasks are being dropped anyway). `abort` and `release` are
/// synchronous and may be called more than once or after `close`: make them idempotent.
///
/// # Examples
///
/// A factory for a client type of your own (here, a counter standing in for one):
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use rtlocal::{ClientFactory, Manager};
///
/// struct Numbered(Arc<AtomicUsize>);
///
/// impl ClientFactory for Numbered {
///     type Client = usize;
///     async fn build(&self, _runtime: &tokio::runtime::Handle) -> Result<usize, rtlocal::Error> {
///         Ok(self.0.fetch_add(1, Ordering::Relaxed))
///     }
/// }
///
/// let manager = Manager::new(Numbered(Arc::new(AtomicUsize::new(0))));
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let first = rt.block_on(manager.client()).unwrap();
/// assert_eq!(*first, 0); // `Managed<F>` derefs to the factory's client
/// assert_eq!(*rt.block_on(manager.client()).unwrap(), 0); // same thread, same runtime
/// drop(rt);
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// assert_eq!(*rt.block_on(manager.client()).unwrap(), 1); // a new runtime: a new client
/// assert!(!first.is_open());
/// ```
pub trait ClientFactory: Send + Sync + 'static {
    /// The client type. It lives in the manager's shared handle
    /// ([`Managed`](crate::Managed)), so it need not be `Clone`.
    type Client: Send + Sync + 'static;

    /// Builds a client for the runtime behind `runtime`. Called from a task running on
    /// that runtime (so `Handle::current()` is `runtime`), on the thread the client is for
    /// (per-thread sharing) or one of the runtime's threads (per-runtime sharing).
    ///
    /// Asynchronous, for clients that connect or load credentials to be built; a
    /// synchronous build is a one-liner: `async fn build(&self, _: &Handle) -> Result<…> {
    /// Ok(make()) }`.
    ///
    /// The build runs outside every lock. Other callers of the same slot wait for it and
    /// share its outcome; it is bounded by the manager's build timeout (past it, every
    /// waiter fails with [`Error::is_timeout`]). If the caller leading it is cancelled, the
    /// build is dropped and the waiters build again. A panic in it fails every waiter with
    /// [`Error::is_build`] and leaves the slot free for the next call.
    ///
    /// # Errors
    /// Whatever stops the client being built; wrap a foreign error with
    /// [`Error::build`]. Every caller waiting on this build gets the error.
    fn build(&self, runtime: &Handle) -> impl Future<Output = Result<Self::Client, Error>> + Send;

    /// Closes the client gracefully once the manager has stopped handing it out and its
    /// tracked requests have finished. The manager bounds it by the close timeout and
    /// calls [`abort`](ClientFactory::abort) if it overruns.
    ///
    /// Default: nothing to do (dropping the client releases it).
    fn close(&self, client: &Self::Client) -> impl Future<Output = ()> + Send {
        let _ = client;
        std::future::ready(())
    }

    /// Cuts the client's connections now: a forced close (deadline passed, `shutdown`
    /// forcing, the last handle dropped without a close). Synchronous and idempotent.
    ///
    /// Default: nothing to do.
    fn abort(&self, client: &Self::Client) {
        let _ = client;
    }

    /// The client's runtime is being torn down: its tasks, and with them its connections,
    /// are being dropped. Runs inside that teardown: do nothing slow.
    ///
    /// Default: [`abort`](ClientFactory::abort).
    fn release(&self, client: &Self::Client) {
        self.abort(client);
    }

    /// Whether this factory's clients can only be closed on the wire by their own
    /// runtime: their connections are tasks of that runtime, which close their sockets
    /// only when the runtime next polls them (or drops them), and neither
    /// [`close`](ClientFactory::close) nor [`abort`](ClientFactory::abort) can reach the
    /// sockets from outside. `reqwest::Client`s and redis `ConnectionManager`s are such
    /// clients.
    ///
    /// When `true`, each close (on a runtime change, `close_all`, `shutdown`, a thread's
    /// exit) ends by checking whether the client's runtime is running: a no-op task is
    /// spawned on it and given up to 100 ms (within the close timeout) to run. `close_all`
    /// and `shutdown` check once the manager has let go of the clients they closed, so
    /// the probe queues behind the tasks their drop aborted: a runtime that runs it (the
    /// one awaiting `close_all`, say) has closed the sockets of clients nobody else holds. A runtime
    /// that runs it will poll the connection tasks, which close once the client is
    /// dropped; a runtime torn down drops them. One that does not (an idle
    /// `current_thread` runtime nobody drives, a blocked one) leaves the sockets open: the
    /// close is counted in [`CloseReport::not_closed_on_wire`](crate::CloseReport), whose
    /// `Display` names that runtime, and in
    /// [`Stats::clients_not_closed_on_wire`](crate::Stats). The check costs that wait,
    /// at most, per close.
    ///
    /// Default: `false` (closing needs nothing from the client's runtime, as for
    /// [`HttpClientManager`](crate::HttpClientManager), which shuts tracked sockets
    /// itself).
    fn needs_runtime_to_close(&self) -> bool {
        false
    }

    /// As [`close`](ClientFactory::close), told the client's runtime when the factory
    /// [needs it to close](ClientFactory::needs_runtime_to_close) (`None` otherwise): a
    /// close that waits for that runtime's tasks can stop waiting once it is known not
    /// to run ([`runtime_is_running`](crate::runtime_is_running)), rather than overrun
    /// the close timeout and be reported as forced.
    ///
    /// Default: [`close`](ClientFactory::close).
    fn close_on(
        &self,
        client: &Self::Client,
        runtime: Option<&Handle>,
    ) -> impl Future<Output = ()> + Send {
        let _ = runtime;
        self.close(client)
    }

    /// After a close, whether any of the client's connections are still left to its
    /// runtime to close (for a factory that
    /// [needs its runtime to close](ClientFactory::needs_runtime_to_close)): when `false`
    /// the close reached the wire by itself, and the runtime's check is skipped.
    ///
    /// Default: `true` (a `reqwest::Client` leaves every connection to its runtime).
    fn left_to_runtime(&self, client: &Self::Client) -> bool {
        let _ = client;
        true
    }

    /// Closes on the wire what the factory keeps between clients (connections parked
    /// between two runtimes of one sharing scope), and returns how many: called by
    /// `close_all` (`for_good: false`: the factory may keep more for clients built
    /// afterwards) and by `shutdown` (`true`: never again). Counted in
    /// [`CloseReport::parked_closed`](crate::CloseReport::parked_closed).
    fn close_kept(&self, for_good: bool) -> usize {
        let _ = for_good;
        0
    }

    /// Whether a handle on a client ([`Managed`](crate::Managed)) checks, when it is
    /// dereferenced, that it is used on the client's own runtime. When it is not, the
    /// dereference gives [`foreign_runtime_client`](ClientFactory::foreign_runtime_client)
    /// instead. The check costs a thread-local read per dereference: off by default.
    const CHECKS_RUNTIME_ON_DEREF: bool = false;

    /// The client a handle dereferences to on a runtime other than `owner` (its client's)
    /// when [`CHECKS_RUNTIME_ON_DEREF`](ClientFactory::CHECKS_RUNTIME_ON_DEREF) is on:
    /// one whose requests fail at once with an error naming both runtimes, rather than
    /// wait on a connection of `owner`'s that nobody polls. Built once per client, the
    /// first time it is needed; `None` hands out the client itself.
    ///
    /// Default: `None`.
    fn foreign_runtime_client(&self, owner: tokio::runtime::Id) -> Option<Self::Client> {
        let _ = owner;
        None
    }
}
