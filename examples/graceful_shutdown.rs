//! A small service that calls an upstream through rtlocal and shuts down gracefully.
//!
//! On Ctrl-C or SIGTERM it stops accepting, lets in-flight requests finish (up to 5 s),
//! then calls `shutdown(5s)` on the default manager and prints the report.
//!
//! ```text
//! cargo run --example graceful_shutdown            # serve until Ctrl-C / SIGTERM
//! cargo run --example graceful_shutdown -- --demo  # send itself load, then shut down
//! ```
//! Options: `--port N` (default 0: any free port), `--demo`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

const UPSTREAM_DELAY: Duration = Duration::from_millis(200);

/// The upstream: a server on its own runtime thread that answers after a short delay.
fn start_upstream() -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                        tokio::time::sleep(UPSTREAM_DELAY).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"upstream ok",
                        ))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

async fn handle(upstream: Arc<String>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = async {
        let client = rtlocal::client().await?;
        let resp = client.get(&upstream).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, rtlocal::Error>(body)
    };
    Ok(match reply.await {
        Ok(body) => Response::new(Full::new(body)),
        Err(e) => {
            let mut r = Response::new(Full::new(Bytes::from(format!("upstream failed: {e:#}\n"))));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    })
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--demo`: 40 requests through the service; shut down while the last 10 are in flight.
async fn demo_load(
    addr: SocketAddr,
    ok: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Result<(), rtlocal::Error>>> {
    // Its own manager, so the service's shutdown report is about the service alone.
    let m = Arc::new(rtlocal::HttpClientManager::new());
    let url = format!("http://{addr}/");
    let send = |m: Arc<rtlocal::HttpClientManager>, url: String, ok: Arc<AtomicUsize>| async move {
        let c = m.client().await?;
        let resp = c.get(&url).await?;
        let good = resp.status().is_success();
        resp.into_body().collect().await?;
        if good {
            ok.fetch_add(1, Ordering::SeqCst);
        }
        Ok::<_, rtlocal::Error>(())
    };
    let mut first = tokio::task::JoinSet::new();
    for _ in 0..30 {
        first.spawn(send(Arc::clone(&m), url.clone(), Arc::clone(&ok)));
    }
    while first.join_next().await.is_some() {}
    let last = (0..10)
        .map(|_| tokio::spawn(send(Arc::clone(&m), url.clone(), Arc::clone(&ok))))
        .collect();
    tokio::time::sleep(UPSTREAM_DELAY / 4).await; // the last 10 are now in flight
    last
}

#[tokio::main]
async fn main() {
    let mut port = 0u16;
    let mut demo = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--demo" => demo = true,
            "--port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = p,
                None => {
                    eprintln!("graceful_shutdown: --port needs a number from 0 to 65535");
                    std::process::exit(2);
                }
            },
            other => {
                eprintln!(
                    "graceful_shutdown: unknown argument {other:?} (options: --port N, --demo)"
                );
                std::process::exit(2);
            }
        }
    }
    let upstream = match start_upstream() {
        Ok(a) => Arc::new(format!("http://{a}/")),
        Err(e) => {
            eprintln!("graceful_shutdown: could not start the upstream: {e}");
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("graceful_shutdown: could not listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    println!("listening on http://{addr}/ (upstream {upstream}); Ctrl-C or SIGTERM to stop");

    let demo_ok = Arc::new(AtomicUsize::new(0));
    let mut stop = pin!(async {
        if demo {
            let last = demo_load(addr, Arc::clone(&demo_ok)).await;
            println!("demo: load sent, shutting down with 10 requests in flight");
            last
        } else {
            stop_signal().await;
            Vec::new()
        }
    });
    let graceful = GracefulShutdown::new();
    let demo_in_flight = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let upstream = Arc::clone(&upstream);
                let svc = service_fn(move |_req| handle(Arc::clone(&upstream)));
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            last = &mut stop => break last,
        }
    };
    drop(listener);
    println!("stopped accepting; draining in-flight requests (up to 5s)");
    tokio::select! {
        () = graceful.shutdown() => println!("all connections drained"),
        () = tokio::time::sleep(Duration::from_secs(5)) => println!("drain deadline passed"),
    }
    let report = rtlocal::default_manager()
        .shutdown(Duration::from_secs(5))
        .await;
    println!("rtlocal shutdown: {report}");
    let s = rtlocal::default_manager().stats();
    println!(
        "upstream calls: {} started, {} failed; clients created {}, live {}; connections open {}",
        s.requests_started,
        s.requests_failed,
        s.clients_created,
        s.clients_live,
        s.connections_open
    );
    if demo {
        for h in demo_in_flight {
            if let Ok(Err(e)) = h.await {
                println!("demo: a request failed: {e:#}");
            }
        }
        let ok = demo_ok.load(Ordering::SeqCst);
        println!("demo: {ok} of 40 requests answered");
        if ok != 40 || s.clients_live != 0 || s.connections_open != 0 {
            std::process::exit(1);
        }
    }
}
