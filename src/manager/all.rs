//! Every live manager in the process, and [`shutdown_all`]: one shutdown for all of them.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;

use super::factory::ClientFactory;
use super::shared::Shared;
use super::stats::CloseReport;
use crate::error::{Error, Kind};
use crate::lifecycle::panic_message;

type Shutting = Pin<Box<dyn Future<Output = CloseReport> + Send>>;

/// A manager, whatever its factory.
trait Enlisted: Send + Sync {
    fn name(&self) -> String;
    fn shut_down(self: Arc<Self>, timeout: Duration) -> Shutting;
}

impl<F: ClientFactory> Enlisted for Shared<F> {
    fn name(&self) -> String {
        Shared::name(self).to_owned()
    }

    fn shut_down(self: Arc<Self>, timeout: Duration) -> Shutting {
        Box::pin(async move { self.shutdown(timeout).await })
    }
}

/// Weak: a manager that is dropped leaves the list (pruned on the next enlistment).
static ALL: Mutex<Vec<Weak<dyn Enlisted>>> = Mutex::new(Vec::new());

/// Lists a new manager. Slow path only (a manager is built once).
pub(crate) fn enlist<F: ClientFactory>(shared: &Arc<Shared<F>>) {
    let weak: Weak<dyn Enlisted> = Arc::downgrade(shared) as _;
    let mut all = ALL.lock();
    all.retain(|w| w.strong_count() > 0);
    all.push(weak);
}

/// One manager's part of a [`ShutdownReport`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ManagerReport {
    /// The manager's name ([`ManagerBuilder::name`](crate::ManagerBuilder::name), or its
    /// factory's type name).
    pub name: String,
    /// What its shutdown did. A shutdown that panicked is reported here as one failure.
    pub report: CloseReport,
}

/// What [`shutdown_all`] did: one [`ManagerReport`] per live manager. Its `Display` is
/// one line per manager.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Each manager's report, in the order their shutdowns finished.
    pub managers: Vec<ManagerReport>,
    /// How long the whole shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Clients closed across every manager.
    pub fn closed(&self) -> usize {
        self.managers.iter().map(|m| m.report.closed).sum()
    }

    /// Closes forced at the deadline across every manager.
    pub fn forced(&self) -> usize {
        self.managers.iter().map(|m| m.report.forced).sum()
    }

    /// Failures (closes or shutdowns that panicked) across every manager.
    pub fn failed(&self) -> usize {
        self.managers.iter().map(|m| m.report.failed.len()).sum()
    }

    /// Clients closed but not closed on the wire, across every manager
    /// ([`CloseReport::not_closed_on_wire`]; each manager's line names the runtimes).
    pub fn not_closed_on_wire(&self) -> usize {
        self.managers
            .iter()
            .map(|m| m.report.not_closed_on_wire)
            .sum()
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shut down {} manager(s) in {:.2?}: {} client(s) closed, {} forced, {} failed",
            self.managers.len(),
            self.elapsed,
            self.closed(),
            self.forced(),
            self.failed()
        )?;
        let left_open = self.not_closed_on_wire();
        if left_open > 0 {
            write!(f, ", {left_open} not closed on the wire")?;
        }
        for m in &self.managers {
            write!(f, "\n  {}: {}", m.name, m.report)?;
        }
        Ok(())
    }
}

/// Shuts down every live manager in the process — [`HttpClientManager`](crate::HttpClientManager)s,
/// [`ReqwestManager`](crate::ReqwestManager)s, every `Manager<F>` of your own — concurrently,
/// against one deadline `timeout` from now. One manager's failure (even a panic) never stops
/// the rest; each gets its own line in the report.
///
/// Each manager refuses new clients from then on, as after
/// [`Manager::shutdown`](crate::Manager::shutdown). Works from any thread, inside a runtime
/// or not.
///
/// # Examples
///
/// (A process of its own: it shuts down every manager of the process.)
///
/// ```standalone_crate
/// # struct Unit;
/// # impl rtlocal::ClientFactory for Unit {
/// #     type Client = ();
/// #     async fn build(&self, _: &tokio::runtime::Handle) -> Result<(), rtlocal::Error> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rtlocal::Error> {
/// let db = rtlocal::Manager::builder(Unit).name("db").build()?;
/// let _client = db.client().await?;
/// let report = rtlocal::shutdown_all(std::time::Duration::from_secs(5)).await;
/// println!("{report}");
/// let line = report.managers.iter().find(|m| m.name == "db").unwrap();
/// assert_eq!(line.report.closed, 1);
/// assert!(db.client().await.unwrap_err().is_shut_down());
/// # Ok(()) }
/// ```
pub async fn shutdown_all(timeout: Duration) -> ShutdownReport {
    let start = Instant::now();
    let live: Vec<Arc<dyn Enlisted>> = ALL.lock().iter().filter_map(Weak::upgrade).collect();
    let mut shutting: FuturesUnordered<_> = live
        .into_iter()
        .map(|m| {
            let name = m.name();
            AssertUnwindSafe(m.shut_down(timeout))
                .catch_unwind()
                .map(move |r| (name, r))
        })
        .collect();
    let mut managers = Vec::new();
    while let Some((name, result)) = shutting.next().await {
        let report = result.unwrap_or_else(|panic| CloseReport {
            failed: vec![Error::with_detail(
                Kind::Closed,
                format!(
                    "shutting down manager {name:?} panicked ({}); the others went on",
                    panic_message(&*panic)
                ),
            )],
            ..CloseReport::default()
        });
        managers.push(ManagerReport { name, report });
    }
    ShutdownReport {
        managers,
        elapsed: start.elapsed(),
    }
}
