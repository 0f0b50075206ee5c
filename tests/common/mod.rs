//! A real hyper server on 127.0.0.1 that counts accepted and open connections, so tests
//! observe "closed" from the other end of the socket.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub mod trace;

/// Generous upper bound for anything a test waits on: a hang guard, not a timing.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

#[derive(Default)]
pub struct Counts {
    pub accepted: AtomicUsize,
    pub open: AtomicUsize,
    /// The most connections open at once.
    pub max_open: AtomicUsize,
    pub requests: AtomicUsize,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    rt: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// Starts a server on its own runtime (independent of the clients' runtimes).
    ///
    /// Routes: `/` → "hello"; `/slow/MS` → "slow" after MS milliseconds;
    /// `/echo` → the request body; `/header/NAME` → that request header's value.
    pub fn start() -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-server")
            .enable_all()
            .build()
            .expect("server runtime");
        let counts = Arc::new(Counts::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let c = Arc::clone(&counts);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let now_open = c.open.fetch_add(1, Ordering::SeqCst) + 1;
                c.max_open.fetch_max(now_open, Ordering::SeqCst);
                let c2 = Arc::clone(&c);
                tokio::spawn(async move {
                    let c3 = Arc::clone(&c2);
                    let svc = service_fn(move |req| handle(req, Arc::clone(&c3)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    c2.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestServer {
            addr,
            counts,
            rt: Some(rt),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Requests the server has seen.
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Waits until the server has seen at least `n` requests (or the hang guard passes)
    /// and returns how many it has seen then.
    pub fn wait_requests(&self, n: usize) -> usize {
        let deadline = Instant::now() + HANG_GUARD;
        while self.requests() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.requests()
    }

    /// [`wait_requests`](Self::wait_requests) for async code: sleeps on the caller's
    /// runtime rather than blocking it.
    pub async fn requests_reached(&self, n: usize) -> usize {
        let deadline = Instant::now() + HANG_GUARD;
        while self.requests() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.requests()
    }

    /// Waits until the server sees `n` open connections (or the hang guard passes) and
    /// returns what it sees then.
    pub fn wait_open(&self, n: usize) -> usize {
        let deadline = Instant::now() + HANG_GUARD;
        while self.open() != n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.open()
    }
}

/// Polls `probe` until it returns `want` (or the hang guard passes) and returns its last
/// value: for state that settles in the background, such as a close spawned at thread exit.
pub fn settle<T: PartialEq>(want: T, mut probe: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let now = probe();
        if now == want || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    c: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    c.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"slow"))));
    }
    if let Some(name) = path.strip_prefix("/header/") {
        let value = req
            .headers()
            .get(name)
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
            .unwrap_or_default();
        return Ok(Response::new(Full::new(value)));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"status")));
        *resp.status_mut() = code.parse().unwrap_or(http::StatusCode::IM_A_TEAPOT);
        return Ok(resp);
    }
    if path == "/echo" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Response::new(Full::new(body)));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

/// Reads a response body whole.
pub async fn text(resp: http::Response<rtlocal::ResponseBody>) -> String {
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A test server's own runtime: one worker thread, every driver, driven whatever the
/// clients' runtimes do.
pub fn server_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a server runtime")
}

/// A listener on `ip`, on a port the OS picks, bound on `rt`, and its address.
pub fn bind_on(
    rt: &tokio::runtime::Runtime,
    ip: &str,
) -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind((ip, 0)))
        .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Reads a request head, up to its blank line; `None` if the peer ends it first.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

pub fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs `fut` on a fresh current-thread runtime, failing the test if it exceeds the hang guard.
pub fn block_on_guarded<F: std::future::Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    rt.block_on(async {
        tokio::time::timeout(HANG_GUARD, fut)
            .await
            .expect("hang guard: the operation did not finish")
    })
}

/// How a [`RawServer`] misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Misbehave {
    /// Accepts and never answers.
    NeverAnswer,
    /// Sends headers promising 100 bytes, sends 10, then stalls.
    StallBody,
    /// Sends headers and part of the body, then resets the connection (RST).
    ResetMidResponse,
}

