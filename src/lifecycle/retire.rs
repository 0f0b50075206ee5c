//! Retire-all: `close_all` and `shutdown`, written once for every driver; and the close
//! of one retired client (a thread's exit hands its client's close to the closer).
//!
//! Every slot's client is marked closing first, so all drain together against one
//! deadline. Each slot is released the moment its own client is closed: a caller waiting
//! on its slot never waits for another slot's drain. A slot caught mid-replacement (or
//! mid-retirement by someone else) is waited for within the deadline and then retired; at
//! the deadline it is force-cleared. A panicking close is recorded; the rest still close.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::acquire::{Closed, close_isolated, wait_bound};
use super::completion::Completion;
use super::driver::{Driver, Timer};
use super::slot::{Retire, RetireLease, Slot};
use crate::error::{Error, Kind};
use crate::sync::Arc;

/// What a retire-all did.
#[doc(hidden)]
#[derive(Debug, Default)]
#[must_use]
pub struct Retired {
    /// Clients this call closed.
    pub closed: usize,
    /// Of those, closes forced at the deadline.
    pub forced: usize,
    /// Requests cut by forced closes.
    pub in_flight_cut: u64,
    /// Slots found mid-replacement or mid-retirement and waited for.
    pub waited_for_replacement: usize,
    /// Of the clients closed, those whose connections were left to a runtime that is not
    /// running ([`CloseOutcome::not_closed_on_wire`](super::driver::CloseOutcome)).
    pub not_closed_on_wire: usize,
    /// Closes that panicked (the client was force-closed anyway).
    pub failed: Vec<Error>,
}

impl Retired {
    fn add(&mut self, other: Retired) {
        self.closed += other.closed;
        self.forced += other.forced;
        self.in_flight_cut += other.in_flight_cut;
        self.waited_for_replacement += other.waited_for_replacement;
        self.not_closed_on_wire += other.not_closed_on_wire;
        self.failed.extend(other.failed);
    }

    fn count(&mut self, closed: Closed) {
        let outcome = closed.outcome;
        if outcome.closed_now {
            self.closed += 1;
            if outcome.not_closed_on_wire {
                self.not_closed_on_wire += 1;
            }
        }
        if outcome.forced {
            self.forced += 1;
            self.in_flight_cut += outcome.cut;
        }
        if let Some(msg) = closed.panicked {
            self.failed.push(Error::with_detail(
                Kind::Closed,
                format!("closing a client panicked ({msg}); it was force-closed"),
            ));
        }
    }
}

/// Closes every client in `slots` within `timeout`. See the module docs.
pub async fn retire_all<D: Driver>(
    driver: &D,
    slots: Vec<Arc<Slot<D::Client, D::Key>>>,
    timeout: Duration,
) -> Retired {
    let deadline = driver.timer().after(timeout);
    // Every slot is retired (its client marked closing) before anything is awaited.
    let first: Vec<_> = slots.into_iter().map(|s| (Slot::retire(&s), s)).collect();
    let mut each: FuturesUnordered<_> = first
        .into_iter()
        .map(|(step, slot)| retire_slot(driver, slot, step, deadline))
        .collect();
    let mut report = Retired::default();
    // FuturesUnordered polls only the futures that were woken: linear in the slots.
    while let Some(done) = each.next().await {
        report.add(done);
    }
    report
}

async fn retire_slot<D: Driver>(
    driver: &D,
    slot: Arc<Slot<D::Client, D::Key>>,
    mut step: Retire<D::Client, D::Key>,
    deadline: <D::Timer as Timer>::Deadline,
) -> Retired {
    let timer = driver.timer();
    let mut report = Retired::default();
    loop {
        match step {
            Retire::Empty => return report,
            Retire::Lease(lease) => {
                let budget = timer.remaining(deadline).max(Duration::from_millis(1));
                report.count(close_retired(driver, lease, budget).await);
                return report;
            }
            Retire::Busy(done) => {
                report.waited_for_replacement += 1;
                if timer
                    .until(deadline, Completion::wait(done))
                    .await
                    .is_none()
                {
                    // Its leader is stuck (e.g. on a runtime nobody drives).
                    if let Some(cut) = slot.force_clear() {
                        report.closed += 1;
                        report.forced += 1;
                        report.in_flight_cut += cut;
                    }
                    return report;
                }
                step = Slot::retire(&slot);
            }
        }
    }
}

