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
///
/// With the `metrics` feature, `ACTIVE` and `CLOSED` drive the connection's series:
/// active from the first byte of a request written until its response body ends (or an
/// upgrade hands the connection over), idle otherwise; `CLOSED` once the socket left the
/// tracker, after which nothing moves its gauges. Whoever flips a bit moves the gauge,
/// so each move happens once.
#[derive(Default)]
pub(crate) struct SocketState {
    bits: AtomicU8,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::http::metrics::ConnMetrics>,
}

const REAPED: u8 = 1;
const HYPER: u8 = 2;
const HANDED_OVER: u8 = 4;
#[cfg(feature = "metrics")]
const ACTIVE: u8 = 8;
#[cfg(feature = "metrics")]
const CLOSED: u8 = 16;

impl SocketState {
    #[cfg(feature = "metrics")]
    pub(super) fn new(metrics: Option<crate::http::metrics::ConnMetrics>) -> Self {
        SocketState {
            bits: AtomicU8::new(0),
            metrics,
        }
    }

    pub(super) fn mark_reaped(&self) {
        // Release: pairs with the stream's acquire load.
        self.bits.fetch_or(REAPED, Ordering::Release);
    }

    pub(super) fn handed_over(&self) -> bool {
        // Relaxed: set by the stream's own poll; a handover racing the reaper's decision
        // is not ordered by anything (the application had left it idle past the timeout).
        self.bits.load(Ordering::Relaxed) & HANDED_OVER != 0
    }

    /// The connection is serving a request (`true`) or no longer is.
    #[cfg(feature = "metrics")]
    pub(crate) fn set_active(&self, active: bool) {
        // Relaxed: the bits order nothing but the gauge moves, which only need each
        // flip to be made by one caller.
        let mut cur = self.bits.load(Ordering::Relaxed);
        loop {
            if cur & CLOSED != 0 || (cur & ACTIVE != 0) == active {
                return;
            }
            let new = if active { cur | ACTIVE } else { cur & !ACTIVE };
            match self
                .bits
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if let Some(m) = &self.metrics {
            m.moved(active);
        }
    }

    /// The socket left the tracker (closed, shut down, reaped): its series end here.
    pub(super) fn closed(&self) {
        #[cfg(feature = "metrics")]
        {
            let prev = self.bits.fetch_or(CLOSED, Ordering::Relaxed);
            if prev & CLOSED == 0 {
                if let Some(m) = &self.metrics {
                    m.closed(prev & ACTIVE != 0);
                }
            }
        }
    }
}

/// The response extension a connection adds (feature `metrics`): its [`SocketState`], so
/// the response's exchange can mark the connection idle when the body ends.
#[cfg(feature = "metrics")]
#[derive(Clone)]
pub(crate) struct ConnState(pub(crate) Arc<SocketState>);

impl TrackedTcp {
    /// Notes who polls the socket (see [`SocketState`]); returns whether the reaper shut
    /// it down.
    #[inline]
    fn note_poll(&self) -> bool {
        // Acquire: pairs with the reaper's release.
        let bits = self.state.bits.load(Ordering::Acquire);
        if bits & (REAPED | HANDED_OVER) == 0 {
            match (bits & HYPER != 0, executor::in_background()) {
                // Relaxed: only this stream sets these bits.
                (false, true) => {
                    self.state.bits.fetch_or(HYPER, Ordering::Relaxed);
                }
                (true, false) => self.handed_over(),
                _ => {}
            }
        }
        bits & REAPED != 0
    }

    #[cold]
    fn handed_over(&self) {
        self.state.bits.fetch_or(HANDED_OVER, Ordering::Relaxed);
        // The application holds it now: in use, whatever it does with it.
        #[cfg(feature = "metrics")]
        self.state.set_active(true);
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

    #[cfg(feature = "metrics")]
    pub(super) fn state(&self) -> Arc<SocketState> {
        Arc::clone(&self.state)
    }
}

impl Drop for TrackedTcp {
    fn drop(&mut self) {
        // Before `stream` (and its fd) is dropped: see the module docs. A socket that
        // `close` already shut down was uncounted there.
        self.tracker.forget_socket(self.id);
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
        #[cfg(feature = "metrics")]
        if !buf.is_empty() {
            self.state.set_active(true);
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
        #[cfg(feature = "metrics")]
        if bufs.iter().any(|b| !b.is_empty()) {
            self.state.set_active(true);
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
