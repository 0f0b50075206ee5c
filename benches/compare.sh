#!/usr/bin/env bash
# Before and after in the same run: builds this tree's bench sources (all of benches/,
# copied) in a temporary worktree of an older commit, then runs the named bench in both
# trees alternately (before, after, before, after, ...), printing every output.
#
#   bash benches/compare.sh <old-commit> <bench> [bench args...]
#   bash benches/compare.sh ccf7cec paired 3000
#   bash benches/compare.sh HEAD~3 latency 100 1     # latency is built with --features rustls
#
#   REPEAT=3      pairs of runs (default 2)
#   FEATURES=...  cargo features for both builds (latency defaults to rustls)
#
# The old tree builds into a target directory of its own ($COMPARE_TARGET_DIR, default
# <target>/compare-before, kept between runs): in one shared directory cargo would give
# both trees' rtlocal and bench the same file names (its hashes use paths relative to the
# workspace), and could take one tree's build as fresh for the other. When it does not
# exist yet it starts as a copy of this tree's release/ directory, so the dependencies
# are not built again.
# If the old Cargo.toml has no [[bench]] entry for <bench>, one is added (harness = false);
# the bench sources must compile against the old tree's API and dev-dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 2 ]]; then
  echo "usage: bash benches/compare.sh <old-commit> <bench> [bench args...]" >&2
  exit 2
fi
old=$1 bench=$2
shift 2
repeat=${REPEAT:-2}
features=()
if [[ -n ${FEATURES:-} ]]; then
  features=(--features "$FEATURES")
elif [[ $bench == latency ]]; then
  features=(--features rustls)
fi
new_target=${CARGO_TARGET_DIR:-$PWD/target}
old_target=${COMPARE_TARGET_DIR:-$new_target/compare-before}
if [[ ! -d $old_target && -d $new_target/release ]]; then
  mkdir -p "$old_target"
  cp -a "$new_target/release" "$old_target/release"
fi
new_tree=$PWD
old_rev=$(git rev-parse --short "$old^{commit}")
new_rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo '+changes')"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rtlocal-before.XXXXXX")
old_tree=$tmp/tree
cleanup() {
  git worktree remove --force "$old_tree" > /dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
git worktree add --quiet --detach "$old_tree" "$old_rev"
rm -rf "$old_tree/benches"
cp -r benches "$old_tree/benches"
if ! grep -q "^name = \"$bench\"" "$old_tree/Cargo.toml"; then
  printf '\n[[bench]]\nname = "%s"\nharness = false\n' "$bench" >> "$old_tree/Cargo.toml"
fi

# Builds one tree's bench into a target directory and prints its executable's path.
build() {
  local out
  if ! out=$(cd "$1" && CARGO_TARGET_DIR=$2 cargo bench --no-run "${features[@]}" \
    --bench "$bench" 2>&1); then
    echo "$out" | tail -n 30 >&2
    echo "build failed in $1" >&2
    exit 1
  fi
  echo "$out" | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1
}
echo "== building $bench: before ($old_rev) and after ($new_rev)"
old_exe=$(build "$old_tree" "$old_target")
new_exe=$(build "$new_tree" "$new_target")
if [[ -z $old_exe || -z $new_exe || $old_exe == "$new_exe" ]]; then
  echo "could not tell the two executables apart: '$old_exe', '$new_exe'" >&2
  exit 1
fi
echo "   before: $old_exe"
echo "   after:  $new_exe"

load() { cut -d' ' -f1-3 /proc/loadavg; }
for ((i = 1; i <= repeat; i++)); do
  for side in before after; do
    if [[ $side == before ]]; then
      dir=$old_tree exe=$old_exe rev=$old_rev
    else
      dir=$new_tree exe=$new_exe rev=$new_rev
    fi
    echo
    echo "== $side ($rev), run $i of $repeat; $(date -u '+%F %T') UTC; load average $(load)"
    (cd "$dir" && "$exe" --bench "$@")
  done
done
