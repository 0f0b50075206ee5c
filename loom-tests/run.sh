#!/usr/bin/env bash
# Runs the loom models against the production lifecycle code.
#   LOOM_MAX_PREEMPTIONS  bound on preemptions per execution (default 3)
#   LOOM_LOG=trace LOOM_LOCATION=1  to debug a failing model
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} --cfg rtlocal_loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
# A separate target dir: the cfg changes every crate's build.
exec cargo test --release --target-dir target/loom -p rtlocal-loom-tests "$@"
