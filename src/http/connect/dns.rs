//! [`Resolver`]: the system resolver behind an optional TTL cache ([`DnsCache`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

use crate::manager::Counters;

/// A TTL cache in front of the system resolver (`getaddrinfo`), shared by every client
/// of a manager. DNS answers do not belong to a runtime, so sharing them is safe.
///
/// Why not hickory-resolver: measured here, `hickory-resolver` 0.26 (tokio) adds 62
/// crates to this crate's 45-crate default dependency tree and ~60 s to a release build
/// on a 2-core machine, and it replaces the system's resolution (nsswitch, search
/// domains, mDNS) with its own. A fixed-TTL cache over `getaddrinfo` keeps the system's
/// answers and costs a map lookup.
#[derive(Clone)]
pub(crate) struct Resolver {
    gai: GaiResolver,
    cache: Option<Arc<DnsCache>>,
    counters: Arc<Counters>,
}

pub(crate) struct DnsCache {
    ttl: Duration,
    entries: parking_lot::Mutex<HashMap<String, (Vec<SocketAddr>, Instant)>>,
}

impl DnsCache {
    pub(crate) fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(DnsCache {
            ttl,
            entries: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    fn get(&self, host: &str) -> Option<Vec<SocketAddr>> {
        let mut entries = self.entries.lock();
        match entries.get(host) {
            Some((addrs, expires)) if *expires > Instant::now() => Some(addrs.clone()),
            Some(_) => {
                entries.remove(host);
                None
            }
            None => None,
        }
    }

    fn put(&self, host: &str, addrs: Vec<SocketAddr>) {
        const MAX_ENTRIES: usize = 4096;
        let mut entries = self.entries.lock();
        // Expired entries go when next looked up, and all of them when the table is
        // full; if it is still full, an arbitrary entry makes room (hard cap).
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        let now = Instant::now();
        // A TTL too large to add (e.g. `Duration::MAX`) means "never expires".
        let expires = now
            .checked_add(self.ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        entries.insert(host.to_owned(), (addrs, expires));
    }
}

impl Resolver {
    pub(crate) fn new(cache: Option<Arc<DnsCache>>, counters: Arc<Counters>) -> Self {
        Resolver {
            gai: GaiResolver::new(),
            cache,
            counters,
        }
    }
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, io::Error>> + Send>>;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        if let Some(addrs) = self.cache.as_ref().and_then(|c| c.get(name.as_str())) {
            return Box::pin(std::future::ready(Ok(addrs.into_iter())));
        }
        let mut gai = self.gai.clone();
        let (cache, counters) = (self.cache.clone(), Arc::clone(&self.counters));
        Box::pin(async move {
            Counters::inc(&counters.dns_lookups);
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tower_service::Service::call(&mut gai, name)
                .await?
                .collect();
            if let Some(cache) = cache {
                cache.put(&host, addrs.clone());
            }
            Ok(addrs.into_iter())
        })
    }
}
