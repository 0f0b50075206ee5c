//! Real servers on 127.0.0.1 for the rtlocal workspace's tests and examples, each stopped
//! when dropped (or when the process ends), each able to say how many client
//! connections it has open, as the server sees them:
//!
//! * [`postgres::Postgres`] (feature `postgres`): a private cluster (`initdb`, then
//!   `postgres`) in a temporary directory, trust authentication, run as the `postgres`
//!   user when we are root (PostgreSQL refuses to run as root);
//! * [`redis::Redis`] (feature `redis`): a private `redis-server` in a temporary
//!   directory, no persistence;
//! * [`grpc::Grpc`] (feature `grpc`): tonic's health service, in process, on a runtime
//!   and thread of its own;
//! * [`http::HttpServer`] (feature `http`): hyper (HTTP/1.1), in process, on a runtime of
//!   its own;
//! * [`Servers`] (feature `all`): the four together.
//!
//! Dev-only (`publish = false`): the integration crates take it as a dev-dependency.
//!
//! # Ports
//!
//! Every server picks a port nobody holds, without a bind-then-release race. The
//! in-process servers bind port 0 and keep that listener. PostgreSQL and redis-server
//! take a port number (neither reports a port the OS chose): each start tries a random
//! port below the OS's ephemeral range, and when the server's log says "Address already
//! in use", starts again on another (a bounded number of times). A server already
//! listening on the port cannot be mistaken for ours: readiness is asked of the server
//! by what only ours has (its data directory).
//!
//! # Failures
//!
//! A fixture that cannot do its job panics, saying what failed (with the server's log)
//! and what to do: these run only in tests and examples. PostgreSQL and redis-server come
//! from the Debian packages; `bash .ci/servers` (as root) installs them, and
//! [`check_installed`] says what is missing.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

#[cfg(feature = "all")]
mod all;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod process;
#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "all")]
pub use all::{Open, Servers};
#[cfg(any(feature = "postgres", feature = "redis"))]
pub use process::candidate_ports;

use std::time::{Duration, Instant};

/// `Ok` when the external servers this build can start are installed (redis-server with
/// feature `redis`, PostgreSQL's `initdb` and `postgres` with feature `postgres`);
/// otherwise a message naming what is missing and how to install it.
///
/// # Errors
/// The message, when something is missing.
pub fn check_installed() -> Result<(), String> {
    #[allow(unused_mut)] // empty without the features that start external servers
    let mut missing: Vec<&str> = Vec::new();
    #[cfg(feature = "redis")]
    if redis::redis_bin().is_none() {
        missing.push("redis-server (Debian package redis-server)");
    }
    #[cfg(feature = "postgres")]
    if postgres::bin_dir().is_none() {
        missing.push("PostgreSQL: no /usr/lib/postgresql/*/bin/initdb (Debian package postgresql)");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing: {}; run `bash .ci/servers` (as root) to install them",
            missing.join(", ")
        ))
    }
}

/// A `current_thread` runtime with every driver.
///
/// # Panics
/// When the runtime cannot be built (out of file descriptors or threads).
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current_thread runtime")
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own: callable
/// from anywhere, inside a runtime or not.
///
/// # Panics
/// When `fut` panics.
pub fn block_on<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || current_thread().block_on(fut))
        .join()
        .expect("the helper thread")
}

/// Polls `probe` until it returns `want` or `within` passes; returns its last value. A
/// hang guard for state that settles on the other end of a socket, not a timing.
pub fn settle<T: PartialEq>(within: Duration, want: T, mut probe: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + within;
    loop {
        let now = probe();
        if now == want || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A listener on 127.0.0.1, on a port the OS picks (port 0), kept: registered with `rt`
/// without entering it, so callable from inside another runtime.
#[cfg(any(feature = "grpc", feature = "http"))]
fn bind_loopback(rt: &tokio::runtime::Runtime) -> tokio::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let _registering = rt.enter();
    tokio::net::TcpListener::from_std(listener).expect("the listener on its runtime")
}
