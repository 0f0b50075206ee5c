//! The HTTP client: [`HttpClientManager`](crate::HttpClientManager), its [`Builder`](crate::Builder)
//! and the hyper-util factory behind it, the managed [`Client`](crate::Client), request and
//! response bodies, and the connector that tracks every socket. hyper-util specifics live
//! here and nowhere below.

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod connect;
pub(crate) mod credentials;
pub(crate) mod enter;
pub(crate) mod exchange;
pub(crate) mod factory;
pub(crate) mod manager;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
pub(crate) mod pool;
pub(crate) mod service;
pub(crate) mod uri;