/// A raw TCP server on 127.0.0.1 that misbehaves on purpose, counting connections.
pub struct RawServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl RawServer {
    pub fn start(mode: Misbehave) -> RawServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("raw server runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let acc = Arc::clone(&accepted);
        rt.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    // Read the request head before misbehaving.
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789";
                    match mode {
                        Misbehave::NeverAnswer => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        Misbehave::StallBody => {
                            let _ = stream.write_all(head).await;
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        Misbehave::ResetMidResponse => {
                            let _ = stream.write_all(head).await;
                            let _ = stream.flush().await;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            // Linger 0: close sends RST instead of FIN.
                            let _ =
                                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                            drop(stream);
                        }
                    }
                });
            }
        });
        RawServer {
            addr,
            accepted,
            rt: Some(rt),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A thread that runs `setup` on its own current-thread runtime and then keeps that
/// runtime alive but idle (nobody drives it) until released or dropped: the shape of a
/// task-runner worker between jobs.
pub struct IdleRuntime<T> {
    /// What `setup` returned.
    pub value: T,
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> IdleRuntime<T> {
    pub fn start<F, Fut>(setup: F) -> IdleRuntime<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let (tx_value, rx_value) = std::sync::mpsc::channel();
        let (release, rx_release) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = current_thread_rt();
            let value = block_on_guarded(&rt, setup());
            let _ = tx_value.send(value);
            let _ = rx_release.recv();
            drop(rt);
        });
        let value = rx_value
            .recv()
            .expect("idle runtime thread failed during setup");
        IdleRuntime {
            value,
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl<T> Drop for IdleRuntime<T> {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hostile use: panic accounting, named threads and runtimes, bounded waits, thread-exit
// signals, polling outside a runtime, a server that streams a body that never ends.
// ---------------------------------------------------------------------------------------

/// Hang guard for hostile-use tests: long against anything that should take
/// milliseconds, short enough that a file of failing tests stays well under a minute.
pub const HOSTILE_GUARD: Duration = Duration::from_secs(10);

/// Part of the message of every panic a test triggers on purpose (inside a factory).
pub const DELIBERATE: &str = "deliberate panic";

/// One panic seen by the process-wide hook.
#[derive(Clone, Debug)]
pub struct SeenPanic {
    /// The OS name of the panicking thread (`/proc/thread-self/comm`, at most 15 bytes).
    pub thread: String,
    pub message: String,
    pub location: String,
}

static PANICS: std::sync::Mutex<Vec<SeenPanic>> = std::sync::Mutex::new(Vec::new());
static HOOK: std::sync::Once = std::sync::Once::new();

/// The OS name of the current thread. Read from `/proc`, so it works from a panic hook
/// and from thread-local destructors, where `std::thread::current()` may not.
pub fn os_thread_name() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// Records every panic of any thread of the process (background tasks included, and
/// panics that something later catches), for the tests that started the thread.
///
/// A test gets a short tag (at most 6 bytes, unique in its binary). The watch renames the
/// test's own thread to `TAG-test`, and the threads and runtimes the test builds through
/// it are named `TAG-...`: a panic is the test's when its thread's name starts with
/// `TAG-`. The OS truncates thread names to 15 bytes, hence the short tags.
pub struct PanicWatch {
    tag: String,
}

impl PanicWatch {
    pub fn install(tag: &str) -> PanicWatch {
        assert!(
            tag.len() <= 6 && !tag.contains('-'),
            "short tag without '-'"
        );
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let seen = SeenPanic {
                    thread: os_thread_name(),
                    message,
                    location,
                };
                if let Ok(mut all) = PANICS.lock() {
                    all.push(seen);
                }
                previous(info);
            }));
        });
        let watch = PanicWatch {
            tag: tag.to_owned(),
        };
        // Name this test's thread for the OS (std's own name for it is unchanged).
        let _ = std::fs::write("/proc/thread-self/comm", watch.name("test"));
        watch
    }

    /// `TAG-what`, for a thread or runtime of this test.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{}", self.tag, what)
    }

    /// Every panic so far on this test's threads.
    pub fn panics(&self) -> Vec<SeenPanic> {
        let prefix = format!("{}-", self.tag);
        PANICS
            .lock()
            .map(|all| {
                all.iter()
                    .filter(|p| p.thread.starts_with(&prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Panics so far on this test's threads that the test did not trigger on purpose.
    pub fn unexpected(&self) -> Vec<SeenPanic> {
        self.panics()
            .into_iter()
            .filter(|p| !p.message.contains(DELIBERATE))
            .collect()
    }

    /// How many deliberate panics this test's threads have seen.
    pub fn deliberate(&self) -> usize {
        self.panics()
            .iter()
            .filter(|p| p.message.contains(DELIBERATE))
            .count()
    }

    /// Fails the test if any thread of it panicked other than on purpose — including
    /// panics inside background tasks or ones the crate caught and reported.
    pub fn assert_no_unexpected_panics(&self) {
        let unexpected = self.unexpected();
        assert!(
            unexpected.is_empty(),
            "panics on this test's threads (background tasks included): {unexpected:#?}"
        );
    }

    /// A `current_thread` runtime whose blocking threads carry this test's tag and exit
    /// 50 ms after their last task (a task-runner pool's spawn_blocking workers).
    pub fn current_rt(&self) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(self.name("blk"))
            .thread_keep_alive(Duration::from_millis(50))
            .build()
            .expect("runtime")
    }

    /// A `multi_thread` runtime whose threads carry this test's tag; its blocking
    /// threads exit 50 ms after their last task.
    pub fn multi_rt(&self, workers: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .thread_name(self.name("rt"))
            .thread_keep_alive(Duration::from_millis(50))
            .build()
            .expect("runtime")
    }

    /// A thread of this test, named `TAG-what`.
    pub fn spawn<T, F>(&self, what: &str, f: F) -> std::thread::JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        std::thread::Builder::new()
            .name(self.name(what))
            .spawn(f)
            .expect("spawn thread")
    }

    /// [`IdleRuntime::start`] on a thread of this test.
    pub fn idle_runtime<T, F, Fut>(&self, what: &str, setup: F) -> IdleRuntime<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        IdleRuntime::start_named(self.name(what), setup)
    }
}

impl<T: Send + 'static> IdleRuntime<T> {
    /// [`IdleRuntime::start`] on a thread named `name`.
    pub fn start_named<F, Fut>(name: String, setup: F) -> IdleRuntime<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let (tx_value, rx_value) = std::sync::mpsc::channel();
        let (release, rx_release) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let rt = current_thread_rt();
                let value = block_on_guarded(&rt, setup());
                let _ = tx_value.send(value);
                let _ = rx_release.recv();
                drop(rt);
            })
            .expect("spawn idle runtime thread");
        let value = rx_value
            .recv()
            .expect("idle runtime thread failed during setup");
        IdleRuntime {
            value,
            release: Some(release),
            thread: Some(thread),
        }
    }
}

