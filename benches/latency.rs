//! The task-runner workload and runtime churn through a latency relay
//! (`support::relay`): what a connection per runtime generation costs when a round trip
//! is not free. Every sample is *interleaved* with the other sides' (every round runs
//! one sample of each, rotating which goes first).
//!
//! Configurations: RTT 0 (the relay with no delay) and 1 ms (0.5 ms each way, and a
//! simulated TCP handshake on every new connection), plain HTTP/1.1 and HTTPS (rustls,
//! ALPN `http/1.1` only; needs `--features rustls`, skipped without it).
//!
//! **Task runner.** A workload: 2 long-lived worker threads at once, each running
//! `GENERATIONS` `current_thread` runtimes one after another; each runtime is built,
//! makes R sequential GETs (R = 1, 4, 16), and is dropped. Sides:
//!
//! * `rtlocal`: one `HttpClientManager` (per-thread sharing), `client()` per request;
//! * `(a) per-runtime raw`: a hyper-util legacy client built by hand at each runtime
//!   start (support's settings; over support's tokio-rustls connector for HTTPS);
//! * `(d) dedicated runtime`: one `multi_thread` runtime (1 worker) alive for the whole
//!   configuration, owning one pooled hyper-util client; each request is spawned on it and
//!   the generation's runtime awaits the `JoinHandle`.
//!
//! **Churn.** On one thread: a new `current_thread` runtime, its first request, drop;
//! rtlocal against a fresh raw client each time.
//!
//! Every side has its own server and relay, so a connection accepted after its sample
//! ended still counts for the right side; connections are the server's accept count.
//!
//! `cargo bench --features rustls --bench latency -- 200` (rounds per configuration;
//! churn runs 5× as many). `-- 200 1` runs only RTT 1 ms, `-- 200 0` only RTT 0.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use rtlocal::HttpClientManager;
use support::relay::Relay;

const WORKERS: usize = 2;
const GENERATIONS: usize = 4;
const PER_GENERATION: [usize; 3] = [1, 4, 16];
const SIDES: [&str; 3] = ["rtlocal", "(a) per-runtime raw", "(d) dedicated runtime"];

/// A raw hyper-util client, plain or over support's TLS connector.
#[derive(Clone)]
enum Raw {
    Plain(support::Raw),
    Tls(support::tls::TlsRaw),
}

impl Raw {
    fn new(tls: bool) -> Raw {
        if tls {
            Raw::Tls(support::tls::raw_client())
        } else {
            Raw::Plain(support::raw_client())
        }
    }

    async fn get(&self, uri: &http::Uri) {
        let resp = match self {
            Raw::Plain(c) => c.get(uri.clone()).await,
            Raw::Tls(c) => c.get(uri.clone()).await,
        }
        .expect("request");
        resp.into_body().collect().await.expect("body");
    }
}

fn manager(tls: bool) -> HttpClientManager {
    #[cfg(feature = "rustls")]
    if tls {
        return support::tls::manager();
    }
    assert!(!tls, "HTTPS needs the rustls feature");
    support::manager()
}

async fn rtlocal_get(m: &HttpClientManager, uri: &http::Uri) {
    let c = m.client().await.expect("client");
    let resp = c.request(support::get(uri)).await.expect("request");
    resp.into_body().collect().await.expect("body");
}

/// One side's server, behind its own relay.
struct Target {
    uri: http::Uri,
    accepted: Arc<AtomicU64>,
    relay: Relay,
    _server: tokio::runtime::Runtime,
}

