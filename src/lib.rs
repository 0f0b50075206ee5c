//! Per-thread, runtime-aware HTTP clients for tokio: no cross-runtime hangs, stale clients
//! retired safely, callbacks when a runtime is torn down.
//!
//! # The problem
//!
//! A `hyper_util` client — and so every `reqwest::Client` — spawns each connection's task
//! on whatever runtime is current when the connection opens. Share one client between
//! runtimes and it breaks:
//!
//! * **It hangs.** Thread A's `current_thread` runtime is alive but idle (its thread left
//!   `block_on`). Its pooled connection still looks healthy, so a request from runtime B
//!   is handed that connection and waits forever: nobody polls the connection task
//!   (reqwest#2501). Task-runner pools, where each thread owns a runtime, hit this all the
//!   time.
//! * **"dispatch task is gone: runtime dropped the dispatch task"** when A is dropped
//!   while B has a request in flight on A's connection (hyper#2112, reqwest#1148; a
//!   `static` client shared by `#[tokio::test]` functions is the classic case).
//! * **Leaks**: connection tasks and idle reapers tied to dead or idle runtimes.
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
//! ```
//! # async fn serve() -> std::net::SocketAddr {
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #     let addr = listener.local_addr().unwrap();
//! #     tokio::spawn(async move {
//! #         while let Ok((stream, _)) = listener.accept().await {
//! #             let svc = hyper::service::service_fn(|_req| async {
//! #                 let body = http_body_util::Full::new(bytes::Bytes::from_static(b"hello"));
//! #                 Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
//! #             });
//! #             let io = hyper_util::rt::TokioIo::new(stream);
//! #             tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
//! #         }
//! #     });
//! #     addr
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let addr = serve().await;
//! use http_body_util::BodyExt;
//!
//! // The process-wide default manager: this thread's client for this runtime.
//! let client = rtlocal::client().await?;
//! let resp = client.get(&format!("http://{addr}/")).await?;
//! let body = resp.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "hello");
//! # Ok(()) }
//! ```
//!
//! Call `client().await` where you need a client, rather than storing one: on an
//! unchanged runtime it costs a thread-local lookup and one `Arc` clone, about what
//! cloning a hyper-util client out of a `static` costs (see Performance).
//!
//! # Recipes
//!
//! ## A task-runner pool: threads that each own and restart a runtime
//!
//! Each worker builds a `current_thread` runtime, runs a batch, drops the runtime and
//! builds another. Every runtime gets its own client; when a runtime is dropped its client
//! is closed at once (its connections with it); the next runtime on the thread gets a
//! fresh one. `examples/task_runner.rs` is this, end to end, with a `--naive` mode that
//! shows a shared hyper-util client hanging.
//!
//! ```no_run
//! fn worker(jobs: std::sync::mpsc::Receiver<Vec<String>>) {
//!     for batch in jobs {
//!         let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//!         rt.block_on(async {
//!             for url in batch {
//!                 let client = rtlocal::client().await.expect("inside a runtime");
//!                 let _ = client.get(&url).await;
//!             }
//!         });
//!         // Dropping the runtime closes this thread's client for it, right now.
//!     }
//! }
//! # let _ = worker;
//! ```
//!
//! ## A `#[tokio::test]` suite sharing one `static` client
//!
//! Every `#[tokio::test]` has its own runtime, dropped when the test ends. A `static`
//! hyper-util or reqwest client fails there ("dispatch task is gone", or a hang); a
//! `static` manager does not:
//!
//! ```no_run
//! use std::sync::LazyLock;
//! use rtlocal::HttpClientManager;
//!
//! static HTTP: LazyLock<HttpClientManager> = LazyLock::new(HttpClientManager::new);
//!
//! #[tokio::test]
//! async fn fetches_the_index() {
//!     let resp = HTTP.client().await.unwrap().get("http://127.0.0.1:8080/").await.unwrap();
//!     assert!(resp.status().is_success());
//! }
//! # fn main() {}
//! ```
//!
//! ## Graceful shutdown
//!
//! [`HttpClientManager::shutdown`] refuses new clients, lets in-flight requests finish
//! until the deadline, then cuts the rest and shuts every connection down on the wire,
//! across every thread — including threads whose runtime is idle or gone:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rtlocal::Error> {
//! use std::time::Duration;
//!
//! let manager = rtlocal::HttpClientManager::new();
//! let _client = manager.client().await?;
//! // On SIGTERM, after the server stopped accepting:
//! let report = manager.shutdown(Duration::from_secs(5)).await;
//! println!("{report}"); // closed 1 client(s) in 102µs: 0 forced (0 in-flight request(s) cut), 0 failed
//! assert_eq!(report.closed, 1);
//! assert!(manager.client().await.unwrap_err().is_shut_down());
//! # Ok(()) }
//! ```
//!
//! `examples/graceful_shutdown.rs` is a proxy service that does this on Ctrl-C/SIGTERM.
//!
//! [`shutdown_all`] does it for every manager of the process at once — HTTP, reqwest and
//! your own — against one deadline, one failure never stopping the rest, with one report
//! line per manager (name them with [`ManagerBuilder::name`]):
//!
//! ```no_run
//! # async fn serve_until_sigterm() {}
//! # #[tokio::main]
//! # async fn main() {
//! serve_until_sigterm().await;
//! let report = rtlocal::shutdown_all(std::time::Duration::from_secs(5)).await;
//! eprintln!("{report}");
//! // shut down 3 manager(s) in 1.01s: 5 client(s) closed, 1 forced, 0 failed
//! //   http: closed 2 client(s) in 1.01s: 1 forced (3 in-flight request(s) cut), 0 failed
//! //   …
//! # }
//! ```
//!
//! ## reqwest (feature `reqwest`)
//!
//! [`ReqwestManager`] hands out `reqwest::Client`s with the same lifecycle; the handle
//! derefs to `reqwest::Client`:
//!
//! ```ignore
//! use std::sync::LazyLock;
//! use rtlocal::{ReqwestFactory, ReqwestManager};
//!
//! static HTTP: LazyLock<ReqwestManager> =
//!     LazyLock::new(|| ReqwestManager::new(ReqwestFactory::new()));
//!
//! let text = HTTP.client().await?.get("http://127.0.0.1:8080/").send().await?.text().await?;
//! ```
//!
//! ## PostgreSQL, Redis and gRPC clients
//!
//! The workspace's integration crates manage the clients users hit this with most:
//! `rtlocal-sqlx` (`PgManager`: sqlx `PgPool`s), `rtlocal-redis` (`RedisManager`: redis
//! `ConnectionManager`s, built asynchronously) and `rtlocal-tonic` (`ChannelManager`:
//! tonic `Channel`s). A `static` one serves every `#[tokio::test]` of a binary, each
//! test's runtime getting its own pool, connection or channel:
//!
//! ```ignore
//! use std::sync::LazyLock;
//! use rtlocal_sqlx::{PgManager, PgPoolFactory};
//!
//! static DB: LazyLock<PgManager> = LazyLock::new(|| {
//!     PgManager::new(PgPoolFactory::from_url("postgres://app@127.0.0.1/app").unwrap())
//! });
//!
//! #[tokio::test]
//! async fn counts_orders() {
//!     let pool = DB.client().await.unwrap(); // derefs to `PgPool`
//!     let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
//!         .fetch_one(&*pool).await.unwrap();
//!     assert!(n >= 0);
//! }
//! ```
//!
//! Each crate's docs say what "closed" means for its client and what cannot be closed
//! while its runtime idles; `integrations/rtlocal-all/examples/task_runner_all.rs` runs a
//! task-runner pool that uses all of them and ends with [`shutdown_all`].
//!
//! ## One client per runtime
//!
//! By default each thread has its own client. On a `multi_thread` runtime,
//! [`Sharing::PerRuntime`] gives all its workers one client and so one connection pool:
//! fewer connections when tasks hop between workers (see Performance), the same
//! guarantees otherwise.
//!
//! ```
//! use rtlocal::{HttpClientManager, Sharing};
//!
//! let manager = HttpClientManager::builder().sharing(Sharing::PerRuntime).build()?;
//! # Ok::<(), rtlocal::Error>(())
//! ```
//!
//! ## Any client type
//!
//! Implement [`ClientFactory`] (build a client for a runtime; optionally close it,
//! asynchronously and bounded) and use [`Manager`]: slots, replacement, teardown release,
//! `close_all`, `shutdown` and stats come with it. See the trait's example.
//!
//! ## Teardown callbacks
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
//! # Compared with the usual workarounds
//!
//! | workaround | what it gives up | rtlocal |
//! |---|---|---|
//! | one shared runtime for all HTTP | the runtimes you already have: every call crosses to the shared runtime and back; a runtime you do not own (a test's, a library's) cannot be swapped | each runtime keeps its own I/O |
//! | `pool_max_idle_per_host(0)` | connection reuse: a new TCP (and TLS) handshake for every request | pooling per runtime, with idle timeouts that work |
//! | a new client per call | pooling, and a client build per call | one client per thread and runtime, built once |
//! | `reqwest::blocking` | async: a thread per request in flight | async throughout |
//!
//! # Semantics
//!
//! * **Same thread and same live runtime → the same client** ([`Client::id`] equal).
//!   Another thread gets another client (unless [`Sharing::PerRuntime`]). The runtime is
//!   identified by `Handle::id()` *plus* a liveness token, because tokio reuses ids once a
//!   runtime is gone.
//! * **Runtime changed → close, then reset, then publish.** The stale client stops taking
//!   requests, its in-flight requests get up to the close timeout (default 5 s) to finish,
//!   then its connections are shut down on the wire; only then is the slot reset and the
//!   new client published. Concurrent callers during a replacement all receive the one new
//!   client. A close that overruns is forced, counted ([`Stats::forced_closes`]) and logged
//!   with `warn!`. A replaced client is never handed out again.
//! * **Runtime torn down → its clients are closed right then** (on `drop`,
//!   `shutdown_background` and `shutdown_timeout`, `current_thread` and `multi_thread`),
//!   not at the next use.
//! * **Closed means closed on the wire**: every socket is tracked, so closing a client
//!   shuts its connections down (the server sees them end) even when the runtime that owns
//!   their tasks is alive but idle. (For [`ReqwestFactory`], which cannot reach reqwest's
//!   sockets, see its docs and [`CloseReport::not_closed_on_wire`].)
//! * **A [`Client`] used from another runtime never hangs**: the request is transparently
//!   re-routed to the manager's client for the current thread and runtime. A client used
//!   after it was closed is re-routed the same way ([`Managed::is_open`] tells a kept
//!   handle's state). If the manager is gone, the request fails at once with
//!   [`Error::is_closed`].
//! * **Upgrades** (`101 Switching Protocols`, e.g. WebSocket) work through
//!   `hyper::upgrade::on(response)`: the upgraded connection stays tracked — counted in
//!   `Stats::connections_open` until the application drops it, left alone by
//!   `pool_idle_timeout` once the application reads or writes it (it is no pooled
//!   connection), and shut down on the wire by `close_all`/`shutdown` like any other
//!   connection (its handshake request is over once the 101 arrives, so a close does not
//!   wait for it). When its runtime is dropped while the application still holds it, the
//!   teardown shuts it down on the wire and uncounts it: it is registered with a reactor
//!   that is gone, so no read or write on it could succeed. `tests/upgrade.rs` checks each
//!   of these.
//! * **Outside a runtime**, `client()` fails at once with [`Error::is_no_runtime`].
//! * **Teardown callbacks** ([`on_runtime_shutdown`], [`on_runtime_shutdown_for`]) run
//!   exactly once, newest first, each under `catch_unwind` (a panic is logged with
//!   `error!` and counted, never propagated into the runtime's drop). Registering on a
//!   runtime that is already gone — including from inside a teardown callback — returns
//!   [`Error::is_runtime_gone`] and the callback never runs. [`CleanupHandle::cancel`]
//!   returns `true` iff the callback will never run. Callbacks are synchronous and must be
//!   quick.
//! * **Threads that exit** have their clients retired by a thread-local destructor: the
//!   client stops taking requests but stays in its slot, reachable by `close_all` and
//!   `shutdown`, while a background closer thread drains and closes it (bounded by the
//!   close timeout) — never a task queued on the client's own runtime, which may be idle
//!   (a `spawn_blocking` thread of an idle `current_thread` runtime, a runtime handed to
//!   another thread). Once closed, the exited thread's slot is dropped from the manager.
//!   `client()` called from a thread-local destructor late in a thread's teardown returns
//!   an error ([`Error::is_closed`], saying the thread is exiting), never a panic.
//! * **`shutdown(timeout)`** refuses new `client()` calls ([`Error::is_shut_down`]), lets
//!   in-flight requests finish until the deadline, then cuts the rest (they fail with
//!   [`Error::is_closed`], saying they were cut) and shuts every connection down on the
//!   wire — across every thread's slot, including slots whose runtime is idle or gone.
//!   **`close_all()`** does the same and leaves the manager usable. Both are idempotent and
//!   safe to call concurrently; each returns a [`CloseReport`]. A request counts as in
//!   flight until its response body is finished or dropped. A caller that asks for a
//!   client while its slot is being retired is never made to wait for the retirement (it
//!   may hold the very response body being drained): it gets a fresh client at once.
//! * **Builds are asynchronous** ([`ClientFactory::build`] returns a future) and run
//!   outside every lock. Callers of a slot share one build; it is bounded by
//!   [`ManagerBuilder::build_timeout`] (default 30 s; past it every waiting caller fails
//!   with [`Error::is_timeout`]); a panicking build fails every waiting caller at once with
//!   [`Error::is_build`] and frees the slot; a cancelled leader's build is dropped and the
//!   waiters build again.
//! * **User code is isolated**: a factory's `close`, `abort` or `release` that panics is
//!   contained (the client counts as closed, the panic is logged and reported in
//!   [`CloseReport::failed`]); it never escapes into `client()`, a runtime's teardown or a
//!   `close_all`.
//! * **Closes work from anywhere**: deadlines are timers of the closer's runtime, so
//!   `close_all()`/`shutdown()` awaited outside any tokio runtime (by another executor)
//!   close and report forced closes as forced, not as failures.
//! * Logging through `tracing`: `debug!` for lifecycle (created, replaced, closed, runtime
//!   gone), `warn!` only for forced closes, `error!` for callback panics.
//! * One DEBUG span per request, `http.request`, with OpenTelemetry's HTTP client fields
//!   (see [`Client::request`]); not built unless a subscriber wants DEBUG.
//!
//! # Correctness
//!
//! Every lifecycle decision lives in one tokio-free core (`src/lifecycle/`): the slot
//! state machine, the runtime entry and its teardown callbacks, the client's
//! open/closing/closed word, and the orchestration itself — acquire-or-replace (bounded
//! wait, take-over, async build), retire-all, the shutdown gate, per-runtime slots, the
//! hot cache's rule. It takes every `Arc`, `Mutex`, atomic and fence from one `sync`
//! shim; under `--cfg rtlocal_loom` the shim hands out [loom](https://docs.rs/loom)'s, and
//! the models in `loom-tests/` call the same functions the manager calls, through a fake
//! driver, at `LOOM_MAX_PREEMPTIONS=3`: callers racing a replacement (one client built,
//! the stale one closed exactly once and before the reset, never handed out again), a
//! build cancelled, failing or panicking with waiters, a stuck leader taken over,
//! `close_all` racing `client()`, a thread's exit and a forced clear, shutdown racing a
//! publish, per-runtime slot creation racing teardown, the hot cache racing `close_all`,
//! callback registration and `cancel` racing teardown.
//! [`docs/correctness.md`](https://github.com/rtlocal/rtlocal/blob/main/docs/correctness.md)
//! says what each model checks, how each can fail and what loom cannot reach. Run them
//! with `bash loom-tests/run.sh`.
//!
//! # Performance
//!
//! Every figure is measured against a baseline in the same run (the hot path of
//! `client()` against cloning a hyper-util client out of a `static`, requests against raw
//! hyper-util, runtime churn, the task-runner workload against each workaround,
//! `close_all` at scale, per-thread against per-runtime sharing):
//! [`benches/README.md`](https://github.com/rtlocal/rtlocal/blob/main/benches/README.md)
//! has the tables, the commands and what limits each figure. `client()` on an unchanged
//! runtime does not allocate (`tests/alloc.rs` asserts it).
//!
//! # Limitations
//!
//! * Connection limits (`max_connections*`) are per client, so per thread (or runtime):
//!   sharing permits across runtimes would let an idle runtime's pooled connection block
//!   busy ones — the very hang this crate removes.
//! * [`ReqwestFactory`] cannot reach reqwest's sockets: closing a reqwest client whose
//!   runtime is alive but idle leaves its connections open until that runtime runs again
//!   or is dropped.
//! * Each runtime `rtlocal` sees gets one never-finishing sentinel task (how teardown is
//!   detected: tokio has no shutdown hook).
//! * The process gets one background thread, `rtlocal-closer` (started with the first
//!   manager, with a small runtime of its own), which closes exited threads' clients and
//!   owns the timers of every close and bounded wait.
//! * The runtime needs its I/O and time drivers (`enable_all()`; `#[tokio::main]` and
//!   `#[tokio::test]` do this).
//!
//! # Cargo features
//!
//! None is on by default.
//!
//! * `rustls` — HTTPS with rustls (ring), Mozilla roots from `webpki-roots`, private CAs,
//!   ALPN (HTTP/2 over TLS).
//! * `rustls-plus-native-roots` — as `rustls`, and also trusting the operating system's
//!   root store (the Mozilla roots stay trusted).
//! * `rustls-native-roots` — the old name of `rustls-plus-native-roots`, kept for one
//!   release (removed in 0.2): it read as "the system's roots instead of Mozilla's".
//! * `reqwest` — [`ReqwestFactory`] and [`ReqwestManager`]: managed `reqwest::Client`s
//!   (reqwest with no default features; enable the reqwest features you need in your own
//!   `Cargo.toml`).
//! * `metrics` — the statistics as live metrics through the `metrics` 0.24 facade (no
//!   exporter of its own: install the recorder you want); names and attributes in
//!   [`docs/telemetry.md`](https://github.com/rtlocal/rtlocal/blob/main/docs/telemetry.md).
//!
//! Without a TLS feature the default build stays small and fast to compile, and an
//! `https` request fails with [`Error::is_connect`] saying which feature to enable, before
//! any socket opens. HTTP/2 (prior knowledge, or by ALPN) is always built in.
//!
//! # MSRV
//!
//! Rust 1.85 (edition 2024). Raising it is a minor-version change.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks
)]
// docs.rs builds with `--cfg docsrs` on nightly: feature-gated items get a badge there.
// The stable `cargo doc` never sets it.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Under the loom cfg only the modelled modules are built; helpers they share with the
// tokio side go unused there.
#![cfg_attr(rtlocal_loom, allow(dead_code))]
// The docs link to `ReqwestFactory`/`ReqwestManager`, which exist with the `reqwest`
// feature only; `cargo doc --all-features` (CI, docs.rs) checks every link.
#![cfg_attr(not(feature = "reqwest"), allow(rustdoc::broken_intra_doc_links))]

