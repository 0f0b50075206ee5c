//! [`Conn`]: one connection, plain TCP (to the origin or to an HTTP proxy) or TLS over
//! it, as hyper-util sees it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::connect::socket::TrackedTcp;

/// One connection: plain TCP or TLS over it.
pub(crate) enum Conn {
    Plain(TrackedTcp),
    /// Plain TCP to an HTTP proxy: hyper-util sends requests in absolute form on it.
    Proxied(TrackedTcp),
    #[cfg(feature = "rustls")]
    Tls(Box<tokio_rustls::client::TlsStream<TrackedTcp>>),
}

impl Conn {
    /// The attempt that opened this connection is over: its deadline is lifted.
    #[cfg(feature = "rustls")]
    pub(super) fn disarm_attempt(&self) {
        self.tcp().disarm_attempt();
    }
}

impl Conn {
    pub(crate) fn tcp(&self) -> &TrackedTcp {
        match self {
            Conn::Plain(tcp) | Conn::Proxied(tcp) => tcp,
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl Conn {
    /// ALPN chose HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        match self {
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
            _ => false,
        }
    }

    /// A plain `http` connection to a forwarding proxy: requests go in absolute form.
    pub(crate) fn is_proxied(&self) -> bool {
        matches!(self, Conn::Proxied(_))
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut TrackedTcp {
        match self {
            Conn::Plain(tcp) | Conn::Proxied(tcp) => tcp,
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => s.get_mut().0,
        }
    }

    /// TLS has records to write (a connection with them is not idle).
    pub(crate) fn tls_wants_write(&self) -> bool {
        match self {
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => s.get_ref().1.wants_write(),
            _ => false,
        }
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn conn_state(&self) -> crate::http::connect::socket::ConnState {
        crate::http::connect::socket::ConnState(self.tcp().state())
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) | Conn::Proxied($s) => {
                let $s = Pin::new($s);
                $e
            }
            #[cfg(feature = "rustls")]
            Conn::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) | Conn::Proxied(s) => s.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}
