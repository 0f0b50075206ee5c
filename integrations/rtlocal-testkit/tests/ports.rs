//! PostgreSQL and redis-server take a port number: a start on a port something else
//! holds moves on to the next port, and never mistakes the holder for its server.

use std::net::TcpListener;
use std::time::Duration;

use rtlocal_testkit::candidate_ports;
use rtlocal_testkit::postgres::Postgres;
use rtlocal_testkit::redis::Redis;

/// A port held by a listener of ours for as long as the returned listener lives (it
/// accepts nothing: a server that mistook it for its own would never get an answer).
fn held_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    (listener, port)
}

#[test]
fn redis_moves_past_a_taken_port() {
    let (_held, taken) = held_port();
    let redis = Redis::start_trying(std::iter::once(taken).chain(candidate_ports()));
    assert_ne!(redis.port(), taken);
    // Its own server answers, with nobody else connected.
    assert_eq!(redis.connections(), 0);
}

#[test]
#[should_panic(expected = "every port tried was already in use")]
fn redis_gives_up_when_every_port_is_taken() {
    let (_held, taken) = held_port();
    let _redis = Redis::start_trying([taken, taken]);
}

#[test]
fn postgres_moves_past_a_taken_port() {
    let (_held, taken) = held_port();
    let pg = Postgres::start_trying(std::iter::once(taken).chain(candidate_ports()));
    assert_ne!(pg.port(), taken);
    assert_eq!(pg.wait_connections(0, Duration::from_secs(10)), 0);
}
