//! A process-wide timer on a plain thread, for what must happen on time whether or not
//! any tokio runtime is being driven: deadlines of futures polled outside their runtime,
//! and shutting down idle pooled sockets of runtimes that idle (hyper-util's own idle
//! reaper is a task on the client's runtime, so it stops when that runtime stops).
//!
//! The thread starts with the first job and exits after [`LINGER`] without any, so an
//! application that never needs it never has it. Jobs are quick and synchronous; each
//! runs isolated with `catch_unwind`, so one that panics cannot stop the others.
//!
//! Lock order: the timer lock is never held while a job runs, so a job may take any lock
//! (and schedule further jobs).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long the thread waits for new jobs once it has none, before it exits.
const LINGER: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce() + Send>;

/// Names a scheduled job, to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey(u64);

#[derive(Default)]
struct State {
    /// Earliest first; entries whose job is gone from `jobs` were cancelled.
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    jobs: HashMap<u64, Job>,
    next_id: u64,
    thread_running: bool,
}

struct Timer {
    state: Mutex<State>,
    wake: Condvar,
}

static TIMER: LazyLock<Timer> = LazyLock::new(|| Timer {
    state: Mutex::new(State::default()),
    wake: Condvar::new(),
});

/// Runs `job` on the timer thread at `at` (or soon after). `None` when the thread could
/// not be started (the OS refused a thread): the job will not run, and the caller must
/// degrade (it is dropped here).
pub(crate) fn schedule(at: Instant, job: impl FnOnce() + Send + 'static) -> Option<TimerKey> {
    let timer = &*TIMER;
    let mut st = timer.state.lock();
    st.next_id += 1;
    let id = st.next_id;
    let earliest = st
        .queue
        .peek()
        .is_none_or(|Reverse((first, _))| at < *first);
    st.queue.push(Reverse((at, id)));
    st.jobs.insert(id, Box::new(job));
    if !st.thread_running {
        let spawned = std::thread::Builder::new()
            .name("rtlocal-timer".to_owned())
            .spawn(run);
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the rtlocal timer thread");
            st.jobs.remove(&id);
            return None;
        }
        st.thread_running = true;
    } else if earliest {
        timer.wake.notify_one();
    }
    Some(TimerKey(id))
}

/// Cancels a job that has not run yet; returns whether it was still pending.
pub(crate) fn cancel(key: TimerKey) -> bool {
    // The queue entry stays and is skipped when it comes up.
    TIMER.state.lock().jobs.remove(&key.0).is_some()
}

fn run() {
    let timer = &*TIMER;
    loop {
        let job = {
            let mut st = timer.state.lock();
            loop {
                let Some(&Reverse((at, id))) = st.queue.peek() else {
                    // Nothing queued: linger for new work, then exit. `thread_running`
                    // is cleared under the lock, so a `schedule` racing this either
                    // sees it set and its job is picked up here, or starts a new thread.
                    let waited = timer.wake.wait_for(&mut st, LINGER);
                    if waited.timed_out() && st.queue.is_empty() {
                        st.thread_running = false;
                        return;
                    }
                    continue;
                };
                if !st.jobs.contains_key(&id) {
                    st.queue.pop();
                    continue;
                }
                if at <= Instant::now() {
                    st.queue.pop();
                    break st.jobs.remove(&id);
                }
                timer.wake.wait_until(&mut st, at);
            }
        };
        if let Some(job) = job {
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::warn!("a job on the rtlocal timer thread panicked; it was skipped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

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
        assert!(cancel(key));
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
