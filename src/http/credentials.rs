//! [`DefaultCredentialsLayer`]: the manager's default credentials for the requests a
//! user's own request leads to through the tower layers stacked on a [`Client`] — to
//! the origin the user addressed, and only until a redirect first leaves it (the Fetch
//! standard's rule: `A → A` keeps them, `A → B` and anything after it do not).
//!
//! Why not in the request's headers, where a redirect policy would see them:
//! tower-http's `FollowRedirect` rebuilds every hop from the *first* request's headers
//! and strips only `Authorization`, `Cookie` and `Proxy-Authorization`, and only when
//! the hop leaves the *previous* hop's origin. A credential under another name would
//! reach any origin, and `A → B → B` would hand the standard ones back to `B` on the
//! second hop. So the layer keeps them out of the headers: its future makes the chain
//! (the addressed origin, the credentials, whether a hop has left it) current while it
//! polls what it wraps, and the client, which sends each hop, adds them to a request for
//! that origin until one has left it. A request the client sends outside that poll — on
//! another task, as `tower::buffer` does — gets none.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{HeaderMap, Request};

use crate::http::client::Client;
use crate::http::factory::is_credential;
use crate::http::uri::Target;

/// One user request and the requests it leads to: where it was addressed, the
/// credentials for there, and whether a hop has left it.
struct Chain {
    https: bool,
    host: String,
    port: u16,
    credentials: Arc<HeaderMap>,
    /// The manager's default headers the credentials came from: only its clients add
    /// them (another manager's request polled inside this chain gets none).
    source: Arc<HeaderMap>,
    left: AtomicBool,
    /// The chain this one was started inside (another manager's layer below a redirect
    /// layer): a request to another origin has left it too.
    parent: Option<Arc<Chain>>,
}

impl Chain {
    fn is_origin_of(&self, target: &Target<'_>) -> bool {
        target.https == self.https
            && target.port == self.port
            && target.host.eq_ignore_ascii_case(&self.host)
    }
}

thread_local! {
    /// The chain whose future is being polled on this thread.
    static CHAIN: RefCell<Option<Arc<Chain>>> = const { RefCell::new(None) };
}

/// Makes `chain` current for the life of the guard, and the previous one again after.
struct Current(Option<Arc<Chain>>);

impl Current {
    fn enter(chain: &Option<Arc<Chain>>) -> Current {
        // `try_with`: polled during the thread's teardown, there is no chain (and no
        // credentials), never a panic.
        Current(CHAIN.try_with(|c| c.replace(chain.clone())).ok().flatten())
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let previous = self.0.take();
        // `try_with`: a future dropped during the thread's teardown must not panic.
        let _ = CHAIN.try_with(|c| *c.borrow_mut() = previous);
    }
}

