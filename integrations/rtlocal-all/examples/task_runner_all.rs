//! A task-runner pool using every kind of managed client, then one shutdown for all.
//!
//! Two worker threads; each runs three `current_thread` runtimes one after the other (a
//! runner that restarts its runtime), and a few jobs on each. Every job uses all five
//! clients against real servers this example starts on 127.0.0.1: an HTTP GET (hyper), a
//! reqwest GET, a PostgreSQL `SELECT`, a redis `INCR` and a gRPC health check. Each
//! manager hands every runtime its own client and releases it when the runtime is dropped.
//!
//! The workers' last runtimes stay alive and idle (waiting for work, as a runner does),
//! holding a live client of every kind, when the main thread — in no runtime at all —
//! calls `rtlocal::shutdown_all(5 s)`. It prints the report, checks that every manager
//! refuses new clients, stops the workers, and checks that every server sees 0
//! connections. The exit code is non-zero if anything failed.
//!
//! Needs redis-server and PostgreSQL installed (`bash .ci/servers`, as root):
//!
//! ```text
//! cargo run -p rtlocal-all --example task_runner_all
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rtlocal_all::{Error, Managers, NAMES, Targets, block_on_outside, current_thread};
use rtlocal_testkit::{Servers, check_installed};

const WORKERS: usize = 2;
const RUNTIMES_PER_WORKER: usize = 3;
const JOBS_PER_RUNTIME: usize = 3;
/// A hang guard for every wait, not a timing.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    if let Err(missing) = check_installed() {
        // `missing` names what is missing and says to run `bash .ci/servers`.
        eprintln!("task_runner_all: cannot run: {missing}");
        return ExitCode::from(2);
    }
    let start = Instant::now();
    match run() {
        Ok(failures) if failures.is_empty() => {
            println!("ok in {:.1?}", start.elapsed());
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            for f in &failures {
                eprintln!("FAILED: {f}");
            }
            eprintln!("{} failure(s)", failures.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything that failed (empty: all went well); `Err` when the run could not go on.
fn run() -> Result<Vec<String>, Error> {
    let servers = Servers::start();
    let managers = Arc::new(Managers::build(&Targets {
        http_url: servers.http.url("/"),
        redis_url: servers.redis.url(),
        postgres: servers.postgres.options(),
        grpc_uri: servers.grpc.uri(),
    })?);
    println!(
        "servers: http {}, redis {}, grpc {}, postgres up",
        servers.http.url("/"),
        servers.redis.url(),
        servers.grpc.uri()
    );

    let (idle_tx, idle_rx) = mpsc::channel::<usize>();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (managers, idle_tx) = (managers.clone(), idle_tx.clone());
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{w}"))
            .spawn(move || worker(w, &managers, &idle_tx, &stop_rx))?;
        workers.push((stop_tx, thread));
    }
    drop(idle_tx);

    // Wait for every worker to be idle on its last runtime.
    let mut failures = Vec::new();
    for _ in 0..WORKERS {
        if idle_rx.recv_timeout(HANG_GUARD).is_err() {
            failures.push(format!(
                "hang guard: a worker did not finish its jobs within {HANG_GUARD:?}"
            ));
        }
    }
    print_stats("before shutdown_all", &managers);

    // From the main thread, in no runtime, while the workers' runtimes idle.
    let report = block_on_outside(HANG_GUARD, rtlocal::shutdown_all(Duration::from_secs(5)))
        .ok_or("hang guard: shutdown_all did not finish")?;
    println!("{report}");
    for name in NAMES {
        let lines: Vec<_> = report.managers.iter().filter(|m| m.name == name).collect();
        match lines.as_slice() {
            [line] => {
                if line.report.closed != WORKERS {
                    failures.push(format!(
                        "{name}: closed {} client(s), expected one per idle worker ({WORKERS})",
                        line.report.closed
                    ));
                }
                if !line.report.failed.is_empty() {
                    failures.push(format!("{name}: {}", line.report));
                }
            }
            _ => failures.push(format!("{} report line(s) for {name}", lines.len())),
        }
    }
    let not_refusing = current_thread().block_on(managers.not_refusing());
    if !not_refusing.is_empty() {
        failures.push(format!(
            "still handing out clients after shutdown_all: {not_refusing:?}"
        ));
    }

    // Stop the workers: their runtimes are dropped, and with them what reqwest and redis
    // (which have no close of their own) still held.
    for (stop, thread) in workers {
        drop(stop);
        match thread.join() {
            Ok(mut f) => failures.append(&mut f),
            Err(_) => failures.push("a worker panicked".into()),
        }
    }
    print_stats("after the workers stopped", &managers);

    let open = servers.wait_closed(HANG_GUARD);
    println!("connections the servers see open now: {open}");
    if !open.is_zero() {
        failures.push(format!("servers still see connections: {open}"));
    }
    Ok(failures)
}

/// A task runner: `RUNTIMES_PER_WORKER` runtimes in turn, `JOBS_PER_RUNTIME` jobs on
/// each; idles on the last one until told to stop. Returns the jobs that failed.
fn worker(
    w: usize,
    managers: &Managers,
    idle: &mpsc::Sender<usize>,
    stop: &mpsc::Receiver<()>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for r in 0..RUNTIMES_PER_WORKER {
        let rt = current_thread();
        for j in 0..JOBS_PER_RUNTIME {
            let n = i32::try_from((w * 100) + (r * 10) + j).unwrap_or(i32::MAX);
            if let Err(e) = rt.block_on(managers.round_trip(n)) {
                failures.push(format!("worker {w}, runtime {r}, job {j}: {e}"));
            }
        }
        println!("worker {w}: runtime {r} ran {JOBS_PER_RUNTIME} jobs");
        if r + 1 == RUNTIMES_PER_WORKER {
            // Idle, holding this runtime (and its clients), until told to stop.
            let _ = idle.send(w);
            let _ = stop.recv();
        }
        drop(rt); // the managers release this runtime's clients
    }
    failures
}

fn print_stats(when: &str, m: &Managers) {
    let s = [
        m.http.stats(),
        m.reqwest.stats(),
        m.postgres.stats(),
        m.redis.stats(),
        m.grpc.stats(),
    ];
    println!("clients {when} (created/closed/live):");
    for (name, s) in NAMES.into_iter().zip(s) {
        println!(
            "  {name}: {}/{}/{}",
            s.clients_created, s.clients_closed, s.clients_live
        );
    }
}
