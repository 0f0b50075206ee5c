//! Jobs that must happen on time whether or not any tokio runtime is being driven:
//! deadlines of futures polled outside their runtime, and shutting down idle pooled
//! sockets of runtimes that idle (hyper-util's own idle reaper is a task on the client's
//! runtime, so it stops when that runtime stops).
//!
//! Each job is a task on the manager's closer runtime (`manager::closer`, one background
//! thread for the process) that sleeps until its time, then runs the job — tokio's timer
//! rather than a hand-written one. Jobs are quick and synchronous; each runs isolated with
//! `catch_unwind`, so one that panics cannot stop the others.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use tokio::task::AbortHandle;

use crate::manager::closer;

/// Names a scheduled job, to cancel it.
#[derive(Debug)]
pub(crate) struct TimerKey(AbortHandle);

/// Runs `job` on the closer at `at` (or soon after). `None` when the closer could not be
/// started (the OS refused a thread): the job will not run, and the caller must degrade
/// (it is dropped here).
pub(crate) fn schedule(at: Instant, job: impl FnOnce() + Send + 'static) -> Option<TimerKey> {
    let task = closer::handle()?.spawn(async move {
        tokio::time::sleep_until(at.into()).await;
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::warn!("a timed job of rtlocal panicked; it was skipped");
        }
    });
    Some(TimerKey(task.abort_handle()))
}

/// Cancels a job that has not run yet; returns whether it was still pending.
pub(crate) fn cancel(key: &TimerKey) -> bool {
    let pending = !key.0.is_finished();
    key.0.abort();
    pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn jobs_run_in_deadline_order_and_cancelled_ones_never() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (ms, tag) in [(30u64, 3), (10, 1), (20, 2)] {
            let tx = tx.clone();
            schedule(now + Duration::from_millis(ms), move || {
                let _ = tx.send(tag);
            })
            .expect("timer thread");
        }
        let tx2 = tx.clone();
        let key = schedule(now + Duration::from_millis(15), move || {
            let _ = tx2.send(99);
        })
        .expect("timer thread");
        assert!(cancel(&key));
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(20)).expect("job ran"))
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }

    #[test]
    fn a_panicking_job_does_not_stop_the_timer() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        schedule(now, || panic!("job panics on purpose")).expect("timer thread");
        schedule(now + Duration::from_millis(5), move || {
            let _ = tx.send(());
        })
        .expect("timer thread");
        assert!(rx.recv_timeout(Duration::from_secs(20)).is_ok());
    }
}
