//! [`TrackingExecutor`]: the executor hyper-util spawns every connection task through.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::http::connect::tracker::ConnTracker;

/// The executor given to hyper-util: spawns on the client's own runtime, tracked.
#[derive(Clone)]
pub(crate) struct TrackingExecutor {
    pub(crate) handle: Handle,
    pub(crate) tracker: Arc<ConnTracker>,
}

impl<F> hyper::rt::Executor<F> for TrackingExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.tracker.spawn(&self.handle, fut);
    }
}
