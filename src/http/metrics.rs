//! `http.client.request.duration` (feature `metrics`): one sample per request sent; and
//! the connection series, `http.client.open_connections` and
//! `http.client.connection.duration` ([`ConnMetrics`]).
//!
//! The duration runs from the moment the request is handed to the client to the moment
//! its response headers arrive (or it fails, or the caller drops it before then). It
//! does not include reading the body: a body can be streamed for as long as the caller
//! likes, held, or dropped half read, so its end says more about the caller than about
//! the server; `http.client.active_requests` covers requests until their body ends. Go's
//! `otelhttp` transport records it at the same point, when its round trip returns (the
//! semantic conventions leave the end point open).
//!
//! The attributes are per request (`http.request.method`, `server.address`,
//! `server.port`, `http.response.status_code` or `error.type`, `rtlocal.manager`), so
//! each sample asks the recorder for its histogram by key: one lookup and a few small
//! allocations per request, only with the feature on.

use std::time::Instant;

use http::{Method, Request, Response};
use metrics::{
    Gauge, Histogram, Label, Unit, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::error::Error;
use crate::http::exchange::error_type;
use crate::http::factory::HyperParts;
use crate::manager::metrics::MANAGER;

pub(crate) const REQUEST_DURATION: &str = "http.client.request.duration";
pub(crate) const OPEN_CONNECTIONS: &str = "http.client.open_connections";
pub(crate) const CONNECTION_DURATION: &str = "http.client.connection.duration";

/// Describes this layer's series to the installed recorder (idempotent); called when an
/// [`HttpClientManager`](crate::HttpClientManager) is built.
pub(crate) fn describe() {
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "duration of HTTP client requests, to the response headers"
    );
    describe_gauge!(
        OPEN_CONNECTIONS,
        Unit::Count,
        "connections open now, by state (idle, active) and server"
    );
    describe_histogram!(
        CONNECTION_DURATION,
        Unit::Seconds,
        "how long connections stayed open, from connect to close"
    );
}

/// One connection's series: `http.client.open_connections` with
/// `http.connection.state` `idle` or `active`, and `http.client.connection.duration`,
/// each with `server.address`, `server.port` (the origin's, also through a proxy) and
/// `rtlocal.manager`. The handles are looked up once, when the connection opens; a state
/// change moves one gauge down and the other up.
pub(crate) struct ConnMetrics {
    idle: Gauge,
    active: Gauge,
    duration: Histogram,
    opened: Instant,
}

impl ConnMetrics {
    /// A connection to `host:port` opens, idle.
    pub(crate) fn open(manager: &str, host: &str, port: u16) -> ConnMetrics {
        let labels = |state: Option<&'static str>| {
            let mut labels = vec![
                Label::new("server.address", host.to_owned()),
                Label::new("server.port", port.to_string()),
                Label::new(MANAGER, manager.to_owned()),
            ];
            if let Some(state) = state {
                labels.push(Label::new("http.connection.state", state));
            }
            labels
        };
        let m = ConnMetrics {
            idle: gauge!(OPEN_CONNECTIONS, labels(Some("idle"))),
            active: gauge!(OPEN_CONNECTIONS, labels(Some("active"))),
            duration: histogram!(CONNECTION_DURATION, labels(None)),
            opened: Instant::now(),
        };
        m.idle.increment(1.0);
        m
    }

    /// The connection went from idle to active (`true`) or back.
    pub(crate) fn moved(&self, active: bool) {
        let (from, to) = if active {
            (&self.idle, &self.active)
        } else {
            (&self.active, &self.idle)
        };
        from.decrement(1.0);
        to.increment(1.0);
    }

    /// The connection closed in state `active` (or idle).
    pub(crate) fn closed(&self, active: bool) {
        if active {
            self.active.decrement(1.0);
        } else {
            self.idle.decrement(1.0);
        }
        self.duration.record(self.opened.elapsed().as_secs_f64());
    }
}

/// Times one request; records when it ends ([`end`](RequestTimer::end)) or, if the
/// request future is dropped first, on drop with `error.type = "cancelled"`.
pub(crate) struct RequestTimer {
    start: Instant,
    /// `None` once recorded.
    labels: Option<Vec<Label>>,
}

impl RequestTimer {
    pub(crate) fn start<B>(client: &HyperParts, req: &Request<B>) -> RequestTimer {
        let uri = req.uri();
        // In any case: a URI built with `Uri::builder().scheme("HTTPS")` keeps it.
        let https = uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let manager = client.counters.manager.get().map_or("", |m| m);
        let labels = vec![
            Label::new("http.request.method", method(req.method())),
            Label::new("server.address", uri.host().unwrap_or("").to_owned()),
            Label::new("server.port", port.to_string()),
            Label::new(MANAGER, manager.to_owned()),
        ];
        RequestTimer {
            start: Instant::now(),
            labels: Some(labels),
        }
    }

    /// Records the request's outcome: its status code, or its error's kind.
    pub(crate) fn end<B>(mut self, result: &Result<Response<B>, Error>) {
        let outcome = match result {
            Ok(resp) => Label::new(
                "http.response.status_code",
                resp.status().as_u16().to_string(),
            ),
            Err(e) => Label::new("error.type", error_type(e)),
        };
        self.record(outcome);
    }

    fn record(&mut self, outcome: Label) {
        let Some(mut labels) = self.labels.take() else {
            return;
        };
        labels.push(outcome);
        histogram!(REQUEST_DURATION, labels).record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.record(Label::new("error.type", "cancelled"));
    }
}

/// OpenTelemetry's rule: the known methods as they are, anything else `_OTHER` (an
/// attribute must not take arbitrary values).
fn method(m: &Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
    }
}
