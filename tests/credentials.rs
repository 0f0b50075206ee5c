//! Default credentials never follow a redirect to another origin. With `Authorization`
//! and `Cookie` in `Builder::default_headers` and tower-http's `FollowRedirectLayer` over
//! the client, a 302 from the API to another host must not deliver them there — whether
//! or not the user put `DefaultCredentialsLayer` above the redirect layer. Judged by
//! what each real server saw.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::HANG_GUARD;
use http::header::{AUTHORIZATION, COOKIE, LOCATION, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rtlocal::{Body, HttpClientManager};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::FollowRedirectLayer;

const TOKEN: &str = "Bearer s3cret-token";
const SESSION: &str = "session=s3cret-cookie";
const CUSTOM: HeaderName = HeaderName::from_static("x-default");
/// A credential under a name of its own, marked sensitive.
const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const KEY: &str = "s3cret-key";

/// What a server saw of one request.
#[derive(Clone, Debug, Default)]
struct Seen {
    path: String,
    authorization: Option<String>,
    cookie: Option<String>,
    custom: Option<String>,
    api_key: Option<String>,
    user_agent: Option<String>,
}

/// A hyper server on `ip`: `/cross` → 302 to `cross_to` (another server's `/landing`),
/// `/cross-same` and `/cross-back` → 302 to that server's `/same` and `/back`, `/same`
/// → 302 to `/landing`, `/back` → 302 to `back_to`, anything else → 200. Records every
/// request's credentials.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    cross_to: Arc<Mutex<String>>,
    back_to: Arc<Mutex<String>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start(ip: &str) -> Server {
        let rt = common::server_rt();
        let (listener, addr) = common::bind_on(&rt, ip);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cross_to = Arc::new(Mutex::new(String::new()));
        let back_to = Arc::new(Mutex::new(String::new()));
        let (seen2, cross2, back2) = (
            Arc::clone(&seen),
            Arc::clone(&cross_to),
            Arc::clone(&back_to),
        );
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, cross, back) =
                    (Arc::clone(&seen2), Arc::clone(&cross2), Arc::clone(&back2));
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let to = Targets {
                            cross: cross.lock().expect("cross_to").clone(),
                            back: back.lock().expect("back_to").clone(),
                        };
                        answer(req, Arc::clone(&seen), to)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server {
            addr,
            seen,
            cross_to,
            back_to,
            rt: Some(rt),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Where a server's redirects go.
struct Targets {
    cross: String,
    back: String,
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    to: Targets,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = req.uri().path().to_owned();
    seen.lock().expect("seen").push(Seen {
        path: path.clone(),
        authorization: header(&AUTHORIZATION),
        cookie: header(&COOKIE),
        custom: header(&CUSTOM),
        api_key: header(&API_KEY),
        user_agent: header(&USER_AGENT),
    });
    let redirect = |to: String| {
        Response::builder()
            .status(StatusCode::FOUND)
            .header(LOCATION, to)
            .body(Full::new(Bytes::from_static(b"moved")))
    };
    let resp = match path.as_str() {
        "/cross" => redirect(to.cross),
        "/cross-same" => redirect(to.cross.replace("/landing", "/same")),
        "/cross-back" => redirect(to.cross.replace("/landing", "/back")),
        "/same" => redirect("/landing".to_owned()),
        "/back" => redirect(to.back),
        _ => Response::builder().body(Full::new(Bytes::from_static(b"ok"))),
    };
    Ok(resp.expect("valid response"))
}

/// The API on 127.0.0.1, redirecting `/cross` to another host, 127.0.0.2.
fn servers() -> (Server, Server) {
    let api = Server::start("127.0.0.1");
    let other = Server::start("127.0.0.2");
    *api.cross_to.lock().expect("cross_to") = other.url("/landing");
    *other.back_to.lock().expect("back_to") = api.url("/landing");
    (api, other)
}

fn manager() -> HttpClientManager {
    let mut defaults = HeaderMap::new();
    defaults.insert(AUTHORIZATION, HeaderValue::from_static(TOKEN));
    defaults.insert(COOKIE, HeaderValue::from_static(SESSION));
    defaults.insert(CUSTOM, HeaderValue::from_static("plain"));
    let mut key = HeaderValue::from_static(KEY);
    key.set_sensitive(true);
    defaults.insert(API_KEY, key);
    HttpClientManager::builder()
        .default_headers(defaults)
        .build()
        .expect("a manager")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("a request")
}

fn run<F: std::future::Future>(fut: F) -> F::Output {
    common::block_on_guarded(&common::current_thread_rt(), fut)
}

/// GETs `url` through tower-http's redirect layer over `manager`'s client, with the
/// credentials layer above it when `with_layer`, and expects a 200 in the end.
fn follow(manager: &HttpClientManager, url: &str, with_layer: bool) {
    run(async {
        let client = manager.client().await.expect("client");
        let credentials = with_layer.then(|| client.default_credentials_layer());
        let svc = ServiceBuilder::new()
            .option_layer(credentials)
            .layer(FollowRedirectLayer::new())
            .service(client);
        let resp = tokio::time::timeout(HANG_GUARD, svc.oneshot(get(url)))
            .await
            .expect("hang guard")
            .expect("redirected response");
        assert_eq!(resp.status(), StatusCode::OK);
    });
}

fn carries_credentials(s: &Seen) -> bool {
    s.authorization.is_some() || s.cookie.is_some() || s.api_key.is_some()
}

/// The recommended stack: the credentials layer above the redirect layer. The API gets
/// them; the other host gets neither, but still every other default header.
#[test]
fn with_the_credentials_layer_the_api_gets_them_and_another_host_never() {
    let (api, other) = servers();
    let manager = manager();
    follow(&manager, &api.url("/cross"), true);
    let (api_seen, other_seen) = (api.seen(), other.seen());
    assert_eq!(api_seen.len(), 1, "{api_seen:?}");
    assert_eq!(api_seen[0].authorization.as_deref(), Some(TOKEN));
    assert_eq!(api_seen[0].cookie.as_deref(), Some(SESSION));
    assert_eq!(
        other_seen.len(),
        1,
        "the redirect was not followed: {other_seen:?}"
    );
    assert!(
        !carries_credentials(&other_seen[0]),
        "default credentials reached another host: {other_seen:?}"
    );
    assert_eq!(other_seen[0].custom.as_deref(), Some("plain"));
    assert!(other_seen[0].user_agent.is_some(), "{other_seen:?}");
}

/// The stack without the credentials layer (the shape the README showed before): the
/// client adds no credentials below the redirect layer, so the other host gets none.
#[test]
fn without_the_layer_credentials_are_not_added_back_below_the_redirect() {
    let (api, other) = servers();
    let manager = manager();
    follow(&manager, &api.url("/cross"), false);
    let other_seen = other.seen();
    assert_eq!(other_seen.len(), 1, "{other_seen:?}");
    assert!(
        !carries_credentials(&other_seen[0]),
        "default credentials reached another host: {other_seen:?}"
    );
    assert_eq!(api.seen().len(), 1);
}

/// A same-origin hop keeps them: the user's request would have carried them there.
#[test]
fn a_same_origin_redirect_keeps_them() {
    let (api, _other) = servers();
    let manager = manager();
    follow(&manager, &api.url("/same"), true);
    let seen = api.seen();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/same", "/landing"]);
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some(TOKEN), "{seen:?}");
        assert_eq!(s.cookie.as_deref(), Some(SESSION), "{seen:?}");
        assert_eq!(s.api_key.as_deref(), Some(KEY), "{seen:?}");
    }
}

