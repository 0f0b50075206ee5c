//! `rtlocal::shutdown_all` while the client's runtime idles: the report says how many
//! connections it left open, naming the runtime, and the server's `CLIENT LIST` agrees.
//!
//! One test in its own binary: `shutdown_all` shuts every manager of the process down.

use std::time::Duration;

use rtlocal_redis::{ManagedRedisExt, RedisFactory};
use rtlocal_testkit::current_thread;
use rtlocal_testkit::redis::Redis;

const SETTLE: Duration = Duration::from_secs(5);

#[test]
fn shutdown_all_while_the_runtime_idles_reports_what_the_server_still_sees() {
    let server = Redis::start();
    let manager = rtlocal::Manager::builder(RedisFactory::open(server.url()).expect("a redis URL"))
        .name("redis")
        .build()
        .expect("a manager");
    let idle = current_thread();
    idle.block_on(async {
        let mut con = manager.client().await.expect("a client").connection();
        let pong: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .expect("PING");
        assert_eq!(pong, "PONG");
    });
    assert_eq!(server.wait_connections(1, SETTLE), 1);

    // The client's runtime idles from here on.
    let report = current_thread().block_on(rtlocal::shutdown_all(Duration::from_secs(2)));
    eprintln!("{report}");
    let line = report
        .managers
        .iter()
        .find(|m| m.name == "redis")
        .expect("a line for the redis manager");
    let r = &line.report;
    assert_eq!((r.closed, r.forced), (1, 0), "{report}");
    assert_eq!(
        server.wait_connections(r.not_closed_on_wire, SETTLE),
        r.not_closed_on_wire,
        "the server's CLIENT LIST against the report: {report}"
    );
    assert_eq!(r.not_closed_on_wire, 1, "{report}");
    let idle_id = idle.handle().id();
    assert_eq!(r.not_closed_on_wire_runtimes, vec![idle_id], "{report}");
    assert!(
        report
            .to_string()
            .contains(&format!("runtime(s) {idle_id},")),
        "{report}"
    );
    assert!(
        current_thread()
            .block_on(manager.client())
            .expect_err("shut down")
            .is_shut_down()
    );

    drop(idle);
    assert_eq!(server.wait_connections(0, SETTLE), 0);
}
