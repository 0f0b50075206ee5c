//! [`Builder`]: one validated configuration for every client a manager builds.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;

use crate::error::Error;
use crate::manager::HttpClientManager;

/// The resolved settings, shared by every client of one manager.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) close_timeout: Duration,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) pool_idle_timeout: Option<Duration>,
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) tcp_nodelay: bool,
    pub(crate) user_agent: Option<HeaderValue>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            close_timeout: Duration::from_secs(5),
            connect_timeout: Some(Duration::from_secs(10)),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            tcp_nodelay: true,
            user_agent: Some(HeaderValue::from_static(concat!(
                "rtlocal/",
                env!("CARGO_PKG_VERSION")
            ))),
        }
    }
}

/// Configures an [`HttpClientManager`].
///
/// Every setter states its default. Settings that can be turned off take
/// `impl Into<Option<_>>`: pass `None` to turn them off.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let manager = rtlocal::HttpClientManager::builder()
///     .close_timeout(Duration::from_secs(2))
///     .pool_idle_timeout(Duration::from_secs(30))
///     .build()?;
/// # Ok::<(), rtlocal::Error>(())
/// ```
///
/// Nonsense is rejected with an error naming the setting:
///
/// ```
/// let err = rtlocal::HttpClientManager::builder()
///     .close_timeout(std::time::Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert!(err.is_config());
/// assert!(err.to_string().contains("close_timeout"));
/// ```
#[derive(Clone)]
pub struct Builder {
    config: Config,
    user_agent_error: Option<String>,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            config: Config::default(),
            user_agent_error: None,
        }
    }

    /// How long closing a stale client (on a runtime change) or `close_all` waits for
    /// in-flight requests before it forces the connections shut. Must be greater than zero.
    ///
    /// Default is 5 seconds.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Deadline for establishing a TCP connection. `None` waits as long as the OS does.
    ///
    /// Default is 10 seconds.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.connect_timeout = timeout.into();
        self
    }

    /// How long an idle pooled connection is kept before it is closed. `None` keeps idle
    /// connections until the client is closed.
    ///
    /// Default is 90 seconds.
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.pool_idle_timeout = timeout.into();
        self
    }

    /// The most idle connections kept per host. `0` disables pooling.
    ///
    /// Default is unlimited (`usize::MAX`).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.config.pool_max_idle_per_host = max;
        self
    }

    /// Sets `TCP_NODELAY` on new connections.
    ///
    /// Default is `true`.
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.config.tcp_nodelay = nodelay;
        self
    }

    /// The `User-Agent` sent when a request has none. `None` sends none.
    ///
    /// Default is `rtlocal/<version>`.
    pub fn user_agent(mut self, user_agent: Option<&str>) -> Self {
        self.user_agent_error = None;
        self.config.user_agent = match user_agent.map(HeaderValue::from_str).transpose() {
            Ok(v) => v,
            Err(_) => {
                self.user_agent_error = Some(format!("{user_agent:?}"));
                None
            }
        };
        self
    }

    /// Validates the settings and builds the manager.
    ///
    /// # Errors
    /// [`Error::is_config`] with a message naming the setting and the value when a
    /// timeout is zero or the user agent is not a valid header value.
    pub fn build(self) -> Result<HttpClientManager, Error> {
        let c = &self.config;
        if c.close_timeout.is_zero() {
            return Err(Error::config(
                "close_timeout must be greater than zero (got 0s); it bounds how long closing \
                 a client waits for in-flight requests",
            ));
        }
        if c.connect_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::config(
                "connect_timeout must be greater than zero (got 0s); pass None to turn it off",
            ));
        }
        if c.pool_idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::config(
                "pool_idle_timeout must be greater than zero (got 0s); pass None to keep idle \
                 connections, or pool_max_idle_per_host(0) to disable pooling",
            ));
        }
        if let Some(ua) = &self.user_agent_error {
            return Err(Error::config(format!(
                "user_agent {ua} is not a valid header value"
            )));
        }
        Ok(HttpClientManager::from_config(self.config))
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish()
    }
}
