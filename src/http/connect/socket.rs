//! [`TrackedTcp`]: a TCP stream the tracker can shut down from outside, holding its
//! connection-limit permits.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Set when the idle reaper shut this socket down: reads end at once, before tokio
    /// has seen the shutdown, so hyper closes the connection instead of writing a new
    /// request into it (and hyper-util retries that request on a fresh connection).
    pub(super) reaped: Arc<AtomicBool>,
    pub(super) _permits: Permits,
    pub(super) owner: Owner,
}

/// Who polls a socket. hyper's connection task polls it from the moment the connection
/// is up; a socket then polled outside every connection task was handed over to the
/// application by an upgrade (`101 Switching Protocols`, `CONNECT`): it is no pooled
/// connection, so the idle reaper leaves it alone (a close still shuts it down).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// Connecting (a TLS handshake may poll it from the request's task).
    Connecting,
    Hyper,
    Application,
}

impl TrackedTcp {
    #[inline]
    fn note_owner(&mut self) {
        if self.owner == Owner::Application {
            return;
        }
        match (self.owner, executor::in_background()) {
            (Owner::Connecting, true) => self.owner = Owner::Hyper,
            (Owner::Hyper, false) => self.handed_over(),
            _ => {}
        }
    }

    #[cold]
    fn handed_over(&mut self) {
        self.owner = Owner::Application;
        self.tracker.hand_over(self.id);
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
        self.note_owner();
        // Acquire: pairs with the reaper's release store.
        if self.reaped.load(Ordering::Acquire) {
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
        self.note_owner();
        if self.reaped.load(Ordering::Acquire) {
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
        self.note_owner();
        if self.reaped.load(Ordering::Acquire) {
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
