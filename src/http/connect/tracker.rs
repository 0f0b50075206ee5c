//! [`ConnTracker`]: every connection task and socket of one client, so a close can shut
//! the connections down on the wire even when the runtime that owns their tasks is idle.
//!
//! Soundness of shutting down by fd: a socket's entry is removed under the tracker lock
//! by [`TrackedTcp`]'s `Drop`, which runs before the stream (and its fd) is dropped;
//! `shutdown` runs under the same lock, so it only ever sees open fds. TLS wraps the
//! tracked TCP stream, so the same holds for HTTPS connections.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::error::{BoxError, ClientClosed};
use crate::http::connect::limits::Permits;
use crate::http::connect::socket::{SocketState, TrackedTcp};
use crate::idmap::IdMap;
use crate::manager::Counters;
use crate::manager::timer::{self, TimerKey};

#[cfg(unix)]
pub(crate) type RawSocket = std::os::fd::RawFd;
#[cfg(not(unix))]
pub(crate) type RawSocket = ();

/// Every connection task and socket of one client.
pub(crate) struct ConnTracker {
    pub(super) state: parking_lot::Mutex<TrackerState>,
    pub(super) counters: Arc<Counters>,
    /// `pool_idle_timeout`, when idle connections are pooled at all.
    pub(super) idle_timeout: Option<Duration>,
    /// Requests started and not yet finished (see `idle.rs`).
    pub(super) in_use: AtomicUsize,
    /// When the latest request finished, in nanoseconds since `epoch`.
    pub(super) last_release: AtomicU64,
    /// Set while the idle reaper holds the lock and decides (see `idle.rs`).
    pub(super) reaping: AtomicBool,
    pub(super) epoch: Instant,
}

#[derive(Default)]
pub(super) struct TrackerState {
    pub(super) closed: bool,
    next_id: u64,
    /// `None` between registration and `spawn` returning.
    tasks: IdMap<u64, Option<AbortHandle>>,
    pub(super) sockets: IdMap<u64, Socket>,
    /// The idle reaper's next check on the timer thread, if one is scheduled.
    pub(super) reaper: Option<TimerKey>,
}

/// What the tracker keeps of an open socket.
pub(super) struct Socket {
    pub(super) raw: RawSocket,
    pub(super) opened: Instant,
    /// Shared with the [`TrackedTcp`]: reaped, handed over by an upgrade.
    pub(super) state: Arc<SocketState>,
    /// The deadline of the connection attempt still running on this socket (a `CONNECT`,
    /// a TLS handshake): a job that shuts the socket down then, whether or not anything
    /// polls the attempt. See [`ConnTracker::arm_attempt`].
    pub(super) attempt: Option<TimerKey>,
}

