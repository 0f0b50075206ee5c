#!/usr/bin/env bash
# Mutation score of the lifecycle core: cargo-mutants over src/lifecycle/*.rs and src/sync.rs,
# with the crate's unit tests AND the loom models as the check.
#
#   bash loom-tests/mutants.sh                  # every core file
#   bash loom-tests/mutants.sh -F 'slot\.rs'    # extra args go to cargo-mutants
#   bash loom-tests/mutants.sh --list           # what would be mutated
#   bash loom-tests/mutants.sh --iterate        # only what the last run did not catch
#
# Needs `cargo install cargo-mutants --locked`. Results in target/mutants/mutants.out/ (or
# $MUTANTS_OUT/mutants.out/): outcomes.json, caught.txt, missed.txt, unviable.txt,
# timeout.txt. loom-tests/MUTANTS.md records the last full run.
#
# The unit tests' own helpers are not mutated (`--exclude-re tests::`: cargo-mutants skips
# `#[cfg(test)]` modules, not `#[cfg(all(test, not(rtlocal_loom)))]` ones).
#
# How: one mutant needs two builds with different cfgs (the unit tests without
# `rtlocal_loom`, the models with it), which one `cargo test` cannot do. So cargo-mutants
# is pointed (through $CARGO, which it calls back into) at this same script, which on
# `cargo test [--no-run]` runs:
#   1. `cargo test -p rtlocal --lib`  (target/mutants-unit, normal cfg);
#   2. the loom models (target/mutants-loom, `--cfg rtlocal_loom`, LOOM_MAX_PREEMPTIONS=3 as
#      in run.sh, debug assertions on), the quick model files first and acquire.rs (the
#      slow one) last, so most caught mutants fail within seconds.
# A mutant that fails to build under either cfg is unviable; one whose tests fail, caught.
# The loom build uses the release profile at opt-level 1 with incremental compilation: a
# mutant rebuilds in seconds and the models run about as fast as at opt-level 3.
# Every other cargo command goes to the real cargo unchanged.
set -euo pipefail

if [[ "${RTLOCAL_MUTANTS_CARGO:-}" != "" ]]; then
    # Called back by cargo-mutants in place of cargo.
    real="$RTLOCAL_MUTANTS_CARGO"
    if [[ "${1:-}" != "test" ]]; then
        exec "$real" "$@"
    fi
    no_run=()
    for a in "$@"; do
        [[ "$a" == "--no-run" ]] && no_run=(--no-run)
    done
    target="$RTLOCAL_MUTANTS_TARGET"
    unset CARGO_ENCODED_RUSTFLAGS
    # 1. Unit tests, normal cfg.
    RUSTFLAGS="" CARGO_TARGET_DIR="$target/mutants-unit" \
        "$real" test -p rtlocal --lib "${no_run[@]}"
    # 2. Loom models.
    export RUSTFLAGS="--cfg rtlocal_loom"
    export CARGO_TARGET_DIR="$target/mutants-loom"
    export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
    export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
    export CARGO_PROFILE_RELEASE_INCREMENTAL=true
    export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
    export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
    loom=("$real" test --release -p rtlocal-loom-tests)
    if [[ ${#no_run[@]} -gt 0 ]]; then
        exec "${loom[@]}" --tests --no-run
    fi
    quick=()
    for f in loom-tests/tests/*.rs; do
        name="$(basename "$f" .rs)"
        [[ "$name" == acquire ]] || quick+=(--test "$name")
    done
    "${loom[@]}" "${quick[@]}"
    exec "${loom[@]}" --test acquire
fi

cd "$(dirname "$0")/.."
root="$(pwd)"
export RTLOCAL_MUTANTS_CARGO="$(command -v cargo)"
export RTLOCAL_MUTANTS_TARGET="$root/target"
export CARGO="$root/loom-tests/mutants.sh"
# The binary itself (not `cargo mutants`): cargo would reset $CARGO for its subcommand.
exec cargo-mutants mutants \
    -f 'src/lifecycle/*.rs' -f 'src/lifecycle/slot/*.rs' -f src/sync.rs \
    --exclude-re '\btests::' \
    -j 1 --timeout 300 --build-timeout 900 \
    -o "${MUTANTS_OUT:-$root/target/mutants}" \
    "$@"
