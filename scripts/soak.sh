#!/usr/bin/env bash
# The fault suite at full size, then a long soak. Not part of CI (it runs for over an hour).
#
#   scripts/soak.sh                    # full-size fault suite, then a 1 h soak, a fault every 2 min
#   scripts/soak.sh --suite-only       # only the fault suite at the issue's sizes
#   scripts/soak.sh --soak-only --seconds 7200 --every 60 --rate 200
#
# Full size (JSI_FAULT_SCALE=full): kill -9 at 12 points of a 200k-event replay, 3 crashes at
# each commit boundary over 40k, 3 SIGTERMs over 100k, Redis faults held 20 s each over 100k,
# Redis stopped 30 s under a 200k push, 200 WebSocket faults over 100k, 10k hostile frames among
# 100k events and 700 zstd frames among 10k. The tests run one at a time here (no CPU contention
# between them), each against its own private redis-server and fake Jetstream.
#
# The soak (tests/faults_soak.rs, #[ignore]d in CI): the real binary reads a paced replay
# through a fault proxy into a Redis (AOF) behind another proxy; every --every seconds one fault
# in rotation (kill -9 / SIGTERM of the ingestor, Redis SIGSTOP / kill -9 + restart /
# CLIENT PAUSE WRITE / maxmemory / connection resets, WebSocket reset / blackhole / cut). At the
# end: every event exactly once, and the ingestor's RSS every 10 s with the growth per process
# lifetime (peak must stay under 96 MiB). Debug build, like CI; add --release to measure the
# build you ship (the figures in the docs/testing.md scorecard are debug).
set -euo pipefail
cd "$(dirname "$0")/.."

suite=1 soak=1 seconds=3600 every=120 rate=100 hold=20 profile=()
while [ $# -gt 0 ]; do
  case "$1" in
    --suite-only) soak=0 ;;
    --soak-only) suite=0 ;;
    --seconds) seconds="$2"; shift ;;
    --every) every="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --hold) hold="$2"; shift ;;
    --release) profile=(--release) ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

source scripts/ensure-deps.sh

if [ "$suite" = 1 ]; then
  echo "== fault suite, full size (JSI_FAULT_SCALE=full)"
  JSI_FAULT_SCALE=full cargo test "${profile[@]}" --locked \
    --test faults_crash --test faults_redis --test faults_ws --test faults_hostile --test faults_admin \
    -- --test-threads=1 --nocapture
fi

if [ "$soak" = 1 ]; then
  echo "== soak: ${seconds}s, a fault every ${every}s, ${rate} events/s, Redis faults held ${hold}s"
  JSI_SOAK_SECS="$seconds" JSI_SOAK_FAULT_EVERY="$every" JSI_SOAK_RATE="$rate" JSI_SOAK_HOLD="$hold" \
    cargo test "${profile[@]}" --locked --test faults_soak -- --ignored --nocapture
fi
