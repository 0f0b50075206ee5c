//! Idle timeouts that hold while the client's runtime idles.
//!
//! The pool drops an idle connection past its timeout when a request looks for one,
//! which happens only while the runtime runs; a `current_thread` runtime that idles
//! between jobs would keep its connections open for as long as it idles. Here the
//! tracker evicts them from the process-wide [`timer`] thread instead, which runs
//! whatever the runtime does (parked connections, between two runtimes, have a timer job
//! of their own: `pool/carry.rs`).
//!
//! A socket is idle when no request of its client is in flight: a request counts from
//! the moment it is handed to the pool ([`Busy`]) until its response body ends or is
//! dropped. A socket is reaped once it has been idle for the timeout, counted from the
//! later of the client's last request finishing and the socket opening, so never
//! earlier than the pool itself would drop it. A socket that an upgrade handed over to
//! the application (`socket::SocketState`) is no pooled connection and is never reaped.
//!
//! Invariants:
//! 1. The reaper decides and shuts sockets down only while holding the tracker lock,
//!    with `reaping` set before it reads `in_use`.
//! 2. A request increments `in_use` before the pool can pick a connection, then reads
//!    `reaping`; if set, it takes (and drops) the tracker lock before going on.
//!
//! All four accesses are `SeqCst`, so either the reaper sees the request in `in_use` and
//! keeps every socket, or the request waits until the reaper has marked every socket it
//! shut down (1, 2).
//!
//! Can a later request still be handed a connection the reaper shut down? The pool
//! drops an HTTP/1.1 connection at checkout once it has been idle for the timeout,
//! counted from when it went back idle (its response body's end), and the reaper counts
//! from the client's last request *ending*, which is never earlier. Should one slip
//! through anyway (an HTTP/2 connection, shared and never put back), a marked socket
//! reads as ended before anything is written to it, so hyper closes the connection
//! without sending, hands the request back, and the pool sends it again on a new
//! connection (it retries requests that were not written on a reused connection).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::http::connect::tracker::{ConnTracker, shutdown_socket};
use crate::manager::timer::{self, TimerKey};

/// One request of a client in flight, for the idle reaper (see the module docs): a token
/// handed back to [`ConnTracker::release`] when the request ends. It holds no reference
/// to the tracker (the request's guard already keeps the client, and its tracker, alive),
/// so taking one costs two atomics and no reference count.
#[must_use = "a Busy token must be released, or the client's sockets are never reaped"]
pub(crate) struct Busy(());

impl ConnTracker {
    /// Counts a request as in flight until the returned guard drops; `None` when idle
    /// connections are not reaped (no timeout, or no pooling).
    pub(crate) fn busy(&self) -> Option<Busy> {
        self.idle_timeout?;
        // SeqCst: invariant 2.
        self.in_use.fetch_add(1, Ordering::SeqCst);
        if self.reaping.load(Ordering::SeqCst) {
            drop(self.state.lock());
        }
        Some(Busy(()))
    }

    /// Ends a request counted by [`busy`](Self::busy) on this tracker.
    pub(crate) fn release(&self, busy: Busy) {
        let Busy(()) = busy;
        let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Before the decrement: a reaper that sees `in_use` at zero sees this time too.
        self.last_release.fetch_max(since, Ordering::SeqCst);
        self.in_use.fetch_sub(1, Ordering::SeqCst);
    }

    /// Schedules a reaper check at `at`, holding the tracker weakly.
    pub(super) fn schedule_reaper(self: &Arc<Self>, at: Instant) -> Option<TimerKey> {
        let weak = Arc::downgrade(self);
        timer::schedule(at, move || {
            if let Some(tracker) = weak.upgrade() {
                tracker.reap_idle();
            }
        })
    }

    /// Shuts down the sockets idle past the timeout and schedules the next check.
    fn reap_idle(self: &Arc<Self>) {
        self.reap_idle_at(Instant::now());
    }

