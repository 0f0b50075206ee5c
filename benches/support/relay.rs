//! A TCP relay on 127.0.0.1 that adds a one-way delay in front of a server: the latency
//! of a real network, on loopback.
//!
//! Every chunk read from one side is delivered to the other `d` after it arrived, in both
//! directions. Chunks queue with their due times, so a chunk waiting for its time never
//! delays the reading (and timestamping) of the next one, and order is kept. A new
//! connection's first chunk towards the server is delivered no earlier than `3 d` after
//! the relay accepted it: the SYN, SYN-ACK, ACK exchange a loopback connect does not pay
//! (the client's `connect` returns at once and it sends; a real client would send after
//! `2 d`, and its bytes arrive `d` later). So the first request on a new connection costs
//! `4 d` (two round trips) against `2 d` on a pooled one, and a TLS handshake pays its
//! own round trips through the ordinary per-chunk delay. At `d = 0` it is a plain relay.
//!
//! The relay runs on its own thread (a `current_thread` runtime), usable from any
//! runtime or none, and stops when dropped (every relayed connection is then closed). It
//! counts the connections it accepted; the server's own count stays the reference for
//! "connections opened".
//!
//! Timing: tokio's timer has millisecond granularity (a `sleep_until` 0.5 ms away ends
//! on the next millisecond tick after it, 0.5 to 1.5 ms later), too coarse for half a
//! millisecond. Delays are kept by a timer thread of the relay's own instead (a condvar
//! wait with the thread's timer slack set to 1 ns), which wakes the waiting chunk queue;
//! a delay overshoots by the wake-up latency, a few tens of microseconds on a quiet
//! machine. [`Relay::calibrate`] measures the round trip actually obtained.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

/// The largest chunk read at once (a TLS record is at most 16 KiB plus its overhead).
const CHUNK: usize = 32 * 1024;

pub struct Relay {
    addr: SocketAddr,
    one_way: Duration,
    accepted: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    timer: Arc<Timer>,
    timer_thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// A relay in front of `upstream` delaying every chunk by `one_way` (half the RTT).
    pub fn start(upstream: SocketAddr, one_way: Duration) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay bind");
        listener.set_nonblocking(true).expect("relay nonblocking");
        let addr = listener.local_addr().expect("relay addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let timer = Arc::new(Timer::default());
        let timer_thread = {
            let timer = Arc::clone(&timer);
            std::thread::Builder::new()
                .name("relay-timer".into())
                .spawn(move || timer.run())
                .expect("relay timer thread")
        };
        let (stop, mut stopped) = oneshot::channel::<()>();
        let thread = {
            let (accepted, timer) = (Arc::clone(&accepted), Arc::clone(&timer));
            std::thread::Builder::new()
                .name("relay".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("relay runtime");
                    rt.block_on(async move {
                        let listener =
                            tokio::net::TcpListener::from_std(listener).expect("relay listener");
                        loop {
                            tokio::select! {
                                _ = &mut stopped => break,
                                r = listener.accept() => {
                                    let Ok((inbound, _)) = r else { continue };
                                    let at = Instant::now();
                                    accepted.fetch_add(1, Ordering::Relaxed);
                                    let timer = Arc::clone(&timer);
                                    tokio::spawn(relay_connection(
                                        inbound, upstream, one_way, at, timer,
                                    ));
                                }
                            }
                        }
                    });
                    // Dropping the runtime drops every connection's tasks: sockets close.
                    drop(rt);
                })
                .expect("relay thread")
        };
        Relay {
            addr,
            one_way,
            accepted,
            stop: Some(stop),
            thread: Some(thread),
            timer,
            timer_thread: Some(timer_thread),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn one_way(&self) -> Duration {
        self.one_way
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The round trip actually obtained: median over `n` ping-pongs of one byte through
    /// the relay to a byte-echo server of its own (each way delayed as configured), on an
    /// established connection.
    pub fn calibrate(one_way: Duration, n: usize) -> Duration {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").expect("echo bind");
        let echo_addr = echo.local_addr().expect("echo addr");
        let echo_thread = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = echo.accept().expect("echo accept");
            s.set_nodelay(true).expect("nodelay");
            let mut b = [0u8; 1];
            while s.read(&mut b).map(|n| n == 1).unwrap_or(false) {
                if s.write_all(&b).is_err() {
                    break;
                }
            }
        });
        let relay = Relay::start(echo_addr, one_way);
        let mut times = Vec::with_capacity(n);
        {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(relay.addr()).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            let mut b = [7u8; 1];
            // The first exchange pays the simulated handshake.
            s.write_all(&b).expect("write");
            s.read_exact(&mut b).expect("read");
            for _ in 0..n {
                let t = Instant::now();
                s.write_all(&b).expect("write");
                s.read_exact(&mut b).expect("read");
                times.push(t.elapsed());
            }
        }
        drop(relay);
        let _ = echo_thread.join();
        times.sort();
        times[times.len() / 2]
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.timer.stop();
        if let Some(t) = self.timer_thread.take() {
            let _ = t.join();
        }
    }
}

