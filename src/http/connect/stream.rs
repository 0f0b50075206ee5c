//! [`Conn`]: one connection, plain TCP (to the origin or to an HTTP proxy) or TLS over
//! it, as hyper-util sees it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
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
    fn tcp(&self) -> &TrackedTcp {
        match self {
            Conn::Plain(tcp) | Conn::Proxied(tcp) => tcp,
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = match self {
            Conn::Plain(_) => Connected::new(),
            Conn::Proxied(_) => Connected::new().proxy(true),
            #[cfg(feature = "rustls")]
            Conn::Tls(s) => {
                let c = Connected::new();
                if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        };
        // hyper-util puts it in each response's extensions: the exchange then knows
        // which connection served it, and marks it idle when the body ends.
        #[cfg(feature = "metrics")]
        let connected =
            connected.extra(crate::http::connect::socket::ConnState(self.tcp().state()));
        #[cfg(not(feature = "metrics"))]
        let _ = self.tcp();
        connected
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
