//! Per-thread, runtime-aware HTTP clients for tokio.
//!
//! A `hyper_util` (or `reqwest`) client spawns each connection's task on whatever runtime
//! is current when the connection opens. Share one client between runtimes and it breaks:
//! a request from runtime B handed a pooled connection of an idle `current_thread`
//! runtime A **hangs forever**, and one in flight when A is dropped fails with
//! *"dispatch task is gone"*.
//!
//! `rtlocal` gives every thread its own client, bound to the runtime it runs on:
//!
//! * same thread, same live runtime → the same [`Client`];
//! * runtime changed → the stale client is closed, *then* the slot is reset, *then* a new
//!   client is published (concurrent callers all get the one new client);
//! * a runtime torn down → its clients are closed right then, and callbacks registered
//!   with [`on_runtime_shutdown`] run (once, newest first, each isolated);
//! * a [`Client`] used from another runtime never hangs: the request is re-routed.
//!
//! # Quick start
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::BodyExt;
//!
//! let client = rtlocal::client().await?;
//! let resp = client.get("http://127.0.0.1:8080/").await?;
//! let body = resp.into_body().collect().await?.to_bytes();
//! # let _ = body; Ok(()) }
//! ```
//!
//! # Teardown callbacks
//!
//! ```
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let (tx, rx) = std::sync::mpsc::channel();
//! rt.block_on(async {
//!     rtlocal::on_runtime_shutdown(move || tx.send("runtime gone").unwrap()).unwrap();
//! });
//! drop(rt);
//! assert_eq!(rx.recv().unwrap(), "runtime gone");
//! ```
//!
//! # Safety and correctness
//! The slot state machine ([`slot`](crate#)) and the per-runtime callback registry are
//! written against a small `sync` shim, so the loom models in `loom-tests/` check the
//! production code itself. See the README's "Correctness" section.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks
)]
// Under the loom cfg only the modelled modules are built; helpers they share with the
// tokio side go unused there.
#![cfg_attr(rtlocal_loom, allow(dead_code))]

#[cfg(not(rtlocal_loom))]
mod body;
#[cfg(not(rtlocal_loom))]
mod client;
#[cfg(not(rtlocal_loom))]
mod config;
#[cfg(not(rtlocal_loom))]
mod connect;
mod error;
#[cfg(not(rtlocal_loom))]
mod factory;
#[cfg(not(rtlocal_loom))]
mod http_manager;
#[cfg(not(rtlocal_loom))]
mod idmap;
// `pub` items here are re-exported to the loom models under `rtlocal_loom`.
#[allow(unreachable_pub)]
mod lifecycle;
#[cfg(not(rtlocal_loom))]
mod managed;
#[cfg(not(rtlocal_loom))]
mod manager;
// `pub` items in these two are re-exported to the loom models under `rtlocal_loom`.
#[cfg(all(feature = "reqwest", not(rtlocal_loom)))]
mod reqwest_factory;
#[allow(unreachable_pub)]
mod runtime;
#[allow(unreachable_pub)]
mod slot;
#[cfg(not(rtlocal_loom))]
mod stats;
mod sync;

#[cfg(not(rtlocal_loom))]
pub use api::*;
pub use error::Error;
pub use runtime::CleanupHandle;

/// Internals exposed only for the loom models in `loom-tests/`. Not part of the API.
#[cfg(rtlocal_loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::lifecycle::{Lifecycle, Phase};
    pub use crate::runtime::{CleanupHandle, RuntimeEntry};
    pub use crate::slot::{
        Acquire, BindingKey, Completion, Lease, Outcome, PublishError, Retire, Slot, SlotClient,
    };
}

#[cfg(not(rtlocal_loom))]
mod api {
    use std::sync::LazyLock;

    pub use crate::body::{Body, ResponseBody};
    pub use crate::client::Client;
    pub use crate::config::Builder;
    pub use crate::factory::ClientFactory;
    pub use crate::http_manager::HttpClientManager;
    pub use crate::managed::{ClientId, Managed, RequestGuard};
    pub use crate::manager::{Manager, ManagerBuilder, Sharing};
    #[cfg(feature = "reqwest")]
    pub use crate::reqwest_factory::{ReqwestFactory, ReqwestManager};
    pub use crate::stats::{CloseReport, Stats};
    use crate::{CleanupHandle, Error, runtime};

    static DEFAULT: LazyLock<HttpClientManager> = LazyLock::new(HttpClientManager::new);

    /// The process-wide default manager, used by [`client`].
    pub fn default_manager() -> &'static HttpClientManager {
        &DEFAULT
    }

    /// The default manager's client for this thread and the runtime it is running on.
    ///
    /// # Errors
    /// [`Error::is_no_runtime`] at once when called outside a tokio runtime.
    pub async fn client() -> Result<Client, Error> {
        DEFAULT.client().await
    }

    /// Registers `f` to run when the current runtime is torn down (dropped,
    /// `shutdown_background` or `shutdown_timeout`).
    ///
    /// Callbacks run exactly once, newest first, each under `catch_unwind` (a panic is logged
    /// with `tracing::error!` and counted in [`Stats::callbacks_panicked`], never propagated
    /// into the runtime's drop). They run on the thread that drops a `current_thread` runtime,
    /// and on a worker thread for a `multi_thread` one: keep them synchronous and quick.
    ///
    /// # Errors
    /// [`Error::is_no_runtime`] outside a runtime; [`Error::is_runtime_gone`] when the runtime
    /// is already shutting down (the callback will never run).
    pub fn on_runtime_shutdown<F>(f: F) -> Result<CleanupHandle, Error>
    where
        F: FnOnce() + Send + 'static,
    {
        runtime::on_runtime_shutdown(f)
    }

    /// Like [`on_runtime_shutdown`], for the runtime behind `handle`.
    ///
    /// # Errors
    /// [`Error::is_runtime_gone`] when that runtime is already shutting down (the callback
    /// will never run).
    pub fn on_runtime_shutdown_for<F>(
        handle: &tokio::runtime::Handle,
        f: F,
    ) -> Result<CleanupHandle, Error>
    where
        F: FnOnce() + Send + 'static,
    {
        runtime::on_runtime_shutdown_for(handle, f)
    }
}