/// A thread's exit: retires and closes the client `pred` selects (the exited thread's),
/// starting from `step` (the first `Slot::retire_if`, made on the exiting thread). A slot
/// that is busy — a `close_all`, or a replacement led by a task that moved to another
/// thread — is waited for, bounded by the close and build timeouts, and then retired
/// again: what that replacement publishes for the exited thread is closed too. Returns
/// whether the slot is done with; `false` (still busy) leaves it to `close_all`.
pub async fn retire_exited<D: Driver>(
    driver: &D,
    slot: &Arc<Slot<D::Client, D::Key>>,
    pred: impl Fn(&D::Client, &D::Key) -> bool,
    mut step: Retire<D::Client, D::Key>,
) -> bool {
    let timer = driver.timer();
    loop {
        match step {
            Retire::Empty => return true,
            Retire::Lease(lease) => {
                let _ = close_retired(driver, lease, driver.close_timeout()).await;
                return true;
            }
            Retire::Busy(done) => {
                let bound = timer.after(wait_bound(driver));
                if timer.until(bound, Completion::wait(done)).await.is_none() {
                    return false;
                }
                step = Slot::retire_if(slot, &pred);
            }
        }
    }
}

/// Closes a retired client within `budget` and ends its retirement.
pub async fn close_retired<D: Driver>(
    driver: &D,
    lease: RetireLease<D::Client, D::Key>,
    budget: Duration,
) -> Closed {
    let closed = close_isolated(driver, lease.client(), budget).await;
    lease.finish();
    closed
}

#[cfg(all(test, not(rtlocal_loom)))]
mod tests {
    use super::*;

    use crate::lifecycle::driver::CloseOutcome;

    fn closed(closed_now: bool, forced: bool, cut: u64) -> Closed {
        Closed {
            outcome: CloseOutcome {
                closed_now,
                forced,
                cut,
                not_closed_on_wire: false,
            },
            panicked: None,
        }
    }

    #[test]
    fn counts_each_close_by_how_it_ended() {
        let mut r = Retired::default();
        r.count(closed(true, false, 0));
        r.count(closed(true, true, 3));
        r.count(closed(false, true, 2));
        r.count(closed(false, false, 0));
        r.count(Closed {
            outcome: CloseOutcome {
                closed_now: true,
                forced: false,
                cut: 0,
                not_closed_on_wire: true,
            },
            panicked: None,
        });
        r.count(Closed {
            outcome: CloseOutcome {
                closed_now: true,
                forced: true,
                cut: 0,
                not_closed_on_wire: false,
            },
            panicked: Some("boom".to_owned()),
        });
        assert_eq!((r.closed, r.forced, r.in_flight_cut), (4, 3, 5));
        assert_eq!(r.not_closed_on_wire, 1);
        assert_eq!(r.failed.len(), 1);
        assert!(r.failed[0].is_closed());
        assert!(r.failed[0].to_string().contains("boom"), "{}", r.failed[0]);
    }

    #[test]
    fn adds_every_field() {
        let mut total = Retired {
            closed: 1,
            forced: 2,
            in_flight_cut: 3,
            waited_for_replacement: 4,
            not_closed_on_wire: 9,
            failed: vec![Error::shut_down()],
        };
        total.add(Retired {
            closed: 5,
            forced: 6,
            in_flight_cut: 7,
            waited_for_replacement: 8,
            not_closed_on_wire: 1,
            failed: vec![Error::runtime_gone()],
        });
        assert_eq!(
            (
                total.closed,
                total.forced,
                total.in_flight_cut,
                total.waited_for_replacement
            ),
            (6, 8, 10, 12)
        );
        assert_eq!(total.not_closed_on_wire, 10);
        assert_eq!(total.failed.len(), 2);
    }
}
