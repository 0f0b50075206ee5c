//! Jobs that must happen on time whether or not any tokio runtime is being driven:
//! deadlines of futures polled outside their runtime, and shutting down idle pooled
//! sockets of runtimes that idle (hyper-util's own idle reaper is a task on the client's
//! runtime, so it stops when that runtime stops).
//!
//! One queue of jobs for the process, ordered by deadline, and one task on the manager's
//! closer runtime (`manager::closer`, one background thread) that sleeps on tokio's timer
//! until the earliest deadline, runs what is due, and sleeps again. Scheduling a job wakes
//! that task only when the job is due before the time it sleeps until; cancelling never
//! wakes it. So the common case — a connection's idle check 90 s away, scheduled when the
//! connection opens and cancelled when its client closes — costs a lock and a map insert,
//! not a wake-up of another thread (a runtime that churns would otherwise pay two
//! cross-thread wake-ups per connection). Jobs are quick and synchronous; each runs
//! isolated with `catch_unwind`, so one that panics cannot stop the others.
//!
//! Invariant: `armed` is the deadline the task sleeps until (or `None`: it waits for a
//! job), written only by the task under the queue lock; a job scheduled before `armed`
//! (or when it is `None`) notifies the task under the same lock, and `Notify` keeps that
//! permit if the task is not waiting yet. So no job is ever left behind a later wake-up.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::Instant;

use tokio::sync::Notify;

use crate::manager::closer;

type Job = Box<dyn FnOnce() + Send>;

/// Names a scheduled job, to cancel it.
#[derive(Debug)]
pub(crate) struct TimerKey((Instant, u64));

struct Queue {
    state: parking_lot::Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Pending jobs by (deadline, sequence number): earliest first, each key unique.
    jobs: BTreeMap<(Instant, u64), Job>,
    next: u64,
    /// What the task sleeps until: see the module's invariant.
    armed: Option<Instant>,
}

static QUEUE: OnceLock<Option<&'static Queue>> = OnceLock::new();

/// The queue, its task started on the closer on first use; `None` if the closer could not
/// be started.
fn queue() -> Option<&'static Queue> {
    *QUEUE.get_or_init(|| {
        let handle = closer::handle()?;
        let queue: &'static Queue = Box::leak(Box::new(Queue {
            state: parking_lot::Mutex::new(State::default()),
            wake: Notify::new(),
        }));
        drop(handle.spawn(run(queue)));
        Some(queue)
    })
}

/// The closer's task: runs due jobs, then sleeps until the next deadline or a wake-up.
async fn run(queue: &'static Queue) {
    let mut due: Vec<Job> = Vec::new();
    loop {
        let next = {
            let mut st = queue.state.lock();
            let now = Instant::now();
            while let Some(entry) = st.jobs.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            let next = st.jobs.first_key_value().map(|(k, _)| k.0);
            st.armed = next;
            next
        };
        for job in due.drain(..) {
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::warn!("a timed job of rtlocal panicked; it was skipped");
            }
        }
        match next {
            Some(at) => {
                let sleep = std::pin::pin!(tokio::time::sleep_until(at.into()));
                let woken = std::pin::pin!(queue.wake.notified());
                let _ = futures_util::future::select(sleep, woken).await;
            }
            None => queue.wake.notified().await,
        }
    }
}

/// Runs `job` on the closer at `at` (or soon after). `None` when the closer could not be
/// started (the OS refused a thread): the job will not run, and the caller must degrade
/// (it is dropped here).
pub(crate) fn schedule(at: Instant, job: impl FnOnce() + Send + 'static) -> Option<TimerKey> {
    let queue = queue()?;
    let mut st = queue.state.lock();
    let key = (at, st.next);
    st.next += 1;
    st.jobs.insert(key, Box::new(job));
    if st.armed.is_none_or(|armed| at < armed) {
        // The task sleeps past this job (or waits for one): it re-reads the queue.
        st.armed = Some(at);
        queue.wake.notify_one();
    }
    Some(TimerKey(key))
}

/// Cancels a job that has not run yet; returns whether it was still pending. Never wakes
/// the closer: if it was the earliest job, the task wakes at its time and finds nothing.
pub(crate) fn cancel(key: &TimerKey) -> bool {
    let Some(queue) = queue() else {
        return false;
    };
    queue.state.lock().jobs.remove(&key.0).is_some()
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

    /// The closer's task sleeps until its earliest job: a job due sooner must wake it.
    #[test]
    fn an_earlier_job_wakes_a_timer_sleeping_until_a_later_one() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let far = schedule(now + Duration::from_secs(600), || {}).expect("timer thread");
        // Let the task go to sleep until the far job.
        std::thread::sleep(Duration::from_millis(20));
        schedule(Instant::now() + Duration::from_millis(5), move || {
            let _ = tx.send(());
        })
        .expect("timer thread");
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "the job 5 ms away waited behind the one 600 s away"
        );
        assert!(cancel(&far), "the far job is still pending");
        assert!(!cancel(&far), "a cancelled job is gone");
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
