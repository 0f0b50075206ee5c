//! tonic's health service on 127.0.0.1, in process, and health checks against it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::bind_loopback;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bounds every health check: a hang shows as an error saying so.
pub const BOUND: Duration = Duration::from_secs(3);

/// tonic's health service on 127.0.0.1 (a listener on port 0, kept), on a runtime and
/// thread of its own (always driven, whatever the clients' runtimes do), counting the
/// connections it accepts and has open. Stopped when dropped; the connections still open
/// are dropped with its runtime.
#[derive(Debug)]
pub struct Grpc {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Grpc {
    /// Starts the server.
    ///
    /// # Panics
    /// Its thread, runtime or listener could not be made.
    pub fn start() -> Grpc {
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("grpc-server")
            .enable_all()
            .build()
            .expect("the gRPC server's runtime");
        let listener = bind_loopback(&rt);
        let addr = listener.local_addr().expect("the listener's address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (a, o) = (Arc::clone(&accepted), Arc::clone(&open));
        let thread = std::thread::Builder::new()
            .name("grpc-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let incoming = TcpListenerStream::new(listener).map(move |accepted| {
                        accepted.map(|io| {
                            a.fetch_add(1, Ordering::SeqCst);
                            o.fetch_add(1, Ordering::SeqCst);
                            Counted {
                                io,
                                open: Arc::clone(&o),
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
            .expect("the gRPC server's thread");
        Grpc {
            addr,
            accepted,
            open,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
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

    /// Waits (up to `within`, a hang guard) for the server to have `n` connections open;
    /// returns how many it has then.
    pub fn wait_open(&self, n: usize, within: Duration) -> usize {
        crate::settle(within, n, || self.open())
    }
}

impl Drop for Grpc {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A health check through `channel`, bounded by [`BOUND`]: `Ok` when the server says
/// SERVING, otherwise what happened.
///
/// # Errors
/// The call failed or hung, or the server is not serving.
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
/// # Errors
/// The call's `Status`.
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
