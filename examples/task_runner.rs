//! The main job: a task-runner thread pool where each worker thread owns a
//! `current_thread` runtime, keeps it between jobs (idle while it waits for work) and
//! restarts it every few jobs. Every request goes through `rtlocal::client().await`.
//!
//! `--naive` runs the same workload on one shared hyper-util client and reports the
//! requests that hang (bounded by a timeout) or fail with "dispatch task is gone".
//!
//! ```text
//! cargo run --release --example task_runner            # rtlocal
//! cargo run --release --example task_runner -- --naive # one shared hyper-util client
//! ```
//! Options: `--workers N` (4), `--runtimes N` restarts per worker (6), `--jobs N` per
//! runtime (3), `--requests N` per job (5), `--timeout-ms N` per job (500).
//! After its requests, each job does synchronous work with its runtime idle: 5 ms, and
//! 700 ms for every 7th job.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Clone, Copy)]
struct Opts {
    naive: bool,
    workers: usize,
    runtimes: usize,
    jobs: usize,
    requests: usize,
    timeout: Duration,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        naive: false,
        workers: 4,
        runtimes: 6,
        jobs: 3,
        requests: 5,
        timeout: Duration::from_millis(500),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            let n: usize = v
                .parse()
                .map_err(|_| format!("{name}: {v:?} is not a number"))?;
            if n == 0 {
                return Err(format!("{name} must be at least 1"));
            }
            Ok(n)
        };
        match a.as_str() {
            "--naive" => o.naive = true,
            "--workers" => o.workers = num("--workers")?,
            "--runtimes" => o.runtimes = num("--runtimes")?,
            "--jobs" => o.jobs = num("--jobs")?,
            "--requests" => o.requests = num("--requests")?,
            "--timeout-ms" => o.timeout = Duration::from_millis(num("--timeout-ms")? as u64),
            "-h" | "--help" => {
                println!(
                    "usage: task_runner [--naive] [--workers N] [--runtimes N] [--jobs N] \
                     [--requests N] [--timeout-ms N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

/// A loopback server on its own runtime that counts open connections.
struct Server {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

fn start_server() -> std::io::Result<Server> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let open = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (o, a) = (Arc::clone(&open), Arc::clone(&accepted));
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = Arc::clone(&o);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(Server {
        addr,
        open,
        accepted,
        _rt: rt,
    })
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    hung: AtomicUsize,
    failed: AtomicUsize,
    callbacks: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.first_error.lock().unwrap().get_or_insert(e);
    }
}

type NaiveClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

async fn one_request(url: &str, naive: Option<&NaiveClient>) -> Result<(), String> {
    match naive {
        None => {
            let client = rtlocal::client().await.map_err(|e| e.to_string())?;
            let resp = client.get(url).await.map_err(|e| e.to_string())?;
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
        }
        Some(client) => {
            let uri = url.parse().map_err(|e| format!("{e}"))?;
            let resp = client.get(uri).await.map_err(|e| format!("{e:?}"))?;
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("task_runner: {e}");
            std::process::exit(2);
        }
    };
    let server = match start_server() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("task_runner: could not start the local server: {e}");
            std::process::exit(1);
        }
    };
    let url = format!("http://{}/", server.addr);
    let naive: Option<NaiveClient> = opts
        .naive
        .then(|| hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http());
    let tally = Arc::new(Tally::default());
    // The default manager and its closer thread live for the whole process: count
    // descriptors from here on.
    let _ = rtlocal::default_manager();
    let fds_before = open_fds();
    let started = Instant::now();

    // Jobs are handed out from one queue, so a worker's runtime sits idle while the
    // others work: exactly when a shared client's pooled connection goes unpolled.
    let total_jobs = opts.workers * opts.runtimes * opts.jobs;
    let (tx, rx) = mpsc::channel::<usize>();
    // Work arrives over time, as it does for a task runner: workers wait between jobs
    // with their runtime alive and idle.
    let producer = std::thread::spawn(move || {
        for j in 0..total_jobs {
            let _ = tx.send(j);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let rx = Arc::new(Mutex::new(rx));

    std::thread::scope(|s| {
        for _ in 0..opts.workers {
            let (rx, tally, url, naive) = (
                Arc::clone(&rx),
                Arc::clone(&tally),
                url.clone(),
                naive.clone(),
            );
            s.spawn(move || {
                let mut rt: Option<tokio::runtime::Runtime> = None;
                let mut jobs_on_rt = 0;
                loop {
                    let Ok(job) = rx.lock().unwrap().recv() else {
                        break;
                    };
                    if rt.is_none() || jobs_on_rt == opts.jobs {
                        drop(rt.take()); // runtime restart: its clients are released now
                        let new = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("worker runtime");
                        let t = Arc::clone(&tally);
                        new.block_on(async {
                            rtlocal::on_runtime_shutdown(move || {
                                t.callbacks.fetch_add(1, Ordering::SeqCst);
                            })
                            .expect("register teardown callback");
                        });
                        rt = Some(new);
                        jobs_on_rt = 0;
                    }
                    jobs_on_rt += 1;
                    let rt = rt.as_ref().expect("runtime");
                    rt.block_on(async {
                        let mut set = tokio::task::JoinSet::new();
                        for _ in 0..opts.requests {
                            let (url, naive) = (url.clone(), naive.clone());
                            set.spawn(async move { one_request(&url, naive.as_ref()).await });
                        }
                        let all = tokio::time::timeout(opts.timeout, async {
                            let mut done = 0;
                            while let Some(r) = set.join_next().await {
                                done += 1;
                                match r {
                                    Ok(Ok(())) => {
                                        tally.ok.fetch_add(1, Ordering::SeqCst);
                                    }
                                    Ok(Err(e)) => tally.error(e),
                                    Err(e) => tally.error(e.to_string()),
                                }
                            }
                            done
                        });
                        if all.await.is_err() {
                            // The requests still pending after the deadline are hung.
                            tally.hung.fetch_add(set.len(), Ordering::SeqCst);
                            set.abort_all();
                        }
                    });
                    // The synchronous part of the job: the runtime is alive but nobody
                    // drives it. Every 7th job is long (a big file, a CPU-bound step).
                    let sync_work = if job % 7 == 6 { 700 } else { 5 };
                    std::thread::sleep(Duration::from_millis(sync_work));
                }
            });
        }
    });
    let _ = producer.join();
    let elapsed = started.elapsed();
    drop(naive);
    // Give the server a moment to notice closed connections (bounded).
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = rtlocal::default_manager().stats();
    let fds_after = open_fds();
    let total = total_jobs * opts.requests;

    println!();
    println!(
        "task_runner ({}): {} workers x {} runtimes x {} jobs x {} requests",
        if opts.naive {
            "naive: one shared hyper-util client"
        } else {
            "rtlocal"
        },
        opts.workers,
        opts.runtimes,
        opts.jobs,
        opts.requests
    );
    println!("+----------------------------------+------------+");
    let row = |k: &str, v: String| println!("| {k:<32} | {v:>10} |");
    row("requests sent", total.to_string());
    row("requests ok", tally.ok.load(Ordering::SeqCst).to_string());
    row(
        "requests hung (timed out)",
        tally.hung.load(Ordering::SeqCst).to_string(),
    );
    row(
        "requests failed",
        tally.failed.load(Ordering::SeqCst).to_string(),
    );
    if !opts.naive {
        row("clients created", stats.clients_created.to_string());
        row("clients replaced", stats.clients_replaced.to_string());
        row("clients closed", stats.clients_closed.to_string());
        row("clients live", stats.clients_live.to_string());
        row(
            "released at runtime teardown",
            stats.runtime_releases.to_string(),
        );
        row(
            "connections carried over",
            stats.connections_carried.to_string(),
        );
    }
    row(
        "teardown callbacks run",
        tally.callbacks.load(Ordering::SeqCst).to_string(),
    );
    row("open fds before", fds_before.to_string());
    row("open fds after", fds_after.to_string());
    row(
        "server: connections accepted",
        server.accepted.load(Ordering::SeqCst).to_string(),
    );
    row(
        "server: connections still open",
        server.open.load(Ordering::SeqCst).to_string(),
    );
    row("elapsed", format!("{:.2?}", elapsed));
    println!("+----------------------------------+------------+");
    if let Some(e) = tally.first_error.lock().unwrap().as_ref() {
        println!("first error: {e}");
    }
    let bad = tally.hung.load(Ordering::SeqCst) + tally.failed.load(Ordering::SeqCst);
    if opts.naive {
        println!(
            "{bad} of {total} requests hung or failed on the shared client \
             (pooled connections owned by idle or dropped runtimes)."
        );
    } else if bad > 0 || stats.clients_live != 0 || server.open.load(Ordering::SeqCst) != 0 {
        println!("unexpected: rtlocal left failures or open clients/connections");
        std::process::exit(1);
    } else {
        println!("all {total} requests ok; every client closed; no connection left open.");
    }
}
