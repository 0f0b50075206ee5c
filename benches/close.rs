//! `close_all` and `shutdown` over 1,000 and 10,000 live clients: the time per client at
//! each size, so that a cost growing faster than the client count shows.
//!
//! Two ways of holding that many live clients:
//!
//! * `per-runtime`: `Sharing::PerRuntime`, 10,000 idle `current_thread` runtimes kept
//!   alive on the bench thread, each holding one client (the 1,000 case uses the first
//!   1,000 of them);
//! * `per-thread`: the default `Sharing::PerThread`, 10,000 threads each owning an idle
//!   `current_thread` runtime and holding one client (the 1,000 case uses 1,000 of them).
//!
//! The runtimes have a timer but no I/O driver: an I/O driver costs two descriptors, and
//! 20,000 of them would pass this machine's descriptor limit. The clients have no
//! connections (10,000 connections would need 20,000 descriptors too), so what is measured
//! is the manager's own work per client: listing the slots, retiring each client, closing
//! it on the closer runtime, and the report.
//!
//! Before every measured call the slots are populated (not timed); `shutdown` gets a fresh
//! manager each sample. Each round runs every (way, size, operation) once, rotating the
//! order, so all of them see the same machine noise.
//!
//! `cargo bench --bench close` (rounds: `-- 20`)

mod support;

use std::sync::{Arc, mpsc};
use std::time::Duration;

use rtlocal::{HttpClientManager, Sharing};

const SIZES: [usize; 2] = [1_000, 10_000];
const MAX: usize = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    PerRuntime,
    PerThread,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    CloseAll,
    Shutdown,
}

/// A current_thread runtime with a timer and no I/O driver (no descriptors).
fn idle_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn manager(sharing: Sharing) -> Arc<HttpClientManager> {
    Arc::new(
        HttpClientManager::builder()
            .user_agent(None)
            .request_timeout(None)
            .sharing(sharing)
            .build()
            .expect("config"),
    )
}

/// `MAX` threads, each owning an idle runtime; on command, each builds its client with
/// the manager it is sent and acknowledges.
struct Threads {
    cmds: Vec<mpsc::Sender<Arc<HttpClientManager>>>,
    acks: mpsc::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    fn start(n: usize) -> Threads {
        let (ack_tx, acks) = mpsc::channel();
        let (cmds, threads) = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Arc<HttpClientManager>>();
                let ack = ack_tx.clone();
                let thread = std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        let rt = idle_runtime();
                        while let Ok(m) = rx.recv() {
                            drop(rt.block_on(m.client()).expect("client"));
                            drop(m);
                            let _ = ack.send(());
                        }
                    })
                    .expect("spawn");
                (tx, thread)
            })
            .unzip();
        Threads {
            cmds,
            acks,
            threads,
        }
    }

    fn populate(&self, m: &Arc<HttpClientManager>, n: usize) {
        for tx in &self.cmds[..n] {
            tx.send(Arc::clone(m)).expect("populate");
        }
        for _ in 0..n {
            self.acks.recv().expect("ack");
        }
    }

    fn stop(self) {
        drop(self.cmds);
        for t in self.threads {
            t.join().expect("thread");
        }
    }
}

