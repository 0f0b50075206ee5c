//! The connector every managed channel dials through: it keeps a duplicate of each
//! connection's socket descriptor, so a close can shut the connection down on the wire
//! without the channel's runtime (whose tasks own the connection) having to run.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use socket2::{SockRef, Socket};
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The sockets of one channel's open connections, the tasks that drive them, and whether
/// the channel is closed.
#[derive(Default)]
pub(crate) struct Sockets {
    state: parking_lot::Mutex<State>,
    /// Only a count for `connections_opened`: nothing is ordered by it.
    opened: AtomicU64,
    /// Only a source of task ids: nothing is ordered by it.
    task_ids: AtomicU64,
}

#[derive(Default)]
struct State {
    closed: bool,
    open: HashMap<u64, Socket>,
    /// The connection tasks ([`crate::executor`]), dropped by a close.
    tasks: HashMap<u64, TaskSlot>,
}

/// A connection task's future, shared by the task that polls it and the close that drops
/// it; `None` once finished or dropped.
pub(crate) type TaskSlot = Arc<parking_lot::Mutex<Option<BoxFuture>>>;

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Sockets {
    /// Adds a connection's socket, unless the channel is closed: the flag and the map
    /// share one lock, so a close either shuts this socket down or this call sees the
    /// flag and shuts it down itself.
    fn register(self: &Arc<Self>, socket: Socket) -> Result<Registration, ChannelClosed> {
        let mut state = self.state.lock();
        if state.closed {
            drop(state);
            let _ = socket.shutdown(Shutdown::Both);
            return Err(ChannelClosed);
        }
        let id = self.opened.fetch_add(1, Ordering::Relaxed);
        state.open.insert(id, socket);
        Ok(Registration {
            sockets: Arc::clone(self),
            id,
        })
    }

    /// Refuses new connections, shuts every open one down (both directions: the peer sees
    /// each connection end at once) and drops the tasks driving them, here, whatever their
    /// runtime is doing: with them goes the connection's request queue, so the channel's
    /// next call finds no connection and asks the connector, which refuses
    /// (`Unavailable`), instead of writing to the shut-down socket. Idempotent.
    pub(crate) fn close(&self) {
        let (sockets, tasks): (Vec<Socket>, Vec<TaskSlot>) = {
            let mut state = self.state.lock();
            state.closed = true;
            (
                state.open.drain().map(|(_, s)| s).collect(),
                state.tasks.drain().map(|(_, t)| t).collect(),
            )
        };
        for socket in sockets {
            // NotConnected: the peer or the connection's task got there first.
            let _ = socket.shutdown(Shutdown::Both);
        }
        for task in tasks {
            // Taken under the slot's lock (waiting for a poll in progress to end), dropped
            // outside it: dropping a connection runs `Registration::drop`.
            let future = task.lock().take();
            drop(future);
        }
    }

    /// Keeps a connection task's future where a close can drop it. `None` when the
    /// channel is closed: the future is dropped at once (outside the lock).
    pub(crate) fn adopt_task(&self, future: BoxFuture) -> Option<(u64, TaskSlot)> {
        let slot: TaskSlot = Arc::new(parking_lot::Mutex::new(Some(future)));
        let mut state = self.state.lock();
        if state.closed {
            drop(state);
            drop(slot);
            return None;
        }
        let id = self.task_ids.fetch_add(1, Ordering::Relaxed);
        state.tasks.insert(id, Arc::clone(&slot));
        Some((id, slot))
    }

    /// Forgets a connection task that ended (or was dropped with its runtime).
    pub(crate) fn forget_task(&self, id: u64) {
        let removed = self.state.lock().tasks.remove(&id);
        drop(removed);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    pub(crate) fn open(&self) -> usize {
        self.state.lock().open.len()
    }

    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// Removes (and closes the duplicate of) a connection's socket when the connection's
/// I/O is dropped.
struct Registration {
    sockets: Arc<Sockets>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = self.sockets.state.lock().open.remove(&self.id);
        drop(removed);
    }
}

/// A connection's I/O with its registration.
pub(crate) struct TrackedIo {
    io: TokioIo<TcpStream>,
    _registration: Registration,
    /// Set for an `https` URI until the first byte is written: that byte must open a TLS
    /// record (tonic's TLS layer sits above this connector when it is configured).
    /// Anything else would be the request in cleartext, so the write is refused.
    expect_tls: bool,
}

/// The first byte of every TLS record a client sends first: `handshake` (22).
const TLS_HANDSHAKE: u8 = 0x16;

impl TrackedIo {
    fn check_first_write(&mut self, first: Option<u8>) -> io::Result<()> {
        match first {
            None => Ok(()),
            Some(TLS_HANDSHAKE) => {
                self.expect_tls = false;
                Ok(())
            }
            Some(_) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                CleartextRefused,
            )),
        }
    }
}