/// Polls `probe` until it returns `want` or `bound` passes; returns its last value.
pub fn settle_within<T: PartialEq>(bound: Duration, want: T, mut probe: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + bound;
    loop {
        let now = probe();
        if now == want || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Drives `fut` on the calling thread with no tokio runtime at all: polls it, parks the
/// thread until woken, and gives up (`None`) once `bound` passes.
pub fn poll_outside_runtime<F: std::future::Future>(bound: Duration, fut: F) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + bound;
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// Polls `fut` once with a waker that does nothing.
pub fn poll_once<F: std::future::Future>(fut: F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::pin!(fut).poll(&mut cx)
}

struct ExitSignal(std::sync::mpsc::Sender<()>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

thread_local! {
    static EXIT_SIGNAL: std::cell::RefCell<Option<ExitSignal>> =
        const { std::cell::RefCell::new(None) };
}

/// Sends on `tx` when the current thread's thread-locals are destroyed. Call it before
/// the thread first touches rtlocal: thread-local destructors run newest first, so the
/// signal comes after rtlocal's own thread-exit work (and the channel closing without a
/// message means the same).
pub fn signal_thread_exit(tx: std::sync::mpsc::Sender<()>) {
    EXIT_SIGNAL.with(|s| *s.borrow_mut() = Some(ExitSignal(tx)));
}

/// Waits until the thread that called [`signal_thread_exit`] has run its thread-local
/// destructors (or `bound` passes): true if it did.
pub fn thread_exited(rx: &std::sync::mpsc::Receiver<()>, bound: Duration) -> bool {
    match rx.recv_timeout(bound) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => true,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
    }
}

/// A response body that streams a small chunk every 50 ms for minutes: a download the
/// client has not finished reading.
struct Trickle {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    left: usize,
}

impl hyper::body::Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + Duration::from_millis(50);
        self.sleep.as_mut().reset(next);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"chunk\n",
        )))))
    }
}

