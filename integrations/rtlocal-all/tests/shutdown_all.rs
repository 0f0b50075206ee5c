//! `rtlocal::shutdown_all` over every kind of managed client — hyper, reqwest, sqlx,
//! redis, tonic — each having made a real round trip to a real server, one HTTP request
//! left in flight: one report with a line per manager, every manager refusing clients
//! after, and every server seeing 0 connections from us.
//!
//! One test in its own binary: `shutdown_all` shuts every manager of the process down.
//! Run with `--nocapture` to see the report.

use std::time::{Duration, Instant};

use rtlocal_all::{Managers, NAMES, Targets, block_on_outside, current_thread, settle};
use rtlocal_testkit::{Servers, check_installed};

/// A hang guard for every wait, not a timing.
const HANG_GUARD: Duration = Duration::from_secs(20);

#[test]
fn shutdown_all_closes_every_kind_of_client_and_every_server_sees_zero_connections() {
    if let Err(missing) = check_installed() {
        panic!("{missing}");
    }
    let servers = Servers::start();
    let managers = Managers::build(&Targets {
        http_url: servers.http.url("/"),
        redis_url: servers.redis.url(),
        postgres: servers.postgres.options(),
        grpc_uri: servers.grpc.uri(),
    })
    .expect("the five managers");

    // A round trip through each manager's client, on a current_thread runtime.
    let rt = current_thread();
    rt.block_on(managers.round_trip(1))
        .expect("a round trip through every client");
    let before = servers.open();
    println!("open after the round trips: {before}");
    assert!(before.http >= 1, "{before}");
    assert_eq!(
        (before.redis, before.postgres, before.grpc),
        (1, 1, 1),
        "{before}"
    );

    // An HTTP request left in flight (the server answers after 30 s): its close is forced.
    let client = rt.block_on(managers.http.client()).expect("an HTTP client");
    let slow = servers.http.url("/slow/30000");
    let requests = servers.http.requests();
    let in_flight = rt.spawn(async move { client.get(&slow).await.map(drop) });
    rt.block_on(async {
        let deadline = Instant::now() + HANG_GUARD;
        while servers.http.requests() == requests && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert_eq!(
        servers.http.requests(),
        requests + 1,
        "the slow request reached the server"
    );

    // The runtime idles from here on. Shut everything down from outside any runtime.
    let report = block_on_outside(
        HANG_GUARD,
        rtlocal::shutdown_all(Duration::from_millis(500)),
    )
    .expect("hang guard: shutdown_all did not finish");
    println!("{report}");

    assert_eq!(report.managers.len(), NAMES.len(), "{report}");
    let text = report.to_string();
    for name in NAMES {
        let lines: Vec<_> = report.managers.iter().filter(|m| m.name == name).collect();
        assert_eq!(lines.len(), 1, "one line for {name}: {report}");
        let r = &lines[0].report;
        assert!(r.closed >= 1, "{name} closed its client: {report}");
        assert!(r.failed.is_empty(), "{name} failed nothing: {report}");
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{name}: closed"))),
            "a Display line for {name}: {report}"
        );
        if name == "http" {
            assert_eq!(
                (r.forced, r.in_flight_cut),
                (1, 1),
                "the HTTP close was forced, cutting the slow request: {report}"
            );
        } else {
            assert_eq!(r.forced, 0, "{name} had nothing in flight: {report}");
        }
    }

    // Closed on the wire by the shutdown itself, while the clients' runtime idles: the
    // pool's connections (Pool::close) and the channel's (shut down on its sockets).
    let pg = settle(HANG_GUARD, 0, || servers.postgres.connections());
    assert_eq!(
        pg, 0,
        "PostgreSQL sees no pool connection while the runtime idles"
    );
    let grpc = settle(HANG_GUARD, 0, || servers.grpc.open());
    assert_eq!(
        grpc, 0,
        "the gRPC server sees no connection while the runtime idles"
    );

    // redis has no close of its own: with the clients' runtime idle, its connection is
    // still open, and the report says so (what the server sees, against the report).
    let redis_left = report
        .managers
        .iter()
        .find(|m| m.name == "redis")
        .map(|m| m.report.not_closed_on_wire)
        .expect("a line for redis");
    let redis = settle(HANG_GUARD, redis_left, || servers.redis.connections());
    assert_eq!(
        (redis, redis_left),
        (1, 1),
        "redis: the server's connections against the report's not_closed_on_wire: {report}"
    );

    // Every manager refuses clients now.
    let not_refusing = rt.block_on(managers.not_refusing());
    assert!(
        not_refusing.is_empty(),
        "still handing out clients after shutdown_all: {not_refusing:?}"
    );
    let cut = rt
        .block_on(async { tokio::time::timeout(HANG_GUARD, in_flight).await })
        .expect("hang guard: the cut request did not end")
        .expect("the request task");
    let err = cut.expect_err("the slow request was cut, not answered");
    assert!(err.is_closed(), "cut by the close: {err}");

    // reqwest and redis have no close of their own: their sockets close when their
    // runtime next runs or is dropped (as their factories document). This runtime is done.
    drop(rt);
    let after = servers.wait_closed(HANG_GUARD);
    println!("open after shutdown_all: {after}");
    assert!(after.is_zero(), "every server sees 0 connections: {after}");
}
