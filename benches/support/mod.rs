//! What the request benches share: a loopback server and the two clients, configured
//! alike so that the comparison measures the manager and nothing else.
#![allow(dead_code)]

pub mod relay;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rtlocal::HttpClientManager;

pub type Raw = HyperClient<HttpConnector, Empty<Bytes>>;

/// The round count for a hand-rolled (`harness = false`) bench. `cargo bench` passes
/// `--bench`, and a number on the command line is the round count; without `--bench`
/// (`cargo test --all-targets`) this is a quick smoke run whose figures mean nothing.
pub fn rounds(bench: &str, measuring: usize, smoke: usize) -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let is_measuring = args.iter().any(|a| a == "--bench");
    let default = if is_measuring { measuring } else { smoke };
    let rounds = args.iter().find_map(|a| a.parse().ok()).unwrap_or(default);
    if !is_measuring {
        println!(
            "smoke run ({rounds} rounds, not a measurement): use `cargo bench --bench {bench}`"
        );
    }
    rounds
}

/// A keep-alive server on its own runtime (one worker, so the client side gets the
/// other core), answering every request with a small body.
pub fn loopback_server() -> (SocketAddr, tokio::runtime::Runtime) {
    let (addr, rt, _accepted) = counting_server();
    (addr, rt)
}

/// [`loopback_server`] that also counts the connections it accepted: the connections a
/// client opened, for clients that do not count their own (raw hyper-util).
pub fn counting_server() -> (SocketAddr, tokio::runtime::Runtime, Arc<AtomicU64>) {
    serve(None)
}

/// [`counting_server`] speaking HTTPS (HTTP/1.1 only) with the certificate of
/// [`tls`]; a connection counts when accepted, before its handshake.
pub fn counting_tls_server() -> (SocketAddr, tokio::runtime::Runtime, Arc<AtomicU64>) {
    serve(Some(tls::acceptor()))
}

fn serve(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, tokio::runtime::Runtime, Arc<AtomicU64>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello, world",
                    ))))
                });
                let conn = http1::Builder::new();
                let _ = match tls {
                    None => conn.serve_connection(TokioIo::new(stream), svc).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => conn.serve_connection(TokioIo::new(stream), svc).await,
                        Err(_) => return,
                    },
                };
            });
        }
    });
    (addr, rt, accepted)
}

/// hyper-util configured as rtlocal configures it.
pub fn raw_client() -> Raw {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    HyperClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(http)
}

/// A manager with the raw client's settings: no default User-Agent and no total request
/// timeout (raw hyper-util has neither).
pub fn manager() -> HttpClientManager {
    HttpClientManager::builder()
        .user_agent(None)
        .request_timeout(None)
        .build()
        .expect("config")
}

/// A GET for a pre-parsed URI: both sides are handed the same parsed `Uri`.
pub fn get(uri: &http::Uri) -> http::Request<rtlocal::Body> {
    http::Request::get(uri.clone())
        .body(rtlocal::Body::empty())
        .expect("request")
}

pub fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Quantile `f` (0..=1) of sorted samples.
pub fn quantile<T: Copy>(sorted: &[T], f: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * f).round() as usize]
}

/// Runs `sample(side)` for every side once per round, rotating which side goes first, so
/// every side sees the same machine noise. Returns each side's samples, in side order.
pub fn rotate<T>(rounds: usize, sides: usize, mut sample: impl FnMut(usize) -> T) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..sides).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        for k in 0..sides {
            let side = (round + k) % sides;
            out[side].push(sample(side));
        }
    }
    out
}

/// Hang guard: ends the process with an error if the bench is still running after
/// `limit` (a generous bound, far above a normal run; never a measurement).
pub fn watchdog(bench: &'static str, limit: Duration) {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!("{bench}: still running after {limit:?}; a request or close hung");
            std::process::exit(2);
        })
        .expect("watchdog thread");
}
