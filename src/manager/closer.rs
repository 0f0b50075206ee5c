//! The closer: one background thread with a small runtime of its own, for the work that
//! must not depend on a runtime somebody else drives.
//!
//! * A thread that exits hands its client's close here: the client's own runtime may be
//!   idle (a `spawn_blocking` thread of an idle `current_thread` runtime, a runtime handed
//!   to another thread) and would never run a close queued on it.
//! * Every deadline the lifecycle waits on is a timer of this runtime, so closes and
//!   bounded waits work from anywhere: inside a runtime without a time driver, or outside
//!   any runtime (`close_all()` awaited by another executor).
//!
//! Started with the first manager (or on first use); it lives as long as the process.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

static CLOSER: OnceLock<Option<Handle>> = OnceLock::new();

/// The closer's runtime, started on first use; `None` if the thread could not be started.
pub(crate) fn handle() -> Option<&'static Handle> {
    CLOSER.get_or_init(start).as_ref()
}

#[cold]
fn start() -> Option<Handle> {
    let rt = match Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "could not build the closer runtime; closes that need it are forced");
            return None;
        }
    };
    let handle = rt.handle().clone();
    let spawned = std::thread::Builder::new()
        .name("rtlocal-closer".to_owned())
        .spawn(move || rt.block_on(std::future::pending::<()>()));
    match spawned {
        Ok(_) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "could not start the closer thread; closes that need it are forced");
            None
        }
    }
}

/// Runs `fut` on the closer. Returns `false` (and drops `fut` at once) if the closer
/// could not be started.
pub(crate) fn spawn<F>(fut: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    match handle() {
        Some(h) => {
            drop(h.spawn(fut));
            true
        }
        None => false,
    }
}
