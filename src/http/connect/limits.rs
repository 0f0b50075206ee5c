//! [`Limits`]: the connection caps of one client, in all and per host.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection limits of one client: open sockets in all, and per host.
///
/// Permits are owned by the socket and returned when it closes, so every path (success,
/// error, timeout, a request future dropped mid-way) returns them: there is no path that
/// forgets to.
pub(crate) struct Limits {
    total: Option<Arc<Semaphore>>,
    per_host: Option<usize>,
    hosts: parking_lot::Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The permits one socket holds.
pub(crate) struct Permits {
    _host: Option<OwnedSemaphorePermit>,
    _total: Option<OwnedSemaphorePermit>,
}

impl Limits {
    pub(crate) fn new(total: Option<usize>, per_host: Option<usize>) -> Arc<Self> {
        Arc::new(Limits {
            total: total.map(|n| Arc::new(Semaphore::new(n))),
            per_host,
            hosts: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a permit for `host` and then one in all (always in that order, so two
    /// connects cannot each hold what the other waits for).
    /// No limit is set: every acquire is immediate.
    pub(crate) fn is_unlimited(&self) -> bool {
        self.total.is_none() && self.per_host.is_none()
    }

    /// The permits for one more connection to `host`, if both are free now (a carried
    /// connection joining a client counts against its limits like a new one).
    pub(crate) fn try_acquire(&self, host: &str) -> Option<Permits> {
        let host_sem = self.per_host.map(|n| self.host_semaphore(host, n));
        let host = match host_sem {
            Some(s) => Some(s.try_acquire_owned().ok()?),
            None => None,
        };
        let total = match &self.total {
            Some(s) => Some(Arc::clone(s).try_acquire_owned().ok()?),
            None => None,
        };
        Some(Permits {
            _host: host,
            _total: total,
        })
    }

    fn host_semaphore(&self, host: &str, n: usize) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock();
        if hosts.len() >= 256 {
            hosts.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < n);
        }
        Arc::clone(
            hosts
                .entry(host.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(n))),
        )
    }

    pub(crate) async fn acquire(&self, host: &str) -> Permits {
        // Hosts nobody is connected to (only the map holds their semaphore, all permits
        // free) are forgotten, so a client that visits many hosts stays small.
        let host_sem = self.per_host.map(|n| self.host_semaphore(host, n));
        // The semaphores are never closed, so acquiring cannot fail.
        let host = match host_sem {
            Some(s) => s.acquire_owned().await.ok(),
            None => None,
        };
        let total = match &self.total {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        };
        Permits {
            _host: host,
            _total: total,
        }
    }
}
