#!/usr/bin/env bash
# The demo: a fake Jetstream serving realistic generated events, a private redis-server (or
# the Redis at $REDIS_URL, under the jsi:demo: prefix) and the real pipeline for ~20 s; then it
# prints what landed and a few sample jobs, and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${REDIS_URL:-}" ]; then
  source scripts/ensure-deps.sh
fi
cargo run --locked --quiet -- demo "$@"
