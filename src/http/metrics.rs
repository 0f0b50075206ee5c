//! `http.client.request.duration` (feature `metrics`): one sample per request sent.
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
use metrics::{Label, Unit, describe_histogram, histogram};

use crate::error::Error;
use crate::http::exchange::error_type;
use crate::http::factory::HyperParts;
use crate::manager::metrics::MANAGER;

pub(crate) const REQUEST_DURATION: &str = "http.client.request.duration";

pub(crate) fn describe() {
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "duration of HTTP client requests, to the response headers"
    );
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
        let https = uri.scheme_str() == Some("https");
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