/// A server on 127.0.0.1 whose every response is a body that streams for minutes, with
/// the same connection counts as [`TestServer`]: the server sees a connection end when
/// the client shuts it (its next chunk fails to send).
pub struct StreamServer {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    rt: Option<tokio::runtime::Runtime>,
}

impl StreamServer {
    pub fn start() -> StreamServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stream-server")
            .enable_all()
            .build()
            .expect("stream server runtime");
        let counts = Arc::new(Counts::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let c = Arc::clone(&counts);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let now_open = c.open.fetch_add(1, Ordering::SeqCst) + 1;
                c.max_open.fetch_max(now_open, Ordering::SeqCst);
                let c2 = Arc::clone(&c);
                tokio::spawn(async move {
                    let c3 = Arc::clone(&c2);
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        c3.requests.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, Infallible>(Response::new(Trickle {
                                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                                left: 10_000,
                            }))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    c2.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        StreamServer {
            addr,
            counts,
            rt: Some(rt),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Panics seen in this process since [`watch_panics`] was first called, on any thread:
/// test threads, runtime workers and background tasks alike.
static PANIC_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Where each counted panic happened and what it said, for the failure message.
static PANIC_LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Installs (once per process) a panic hook that counts every panic on any thread, then
/// calls the previous hook so the message is still printed. A tokio task that panics is
/// caught by the runtime, so without the hook such a panic would go unnoticed.
pub fn watch_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANIC_COUNT.fetch_add(1, Ordering::SeqCst);
            let thread = std::thread::current();
            let entry = format!("thread {:?}: {info}", thread.name().unwrap_or("<unnamed>"));
            if let Ok(mut log) = PANIC_LOG.lock() {
                log.push(entry);
            }
            previous(info);
        }));
    });
}

/// How many panics the hook of [`watch_panics`] has counted.
pub fn panics_seen() -> usize {
    PANIC_COUNT.load(Ordering::SeqCst)
}

/// Fails the test if any thread of the process panicked since [`watch_panics`].
pub fn assert_no_panics() {
    let n = panics_seen();
    let log = PANIC_LOG.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert_eq!(n, 0, "{n} panic(s) in this test binary:\n{log}");
}

/// Like [`TestServer`], but speaks HTTP/1.1 and HTTP/2 prior knowledge (h2c) on the same
/// port, so clients with `http2_prior_knowledge()` work too. Counts as `TestServer` does.
pub struct AutoServer {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    rt: Option<tokio::runtime::Runtime>,
}

impl AutoServer {
    pub fn start() -> AutoServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("auto-server")
            .enable_all()
            .build()
            .expect("server runtime");
        let counts = Arc::new(Counts::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let c = Arc::clone(&counts);
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let now_open = c.open.fetch_add(1, Ordering::SeqCst) + 1;
                c.max_open.fetch_max(now_open, Ordering::SeqCst);
                let c2 = Arc::clone(&c);
                tokio::spawn(async move {
                    let c3 = Arc::clone(&c2);
                    let svc = service_fn(move |req| handle(req, Arc::clone(&c3)));
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    c2.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        AutoServer {
            addr,
            counts,
            rt: Some(rt),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }
}

impl Drop for AutoServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A job for a [`Worker`]: runs on its runtime.
pub type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A worker thread with its own `current_thread` runtime that runs jobs when told and
/// idles in between: the shape of a task-runner worker.
pub struct Worker {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    pub fn start() -> Worker {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            let rt = current_thread_rt();
            while let Ok(job) = rx.recv() {
                job(&rt);
            }
        });
        Worker {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    /// Runs `job` on the worker's runtime and returns its result; the runtime idles
    /// again afterwards.
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.jobs
            .as_ref()
            .expect("worker running")
            .send(Box::new(move |rt| {
                let _ = tx.send(job(rt));
            }))
            .expect("worker alive");
        rx.recv_timeout(HANG_GUARD)
            .expect("hang guard: job did not finish")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One runtime generation on this thread: a new `current_thread` runtime, `f` on it, the
/// runtime dropped (its idle connections parked for the next generation).
pub fn generation<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = current_thread_rt();
    let out = block_on_guarded(&rt, f);
    drop(rt);
    out
}

/// GETs `url` with `m`'s client for this thread and runtime; the body as text.
pub async fn get_text(m: &rtlocal::HttpClientManager, url: &str) -> Result<String, rtlocal::Error> {
    let resp = m.client().await?.get(url).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