fn main() {
    let rounds = support::rounds("close", 20, 2);
    // Hang guard: about 30 s per round (a normal round takes a small fraction of it).
    support::watchdog("close", Duration::from_secs(300 + 30 * rounds as u64));
    let smoke = !std::env::args().any(|a| a == "--bench");
    // The smoke run (`cargo test --all-targets`) keeps to small sizes.
    let sizes: Vec<usize> = if smoke {
        vec![100, 1_000]
    } else {
        SIZES.to_vec()
    };
    let max = if smoke { 1_000 } else { MAX };
    let closer = support::current_thread_rt();
    let runtimes: Vec<tokio::runtime::Runtime> = (0..max).map(|_| idle_runtime()).collect();
    let threads = Threads::start(max);

    let mut cases = Vec::new();
    for way in [Way::PerRuntime, Way::PerThread] {
        for op in [Op::CloseAll, Op::Shutdown] {
            for &n in &sizes {
                cases.push((way, op, n));
            }
        }
    }
    // `close_all` keeps its manager from sample to sample, one manager per case: a manager
    // that had also held the larger size's clients would scan its emptied slots too.
    let sharing = |way| match way {
        Way::PerRuntime => Sharing::PerRuntime,
        Way::PerThread => Sharing::PerThread,
    };
    let close_all_managers: Vec<Arc<HttpClientManager>> = cases
        .iter()
        .map(|&(way, _, _)| manager(sharing(way)))
        .collect();
    // One sample: the wall time around the call, seen from the calling thread, and the
    // CPU time the whole process spent meanwhile (every thread: the caller and the
    // closer; the idle holders spend none). CPU time barely moves with other load on the
    // machine, wall time does.
    let sample = |case: usize| -> (Duration, Duration) {
        let (way, op, n) = cases[case];
        let m = match op {
            Op::CloseAll => Arc::clone(&close_all_managers[case]),
            Op::Shutdown => manager(sharing(way)),
        };
        match way {
            Way::PerRuntime => {
                for rt in &runtimes[..n] {
                    drop(rt.block_on(m.client()).expect("client"));
                }
            }
            Way::PerThread => threads.populate(&m, n),
        }
        assert_eq!(m.stats().clients_live, n as u64, "populated");
        let cpu = process_cpu_time();
        let t = std::time::Instant::now();
        let report = closer.block_on(async {
            match op {
                Op::CloseAll => m.close_all().await,
                Op::Shutdown => m.shutdown(Duration::from_secs(5)).await,
            }
        });
        let wall = t.elapsed();
        let cpu = process_cpu_time() - cpu;
        assert_eq!((report.closed, report.forced), (n, 0), "{report}");
        (wall, cpu)
    };
    support::rotate(rounds.min(2), cases.len(), sample);
    let samples = support::rotate(rounds, cases.len(), sample);

    println!(
        "\nclose_all and shutdown: {} interleaved samples each; per client: median / clients; \
         vs smaller: per client at this size / at the smaller size (linear: 1.00x)",
        samples[0].len()
    );
    println!(
        "{:<12} {:<10} {:>7} {:>11} {:>11} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7}",
        "",
        "",
        "clients",
        "wall p25",
        "wall med",
        "wall p75",
        "per client",
        "vs smlr",
        "cpu med",
        "per client",
        "vs smlr"
    );
    let mut previous: Option<(f64, f64)> = None;
    for (case, v) in samples.iter().enumerate() {
        let (way, op, n) = cases[case];
        let sorted = |f: fn(&(Duration, Duration)) -> Duration| {
            let mut t: Vec<Duration> = v.iter().map(f).collect();
            t.sort();
            t
        };
        let (wall, cpu) = (sorted(|s| s.0), sorted(|s| s.1));
        let (wall_med, cpu_med) = (support::quantile(&wall, 0.5), support::quantile(&cpu, 0.5));
        let per = (
            wall_med.as_secs_f64() / n as f64,
            cpu_med.as_secs_f64() / n as f64,
        );
        let vs = |now: f64, before: Option<f64>| match (n == sizes[0], before) {
            (false, Some(b)) => format!("{:.2}x", now / b),
            _ => "-".to_string(),
        };
        println!(
            "{:<12} {:<10} {:>7} {:>11.2?} {:>11.2?} {:>11.2?} {:>11} {:>7} {:>11.2?} {:>11} {:>7}",
            match way {
                Way::PerRuntime => "per-runtime",
                Way::PerThread => "per-thread",
            },
            match op {
                Op::CloseAll => "close_all",
                Op::Shutdown => "shutdown",
            },
            n,
            support::quantile(&wall, 0.25),
            wall_med,
            support::quantile(&wall, 0.75),
            format!("{:.2} µs", per.0 * 1e6),
            vs(per.0, previous.map(|p| p.0)),
            cpu_med,
            format!("{:.2} µs", per.1 * 1e6),
            vs(per.1, previous.map(|p| p.1)),
        );
        previous = Some(per);
    }

    threads.stop();
    drop(runtimes);
}

/// CPU time of the whole process so far (all threads).
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