/// `A → B → B`: tower-http's redirect layer rebuilds each hop from the first request's
/// headers and strips credentials only when a hop leaves the previous hop's origin, so
/// credentials in the headers would be back for `B` on the second hop, and one under
/// its own name (`x-api-key`) would reach `B` on the first. Neither hop gets any.
#[test]
fn after_a_hop_to_another_origin_no_hop_gets_them() {
    let (api, other) = servers();
    let manager = manager();
    follow(&manager, &api.url("/cross-same"), true);
    let api_seen = api.seen();
    assert_eq!(api_seen.len(), 1, "{api_seen:?}");
    assert!(carries_credentials(&api_seen[0]), "{api_seen:?}");
    assert_eq!(api_seen[0].api_key.as_deref(), Some(KEY));
    let other_seen = other.seen();
    let paths: Vec<_> = other_seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/same", "/landing"]);
    for s in &other_seen {
        assert!(
            !carries_credentials(s),
            "default credentials reached another origin: {other_seen:?}"
        );
        assert_eq!(s.custom.as_deref(), Some("plain"), "{other_seen:?}");
    }
}

/// `A → B → A`: once a hop has left the addressed origin, coming back does not bring
/// the credentials back (the Fetch standard's rule: `B` chose where the chain went).
#[test]
fn a_chain_that_left_the_origin_does_not_get_them_back() {
    let (api, other) = servers();
    let manager = manager();
    follow(&manager, &api.url("/cross-back"), true);
    let seen = api.seen();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/cross-back", "/landing"]);
    assert!(carries_credentials(&seen[0]), "{seen:?}");
    assert!(!carries_credentials(&seen[1]), "{seen:?}");
    assert_eq!(other.seen().len(), 1);
    assert!(!carries_credentials(&other.seen()[0]));
}

