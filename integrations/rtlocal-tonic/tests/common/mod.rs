//! A real gRPC server for the tests: tonic's health service, in process, on a free port
//! of 127.0.0.1, on a runtime and thread of its own (always driven, whatever the tests'
//! runtimes do), counting the connections it accepts and has open.
#![allow(dead_code)] // each test binary uses its own part

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bounds every call: a hang shows as an error saying so.
pub const BOUND: Duration = Duration::from_secs(3);

pub struct Server {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One server for the whole test binary.
pub static SERVER: LazyLock<Server> = LazyLock::new(Server::start);

impl Server {
    pub fn start() -> Server {
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (a, o) = (accepted.clone(), open.clone());
        let thread = std::thread::Builder::new()
            .name("grpc-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the server's runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind 127.0.0.1:0");
                    addr_tx
                        .send(listener.local_addr().expect("local addr"))
                        .expect("the test waits for the address");
                    let incoming = TcpListenerStream::new(listener).map(move |accepted| {
                        accepted.map(|io| {
                            a.fetch_add(1, Ordering::SeqCst);
                            o.fetch_add(1, Ordering::SeqCst);
                            Counted {
                                io,
                                open: o.clone(),
                            }
                        })
                    });
                    let (_reporter, health) = tonic_health::server::health_reporter();
                    let serve = tonic::transport::Server::builder()
                        .add_service(health)
                        .serve_with_incoming(incoming);
                    tokio::select! {
                        served = serve => served.expect("the gRPC server"),
                        _ = stopped => {}
                    }
                });
                // Drops the connections still open.
                rt.shutdown_background();
            })
            .expect("the server thread");
        let addr = addr_rx.recv().expect("the server's address");
        Server {
            addr,
            accepted,
            open,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted since the server started.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now, as the server sees them.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits (up to `within`) for the server to have `n` connections open.
    pub fn wait_open(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let now = self.open();
            if now == n || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A health check through `channel`, bounded: `Ok` when the server says SERVING.
pub async fn check(channel: Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(BOUND, call).await {
        Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(resp)) => Err(format!("unexpected status {}", resp.get_ref().status)),
        Ok(Err(status)) => Err(format!("gRPC error: {status}")),
        Err(_) => Err(format!("hung: no answer within {BOUND:?}")),
    }
}

/// A health check through `channel`, bounded, giving tonic's own `Status` on failure.
///
/// # Panics
/// When the call does not end within [`BOUND`] (a hang).
pub async fn check_status(channel: Channel) -> Result<(), tonic::Status> {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(BOUND, call).await {
        Ok(result) => result.map(drop),
        Err(_) => panic!("hung: no answer within {BOUND:?}"),
    }
}

/// A `current_thread` runtime with every driver.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// An accepted connection that counts itself out when the server drops it.
struct Counted {
    io: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
