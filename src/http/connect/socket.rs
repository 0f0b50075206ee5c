//! [`TrackedTcp`]: a TCP stream the tracker can shut down from outside, holding its
//! connection-limit permits.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http::connect::executor;
use crate::http::connect::limits::Permits;
use crate::http::connect::tracker::ConnTracker;
use crate::manager::Counters;

/// A tracked TCP stream holding its connection-limit permits.
pub(crate) struct TrackedTcp {
    pub(super) stream: TcpStream,
    pub(super) id: u64,
    pub(super) tracker: Arc<ConnTracker>,
    /// Shared with the tracker's entry for this socket.
    pub(super) state: Arc<SocketState>,
    pub(super) _permits: Permits,
}

/// What the stream and the tracker know of a socket: bits, each set once.
///
/// `REAPED`: the idle reaper shut this socket down: reads end at once, before tokio has
/// seen the shutdown, so hyper closes the connection instead of writing a new request
/// into it (and hyper-util retries that request on a fresh connection).
///
/// `HYPER`, then `HANDED_OVER`: hyper's connection task polls a socket once the
/// connection is up; a socket polled outside every connection task after that was
/// handed over to the application by an upgrade (`101 Switching Protocols`, `CONNECT`).
/// It is no pooled connection: the idle reaper leaves it alone (a close still shuts it
/// down). A TLS handshake may poll a socket from the request's task before `HYPER`.
/// Kept in the one shared word, so that noting this costs the stream no extra field.
#[derive(Default)]
pub(super) struct SocketState(AtomicU8);

const REAPED: u8 = 1;
const HYPER: u8 = 2;
const HANDED_OVER: u8 = 4;

impl SocketState {
    pub(super) fn mark_reaped(&self) {
        // Release: pairs with the stream's acquire load.
        self.0.fetch_or(REAPED, Ordering::Release);
    }

    pub(super) fn handed_over(&self) -> bool {
        // Relaxed: set by the stream's own poll; a handover racing the reaper's decision
        // is not ordered by anything (the application had left it idle past the timeout).
        self.0.load(Ordering::Relaxed) & HANDED_OVER != 0
    }
}

impl TrackedTcp {
    /// Notes who polls the socket (see [`SocketState`]); returns whether the reaper shut
    /// it down.
    #[inline]
    fn note_poll(&self) -> bool {
        // Acquire: pairs with the reaper's release.
        let bits = self.state.0.load(Ordering::Acquire);
        if bits & (REAPED | HANDED_OVER) == 0 {
            match (bits & HYPER != 0, executor::in_background()) {
                // Relaxed: only this stream sets these bits.
                (false, true) => {
                    self.state.0.fetch_or(HYPER, Ordering::Relaxed);
                }
                (true, false) => self.handed_over(),
                _ => {}
            }
        }
        bits & REAPED != 0
    }

    #[cold]
    fn handed_over(&self) {
        self.state.0.fetch_or(HANDED_OVER, Ordering::Relaxed);
        tracing::debug!("connection handed over by an upgrade: not reaped when idle");
    }
}

impl TrackedTcp {
    /// See [`ConnTracker::arm_attempt`]; `None` arms nothing.
    pub(super) fn arm_attempt(&self, at: Option<std::time::Instant>) {
        if let Some(at) = at {
            self.tracker.arm_attempt(self.id, at);
        }
    }

    /// See [`ConnTracker::disarm_attempt`].
    pub(super) fn disarm_attempt(&self) {
        self.tracker.disarm_attempt(self.id);
    }
}

impl Drop for TrackedTcp {
    fn drop(&mut self) {
        // Before `stream` (and its fd) is dropped: see the module docs. A socket that
        // `close` already shut down was uncounted there.
        if self.tracker.forget_socket(self.id) {
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
        if self.note_poll() {
            return Poll::Ready(Ok(())); // end of stream
        }
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
        if self.note_poll() {
            return Poll::Ready(Err(reaped()));
        }
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
        if self.note_poll() {
            return Poll::Ready(Err(reaped()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cold]
fn reaped() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection was closed after idling past pool_idle_timeout",
    )
}
