//! [`ConnTracker`]: every connection task and socket of one client, so a close can shut
//! the connections down on the wire even when the runtime that owns their tasks is idle.
//!
//! Soundness of shutting down by fd: a socket's entry is removed under the tracker lock
//! by [`TrackedTcp`]'s `Drop`, which runs before the stream (and its fd) is dropped;
//! `shutdown` runs under the same lock, so it only ever sees open fds. TLS wraps the
//! tracked TCP stream, so the same holds for HTTPS connections.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::error::{BoxError, ClientClosed};
use crate::http::connect::limits::Permits;
use crate::idmap::IdMap;
use crate::stats::Counters;

#[cfg(unix)]
type RawSocket = std::os::fd::RawFd;
#[cfg(not(unix))]
type RawSocket = ();

/// Every connection task and socket of one client.
pub(crate) struct ConnTracker {
    state: parking_lot::Mutex<TrackerState>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct TrackerState {
    closed: bool,
    next_id: u64,
    /// `None` between registration and `spawn` returning.
    tasks: IdMap<u64, Option<AbortHandle>>,
    sockets: IdMap<u64, RawSocket>,
}

impl ConnTracker {
    pub(crate) fn new(counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(ConnTracker {
            state: parking_lot::Mutex::new(TrackerState::default()),
            counters,
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

    pub(super) fn register(
        self: &Arc<Self>,
        stream: TcpStream,
        permits: Permits,
    ) -> Result<TrackedTcp, BoxError> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Box::new(ClientClosed));
        }
        st.next_id += 1;
        let id = st.next_id;
        #[cfg(unix)]
        let raw = std::os::fd::AsRawFd::as_raw_fd(&stream);
        #[cfg(not(unix))]
        let raw = ();
        st.sockets.insert(id, raw);
        drop(st);
        Counters::inc(&self.counters.connections_opened);
        Counters::inc(&self.counters.connections_open);
        Ok(TrackedTcp {
            stream,
            id,
            tracker: Arc::clone(self),
            _permits: permits,
        })
    }

    /// Refuses new connections and tasks, shuts every socket down on the wire and
    /// aborts every connection task. Idempotent.
    pub(crate) fn close(&self) {
        let tasks = {
            let mut st = self.state.lock();
            st.closed = true;
            for (_, raw) in st.sockets.drain() {
                shutdown_socket(raw);
                Counters::dec(&self.counters.connections_open);
            }
            std::mem::take(&mut st.tasks)
        };
        // Outside the lock: a task's guard takes it when the task is dropped.
        for abort in tasks.into_values().flatten() {
            abort.abort();
        }
    }

    /// Refuses new connections and tasks, and nothing else: for a runtime teardown, where
    /// the runtime itself is dropping every connection task (closing their sockets).
    pub(crate) fn refuse_new(&self) {
        self.state.lock().closed = true;
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
fn shutdown_socket(raw: RawSocket) {
    // SAFETY: `raw` was taken from the tracker's map under its lock, and the lock is still
    // held. A socket's entry is removed (under this lock) by `TrackedTcp::drop` before the
    // stream that owns the fd is dropped, so the fd is open and is that socket.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    // ENOTCONN when the peer is already gone: nothing left to shut down.
    let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
}

#[cfg(not(unix))]
fn shutdown_socket(_: RawSocket) {}

struct TaskGuard {
    tracker: Arc<ConnTracker>,
    id: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.tracker.state.lock().tasks.remove(&self.id);
    }
}

/// A tracked TCP stream holding its connection-limit permits.
pub(crate) struct TrackedTcp {
    stream: TcpStream,
    id: u64,
    tracker: Arc<ConnTracker>,
    _permits: Permits,
}

impl Drop for TrackedTcp {
    fn drop(&mut self) {
        // Before `stream` (and its fd) is dropped: see the module docs. A socket that
        // `close` already shut down was uncounted there.
        if self.tracker.state.lock().sockets.remove(&self.id).is_some() {
            Counters::dec(&self.tracker.counters.connections_open);
        }
    }
}

impl AsyncRead for TrackedTcp {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedTcp {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