mod error;
#[cfg(not(rtlocal_loom))]
mod http;
#[cfg(not(rtlocal_loom))]
mod idmap;
#[cfg(not(rtlocal_loom))]
pub mod redact;
// `pub` items here are re-exported to the loom models under `rtlocal_loom`.
#[allow(unreachable_pub)]
mod lifecycle;
#[cfg(not(rtlocal_loom))]
mod manager;
#[cfg(all(feature = "reqwest", not(rtlocal_loom)))]
mod reqwest_factory;
mod sync;

#[cfg(not(rtlocal_loom))]
pub use api::*;
pub use error::{Error, ForeignRuntime};
pub use lifecycle::CleanupHandle;

/// Internals exposed only for the loom models in `loom-tests/`. Not part of the API.
#[cfg(rtlocal_loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::lifecycle::*;
}

#[cfg(not(rtlocal_loom))]
mod api {
    use std::sync::LazyLock;

    pub use crate::http::body::{Body, ResponseBody};
    pub use crate::http::client::Client;
    pub use crate::http::config::{Builder, Proxy};
    pub use crate::http::credentials::{
        DefaultCredentials, DefaultCredentialsFuture, DefaultCredentialsLayer,
    };
    pub use crate::http::manager::HttpClientManager;
    pub use crate::http::service::ResponseFuture;
    pub use crate::http::uri::Target;
    use crate::manager::runtime;
    pub use crate::manager::{
        ClientFactory, ClientId, CloseReport, Managed, Manager, ManagerBuilder, ManagerReport,
        RequestGuard, Sharing, ShutdownReport, Stats, runtime_is_running, shutdown_all, sleep,
    };
    #[cfg(feature = "reqwest")]
    pub use crate::reqwest_factory::{ReqwestFactory, ReqwestManager};
    use crate::{CleanupHandle, Error};

