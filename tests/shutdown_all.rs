//! `rtlocal::shutdown_all`: every live manager of the process, one deadline, one report.
//! One test in its own binary: it shuts down every manager of the process.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{PanicWatch, TestServer, block_on_guarded, poll_outside_runtime};
use rtlocal::{ClientFactory, Error, HttpClientManager, Manager};
use tokio::runtime::Handle;

/// A client whose close panics (the factory is the user's code).
struct PanickyClose(Arc<AtomicUsize>);

impl ClientFactory for PanickyClose {
    type Client = ();

    async fn build(&self, _: &Handle) -> Result<(), Error> {
        Ok(())
    }

    async fn close(&self, (): &()) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("deliberate panic: close");
    }
}

/// A plain client.
struct Plain;

impl ClientFactory for Plain {
    type Client = ();

    async fn build(&self, _: &Handle) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn shutdown_all_closes_every_manager_against_one_deadline_and_reports_each() {
    let watch = PanicWatch::install("all");
    let server = TestServer::start();
    let http = Arc::new(
        HttpClientManager::builder()
            .close_timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    let closes = Arc::new(AtomicUsize::new(0));
    let panicky = Manager::builder(PanickyClose(Arc::clone(&closes)))
        .name("panicky")
        .build()
        .unwrap();
    let plain = Manager::builder(Plain).name("plain").build().unwrap();
    let dropped = Manager::builder(Plain).name("dropped").build().unwrap();
    drop(dropped);

    let rt = watch.current_rt();
    let (h2, slow) = (Arc::clone(&http), server.url("/slow/30000"));
    let c = block_on_guarded(&rt, async {
        let _ = panicky.client().await.unwrap();
        let _ = plain.client().await.unwrap();
        h2.client().await.unwrap()
    });
    let in_flight = rt.spawn(async move { c.get(&slow).await.map(|_| ()) });
    assert_eq!(block_on_guarded(&rt, server.requests_reached(1)), 1);
    // Made before the shutdown, so it is one of the managers shut down.
    let _ = rtlocal::default_manager();
    // From outside any runtime, while the HTTP request is in flight on an idle runtime.
    let report = poll_outside_runtime(
        Duration::from_secs(20),
        rtlocal::shutdown_all(Duration::from_millis(300)),
    )
    .expect("hang guard: shutdown_all did not finish");
    println!("{report}");
    let line = |name: &str| {
        report
            .managers
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no line for {name}: {report}"))
    };
    assert_eq!(line("plain").report.closed, 1, "{report}");
    let panicky_line = &line("panicky").report;
    assert_eq!(panicky_line.failed.len(), 1, "{report}");
    assert_eq!(
        panicky_line.closed, 1,
        "force-closed after its close panicked: {report}"
    );
    assert_eq!(closes.load(Ordering::SeqCst), 1);
    // Two HTTP managers: the default one (idle) and ours, whose request was cut.
    let http_lines: Vec<_> = report
        .managers
        .iter()
        .filter(|m| m.name == "http")
        .map(|m| (m.report.closed, m.report.forced, m.report.in_flight_cut))
        .collect();
    assert_eq!(http_lines.len(), 2, "{report}");
    assert!(
        http_lines.contains(&(1, 1, 1)),
        "the HTTP manager's cut request is reported: {report}"
    );
    assert!(
        report.managers.iter().all(|m| m.name != "dropped"),
        "a dropped manager is not listed: {report}"
    );
    assert!(report.to_string().lines().count() > report.managers.len());
    // Every manager refuses new clients from now on; nothing is left open.
    let refused = block_on_guarded(&rt, async {
        (
            plain.client().await.unwrap_err().is_shut_down(),
            http.client().await.unwrap_err().is_shut_down(),
            rtlocal::client().await.unwrap_err().is_shut_down(),
        )
    });
    assert_eq!(refused, (true, true, true));
    let cut = block_on_guarded(&rt, in_flight).expect("request task");
    assert!(cut.unwrap_err().is_closed());
    assert_eq!(server.wait_open(0), 0);
    assert_eq!(http.stats().clients_live, 0);
    assert_eq!(watch.deliberate(), 1);
    watch.assert_no_unexpected_panics();
}
