#!/usr/bin/env bash
# Installs what the demo and the tests need and is missing: redis-server (via apt-get when we
# are root on Debian/Ubuntu). The Rust toolchain itself must already be there (rustup.rs).
# Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust first (https://rustup.rs), then run this again." >&2
  exit 1
fi

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "redis-server not found: installing it with apt-get ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # Debian starts a service on install; we never use it (tests start private servers).
  else
    echo "redis-server not found. Install it (Debian/Ubuntu: sudo apt-get install -y redis-server;" >&2
    echo "macOS: brew install redis), or for the demo only, set REDIS_URL to a Redis you own." >&2
    exit 1
  fi
fi
