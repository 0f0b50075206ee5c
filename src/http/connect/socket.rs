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
    pub(super) stream: Sock,
    /// Its entry in `tracker`; `0` while parked between runtimes (then in no tracker,
    /// still counted open: see [`TrackedTcp::park`]).
    pub(super) id: u64,
    pub(super) tracker: Arc<ConnTracker>,
    /// Shared with the tracker's entry for this socket.
    pub(super) state: Arc<SocketState>,
    pub(super) permits: Option<Permits>,
}

/// The socket of a [`TrackedTcp`]: registered with its runtime's reactor, or parked
/// (deregistered, a plain std socket) between two runtimes.
pub(super) enum Sock {
    Live(TcpStream),
    Parked(std::net::TcpStream),
    /// Only while a park or an attach swaps the socket (it failed if left so).
    Gone,
}

impl Sock {
    #[inline]
    fn live(&mut self) -> io::Result<&mut TcpStream> {
        match self {
            Sock::Live(s) => Ok(s),
            _ => Err(not_live()),
        }
    }
}

#[cold]
fn not_live() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection is parked between runtimes (or failed to move between them)",
    )
}

/// What the stream and the tracker know of a socket: bits, each set once.
///
/// `REAPED`: the idle reaper shut this socket down: reads end at once, before tokio has
/// seen the shutdown, so hyper closes the connection instead of writing a new request
/// into it (and the pool sends that request again on another connection).
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

impl TrackedTcp {
    /// Moves the socket off its runtime's reactor (`into_std`, which needs no runtime
    /// context and works while the runtime shuts down: the reactor is dropped after the
    /// tasks) and out of its client's tracker, still counted open and keeping its
    /// series: it is parked, for the next runtime's client to [`attach`]. Fails, and
    /// leaves the socket to its tracker, when the tracker no longer has it (a close or
    /// the idle reaper shut it down first).
    ///
    /// [`attach`]: TrackedTcp::attach
    pub(crate) fn park(&mut self) -> io::Result<()> {
        if !matches!(self.stream, Sock::Live(_)) || self.id == 0 {
            return Err(not_live());
        }
        if !self.tracker.unregister(self.id) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection was shut down by its client's close or the idle reaper",
            ));
        }
        self.id = 0;
        self.permits = None;
        let Sock::Live(live) = std::mem::replace(&mut self.stream, Sock::Gone) else {
            unreachable!("checked above");
        };
        let std = live.into_std()?;
        self.stream = Sock::Parked(std);
        Ok(())
    }

    /// Shuts down (both ways) the socket this still owns, parked or live; nothing once
    /// it is gone. Through the socket itself, never a descriptor number kept aside: a
    /// failed `attach` has closed the descriptor, which the process may have reused.
    pub(crate) fn shut(&self) {
        let _ = match &self.stream {
            Sock::Parked(s) => s.shutdown(std::net::Shutdown::Both),
            #[cfg(unix)]
            Sock::Live(s) => {
                let fd = std::os::fd::AsFd::as_fd(s);
                socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both)
            }
            #[cfg(not(unix))]
            Sock::Live(_) => Ok(()),
            Sock::Gone => Ok(()),
        };
    }

    /// Whether the parked socket is still cleanly idle: the peer neither closed it nor
    /// sent anything unasked (a non-blocking peek finds nothing to read).
    pub(crate) fn parked_is_quiet(&self) -> bool {
        let Sock::Parked(s) = &self.stream else {
            return false;
        };
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(s.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Registers a parked socket with the current runtime's reactor and in `tracker`
    /// (the client of the runtime it now serves), holding `permits`. Must run inside
    /// that runtime. On failure the socket is dropped (and uncounted) by the caller.
    pub(crate) fn attach(
        &mut self,
        tracker: &Arc<ConnTracker>,
        permits: Permits,
    ) -> io::Result<()> {
        let Sock::Parked(std) = std::mem::replace(&mut self.stream, Sock::Gone) else {
            return Err(not_live());
        };
        #[cfg(unix)]
        let raw = std::os::fd::AsRawFd::as_raw_fd(&std);
        #[cfg(not(unix))]
        let raw = ();
        let live = TcpStream::from_std(std)?;
        let id = tracker.adopt(raw, Arc::clone(&self.state)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the client taking the connection is closed",
            )
        });
        self.stream = Sock::Live(live);
        self.id = id?;
        self.tracker = Arc::clone(tracker);
        self.permits = Some(permits);
        Ok(())
    }
}

impl Drop for TrackedTcp {
    fn drop(&mut self) {
        // Before `stream` (and its fd) is dropped: see the module docs. A socket that
        // `close` already shut down was uncounted there.
        if self.id == 0 {
            // Parked (or lost while moving): in no tracker, still counted open.
            self.tracker.uncount_unregistered(&self.state);
        } else {
            self.tracker.forget_socket(self.id);
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
        Pin::new(self.stream.live()?).poll_read(cx, buf)
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
        Pin::new(self.stream.live()?).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream.live()?).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream.live()?).poll_shutdown(cx)
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
        Pin::new(self.stream.live()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        matches!(&self.stream, Sock::Live(s) if s.is_write_vectored())
    }
}

#[cold]
fn reaped() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection was closed after idling past pool_idle_timeout",
    )
}