async fn relay_connection(
    inbound: TcpStream,
    upstream: SocketAddr,
    one_way: Duration,
    accepted_at: Instant,
    timer: Arc<Timer>,
) {
    let _ = inbound.set_nodelay(true);
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (client_read, client_write) = inbound.into_split();
    let (server_read, server_write) = outbound.into_split();
    // Towards the server: the first chunk waits out the simulated handshake.
    let up = pipe(
        client_read,
        server_write,
        one_way,
        Some(accepted_at + 3 * one_way),
        Arc::clone(&timer),
    );
    let down = pipe(server_read, client_write, one_way, None, timer);
    tokio::join!(up, down);
}

/// One direction: a reader stamping every chunk with its due time into a queue, and a
/// writer delivering them in order, each at its time. EOF (or a read error) is passed on
/// as a write shutdown, delayed like data.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    one_way: Duration,
    mut first_due: Option<Instant>,
    timer: Arc<Timer>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Bytes>)>();
    let reader = async move {
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let read = from.read_buf(&mut buf).await;
            let mut due = Instant::now() + one_way;
            if let Some(first) = first_due.take() {
                due = due.max(first);
            }
            let chunk = match read {
                Ok(n) if n > 0 => Some(buf.freeze()),
                _ => None,
            };
            let end = chunk.is_none();
            if tx.send((due, chunk)).is_err() || end {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            timer.sleep_until(due).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    break;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

/// A timer thread with sub-millisecond precision for the relay's chunk queues.
#[derive(Default)]
struct Timer {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerState {
    /// Earliest first: (due, sequence number, waker).
    queue: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    stop: bool,
}

struct Entry {
    due: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl Timer {
    fn sleep_until(&self, due: Instant) -> Sleep<'_> {
        Sleep {
            timer: self,
            due,
            registered: false,
        }
    }

    fn register(&self, due: Instant, waker: Waker) {
        let mut st = self.state.lock().expect("timer lock");
        let earliest = st.queue.peek().is_none_or(|Reverse(e)| due < e.due);
        st.seq += 1;
        let seq = st.seq;
        st.queue.push(Reverse(Entry { due, seq, waker }));
        drop(st);
        if earliest {
            self.changed.notify_one();
        }
    }

    fn stop(&self) {
        self.state.lock().expect("timer lock").stop = true;
        self.changed.notify_one();
    }

    fn run(&self) {
        // Linux rounds a sleeping thread's timeout up by its timer slack (50 µs by
        // default); 1 ns makes the wake-up as precise as the kernel can.
        // SAFETY: prctl with PR_SET_TIMERSLACK takes one integer argument.
        let slack: libc::c_ulong = 1;
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, slack, 0, 0, 0);
        }
        let mut due_now = Vec::new();
        let mut st = self.state.lock().expect("timer lock");
        loop {
            if st.stop {
                return;
            }
            let now = Instant::now();
            while st.queue.peek().is_some_and(|Reverse(e)| e.due <= now) {
                let Reverse(e) = st.queue.pop().expect("peeked");
                due_now.push(e.waker);
            }
            if !due_now.is_empty() {
                drop(st);
                for w in due_now.drain(..) {
                    w.wake();
                }
                st = self.state.lock().expect("timer lock");
                continue;
            }
            st = match st.queue.peek() {
                None => self.changed.wait(st).expect("timer wait"),
                Some(Reverse(e)) => {
                    let wait = e.due - now;
                    self.changed.wait_timeout(st, wait).expect("timer wait").0
                }
            };
        }
    }
}

struct Sleep<'a> {
    timer: &'a Timer,
    due: Instant,
    registered: bool,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.due {
            return Poll::Ready(());
        }
        if !self.registered {
            self.registered = true;
            self.timer.register(self.due, cx.waker().clone());
        }
        Poll::Pending
    }
}
