#!/usr/bin/env bash
# The test command. Installs what is missing (redis-server), then runs every test of the
# workspace. Tests start their own private redis-server processes on free loopback ports and
# their own fake Jetstream servers: they never touch a Redis on 6379.
#
# Runs with --no-fail-fast (a failing test binary does not hide the ones after it), streams
# the output as usual, and ends with one line over every test binary, e.g.
#   SUMMARY: P passed, F failed, I ignored (N test binaries)
# Arguments are passed to `cargo test`: scripts/test.sh --test settings, scripts/test.sh -p actors.
# The exit status is cargo's: non-zero when anything failed (or did not build, or crashed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh

counts="$(mktemp)"
trap 'rm -f "$counts"' EXIT

# Cargo's own messages keep their colours on a terminal although stdout is piped below.
if [ -t 1 ] && [ -z "${CARGO_TERM_COLOR:-}" ]; then
  export CARGO_TERM_COLOR=always
fi

# Test output passes through awk line by line (flushed at once), which adds up libtest's
#   test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in …
# lines. Only `cargo test`'s status decides the exit status (PIPESTATUS[0]), not awk's.
set +e
cargo test --workspace --locked --no-fail-fast "$@" | awk -v counts="$counts" '
  { print; fflush() }
  {
    line = $0
    gsub(/\033\[[0-9;]*m/, "", line)
    if (line ~ /^test result: /) {
      runs++
      if (match(line, /[0-9]+ passed/))  passed  += substr(line, RSTART, RLENGTH) + 0
      if (match(line, /[0-9]+ failed/))  failed  += substr(line, RSTART, RLENGTH) + 0
      if (match(line, /[0-9]+ ignored/)) ignored += substr(line, RSTART, RLENGTH) + 0
    }
  }
  END { printf "%d %d %d %d\n", passed, failed, ignored, runs > counts }
'
statuses=("${PIPESTATUS[@]}")
set -e
cargo_status=${statuses[0]}

read -r passed failed ignored runs <"$counts" || { passed=0 failed=0 ignored=0 runs=0; }
binaries="test binaries"
[ "$runs" -eq 1 ] && binaries="test binary"
summary="SUMMARY: ${passed} passed, ${failed} failed, ${ignored} ignored (${runs} ${binaries})"
if [ "$cargo_status" -ne 0 ]; then
  if [ "$failed" -eq 0 ]; then
    summary+="; cargo test exited ${cargo_status} (a build error, or a test binary that crashed: see above)"
  else
    summary+="; cargo test exited ${cargo_status}"
  fi
fi
echo "$summary"
exit "$cargo_status"
