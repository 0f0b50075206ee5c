//! One private PostgreSQL server per test binary (rtlocal-testkit).

use std::sync::LazyLock;

use rtlocal_testkit::postgres::Postgres;

/// One server for the whole test binary, stopped when the process ends.
pub static SERVER: LazyLock<Postgres> = LazyLock::new(Postgres::start);
