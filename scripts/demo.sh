#!/usr/bin/env bash
# The demo: a fake Jetstream serving realistic generated events, a private redis-server (or
# the Redis at $REDIS_URL, under the jsi:demo: prefix) and the real pipeline for ~20 s; then it
# prints what landed and a few sample jobs, and cleans up (`--keep-redis` leaves the private
# redis-server running and prints how to read from it and stop it; `--seconds N` runs longer).
#
# The first run compiles the project first (about 230 crates, a debug build: a few minutes;
# measured 2026-12: 3.7 CPU-minutes, about 3 minutes on 2 cores, 7 on one busy core); cargo's
# own progress is shown. Later runs start in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: building first; the first build compiles ~230 crates and takes a few minutes (about 3 on 2 cores), later runs start in seconds." >&2
if [ -z "${REDIS_URL:-}" ]; then
  source scripts/ensure-deps.sh
fi
# Not --quiet: a first build is long, and cargo's progress says how far it is.
cargo build --locked --bin jetstream-ingestor
cargo run --locked --quiet --bin jetstream-ingestor -- demo "$@"
