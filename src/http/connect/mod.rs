//! Connection tracking: the executor every connection task is spawned through, and a
//! connector that keeps a handle on every socket, enforces the connection limits, goes
//! through HTTP proxies and (with the `rustls` feature) speaks TLS.
//!
//! Closing a client must shut its connections down *on the wire* even when the runtime
//! that owns their tasks is alive but idle (nobody polls an aborted task there). So every
//! socket's fd is kept in the tracker, and close calls `shutdown(2)` on it: the peer sees
//! the connection end at once. Soundness: a socket's entry is removed under the tracker
//! lock by the owning stream's `Drop`, which runs before the fd is closed; `shutdown` runs
//! under the same lock, so it only ever sees open fds. TLS wraps the tracked TCP stream,
//! so the same holds for HTTPS connections; a connection through a proxy is a tracked
//! socket to the proxy, so the same holds for it too.

mod connector;
mod dns;
mod executor;
mod idle;
mod limits;
mod no_proxy;
mod proxy;
pub(crate) mod socket;
pub(crate) mod stream;
#[cfg(feature = "rustls")]
mod tls;
pub(crate) mod tracker;

pub(crate) use connector::{AttemptTimeouts, TrackingConnector};
pub(crate) use dns::{DnsCache, Resolver};
pub(crate) use executor::TrackingExecutor;
pub(crate) use idle::Busy;
pub(crate) use limits::Limits;
pub(crate) use no_proxy::NoProxy;
pub(crate) use proxy::{ProxyRule, ProxyRules};
pub(crate) use tracker::ConnTracker;