impl Target {
    fn new(tls: bool, one_way: Duration) -> Target {
        let (addr, server, accepted) = if tls {
            support::counting_tls_server()
        } else {
            support::counting_server()
        };
        let relay = Relay::start(addr, one_way);
        let scheme = if tls { "https" } else { "http" };
        Target {
            uri: format!("{scheme}://{}/", relay.addr())
                .parse()
                .expect("uri"),
            accepted,
            relay,
            _server: server,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// One configuration (RTT, plain or TLS): a target per side, the manager, and (d)'s
/// dedicated runtime and client.
struct Setup {
    tls: bool,
    targets: Vec<Target>,
    manager: HttpClientManager,
    dedicated: tokio::runtime::Handle,
    dedicated_client: Raw,
}

/// One worker's share of a task-runner workload for `side`.
fn worker(s: &Setup, side: usize, per_gen: usize) {
    let uri = &s.targets[side].uri;
    for _ in 0..GENERATIONS {
        let rt = support::current_thread_rt();
        rt.block_on(async {
            match side {
                0 => {
                    for _ in 0..per_gen {
                        rtlocal_get(&s.manager, uri).await;
                    }
                }
                1 => {
                    let c = Raw::new(s.tls);
                    for _ in 0..per_gen {
                        c.get(uri).await;
                    }
                }
                _ => {
                    for _ in 0..per_gen {
                        let (c, uri) = (s.dedicated_client.clone(), uri.clone());
                        s.dedicated
                            .spawn(async move { c.get(&uri).await })
                            .await
                            .expect("dedicated runtime task");
                    }
                }
            }
        });
        drop(rt);
    }
}

/// A workload share: the configuration, the side, the requests per generation.
type Job = (Arc<Setup>, usize, usize);

/// Long-lived workers, as a task runner's: each takes a job, runs it, and meets the
/// others at the barrier. Dropping `senders` ends them.
struct Workers {
    senders: Vec<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    done: Arc<Barrier>,
}

impl Workers {
    fn start() -> Workers {
        let done = Arc::new(Barrier::new(WORKERS + 1));
        let (senders, threads) = (0..WORKERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Job>();
                let done = Arc::clone(&done);
                let thread = std::thread::spawn(move || {
                    while let Ok((setup, side, per_gen)) = rx.recv() {
                        worker(&setup, side, per_gen);
                        drop(setup);
                        done.wait();
                    }
                });
                (tx, thread)
            })
            .unzip();
        Workers {
            senders,
            threads,
            done,
        }
    }

    /// One workload; returns its wall time.
    fn run(&self, setup: &Arc<Setup>, side: usize, per_gen: usize) -> Duration {
        let t = Instant::now();
        for tx in &self.senders {
            tx.send((Arc::clone(setup), side, per_gen)).expect("worker");
        }
        self.done.wait();
        t.elapsed()
    }

    fn stop(self) {
        drop(self.senders);
        for t in self.threads {
            t.join().expect("worker thread");
        }
    }
}

/// (wall time, connections the side's server accepted).
type Sample = (Duration, u64);

/// A summary line: configuration, R, the three medians, connections per workload.
struct Row {
    config: String,
    per_gen: usize,
    medians: [Duration; 3],
    conns: [f64; 3],
}

fn main() {
    let rounds = support::rounds("latency", 200, 2);
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A second number restricts the run to one RTT in ms (0 or 1).
    let only_rtt: Option<u64> = args.iter().filter_map(|a| a.parse().ok()).nth(1);
    let churn_rounds = rounds * 5;
    // Hang guard: a round of every configuration takes well under a second.
    support::watchdog("latency", Duration::from_secs(300 + 8 * rounds as u64));

    let tls_modes: &[bool] = if cfg!(feature = "rustls") {
        &[false, true]
    } else {
        println!("(built without the rustls feature: plain HTTP only)");
        &[false]
    };
    let rtts: Vec<Duration> = [0u64, 1]
        .into_iter()
        .filter(|r| only_rtt.is_none_or(|o| o == *r))
        .map(Duration::from_millis)
        .collect();

    println!("relay calibration (median of 500 one-byte ping-pongs on an open connection):");
    for rtt in &rtts {
        let measured = Relay::calibrate(*rtt / 2, 500);
        println!("  RTT {rtt:?} set: {} µs measured", measured.as_micros());
    }

    let workers = Workers::start();
    let mut rows = Vec::new();
    let mut churn_rows = Vec::new();
    for &rtt in &rtts {
        for &tls in tls_modes {
            let config = format!("{}, RTT {rtt:?}", if tls { "TLS" } else { "plain" });
            let one_way = rtt / 2;
            let dedicated_rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("dedicated runtime");
            let setup = Arc::new(Setup {
                tls,
                targets: SIDES.iter().map(|_| Target::new(tls, one_way)).collect(),
                manager: manager(tls),
                dedicated: dedicated_rt.handle().clone(),
                dedicated_client: dedicated_rt.block_on(async { Raw::new(tls) }),
            });
            for per_gen in PER_GENERATION {
                let sample = |side: usize| -> Sample {
                    let before = setup.targets[side].accepted();
                    let t = workers.run(&setup, side, per_gen);
                    (t, setup.targets[side].accepted() - before)
                };
                let warm = support::rotate(rounds.clamp(1, 5), SIDES.len(), sample);
                drop(warm);
                let samples = support::rotate(rounds, SIDES.len(), sample);
                rows.push(report(&config, per_gen, &samples));
            }
            churn_rows.push(churn(&config, tls, one_way, churn_rounds));
            let relayed: Vec<u64> = setup.targets.iter().map(|t| t.relay.accepted()).collect();
            println!("({config}: connections the relays accepted, whole section: {relayed:?})");
            drop(setup);
            drop(dedicated_rt);
        }
    }
    workers.stop();
    summary(&rows, &churn_rows);
}

fn report(config: &str, per_gen: usize, samples: &[Vec<Sample>]) -> Row {
    let requests = WORKERS * GENERATIONS * per_gen;
    println!(
        "\ntask runner, {config}: {WORKERS} workers x {GENERATIONS} runtimes x {per_gen} \
         requests = {requests} per workload; {} interleaved samples each",
        samples[0].len()
    );
    println!(
        "{:<24} {:>11} {:>11} {:>11} {:>11} {:>7} {:>7} {:>14}",
        "", "p25", "median", "p75", "per gen", "vs (a)", "vs (d)", "conns/workload"
    );
    let sorted: Vec<Vec<Duration>> = samples
        .iter()
        .map(|v| {
            let mut t: Vec<Duration> = v.iter().map(|s| s.0).collect();
            t.sort();
            t
        })
        .collect();
    let medians: [Duration; 3] = std::array::from_fn(|i| support::quantile(&sorted[i], 0.5));
    let conns: [f64; 3] = std::array::from_fn(|i| {
        samples[i].iter().map(|s| s.1).sum::<u64>() as f64 / samples[i].len() as f64
    });
    for (side, name) in SIDES.iter().enumerate() {
        let t = &sorted[side];
        println!(
            "{name:<24} {:>11.1?} {:>11.1?} {:>11.1?} {:>11.1?} {:>7.3} {:>7.3} {:>14.2}",
            support::quantile(t, 0.25),
            medians[side],
            support::quantile(t, 0.75),
            medians[side] / GENERATIONS as u32,
            medians[side].as_secs_f64() / medians[1].as_secs_f64(),
            medians[side].as_secs_f64() / medians[2].as_secs_f64(),
            conns[side],
        );
    }
    Row {
        config: config.to_owned(),
        per_gen,
        medians,
        conns,
    }
}

/// Runtime churn through the relay: rtlocal against a fresh raw client. Returns the
/// summary line: (configuration, medians rtlocal and raw, connections per churn).
fn churn(
    config: &str,
    tls: bool,
    one_way: Duration,
    rounds: usize,
) -> (String, [Duration; 2], [f64; 2]) {
    let targets = [Target::new(tls, one_way), Target::new(tls, one_way)];
    let m = manager(tls);
    let sample = |side: usize| -> Sample {
        let target = &targets[side];
        let before = target.accepted();
        let t = Instant::now();
        let rt = support::current_thread_rt();
        rt.block_on(async {
            if side == 0 {
                rtlocal_get(&m, &target.uri).await;
            } else {
                Raw::new(tls).get(&target.uri).await;
            }
        });
        drop(rt);
        (t.elapsed(), target.accepted() - before)
    };
    support::rotate(rounds.clamp(1, 20), 2, sample);
    let samples = support::rotate(rounds, 2, sample);
    let med: [Duration; 2] = std::array::from_fn(|i| {
        let mut t: Vec<Duration> = samples[i].iter().map(|s| s.0).collect();
        t.sort();
        support::quantile(&t, 0.5)
    });
    let conns: [f64; 2] = std::array::from_fn(|i| {
        samples[i].iter().map(|s| s.1).sum::<u64>() as f64 / samples[i].len() as f64
    });
    println!(
        "\nchurn, {config} (new runtime, first request, drop): {rounds} interleaved samples \
         each\n  rtlocal {:.1?}, fresh raw client {:.1?}: ratio {:.3}; connections per churn \
         {:.2} / {:.2}",
        med[0],
        med[1],
        med[0].as_secs_f64() / med[1].as_secs_f64(),
        conns[0],
        conns[1]
    );
    (config.to_owned(), med, conns)
}

fn summary(rows: &[Row], churn: &[(String, [Duration; 2], [f64; 2])]) {
    println!(
        "\nsummary: task runner ({WORKERS} workers x {GENERATIONS} runtimes x R requests), \
         medians per workload; ratios are rtlocal / side (lower is better)"
    );
    println!(
        "{:<20} {:>3} {:>11} {:>11} {:>11} {:>9} {:>9} {:>20}",
        "configuration", "R", "rtlocal", "(a)", "(d)", "vs (a)", "vs (d)", "conns rtlocal/(a)/(d)"
    );
    for r in rows {
        let ratio = |i: usize| r.medians[0].as_secs_f64() / r.medians[i].as_secs_f64();
        println!(
            "{:<20} {:>3} {:>11.1?} {:>11.1?} {:>11.1?} {:>9.3} {:>9.3} {:>20}",
            r.config,
            r.per_gen,
            r.medians[0],
            r.medians[1],
            r.medians[2],
            ratio(1),
            ratio(2),
            format!("{:.1}/{:.1}/{:.1}", r.conns[0], r.conns[1], r.conns[2]),
        );
    }
    println!("\nsummary: churn (new runtime, first request, drop), medians");
    println!(
        "{:<20} {:>11} {:>11} {:>9} {:>16}",
        "configuration", "rtlocal", "fresh raw", "ratio", "conns per churn"
    );
    for (config, med, conns) in churn {
        println!(
            "{config:<20} {:>11.1?} {:>11.1?} {:>9.3} {:>16}",
            med[0],
            med[1],
            med[0].as_secs_f64() / med[1].as_secs_f64(),
            format!("{:.2}/{:.2}", conns[0], conns[1]),
        );
    }
}