/// The client's side: adds the current chain's credentials to `req` (those it does not
/// set itself) when it goes to the chain's origin and no earlier hop has left it; marks
/// the chain left when it goes elsewhere. No chain: nothing.
pub(crate) fn add_for_chain<B>(req: &mut Request<B>, defaults: &Arc<HeaderMap>) {
    let Some(chain) = CHAIN.try_with(|c| c.borrow().clone()).ok().flatten() else {
        return;
    };
    let Ok(target) = Target::check(req.uri()) else {
        return; // refused before anything is sent
    };
    // Whichever client sends it, a request elsewhere has left every chain it is in.
    let mut mine = None;
    let mut link = Some(&chain);
    while let Some(c) = link {
        if !c.is_origin_of(&target) {
            c.left.store(true, Ordering::Relaxed);
        } else if mine.is_none() && Arc::ptr_eq(&c.source, defaults) {
            mine = Some(c);
        }
        link = c.parent.as_ref();
    }
    // The credentials of this client's manager's nearest chain, for its origin.
    let Some(chain) = mine else {
        return;
    };
    if chain.left.load(Ordering::Relaxed) {
        return;
    }
    let headers = req.headers_mut();
    for name in chain.credentials.keys() {
        if !headers.contains_key(name) {
            for value in chain.credentials.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

/// A [`tower_layer::Layer`] that sends a manager's default credentials
/// ([`Builder::default_headers`](crate::Builder::default_headers) named `Authorization`,
/// `Proxy-Authorization` or `Cookie`, or marked
/// [sensitive](http::HeaderValue::set_sensitive)) with each request it wraps, to the
/// origin that request addressed, and with the redirect hops it leads to while they
/// stay on that origin: from the first hop that leaves it on, with none (the Fetch
/// standard's rule). A request that sets such a header itself keeps its own. Get it
/// from [`Client::default_credentials_layer`].
///
/// Put it *above* the redirect layer: placed only below one, it takes each hop for a
/// request of its own and sends the credentials to wherever the hop goes (stacked
/// again below, under a copy of itself above, it keeps the hops in the outer chain).
/// The client marks the chain left when a hop it sends goes elsewhere, even through
/// another manager's client and layer; a hop sent by a service that is not an rtlocal
/// client is not seen. A request an inner service makes through this same manager's
/// layer joins the outer chain (to another origin, it gets none and leaves the chain). It does not write the credentials into the
/// request a layer below it sees: the managed client adds them as it sends each hop
/// (tower-http's redirect layer rebuilds every hop from the first request's headers and
/// would restore them for `B` on an `A → B → B` chain, or pass on any credential not
/// named `Authorization`, `Cookie` or `Proxy-Authorization`). So a layer between this
/// one and the client does not see them, and a request the client sends on another
/// task (`tower::buffer` between them) goes without them. Requests sent with
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
    source: Arc<HeaderMap>,
}

/// The service of a [`DefaultCredentialsLayer`].
#[derive(Clone)]
pub struct DefaultCredentials<S> {
    inner: S,
    credentials: Arc<HeaderMap>,
    source: Arc<HeaderMap>,
}

/// The future of a [`DefaultCredentials`] service: the inner service's, polled with its
/// request's credentials chain current (see [`DefaultCredentialsLayer`]).
#[must_use = "futures do nothing unless polled"]
pub struct DefaultCredentialsFuture<F> {
    /// Boxed: pinned without `unsafe` projection (one allocation per request).
    inner: Pin<Box<F>>,
    chain: Option<Arc<Chain>>,
}

impl<F: Future> Future for DefaultCredentialsFuture<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _current = Current::enter(&this.chain);
        this.inner.as_mut().poll(cx)
    }
}

impl<F> fmt::Debug for DefaultCredentialsFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCredentialsFuture")
            .finish_non_exhaustive()
    }
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
            source: Arc::clone(defaults),
        }
    }
}

impl<S> tower_layer::Layer<S> for DefaultCredentialsLayer {
    type Service = DefaultCredentials<S>;

    fn layer(&self, inner: S) -> DefaultCredentials<S> {
        DefaultCredentials {
            inner,
            credentials: Arc::clone(&self.credentials),
            source: Arc::clone(&self.source),
        }
    }
}

impl<S, B> tower_service::Service<Request<B>> for DefaultCredentials<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DefaultCredentialsFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> DefaultCredentialsFuture<S::Future> {
        // Inside a chain of the same manager (this layer stacked again below a redirect
        // layer, under another one of itself, or a request an inner service makes
        // through it), the request stays in that chain: a new one would take a hop's
        // origin for the addressed one. Inside another manager's chain, a new one
        // starts under it, so that the other chain still sees where its hops go. A
        // layer with nothing to add (no credentials, or a URI the client will refuse)
        // leaves the current chain current.
        let current = CHAIN.try_with(|c| c.borrow().clone()).ok().flatten();
        let same_manager = current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.source, &self.source));
        let fresh = match Target::check(req.uri()) {
            Ok(target) if !same_manager && !self.credentials.is_empty() => Some(Arc::new(Chain {
                https: target.https,
                host: target.host.to_owned(),
                port: target.port,
                credentials: Arc::clone(&self.credentials),
                source: Arc::clone(&self.source),
                left: AtomicBool::new(false),
                parent: current.clone(),
            })),
            _ => None,
        };
        let chain = fresh.or(current);
        let inner = {
            let _current = Current::enter(&chain);
            Box::pin(self.inner.call(req))
        };
        DefaultCredentialsFuture { inner, chain }
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