impl hyper::rt::Read for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expect_tls {
            this.check_first_write(buf.first().copied())?;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expect_tls {
            let first = bufs.iter().find_map(|b| b.first().copied());
            this.check_first_write(first)?;
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }
}

/// Dials with an `HttpConnector` and registers each connection's socket.
#[derive(Clone)]
pub(crate) struct TrackingConnector {
    http: HttpConnector,
    sockets: Arc<Sockets>,
}

impl TrackingConnector {
    pub(crate) fn new(http: HttpConnector, sockets: Arc<Sockets>) -> Self {
        TrackingConnector { http, sockets }
    }
}

impl Service<Uri> for TrackingConnector {
    type Response = TrackedIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TrackedIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if self.sockets.is_closed() {
            return Box::pin(std::future::ready(Err(ChannelClosed.into())));
        }
        // The workspace's one authority check: no port, scheme or host the URI did not
        // name is dialled (`http` reads `:99999` as "no port", and the HTTP connector
        // would then dial 80), and credentials in it are refused, not dropped.
        let target = match rtlocal::Target::of(&uri) {
            Ok(target) => target,
            Err(e) => return Box::pin(std::future::ready(Err(e.into()))),
        };
        let expect_tls = target.is_https();
        let sockets = Arc::clone(&self.sockets);
        // The checked origin, its port explicit: the connector has nothing to default.
        let connecting = self.http.call(target.origin());
        Box::pin(async move {
            let io = connecting.await?;
            // A second descriptor for the same socket: `shutdown(2)` on it ends the
            // connection whoever holds the first.
            let socket = SockRef::from(io.inner()).try_clone()?;
            let registration = sockets.register(socket)?;
            Ok(TrackedIo {
                io,
                _registration: registration,
                expect_tls,
            })
        })
    }
}

/// A closed channel's connector refusing to dial.
#[derive(Debug)]
struct ChannelClosed;

impl fmt::Display for ChannelClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this channel was closed by its rtlocal manager; get a fresh one with `client()`",
        )
    }
}

impl StdError for ChannelClosed {}

/// A write refused on an `https` connection because it was not TLS.
#[derive(Debug)]
struct CleartextRefused;

impl fmt::Display for CleartextRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "refused to send an https request in cleartext: the endpoint has no TLS \
             configured (enable one of tonic's TLS features and set \
             `Endpoint::tls_config`, or use an http:// URI)",
        )
    }
}

impl StdError for CleartextRefused {}

/// The connector of the channel a kept handle gives on a runtime other than its
/// channel's (see `ChannelFactory::foreign_runtime_client`): it refuses every
/// connection, naming both runtimes, so a call fails at once instead of waiting on a
/// connection task nobody polls.
#[derive(Clone, Copy)]
pub(crate) struct RefuseForeign {
    pub(crate) owner: tokio::runtime::Id,
}

impl Service<Uri> for RefuseForeign {
    type Response = TrackedIo;
    type Error = BoxError;
    type Future = std::future::Ready<Result<TrackedIo, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(Err(Box::new(rtlocal::ForeignRuntime::here(
            "channel", self.owner,
        ))))
    }
}