/// The chain's credentials are its manager's: a request of another manager's client,
/// sent while the chain is being polled (here, by the service the layer wraps), gets
/// none, even to the same origin.
#[test]
fn another_managers_request_inside_the_chain_does_not_get_them() {
    let (api, _other) = servers();
    let with = manager();
    let without = HttpClientManager::new();
    run(async {
        let mine = with.client().await.expect("client");
        let theirs = without.client().await.expect("client");
        let svc = ServiceBuilder::new()
            .layer(mine.default_credentials_layer())
            .service(tower::service_fn(move |req: Request<Body>| {
                theirs.clone().oneshot(req)
            }));
        let resp = tokio::time::timeout(HANG_GUARD, svc.oneshot(get(&api.url("/x"))))
            .await
            .expect("hang guard")
            .expect("a response");
        assert_eq!(resp.status(), StatusCode::OK);
    });
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!carries_credentials(&seen[0]), "{seen:?}");
}

/// The layer stacked again below the redirect layer (under another one of itself) keeps
/// the hops in the outer chain: the hop to another host gets none.
#[test]
fn a_second_layer_below_the_redirect_layer_adds_nothing_to_another_host() {
    let (api, other) = servers();
    let manager = manager();
    run(async {
        let client = manager.client().await.expect("client");
        let svc = ServiceBuilder::new()
            .layer(client.default_credentials_layer())
            .layer(FollowRedirectLayer::new())
            .layer(client.default_credentials_layer())
            .service(client);
        let resp = tokio::time::timeout(HANG_GUARD, svc.oneshot(get(&api.url("/cross"))))
            .await
            .expect("hang guard")
            .expect("redirected response");
        assert_eq!(resp.status(), StatusCode::OK);
    });
    assert!(carries_credentials(&api.seen()[0]));
    let other_seen = other.seen();
    assert_eq!(other_seen.len(), 1, "{other_seen:?}");
    assert!(!carries_credentials(&other_seen[0]), "{other_seen:?}");
}

