//! Acquire-or-replace: the slow path of `client()`, written once for every driver.
//!
//! Hit the slot's client; or wait (bounded) for the replacement another caller leads; or
//! lead one: close the stale client, reset, build outside any lock (bounded by the build
//! timeout, isolated from panics), publish through the shutdown gate.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

use super::completion::Completion;
use super::driver::{CloseOutcome, Driver, SlotClient, Timer};
use super::gate::ShutdownGate;
use super::panic::panic_message;
use super::slot::{Acquire, Lease, Outcome, Publish, Slot};
use crate::error::{Error, Kind};
use crate::sync::Arc;

/// How long a waiter waits for the leader of a replacement before taking it over: the
/// leader's whole budget (its close, then its build).
pub(crate) fn wait_bound<D: Driver>(driver: &D) -> Duration {
    driver
        .close_timeout()
        .saturating_add(driver.build_timeout())
}

/// The client bound to `key` from `slot`: the slot's own, the one another caller is
/// building, or a new one this call builds.
///
/// # Cancel safety
/// Cancelling while leading force-closes the stale client (if its close had not finished)
/// and empties the slot; the waiters retry. A cancelled build is dropped.
pub async fn acquire<D: Driver>(
    driver: &D,
    gate: &ShutdownGate,
    slot: &Arc<Slot<D::Client, D::Key>>,
    key: &D::Key,
) -> Result<D::Client, Error> {
    let mut take_over = false;
    loop {
        if gate.is_closed() {
            return Err(Error::shut_down());
        }
        let acquired = if take_over {
            take_over = false;
            Slot::take_over(slot, key.clone())
        } else {
            Slot::acquire(slot, key.clone())
        };
        let lease = match acquired {
            Acquire::Hit(client) => return Ok(client),
            Acquire::Lead(lease) => lease,
            Acquire::Wait(done) => {
                let timer = driver.timer();
                let deadline = timer.after(wait_bound(driver));
                match timer.until(deadline, Completion::wait(done)).await {
                    Some(Outcome::Ready(client)) => return Ok(client),
                    Some(Outcome::Failed(e)) => return Err(e),
                    Some(Outcome::Retry) => continue,
                    None => {
                        tracing::warn!(
                            "waited the close and build timeouts for another caller's client \
                             replacement; taking it over (its stale client is force-closed)"
                        );
                        take_over = true;
                        continue;
                    }
                }
            }
        };
        match lead(driver, gate, lease, key).await {
            Led::Done(result) => return result,
            Led::Retry => continue,
        }
    }
}

/// How leading a replacement ended.
#[must_use]
enum Led<C> {
    /// The caller's answer.
    Done(Result<C, Error>),
    /// Superseded: ask the slot again.
    Retry,
}

async fn lead<D: Driver>(
    driver: &D,
    gate: &ShutdownGate,
    lease: Lease<D::Client, D::Key>,
    key: &D::Key,
) -> Led<D::Client> {
    if let Some(stale) = lease.stale() {
        let closed = close_isolated(driver, stale, driver.close_timeout()).await;
        driver.replaced(stale, closed.outcome);
    }
    let Ok(building) = lease.reset() else {
        return Led::Retry;
    };
    match build_isolated(driver, key).await {
        Ok(client) => match building.publish(client, gate) {
            Publish::Published(client) => Led::Done(Ok(client)),
            Publish::ShutDown => Led::Done(Err(Error::shut_down())),
            Publish::Superseded => Led::Retry,
        },
        Err(e) => {
            building.fail(e.clone());
            Led::Done(Err(e))
        }
    }
}

/// The driver's build, bounded by the build timeout, with a panic turned into an error.
async fn build_isolated<D: Driver>(driver: &D, key: &D::Key) -> Result<D::Client, Error> {
    let timeout = driver.build_timeout();
    let timer = driver.timer();
    let build = AssertUnwindSafe(driver.build(key)).catch_unwind();
    match timer.until(timer.after(timeout), build).await {
        Some(Ok(result)) => result,
        Some(Err(panic)) => {
            let msg = panic_message(&*panic);
            tracing::error!(panic = %msg, "the client factory's build panicked");
            Err(Error::with_detail(
                Kind::Build,
                format!(
                    "the factory's build panicked ({msg}); every caller waiting on this build \
                     got this error, and the next call builds again"
                ),
            ))
        }
        None => Err(Error::timeout(format!(
            "building a client took longer than build_timeout ({timeout:?}); every caller \
             waiting on this build got this error: raise build_timeout or make the build \
             faster"
        ))),
    }
}

/// How an isolated close ended.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Closed {
    /// What the close did (a panicking close counts as forced when the force-close after
    /// it closed the client).
    pub outcome: CloseOutcome,
    /// The panic's message, if the driver's close panicked.
    pub panicked: Option<String>,
}

/// The driver's close with a panic contained: a panicking close force-closes the client
/// and reports the panic's message.
pub(crate) async fn close_isolated<D: Driver>(
    driver: &D,
    client: &D::Client,
    budget: Duration,
) -> Closed {
    match AssertUnwindSafe(driver.close(client, budget))
        .catch_unwind()
        .await
    {
        Ok(outcome) => Closed {
            outcome,
            panicked: None,
        },
        Err(panic) => {
            let msg = panic_message(&*panic);
            let cut = client.in_flight();
            let closed_now = client.force_close();
            tracing::warn!(panic = %msg, "closing a client panicked; it was force-closed");
            Closed {
                outcome: CloseOutcome {
                    closed_now,
                    forced: closed_now,
                    cut: if closed_now { cut } else { 0 },
                    not_closed_on_wire: false,
                },
                panicked: Some(msg),
            }
        }
    }
}
