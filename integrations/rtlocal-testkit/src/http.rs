//! A hyper HTTP/1.1 server on 127.0.0.1, in process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::bind_loopback;

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
}

/// A hyper HTTP/1.1 server on 127.0.0.1 (a listener on port 0, kept), on a runtime of
/// its own (always driven, whatever the clients' runtimes do), counting the connections
/// it accepts and has open. Routes: `/` → "hello"; `/slow/MS` → "slow" after MS ms.
/// Stopped when dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    counts: Arc<Counts>,
    rt: Option<tokio::runtime::Runtime>,
}

impl HttpServer {
    /// Starts the server.
    ///
    /// # Panics
    /// Its runtime or listener could not be made.
    pub fn start() -> HttpServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("http-server")
            .enable_all()
            .build()
            .expect("the HTTP server's runtime");
        let listener = bind_loopback(&rt);
        let addr = listener.local_addr().expect("the listener's address");
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                c.open.fetch_add(1, Ordering::SeqCst);
                let conn = Arc::clone(&c);
                tokio::spawn(async move {
                    let req_counts = Arc::clone(&conn);
                    let svc = service_fn(move |req| route(req, Arc::clone(&req_counts)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    conn.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        HttpServer {
            addr,
            counts,
            rt: Some(rt),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections open now, as the server sees them.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since the server started.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Requests received since the server started (counted when they arrive, before the
    /// answer).
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn route(
    req: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(ms) = req.uri().path().strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"slow"))));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}