/// A hop sent through another manager's client still counts as leaving the origin:
/// `A → B` (sent by the other client) `→ A` gets none after `A`.
#[test]
fn a_hop_through_another_client_still_leaves_the_origin() {
    let (api, other) = servers();
    let with = manager();
    let without = HttpClientManager::new();
    let other_port = other.addr.port();
    run(async {
        let mine = with.client().await.expect("client");
        let theirs = without.client().await.expect("client");
        let svc = ServiceBuilder::new()
            .layer(mine.default_credentials_layer())
            .layer(FollowRedirectLayer::new())
            .service(tower::service_fn(move |req: Request<Body>| {
                let client = if req.uri().port_u16() == Some(other_port) {
                    theirs.clone()
                } else {
                    mine.clone()
                };
                client.oneshot(req)
            }));
        let resp = tokio::time::timeout(HANG_GUARD, svc.oneshot(get(&api.url("/cross-back"))))
            .await
            .expect("hang guard")
            .expect("redirected response");
        assert_eq!(resp.status(), StatusCode::OK);
    });
    let seen = api.seen();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/cross-back", "/landing"]);
    assert!(carries_credentials(&seen[0]), "{seen:?}");
    assert!(!carries_credentials(&seen[1]), "{seen:?}");
    assert!(!carries_credentials(&other.seen()[0]));
}

/// The same with the other client behind its own manager's credentials layer (its own
/// chain, under this one): `B` is that manager's business, and this chain still sees
/// the hop leave `A`, so `A` gets none of this manager's credentials after it.
#[test]
fn a_hop_through_another_managers_layer_still_leaves_the_origin() {
    let (api, other) = servers();
    let with = manager();
    let mut theirs_defaults = HeaderMap::new();
    theirs_defaults.insert(AUTHORIZATION, HeaderValue::from_static("Bearer theirs"));
    let theirs_manager = HttpClientManager::builder()
        .default_headers(theirs_defaults)
        .build()
        .expect("a manager");
    let other_port = other.addr.port();
    run(async {
        let mine = with.client().await.expect("client");
        let theirs = theirs_manager.client().await.expect("client");
        let theirs_layer = theirs.default_credentials_layer();
        let svc = ServiceBuilder::new()
            .layer(mine.default_credentials_layer())
            .layer(FollowRedirectLayer::new())
            .service(tower::service_fn(move |req: Request<Body>| {
                let (mine, theirs, layer) = (mine.clone(), theirs.clone(), theirs_layer.clone());
                async move {
                    if req.uri().port_u16() == Some(other_port) {
                        ServiceBuilder::new()
                            .layer(layer)
                            .service(theirs)
                            .oneshot(req)
                            .await
                    } else {
                        mine.oneshot(req).await
                    }
                }
            }));
        let resp = tokio::time::timeout(HANG_GUARD, svc.oneshot(get(&api.url("/cross-back"))))
            .await
            .expect("hang guard")
            .expect("redirected response");
        assert_eq!(resp.status(), StatusCode::OK);
    });
    let seen = api.seen();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/cross-back", "/landing"]);
    assert!(carries_credentials(&seen[0]), "{seen:?}");
    assert!(!carries_credentials(&seen[1]), "{seen:?}");
    let other_seen = other.seen();
    assert_eq!(
        other_seen[0].authorization.as_deref(),
        Some("Bearer theirs")
    );
    assert!(other_seen[0].cookie.is_none() && other_seen[0].api_key.is_none());
}

/// Direct calls (no layers, nothing follows redirects) carry every default header.
#[test]
fn direct_requests_carry_every_default() {
    let (api, other) = servers();
    let manager = manager();
    run(async {
        let client = manager.client().await.expect("client");
        let resp = client.get(&api.url("/cross")).await.expect("a response");
        assert_eq!(resp.status(), StatusCode::FOUND);
        let resp = client
            .request(get(&api.url("/x")))
            .await
            .expect("a response");
        assert_eq!(resp.status(), StatusCode::OK);
    });
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some(TOKEN), "{seen:?}");
        assert_eq!(s.cookie.as_deref(), Some(SESSION), "{seen:?}");
    }
    assert!(other.seen().is_empty());
}

/// The layer never shows a credential's value in `Debug`.
#[test]
fn the_layer_names_credentials_but_never_shows_them() {
    let manager = manager();
    let shown = run(async {
        let client = manager.client().await.expect("client");
        format!("{:?}", client.default_credentials_layer())
    });
    assert!(
        shown.contains("authorization") && shown.contains("cookie"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}