impl ConnTracker {
    pub(crate) fn new(counters: Arc<Counters>, idle_timeout: Option<Duration>) -> Arc<Self> {
        Arc::new(ConnTracker {
            state: parking_lot::Mutex::new(TrackerState::default()),
            counters,
            idle_timeout,
            in_use: AtomicUsize::new(0),
            last_release: AtomicU64::new(0),
            reaping: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    /// Spawns `fut` on `handle`, tracked until it finishes. A closed tracker drops it.
    pub(super) fn spawn<F>(self: &Arc<Self>, handle: &Handle, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.next_id += 1;
            let id = st.next_id;
            st.tasks.insert(id, None);
            id
        };
        let guard = TaskGuard {
            tracker: Arc::clone(self),
            id,
        };
        let abort = handle
            .spawn(async move {
                let _guard = guard;
                fut.await;
            })
            .abort_handle();
        let mut st = self.state.lock();
        if st.closed {
            drop(st);
            abort.abort();
        } else if let Some(slot) = st.tasks.get_mut(&id) {
            *slot = Some(abort);
        }
    }

    /// Adds an open socket to `server` (`host`, `port`: the origin, for the connection
    /// series of the `metrics` feature).
    pub(super) fn register(
        self: &Arc<Self>,
        stream: TcpStream,
        permits: Permits,
        server: (&str, u16),
    ) -> Result<TrackedTcp, BoxError> {
        #[cfg(unix)]
        let raw = std::os::fd::AsRawFd::as_raw_fd(&stream);
        #[cfg(not(unix))]
        let raw = ();
        #[cfg(feature = "metrics")]
        let state = Arc::new(SocketState::new(self.counters.manager.get().map(
            |manager| crate::http::metrics::ConnMetrics::open(manager, server.0, server.1),
        )));
        #[cfg(not(feature = "metrics"))]
        let state = {
            let _ = server;
            Arc::new(SocketState::default())
        };
        let Some(id) = self.insert(raw, Arc::clone(&state)) else {
            // Never counted: its series (feature `metrics`) ends here.
            state.closed();
            return Err(Box::new(ClientClosed));
        };
        Counters::inc(&self.counters.connections_opened);
        Counters::inc(&self.counters.connections_open);
        Ok(TrackedTcp {
            stream: crate::http::connect::socket::Sock::Live(stream),
            id,
            tracker: Arc::clone(self),
            state,
            permits: Some(permits),
        })
    }

    /// Takes a socket out of the tracker without closing or uncounting it (it is being
    /// parked for another runtime's client). `false`: a close or the reaper had it first.
    pub(super) fn unregister(&self, id: u64) -> bool {
        let removed = self.state.lock().sockets.remove(&id);
        match removed {
            Some(socket) => {
                if let Some(key) = socket.attempt {
                    timer::cancel(&key);
                }
                true
            }
            None => false,
        }
    }

    /// Adds a parked socket that this client now serves (already counted open: it was
    /// parked, not opened). `None` when the tracker is closed.
    pub(super) fn adopt(self: &Arc<Self>, raw: RawSocket, state: Arc<SocketState>) -> Option<u64> {
        self.insert(raw, state)
    }

    /// Lists an open socket (scheduling the idle reaper if it is not): its id, or `None`
    /// when the tracker is closed.
    fn insert(self: &Arc<Self>, raw: RawSocket, state: Arc<SocketState>) -> Option<u64> {
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        st.next_id += 1;
        let id = st.next_id;
        let opened = Instant::now();
        st.sockets.insert(
            id,
            Socket {
                raw,
                opened,
                state,
                attempt: None,
            },
        );
        if let Some(timeout) = self.idle_timeout {
            if st.reaper.is_none() {
                st.reaper = self.schedule_reaper(opened + timeout);
            }
        }
        Some(id)
    }

    /// The end of a socket that was in no tracker (parked): uncounted here.
    pub(super) fn uncount_unregistered(&self, state: &SocketState) {
        Counters::dec(&self.counters.connections_open);
        state.closed();
    }

    /// Drops a socket's entry (its stream is being dropped) and uncounts it, unless a
    /// close or the reaper shut it down and uncounted it first.
    pub(super) fn forget_socket(&self, id: u64) {
        let removed = self.state.lock().sockets.remove(&id);
        if let Some(socket) = removed {
            self.uncount(socket);
        }
    }

    /// The one way a socket's entry ends, once it has left the map (under the lock, so
    /// exactly once): counted out of `connections_open`, its series ended, its attempt
    /// deadline cancelled.
    pub(super) fn uncount(&self, socket: Socket) {
        Counters::dec(&self.counters.connections_open);
        socket.state.closed();
        if let Some(key) = socket.attempt {
            timer::cancel(&key);
        }
    }

    /// Bounds the connection attempt running on socket `id` (a proxy's `CONNECT`, a TLS
    /// handshake): at `at` the socket is shut down on the wire and uncounted, unless
    /// [`disarm_attempt`](ConnTracker::disarm_attempt) came first. The job runs on the
    /// timer thread, so the deadline holds when nothing polls the attempt any more (a
    /// connect whose request was served by a pooled connection goes on in the
    /// background) and while the runtime idles.
    pub(super) fn arm_attempt(self: &Arc<Self>, id: u64, at: Instant) {
        let mut st = self.state.lock();
        let Some(socket) = st.sockets.get_mut(&id) else {
            return;
        };
        let tracker = Arc::clone(self);
        // Scheduled under the tracker's lock (lock order: tracker, then the timer queue;
        // the timer runs jobs outside its own lock): a job already due waits for this
        // lock and then finds its key stored.
        let key = timer::schedule(at, move || tracker.expire_attempt(id));
        if let Some(old) = std::mem::replace(&mut socket.attempt, key) {
            timer::cancel(&old);
        }
    }

    /// The attempt on socket `id` finished in time: its deadline no longer applies.
    pub(super) fn disarm_attempt(&self, id: u64) {
        let mut st = self.state.lock();
        if let Some(key) = st.sockets.get_mut(&id).and_then(|s| s.attempt.take()) {
            timer::cancel(&key);
        }
    }

    /// The timer job of [`arm_attempt`](ConnTracker::arm_attempt).
    fn expire_attempt(&self, id: u64) {
        let mut st = self.state.lock();
        let armed = st.sockets.get(&id).is_some_and(|s| s.attempt.is_some());
        if !armed {
            return; // disarmed, or the socket is gone, in the meantime
        }
        if let Some(socket) = st.sockets.remove(&id) {
            shutdown_socket(socket.raw);
            self.uncount(socket);
        }
        drop(st);
        tracing::debug!("a connection attempt ran past its deadline: its socket was shut down");
    }

    /// Refuses new connections and tasks, shuts every socket down on the wire and
    /// aborts every connection task. Idempotent.
    pub(crate) fn close(&self) {
        let tasks = {
            let mut st = self.state.lock();
            self.shut_everything(&mut st);
            std::mem::take(&mut st.tasks)
        };
        // Outside the lock: a task's guard takes it when the task is dropped.
        for abort in tasks.into_values().flatten() {
            abort.abort();
        }
    }

    /// For a runtime teardown: refuses new connections and tasks, and shuts down (and
    /// uncounts) every socket still registered. The runtime itself is dropping every
    /// connection task, and with them most sockets; what outlives it is a socket the
    /// application holds — an upgraded connection (`101`, `CONNECT`) — registered with a
    /// reactor that is gone, so unusable: its peer sees it end now rather than whenever
    /// the application drops it. The tasks are left to the teardown.
    pub(crate) fn runtime_gone(&self) {
        self.shut_everything(&mut self.state.lock());
    }

    /// Marks the tracker closed, shuts every registered socket down on the wire (under
    /// the lock, so each fd is still open: see [`shutdown_socket`]) and cancels the
    /// reaper.
    fn shut_everything(&self, st: &mut TrackerState) {
        st.closed = true;
        for (_, socket) in st.sockets.drain() {
            shutdown_socket(socket.raw);
            self.uncount(socket);
        }
        if let Some(key) = st.reaper.take() {
            timer::cancel(&key);
        }
    }

    pub(crate) fn open_sockets(&self) -> usize {
        self.state.lock().sockets.len()
    }
}

impl fmt::Debug for ConnTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("ConnTracker")
            .field("closed", &st.closed)
            .field("tasks", &st.tasks.len())
            .field("sockets", &st.sockets.len())
            .finish()
    }
}

#[cfg(unix)]
pub(crate) fn shutdown_socket(raw: RawSocket) {
    // SAFETY: callers take `raw` from the tracker's map under its lock and still hold it.
    // A socket's entry is removed (under this lock) by `TrackedTcp::drop` before the
    // stream that owns the fd is dropped, so the fd is open and is that socket.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    // ENOTCONN when the peer is already gone: nothing left to shut down.
    let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
}

#[cfg(not(unix))]
pub(crate) fn shutdown_socket(_: RawSocket) {}

struct TaskGuard {
    tracker: Arc<ConnTracker>,
    id: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.tracker.state.lock().tasks.remove(&self.id);
    }
}
