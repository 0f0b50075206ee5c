//! [`DefaultCredentialsLayer`]: the manager's default credentials, added *above* the
//! tower layers a user stacks on a [`Client`], so a redirect policy sees them and can
//! strip them on a hop to another origin.
//!
//! Why not in the client, as the other default headers are: the client is the innermost
//! service. tower-http's `FollowRedirectLayer` strips `Authorization`, `Cookie` and
//! `Proxy-Authorization` on a cross-origin hop, and a client adding its defaults back
//! below the layer would hand them to that other origin. So a request that reaches the
//! client through its tower `Service` gets every default header except credentials, and
//! this layer, placed above the redirect layer, adds those to the user's own request.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request};

use crate::http::client::Client;
use crate::http::factory::is_credential;

/// A [`tower_layer::Layer`] that adds a manager's default credentials
/// ([`Builder::default_headers`](crate::Builder::default_headers) named `Authorization`,
/// `Proxy-Authorization` or `Cookie`, or marked
/// [sensitive](http::HeaderValue::set_sensitive)) to each request that does not set them
/// itself. Get it from [`Client::default_credentials_layer`].
///
/// Put it *above* any redirect layer: the redirect policy then sees the credentials as
/// part of the user's request, keeps them on a same-origin hop and strips them on a
/// cross-origin one (tower-http's standard policy does). Requests sent with
/// [`Client::request`] and [`Client::get`] carry every default header, credentials
/// included: nothing follows redirects there.
///
/// ```no_run
/// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_http::follow_redirect::FollowRedirectLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let mut defaults = HeaderMap::new();
/// defaults.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
/// let manager = rtlocal::HttpClientManager::builder().default_headers(defaults).build()?;
/// let client = manager.client().await?;
/// let api = ServiceBuilder::new()
///     .layer(client.default_credentials_layer()) // above the redirect layer
///     .layer(FollowRedirectLayer::new())
///     .service(client);
/// let req = http::Request::get("http://127.0.0.1:8080/").body(rtlocal::Body::empty())?;
/// let _resp = api.oneshot(req).await?; // a redirect to another host loses the token
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DefaultCredentialsLayer {
    credentials: Arc<HeaderMap>,
}

/// The service of a [`DefaultCredentialsLayer`].
#[derive(Clone)]
pub struct DefaultCredentials<S> {
    inner: S,
    credentials: Arc<HeaderMap>,
}

impl Client {
    /// A layer adding this client's manager's default credentials above the layers it
    /// wraps: see [`DefaultCredentialsLayer`]. Requests through the client's tower
    /// `Service` get every other default header from the client itself.
    pub fn default_credentials_layer(&self) -> DefaultCredentialsLayer {
        let defaults = &self.inner.default_headers;
        let mut credentials = HeaderMap::new();
        for name in defaults.keys() {
            if is_credential(defaults, name) {
                for value in defaults.get_all(name) {
                    let mut value = value.clone();
                    value.set_sensitive(true);
                    credentials.append(name.clone(), value);
                }
            }
        }
        DefaultCredentialsLayer {
            credentials: Arc::new(credentials),
        }
    }
}

impl<S> tower_layer::Layer<S> for DefaultCredentialsLayer {
    type Service = DefaultCredentials<S>;

    fn layer(&self, inner: S) -> DefaultCredentials<S> {
        DefaultCredentials {
            inner,
            credentials: Arc::clone(&self.credentials),
        }
    }
}

impl<S, B> tower_service::Service<Request<B>> for DefaultCredentials<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let headers = req.headers_mut();
        for name in self.credentials.keys() {
            if !headers.contains_key(name) {
                for value in self.credentials.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        self.inner.call(req)
    }
}

/// Names the credentials it adds, never their values.
impl fmt::Debug for DefaultCredentialsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCredentialsLayer")
            .field("headers", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<S: fmt::Debug> fmt::Debug for DefaultCredentials<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCredentials")
            .field("inner", &self.inner)
            .field("headers", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}
