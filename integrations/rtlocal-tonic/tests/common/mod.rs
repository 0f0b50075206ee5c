//! One gRPC server (tonic's health service, in process) per test binary (rtlocal-testkit).

use std::sync::LazyLock;

use rtlocal_testkit::grpc::Grpc;

/// One server for the whole test binary.
pub static SERVER: LazyLock<Grpc> = LazyLock::new(Grpc::start);
