#!/usr/bin/env bash
# The test command. Installs what is missing (redis-server), then runs every test of the
# workspace. Tests start their own private redis-server processes on free loopback ports and
# their own fake Jetstream servers: they never touch a Redis on 6379.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
cargo test --workspace --locked "$@"