    /// [`reap_idle`](Self::reap_idle) as if it were `now` (tests pass a later time).
    fn reap_idle_at(self: &Arc<Self>, now: Instant) {
        let Some(timeout) = self.idle_timeout else {
            return;
        };
        // SeqCst: invariant 1.
        self.reaping.store(true, Ordering::SeqCst);
        let mut st = self.state.lock();
        if let Some(key) = st.reaper.take() {
            timer::cancel(&key);
        }
        let next = if st.closed || st.sockets.is_empty() {
            // The next registered socket schedules a check again.
            None
        } else if self.in_use.load(Ordering::SeqCst) > 0 {
            Some(now + timeout)
        } else {
            let quiet = self.epoch + Duration::from_nanos(self.last_release.load(Ordering::SeqCst));
            let mut next: Option<Instant> = None;
            let mut due_now = Vec::new();
            for (id, socket) in st.sockets.iter() {
                if socket.state.handed_over() {
                    continue;
                }
                let due = quiet.max(socket.opened) + timeout;
                if due <= now {
                    due_now.push(*id);
                } else {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            let reaped = due_now.len();
            for id in due_now {
                if let Some(socket) = st.sockets.remove(&id) {
                    socket.state.mark_reaped();
                    shutdown_socket(socket.raw);
                    self.uncount(socket);
                }
            }
            if reaped > 0 {
                tracing::debug!(reaped, ?timeout, "idle connections shut down");
            }
            next
        };
        if let Some(at) = next {
            st.reaper = self.schedule_reaper(at);
        }
        drop(st);
        self.reaping.store(false, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busy").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::http::body::request::Body;
    use crate::http::config::Builder;
    use crate::http::factory::{HyperFactory, HyperParts};
    use crate::manager::ClientFactory;

    /// A loopback HTTP/1 and h2c server on the current runtime; counts accepted
    /// connections.
    async fn serve() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(async move {
                    let auto = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = auto.serve_connection(io, svc).await;
                });
            }
        });
        (addr, accepted)
    }

    async fn get(parts: &HyperParts, addr: std::net::SocketAddr) -> Result<Bytes, String> {
        let req = http::Request::get(format!("http://{addr}/"))
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        // In use until the body is read, as a request through the client is: a reaper
        // with a 1 ms timeout must not see the request's own socket as idle.
        let busy = parts.tracker.busy();
        let got = async {
            let (resp, pooled) = parts.send(req).await.map_err(|e| format!("{e:?}"))?;
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            // Read to its end: the connection goes back to the pool, as the client's
            // response body does it.
            if let Some(pooled) = pooled {
                pooled.reuse();
            }
            Ok(body.to_bytes())
        }
        .await;
        if let Some(busy) = busy {
            parts.tracker.release(busy);
        }
        got
    }

    /// A reaped connection that the pool still holds as idle (its own timeout has not
    /// passed) and hands to the next request: the request is retried on a new
    /// connection, not failed.
    async fn reaped_pooled_connection_is_not_a_failure(http2: bool) {
        let (addr, accepted) = serve().await;
        let mut builder = Builder::new().pool_idle_timeout(Duration::from_secs(3600));
        if http2 {
            builder = builder.http2_prior_knowledge();
        }
        let config = builder.into_config().expect("config");
        let factory = HyperFactory::new(config, Arc::default());
        let parts = factory
            .build(&tokio::runtime::Handle::current())
            .await
            .expect("client");
        for round in 1..=3 {
            assert_eq!(
                get(&parts, addr).await.as_deref(),
                Ok(&b"ok"[..]),
                "round {round}"
            );
            assert_eq!(parts.tracker.open_sockets(), 1);
            // As if the hour had passed while the runtime idled: the pool still lists the
            // connection as fresh.
            parts
                .tracker
                .reap_idle_at(Instant::now() + Duration::from_secs(7200));
            assert_eq!(parts.tracker.open_sockets(), 0, "round {round}: reaped");
        }
        assert_eq!(get(&parts, addr).await.as_deref(), Ok(&b"ok"[..]));
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    // HTTP/1.1 only: an HTTP/2 connection is never handed out after the reaper shut it
    // (see the module docs), so there is no such case to test for it.
    #[tokio::test(flavor = "current_thread")]
    async fn reaped_pooled_connection_is_retried_current_thread() {
        reaped_pooled_connection_is_not_a_failure(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reaped_pooled_connection_is_retried_multi_thread() {
        reaped_pooled_connection_is_not_a_failure(false).await;
    }

    /// A request in flight keeps every socket of its client from the reaper.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_in_flight_keeps_its_sockets() {
        let (addr, _) = serve().await;
        let config = Builder::new()
            .pool_idle_timeout(Duration::from_millis(1))
            .into_config()
            .expect("config");
        let parts = HyperFactory::new(config, Arc::default())
            .build(&tokio::runtime::Handle::current())
            .await
            .expect("client");
        assert_eq!(get(&parts, addr).await.as_deref(), Ok(&b"ok"[..]));
        let busy = parts.tracker.busy().expect("reaping is on");
        parts
            .tracker
            .reap_idle_at(Instant::now() + Duration::from_secs(60));
        assert_eq!(
            parts.tracker.open_sockets(),
            1,
            "kept while a request is in flight"
        );
        parts.tracker.release(busy);
        parts
            .tracker
            .reap_idle_at(Instant::now() + Duration::from_secs(60));
        assert_eq!(parts.tracker.open_sockets(), 0);
    }
}
