//! The four servers together, for the tests that use every kind of client.

use std::time::Duration;

use crate::grpc::Grpc;
use crate::http::HttpServer;
use crate::postgres::Postgres;
use crate::redis::Redis;

/// The four servers.
#[derive(Debug)]
pub struct Servers {
    /// HTTP/1.1 (hyper).
    pub http: HttpServer,
    /// redis-server.
    pub redis: Redis,
    /// PostgreSQL.
    pub postgres: Postgres,
    /// gRPC (tonic's health service).
    pub grpc: Grpc,
}

/// Client connections each server has open, as the server sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Open {
    /// The HTTP server's open connections.
    pub http: usize,
    /// redis `CLIENT LIST`, not counting the connection asking.
    pub redis: usize,
    /// `pg_stat_activity`: client backends with application name
    /// [`postgres::APP`](crate::postgres::APP).
    pub postgres: usize,
    /// The gRPC server's open connections.
    pub grpc: usize,
}

impl Open {
    /// Whether every server has 0 connections from us.
    pub fn is_zero(&self) -> bool {
        *self == Open::default()
    }
}

impl std::fmt::Display for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "http {}, redis {}, postgres {}, grpc {}",
            self.http, self.redis, self.postgres, self.grpc
        )
    }
}

impl Servers {
    /// Starts all four.
    ///
    /// # Panics
    /// A server could not be started (see each server's `start`).
    pub fn start() -> Servers {
        if let Err(missing) = crate::check_installed() {
            panic!("{missing}");
        }
        // The slowest (initdb) on a thread of its own while the others start.
        let postgres = std::thread::spawn(Postgres::start);
        let http = HttpServer::start();
        let redis = Redis::start();
        let grpc = Grpc::start();
        let postgres = postgres
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Servers {
            http,
            redis,
            postgres,
            grpc,
        }
    }

    /// What each server has open now.
    pub fn open(&self) -> Open {
        Open {
            http: self.http.open(),
            redis: self.redis.connections(),
            postgres: self.postgres.connections(),
            grpc: self.grpc.open(),
        }
    }

    /// Waits (up to `within`, a hang guard) for every server to have 0 connections from
    /// us; returns what they have then.
    pub fn wait_closed(&self, within: Duration) -> Open {
        crate::settle(within, Open::default(), || self.open())
    }
}
