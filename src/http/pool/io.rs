//! [`IoCell`]: one pooled HTTP/1 connection's socket (plain or TLS), shared between
//! hyper's connection task (through [`PoolIo`]) and the pool, so that the pool can take
//! a cleanly idle connection out from under hyper when its runtime is torn down and
//! park it for the next runtime.
//!
//! *Cleanly idle*, decided under the cell's lock:
//! * the pool holds the connection in its idle list (`IDLE`: the response was read to
//!   its end, nothing is in flight, keep-alive is on);
//! * hyper's last read on it found nothing (`READ_PENDING`): on an idle HTTP/1 client
//!   connection hyper reads only to look for the peer's close, and first fails the
//!   connection if its read buffer holds anything — so a read that returned `Pending`
//!   after the response means hyper's buffer is empty and nothing unasked arrived;
//! * with TLS, rustls has nothing left to write (a read that returned `Pending` also
//!   means it had no plaintext buffered);
//! * and, once off the reactor, a non-blocking peek finds the socket quiet (the peer
//!   neither closed it nor sent anything since).
//!
//! Anything else is closed on the wire as before. hyper's connection state is not
//! carried: a new `http1` connection is made over the same socket on the next runtime,
//! which is sound exactly because an idle HTTP/1 client connection has no state beyond
//! its socket (and the TLS session, which moves with the stream).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::connect::stream::Conn;
use crate::http::pool::carry::{CarryTo, Parked};

/// In the pool's idle list.
const IDLE: u8 = 1;
/// hyper's last read returned `Pending`.
const READ_PENDING: u8 = 2;

pub(crate) struct IoCell {
    inner: parking_lot::Mutex<Inner>,
    flags: AtomicU8,
    /// Where the connection goes when its runtime is torn down while it idles; `None`:
    /// carrying is off (or the connection cannot be carried).
    carry: Option<CarryTo>,
}

struct Inner {
    /// `None` once parked.
    conn: Option<Conn>,
    /// When the connection last went idle.
    idle_since: Instant,
}

impl IoCell {
    pub(crate) fn new(conn: Conn, carry: Option<CarryTo>) -> Arc<Self> {
        Self::with_idle_since(conn, carry, Instant::now())
    }

    pub(crate) fn with_idle_since(
        conn: Conn,
        carry: Option<CarryTo>,
        idle_since: Instant,
    ) -> Arc<Self> {
        Arc::new(IoCell {
            inner: parking_lot::Mutex::new(Inner {
                conn: Some(conn),
                idle_since,
            }),
            flags: AtomicU8::new(0),
            carry,
        })
    }

    /// The pool put the connection in its idle list at `since`.
    pub(crate) fn set_idle_since(&self, since: Instant) {
        let mut inner = self.inner.lock();
        inner.idle_since = since;
        self.flags.fetch_or(IDLE, Ordering::Relaxed);
    }

    /// The pool takes the connection for a request: `false` if it was parked meanwhile.
    pub(crate) fn claim(&self) -> bool {
        let inner = self.inner.lock();
        self.flags.fetch_and(!IDLE, Ordering::Relaxed);
        inner.conn.is_some()
    }

    /// The pool let go of the idle connection (evicted, expired): never carried.
    pub(crate) fn unidle(&self) {
        let _inner = self.inner.lock();
        self.flags.fetch_and(!IDLE, Ordering::Relaxed);
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn conn_state(&self) -> Option<crate::http::connect::socket::ConnState> {
        self.inner.lock().conn.as_ref().map(Conn::conn_state)
    }

    /// The runtime is being torn down: parks the connection if it is cleanly idle (see
    /// the module docs). Called by the pool's `release` and by the connection task's
    /// drop, whichever comes first; the connection moves once.
    pub(crate) fn carry(&self) {
        let Some(to) = &self.carry else {
            return;
        };
        let parked = {
            let mut inner = self.inner.lock();
            let flags = self.flags.load(Ordering::Relaxed);
            if flags & (IDLE | READ_PENDING) != (IDLE | READ_PENDING) {
                return;
            }
            let idle_since = inner.idle_since;
            if to.expired(idle_since, Instant::now()) {
                return;
            }
            let Some(conn) = inner.conn.as_mut() else {
                return;
            };
            if conn.tls_wants_write() {
                return;
            }
            if conn.tcp_mut().park().is_err() {
                return;
            }
            self.flags.fetch_and(!IDLE, Ordering::Relaxed);
            let Some(conn) = inner.conn.take() else {
                return;
            };
            Some(Parked::new(to, conn, idle_since))
        };
        if let Some(parked) = parked {
            to.park(parked);
        }
    }
}

/// What hyper's HTTP/1 connection reads and writes: the cell's connection.
pub(crate) struct PoolIo(pub(crate) Arc<IoCell>);

#[cold]
fn parked() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection was parked for the next runtime",
    )
}

impl AsyncRead for PoolIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let cell = &self.0;
        let mut inner = cell.inner.lock();
        let Some(conn) = inner.conn.as_mut() else {
            return Poll::Ready(Err(parked()));
        };
        let polled = Pin::new(conn).poll_read(cx, buf);
        if polled.is_pending() {
            cell.flags.fetch_or(READ_PENDING, Ordering::Relaxed);
        } else {
            cell.flags.fetch_and(!READ_PENDING, Ordering::Relaxed);
        }
        polled
    }
}

macro_rules! with_conn {
    ($self:ident, $c:ident => $e:expr) => {{
        let mut inner = $self.0.inner.lock();
        match inner.conn.as_mut() {
            Some($c) => {
                let $c = Pin::new($c);
                $e
            }
            None => Poll::Ready(Err(parked())),
        }
    }};
}

impl AsyncWrite for PoolIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_conn!(self, c => c.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_conn!(self, c => c.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_conn!(self, c => c.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_conn!(self, c => c.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.0
            .inner
            .lock()
            .conn
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }
}