    static DEFAULT: LazyLock<HttpClientManager> = LazyLock::new(HttpClientManager::new);

    /// The process-wide default manager, used by [`client`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rtlocal::Error> {
    /// let client = rtlocal::client().await?;
    /// assert_eq!(rtlocal::default_manager().client().await?.id(), client.id());
    /// assert!(rtlocal::default_manager().stats().clients_live >= 1);
    /// # Ok(()) }
    /// ```
    pub fn default_manager() -> &'static HttpClientManager {
        &DEFAULT
    }

    /// The default manager's client for this thread and the runtime it is running on.
    ///
    /// # Errors
    /// [`Error::is_no_runtime`] at once when called outside a tokio runtime.
    ///
    /// ```
    /// // Outside a runtime: an error at once, no panic.
    /// let outside = std::thread::spawn(|| {
    ///     let fut = std::pin::pin!(rtlocal::client());
    ///     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    ///     match std::future::Future::poll(fut, &mut cx) {
    ///         std::task::Poll::Ready(r) => r.map(|_| ()),
    ///         std::task::Poll::Pending => unreachable!("fails at once"),
    ///     }
    /// });
    /// assert!(outside.join().unwrap().unwrap_err().is_no_runtime());
    ///
    /// // Inside one: this thread's client for this runtime.
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let client = rt.block_on(rtlocal::client()).unwrap();
    /// assert_eq!(client.runtime_id(), rt.handle().id());
    /// ```
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
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// let order = Arc::new(Mutex::new(Vec::new()));
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     for i in 0..3 {
    ///         let order = Arc::clone(&order);
    ///         rtlocal::on_runtime_shutdown(move || order.lock().unwrap().push(i)).unwrap();
    ///     }
    /// });
    /// drop(rt);
    /// assert_eq!(*order.lock().unwrap(), [2, 1, 0]); // newest first, each once
    /// ```
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
    ///
    /// ```
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// // From outside the runtime, by its handle.
    /// rtlocal::on_runtime_shutdown_for(rt.handle(), move || tx.send(()).unwrap()).unwrap();
    /// rt.shutdown_background();
    /// rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    /// ```
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
