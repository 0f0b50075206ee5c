//! Settings every [`Manager`](super::Manager) has, whatever its factory.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// Who shares one client: the threads of a runtime one each, or all of them one.
///
/// # Examples
///
/// ```
/// use rtlocal::{HttpClientManager, Sharing};
///
/// // One client (one connection pool) for all worker threads of a runtime.
/// let manager = HttpClientManager::builder().sharing(Sharing::PerRuntime).build()?;
/// # Ok::<(), rtlocal::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Sharing {
    /// One client per thread and runtime (the default). Nothing is shared between
    /// threads, so nothing contends; a `multi_thread` runtime gets one connection pool
    /// per worker thread. A thread that exits has its client closed.
    #[default]
    PerThread,
    /// One client per runtime, shared by all of its threads: one connection pool per
    /// runtime, so a `multi_thread` runtime reuses connections across its workers.
    /// Clients are closed when the runtime is torn down, not when a thread exits.
    PerRuntime,
}

/// Settings every [`Manager`] has, whatever its factory.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// What [`shutdown_all`](crate::shutdown_all)'s report calls the manager; `None`: the
    /// factory's type name.
    pub(crate) name: Option<Arc<str>>,
    pub(crate) close_timeout: Duration,
    pub(crate) build_timeout: Duration,
    pub(crate) sharing: Sharing,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: None,
            close_timeout: Duration::from_secs(5),
            build_timeout: Duration::from_secs(30),
            sharing: Sharing::PerThread,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.close_timeout.is_zero() {
            return Err(Error::config(
                "close_timeout must be greater than zero (got 0s); it bounds how long closing \
                 a client waits for in-flight requests",
            ));
        }
        if self.build_timeout.is_zero() {
            return Err(Error::config(
                "build_timeout must be greater than zero (got 0s); it bounds how long building \
                 a client may take before every caller waiting on it fails",
            ));
        }
        Ok(())
    }
}
