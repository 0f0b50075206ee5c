//! A managed channel dials exactly where its URI says, or nowhere: out-of-range, zero,
//! empty and non-numeric ports, credentials and non-http schemes are refused (by
//! `from_shared`, and by the connector when the endpoint was built by hand), and an
//! `https` endpoint without TLS sends nothing in cleartext. Judged by listeners that
//! count what reaches them: one on the port the URI names and, when this process may
//! bind it, one on port 80, where `http`'s "no port" would otherwise send the call.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rtlocal_testkit::current_thread;
use rtlocal_testkit::grpc::check;
use rtlocal_tonic::{ChannelFactory, ChannelManager};
use tonic::transport::Endpoint;

/// Counts the connections and bytes that reach a listener.
struct Witness {
    port: u16,
    accepted: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Witness {
    fn on(addr: &str) -> Option<Witness> {
        let listener = TcpListener::bind(addr).ok()?;
        let port = listener.local_addr().ok()?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (a, b) = (accepted.clone(), bytes.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                std::thread::spawn(move || read_all(&mut conn, &b));
            }
        });
        Some(Witness {
            port,
            accepted,
            bytes,
        })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
}

fn read_all(conn: &mut TcpStream, bytes: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        bytes.fetch_add(n, Ordering::SeqCst);
    }
}

/// URIs that must dial nothing, each with text the refusal names.
fn refused(port: u16) -> Vec<(String, &'static str)> {
    let wrapped = u32::from(port) + 65536;
    vec![
        ("http://127.0.0.1:99999".into(), "99999"),
        (format!("http://127.0.0.1:{wrapped}"), "port"),
        ("http://127.0.0.1:0".into(), "port \"0\""),
        ("http://127.0.0.1:".into(), "port \"\""),
        ("http://127.0.0.1:http".into(), "port \"http\""),
        (format!("http://user:pw@127.0.0.1:{port}"), "credentials"),
        (format!("ftp://127.0.0.1:{port}"), "\"ftp\""),
        (format!("ws://127.0.0.1:{port}"), "\"ws\""),
        (format!("grpc://127.0.0.1:{port}"), "\"grpc\""),
    ]
}

#[test]
fn refused_uris_are_refused_by_from_shared_naming_the_problem() {
    let target = Witness::on("127.0.0.1:0").expect("a listener");
    for (uri, named) in refused(target.port) {
        let err = ChannelFactory::from_shared(uri.clone()).expect_err(&uri);
        assert!(err.is_invalid_uri(), "{uri}: {err:?}");
        let shown = err.to_string();
        assert!(
            shown.contains(named),
            "{uri}: {shown:?} should name {named}"
        );
        assert!(
            !shown.contains(":pw@"),
            "{uri}: credentials echoed: {shown}"
        );
    }
    assert_eq!(target.accepted(), 0);
}

#[test]
fn an_endpoint_built_by_hand_dials_nothing_the_uri_did_not_say() {
    let target = Witness::on("127.0.0.1:0").expect("a listener");
    // Port 80 is where a port the `http` crate cannot read would be sent. Binding it
    // needs root (CI runs as root); without it the refusals are still checked.
    let port_80 = Witness::on("127.0.0.1:80");
    if port_80.is_none() {
        eprintln!("note: 127.0.0.1:80 could not be bound; its witness is skipped");
    }
    let rt = current_thread();
    for (uri, _) in refused(target.port) {
        // tonic parses some of these itself; those never get as far as a dial.
        let Ok(endpoint) = Endpoint::from_shared(uri.clone()) else {
            continue;
        };
        let manager = ChannelManager::new(ChannelFactory::new(endpoint));
        let outcome = rt.block_on(async {
            let channel = manager.client().await.expect("a channel").channel();
            check(channel).await
        });
        let err = outcome.expect_err(&uri);
        assert!(!err.contains("hung"), "{uri}: {err}");
    }
    assert_eq!(target.accepted(), 0, "a refused URI reached its port");
    if let Some(w) = &port_80 {
        assert_eq!(w.accepted(), 0, "a refused URI was dialled on port 80");
    }
}

/// `https` with no TLS configured: the connector may connect (the URI names that port)
/// but the request never goes out in cleartext: the server receives no byte.
#[test]
fn https_without_tls_sends_no_byte() {
    let target = Witness::on("127.0.0.1:0").expect("a listener");
    let uri = format!("https://127.0.0.1:{}", target.port);
    let manager = ChannelManager::new(ChannelFactory::from_shared(uri.clone()).expect("valid"));
    let err = current_thread()
        .block_on(async {
            let channel = manager.client().await.expect("a channel").channel();
            check(channel).await
        })
        .expect_err("no TLS");
    assert!(!err.contains("hung"), "{err}");
    // Give a cleartext preface, had one been written, time to arrive.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(target.bytes(), 0, "{uri}: bytes went out in cleartext");
}

/// A valid `http` URI still reaches its server (the check refuses nothing good).
#[test]
fn a_valid_uri_still_works() {
    let rt = current_thread();
    let uri = common::SERVER.uri();
    let manager = ChannelManager::new(ChannelFactory::from_shared(uri).expect("valid"));
    rt.block_on(async {
        let channel = manager.client().await.expect("a channel").channel();
        check(channel).await.expect("a health check");
    });
    assert!(common::SERVER.accepted() >= 1);
}
