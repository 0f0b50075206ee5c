//! One private redis-server per test binary (rtlocal-testkit).

use std::sync::LazyLock;

use rtlocal_testkit::redis::Redis;

/// One server for the whole test binary, stopped when the process ends.
pub static SERVER: LazyLock<Redis> = LazyLock::new(Redis::start);
